//! Recovery target instants: from a scenario's RFC 3339 text (with its offset) and into the form pgBackRest and
//! PostgreSQL read without ambiguity (`YYYY-MM-DD HH:MM:SS.ffffff+00`: pgBackRest picks the backup set by parsing
//! it, and a target it cannot parse makes it restore the latest backup, HA-FACTS).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses `2026-11-30T01:02:03.456+01:00` / `...Z` to an instant. The offset is required: pgBackRest and
/// PostgreSQL read a time without one as the server's local time, and a malformed target silently restores the
/// latest (HA-FACTS). The error says what is wrong, for the scenario parser's message.
pub fn parse(t: &str) -> Result<SystemTime, String> {
    let (stamp, offset_s): (&str, i64) = if let Some(s) = t.strip_suffix('Z') {
        (s, 0)
    } else {
        let i = t
            .rfind(['+', '-'])
            .filter(|i| *i >= 19)
            .ok_or("it has no UTC offset (`Z` or `+HH:MM`)")?;
        let off = &t[i + 1..];
        let well_formed = off.len() == 5
            && off.as_bytes()[2] == b':'
            && off
                .bytes()
                .enumerate()
                .all(|(k, b)| k == 2 || b.is_ascii_digit());
        if !well_formed {
            return Err(format!("its offset `{}` is not ±HH:MM", &t[i..]));
        }
        let (h, m): (i64, i64) = (off[..2].parse().unwrap_or(0), off[3..].parse().unwrap_or(0));
        let sign = if t.as_bytes()[i] == b'-' { -1 } else { 1 };
        (&t[..i], sign * (h * 3600 + m * 60))
    };
    let local = humantime::parse_rfc3339_weak(&stamp.replace('T', " "))
        .map_err(|e| format!("the date and time do not parse ({e})"))?;
    // The stamp is in the offset's zone: UTC = stamp - offset.
    let utc = if offset_s >= 0 {
        local.checked_sub(Duration::from_secs(offset_s as u64))
    } else {
        local.checked_add(Duration::from_secs((-offset_s) as u64))
    };
    utc.ok_or_else(|| "it is out of range".into())
}

/// The target as pgBackRest's `--target` (UTC, microseconds, explicit `+00`).
pub fn for_pgbackrest(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_micros(t).to_string(); // 2026-11-30T01:02:03.456789Z
    format!("{}+00", s.trim_end_matches('Z').replace('T', " "))
}

pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_applied_and_the_pgbackrest_form_is_utc() {
        let a = parse("2026-11-30T01:02:03.456+01:00").unwrap();
        let b = parse("2026-11-30T00:02:03.456Z").unwrap();
        let c = parse("2026-11-29T19:32:03.456-04:30").unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(for_pgbackrest(b), "2026-11-30 00:02:03.456000+00");
        assert!(parse("2026-11-30T01:02:03")
            .unwrap_err()
            .contains("no UTC offset"));
        assert!(parse("2026-11-30T01:02:03+0000")
            .unwrap_err()
            .contains("not ±HH:MM"));
        assert!(parse("2026-13-30T01:02:03Z").is_err());
    }
}
