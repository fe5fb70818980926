//! Log agreement: each harness stamp for a server-side event (detection, promotion) is paired with the server's
//! own log line for the same event, found only inside that trial's window, and the largest difference becomes the
//! metric `log_agreement_max_s`. A stamp that disagrees with the servers' logs is the second-worst bug a harness
//! can have; this is how a run proves it does not have it.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::clock::{rfc3339_millis, Clock, Stamp};
use crate::component::LogCheck;
use crate::events::Event;

/// How far before the fault instant a server line may be dated and still belong to the trial (server clocks and
/// log stamps are the same machine's here, so this only absorbs the log's millisecond rounding and the harness's
/// own stamping order).
const BEFORE_FAULT: Duration = Duration::from_millis(500);

/// One comparison of a harness stamp with a server log line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogAgreement {
    pub trial: u32,
    /// What was compared, e.g. "promotion (+promoted-slave)".
    pub event: String,
    /// None when the harness observed no such event in the trial.
    pub harness_at: Option<String>,
    /// None when no matching server log line was found in the trial's window.
    pub server_log_at: Option<String>,
    pub server_log_line: Option<String>,
    /// Server log time minus harness time; None unless both were found.
    pub delta_s: Option<f64>,
}

/// A trial's window on the run's clock: from its fault instant to the end of its load.
#[derive(Clone, Copy, Debug)]
pub struct TrialSpan {
    pub trial: u32,
    pub fault_at: Stamp,
    pub end: Stamp,
}

/// Pairs, for one trial, each check's first harness event after the fault with the first server line of the
/// check that lies inside the trial's window. `lines[i]` are the server lines (wall time, text) for `checks[i]`.
pub fn pair(
    clock: &Clock,
    span: TrialSpan,
    events: &[Event],
    checks: &[LogCheck],
    lines: &[Vec<(SystemTime, String)>],
) -> Vec<LogAgreement> {
    let from = clock.wall(span.fault_at) - BEFORE_FAULT;
    let to = clock.wall(span.end);
    checks
        .iter()
        .zip(lines)
        .filter_map(|(check, lines)| {
            let harness = events
                .iter()
                .filter(|e| e.trial == span.trial && e.at >= span.fault_at && e.at <= span.end)
                .filter(|e| (check.event)(&e.kind))
                .map(|e| e.at)
                .min();
            let line = lines
                .iter()
                .filter(|(t, _)| *t >= from && *t <= to)
                .min_by_key(|(t, _)| *t);
            if harness.is_none() && line.is_none() {
                return None;
            }
            let harness_wall = harness.map(|h| clock.wall(h));
            Some(LogAgreement {
                trial: span.trial,
                event: check.label.to_string(),
                harness_at: harness_wall.map(rfc3339_millis),
                server_log_at: line.map(|(t, _)| rfc3339_millis(*t)),
                server_log_line: line.map(|(_, l)| l.clone()),
                delta_s: match (line, harness_wall) {
                    (Some((t, _)), Some(h)) => Some(signed_secs(*t, h)),
                    _ => None,
                },
            })
        })
        .collect()
}

/// The trial's `log_agreement_max_s`: the largest |server - harness| over its comparisons. Not observed when
/// nothing was compared, or when one side of a comparison is missing (the harness saw an event the servers did
/// not log, or the other way round): agreement was not shown then, and the note says which.
pub fn max_delta(rows: &[LogAgreement]) -> (Option<f64>, Option<String>) {
    let one_sided: Vec<String> = rows
        .iter()
        .filter(|r| r.delta_s.is_none())
        .map(|r| {
            if r.harness_at.is_some() {
                format!("{}: no server log line in the trial's window", r.event)
            } else {
                format!("{}: in the server log but not seen by the harness", r.event)
            }
        })
        .collect();
    if !one_sided.is_empty() {
        return (
            None,
            Some(format!(
                "log_agreement_max_s not observed: {}",
                one_sided.join("; ")
            )),
        );
    }
    let max = rows
        .iter()
        .filter_map(|r| r.delta_s)
        .map(f64::abs)
        .reduce(f64::max);
    (max, None)
}

pub(crate) fn signed_secs(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;
    use crate::scenario::ComponentKind;

    fn is_promotion(k: &EventKind) -> bool {
        matches!(k, EventKind::NewPrimaryServing { .. })
    }

    fn check() -> LogCheck {
        LogCheck {
            label: "promotion",
            needle: "promoted self to leader",
            event: is_promotion,
        }
    }

    fn at(clock: &Clock, ms: u64) -> SystemTime {
        clock.wall(Stamp(Duration::from_millis(ms)))
    }

    fn promoted(trial: u32, ms: u64) -> Event {
        Event {
            at: Stamp(Duration::from_millis(ms)),
            trial,
            kind: EventKind::NewPrimaryServing {
                component: ComponentKind::Postgres,
                member: "n2".into(),
                evidence: "x".into(),
            },
        }
    }

    fn span(trial: u32, fault_ms: u64, end_ms: u64) -> TrialSpan {
        TrialSpan {
            trial,
            fault_at: Stamp(Duration::from_millis(fault_ms)),
            end: Stamp(Duration::from_millis(end_ms)),
        }
    }

    /// The defect this guards against: the server line was taken from anywhere after the fault, so trial 1 could
    /// be "agreed" with trial 2's promotion line.
    #[test]
    fn server_lines_are_searched_only_inside_the_trial_window() {
        let clock =
            Clock::with_wall_anchor(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let lines = vec![vec![
            (
                at(&clock, 9_000),
                "old promotion, before trial 1".to_string(),
            ),
            (at(&clock, 71_100), "trial 2's promotion".to_string()),
        ]];
        let events = vec![promoted(1, 18_000), promoted(2, 71_000)];
        let rows = pair(&clock, span(1, 10_000, 40_000), &events, &[check()], &lines);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].server_log_line, None, "{rows:?}");
        assert_eq!(
            max_delta(&rows),
            (
                None,
                Some("log_agreement_max_s not observed: promotion: no server log line in the trial's window".into())
            )
        );
        let rows = pair(&clock, span(2, 60_000, 90_000), &events, &[check()], &lines);
        let delta = rows[0].delta_s.unwrap();
        assert!((delta - 0.1).abs() < 1e-6, "{delta}");
        assert_eq!(max_delta(&rows).0, Some(delta));
    }

    #[test]
    fn the_largest_absolute_difference_is_the_metric() {
        let clock =
            Clock::with_wall_anchor(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let detection = LogCheck {
            label: "detection",
            needle: "+sdown",
            event: |k| matches!(k, EventKind::FailureDetected { .. }),
        };
        let events = vec![
            promoted(1, 15_000),
            Event {
                at: Stamp(Duration::from_millis(13_000)),
                trial: 1,
                kind: EventKind::FailureDetected {
                    component: ComponentKind::Redis,
                    evidence: "x".into(),
                },
            },
        ];
        let lines = vec![
            vec![(at(&clock, 15_020), "promoted".to_string())],
            vec![(at(&clock, 12_700), "+sdown".to_string())],
        ];
        let rows = pair(
            &clock,
            span(1, 10_000, 40_000),
            &events,
            &[check(), detection],
            &lines,
        );
        let (max, note) = max_delta(&rows);
        assert!((max.unwrap() - 0.3).abs() < 1e-6, "{rows:?}");
        assert_eq!(note, None);
        // A server line the harness never matched is a disagreement too.
        let rows = pair(
            &clock,
            span(1, 10_000, 40_000),
            &[],
            &[check()],
            &lines[..1],
        );
        assert!(max_delta(&rows)
            .1
            .unwrap()
            .contains("not seen by the harness"));
        // Nothing on either side: nothing to compare, nothing observed.
        assert_eq!(max_delta(&[]), (None, None));
    }
}
