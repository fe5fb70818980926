//! Open-loop load: operations are scheduled at a fixed rate whatever the servers do, and latency is measured from
//! the scheduled send time (no coordinated omission).
//!
//! Every operation is dispatched at its scheduled instant by a pacer thread (see `pacer`) as a task of its own, so
//! one operation's stall never delays another's send: a search never waits behind a stalled upsert in a harness
//! queue. The number of operations in flight is bounded per kind of operation (`load.max_in_flight` writes, as many
//! reads, as many searches: stalled upserts can never take the slots searches need); an operation that finds every
//! slot of its kind taken waits for one, and that wait is recorded separately (`LedgerEntry::slot`) from the time
//! the server took (`done - sent`). Each operation's deadline counts from its scheduled time: one that cannot be
//! sent before it is recorded as failed (not sent) when the deadline passes, and one still waiting or in flight
//! when the load stops is recorded too, never dropped.

pub mod http;
mod pacer;
pub mod pool;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify, Semaphore};

use crate::clock::Clock;
use crate::events::EventLog;
use crate::ledger::{Ledger, LedgerEntry, OpKind, Outcome, Source};
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

/// Why an operation whose connection came only at (or after) its deadline was not sent; clients' checkouts
/// give the connection back and report this.
pub const CONNECTION_AT_DEADLINE: &str = "not sent: a connection came only at the deadline";

/// A component's load client, shared by every operation in flight. Implementations keep a pool of connections
/// (see `pool::Idle`), give each operation one of its own, re-resolve the primary after errors, and stop at
/// `deadline`, an absolute instant counted from the operation's scheduled time (client side; never a server-side
/// statement timeout: HA-FACTS pitfall 4). An operation that could not be sent before `deadline` is
/// `Attempt::failed_unsent`.
pub trait LoadClient: Send + Sync {
    fn write(&self, id: u64, deadline: Instant) -> BoxFuture<'_, Attempt>;
    fn read(&self, deadline: Instant) -> BoxFuture<'_, Attempt>;
    /// A search (vector query); components without one never get search jobs (the scenario parser refuses
    /// `search_rate` for them), so the default only guards against a wiring mistake.
    fn search(&self, _deadline: Instant) -> BoxFuture<'_, Attempt> {
        Box::pin(async { Attempt::failed_unsent("this component has no search operation") })
    }
    /// Opens up to `connections` connections ahead of the load, so that the baseline measures steady state rather
    /// than connection setup. Best effort: an operation opens what it lacks.
    fn warm_up(&self, _connections: usize, _deadline: Instant) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The error of an operation still in flight when the load stopped and its drain time had passed.
pub const STOPPED_IN_FLIGHT: &str = "in flight when the load stopped";
/// The error of an operation still waiting for a slot when the load stopped and its drain time had passed.
pub const STOPPED_UNSENT: &str = "not sent: the load stopped first";

/// Whether the operation was cut off by the load's own stop rather than ended by the servers or its deadline.
pub fn cut_by_stop(e: &LedgerEntry) -> bool {
    matches!(e.error.as_deref(), Some(STOPPED_IN_FLIGHT | STOPPED_UNSENT))
}

/// One scheduled operation.
#[derive(Clone, Copy, Debug)]
struct Job {
    id: u64,
    op: OpKind,
    scheduled: Instant,
    deadline: Instant,
}

/// What every operation task shares.
struct Shared {
    client: Arc<dyn LoadClient>,
    source: Source,
    ledger: Ledger,
    clock: Clock,
    trial: u32,
    /// In-flight slots per kind of operation, indexed by `slot_index`.
    slots: [Semaphore; 3],
    max_in_flight: usize,
    outstanding: AtomicUsize,
    all_done: Notify,
    cancel: watch::Receiver<bool>,
}

/// A running load: stop it to drain what is in flight.
pub struct RunningLoad {
    pacer: Option<pacer::Pacer>,
    cancel: watch::Sender<bool>,
    shared: Arc<Shared>,
    pub next_write_id: Arc<AtomicU64>,
}

impl RunningLoad {
    /// Stops scheduling, then waits up to `drain` for the operations still waiting or in flight (each ends by its
    /// own deadline). Whatever is left after `drain` is cancelled and recorded as such: nothing scheduled goes
    /// missing from the ledger.
    pub async fn stop(mut self, drain: Duration) {
        if let Some(p) = self.pacer.take() {
            let _ = tokio::task::spawn_blocking(move || p.stop()).await;
        }
        let until = Instant::now() + drain;
        loop {
            let notified = self.shared.all_done.notified();
            if self.shared.outstanding.load(Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::timeout_at(until.into(), notified)
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = self.cancel.send(true);
        // Cancelled tasks record themselves as they drop; give them a moment to be polled.
        let until = Instant::now() + Duration::from_secs(2);
        while self.shared.outstanding.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Starts the schedule. Write ids are drawn from `write_ids`, one counter for the whole run, so one ledger spans
/// every trial and every source of a run with each id written once.
pub fn start(
    profile: &LoadProfile,
    client: Arc<dyn LoadClient>,
    source: Source,
    ledger: Ledger,
    events: EventLog,
    write_ids: Arc<AtomicU64>,
) -> RunningLoad {
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let max_in_flight = profile.max_in_flight.max(1) as usize;
    let shared = Arc::new(Shared {
        client,
        source,
        ledger,
        clock: events.clock(),
        trial: events.trial(),
        slots: [(); 3].map(|_| Semaphore::new(max_in_flight)),
        max_in_flight,
        outstanding: AtomicUsize::new(0),
        all_done: Notify::new(),
        cancel: cancel_rx,
    });
    let next_write_id = write_ids;
    let streams: Vec<(OpKind, u32)> = [
        (OpKind::Write, profile.write_rate),
        (OpKind::Read, profile.read_rate),
        (OpKind::Search, profile.search_rate),
    ]
    .into_iter()
    .filter(|(_, rate)| *rate > 0)
    .collect();
    let handle = tokio::runtime::Handle::current();
    let deadline = profile.deadline;
    let ids = next_write_id.clone();
    let dispatch_shared = shared.clone();
    let mut read_id = 0u64;
    let pacer = pacer::Pacer::start(streams, profile.arrivals, move |op, scheduled| {
        let id = match op {
            OpKind::Write => ids.fetch_add(1, Ordering::SeqCst),
            OpKind::Read | OpKind::Search => {
                read_id += 1;
                read_id
            }
        };
        let job = Job {
            id,
            op,
            scheduled,
            deadline: scheduled + deadline,
        };
        let guard = OpGuard::new(dispatch_shared.clone(), job);
        handle.spawn(run_op(guard));
    });
    RunningLoad {
        pacer: Some(pacer),
        cancel: cancel_tx,
        shared,
        next_write_id,
    }
}

/// Waits for a slot (until the deadline), runs the operation, records it. Cancelled (dropped) by `stop` only when
/// the drain time has passed; the guard records it then.
async fn run_op(mut guard: OpGuard) {
    let shared = guard.shared.clone();
    let job = guard.job;
    let mut cancel = shared.cancel.clone();
    let slots = &shared.slots[slot_index(job.op)];
    let work = async {
        let permit = match slots.try_acquire() {
            Ok(p) => p,
            Err(_) => match tokio::time::timeout_at(job.deadline.into(), slots.acquire()).await {
                Ok(Ok(p)) => p,
                Ok(Err(_)) | Err(_) => {
                    let error = format!(
                        "not sent: all {} in-flight {} slots stayed taken until the deadline",
                        shared.max_in_flight,
                        op_name(job.op)
                    );
                    guard.finish(Attempt::failed_unsent(error));
                    return;
                }
            },
        };
        // A slot freed by an operation the stop cancelled may reach a waiting one before that one sees the stop
        // (another worker thread): it must not start, or it would be counted as in flight (seen in the load tests:
        // 3 "in flight" with 2 slots).
        if *shared.cancel.borrow() {
            guard.finish(Attempt::failed_unsent(STOPPED_UNSENT));
            return;
        }
        guard.slot = Some(Instant::now());
        if Instant::now() >= job.deadline {
            guard.finish(Attempt::failed_unsent(
                "not sent: its slot came free only at its deadline",
            ));
            return;
        }
        let client = shared.client.as_ref();
        let attempt = match job.op {
            OpKind::Write => client.write(job.id, job.deadline).await,
            OpKind::Read => client.read(job.deadline).await,
            OpKind::Search => client.search(job.deadline).await,
        };
        drop(permit);
        guard.finish(attempt);
    };
    // Cancellation is looked at first: a cancelled operation releases its slot as it drops, and the next one
    // waiting must not take it and start.
    tokio::select! {
        biased;
        _ = cancel.wait_for(|c| *c) => {}
        _ = work => {}
    }
}

fn slot_index(op: OpKind) -> usize {
    match op {
        OpKind::Write => 0,
        OpKind::Read => 1,
        OpKind::Search => 2,
    }
}

fn op_name(op: OpKind) -> &'static str {
    match op {
        OpKind::Write => "write",
        OpKind::Read => "read",
        OpKind::Search => "search",
    }
}

/// Records its operation exactly once: when it finishes, or when it is dropped unfinished (load stopped).
struct OpGuard {
    shared: Arc<Shared>,
    job: Job,
    slot: Option<Instant>,
    recorded: bool,
}

impl OpGuard {
    fn new(shared: Arc<Shared>, job: Job) -> Self {
        shared.outstanding.fetch_add(1, Ordering::SeqCst);
        OpGuard {
            shared,
            job,
            slot: None,
            recorded: false,
        }
    }

    /// Records the attempt. An answer that arrived after the deadline is not an acknowledgement: a client with
    /// that deadline had given up (the runtime's timers fire a little late, and a reply can win that race).
    fn finish(&mut self, attempt: Attempt) {
        if attempt.outcome == Outcome::Ok && Instant::now() > self.job.deadline {
            let error = Some("answered after the client deadline".to_string());
            self.record(attempt.sent, Outcome::Unknown, error);
            return;
        }
        self.record(attempt.sent, attempt.outcome, attempt.error);
    }

    fn record(&mut self, sent: Option<Instant>, outcome: Outcome, error: Option<String>) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        let clock = self.shared.clock;
        self.shared.ledger.record(LedgerEntry {
            id: self.job.id,
            source: self.shared.source.clone(),
            op: self.job.op,
            trial: self.shared.trial,
            scheduled: clock.stamp_of(self.job.scheduled),
            slot: self.slot.map(|s| clock.stamp_of(s)),
            sent: sent.map(|s| clock.stamp_of(s)),
            done: clock.now(),
            outcome,
            error,
        });
    }
}

impl Drop for OpGuard {
    fn drop(&mut self) {
        if !self.recorded {
            // Unfinished when the load stopped. With a slot the request may have left the client: unknown.
            let (outcome, error) = if self.slot.is_some() {
                (Outcome::Unknown, STOPPED_IN_FLIGHT)
            } else {
                (Outcome::Failed, STOPPED_UNSENT)
            };
            self.record(None, outcome, Some(error.to_string()));
        }
        if self.shared.outstanding.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.all_done.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests;
