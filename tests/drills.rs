//! Disaster-recovery drills on the real local stack: a point-in-time recovery proven against the ledger, a broken
//! archive that makes the drill fail with its reason (and touch nothing), a crash in the middle of a restore that
//! `faultline recover` completes, and drills refused on Kubernetes before anything happens. Needs root.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const STATE: &str = "/var/tmp/faultline";

fn integrity(report: &Value) -> Vec<Value> {
    report["trials"][0]["integrity"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn step_finished(report: &Value, prefix: &str) -> Value {
    report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["event"].clone())
        .find(|e| {
            e["type"] == "step_finished" && e["step"].as_str().unwrap_or("").starts_with(prefix)
        })
        .unwrap_or_else(|| panic!("no finished step {prefix}: {:#?}", report["timeline"]))
}

/// The stack serves and nothing is left open. The routers may still be catching up with a primary that a restore
/// has just brought back (HAProxy marks it up after `rise` checks, up to 10 s with the defaults): given 20 s.
fn healthy_and_nothing_open() {
    let until = Instant::now() + Duration::from_secs(20);
    let mut o = faultline(&["status"]);
    while o.status.code() != Some(0) && Instant::now() < until {
        std::thread::sleep(Duration::from_secs(1));
        o = faultline(&["status"]);
    }
    let s = text(&o);
    assert_eq!(o.status.code(), Some(0), "{s}");
    assert!(s.contains("health: ok"), "{s}");
    assert!(s.contains("fault journal: no open entry"), "{s}");
}

/// Rows of the ledger table on the current primary, read as the postgres OS user over the node's socket.
fn ledger_rows(node: &str) -> Option<i64> {
    let o = Command::new("ip")
        .args(["netns", "exec", &format!("fl-{node}")])
        .args([
            "setpriv",
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg("psql")
        .arg("-h")
        .arg(Path::new(STATE).join(format!("nodes/{node}/patroni/run")))
        .args([
            "-U",
            "postgres",
            "-Atc",
            "SELECT count(*) FROM faultline_ledger WHERE NOT pg_is_in_recovery()",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&o.stdout).trim().parse().ok()
}

/// Restored from the repository, not re-initialised empty: the ledger's rows are on the current primary.
fn assert_ledger_rows_on_the_leader() {
    let status = text(&faultline(&["status"]));
    let leader = status
        .lines()
        .find_map(|l| l.split("postgres leader ").nth(1))
        .and_then(|r| r.split(',').next())
        .unwrap()
        .to_string();
    assert!(ledger_rows(&leader).is_some_and(|n| n > 0), "{status}");
}

#[test]
fn a_point_in_time_recovery_restores_to_just_before_the_corruption_and_proves_it() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let o = faultline(&["run", "scenarios/pitr.yaml"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let (_, r) = report_of(&o);
    let m = |k: &str| measured(&r, k).unwrap_or_else(|| panic!("{k} not observed: {out}"));
    // Times agree with the steps on the timeline, and the restore is a real one: seconds, not milliseconds.
    let pitr = m("pitr_s");
    assert!((1.0..600.0).contains(&pitr), "pitr_s = {pitr}");
    assert_eq!(m("pg_restore_s"), pitr);
    assert_eq!(m("lost_acked_writes"), 0.0, "{out}");
    assert_eq!(m("integrity_failures"), 0.0, "{out}");
    // ~5 s of writes at 100/s landed after T on the corrupted cluster; the restore must have removed them.
    let discarded = m("discarded_writes");
    assert!(
        discarded >= 200.0,
        "discarded_writes = {discarded}: the restore did not stop at T"
    );
    assert!(m("recoverable_window_s") > 0.0);
    let checks = integrity(&r);
    let names: Vec<&str> = checks
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    for want in [
        "acknowledged writes that had to survive are present",
        "writes sent after the recovery target are absent",
        "the corruption is absent",
        "the restored cluster runs on a new timeline",
        "replicas re-created and streaming",
    ] {
        assert!(names.contains(&want), "missing check {want}: {checks:#?}");
    }
    assert!(checks.iter().all(|c| c["ok"] == true), "{checks:#?}");
    let restore = step_finished(&r, "restore-postgres");
    assert_eq!(restore["ok"], true, "{restore}");
    // The restore's served stamp agrees with PostgreSQL's own log, and the tools' lines are on the timeline.
    assert_log_agreement(&r, &["restore: restored primary serving"]);
    let timeline = serde_json::to_string(&r["timeline"]).unwrap();
    for line in [
        "restore command end",
        "last completed transaction was at log time",
        "archive recovery complete",
    ] {
        assert!(timeline.contains(line), "no `{line}` on the timeline");
    }
    // The write ledger after the drill: the table is back with the rows acknowledged before T.
    let leader = r["read_backs"][0]["from_member"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        ledger_rows(&leader).is_some_and(|n| n > 0),
        "no ledger rows on {leader}"
    );
    check_evidence(&o);
    healthy_and_nothing_open();
}

/// The run's evidence bundle: a drill record naming the run, the objectives and the approval fields; no secret of
/// the stack in any file of the run directory; `faultline verify` passes untouched and fails after one byte changes.
fn check_evidence(o: &std::process::Output) {
    let (dir, r) = report_of(o);
    let record = std::fs::read_to_string(dir.join("evidence/drill-record.md")).unwrap();
    let run_id = r["run_id"].as_str().unwrap();
    for want in [
        run_id,
        "pitr_s",
        "## Approval",
        "ISO/IEC 27001:2022 A.8.13",
        "restore-postgres",
    ] {
        assert!(
            record.contains(want),
            "drill record lacks `{want}`:\n{record}"
        );
    }
    // The servers' own lines around each paired event, stamped and named by node and process.
    let excerpts = std::fs::read_to_string(dir.join("evidence/log-excerpts.txt")).unwrap();
    assert!(
        excerpts.contains("every server log line within 3 s of")
            && excerpts.lines().any(|l| l.contains(" patroni: ")),
        "{excerpts}"
    );
    // Every member's configuration, redacted.
    let stack_configs = std::fs::read_dir(dir.join("evidence/config/stack"))
        .unwrap()
        .count();
    assert!(
        stack_configs >= 9,
        "{stack_configs} stack configuration files"
    );
    let secrets: Value =
        serde_json::from_str(&std::fs::read_to_string("/var/tmp/faultline/secrets.json").unwrap())
            .unwrap();
    let values: Vec<&str> = secrets
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_str)
        .filter(|v| v.len() >= 8)
        .collect();
    assert!(values.len() >= 3, "{secrets}");
    let mut files = vec![dir.clone()];
    let mut read = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        read += 1;
        for v in &values {
            assert!(
                !text.contains(v),
                "a secret of the stack is in {}",
                p.display()
            );
        }
    }
    assert!(read >= 8, "only {read} files in {}", dir.display());
    let v = faultline(&["verify", dir.to_str().unwrap()]);
    assert_eq!(v.status.code(), Some(0), "{}", text(&v));
    let junit = dir.join("junit.xml");
    let mut bytes = std::fs::read(&junit).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    std::fs::write(&junit, &bytes).unwrap();
    let v = faultline(&["verify", dir.to_str().unwrap()]);
    let out = text(&v);
    assert_eq!(v.status.code(), Some(1), "{out}");
    assert!(out.contains("CHANGED  junit.xml"), "{out}");
}

#[test]
fn a_broken_archive_fails_the_drill_with_its_reason_and_leaves_the_cluster_running() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let started = Instant::now();
    let o = faultline(&["run", "scenarios/pitr-broken-archive.yaml"]);
    let out = text(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a drill that cannot restore is a FAIL:\n{out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(240),
        "it must not hang"
    );
    let (_, r) = report_of(&o);
    assert_eq!(r["verdict"], "fail");
    assert!(
        measured(&r, "pitr_s").is_none(),
        "no restore happened, so no restore time"
    );
    assert_eq!(measured(&r, "integrity_failures"), Some(1.0));
    // Nothing was destroyed: the cluster that could not be replaced kept every acknowledged write.
    assert_eq!(measured(&r, "lost_acked_writes"), Some(0.0), "{out}");
    let restore = step_finished(&r, "restore-postgres");
    assert_eq!(restore["ok"], false);
    assert!(
        restore["detail"]
            .as_str()
            .unwrap()
            .contains("repository is unreachable"),
        "{restore}"
    );
    assert!(out.contains("FAILED"), "{out}");
    healthy_and_nothing_open();
}

#[test]
fn recover_completes_a_restore_cut_short_by_a_crash() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let mut child = Command::new(bin())
        .args(["run", "scenarios/pitr.yaml"])
        .env("FAULTLINE_REPORTS_DIR", reports_dir())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the restore has stopped the cluster (its journal entry is open and Patroni is down).
    wait_open_restore(Path::new(STATE), "postgres");
    std::thread::sleep(Duration::from_millis(1500));
    crash(&mut child);
    let s = text(&faultline(&["status"]));
    assert!(
        s.contains("fault journal: OPEN") && s.contains("restore postgres"),
        "{s}"
    );
    let o = faultline(&["recover"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("reverted") && out.contains("restore postgres"),
        "{out}"
    );
    healthy_and_nothing_open();
    // Restored from the repository, not re-initialised empty: the ledger's rows are there.
    assert_ledger_rows_on_the_leader();
}

/// Waits until a restore of `component` has an open journal entry in `state` (it has begun replacing the
/// cluster).
fn wait_open_restore(state: &Path, component: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let journal = state.join("journal");
    loop {
        let open_restore = std::fs::read_dir(&journal).unwrap().flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .contains(&format!("restore-{component}"))
                && std::fs::read_to_string(e.path())
                    .is_ok_and(|t| t.contains("\"closed_at\": null"))
        });
        if open_restore {
            return;
        }
        assert!(Instant::now() < deadline, "the restore never started");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ctrl_c_in_the_middle_of_a_restore_completes_it_before_faultline_exits() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let child = Command::new(bin())
        .args(["run", "scenarios/pitr.yaml"])
        .env("FAULTLINE_REPORTS_DIR", reports_dir())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_open_restore(Path::new(STATE), "postgres");
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling the child this test spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let o = child.wait_with_output().unwrap();
    let out = text(&o);
    // Interrupted (exit 4), and the abandoned restore was completed by the revert before faultline exited: the
    // stack serves with the ledger's rows, and no journal entry is left for `recover`.
    assert_eq!(o.status.code(), Some(4), "{out}");
    healthy_and_nothing_open();
    assert_ledger_rows_on_the_leader();
}

#[test]
fn redis_is_restored_from_its_newest_rdb_copy_and_the_snapshot_rpo_is_reported() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let o = faultline(&["run", "scenarios/redis-rdb-restore.yaml"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let (_, r) = report_of(&o);
    let m = |k: &str| measured(&r, k).unwrap_or_else(|| panic!("{k} not observed: {out}"));
    let restore = m("redis_restore_s");
    assert!(
        (0.05..120.0).contains(&restore),
        "redis_restore_s = {restore}"
    );
    assert_eq!(m("integrity_failures"), 0.0, "{out}");
    // The copy was taken ~5 s before the FLUSHALL (3 s baseline + 2 s): the writes acknowledged in between are
    // lost, and the report says so instead of hiding them.
    let lost = m("lost_acked_writes");
    assert!(
        lost >= 200.0,
        "lost_acked_writes = {lost}: the snapshot's RPO must show"
    );
    let rpo = m("rpo_s");
    assert!((2.0..30.0).contains(&rpo), "rpo_s = {rpo}");
    assert!(
        m("discarded_writes") > 0.0,
        "writes after the FLUSHALL went with the replaced data"
    );
    let checks = integrity(&r);
    assert_eq!(checks.len(), 4, "{checks:#?}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{checks:#?}");
    assert!(
        checks[0]["detail"]
            .as_str()
            .unwrap()
            .contains("the snapshot's RPO"),
        "{checks:#?}"
    );
    // The served stamp agrees with Redis's own "DB loaded from disk" line.
    let row = r["log_agreement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| {
            a["event"]
                .as_str()
                .unwrap_or("")
                .starts_with("restore: restored master serving")
        })
        .unwrap_or_else(|| panic!("no restore agreement row: {:#?}", r["log_agreement"]))
        .clone();
    let delta = row["delta_s"]
        .as_f64()
        .unwrap_or_else(|| panic!("{row:#?}"));
    assert!(delta.abs() <= 0.5, "{row:#?}");
    healthy_and_nothing_open();
}

#[test]
fn a_restore_past_its_deadline_fails_the_drill_and_is_completed_not_left_half_done() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let pitr = std::fs::read_to_string(repo("scenarios/pitr.yaml")).unwrap();
    let topology = repo("fixtures/topologies/three-node.yaml");
    let scenario = pitr
        .replace("name: pitr", "name: pitr-deadline")
        .replace(
            "topology: ../fixtures/topologies/three-node.yaml",
            &format!("topology: {}", topology.display()),
        )
        .replace("    deadline: 30m", "    deadline: 2s");
    assert!(scenario.contains("deadline: 2s"), "{scenario}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pitr-deadline.yaml");
    std::fs::write(&file, scenario).unwrap();
    let started = Instant::now();
    let o = faultline(&["run", file.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(300),
        "it must not hang"
    );
    let (_, r) = report_of(&o);
    assert!(measured(&r, "pitr_s").is_none());
    let restore = step_finished(&r, "restore-postgres");
    assert_eq!(restore["ok"], false);
    assert!(
        restore["detail"].as_str().unwrap().contains("deadline"),
        "{restore}"
    );
    // The interrupted restore was completed by the revert: the stack serves, the journal is closed.
    healthy_and_nothing_open();
}

/// The region-loss drill judges PostgreSQL and Redis in one run, each from its own ledger.
fn check_region_loss_run(o: &std::process::Output) -> Value {
    let out = text(o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let (_, r) = report_of(o);
    let m = |k: &str| measured(&r, k).unwrap_or_else(|| panic!("{k} not observed: {out}"));
    // Real restores in the surviving region: PostgreSQL from the repository takes seconds, never milliseconds.
    let pg = m("pg_restore_s");
    assert!((1.0..600.0).contains(&pg), "pg_restore_s = {pg}");
    assert!(m("redis_restore_s") < 120.0);
    let checks = integrity(&r);
    assert!(checks.iter().all(|c| c["ok"] == true), "{checks:#?}");
    assert_eq!(m("integrity_failures"), 0.0, "{out}");
    for component in ["postgres", "redis"] {
        let m = |k: &str| m(&format!("{component}.{k}"));
        // Service resumed only after the 10 s clients lived through before the operators acted, and the restore.
        let rto = m("rto_s");
        assert!(
            (10.0 + 1.0..900.0).contains(&rto),
            "{component}.rto_s = {rto}"
        );
        // The newest writes existed only in the lost region (WAL not yet archived; writes after the RDB copy):
        // the RPO is real, measured from the component's ledger, and within the spec.
        let lost = m("lost_acked_writes");
        let rpo = m("rpo_s");
        assert!(
            lost > 0.0,
            "{component}: nothing lost, yet the lost region held unarchived writes: {out}"
        );
        assert!((0.5..300.0).contains(&rpo), "{component}: rpo_s = {rpo}");
        assert!(
            checks.iter().any(|c| c["component"] == component
                && c["check"].as_str().unwrap().contains("acknowledged writes")),
            "{component} is judged from its ledger: {checks:#?}"
        );
    }
    // The system's losses are both components'.
    assert_eq!(
        m("lost_acked_writes"),
        m("postgres.lost_acked_writes") + m("redis.lost_acked_writes")
    );
    assert_log_agreement(
        &r,
        &[
            "restore: restored primary serving",
            "restore: restored master serving",
        ],
    );
    // The runbook ran in the surviving region: etcd formed anew there, PostgreSQL bootstrapped on n5 (the only
    // PostgreSQL node of rb), Redis restored onto n6.
    let timeline = serde_json::to_string(&r["timeline"]).unwrap();
    for phase in [
        "etcd formed anew on n5",
        "restored primary on n5 accepts writes",
        "restored master on n6 accepts writes",
        "restore command end",
        "DB loaded from disk",
    ] {
        assert!(timeline.contains(phase), "no `{phase}` on the timeline");
    }
    r
}

#[test]
fn a_region_loss_is_restored_in_the_surviving_region_and_the_lost_region_rebuilt() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    let _down = TwoRegionDown;
    let o = faultline_two_region(&["up", "--topology", "fixtures/topologies/two-region.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let o = faultline_two_region(&["run", "scenarios/dr-region-loss.yaml"]);
    let r = check_region_loss_run(&o);
    // The restored primary kept its data, and after the revert the lost region is back as replicas of it.
    let checks = integrity(&r);
    let replicas = checks
        .iter()
        .find(|c| c["check"] == "replicas re-created and streaming")
        .unwrap_or_else(|| panic!("{checks:#?}"));
    assert!(
        replicas["detail"].as_str().unwrap().starts_with("2 of 2"),
        "{replicas}"
    );
    let o = faultline_two_region(&["status"]);
    let s = text(&o);
    assert_eq!(o.status.code(), Some(0), "{s}");
    assert!(s.contains("health: ok (postgres leader n5"), "{s}");
    assert!(s.contains("fault journal: no open entry"), "{s}");
    assert!(!s.contains("lost nodes"), "{s}");

    // faultline dies after the region was destroyed and before any restore: `recover` finds the survivors
    // unable to serve and restores them from the backups, then rebuilds the lost region.
    let mut child = Command::new(bin())
        .args(["run", "scenarios/dr-region-loss.yaml"])
        .env("FAULTLINE_STATE_DIR", TWO_REGION_STATE)
        .env("FAULTLINE_REPORTS_DIR", reports_dir())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lost = Path::new(TWO_REGION_STATE).join("lost-nodes");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !lost.exists() {
        assert!(Instant::now() < deadline, "the region was never destroyed");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1000));
    crash(&mut child);
    let s = text(&faultline_two_region(&["status"]));
    assert!(
        s.contains("lost nodes") && s.contains("n1, n2, n3, n4"),
        "{s}"
    );
    assert!(s.contains("health: NOT healthy"), "{s}");
    // No scenario runs on a stack with lost nodes (its health would count only the survivors).
    let o = faultline_two_region(&["run", "scenarios/dr-region-loss.yaml"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(
        out.contains("are lost") && out.contains("faultline recover"),
        "{out}"
    );
    let o = faultline_two_region(&["up", "--topology", "fixtures/topologies/two-region.yaml"]);
    let out = text(&o);
    assert_eq!(
        o.status.code(),
        Some(3),
        "`up` must not call the survivors a stack: {out}"
    );
    assert!(out.contains("are lost"), "{out}");
    let o = faultline_two_region(&["recover"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let o = faultline_two_region(&["status"]);
    let s = text(&o);
    assert_eq!(o.status.code(), Some(0), "{s}");
    assert!(s.contains("health: ok"), "{s}");
    assert!(s.contains("fault journal: no open entry"), "{s}");
    assert!(!s.contains("lost nodes"), "{s}");
}
