//! Helpers shared by the end-to-end tests: running the binary, reading its reports, checking for residue.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

pub static STACK: Mutex<()> = Mutex::new(());

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_faultline")
}

pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Skips (with the reason on stderr) unless running as root. Under CI (`CI=true`) a missing root is a failure:
/// CI runs as root, and an end-to-end test that silently skipped there would prove nothing.
#[macro_export]
macro_rules! needs_root {
    () => {
        if !$crate::common::is_root() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but not root: the end-to-end tests must run in CI"
            );
            eprintln!("skipped: needs root for network namespaces, nft and cgroups (run the tests with sudo)");
            return;
        }
    };
}

pub fn reports_dir() -> PathBuf {
    let d = std::env::temp_dir().join("faultline-test-reports");
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn faultline(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("FAULTLINE_REPORTS_DIR", reports_dir())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("faultline runs")
}

/// The two-region stack has its own state directory, so it runs beside the three-node stack of the other tests.
pub const TWO_REGION_STATE: &str = "/var/tmp/faultline-two-region";

/// faultline on the two-region stack, with extra environment (e.g. QDRANT_BIN).
pub fn faultline_two_region_env(env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.args(args)
        .env("FAULTLINE_STATE_DIR", TWO_REGION_STATE)
        .env("FAULTLINE_REPORTS_DIR", reports_dir())
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("faultline runs")
}

pub fn faultline_two_region(args: &[&str]) -> Output {
    faultline_two_region_env(&[], args)
}

/// Takes the two-region stack down when the test ends, however it ends.
pub struct TwoRegionDown;

impl Drop for TwoRegionDown {
    fn drop(&mut self) {
        let _ = faultline_two_region(&["down"]);
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn up() {
    let o = faultline(&["up"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "faultline up failed:\n{}",
        text(&o)
    );
}

/// The run directory printed by `faultline run` ("report: <dir>/report.json").
pub fn report_of(o: &Output) -> (PathBuf, Value) {
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("report: "))
        .unwrap_or_else(|| panic!("no report line in output:\n{}", text(o)));
    let path = repo(line.trim());
    let path = if path.exists() {
        path
    } else {
        PathBuf::from(line.trim())
    };
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    (path.parent().unwrap().to_path_buf(), json)
}

pub fn measured(report: &Value, metric: &str) -> Option<f64> {
    report["measurements"][metric].as_f64()
}

/// Every log-agreement row must have found its server log line and agree within 0.5 s.
pub fn assert_log_agreement(report: &Value, expect_events: &[&str]) {
    let max = report["measurements"]["log_agreement_max_s"]
        .as_f64()
        .unwrap_or_else(|| {
            panic!(
                "log_agreement_max_s not observed: {:#?}",
                report["log_agreement"]
            )
        });
    assert!(max <= 0.5, "log_agreement_max_s = {max}");
    let rows = report["log_agreement"]
        .as_array()
        .expect("log_agreement array");
    for want in expect_events {
        let row = rows
            .iter()
            .find(|r| r["event"].as_str().unwrap_or("").contains(want))
            .unwrap_or_else(|| panic!("no log agreement row for {want}: {rows:#?}"));
        let delta = row["delta_s"]
            .as_f64()
            .unwrap_or_else(|| panic!("no server log line found for {want}: {row:#?}"));
        assert!(
            delta.abs() <= 0.5,
            "{want}: harness and server log disagree by {delta} s: {row:#?}"
        );
    }
}

pub fn junit_mentions(run_dir: &Path, what: &str) -> bool {
    std::fs::read_to_string(run_dir.join("junit.xml"))
        .unwrap_or_default()
        .contains(what)
}

/// No faultline nft table, shaping, latency rule or delay agent, no stopped stack process, no link down, and
/// exactly the topology's namespaces.
pub fn assert_no_residue() {
    let o = faultline(&["status"]);
    let out = text(&o);
    assert!(!out.contains("residue:"), "residue after the run:\n{out}");
    assert!(
        !out.contains("STOPPED"),
        "stopped processes after the run:\n{out}"
    );
    assert!(
        out.contains("fault journal: no open entry"),
        "open journal entries:\n{out}"
    );
    for n in ["fl-n1", "fl-n2", "fl-n3"] {
        let tables = Command::new("ip")
            .args(["netns", "exec", n, "nft", "list", "tables"])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&tables.stdout).contains("faultline"),
            "nft table left in {n}"
        );
        let qdiscs = Command::new("ip")
            .args(["netns", "exec", n, "tc", "qdisc", "show", "dev", "eth0"])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&qdiscs.stdout).contains("htb"),
            "bandwidth shaping left in {n}"
        );
        let mangle = Command::new("ip")
            .args(["netns", "exec", n, "iptables", "-w", "-t", "mangle", "-S"])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&mangle.stdout).contains("NFQUEUE"),
            "latency rules left in {n}"
        );
        assert!(
            faultline::targets::local::delay_agent::agents_in(n).is_empty(),
            "delay agent left in {n}"
        );
    }
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let mut names: Vec<String> = String::from_utf8_lossy(&ns.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|n| n.starts_with("fl-"))
        .collect();
    names.sort();
    assert_eq!(names, vec!["fl-n1", "fl-n2", "fl-n3"], "stray namespaces");
}

/// Waits for an open entry in the fault journal, i.e. a fault is applied right now.
pub fn wait_for_open_fault(timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(rd) = std::fs::read_dir("/var/tmp/faultline/journal") {
            for e in rd.flatten() {
                let t = std::fs::read_to_string(e.path()).unwrap_or_default();
                if t.contains("\"closed_at\": null") {
                    return true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

pub fn spawn_run(scenario: &str) -> std::process::Child {
    Command::new(bin())
        .args(["run", scenario])
        .env("FAULTLINE_REPORTS_DIR", reports_dir())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// SIGKILL for a faultline this test spawned (a crash: nothing of it runs its cleanup), and its exit reaped.
pub fn crash(child: &mut std::process::Child) {
    // SAFETY: signalling a child process this test spawned and has not reaped yet.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// GET a Patroni REST path from the first member of the three-node stack that answers (10.201.0.11-13:8008).
pub fn patroni_get(path: &str) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        for n in 11..=13 {
            if let Ok(r) = http
                .get(format!("http://10.201.0.{n}:8008{path}"))
                .send()
                .await
            {
                if let Ok(v) = r.json::<Value>().await {
                    return v;
                }
            }
        }
        panic!("no Patroni member answered {path}")
    })
}

/// The Patroni member that is neither leader nor synchronous standby (a three-member cluster in synchronous mode
/// has one).
pub fn asynchronous_replica() -> String {
    patroni_get("/cluster")["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "replica")
        .expect("a three-member cluster in synchronous mode has one asynchronous replica")["name"]
        .as_str()
        .unwrap()
        .to_string()
}
