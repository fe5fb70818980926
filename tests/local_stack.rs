//! End-to-end tests against the real local stack: etcd, Patroni/PostgreSQL, Redis and Sentinel in network
//! namespaces, really broken. They need root (namespaces, nft, cgroups) and the packages from
//! scripts/install-deps.sh; without root they are skipped with a message saying so.
//!
//! The tests share one stack, so they take a lock and run one at a time; each brings the stack up if needed.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

#[test]
fn postgres_primary_kill_agrees_with_patroni_log() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let o = faultline(&["run", "scenarios/postgres-primary-kill.yaml"]);
    let code = o.status.code();
    assert!(
        code == Some(0) || code == Some(1),
        "run failed:\n{}",
        text(&o)
    );
    // Piped: live progress as plain timestamped lines on stderr, each milestone as it happened, never on stdout.
    let err = String::from_utf8_lossy(&o.stderr);
    for want in [
        "[postgres-primary-kill trial 1/1, fault] fault effective: SIGKILL",
        "promotion: new primary serving (postgres)",
        "elapsed, ",
        "healed: ",
    ] {
        assert!(err.contains(want), "no `{want}` in the progress:\n{err}");
    }
    assert!(!String::from_utf8_lossy(&o.stdout).contains("fault effective"));
    let (dir, r) = report_of(&o);
    let verdict = r["verdict"].as_str().unwrap();
    assert!(verdict == "pass" || verdict == "fail", "verdict {verdict}");
    assert_eq!(
        code,
        Some(if verdict == "pass" { 0 } else { 1 }),
        "exit code follows the verdict"
    );
    let detection = measured(&r, "detection_s").expect("detection observed");
    let promotion = measured(&r, "promotion_s").expect("promotion observed");
    assert!(detection > 1.0 && detection < 20.0, "detection {detection}");
    assert!(
        promotion >= detection,
        "promotion {promotion} before detection {detection}"
    );
    assert!(measured(&r, "acked_writes").unwrap() > 100.0);
    assert_eq!(
        measured(&r, "lost_acked_writes"),
        Some(0.0),
        "synchronous Patroni lost acknowledged writes"
    );
    assert_log_agreement(&r, &["promotion"]);
    assert!(
        junit_mentions(&dir, "detection_s &lt;= 10") || junit_mentions(&dir, "detection_s <= 10")
    );
    let timeline = r["timeline"].as_array().unwrap();
    for kind in [
        "fault_applied",
        "failure_detected",
        "new_primary_serving",
        "first_write_after_fault",
        "fault_reverted",
    ] {
        assert!(
            timeline
                .iter()
                .any(|e| e["event"]["type"] == kind && e["at"].as_str().unwrap().ends_with('Z')),
            "timeline lacks {kind}"
        );
    }
    // In a healthy baseline nothing is "detected" before the fault: a sign stamped before the fault would be a
    // probe artefact (as a watch stamped at its headers instead of its event would be).
    let first_sign = timeline
        .iter()
        .find(|e| e["event"]["type"] == "failure_detected")
        .expect("a failure_detected event");
    assert!(
        first_sign["t_s"].as_f64().unwrap() > 0.0,
        "detection before the fault: {first_sign}"
    );
    assert!(r["fingerprint"]["versions"]["patroni"]
        .as_str()
        .unwrap()
        .contains("patroni"));
    assert_eq!(r["fingerprint"]["settings"]["ttl"], 10);
    let pw = std::fs::read_to_string("/var/tmp/faultline/secrets.json").unwrap();
    let pw: Value = serde_json::from_str(&pw).unwrap();
    let secret = pw["postgres_superuser"].as_str().unwrap();
    for f in ["report.json", "junit.xml", "ledger.jsonl"] {
        assert!(
            !std::fs::read_to_string(dir.join(f))
                .unwrap()
                .contains(secret),
            "password in {f}"
        );
    }
    assert!(
        !text(&o).contains(secret),
        "password in the terminal output"
    );
}

#[test]
fn redis_master_kill_agrees_with_sentinel_log() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let o = faultline(&["run", "scenarios/redis-master-kill.yaml"]);
    assert!(
        matches!(o.status.code(), Some(0) | Some(1)),
        "run failed:\n{}",
        text(&o)
    );
    // On a terminal (a pty from util-linux `script`, outside CI): a redrawn status line with the milestones above.
    let cmd = format!(
        "{} run --reports-dir {} scenarios/redis-master-kill.yaml",
        bin(),
        reports_dir().display()
    );
    let summary = tempfile::NamedTempFile::new().unwrap();
    let tty = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("CI")
        .env("GITHUB_STEP_SUMMARY", summary.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("script runs");
    let screen = String::from_utf8_lossy(&tty.stdout);
    assert!(
        screen.contains("\u{1b}[2K") || screen.contains('\r'),
        "no redrawn line on the terminal:\n{screen}"
    );
    assert!(
        screen.contains("fault effective") && screen.contains("ops/s ok"),
        "{screen}"
    );
    // The run's Markdown summary was appended for the CI page.
    let md = std::fs::read_to_string(summary.path()).unwrap();
    assert!(
        md.contains("### faultline `redis-master-kill`") && md.contains("| `detection_s"),
        "{md}"
    );
    let (_dir, r) = report_of(&o);
    let detection = measured(&r, "detection_s").expect("+sdown observed");
    let promotion = measured(&r, "promotion_s").expect("+promoted-slave observed");
    assert!(
        detection >= 2.9,
        "+sdown cannot come before down-after-milliseconds (3 s): {detection}"
    );
    assert!(promotion > detection);
    assert!(measured(&r, "rto_s").is_some(), "clients never reconnected");
    assert_log_agreement(&r, &["+sdown", "+promoted-slave", "+switch-master"]);
}

#[test]
fn redis_master_partition_without_wait_reports_lost_writes() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let o = faultline(&["run", "scenarios/redis-master-partition.yaml"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a lost acknowledged write must fail the run:\n{}",
        text(&o)
    );
    let (dir, r) = report_of(&o);
    assert_eq!(r["verdict"], "fail");
    let lost = measured(&r, "lost_acked_writes").expect("loss measured");
    assert!(
        lost > 0.0,
        "partitioned master kept acknowledging writes that were discarded; got {lost}"
    );
    let t = r["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["metric"] == "lost_acked_writes")
        .unwrap();
    assert_eq!(t["pass"], false);
    assert_eq!(t["measured"].as_f64(), Some(lost));
    assert!(junit_mentions(&dir, "<failure"), "junit shows the failure");
    // The report names which writes were lost.
    assert!(!r["trials"][0]["writes"]["lost_sample"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn ctrl_c_during_a_partition_reverts_it_and_reports_incomplete() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let child = spawn_run("scenarios/postgres-primary-partition.yaml");
    assert!(
        wait_for_open_fault(Duration::from_secs(60)),
        "the partition was never applied"
    );
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: signalling the child we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(4),
        "interrupted run exits 4:\n{}",
        text(&o)
    );
    let (_dir, r) = report_of(&o);
    assert_eq!(
        r["verdict"], "incomplete",
        "an interrupted run is never a pass"
    );
    assert!(r["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["event"]["type"] == "fault_reverted"));
    // The stack heals by itself once the rules are gone; residue must be zero right away.
    assert_no_residue();
    let o = faultline(&["recover"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn down_removes_everything_and_up_rebuilds() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let o = faultline(&["down"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ns.stdout).contains("fl-n"),
        "namespaces left after down"
    );
    let br = Command::new("ip")
        .args(["link", "show", "flbr0"])
        .output()
        .unwrap();
    assert!(!br.status.success(), "bridge left after down");
    let started = Instant::now();
    up();
    eprintln!(
        "stack up from nothing in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_no_residue();
}

#[test]
fn without_root_up_refuses_with_exit_3() {
    if !is_root() {
        let o = faultline(&["up"]);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        assert!(text(&o).contains("needs root"));
        return;
    }
    // As root, drop to an unprivileged user to see the refusal.
    let o = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            bin(),
            "--state-dir",
            "/tmp/faultline-nobody",
            "up",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("needs root"), "{}", text(&o));
}

#[test]
fn invalid_scenario_exits_2_naming_file_line_and_problem() {
    let o = faultline(&["validate", "fixtures/invalid/scenario-unknown-metric.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("fixtures/invalid/scenario-unknown-metric.yaml:"),
        "{err}"
    );
    assert!(err.contains("unknown metric"), "{err}");
    // `run` validates before touching anything: no stack is needed to get the error.
    let o = faultline(&["run", "fixtures/invalid/scenario-unknown-metric.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = faultline(&[
        "validate",
        "scenarios/postgres-primary-kill.yaml",
        "scenarios/suites/nightly.yaml",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn repeated_trials_report_each_trial_their_distribution_and_the_statistic_judged() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let o = faultline(&["run", "fixtures/valid/postgres-replica-kill-2x.yaml"]);
    assert!(
        matches!(o.status.code(), Some(0) | Some(1)),
        "run failed:\n{}",
        text(&o)
    );
    let (dir, r) = report_of(&o);
    let trials = r["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2, "one entry per trial");
    for (i, t) in trials.iter().enumerate() {
        assert_eq!(t["trial"], i as u64 + 1);
        assert!(t["measurements"]["acked_writes"].as_f64().unwrap() > 0.0);
        assert!(t["measurements"]["write_p99_fault_ms"].as_f64().is_some());
    }
    // Each trial killed the replica of its own moment, and both faults are on the timeline.
    let applied = r["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["type"] == "fault_applied")
        .count();
    assert_eq!(applied, 2);
    let d = &r["distribution"]["write_p99_fault_ms"];
    assert_eq!(d["observed"], 2);
    assert!(d["min"].as_f64().unwrap() <= d["max"].as_f64().unwrap());
    let stats: Vec<&str> = r["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["statistic"].as_str().unwrap())
        .collect();
    assert_eq!(stats, vec!["every", "max", "mean"]);
    let max_t = &r["thresholds"][1];
    assert_eq!(
        max_t["measured"], d["max"],
        "max() judges the largest trial value"
    );
    assert!(
        junit_mentions(&dir, "max(write_p99_fault_ms)"),
        "junit names the statistic"
    );
    assert!(
        text(&o).contains("max of 2 trials"),
        "the terminal names the statistic:\n{}",
        text(&o)
    );
    assert!(r["availability"]["attempted"].as_u64().unwrap() > 0);
}

#[test]
fn dry_run_names_the_victims_and_changes_nothing() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let journal_before = std::fs::read_dir("/var/tmp/faultline/journal")
        .map(|d| d.count())
        .unwrap_or(0);
    let o = faultline(&["run", "--dry-run", "scenarios/postgres-primary-kill.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let status = text(&faultline(&["status"]));
    let leader = status
        .lines()
        .find_map(|l| l.strip_prefix("health: ok (postgres leader "))
        .and_then(|l| l.split(',').next())
        .expect("a healthy stack names its leader")
        .to_string();
    assert!(
        out.contains(&format!("process-kill: SIGKILL postgres on {leader}")),
        "the plan names the current primary {leader}:\n{out}"
    );
    let journal_after = std::fs::read_dir("/var/tmp/faultline/journal")
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(journal_before, journal_after, "a dry run journals nothing");
    assert_no_residue();
}

/// The heal is not complete until the restarted replica streams again: Patroni 3.0 calls a replica "running" as
/// soon as its PostgreSQL runs, and a heal judged on that came 2-4 s before the primary's pg_stat_replication
/// showed it streaming (recovered_s and the fault window looked shorter than they were). Every replication
/// reading after the heal must show both standbys streaming, and the restarted one must have been missing from a
/// reading after the kill (the window being judged exists).
#[test]
fn a_restarted_replica_streams_again_before_the_stack_counts_as_healed() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let o = faultline(&["run", "scenarios/postgres-replica-restart.yaml"]);
    assert!(
        matches!(o.status.code(), Some(0) | Some(1)),
        "run failed:\n{}",
        text(&o)
    );
    let (_, r) = report_of(&o);
    let timeline = r["timeline"].as_array().unwrap();
    let at = |kind: &str| {
        timeline
            .iter()
            .find(|e| e["event"]["type"] == kind)
            .and_then(|e| e["t_s"].as_f64())
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let healed = at("heal_complete");
    let readings: Vec<(f64, usize)> = timeline
        .iter()
        .filter(|e| e["event"]["type"] == "replication_sample")
        .filter_map(|e| {
            let streaming = e["event"]["standbys"]
                .as_array()?
                .iter()
                .filter(|s| s["state"] == "streaming")
                .count();
            Some((e["t_s"].as_f64()?, streaming))
        })
        .collect();
    assert!(
        readings.iter().any(|(t, n)| *t > 0.5 && *n < 2),
        "the killed replica never left the stream: {readings:?}"
    );
    let after: Vec<&(f64, usize)> = readings.iter().filter(|(t, _)| *t > healed).collect();
    assert!(!after.is_empty(), "no reading after the heal");
    for (t, n) in after {
        assert_eq!(
            *n, 2,
            "healed at {healed:.1} s, yet at {t:.1} s only {n} standby streamed"
        );
    }
    assert!(measured(&r, "recovered_s").unwrap() >= healed - 0.01);
}
