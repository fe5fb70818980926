//! The schedule's clock: a thread of its own that wakes at each operation's scheduled instant and hands it to the
//! runtime. The async runtime's timers fire on whole milliseconds, which would send every operation up to a
//! millisecond late and add that to every measured latency; a thread sleeping with a 1 µs timer slack wakes
//! within tens of microseconds of the instant.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::ledger::OpKind;
use crate::scenario::Arrivals;

/// How long the pacer sleeps at most before looking at the stop flag again.
const STOP_CHECK: Duration = Duration::from_millis(20);

/// The shortest sleep: above ~5,000 operations/s a wake-up per operation costs more (in context switches that the
/// servers on the same cores pay for) than it buys, so the pacer sleeps at least this long and then dispatches
/// everything that has come due, each operation late by at most this much. Operations are never sent early.
const MIN_SLEEP: Duration = Duration::from_micros(200);

pub(super) struct Pacer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// One open-loop stream: operations of `op` at `rate` per second. Uniform: the n-th at `start + n / rate` (no
/// drift). Poisson: exponential gaps of mean 1 / rate from a seeded generator.
struct Stream {
    op: OpKind,
    period: Duration,
    n: u64,
    /// Poisson only: the generator and the offset of the next operation from `start`.
    poisson: Option<(XorShift, Duration)>,
}

impl Stream {
    fn due(&self, start: Instant) -> Instant {
        match &self.poisson {
            None => start + self.period.mul_f64(self.n as f64),
            Some((_, offset)) => start + *offset,
        }
    }

    fn advance(&mut self) {
        self.n += 1;
        if let Some((rng, offset)) = &mut self.poisson {
            *offset += self.period.mul_f64(rng.exponential());
        }
    }
}

/// xorshift64*: a small seeded generator, so a Poisson schedule is the same in every run.
struct XorShift(u64);

impl XorShift {
    fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        // 53 random bits in (0, 1].
        ((x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// An exponential variate of mean 1.
    fn exponential(&mut self) -> f64 {
        -self.next_f64().ln()
    }
}

/// The gaps of a Poisson stream of `rate`/s, for tests: the first `n` offsets from the start.
#[cfg(test)]
pub(super) fn poisson_offsets(rate: u32, seed: u64, n: usize) -> Vec<Duration> {
    let mut s = Stream {
        op: OpKind::Write,
        period: Duration::from_secs_f64(1.0 / rate as f64),
        n: 0,
        poisson: Some((XorShift(seed), Duration::ZERO)),
    };
    let start = Instant::now();
    (0..n)
        .map(|_| {
            let d = s.due(start) - start;
            s.advance();
            d
        })
        .collect()
}

impl Pacer {
    /// Calls `dispatch(op, scheduled)` for every operation at its scheduled instant, the streams interleaved in
    /// time order, until stopped. A late wake-up dispatches everything that has come due, each with its own
    /// scheduled instant (latency counts from there).
    pub fn start<F>(streams: Vec<(OpKind, u32)>, arrivals: Arrivals, mut dispatch: F) -> Pacer
    where
        F: FnMut(OpKind, Instant) + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("faultline-pacer".into())
            .spawn(move || {
                set_fine_timer_slack();
                let start = Instant::now();
                let mut streams: Vec<Stream> = streams
                    .into_iter()
                    .enumerate()
                    .map(|(i, (op, rate))| Stream {
                        op,
                        period: Duration::from_secs_f64(1.0 / rate as f64),
                        n: 0,
                        poisson: (arrivals == Arrivals::Poisson).then(|| {
                            (
                                XorShift(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1)),
                                Duration::ZERO,
                            )
                        }),
                    })
                    .collect();
                while !flag.load(Ordering::Relaxed) {
                    let Some(next) = streams.iter_mut().min_by_key(|s| s.due(start)) else {
                        return;
                    };
                    let due = next.due(start);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep((due - now).clamp(MIN_SLEEP, STOP_CHECK));
                        continue;
                    }
                    next.advance();
                    dispatch(next.op, due);
                }
            })
            .expect("the pacer thread starts");
        Pacer {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops dispatching and waits for the thread (at most one `STOP_CHECK`).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Linux rounds a sleeping thread's wake-up up by its timer slack (50 µs by default); 1 µs keeps the schedule.
fn set_fine_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an unsigned long and only affects the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
    }
}
