//! faultline's load generator against the standard tools, on the same servers in one run: Postgres INSERTs at the
//! same rate and connection count as `pgbench -R`, Redis SETs against `redis-benchmark`, and faultline's highest
//! sustained open-loop SET rate as a fraction of redis-benchmark's closed-loop rate. The harness must not be
//! what is measured: its p50 should be within 0.1 ms of the tools', and it should sustain at least 0.9x
//! redis-benchmark's SET rate with the same number of connections.
//!
//! Needs root, the stack's packages and a running local stack (`faultline up`). Run:
//! `cargo bench --bench vs_standard_tools` (RATE=2000 CONNECTIONS=8 SECONDS=10 to change the load; PARTS=postgres,
//! redis,max to run only some of the three comparisons).

use std::process::Command;
use std::time::{Duration, Instant};

use faultline::clock::Clock;
use faultline::component::postgres;
use faultline::component::{Component, PostgresComponent, RedisComponent};
use faultline::events::EventLog;
use faultline::ledger::{Ledger, LedgerEntry, OpKind, Outcome};
use faultline::load;
use faultline::scenario::{Arrivals, ComponentKind, LoadProfile};
use faultline::targets::local::{LocalStack, StateDir};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// p50 / p95 / p99 in ms of sorted latencies.
fn quantiles(mut ms: Vec<f64>) -> [f64; 3] {
    ms.sort_by(|a, b| a.total_cmp(b));
    let q = |f: f64| ms[((ms.len() as f64 * f) as usize).min(ms.len() - 1)];
    [q(0.50), q(0.95), q(0.99)]
}

struct LoadFigures {
    ok_per_s: f64,
    not_ok: usize,
    latency: [f64; 3],
    /// How late operations left the client, p99 (the harness's own lag).
    sent_late_p99_ms: f64,
    /// p50 of how late operations left the client, and of sent to answered.
    sent_late_p50_ms: f64,
    server_p50_ms: f64,
}

async fn faultline_load(
    component: &dyn Component,
    op: OpKind,
    rate: u32,
    connections: u32,
    max_in_flight: u32,
    arrivals: Arrivals,
    seconds: u64,
) -> LoadFigures {
    let profile = LoadProfile {
        write_rate: if op == OpKind::Write { rate } else { 0 },
        read_rate: if op == OpKind::Read { rate } else { 0 },
        connections,
        max_in_flight,
        arrivals,
        deadline: Duration::from_secs(2),
        ..LoadProfile::default()
    };
    // A run id per call: the ledger table's key is (run id, write id), and write ids start at 1 in every call.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let run_id = format!("bench-{}-{call}", std::process::id());
    let client = component.load_client(&run_id, &profile);
    client
        .warm_up(
            connections as usize,
            Instant::now() + Duration::from_secs(5),
        )
        .await;
    let ledger = Ledger::default();
    let events = EventLog::new(Clock::start());
    let running = load::start(
        &profile,
        client,
        faultline::ledger::Source::Component(component.kind()),
        ledger.clone(),
        events,
        std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1)),
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    running.stop(Duration::from_secs(5)).await;
    // The first second warms caches; it is left out as pgbench's -T run has no warm-up to compare with.
    let entries: Vec<LedgerEntry> = ledger
        .entries()
        .into_iter()
        .filter(|e| e.scheduled.0 >= Duration::from_secs(1))
        .collect();
    let ok: Vec<&LedgerEntry> = entries
        .iter()
        .filter(|e| e.outcome == Outcome::Ok)
        .collect();
    let lat = ok
        .iter()
        .map(|e| e.latency().as_secs_f64() * 1000.0)
        .collect();
    let late = entries
        .iter()
        .filter_map(|e| e.sent.map(|s| s.secs_since(e.scheduled) * 1000.0))
        .collect();
    let server = ok
        .iter()
        .filter_map(|e| e.sent.map(|s| e.done.secs_since(s) * 1000.0))
        .collect();
    let late = quantiles(late);
    LoadFigures {
        ok_per_s: ok.len() as f64 / (seconds as f64 - 1.0),
        not_ok: entries.len() - ok.len(),
        latency: quantiles(lat),
        sent_late_p99_ms: late[2],
        sent_late_p50_ms: late[0],
        server_p50_ms: quantiles(server)[0],
    }
}

/// `pgbench -R rate -c connections` running faultline's own INSERT; latency = transaction time + schedule lag,
/// i.e. from the scheduled start as faultline measures it.
fn pgbench(addr: &str, password: &str, rate: u32, connections: u32, seconds: u64) -> [f64; 3] {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("insert.sql");
    std::fs::write(
        &script,
        "\\set id random(1, 9000000000000000)\nINSERT INTO faultline_ledger (run_id, id) VALUES ('pgbench', :id);\n",
    )
    .unwrap();
    let prefix = dir.path().join("pgb");
    let status = Command::new("pgbench")
        .args([
            "-h",
            addr,
            "-p",
            "5432",
            "-U",
            "postgres",
            "-n",
            "-c",
            &connections.to_string(),
            "-j",
            "2",
            "-R",
            &rate.to_string(),
            "-T",
            &seconds.to_string(),
            "-f",
            script.to_str().unwrap(),
            "-l",
            "--log-prefix",
            prefix.to_str().unwrap(),
            "postgres",
        ])
        .env("PGPASSWORD", password)
        .current_dir(dir.path())
        .output()
        .expect("pgbench runs");
    assert!(
        status.status.success(),
        "pgbench: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let mut lat = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("pgb")
        {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            // client_id transaction_no time script_no time_epoch time_us schedule_lag
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(Ok(time)), Some(Ok(lag)), Some(Ok(epoch))) = (
                f.get(2).map(|v| v.parse::<f64>()),
                f.get(6).map(|v| v.parse::<f64>()),
                f.get(4).map(|v| v.parse::<u64>()),
            ) else {
                continue;
            };
            lat.push((epoch, (time + lag) / 1000.0));
        }
    }
    // Leave out the first second, as for faultline.
    let first = lat.iter().map(|(e, _)| *e).min().unwrap_or(0);
    quantiles(
        lat.into_iter()
            .filter(|(e, _)| *e > first)
            .map(|(_, l)| l)
            .collect(),
    )
}

/// redis-benchmark SET, closed loop, `connections` clients, no pipelining: (requests/s, p50, p95, p99 in ms).
fn redis_benchmark(addr: &str, connections: u32) -> (f64, [f64; 3]) {
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            addr,
            "-p",
            "6379",
            "-c",
            &connections.to_string(),
            "-n",
            "300000",
            "-t",
            "set",
            "-P",
            "1",
            "--csv",
        ])
        .output()
        .expect("redis-benchmark runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("\"SET\""))
        .unwrap_or_else(|| panic!("no SET row in redis-benchmark's output:\n{text}"));
    let f: Vec<f64> = row
        .split(',')
        .skip(1)
        .map(|v| v.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    (f[0], [f[3], f[4], f[5]])
}

fn print_faultline(label: &str, f: &LoadFigures) {
    println!(
        "  {label:<37}{:>7.3}  {:>7.3}  {:>7.3}   ({:.0} ok/s, {} not ok; sent late p50 {:.3} / p99 {:.3} ms, \
         sent to answered p50 {:.3} ms)",
        f.latency[0],
        f.latency[1],
        f.latency[2],
        f.ok_per_s,
        f.not_ok,
        f.sent_late_p50_ms,
        f.sent_late_p99_ms,
        f.server_p50_ms
    );
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("vs_standard_tools: skipped, needs root and a running stack (faultline up)");
        return;
    }
    let rate: u32 = env_or("RATE", 2000);
    let connections: u32 = env_or("CONNECTIONS", 8);
    let seconds: u64 = env_or("SECONDS", 10);
    let parts: String = env_or("PARTS", "postgres,redis,max".to_string());
    let part = |p: &str| parts.split(',').any(|x| x.trim() == p);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = StateDir::new(
        std::env::var_os("FAULTLINE_STATE_DIR").map_or_else(StateDir::default_path, Into::into),
    );
    let Some(stack) = LocalStack::open(dir).expect("the state directory is readable") else {
        eprintln!("vs_standard_tools: skipped, no stack is up (run `faultline up` first)");
        return;
    };
    let pg_ep = stack.postgres_endpoints();
    let redis_ep = stack.redis_endpoints();
    let (pg_node, redis_node) = rt.block_on(async {
        (
            stack
                .role_holder(ComponentKind::Postgres)
                .await
                .expect("a Postgres primary"),
            stack
                .role_holder(ComponentKind::Redis)
                .await
                .expect("a Redis master"),
        )
    });
    let pg_addr = stack.addr(&pg_node).to_string();
    let redis_addr = stack.addr(&redis_node).to_string();
    rt.block_on(postgres::prepare(&pg_ep, Duration::from_secs(10)))
        .expect("the ledger table");

    println!("faultline vs the standard tools: {connections} connections, {seconds} s per run, first second left out");
    println!();
    let password = pg_ep.password.expose().to_string();
    let pg = PostgresComponent(pg_ep);
    if part("postgres") {
        // One statement per connection at a time, as pgbench's clients; evenly spaced, then with pgbench's Poisson
        // arrivals for a like-for-like comparison.
        let uniform = rt.block_on(faultline_load(
            &pg,
            OpKind::Write,
            rate,
            connections,
            connections,
            Arrivals::Uniform,
            seconds,
        ));
        let fl = rt.block_on(faultline_load(
            &pg,
            OpKind::Write,
            rate,
            connections,
            connections,
            Arrivals::Poisson,
            seconds,
        ));
        let pb = pgbench(&pg_addr, &password, rate, connections, seconds);
        println!("Postgres INSERT at {rate}/s on {pg_node}      p50 ms   p95 ms   p99 ms");
        print_faultline("faultline (uniform arrivals)", &uniform);
        print_faultline("faultline (Poisson arrivals)", &fl);
        println!(
            "  pgbench -R {rate} -c {connections}                {:>7.3}  {:>7.3}  {:>7.3}",
            pb[0], pb[1], pb[2]
        );
        println!(
            "  p50 difference, Poisson vs pgbench: {:+.3} ms (goal: within 0.1 ms)",
            fl.latency[0] - pb[0]
        );
        println!();
    }

    let redis = RedisComponent(redis_ep);
    let (rb_rps, rb) = redis_benchmark(&redis_addr, connections);
    if part("redis") {
        let fl = rt.block_on(faultline_load(
            &redis,
            OpKind::Write,
            rate,
            connections,
            64,
            Arrivals::Uniform,
            seconds,
        ));
        println!("Redis SET on {redis_node}                       p50 ms   p95 ms   p99 ms");
        print_faultline(&format!("faultline at {rate}/s"), &fl);
        println!(
            "  redis-benchmark -c {connections} (closed loop)   {:>7.3}  {:>7.3}  {:>7.3}   ({rb_rps:.0} requests/s)",
            rb[0], rb[1], rb[2]
        );
        println!(
            "  p50 difference: {:+.3} ms (goal: within 0.1 ms)",
            fl.latency[0] - rb[0]
        );
        println!();
    }
    if !part("max") {
        return;
    }

    // The highest open-loop rate faultline sustains with the same connections, as a fraction of redis-benchmark's.
    println!("faultline open-loop SET rate with {connections} connections (sustained = every op ok and sent on time)");
    let mut best = 0.0f64;
    for fraction in [0.5, 0.7, 0.9, 1.0] {
        let target = (rb_rps * fraction) as u32;
        // The scenarios' default in-flight bound over the same connections (redis-benchmark keeps one request per
        // connection outstanding; faultline, open loop, sends each at its time).
        let f = rt.block_on(faultline_load(
            &redis,
            OpKind::Write,
            target,
            connections,
            64,
            Arrivals::Uniform,
            6,
        ));
        let sustained =
            f.not_ok == 0 && f.ok_per_s >= 0.99 * target as f64 && f.sent_late_p99_ms < 5.0;
        println!(
            "  {target:>7}/s ({:.1}x redis-benchmark): {:.0} ok/s, {} not ok, p50 {:.3} ms, p99 {:.3} ms, sent late p99 {:.3} ms: {}",
            fraction, f.ok_per_s, f.not_ok, f.latency[0], f.latency[2], f.sent_late_p99_ms,
            if sustained { "sustained" } else { "NOT sustained" }
        );
        if sustained {
            best = best.max(f.ok_per_s / rb_rps);
        } else {
            break;
        }
    }
    println!(
        "  highest sustained: {best:.2}x redis-benchmark's {rb_rps:.0}/s (goal: at least 0.9x)"
    );
}
