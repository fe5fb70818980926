//! Prints what the open-loop load driver and ledger sustain on this machine against an in-process client that
//! answers at once: the ceiling of the harness itself, so a scenario's rate can be judged against it.
//! Run: `cargo bench --bench load_driver`.

use std::time::{Duration, Instant};

use faultline::clock::Clock;
use faultline::events::EventLog;
use faultline::ledger::{Ledger, Outcome};
use faultline::load::{self, Attempt, BoxFuture, LoadClient};
use faultline::scenario::LoadProfile;

struct Instant0;

impl LoadClient for Instant0 {
    fn write(&mut self, _id: u64, _deadline: Duration) -> BoxFuture<'_, Attempt> {
        Box::pin(async {
            Attempt {
                sent: Some(Instant::now()),
                outcome: Outcome::Ok,
                error: None,
            }
        })
    }
    fn read(&mut self, _deadline: Duration) -> BoxFuture<'_, Attempt> {
        self.write(0, Duration::ZERO)
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for rate in [1_000u32, 5_000, 20_000] {
        let (done, late_ms) = rt.block_on(async {
            let events = EventLog::new(Clock::start());
            let ledger = Ledger::default();
            let profile = LoadProfile {
                write_rate: rate,
                read_rate: 0,
                connections: 8,
                ..LoadProfile::default()
            };
            let clients: Vec<Box<dyn LoadClient>> = (0..8)
                .map(|_| Box::new(Instant0) as Box<dyn LoadClient>)
                .collect();
            let running = load::start(&profile, clients, ledger.clone(), events, 1);
            tokio::time::sleep(Duration::from_secs(3)).await;
            running.stop(Duration::from_secs(5)).await;
            let entries = ledger.entries();
            let mut lat: Vec<f64> = entries
                .iter()
                .map(|e| e.latency().as_secs_f64() * 1000.0)
                .collect();
            lat.sort_by(|a, b| a.total_cmp(b));
            (
                entries.len(),
                lat[(lat.len() * 99 / 100).min(lat.len() - 1)],
            )
        });
        println!(
            "scheduled {rate}/s for 3 s: {done} operations recorded ({:.0}/s), p99 scheduling-to-done {late_ms:.3} ms",
            done as f64 / 3.0
        );
    }
}
