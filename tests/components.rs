//! Every component judged in one run, on the real local stack: a zone holding the PostgreSQL primary and the
//! Redis master is lost under load on both. Each component's failover is measured from its own events and
//! operations; the system's availability counts every operation of both. Needs root, like the other stack tests.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::Value;

#[test]
fn a_zone_loss_reports_both_failovers_and_one_system_availability() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let o = faultline(&["run", "scenarios/zone-loss-all-primaries.yaml"]);
    assert!(
        matches!(o.status.code(), Some(0) | Some(1)),
        "run failed:\n{}",
        text(&o)
    );
    let (run_dir, r) = report_of(&o);
    assert_eq!(r["components"], serde_json::json!(["postgres", "redis"]));

    // Each component's promotion is its own: the first new-primary event of that component on the timeline.
    let timeline = r["timeline"].as_array().unwrap();
    let promoted_at = |component: &str| {
        timeline
            .iter()
            .filter(|e| {
                e["event"]["type"] == "new_primary_serving" && e["event"]["component"] == component
            })
            .filter_map(|e| e["t_s"].as_f64())
            .find(|t| *t >= 0.0)
            .unwrap_or_else(|| panic!("no {component} promotion on the timeline:\n{}", text(&o)))
    };
    for c in ["postgres", "redis"] {
        let p = measured(&r, &format!("{c}.promotion_s"))
            .unwrap_or_else(|| panic!("{c}.promotion_s not observed:\n{}", text(&o)));
        assert!(
            (p - promoted_at(c)).abs() < 0.01,
            "{c}.promotion_s {p} is not {c}'s own promotion at {}",
            promoted_at(c)
        );
        assert!(
            measured(&r, &format!("{c}.rto_s")).is_some(),
            "{c} clients never wrote again"
        );
    }
    // The system has no promotion of its own.
    assert_eq!(measured(&r, "promotion_s"), None);
    // Both failovers agree with the servers' own lines: Patroni's and Sentinel's.
    assert_log_agreement(&r, &["promotion (Patroni", "promotion (Sentinel"]);

    // Availability from the ledger file, counted here independently: per source and over both.
    let ledger = std::fs::read_to_string(run_dir.join("ledger.jsonl")).unwrap();
    let mut by_source: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut write_ids = BTreeSet::new();
    for line in ledger.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        let source = e["source"].as_str().unwrap().to_string();
        let slot = by_source.entry(source).or_default();
        slot.1 += 1;
        if e["outcome"] == "ok" {
            slot.0 += 1;
        }
        if e["op"] == "write" {
            assert!(
                write_ids.insert(e["id"].as_u64().unwrap()),
                "write id {} used twice: the components' read-backs could not be joined",
                e["id"]
            );
        }
    }
    assert_eq!(
        by_source.len(),
        2,
        "both components' operations: {by_source:?}"
    );
    let pct = |(ok, all): (u64, u64)| ok as f64 * 100.0 / all as f64;
    let (ok, all) = by_source
        .values()
        .fold((0, 0), |(o, a), (ok, all)| (o + ok, a + all));
    let system = measured(&r, "availability_pct").expect("system availability");
    assert!(
        (system - pct((ok, all))).abs() < 1e-6,
        "availability_pct {system} is not every operation's: {ok} of {all}"
    );
    for (c, counts) in &by_source {
        let own = measured(&r, &format!("{c}.availability_pct")).unwrap();
        assert!(
            (own - pct(*counts)).abs() < 1e-6,
            "{c}: {own} vs the ledger's {counts:?}"
        );
    }
    // Both outages show in the system's figure: below each component's best.
    let best = by_source.values().map(|c| pct(*c)).fold(0.0, f64::max);
    assert!(
        system < best,
        "system {system} hides an outage (best component {best})"
    );
    let out = text(&o);
    assert!(
        out.contains("redis: detection_s")
            && out.contains("(the system: every operation of postgres, redis)"),
        "{out}"
    );
    // Healed: both components back with all members.
    let s = faultline(&["status"]);
    assert_eq!(s.status.code(), Some(0), "{}", text(&s));
}
