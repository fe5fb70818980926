//! The routing layer on the real local stack: HAProxy (Patroni's REST health check) and PgBouncer in front of
//! PostgreSQL, with the clients' path chosen by the scenario. Needs root, like the other stack tests.

mod common;

use common::*;

/// A failover through the routing layer: the clients write again only once HAProxy has checked the new primary
/// `rise` times, so their outage is the server-side promotion plus about one check interval, and the harness's
/// router stamp agrees with HAProxy's own log line. `path` is `pgbouncer` (the shipped scenario: PgBouncer in front
/// of HAProxy) or `haproxy` (the same scenario with the clients on HAProxy's read-write port).
fn failover_through(path: &str) {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let shipped = "scenarios/postgres-primary-kill-pgbouncer.yaml";
    let dir = tempfile::tempdir().unwrap();
    let scenario = if path == "pgbouncer" {
        repo(shipped)
    } else {
        let text = std::fs::read_to_string(repo(shipped))
            .unwrap()
            .replace("client_path: pgbouncer", &format!("client_path: {path}"))
            .replace(
                "name: postgres-primary-kill-pgbouncer",
                &format!("name: postgres-primary-kill-{path}"),
            )
            .replace(
                "topology: ../fixtures/topologies/three-node.yaml",
                &format!(
                    "topology: {}",
                    repo("fixtures/topologies/three-node.yaml").display()
                ),
            );
        assert!(text.contains(&format!("client_path: {path}")), "{text}");
        let file = dir
            .path()
            .join(format!("postgres-primary-kill-{path}.yaml"));
        std::fs::write(&file, text).unwrap();
        file
    };
    let o = faultline(&["run", scenario.to_str().unwrap()]);
    let code = o.status.code();
    assert!(
        code == Some(0) || code == Some(1),
        "run failed:\n{}",
        text(&o)
    );
    let (_, r) = report_of(&o);
    assert_eq!(r["client_path"], path);
    let promotion = measured(&r, "promotion_s").expect("promotion observed");
    let switch = measured(&r, "router_switch_s").expect("the router's switch observed");
    let rto = measured(&r, "rto_s").expect("clients wrote again");
    // HAProxy marks the new primary up only after Patroni promoted it and its /primary answered `rise` times.
    assert!(
        switch > promotion,
        "router switch {switch} before the promotion {promotion}"
    );
    // The clients go through the router: they cannot write before it switched (the probe's stamp may be up to
    // a poll round late).
    assert!(
        rto > switch - 0.5,
        "rto {rto} before the router switched at {switch}"
    );
    // The router's share: with the default check (every 5 s, up after 2) between one and two intervals.
    let share = rto - promotion;
    assert!(
        (2.0..15.0).contains(&share),
        "the routing layer's share of the outage is {share} s (promotion {promotion}, rto {rto})"
    );
    assert_eq!(measured(&r, "lost_acked_writes"), Some(0.0));
    assert_log_agreement(&r, &["promotion", "router switch"]);
    let timeline = r["timeline"].as_array().unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| e["event"]["type"] == "router_routed"
                && e["event"]["to"].as_array().is_some_and(|t| t.len() == 1)),
        "no router_routed event on the timeline"
    );
    let out = text(&o);
    assert!(
        out.contains(&format!("clients through {path}: promotion_s"))
            && out.contains("the routing layer's share"),
        "{out}"
    );
}

#[test]
fn failover_through_pgbouncer_shows_the_routers_share_and_agrees_with_haproxys_log() {
    failover_through("pgbouncer");
}

#[test]
fn failover_through_haproxy_shows_the_routers_share_and_agrees_with_haproxys_log() {
    failover_through("haproxy");
}

/// The router fails instead of the database: HAProxy on the first router node is SIGKILLed while the clients
/// write through HAProxy. They move on to the next router, losing nothing, and the revert starts HAProxy again.
#[test]
fn killing_the_first_routers_haproxy_moves_the_clients_to_the_next_router() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let o = faultline(&["run", "scenarios/postgres-router-kill.yaml"]);
    let code = o.status.code();
    assert!(
        code == Some(0) || code == Some(1),
        "run failed:\n{}",
        text(&o)
    );
    let (_, r) = report_of(&o);
    let applied = r["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"]["type"] == "fault_applied")
        .expect("the fault was applied");
    assert_eq!(applied["event"]["fault"], "SIGKILL haproxy@n1");
    assert_eq!(
        applied["event"]["victims"],
        serde_json::json!(["haproxy@n1"])
    );
    assert_eq!(measured(&r, "lost_acked_writes"), Some(0.0));
    // The database did not fail over: no promotion. The clients' gap is the move to the next router.
    assert_eq!(measured(&r, "promotion_s"), None);
    // The restarted HAProxy routes to the member it routed to before: no switch is reported.
    assert_eq!(measured(&r, "router_switch_s"), None);
    let downtime = measured(&r, "downtime_s").expect("downtime measured");
    assert!(
        downtime < 5.0,
        "moving to the next router took {downtime} s"
    );
    // Healed: HAProxy on n1 is running again and routes to the leader (the stack's health says so).
    let s = faultline(&["status"]);
    assert_eq!(s.status.code(), Some(0), "{}", text(&s));
}

/// A known outage through the routing layer: the primary frozen for exactly 3 s. The clients' longest gap is the
/// pause (plus what PgBouncer and the clients take to resume), and the run reads its ledger back: PgBouncer's
/// pool must not fill PostgreSQL with the connections of the clients that gave up during the pause.
#[test]
fn a_three_second_pause_through_pgbouncer_measures_three_seconds_and_reads_back() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let o = faultline(&[
        "run",
        "fixtures/valid/postgres-primary-pause-3s-pgbouncer.yaml",
    ]);
    assert!(
        matches!(o.status.code(), Some(0) | Some(1)),
        "the run must complete (its ledger read back):\n{}",
        text(&o)
    );
    let (_, r) = report_of(&o);
    let downtime = measured(&r, "downtime_s").expect("downtime measured");
    assert!(
        (2.9..4.0).contains(&downtime),
        "a 3 s pause measured as {downtime} s of downtime"
    );
    assert_eq!(measured(&r, "lost_acked_writes"), Some(0.0));
    assert_eq!(
        measured(&r, "promotion_s"),
        None,
        "3 s is too short to fail over"
    );
}

/// A client path through the routing layer is for PostgreSQL clients: a Redis scenario that asks for one is
/// refused when it is read, naming the line.
#[test]
fn client_path_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.yaml");
    std::fs::write(
        &file,
        "name: s\ncomponent: redis\nclient_path: pgbouncer\nbaseline: 1s\nobserve: 1s\nfaults:\n  - kind: process-kill\n    \
         target: {role: primary}\nthresholds:\n  - rto_s < 30\n",
    )
    .unwrap();
    let o = faultline(&["validate", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("s.yaml:3:") && text(&o).contains("routes PostgreSQL clients"),
        "{}",
        text(&o)
    );
    std::fs::write(
        &file,
        "name: s\ncomponent: postgres\nclient_path: pgpool\nbaseline: 1s\nobserve: 1s\nfaults:\n  - kind: process-kill\n    \
         target: {role: primary}\nthresholds:\n  - rto_s < 30\n",
    )
    .unwrap();
    let o = faultline(&["validate", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("unknown client path `pgpool`"),
        "{}",
        text(&o)
    );
}
