//! Open-loop load: operations are scheduled at a fixed rate whatever the servers do, and latency is measured from
//! the scheduled send time (no coordinated omission). A pool of connections executes the schedule; each operation
//! is attempted exactly once and lands in the ledger as ok, failed or unknown.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Mutex};

use crate::clock::Clock;
use crate::events::EventLog;
use crate::ledger::{Ledger, LedgerEntry, OpKind, Outcome};
use crate::scenario::LoadProfile;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What one attempt returned. `sent` is when the request left the client (None: it never did, e.g. no primary).
#[derive(Debug)]
pub struct Attempt {
    pub sent: Option<Instant>,
    pub outcome: Outcome,
    pub error: Option<String>,
}

impl Attempt {
    /// An operation that left the client at `sent` and ended with `outcome`.
    pub fn sent_at(sent: Instant, (outcome, error): (Outcome, Option<String>)) -> Self {
        Attempt {
            sent: Some(sent),
            outcome,
            error,
        }
    }

    pub fn failed_unsent(error: impl Into<String>) -> Self {
        Attempt {
            sent: None,
            outcome: Outcome::Failed,
            error: Some(error.into()),
        }
    }
}

/// One client connection of a component's load driver. Implementations re-resolve the primary after errors and
/// enforce the deadline themselves (client side; never a server-side statement timeout: HA-FACTS pitfall 4).
pub trait LoadClient: Send {
    fn write(&mut self, id: u64, deadline: Duration) -> BoxFuture<'_, Attempt>;
    fn read(&mut self, deadline: Duration) -> BoxFuture<'_, Attempt>;
    /// A search (vector query); components without one never get search jobs (the scenario parser refuses
    /// `search_rate` for them), so the default only guards against a wiring mistake.
    fn search(&mut self, _deadline: Duration) -> BoxFuture<'_, Attempt> {
        Box::pin(async { Attempt::failed_unsent("this component has no search operation") })
    }
}

#[derive(Clone, Copy, Debug)]
struct Job {
    id: u64,
    op: OpKind,
    scheduled: Instant,
}

/// A running load: stop it to drain in-flight operations.
pub struct RunningLoad {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub next_write_id: Arc<AtomicU64>,
}

impl RunningLoad {
    /// Stops scheduling, lets queued and in-flight operations finish (each is bounded by its deadline), then
    /// returns. Operations still queued when `drain` passes are dropped unattempted (they never reach the ledger).
    pub async fn stop(self, drain: Duration) {
        let _ = self.stop.send(true);
        let aborts: Vec<_> = self.tasks.iter().map(|t| t.abort_handle()).collect();
        let all = futures_util::future::join_all(self.tasks);
        if tokio::time::timeout(drain, all).await.is_err() {
            for a in aborts {
                a.abort();
            }
        }
    }
}

/// Starts the schedule. Write ids continue from `first_write_id` so one ledger spans all trials of a run.
pub fn start(
    profile: &LoadProfile,
    clients: Vec<Box<dyn LoadClient>>,
    ledger: Ledger,
    events: EventLog,
    first_write_id: u64,
) -> RunningLoad {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (job_tx, job_rx) = mpsc::unbounded_channel::<Job>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let next_write_id = Arc::new(AtomicU64::new(first_write_id));
    let mut tasks = Vec::new();
    let clock = events.clock();

    for (rate, op) in [
        (profile.write_rate, OpKind::Write),
        (profile.read_rate, OpKind::Read),
        (profile.search_rate, OpKind::Search),
    ] {
        if rate == 0 {
            continue;
        }
        let tx = job_tx.clone();
        let mut stop = stop_rx.clone();
        let ids = next_write_id.clone();
        tasks.push(tokio::spawn(async move {
            let period = Duration::from_secs_f64(1.0 / rate as f64);
            let start = Instant::now();
            let mut n: u64 = 0;
            let mut read_id: u64 = 0;
            loop {
                let scheduled = start + period.mul_f64(n as f64);
                tokio::select! {
                    _ = tokio::time::sleep_until(scheduled.into()) => {}
                    _ = stop.changed() => break,
                }
                if *stop.borrow() {
                    break;
                }
                let id = match op {
                    OpKind::Write => ids.fetch_add(1, Ordering::SeqCst),
                    OpKind::Read | OpKind::Search => {
                        read_id += 1;
                        read_id
                    }
                };
                if tx.send(Job { id, op, scheduled }).is_err() {
                    break;
                }
                n += 1;
            }
        }));
    }
    drop(job_tx);

    let deadline = profile.deadline;
    for mut client in clients {
        let rx = job_rx.clone();
        let ledger = ledger.clone();
        let events = events.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let job = { rx.lock().await.recv().await };
                let Some(job) = job else { break };
                let attempt = match job.op {
                    OpKind::Write => client.write(job.id, deadline).await,
                    OpKind::Read => client.read(deadline).await,
                    OpKind::Search => client.search(deadline).await,
                };
                record(&ledger, &clock, &events, job, attempt);
            }
        }));
    }
    RunningLoad {
        stop: stop_tx,
        tasks,
        next_write_id,
    }
}

fn record(ledger: &Ledger, clock: &Clock, events: &EventLog, job: Job, attempt: Attempt) {
    let done = Instant::now();
    ledger.record(LedgerEntry {
        id: job.id,
        op: job.op,
        trial: events.trial(),
        scheduled: clock.stamp_of(job.scheduled),
        sent: attempt.sent.map(|s| clock.stamp_of(s)),
        done: clock.stamp_of(done),
        outcome: attempt.outcome,
        error: attempt.error,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client whose server is "down" for ids in a range: proves the schedule is open loop (ids keep being
    /// scheduled while operations fail) and that latency counts from the scheduled time.
    struct Flaky {
        down: std::ops::Range<u64>,
        service_time: Duration,
    }

    impl LoadClient for Flaky {
        fn write(&mut self, id: u64, _deadline: Duration) -> BoxFuture<'_, Attempt> {
            Box::pin(async move {
                tokio::time::sleep(self.service_time).await;
                if self.down.contains(&id) {
                    Attempt::failed_unsent("down")
                } else {
                    Attempt {
                        sent: Some(Instant::now()),
                        outcome: Outcome::Ok,
                        error: None,
                    }
                }
            })
        }
        fn read(&mut self, _deadline: Duration) -> BoxFuture<'_, Attempt> {
            Box::pin(async move {
                Attempt {
                    sent: Some(Instant::now()),
                    outcome: Outcome::Ok,
                    error: None,
                }
            })
        }
    }

    #[tokio::test]
    async fn open_loop_schedule_keeps_rate_and_records_every_attempt() {
        let clock = Clock::start();
        let events = EventLog::new(clock);
        let ledger = Ledger::default();
        let profile = LoadProfile {
            write_rate: 200,
            read_rate: 0,
            connections: 1,
            ..LoadProfile::default()
        };
        // One slow connection (10 ms per op) cannot keep up with 200/s: latency must grow with the queue.
        let client = Flaky {
            down: 5..10,
            service_time: Duration::from_millis(10),
        };
        let load = start(&profile, vec![Box::new(client)], ledger.clone(), events, 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        load.stop(Duration::from_secs(5)).await;
        let entries = ledger.entries();
        let ids: Vec<u64> = entries.iter().map(|e| e.id).collect();
        assert!(
            entries.len() >= 50,
            "scheduled {} ops in 300 ms at 200/s",
            entries.len()
        );
        assert_eq!(ids, (1..=entries.len() as u64).collect::<Vec<_>>());
        assert_eq!(
            entries
                .iter()
                .filter(|e| e.outcome == Outcome::Failed)
                .count(),
            5
        );
        let last = entries.last().unwrap();
        assert!(
            last.latency() > Duration::from_millis(100),
            "queueing delay must show in latency, got {:?}",
            last.latency()
        );
    }
}
