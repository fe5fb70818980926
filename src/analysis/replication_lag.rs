//! Replication lag figures from the primary's own readings (`ReplicationSample` events, see
//! `component::postgres::replication`): each reading's lag is its most-behind standby's, and a window's figures
//! are the median and the largest of those (a lagging synchronous standby is not averaged away by an idle
//! asynchronous one).
//!
//! A standby's lag in a reading is PostgreSQL's `replay_lag`, raised to what the positions prove: when WAL the
//! primary had flushed by an earlier reading is still not replayed now, the lag is at least the time between the
//! two readings. That catches a stream that stopped (a partitioned or paused standby keeps its last small
//! `replay_lag`, still `streaming`, until the walsender times out, 60 s by default). A figure raised that way is
//! only a lower bound, and says so.
//!
//! A figure is claimed only when the readings cover the whole window, one primary answered them all, and every
//! standby that was streaming when the window began is streaming in each of them: a missing standby or a primary
//! nobody could read has an unknown lag, and a figure over the rest would look better than what happened.

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
    /// Some reading's lag is only known from below (its standby stopped replaying WAL the primary had flushed a
    /// reading or more earlier): the figures are at least these.
    pub lower_bound: bool,
    /// Why the figures are not claimed, or why they are lower bounds.
    pub note: Option<String>,
}

struct Reading<'a> {
    at: Stamp,
    primary: &'a str,
    flush_lsn: Option<f64>,
    standbys: &'a [StandbyLag],
}

/// The figures of `component`'s standbys over `[from, to)`. Nothing (and no note) when the trial has no reading
/// of that component at all: it has no sampler (Redis, Qdrant).
pub fn in_window(
    events: &[Event],
    component: ComponentKind,
    window: (Stamp, Stamp),
    label: &str,
) -> LagFigures {
    let mut readings: Vec<Reading> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ReplicationSample {
                component: c,
                primary,
                flush_lsn,
                standbys,
            } if *c == component => Some(Reading {
                at: e.at,
                primary,
                flush_lsn: *flush_lsn,
                standbys,
            }),
            _ => None,
        })
        .collect();
    readings.sort_by_key(|r| r.at);
    if readings.is_empty() || window.1 <= window.0 {
        return LagFigures::default();
    }
    let (from, to) = window;
    let not_claimed = |why: String| LagFigures {
        note: Some(format!(
            "replication lag in the {label} window not claimed: {why}"
        )),
        ..LagFigures::default()
    };
    let inside: Vec<usize> = (0..readings.len())
        .filter(|i| readings[*i].at >= from && readings[*i].at < to)
        .collect();
    if inside.is_empty() {
        return not_claimed("no reading fell in it".into());
    }

    // Coverage: from the window's start to its end, no stretch without a reading longer than the limit.
    let mut at = from;
    let mut longest = 0.0f64;
    for r in inside
        .iter()
        .map(|i| readings[*i].at)
        .chain(std::iter::once(to))
    {
        longest = longest.max(r.secs_since(at));
        at = r;
    }
    if longest > gap_limit_s() {
        return not_claimed(format!("no primary could be read for {longest:.1} s of it"));
    }
    if inside
        .iter()
        .flat_map(|i| readings[*i].standbys)
        .any(|s| s.state.is_empty())
    {
        return not_claimed(
            "pg_stat_replication showed standbys without a state: the user may not read its columns \
             (pg_read_all_stats)"
                .into(),
        );
    }
    let primaries: BTreeSet<&str> = inside.iter().map(|i| readings[*i].primary).collect();
    if primaries.len() > 1 {
        return not_claimed(format!(
            "the primary changed within it ({}): the lag across a failover is not one stream's",
            primaries.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }

    // The standbys expected in every reading: those streaming in the last reading before the window (or its
    // first), less whichever member is the primary.
    let reference = readings
        .iter()
        .rev()
        .find(|r| r.at <= from)
        .unwrap_or(&readings[inside[0]]);
    let expected: BTreeSet<&str> = reference
        .standbys
        .iter()
        .filter(|s| s.state == "streaming")
        .map(|s| s.name.as_str())
        .collect();
    let mut values: Vec<f64> = Vec::new();
    let mut unknown: BTreeSet<&str> = BTreeSet::new();
    let mut unknown_readings = 0usize;
    let mut bounded: BTreeSet<&str> = BTreeSet::new();
    for &k in &inside {
        let r = &readings[k];
        let mut short = false;
        for name in expected.iter().filter(|n| **n != r.primary) {
            if !r
                .standbys
                .iter()
                .any(|s| s.name == *name && s.lag_ms().is_some())
            {
                unknown.insert(name);
                short = true;
            }
        }
        if short {
            unknown_readings += 1;
        }
        let mut worst: Option<f64> = None;
        for s in r.standbys {
            let Some(lag) = s.lag_ms() else { continue };
            let proven = proven_lag_ms(&readings[..k], r, s);
            if proven > lag {
                bounded.insert(s.name.as_str());
            }
            let lag = lag.max(proven);
            worst = Some(worst.map_or(lag, |w: f64| w.max(lag)));
        }
        values.extend(worst);
    }
    if !unknown.is_empty() {
        return not_claimed(format!(
            "{} not streaming in {unknown_readings} of {} readings",
            unknown.into_iter().collect::<Vec<_>>().join(", "),
            inside.len()
        ));
    }
    if values.is_empty() {
        // A primary without standbys: there is no replication to be late.
        return not_claimed("the primary had no standby".into());
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let p50 = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    let lower_bound = !bounded.is_empty();
    LagFigures {
        p50_ms: Some(p50),
        max_ms: values.last().copied(),
        lower_bound,
        note: lower_bound.then(|| {
            format!(
                "replication lag in the {label} window is a lower bound: {} stopped replaying WAL the primary \
                 had flushed a reading or more earlier (PostgreSQL's replay_lag was stale)",
                bounded.into_iter().collect::<Vec<_>>().join(", ")
            )
        }),
    }
}

/// The lag the positions prove for standby `s` at reading `now`: the time since the earliest earlier reading of
/// the same primary whose flushed WAL `s` has still not replayed (0 when there is none).
fn proven_lag_ms(earlier: &[Reading], now: &Reading, s: &StandbyLag) -> f64 {
    let Some(replayed) = s.replay_lsn else {
        return 0.0;
    };
    earlier
        .iter()
        .filter(|r| r.primary == now.primary)
        .find(|r| r.flush_lsn.is_some_and(|f| f > replayed))
        .map_or(0.0, |r| now.at.secs_since(r.at) * 1000.0)
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
            replay_lsn: None,
        }
    }

    /// A reading of streaming standbys with these lags.
    fn reading(at_ms: u64, primary: &str, lags: &[(&str, Option<f64>)]) -> Event {
        reading_of(
            at_ms,
            primary,
            None,
            lags.iter().map(|(n, l)| s(n, *l, "streaming")).collect(),
        )
    }

    fn reading_of(
        at_ms: u64,
        primary: &str,
        flush_lsn: Option<f64>,
        standbys: Vec<StandbyLag>,
    ) -> Event {
        Event {
            at: Stamp(Duration::from_millis(at_ms)),
            trial: 1,
            kind: EventKind::ReplicationSample {
                component: ComponentKind::Postgres,
                primary: primary.into(),
                flush_lsn,
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
        assert!(!f.lower_bound);
        assert_eq!(f.max_ms, Some(250.0));
        // the most-behind standby per reading: 250, 199, 210, 90 -> median 204.5 (over every standby's reading
        // it would be 150: the idle one would pull it down)
        assert_eq!(f.p50_ms, Some(204.5));
        let b = in_window(&ev, ComponentKind::Postgres, w(0, 500), "baseline");
        assert_eq!((b.p50_ms, b.max_ms), (Some(2.0), Some(2.0)));
    }

    #[test]
    fn a_stream_that_stopped_is_bounded_by_the_positions_not_its_stale_replay_lag() {
        let at = |lsn: f64, lag: f64| StandbyLag {
            replay_lsn: Some(lsn),
            ..s("n2", Some(lag), "streaming")
        };
        let ev = vec![
            reading_of(0, "n1", Some(1000.0), vec![at(1000.0, 2.0)]),
            // n2 cut off at 0.5 s: its replay position stays at 1000, its replay_lag at the last 2 ms, while the
            // primary goes on flushing
            reading_of(1000, "n1", Some(5000.0), vec![at(1000.0, 2.0)]),
            reading_of(2000, "n1", Some(9000.0), vec![at(1000.0, 2.0)]),
            reading_of(3000, "n1", Some(13000.0), vec![at(1000.0, 2.0)]),
        ];
        let f = in_window(&ev, ComponentKind::Postgres, w(500, 3500), "fault");
        // WAL flushed by the reading at 1 s is still not replayed at 3 s: at least 2 s behind
        assert_eq!(f.max_ms, Some(2000.0));
        assert!(f.lower_bound);
        assert!(f.note.unwrap().contains("lower bound: n2"));
        // A standby keeping up is never raised: what was flushed a reading ago is replayed by the next.
        let ev = vec![
            reading_of(0, "n1", Some(1000.0), vec![at(1000.0, 2.0)]),
            reading_of(1000, "n1", Some(5000.0), vec![at(4990.0, 3.0)]),
            reading_of(2000, "n1", Some(9000.0), vec![at(8990.0, 3.0)]),
        ];
        let f = in_window(&ev, ComponentKind::Postgres, w(500, 2500), "fault");
        assert_eq!((f.max_ms, f.lower_bound), (Some(3.0), false));
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
    fn a_standby_catching_up_is_unknown_whatever_lag_it_shows() {
        for lag in [None, Some(5.0)] {
            let ev = vec![
                reading(0, "n1", &[("n2", Some(1.0))]),
                reading_of(1000, "n1", None, vec![s("n2", lag, "catchup")]),
            ];
            let f = in_window(&ev, ComponentKind::Postgres, w(500, 1500), "fault");
            assert_eq!(f.max_ms, None);
            assert!(f.note.unwrap().contains("n2 not streaming"));
        }
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
        // a short window no reading fell in: not claimed, no panic
        let f = in_window(&ev, ComponentKind::Postgres, w(7100, 8000), "fault");
        assert_eq!(f.max_ms, None);
        assert!(f.note.unwrap().contains("no reading"));
    }

    #[test]
    fn a_failover_within_the_window_is_not_claimed_however_quick() {
        let ev = vec![
            reading(0, "n1", &[("n2", Some(1.0)), ("n3", Some(2.0))]),
            reading(1000, "n2", &[("n3", Some(40.0))]),
            reading(2000, "n2", &[("n3", Some(30.0))]),
        ];
        let f = in_window(&ev, ComponentKind::Postgres, w(500, 2500), "fault");
        assert_eq!(
            f.max_ms,
            Some(40.0),
            "one primary in the window: {:?}",
            f.note
        );
        let f = in_window(&ev, ComponentKind::Postgres, w(0, 2500), "fault");
        assert_eq!(f.max_ms, None);
        assert!(f
            .note
            .unwrap()
            .contains("primary changed within it (n1, n2)"));
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
