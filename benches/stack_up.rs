//! Prints how long the local stack takes to come up from nothing and to go down (issue 2's goal: up <= 20 s).
//! Needs root and the stack's packages; tears down and rebuilds the stack in the default state directory.
//! Run: `cargo bench --bench stack_up` (ROUNDS=N for more rounds).

use std::process::Command;
use std::time::Instant;

fn faultline(args: &[&str]) -> (bool, f64) {
    let started = Instant::now();
    let ok = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    (ok, started.elapsed().as_secs_f64())
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("stack_up: skipped, needs root (network namespaces, cgroups)");
        return;
    }
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let (mut ups, mut downs) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (ok, t) = faultline(&["down"]);
        assert!(ok, "faultline down failed");
        downs.push(t);
        let (ok, t) = faultline(&["up"]);
        assert!(ok, "faultline up failed");
        ups.push(t);
    }
    let show = |name: &str, v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{name}: min {:.2} s, median {:.2} s, max {:.2} s over {} rounds",
            v[0],
            v[v.len() / 2],
            v[v.len() - 1],
            v.len()
        );
    };
    show("stack up from nothing", &mut ups);
    show("stack down", &mut downs);
}
