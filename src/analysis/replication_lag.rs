//! Replication lag figures from the primary's own readings (`ReplicationSample` events, see
//! `component::postgres::replication`): each reading's lag is its most-behind standby's `replay_lag`, and a
//! window's figures are the median and the largest of those (a lagging synchronous standby is not averaged away
//! by an idle asynchronous one).
//! A figure is claimed only when the readings cover the whole window and every standby that was streaming when
//! it began: a standby missing from a reading, or a primary nobody could read, has an unknown lag, and a maximum
//! over the rest would look better than what happened.

use std::collections::BTreeSet;

use crate::clock::Stamp;
use crate::component::postgres::REPLICATION_SAMPLE_EVERY;
use crate::events::{Event, EventKind, StandbyLag};
use crate::scenario::ComponentKind;

/// The longest stretch of a window without a reading that still counts as covered: two and a half sampling
/// periods (one reading lost to a slow answer is tolerated, two are not).
fn gap_limit_s() -> f64 {
    REPLICATION_SAMPLE_EVERY.as_secs_f64() * 2.5
}

#[derive(Debug, Default, PartialEq)]
pub struct LagFigures {
    pub p50_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Why the figures are not claimed, when there were readings but they do not cover the window.
    pub note: Option<String>,
}

/// The figures of `component`'s standbys over `[from, to)`. Nothing (and no note) when the trial has no reading
/// of that component at all: it has no sampler (Redis, Qdrant).
pub fn in_window(
    events: &[Event],
    component: ComponentKind,
    window: (Stamp, Stamp),
    label: &str,
) -> LagFigures {
    let readings: Vec<(Stamp, &str, &[StandbyLag])> = {
        let mut v: Vec<_> = events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::ReplicationSample {
                    component: c,
                    primary,
                    standbys,
                } if *c == component => Some((e.at, primary.as_str(), standbys.as_slice())),
                _ => None,
            })
            .collect();
        v.sort_by_key(|r| r.0);
        v
    };
    if readings.is_empty() || window.1 <= window.0 {
        return LagFigures::default();
    }
    let (from, to) = window;
    let inside: Vec<&(Stamp, &str, &[StandbyLag])> = readings
        .iter()
        .filter(|r| r.0 >= from && r.0 < to)
        .collect();
    let not_claimed = |why: String| LagFigures {
        p50_ms: None,
        max_ms: None,
        note: Some(format!(
            "replication lag in the {label} window not claimed: {why}"
        )),
    };

    // Coverage: from the window's start to its end, no stretch without a reading longer than the limit.
    let mut at = from;
    let mut longest = 0.0f64;
    for r in inside.iter().map(|r| r.0).chain(std::iter::once(to)) {
        longest = longest.max(r.secs_since(at));
        at = r;
    }
    if longest > gap_limit_s() {
        return not_claimed(format!("no primary could be read for {longest:.1} s of it"));
    }

    // The standbys expected in every reading: those streaming in the last reading before the window (or its
    // first), less whichever member is the primary at the time.
    let reference = readings
        .iter()
        .rev()
        .find(|r| r.0 <= from)
        .or(inside.first().copied())
        .expect("the window has readings");
    let expected: BTreeSet<&str> = reference
        .2
        .iter()
        .filter(|s| s.state == "streaming")
        .map(|s| s.name.as_str())
        .collect();
    let mut values: Vec<f64> = Vec::new();
    let mut unknown: BTreeSet<&str> = BTreeSet::new();
    let mut unknown_readings = 0usize;
    for (_, primary, standbys) in &inside {
        let mut short = false;
        for name in expected.iter().filter(|n| **n != *primary) {
            match standbys.iter().find(|s| s.name == *name) {
                Some(s) if s.lag_ms().is_some() => {}
                _ => {
                    unknown.insert(name);
                    short = true;
                }
            }
        }
        if short {
            unknown_readings += 1;
        }
        if let Some(worst) = standbys
            .iter()
            .filter_map(StandbyLag::lag_ms)
            .max_by(f64::total_cmp)
        {
            values.push(worst);
        }
    }
    if !unknown.is_empty() {
        return not_claimed(format!(
            "{} not streaming (or without a measured lag) in {unknown_readings} of {} readings",
            unknown.into_iter().collect::<Vec<_>>().join(", "),
            inside.len()
        ));
    }
    if values.is_empty() {
        // A primary without standbys: there is no replication to be late.
        return not_claimed("the primary had no standby".into());
    }
    values.sort_by(f64::total_cmp);
    LagFigures {
        p50_ms: Some(values[(values.len() - 1) / 2]),
        max_ms: values.last().copied(),
        note: None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn s(name: &str, lag: Option<f64>, state: &str) -> StandbyLag {
        StandbyLag {
            name: name.into(),
            state: state.into(),
            sync_state: "sync".into(),
            replay_lag_ms: lag,
            behind_bytes: None,
        }
    }

    /// A reading of streaming standbys with these lags.
    fn reading(at_ms: u64, primary: &str, lags: &[(&str, Option<f64>)]) -> Event {
        reading_of(
            at_ms,
            primary,
            lags.iter().map(|(n, l)| s(n, *l, "streaming")).collect(),
        )
    }

    fn reading_of(at_ms: u64, primary: &str, standbys: Vec<StandbyLag>) -> Event {
        Event {
            at: Stamp(Duration::from_millis(at_ms)),
            trial: 1,
            kind: EventKind::ReplicationSample {
                component: ComponentKind::Postgres,
                primary: primary.into(),
                standbys,
            },
        }
    }

    fn w(from_ms: u64, to_ms: u64) -> (Stamp, Stamp) {
        (
            Stamp(Duration::from_millis(from_ms)),
            Stamp(Duration::from_millis(to_ms)),
        )
    }

    #[test]
    fn median_and_largest_of_the_most_behind_standby() {
        let ev = vec![
            reading(0, "n1", &[("n2", Some(1.0)), ("n3", Some(2.0))]),
            reading(1000, "n1", &[("n2", Some(201.0)), ("n3", Some(250.0))]),
            reading(2000, "n1", &[("n2", Some(199.0)), ("n3", Some(0.5))]),
            // n2 had applied all it was sent: PostgreSQL cleared its lag
            reading(3000, "n1", &[("n2", None), ("n3", Some(210.0))]),
            reading(4000, "n1", &[("n2", Some(90.0)), ("n3", Some(1.0))]),
        ];
        let f = in_window(&ev, ComponentKind::Postgres, w(500, 4500), "fault");
        assert_eq!(f.note, None);
        assert_eq!(f.max_ms, Some(250.0));
        // the most-behind standby per reading: 250, 199, 210, 90 -> lower median 199 (over every standby's
        // reading it would be 90: the idle one would halve the picture)
        assert_eq!(f.p50_ms, Some(199.0));
        let b = in_window(&ev, ComponentKind::Postgres, w(0, 500), "baseline");
        assert_eq!((b.p50_ms, b.max_ms), (Some(2.0), Some(2.0)));
    }

    #[test]
    fn a_standby_missing_from_a_reading_makes_the_lag_unknown() {
        let ev = vec![
            reading(0, "n1", &[("n2", Some(1.0)), ("n3", Some(2.0))]),
            reading(1000, "n1", &[("n2", Some(3.0))]),
            reading(2000, "n1", &[("n2", Some(3.0)), ("n3", Some(9000.0))]),
        ];
        let f = in_window(&ev, ComponentKind::Postgres, w(500, 2500), "fault");
        assert_eq!((f.p50_ms, f.max_ms), (None, None));
        let note = f.note.unwrap();
        assert!(
            note.contains("n3") && note.contains("1 of 2 readings"),
            "{note}"
        );
    }

    #[test]
    fn a_standby_catching_up_without_a_lag_shown_is_unknown() {
        let ev = vec![
            reading(0, "n1", &[("n2", Some(1.0))]),
            reading_of(1000, "n1", vec![s("n2", None, "catchup")]),
        ];
        let f = in_window(&ev, ComponentKind::Postgres, w(500, 1500), "fault");
        assert_eq!(f.max_ms, None);
        assert!(f.note.unwrap().contains("n2"));
    }

    #[test]
    fn a_window_without_readings_for_a_while_is_not_claimed() {
        let ev = vec![
            reading(0, "n1", &[("n2", Some(1.0))]),
            reading(1000, "n1", &[("n2", Some(1.0))]),
            // failover: nobody answered as the primary for 6 s
            reading(7000, "n2", &[]),
        ];
        let f = in_window(&ev, ComponentKind::Postgres, w(500, 7500), "fault");
        assert_eq!(f.max_ms, None);
        assert!(f.note.unwrap().contains("6.0 s"));
        // a window ending long after the last reading is not covered either
        let f = in_window(&ev, ComponentKind::Postgres, w(6900, 12000), "fault");
        assert_eq!(f.max_ms, None);
    }

    #[test]
    fn the_new_primary_is_not_a_missing_standby() {
        let ev = vec![
            reading(0, "n1", &[("n2", Some(1.0)), ("n3", Some(2.0))]),
            reading(1000, "n2", &[("n3", Some(40.0))]),
            reading(2000, "n2", &[("n3", Some(30.0))]),
        ];
        let f = in_window(&ev, ComponentKind::Postgres, w(500, 2500), "fault");
        assert_eq!(f.max_ms, Some(40.0), "{:?}", f.note);
    }

    #[test]
    fn another_components_readings_or_none_at_all_give_nothing_and_no_note() {
        let ev = vec![reading(0, "n1", &[("n2", Some(1.0))])];
        assert_eq!(
            in_window(&ev, ComponentKind::Redis, w(0, 1000), "fault"),
            LagFigures::default()
        );
        assert_eq!(
            in_window(&[], ComponentKind::Postgres, w(0, 1000), "fault"),
            LagFigures::default()
        );
    }
}
