use std::sync::atomic::AtomicBool;

use super::*;
use crate::ledger::LedgerEntry;

/// A client with a scripted service time per kind of operation; writes whose id is in `down` fail unsent.
/// Each operation honours its deadline as a real client does (the work stops there, the outcome is unknown).
struct Scripted {
    write_time: Duration,
    read_time: Duration,
    down: std::ops::Range<u64>,
    /// Ignore the deadline and never answer: proves `stop` records what is still in flight.
    hang: AtomicBool,
    /// Ignore the deadline and take the whole service time (a client that holds its slot).
    overrun: bool,
    /// Ignore the deadline and answer ok after the whole service time.
    late_ok: bool,
}

impl Scripted {
    fn new(write_time: Duration, read_time: Duration) -> Self {
        Scripted {
            write_time,
            read_time,
            down: 0..0,
            hang: AtomicBool::new(false),
            overrun: false,
            late_ok: false,
        }
    }

    async fn serve(&self, service: Duration, deadline: Instant) -> Attempt {
        let sent = Instant::now();
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.overrun {
            tokio::time::sleep(service).await;
            return Attempt::sent_at(sent, (Outcome::Unknown, Some("overran".into())));
        }
        if self.late_ok {
            tokio::time::sleep(service).await;
            return Attempt::sent_at(sent, (Outcome::Ok, None));
        }
        match tokio::time::timeout_at(deadline.into(), tokio::time::sleep(service)).await {
            Ok(()) => Attempt::sent_at(sent, (Outcome::Ok, None)),
            Err(_) => Attempt::sent_at(sent, (Outcome::Unknown, Some("deadline".into()))),
        }
    }
}

impl LoadClient for Scripted {
    fn write(&self, id: u64, deadline: Instant) -> BoxFuture<'_, Attempt> {
        Box::pin(async move {
            if self.down.contains(&id) {
                return Attempt::failed_unsent("down");
            }
            self.serve(self.write_time, deadline).await
        })
    }
    fn read(&self, deadline: Instant) -> BoxFuture<'_, Attempt> {
        Box::pin(self.serve(self.read_time, deadline))
    }
}

fn profile(write_rate: u32, read_rate: u32, max_in_flight: u32, deadline_ms: u64) -> LoadProfile {
    LoadProfile {
        write_rate,
        read_rate,
        max_in_flight,
        deadline: Duration::from_millis(deadline_ms),
        ..LoadProfile::default()
    }
}

async fn run_for(
    profile: &LoadProfile,
    client: Scripted,
    run: Duration,
    drain: Duration,
) -> Vec<LedgerEntry> {
    let events = EventLog::new(Clock::start());
    let ledger = Ledger::default();
    let load = start(
        profile,
        Arc::new(client),
        crate::ledger::Source::Component(crate::scenario::ComponentKind::Postgres),
        ledger.clone(),
        events,
        Arc::new(std::sync::atomic::AtomicU64::new(1)),
    );
    tokio::time::sleep(run).await;
    load.stop(drain).await;
    ledger.entries()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn queued(e: &LedgerEntry) -> Duration {
    e.sent
        .map_or(Duration::MAX, |s| s.0.saturating_sub(e.scheduled.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_schedule_keeps_rate_and_records_every_attempt() {
    let mut client = Scripted::new(Duration::from_millis(2), Duration::ZERO);
    client.down = 5..10;
    let entries = run_for(
        &profile(200, 0, 64, 1000),
        client,
        Duration::from_millis(300),
        Duration::from_secs(2),
    )
    .await;
    assert!(
        (55..=65).contains(&entries.len()),
        "200/s for 300 ms scheduled {} ops",
        entries.len()
    );
    let mut ids: Vec<u64> = entries.iter().map(|e| e.id).collect();
    ids.sort();
    assert_eq!(ids, (1..=entries.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.outcome == Outcome::Failed)
            .count(),
        5
    );
    // Scheduled 5 ms apart, whatever the servers do.
    let mut scheduled: Vec<Duration> = entries.iter().map(|e| e.scheduled.0).collect();
    scheduled.sort();
    for pair in scheduled.windows(2) {
        let gap = ms(pair[1] - pair[0]);
        assert!((4.99..=5.01).contains(&gap), "schedule gap {gap} ms");
    }
}

/// The defect this guards against: one queue for every kind of operation, so searches waited behind stalled
/// upserts in the harness and their latency was the queue's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_write_never_delays_a_read() {
    // Every write stalls 400 ms at the "server"; reads take 1 ms. 40 writes are in flight at once, far more than
    // the 4 slots: the writes wait for each other, the reads must not wait for them.
    let client = Scripted::new(Duration::from_millis(400), Duration::from_millis(1));
    let entries = run_for(
        &profile(100, 100, 4, 2000),
        client,
        Duration::from_millis(600),
        Duration::from_secs(3),
    )
    .await;
    let reads: Vec<&LedgerEntry> = entries.iter().filter(|e| e.op == OpKind::Read).collect();
    assert!(reads.len() >= 50, "{} reads", reads.len());
    for r in &reads {
        assert_eq!(r.outcome, Outcome::Ok);
        assert!(
            queued(r) < Duration::from_millis(20),
            "a read waited {} ms before it was sent",
            ms(queued(r))
        );
        assert!(
            r.latency() < Duration::from_millis(30),
            "read latency {} ms is not the read's own",
            ms(r.latency())
        );
    }
    let writes: Vec<&LedgerEntry> = entries.iter().filter(|e| e.op == OpKind::Write).collect();
    assert!(writes
        .iter()
        .all(|w| w.latency() >= Duration::from_millis(400)));
    // The writes queued for their own slots, and that wait is recorded as the harness's, not the server's.
    let waited = writes
        .iter()
        .filter(|w| {
            w.slot
                .is_some_and(|s| s.0 - w.scheduled.0 > Duration::from_millis(100))
        })
        .count();
    assert!(
        waited > writes.len() / 2,
        "{waited} of {} writes waited for a slot",
        writes.len()
    );
}

/// The defect this guards against: a deadline counted from when a connection took the operation off a queue,
/// so operations scheduled during an outage waited, ran after recovery and counted as ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_without_a_slot_by_its_deadline_fails_unsent_at_its_deadline() {
    // One slot, held 500 ms by the first write; deadline 100 ms from the scheduled time.
    let mut client = Scripted::new(Duration::from_millis(500), Duration::ZERO);
    client.overrun = true;
    let entries = run_for(
        &profile(50, 0, 1, 100),
        client,
        Duration::from_millis(350),
        Duration::from_secs(3),
    )
    .await;
    assert!(entries.len() >= 15, "{} entries", entries.len());
    let sent: Vec<&LedgerEntry> = entries.iter().filter(|e| e.sent.is_some()).collect();
    let unsent: Vec<&LedgerEntry> = entries.iter().filter(|e| e.sent.is_none()).collect();
    // Only the first write got the slot before its deadline.
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].outcome, Outcome::Unknown);
    for e in &unsent {
        assert_eq!(e.outcome, Outcome::Failed, "{e:?}");
        assert!(e.slot.is_none());
        let waited = e.latency();
        assert!(
            waited >= Duration::from_millis(100) && waited < Duration::from_millis(150),
            "recorded {} ms after its schedule, not at its deadline",
            ms(waited)
        );
        assert!(e
            .error
            .as_deref()
            .unwrap()
            .contains("in-flight write slots"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_waiting_or_in_flight_when_the_load_stops_are_recorded() {
    let client = Scripted::new(Duration::ZERO, Duration::ZERO);
    client.hang.store(true, Ordering::SeqCst);
    // Two slots, clients that never answer, a 10 s deadline: at stop, 2 are in flight and the rest wait.
    let entries = run_for(
        &profile(100, 0, 2, 10_000),
        client,
        Duration::from_millis(200),
        Duration::from_millis(100),
    )
    .await;
    assert!(entries.len() >= 18, "{} entries", entries.len());
    let in_flight = entries
        .iter()
        .filter(|e| e.outcome == Outcome::Unknown)
        .count();
    assert_eq!(
        in_flight,
        2,
        "{:#?}",
        entries
            .iter()
            .filter(|e| e.outcome == Outcome::Unknown)
            .collect::<Vec<_>>()
    );
    assert!(entries
        .iter()
        .filter(|e| e.outcome == Outcome::Failed)
        .all(|e| e.error.as_deref() == Some("not sent: the load stopped first")));
    let mut ids: Vec<u64> = entries.iter().map(|e| e.id).collect();
    ids.sort();
    assert_eq!(ids, (1..=entries.len() as u64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slot_wait_is_recorded_apart_from_the_server_time() {
    // One slot, 30 ms per write, 20 writes/s: the second write of a burst waits for the slot.
    let client = Scripted::new(Duration::from_millis(30), Duration::ZERO);
    let entries = run_for(
        &profile(40, 0, 1, 1000),
        client,
        Duration::from_millis(500),
        Duration::from_secs(2),
    )
    .await;
    for e in &entries {
        let slot = e.slot.expect("every write got the slot in time").0;
        let sent = e.sent.unwrap().0;
        assert!(slot >= e.scheduled.0 && sent >= slot);
        let server = e.done.0 - sent;
        assert!(server >= Duration::from_millis(30), "{}", ms(server));
        assert!(server < Duration::from_millis(45), "{}", ms(server));
    }
}

/// Found in review: a reply that won the race against the deadline's timer (which fires late) was counted ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_after_the_deadline_is_not_an_acknowledgement() {
    let mut client = Scripted::new(Duration::from_millis(80), Duration::ZERO);
    client.late_ok = true;
    let entries = run_for(
        &profile(50, 0, 64, 50),
        client,
        Duration::from_millis(200),
        Duration::from_secs(2),
    )
    .await;
    assert!(entries.len() >= 8);
    for e in &entries {
        assert_eq!(e.outcome, Outcome::Unknown, "{e:?}");
        assert_eq!(
            e.error.as_deref(),
            Some("answered after the client deadline")
        );
    }
}

#[test]
fn poisson_arrivals_keep_the_mean_rate_with_exponential_gaps() {
    let offsets = super::pacer::poisson_offsets(1000, 7, 20_001);
    let total = offsets.last().unwrap().as_secs_f64();
    // 20,000 gaps of mean 1 ms: 20 s within 2 %.
    assert!((19.6..20.4).contains(&total), "{total}");
    let gaps: Vec<f64> = offsets
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
        .collect();
    // Exponential: about 63.2 % of the gaps are shorter than the mean, and some are much longer.
    let short = gaps.iter().filter(|g| **g < 1.0).count() as f64 / gaps.len() as f64;
    assert!((0.61..0.65).contains(&short), "{short}");
    assert!(gaps.iter().any(|g| *g > 5.0));
    // Seeded: the same schedule every run.
    assert_eq!(offsets, super::pacer::poisson_offsets(1000, 7, 20_001));
}
