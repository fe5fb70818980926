//! Human durations as written in scenario files: `500ms`, `1.5s`, `2m`, `24h`.
//!
//! Deliberately stricter than humantime: exactly one number and one unit, no spaces, so that `30` (seconds? ms?)
//! and `1h30m` are rejected with a hint instead of being guessed at.

use std::time::Duration;

const UNITS: [(&str, u128); 4] = [
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses `<number><unit>`; the error is a full sentence naming the text.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("the duration is empty; write a number and a unit, e.g. `30s`".to_string());
    }
    if let Some(rest) = text.strip_prefix('-') {
        if rest.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
            return Err(format!("durations cannot be negative, got `{text}`"));
        }
    }
    if text.chars().any(char::is_whitespace) {
        let joined: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        return Err(format!(
            "`{text}` is not a duration: write it without spaces, e.g. `{joined}`"
        ));
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let Some((whole, frac)) = split_number(number) else {
        return Err(format!(
            "`{text}` is not a duration: expected a number followed by ms, s, m or h, e.g. `1.5s`"
        ));
    };
    if unit.is_empty() {
        return Err(format!(
            "`{text}` is not a duration: add a unit (ms, s, m or h), e.g. `{text}s`"
        ));
    }
    let Some(&(_, unit_ns)) = UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(format!(
            "`{text}` is not a duration: unknown unit `{unit}`; use ms, s, m or h, e.g. `{number}s`"
        ));
    };
    nanos(whole, frac, unit_ns)
        .and_then(|ns| u64::try_from(ns).ok())
        .map(Duration::from_nanos)
        .ok_or_else(|| format!("`{text}` is too large for a duration"))
}

/// `"1.50"` -> `("1", "50")`; None unless it is digits with at most one dot between digits.
fn split_number(number: &str) -> Option<(&str, &str)> {
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let has_dot = number.contains('.');
    if whole.is_empty() || !digits(whole) || !digits(frac) || (has_dot && frac.is_empty()) {
        return None;
    }
    Some((whole, frac))
}

fn nanos(whole: &str, frac: &str, unit_ns: u128) -> Option<u128> {
    let whole: u128 = whole.parse().ok()?;
    let mut total = whole.checked_mul(unit_ns)?;
    let mut scale = unit_ns;
    for d in frac.bytes().take(30) {
        scale /= 10;
        total = total.checked_add(u128::from(d - b'0') * scale)?;
    }
    Some(total)
}

/// The shortest exact spelling in the same syntax: `1.5s`, `250ms`, `2m`, `24h`.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    let ms = 1_000_000u128;
    let s = 1000 * ms;
    if ns == 0 {
        return "0s".to_string();
    }
    if ns.is_multiple_of(3600 * s) {
        return format!("{}h", ns / (3600 * s));
    }
    if ns.is_multiple_of(60 * s) {
        return format!("{}m", ns / (60 * s));
    }
    if ns.is_multiple_of(s) {
        return format!("{}s", ns / s);
    }
    if ns < s && ns.is_multiple_of(ms) {
        return format!("{}ms", ns / ms);
    }
    let frac = format!("{:09}", ns % s);
    format!("{}.{}s", ns / s, frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit_and_decimals() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0.25m"), Ok(Duration::from_secs(15)));
    }

    #[test]
    fn a_bare_number_asks_for_a_unit() {
        assert_eq!(
            parse_duration("30").unwrap_err(),
            "`30` is not a duration: add a unit (ms, s, m or h), e.g. `30s`"
        );
    }

    #[test]
    fn rejects_negative_spaced_and_malformed_values() {
        assert!(parse_duration("-5s")
            .unwrap_err()
            .contains("durations cannot be negative"));
        assert!(parse_duration("5 s")
            .unwrap_err()
            .contains("without spaces"));
        assert!(parse_duration("5sec")
            .unwrap_err()
            .contains("unknown unit `sec`"));
        assert!(parse_duration("1h30m")
            .unwrap_err()
            .contains("unknown unit `h30m`"));
        for bad in ["", "s", ".5s", "5.s", "1..5s", "1.2.3s", "abc", "-s", "+5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn huge_values_are_errors_not_overflows() {
        assert!(parse_duration("99999999999999999999999999999999999999999h")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_duration("99999999999h")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn formats_in_the_same_syntax() {
        for text in ["0s", "250ms", "1.5s", "2m", "90s", "24h", "10m", "0.0005s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
