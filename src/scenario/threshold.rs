//! Threshold lines: `metric op number`, e.g. `detection_s <= 10`.

use super::document::did_you_mean;
use super::model::{Metric, Op, Threshold};

const OPS: [(&str, Op); 5] = [
    ("<=", Op::Le),
    (">=", Op::Ge),
    ("==", Op::Eq),
    ("<", Op::Lt),
    (">", Op::Gt),
];

const SHAPE: &str = "expected `metric op number`, e.g. `detection_s <= 10`";

/// Parses one threshold; the error is a full sentence quoting the offending part.
pub fn parse_threshold(text: &str) -> Result<Threshold, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("the threshold is empty; {SHAPE}"));
    }
    let name_end = text
        .find(|c: char| c.is_whitespace() || "<>=!".contains(c))
        .unwrap_or(text.len());
    let (name, rest) = text.split_at(name_end);
    if name.is_empty() {
        return Err(format!(
            "threshold `{text}` does not start with a metric; {SHAPE}"
        ));
    }
    let metric = Metric::from_name(name).ok_or_else(|| unknown_metric(name))?;

    let rest = rest.trim_start();
    let op_end = rest
        .find(|c: char| !"<>=!".contains(c))
        .unwrap_or(rest.len());
    let (op_text, limit_text) = rest.split_at(op_end);
    if op_text.is_empty() {
        return Err(format!(
            "threshold `{text}` has no comparison after `{name}`; use one of <, <=, ==, >=, >"
        ));
    }
    let op = OPS
        .iter()
        .find(|(sym, _)| *sym == op_text)
        .map(|&(_, op)| op)
        .ok_or_else(|| {
            format!("`{op_text}` in threshold `{text}` is not a comparison; use one of <, <=, ==, >=, >")
        })?;

    let limit_text = limit_text.trim();
    if limit_text.is_empty() {
        return Err(format!(
            "threshold `{text}` has no number after `{op_text}`; {SHAPE}"
        ));
    }
    let limit = parse_limit(limit_text).ok_or_else(|| {
        format!(
            "the limit `{limit_text}` of threshold `{text}` is not a number; write a plain number such as `10`, \
             `0.5` or `-1` (the unit is part of the metric name)"
        )
    })?;
    Ok(Threshold { metric, op, limit })
}

/// Plain decimal only: `inf`, `NaN`, `1e3` and `10s` are not limits anyone means.
fn parse_limit(text: &str) -> Option<f64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let well_formed = match digits.split_once('.') {
        Some((whole, frac)) => all_digits(whole) && all_digits(frac),
        None => all_digits(digits),
    };
    if !well_formed {
        return None;
    }
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

fn unknown_metric(name: &str) -> String {
    let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
    let hint = did_you_mean(name, &names)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    format!(
        "unknown metric `{name}`{hint}; known metrics: {}",
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Threshold {
        parse_threshold(text).unwrap()
    }

    #[test]
    fn parses_every_operator_with_or_without_spaces() {
        assert_eq!(
            ok("detection_s <= 10"),
            Threshold {
                metric: Metric::DetectionS,
                op: Op::Le,
                limit: 10.0
            }
        );
        assert_eq!(ok("rto_s<2.5").op, Op::Lt);
        assert_eq!(ok("lost_acked_writes == 0").op, Op::Eq);
        assert_eq!(ok("acked_writes >= 100").op, Op::Ge);
        assert_eq!(ok("error_rate > -0.5").limit, -0.5);
    }

    #[test]
    fn suggests_the_nearest_metric() {
        let e = parse_threshold("detecton_s <= 10").unwrap_err();
        assert!(e.starts_with("unknown metric `detecton_s` (did you mean `detection_s`?); known metrics: detection_s,"), "{e}");
        let e = parse_threshold("throughput > 1").unwrap_err();
        assert!(!e.contains("did you mean"), "{e}");
    }

    #[test]
    fn rejects_bad_operators() {
        for (text, op) in [
            ("detection_s =< 10", "=<"),
            ("detection_s = 10", "="),
            ("detection_s != 1", "!="),
        ] {
            let e = parse_threshold(text).unwrap_err();
            assert!(e.contains(&format!("`{op}` in threshold")), "{e}");
        }
        assert!(parse_threshold("detection_s 10")
            .unwrap_err()
            .contains("no comparison"));
    }

    #[test]
    fn rejects_limits_that_are_not_plain_numbers() {
        for limit in ["10s", "ten", "inf", "NaN", "1e3", "1.", ".5", "--1", "1 2"] {
            let e = parse_threshold(&format!("detection_s <= {limit}")).unwrap_err();
            assert!(e.contains("is not a number"), "{limit}: {e}");
        }
        assert!(parse_threshold("detection_s <=")
            .unwrap_err()
            .contains("no number"));
        assert!(parse_threshold("").unwrap_err().contains("empty"));
        assert!(parse_threshold("<= 3")
            .unwrap_err()
            .contains("does not start with a metric"));
    }
}
