//! Threshold lines: `metric op number`, e.g. `detection_s <= 10`.

use super::document::did_you_mean;
use super::model::{ComponentKind, Metric, Op, Statistic, Threshold};
use crate::ledger::Source;

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
    // Optional statistic over the trials: `p95(detection_s) <= 8`.
    let (statistic, name, rest) = match text.split_once('(') {
        Some((stat, after)) if !stat.contains(char::is_whitespace) && !stat.is_empty() => {
            let statistic = Statistic::NAMED
                .into_iter()
                .find(|s| s.name() == stat)
                .ok_or_else(|| {
                    format!(
                        "`{stat}` in threshold `{text}` is not a statistic; use min, max, mean, p50 or p95, \
                         e.g. `p95(detection_s) <= 8` (without one, every trial must hold)"
                    )
                })?;
            let (inner, rest) = after.split_once(')').ok_or_else(|| {
                format!("threshold `{text}` opens `{stat}(` but never closes it; {SHAPE}")
            })?;
            (statistic, inner.trim(), rest)
        }
        _ => {
            let name_end = text
                .find(|c: char| c.is_whitespace() || "<>=!".contains(c))
                .unwrap_or(text.len());
            let (name, rest) = text.split_at(name_end);
            (Statistic::Every, name, rest)
        }
    };
    if name.is_empty() {
        return Err(format!(
            "threshold `{text}` does not start with a metric; {SHAPE}"
        ));
    }
    // `redis.promotion_s`: one component's figure, `http.api.rto_s` one HTTP probe's (checked against the
    // scenario's components and probes by the caller).
    let (source, name) = match name.split_once('.') {
        Some(("http", rest)) => {
            let (probe, metric) = rest.split_once('.').ok_or_else(|| {
                format!(
                    "threshold `{text}` names an HTTP probe without a metric; write `http.<probe>.<metric>`, e.g. \
                     `http.api.availability_pct >= 99.9`"
                )
            })?;
            (Some(Source::Http(probe.into())), metric)
        }
        Some((c, metric)) => {
            let component = ComponentKind::ALL
                .into_iter()
                .find(|k| k.name() == c)
                .ok_or_else(|| {
                    let known: Vec<&str> = ComponentKind::ALL.iter().map(|k| k.name()).collect();
                    format!(
                        "`{c}` in threshold `{text}` is not a component; name one of {} before the dot, e.g. \
                         `redis.promotion_s <= 10`",
                        known.join(", ")
                    )
                })?;
            (Some(Source::Component(component)), metric)
        }
        None => (None, name),
    };
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
    Ok(Threshold {
        source,
        metric,
        op,
        limit,
        statistic,
    })
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
    let names: Vec<&str> = Metric::all().iter().map(|m| m.name()).collect();
    let hint = did_you_mean(name, &names)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    // The per-operation latency/throughput family is long; list the rest and describe the pattern.
    let core: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| {
            !n.starts_with("write_") && !n.starts_with("read_") && !n.starts_with("search_")
        })
        .collect();
    format!(
        "unknown metric `{name}`{hint}; known metrics: {}, and the same latency/throughput metrics per operation \
         with a write_, read_ or search_ prefix (e.g. search_p99_degradation_pct)",
        core.join(", ")
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
                source: None,
                metric: Metric::DetectionS,
                op: Op::Le,
                limit: 10.0,
                statistic: Statistic::Every,
            }
        );
        assert_eq!(ok("rto_s<2.5").op, Op::Lt);
        assert_eq!(ok("lost_acked_writes == 0").op, Op::Eq);
        assert_eq!(ok("acked_writes >= 100").op, Op::Ge);
        assert_eq!(ok("error_rate > -0.5").limit, -0.5);
    }

    #[test]
    fn a_statistic_wraps_the_metric() {
        let t = ok("p95(detection_s) <= 8");
        assert_eq!(t.statistic, Statistic::P95);
        assert_eq!(t.metric, Metric::DetectionS);
        assert_eq!(t.to_string(), "p95(detection_s) <= 8");
        assert_eq!(
            ok("max( search_p99_degradation_pct ) < 20").statistic,
            Statistic::Max
        );
        let e = parse_threshold("p42(detection_s) <= 8").unwrap_err();
        assert!(e.contains("`p42`") && e.contains("not a statistic"), "{e}");
        let e = parse_threshold("p95(detection_s <= 8").unwrap_err();
        assert!(e.contains("never closes"), "{e}");
        let e = parse_threshold("mean(detecton_s) <= 8").unwrap_err();
        assert!(e.contains("did you mean `detection_s`"), "{e}");
    }

    #[test]
    fn per_operation_and_paired_window_metrics_have_names() {
        for name in [
            "search_p99_degradation_pct",
            "latency_p95_baseline_ms",
            "write_throughput_fault_per_s",
            "throughput_degradation_pct",
            "read_p50_fault_ms",
            "availability_pct",
            "failed_queries",
            "recovered_s",
            "pods_ready_s",
        ] {
            assert_eq!(Metric::from_name(name).map(|m| m.name()), Some(name));
        }
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
