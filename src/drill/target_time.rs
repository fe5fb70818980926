//! Recovery target instants: from a scenario's RFC 3339 text (with its offset) and into the form pgBackRest and
//! PostgreSQL read without ambiguity (`YYYY-MM-DD HH:MM:SS.ffffff+00`: pgBackRest picks the backup set by parsing
//! it, and a target it cannot parse makes it restore the latest backup, HA-FACTS).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses `2026-11-30T01:02:03.456+01:00` / `...Z` (validated by the scenario parser) to an instant.
pub fn parse(t: &str) -> Option<SystemTime> {
    let (stamp, offset_s): (&str, i64) = if let Some(s) = t.strip_suffix('Z') {
        (s, 0)
    } else {
        let i = t.rfind(['+', '-']).filter(|i| *i >= 19)?;
        let off = &t[i + 1..];
        let h: i64 = off.get(..2)?.parse().ok()?;
        let m: i64 = off.get(3..5)?.parse().ok()?;
        let sign = if t.as_bytes()[i] == b'-' { -1 } else { 1 };
        (&t[..i], sign * (h * 3600 + m * 60))
    };
    let local = humantime::parse_rfc3339_weak(&stamp.replace('T', " ")).ok()?;
    // The stamp is in the offset's zone: UTC = stamp - offset.
    if offset_s >= 0 {
        local.checked_sub(Duration::from_secs(offset_s as u64))
    } else {
        local.checked_add(Duration::from_secs((-offset_s) as u64))
    }
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
        assert!(parse("2026-11-30T01:02:03").is_none());
    }
}
