//! Prints what the open-loop load driver and ledger sustain on this machine against an in-process client that
//! answers at once: the ceiling of the harness itself, and how close to its scheduled instant each operation is
//! sent (the harness's own share of every latency it reports). Run: `cargo bench --bench load_driver`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline::clock::Clock;
use faultline::events::EventLog;
use faultline::ledger::{Ledger, Outcome};
use faultline::load::{self, Attempt, BoxFuture, LoadClient};
use faultline::scenario::LoadProfile;

struct Instant0;

impl LoadClient for Instant0 {
    fn write(&self, _id: u64, _deadline: Instant) -> BoxFuture<'_, Attempt> {
        Box::pin(async { Attempt::sent_at(Instant::now(), (Outcome::Ok, None)) })
    }
    fn read(&self, deadline: Instant) -> BoxFuture<'_, Attempt> {
        self.write(0, deadline)
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("rate/s     recorded/s   sent-scheduled p50 / p99 / max (ms)");
    for rate in [1_000u32, 10_000, 50_000, 100_000] {
        let (done, late) = rt.block_on(async {
            let events = EventLog::new(Clock::start());
            let ledger = Ledger::default();
            let profile = LoadProfile {
                write_rate: rate,
                read_rate: 0,
                connections: 8,
                ..LoadProfile::default()
            };
            let running = load::start(
                &profile,
                Arc::new(Instant0),
                faultline::ledger::Source::Component(faultline::scenario::ComponentKind::Postgres),
                ledger.clone(),
                events,
                Arc::new(std::sync::atomic::AtomicU64::new(1)),
            );
            tokio::time::sleep(Duration::from_secs(3)).await;
            running.stop(Duration::from_secs(5)).await;
            let entries = ledger.entries();
            let mut late: Vec<f64> = entries
                .iter()
                .filter_map(|e| e.sent.map(|s| s.secs_since(e.scheduled) * 1000.0))
                .collect();
            late.sort_by(|a, b| a.total_cmp(b));
            (entries.len(), late)
        });
        println!(
            "{rate:>7} {:>13.0}   {:.3} / {:.3} / {:.3}",
            done as f64 / 3.0,
            quantile(&late, 0.5),
            quantile(&late, 0.99),
            late.last().copied().unwrap_or(0.0)
        );
    }
}
