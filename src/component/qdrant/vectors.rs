//! Deterministic vectors: a point's vector depends only on (seed, id, size), a search's query vector only on
//! (seed, n, size), so every run with the same settings writes and searches the same data.

/// SplitMix64 step: spreads neighbouring inputs (ids 1, 2, 3...) over the whole state space.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xorshift64 stream seeded from `key`, mapped to floats in [-1, 1).
fn stream(key: u64, size: usize) -> Vec<f32> {
    // xorshift64 must not start at 0.
    let mut s = splitmix64(key) | 1;
    (0..size)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            // The top 24 bits give an exactly representable f32 in [0, 1).
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The vector of point `id`.
pub fn point_vector(seed: u64, id: u64, size: usize) -> Vec<f32> {
    stream(splitmix64(seed) ^ id, size)
}

/// The query vector of the `n`-th search of a connection (a different stream from the points').
pub fn query_vector(seed: u64, n: u64, size: usize) -> Vec<f32> {
    stream(
        splitmix64(seed ^ 0x5EA2_C4E5_0000_0000) ^ n.rotate_left(32),
        size,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_reproducible_distinct_and_in_range() {
        let a = point_vector(42, 1, 64);
        assert_eq!(a, point_vector(42, 1, 64), "same seed and id, same vector");
        assert_eq!(a.len(), 64);
        assert_ne!(a, point_vector(42, 2, 64), "neighbouring ids differ");
        assert_ne!(a, point_vector(43, 1, 64), "another seed, another vector");
        assert_ne!(a, query_vector(42, 1, 64), "queries are not the points");
        for v in [&a, &query_vector(42, 9, 64)] {
            assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
            assert!(
                v.iter().any(|x| *x != 0.0),
                "cosine needs a non-zero vector"
            );
        }
        // Pinned: a change of the generator changes what every run writes, which must be deliberate.
        assert_eq!(
            point_vector(42, 1, 3),
            [-0.351_784_23, -0.695_655_1, 0.214_194_42]
        );
        let mean = (1..=1000u64)
            .flat_map(|id| point_vector(7, id, 8))
            .sum::<f32>()
            / 8000.0;
        assert!(mean.abs() < 0.05, "values spread around 0, mean {mean}");
    }
}
