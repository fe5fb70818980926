//! Accuracy against a known outage: the Postgres primary and the Redis master are SIGSTOPped for exactly N
//! seconds (below the failover timeouts, so nothing fails over and the outage is exactly the pause), under 1,000
//! writes/s, and `downtime_s` must read N within 20 ms. Prints the error per component and trial.
//!
//! Needs root and the stack's packages; brings the stack up if it is not. Run:
//! `cargo bench --bench known_outage` (TRIALS=N for more trials per component).

use std::process::Command;

fn scenario(component: &str, seconds: u32, trials: u32) -> String {
    // SIGSTOP of every process of the member; SIGCONT exactly `seconds` after it took effect.
    format!(
        "name: known-outage-{component}\n\
         component: {component}\n\
         topology: {root}/fixtures/topologies/three-node.yaml\n\
         trials: {trials}\n\
         load: {{write_rate: 1000, read_rate: 0, connections: 8, deadline: 10s}}\n\
         baseline: 3s\n\
         faults:\n  - kind: process-pause\n    target: {{role: primary}}\n    duration: {seconds}s\n\
         observe: {observe}s\n\
         heal: {{timeout: 60s, settle: 2s}}\n\
         thresholds:\n  - lost_acked_writes == 0\n",
        root = env!("CARGO_MANIFEST_DIR"),
        observe = seconds + 4,
    )
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("known_outage: skipped, needs root (network namespaces, cgroups)");
        return;
    }
    let trials: u32 = std::env::var("TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    println!("known outage: SIGSTOP of the primary/master for exactly N s; downtime_s should read N within 20 ms");
    // Postgres: ttl 10 s, so a 3 s pause keeps the leader key; Redis: down-after 3 s, so a 2 s pause is no +sdown.
    for (component, seconds) in [("postgres", 3u32), ("redis", 2u32)] {
        let path = dir.path().join(format!("{component}.yaml"));
        std::fs::write(&path, scenario(component, seconds, trials)).unwrap();
        let reports = dir.path().join(format!("reports-{component}"));
        let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
            .args(["run", "--reports-dir"])
            .arg(&reports)
            .arg(&path)
            .output()
            .expect("faultline runs");
        let run_dir = std::fs::read_dir(&reports)
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| e.unwrap().path());
        let Some(run_dir) = run_dir else {
            panic!(
                "{component}: no report written:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run_dir.join("report.json")).unwrap()).unwrap();
        for t in report["trials"].as_array().unwrap() {
            let downtime = t["measurements"]["downtime_s"].as_f64();
            let promoted = t["measurements"]["promotion_s"].as_f64();
            match downtime {
                Some(d) => println!(
                    "  {component:<8} trial {}: paused {seconds}.000 s, downtime_s {d:.3} s, error {:+.1} ms{}{}",
                    t["trial"],
                    (d - seconds as f64) * 1000.0,
                    if ((d - seconds as f64) * 1000.0).abs() <= 20.0 { "" } else { "  (OVER 20 ms)" },
                    if promoted.is_some() { "  (a failover happened: not a clean known outage)" } else { "" }
                ),
                None => println!("  {component:<8} trial {}: downtime_s not observed", t["trial"]),
            }
        }
    }
}
