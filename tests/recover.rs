//! Faults are always reverted: for every fault kind, a run is interrupted (SIGINT) or killed outright (SIGKILL)
//! while the fault is applied; afterwards there must be no residue (nft rule, stopped process, downed link, stray
//! namespace, open journal entry) and, after `faultline recover`, a healthy stack whose primary and master accept
//! writes. Real stack; needs root.

mod common;

use serde_json::Value;
use std::time::Duration;

use common::*;

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: signalling the child this test spawned.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

fn recover_ok() {
    let o = faultline(&["recover"]);
    assert_eq!(o.status.code(), Some(0), "recover failed:\n{}", text(&o));
    assert!(text(&o).contains("accept writes"), "{}", text(&o));
}

/// SIGKILL while the fault is applied, then `faultline recover` (twice: it is idempotent).
fn crash_then_recover(scenario: &str) {
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let child = spawn_run(scenario);
    assert!(
        wait_for_open_fault(Duration::from_secs(90)),
        "{scenario}: the fault was never applied"
    );
    std::thread::sleep(Duration::from_secs(1));
    signal(&child, libc::SIGKILL);
    let _ = child.wait_with_output();
    let o = faultline(&["status"]);
    assert!(
        text(&o).contains("fault journal: OPEN"),
        "{scenario}: the crash must leave the journal entry open:\n{}",
        text(&o)
    );
    recover_ok();
    assert_no_residue();
    recover_ok();
}

/// SIGINT while the fault is applied: exit 4, verdict incomplete, nothing left applied.
fn interrupt_reverts(scenario: &str) {
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let child = spawn_run(scenario);
    assert!(
        wait_for_open_fault(Duration::from_secs(90)),
        "{scenario}: the fault was never applied"
    );
    std::thread::sleep(Duration::from_secs(1));
    signal(&child, libc::SIGINT);
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(4),
        "{scenario}: interrupted run exits 4:\n{}",
        text(&o)
    );
    let (_dir, r) = report_of(&o);
    assert_eq!(r["verdict"], "incomplete");
    assert_no_residue();
    recover_ok();
}

macro_rules! fault_kind_tests {
    ($($kind:ident => $scenario:expr),* $(,)?) => {
        mod sigkill_then_recover {
            use super::*;
            $(#[test] fn $kind() { needs_root!(); crash_then_recover($scenario); })*
        }
        mod sigint {
            use super::*;
            $(#[test] fn $kind() { needs_root!(); interrupt_reverts($scenario); })*
        }
    };
}

fault_kind_tests! {
    process_kill => "scenarios/postgres-primary-kill.yaml",
    process_pause => "fixtures/valid/postgres-primary-pause.yaml",
    partition => "scenarios/redis-master-partition.yaml",
    loss => "scenarios/redis-master-loss.yaml",
    bandwidth => "scenarios/postgres-slow-sync-replica.yaml",
    latency => "scenarios/postgres-cross-zone-latency.yaml",
    router_kill => "scenarios/postgres-router-kill.yaml",
    node_loss => "fixtures/valid/postgres-primary-node-loss.yaml",
    node_loss_pause => "fixtures/valid/postgres-primary-node-pause.yaml",
    node_loss_disconnect => "fixtures/valid/postgres-primary-node-disconnect.yaml",
    zone_loss => "scenarios/zone-loss.yaml",
    node_drain => "fixtures/valid/postgres-primary-drain.yaml",
}

#[test]
fn a_second_run_is_refused_while_one_holds_the_stack() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let child = spawn_run("fixtures/valid/postgres-primary-pause.yaml");
    assert!(wait_for_open_fault(Duration::from_secs(90)));
    let second = faultline(&["run", "scenarios/redis-master-kill.yaml"]);
    assert_eq!(second.status.code(), Some(3), "{}", text(&second));
    assert!(
        text(&second).contains(&format!("pid {}", child.id())),
        "the refusal names the holder:\n{}",
        text(&second)
    );
    let rec = faultline(&["recover"]);
    assert_eq!(
        rec.status.code(),
        Some(3),
        "recover must not fight a live run:\n{}",
        text(&rec)
    );
    signal(&child, libc::SIGKILL);
    let _ = child.wait_with_output();
    // The dead holder's lock is taken over with a note.
    let o = faultline(&["recover"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("is gone"), "{}", text(&o));
    assert_no_residue();
}

/// move-roles onto an asynchronous replica raises Patroni's synchronous_node_count for a moment (Patroni hands
/// the primary over to a synchronous standby only). SIGKILL in that moment: the journal entry written before the
/// raise stays open, and `faultline recover` puts the cluster's own count back.
#[test]
fn recover_puts_back_a_synchronous_node_count_raised_by_move_roles() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let before = patroni_get("/config")["synchronous_node_count"].clone();
    let asynchronous = asynchronous_replica();
    let state: Value =
        serde_json::from_slice(&std::fs::read("/var/tmp/faultline/state.json").unwrap()).unwrap();
    let zone = state["topology"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == asynchronous.as_str())
        .unwrap()["zone"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("move-roles-crash.yaml");
    std::fs::write(
        &scenario,
        format!(
            "name: move-roles-crash\n\
             description: \"move the primary onto the asynchronous replica's zone; killed on the way\"\n\
             component: postgres\n\
             topology: {}\n\
             baseline: 5s\n\
             prepare:\n  - action: move-roles\n    to: {zone}\n\
             faults:\n  - kind: process-kill\n    target: {{role: primary}}\n\
             observe: 10s\n\
             thresholds:\n  - lost_acked_writes == 0\n",
            repo("fixtures/topologies/three-node.yaml").display()
        ),
    )
    .unwrap();
    let child = spawn_run(scenario.to_str().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let raised = loop {
        let open = std::fs::read_dir("/var/tmp/faultline/journal")
            .map(|rd| {
                rd.flatten().any(|e| {
                    let t = std::fs::read_to_string(e.path()).unwrap_or_default();
                    t.contains("synchronous-node-count") && t.contains("\"closed_at\": null")
                })
            })
            .unwrap_or(false);
        if open || std::time::Instant::now() > deadline {
            break open;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        raised,
        "move-roles to {zone} ({asynchronous}) never raised the count"
    );
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, libc::SIGKILL);
    let _ = child.wait_with_output();
    let during = patroni_get("/config")["synchronous_node_count"].clone();
    assert_eq!(
        during,
        serde_json::json!(2),
        "the crash must hit the moment the count is raised (before: {before})"
    );
    recover_ok();
    assert_eq!(
        patroni_get("/config")["synchronous_node_count"],
        before,
        "recover must put the cluster's own synchronous_node_count back"
    );
    assert_no_residue();
}
