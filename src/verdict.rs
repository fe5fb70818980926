//! Judges measurements against the scenario's thresholds. A threshold passes only when it holds in every trial;
//! a value that was not observed fails it, and a run that did not complete can never pass.

use serde::Serialize;

use crate::analysis::TrialMeasurements;
use crate::ledger::Source;
use crate::scenario::{Metric, Op, Statistic, Threshold};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Incomplete,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Incomplete => "incomplete",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThresholdResult {
    /// The component or HTTP probe the metric is one figure of (`redis.promotion_s`, `http.api.rto_s`); None =
    /// the run's own figure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    pub metric: Metric,
    pub op: Op,
    pub limit: f64,
    /// What was judged over the trials: `every` (each trial must hold) or a statistic of the trials' values.
    pub statistic: Statistic,
    /// The first failing trial's value, or the worst value when every trial passed; None = not observed.
    pub measured: Option<f64>,
    pub pass: bool,
    /// The trial `measured` comes from; None when there was no trial at all.
    pub trial: Option<u32>,
    pub message: String,
}

impl ThresholdResult {
    /// `detection_s <= 10` or `p95(detection_s) <= 8`, the threshold as written in the scenario.
    pub fn label(&self) -> String {
        let metric = self.metric_name();
        match self.statistic {
            Statistic::Every => format!("{metric} {} {}", self.op.symbol(), self.limit),
            s => format!("{}({metric}) {} {}", s.name(), self.op.symbol(), self.limit),
        }
    }

    /// `promotion_s`, or `redis.promotion_s` for one component's figure: the key in the report's measurements.
    pub fn metric_name(&self) -> String {
        metric_name(self.source.as_ref(), self.metric)
    }
}

/// The name of a figure in reports: the metric's, prefixed with its source's when it is one component's or one
/// HTTP probe's.
pub fn metric_name(source: Option<&Source>, metric: Metric) -> String {
    match source {
        Some(s) => format!("{}.{metric}", s.name()),
        None => metric.to_string(),
    }
}

pub fn judge(thresholds: &[Threshold], trials: &[TrialMeasurements]) -> Vec<ThresholdResult> {
    let many = trials.len() > 1;
    thresholds
        .iter()
        .map(|t| judge_one(t, trials, many))
        .collect()
}

fn judge_one(t: &Threshold, trials: &[TrialMeasurements], many: bool) -> ThresholdResult {
    let result =
        |measured: Option<f64>, pass: bool, trial: Option<u32>, message: String| ThresholdResult {
            source: t.source.clone(),
            metric: t.metric,
            op: t.op,
            limit: t.limit,
            statistic: t.statistic,
            measured,
            pass,
            trial,
            message,
        };
    let limit = t.limit.to_string();
    let name = metric_name(t.source.as_ref(), t.metric);
    if trials.is_empty() {
        return result(
            None,
            false,
            None,
            format!("{name} not observed: no trial was measured (FAIL)"),
        );
    }

    // A value that is only a lower bound (an outage still open when the trial ended) cannot show that an upper
    // limit holds.
    let upper_limit = matches!(t.op, Op::Lt | Op::Le | Op::Eq);
    if upper_limit {
        if let Some(m) = trials
            .iter()
            .find(|m| m.is_lower_bound(t.source.as_ref(), t.metric))
        {
            let v = m.value_of(t.source.as_ref(), t.metric);
            let message = format!(
                "{} >= {} in trial {}: the outage was still open when the trial ended, limit {} {limit} (FAIL)",
                name,
                v.map_or("?".to_string(), format_number),
                m.trial,
                t.op.symbol()
            );
            return result(v, false, Some(m.trial), message);
        }
    }

    if t.statistic != Statistic::Every {
        let mut values = Vec::with_capacity(trials.len());
        for m in trials {
            match m.value_of(t.source.as_ref(), t.metric) {
                Some(v) => values.push(v),
                None => {
                    let message = format!(
                        "{}({}) not computable: not observed in trial {}, limit {} {limit} (FAIL)",
                        t.statistic.name(),
                        name,
                        m.trial,
                        t.op.symbol()
                    );
                    return result(None, false, Some(m.trial), message);
                }
            }
        }
        let v = t.statistic.of(&values).expect("trials is not empty");
        let pass = t.op.holds(v, t.limit);
        let message = format!(
            "{}({}) over {} trial{} = {}, limit {} {limit} ({})",
            t.statistic.name(),
            name,
            values.len(),
            if values.len() == 1 { "" } else { "s" },
            format_measured(v, t),
            t.op.symbol(),
            if pass { "pass" } else { "FAIL" }
        );
        return result(Some(v), pass, None, message);
    }

    let mut worst: Option<(f64, u32)> = None;
    for m in trials {
        let in_trial = if many {
            format!(" in trial {}", m.trial)
        } else {
            String::new()
        };
        let Some(v) = m.value_of(t.source.as_ref(), t.metric) else {
            let message = format!(
                "{} not observed in trial {}, limit {} {limit} (FAIL)",
                name,
                m.trial,
                t.op.symbol()
            );
            return result(None, false, Some(m.trial), message);
        };
        // NaN holds for no operator, so it lands here too.
        if !t.op.holds(v, t.limit) {
            let shown = format_measured(v, t);
            let message = format!(
                "{} = {shown}{in_trial}, limit {} {limit} (FAIL)",
                name,
                t.op.symbol()
            );
            return result(Some(v), false, Some(m.trial), message);
        }
        if worst.is_none_or(|(w, _)| is_worse(t.op, v, w)) {
            worst = Some((v, m.trial));
        }
    }
    let (v, trial) = worst.expect("trials is not empty and every trial was judged");
    let in_trial = if many {
        format!(" (worst: trial {trial})")
    } else {
        String::new()
    };
    let message = format!(
        "{} = {} {} {limit}{in_trial} (pass)",
        name,
        format_measured(v, t),
        t.op.symbol()
    );
    result(Some(v), true, Some(trial), message)
}

/// Closer to breaking the limit: larger under `<`/`<=`, smaller under `>`/`>=`. Under `==` all passing values
/// are equal.
fn is_worse(op: Op, candidate: f64, current: f64) -> bool {
    match op {
        Op::Lt | Op::Le => candidate > current,
        Op::Gt | Op::Ge => candidate < current,
        Op::Eq => false,
    }
}

/// 3 decimals for readability, unless rounding would make the printed number contradict the result
/// (e.g. 10.0004 shown as "10.000" against `<= 10`); then the full value is printed.
fn format_measured(v: f64, t: &Threshold) -> String {
    let short = format_number(v);
    match short.parse::<f64>() {
        Ok(shown) if t.op.holds(shown, t.limit) == t.op.holds(v, t.limit) => short,
        _ => format!("{v}"),
    }
}

/// Whole numbers without decimals (counts, limits), anything else with 3.
pub fn format_number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.is_finite() {
        format!("{v:.3}")
    } else {
        format!("{v}")
    }
}

/// A run that did not complete is never a pass; a run with no threshold judged nothing and fails.
pub fn overall(results: &[ThresholdResult], completed: bool) -> Verdict {
    if !completed {
        Verdict::Incomplete
    } else if results.is_empty() || results.iter().any(|r| !r.pass) {
        Verdict::Fail
    } else {
        Verdict::Pass
    }
}

/// Why `overall` failed a run that has no threshold, for reports.
pub const NO_THRESHOLDS: &str = "the scenario has no thresholds, so nothing was judged";

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::analysis::WriteClassification;
    use crate::scenario::ComponentKind;

    fn trial(n: u32, values: &[(Metric, Option<f64>)]) -> TrialMeasurements {
        let mut map: BTreeMap<Metric, Option<f64>> =
            Metric::all().iter().map(|m| (*m, None)).collect();
        map.extend(values.iter().copied());
        TrialMeasurements {
            trial: n,
            values: map,
            writes: WriteClassification::default(),
            latency_buckets: Vec::new(),
            op_buckets: Vec::new(),
            notes: Vec::new(),
            lower_bounds: Default::default(),
            integrity: Vec::new(),
            components: BTreeMap::new(),
            probes: BTreeMap::new(),
        }
    }

    fn th(metric: Metric, op: Op, limit: f64) -> Threshold {
        Threshold {
            source: None,
            metric,
            op,
            limit,
            statistic: Statistic::Every,
        }
    }

    #[test]
    fn a_lower_bound_cannot_pass_an_upper_limit() {
        let mut open = trial(1, &[(Metric::DowntimeS, Some(4.2))]);
        open.lower_bounds.insert(Metric::DowntimeS);
        let r = judge(&[th(Metric::DowntimeS, Op::Lt, 30.0)], &[open.clone()]);
        assert!(!r[0].pass);
        assert_eq!(
            r[0].message,
            "downtime_s >= 4.200 in trial 1: the outage was still open when the trial ended, limit < 30 (FAIL)"
        );
        // A lower bound above a lower limit does show that it holds.
        let r = judge(&[th(Metric::DowntimeS, Op::Gt, 1.0)], &[open.clone()]);
        assert!(r[0].pass, "{}", r[0].message);
        let mut stat = th(Metric::DowntimeS, Op::Le, 30.0);
        stat.statistic = Statistic::P95;
        assert!(!judge(&[stat], &[open])[0].pass);
    }

    #[test]
    fn passing_and_failing_messages() {
        let t = [trial(
            1,
            &[
                (Metric::DetectionS, Some(8.412)),
                (Metric::LostAckedWrites, Some(61234.0)),
            ],
        )];
        let r = judge(
            &[
                th(Metric::DetectionS, Op::Le, 10.0),
                th(Metric::LostAckedWrites, Op::Eq, 0.0),
            ],
            &t,
        );
        assert!(r[0].pass);
        assert_eq!(r[0].message, "detection_s = 8.412 <= 10 (pass)");
        assert_eq!((r[0].measured, r[0].trial), (Some(8.412), Some(1)));
        assert!(!r[1].pass);
        assert_eq!(r[1].message, "lost_acked_writes = 61234, limit == 0 (FAIL)");
        assert_eq!(overall(&r, true), Verdict::Fail);
    }

    #[test]
    fn not_observed_fails() {
        let r = judge(&[th(Metric::PromotionS, Op::Le, 30.0)], &[trial(1, &[])]);
        assert!(!r[0].pass);
        assert_eq!(r[0].measured, None);
        assert_eq!(
            r[0].message,
            "promotion_s not observed in trial 1, limit <= 30 (FAIL)"
        );
    }

    #[test]
    fn no_trial_fails_every_threshold() {
        let r = judge(&[th(Metric::RtoS, Op::Le, 30.0)], &[]);
        assert!(!r[0].pass);
        assert_eq!((r[0].measured, r[0].trial), (None, None));
    }

    #[test]
    fn a_named_statistic_judges_the_distribution_not_every_trial() {
        let trials: Vec<TrialMeasurements> = [8.0, 9.0, 12.0, 7.0, 8.5]
            .iter()
            .enumerate()
            .map(|(i, v)| trial(i as u32 + 1, &[(Metric::DetectionS, Some(*v))]))
            .collect();
        let every = judge(&[th(Metric::DetectionS, Op::Le, 10.0)], &trials);
        assert!(!every[0].pass, "trial 3 breaks the limit");
        let p50 = Threshold {
            statistic: Statistic::P50,
            ..th(Metric::DetectionS, Op::Le, 10.0)
        };
        let r = judge(&[p50], &trials);
        assert!(r[0].pass);
        assert_eq!(r[0].measured, Some(8.5));
        assert_eq!(r[0].statistic, Statistic::P50);
        assert!(
            r[0].message
                .starts_with("p50(detection_s) over 5 trials = 8.500"),
            "{}",
            r[0].message
        );
        assert_eq!(r[0].label(), "p50(detection_s) <= 10");
        let p95 = Threshold {
            statistic: Statistic::P95,
            ..th(Metric::DetectionS, Op::Le, 10.0)
        };
        assert_eq!(judge(&[p95], &trials)[0].measured, Some(12.0));
    }

    #[test]
    fn a_components_threshold_judges_that_components_figure() {
        let mut system = trial(1, &[(Metric::AvailabilityPct, Some(99.95))]);
        system.components = [
            (
                ComponentKind::Postgres,
                trial(1, &[(Metric::PromotionS, Some(9.0))]),
            ),
            (
                ComponentKind::Redis,
                trial(1, &[(Metric::PromotionS, Some(12.5))]),
            ),
        ]
        .into_iter()
        .collect();
        let of = |c: Option<ComponentKind>, metric, limit| Threshold {
            source: c.map(Source::Component),
            ..th(metric, Op::Le, limit)
        };
        let r = judge(
            &[
                of(Some(ComponentKind::Postgres), Metric::PromotionS, 10.0),
                of(Some(ComponentKind::Redis), Metric::PromotionS, 10.0),
                Threshold {
                    op: Op::Ge,
                    ..of(None, Metric::AvailabilityPct, 99.9)
                },
                of(None, Metric::PromotionS, 10.0),
            ],
            &[system],
        );
        assert!(r[0].pass, "{}", r[0].message);
        assert!(!r[1].pass);
        assert_eq!(r[1].measured, Some(12.5));
        assert_eq!(r[1].label(), "redis.promotion_s <= 10");
        assert_eq!(
            r[1].message,
            "redis.promotion_s = 12.500, limit <= 10 (FAIL)"
        );
        assert!(r[2].pass, "the system's availability: {}", r[2].message);
        // The system has no promotion of its own: not observed fails (the parser refuses such a threshold).
        assert!(!r[3].pass);
    }

    #[test]
    fn a_statistic_over_a_trial_that_observed_nothing_fails() {
        let trials = vec![
            trial(1, &[(Metric::DetectionS, Some(3.0))]),
            trial(2, &[(Metric::DetectionS, None)]),
        ];
        let mean = Threshold {
            statistic: Statistic::Mean,
            ..th(Metric::DetectionS, Op::Le, 10.0)
        };
        let r = judge(&[mean], &trials);
        assert!(!r[0].pass);
        assert!(
            r[0].message.contains("not observed in trial 2"),
            "{}",
            r[0].message
        );
    }

    #[test]
    fn nan_never_passes() {
        for op in [Op::Lt, Op::Le, Op::Eq, Op::Ge, Op::Gt] {
            let r = judge(
                &[th(Metric::ErrorRate, op, 0.5)],
                &[trial(1, &[(Metric::ErrorRate, Some(f64::NAN))])],
            );
            assert!(!r[0].pass, "{op:?}");
        }
    }

    #[test]
    fn every_trial_must_hold_and_the_first_failing_trial_is_reported() {
        let trials = [
            trial(1, &[(Metric::RtoS, Some(5.0))]),
            trial(2, &[(Metric::RtoS, Some(12.3))]),
            trial(3, &[(Metric::RtoS, Some(15.0))]),
        ];
        let r = judge(&[th(Metric::RtoS, Op::Le, 10.0)], &trials);
        assert!(!r[0].pass);
        assert_eq!((r[0].measured, r[0].trial), (Some(12.3), Some(2)));
        assert_eq!(
            r[0].message,
            "rto_s = 12.300 in trial 2, limit <= 10 (FAIL)"
        );
    }

    #[test]
    fn a_missing_value_in_a_later_trial_still_fails() {
        let trials = [trial(1, &[(Metric::RtoS, Some(5.0))]), trial(2, &[])];
        let r = judge(&[th(Metric::RtoS, Op::Le, 10.0)], &trials);
        assert!(!r[0].pass);
        assert_eq!((r[0].measured, r[0].trial), (None, Some(2)));
        assert_eq!(
            r[0].message,
            "rto_s not observed in trial 2, limit <= 10 (FAIL)"
        );
    }

    #[test]
    fn all_passing_reports_the_worst_trial() {
        let trials = [
            trial(
                1,
                &[
                    (Metric::RtoS, Some(5.0)),
                    (Metric::AckedWrites, Some(900.0)),
                ],
            ),
            trial(
                2,
                &[
                    (Metric::RtoS, Some(7.5)),
                    (Metric::AckedWrites, Some(800.0)),
                ],
            ),
            trial(
                3,
                &[
                    (Metric::RtoS, Some(6.0)),
                    (Metric::AckedWrites, Some(850.0)),
                ],
            ),
        ];
        let r = judge(
            &[
                th(Metric::RtoS, Op::Lt, 10.0),
                th(Metric::AckedWrites, Op::Ge, 500.0),
            ],
            &trials,
        );
        assert!(r[0].pass && r[1].pass);
        assert_eq!((r[0].measured, r[0].trial), (Some(7.5), Some(2)));
        assert_eq!(r[0].message, "rto_s = 7.500 < 10 (worst: trial 2) (pass)");
        assert_eq!((r[1].measured, r[1].trial), (Some(800.0), Some(2)));
        assert_eq!(overall(&r, true), Verdict::Pass);
    }

    #[test]
    fn rounding_never_prints_a_failing_value_as_if_it_passed() {
        let r = judge(
            &[th(Metric::DetectionS, Op::Le, 10.0)],
            &[trial(1, &[(Metric::DetectionS, Some(10.0004))])],
        );
        assert!(!r[0].pass);
        assert_eq!(r[0].message, "detection_s = 10.0004, limit <= 10 (FAIL)");
    }

    #[test]
    fn an_incomplete_run_is_never_a_pass() {
        let r = judge(
            &[th(Metric::DetectionS, Op::Le, 10.0)],
            &[trial(1, &[(Metric::DetectionS, Some(1.0))])],
        );
        assert!(r[0].pass);
        assert_eq!(overall(&r, false), Verdict::Incomplete);
        assert_eq!(overall(&[], false), Verdict::Incomplete);
    }

    #[test]
    fn no_thresholds_is_a_fail() {
        assert_eq!(overall(&[], true), Verdict::Fail);
    }

    #[test]
    fn verdicts_serialise_lowercase() {
        let json =
            serde_json::to_string(&[Verdict::Pass, Verdict::Fail, Verdict::Incomplete]).unwrap();
        assert_eq!(json, r#"["pass","fail","incomplete"]"#);
    }
}
