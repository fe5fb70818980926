//! Turns one trial's events and ledger into measurements (Jepsen set-checker style). A value that could not be
//! measured is `None`, never a stand-in number: a threshold on it must fail, not pass by default.

mod replication_lag;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::clock::Stamp;
use crate::events::{Event, EventKind};
use crate::ledger::{LedgerEntry, OpKind, Outcome, Source};
use crate::scenario::{ComponentKind, Metric, OpClass, Quantile, Window};

/// How many lost/unexpected ids a report lists; the counts are always complete.
pub const SAMPLE_LIMIT: usize = 20;

/// Everything one trial's analysis needs, cut out by the engine so analysis never sees the live run.
pub struct TrialInput<'a> {
    /// The component whose failover is measured; probe events of other components are ignored.
    pub component: ComponentKind,
    pub trial: u32,
    /// This trial's events.
    pub events: &'a [Event],
    /// This trial's ledger entries, writes and reads. Taken as given: no filtering by `trial`, so a mislabelled
    /// entry cannot silently vanish from the loss count.
    pub ledger: &'a [LedgerEntry],
    /// Write ids found on the server at read-back (the whole run's ids).
    pub present: &'a BTreeSet<u64>,
    /// Every write id the run attempted, in any trial: a present id outside it is unexpected.
    pub run_attempted: &'a BTreeSet<u64>,
    /// Baseline window `[start, end)`.
    pub baseline: (Stamp, Stamp),
    /// First `FaultApplied` of the trial; None if the fault was never applied.
    pub fault_at: Option<Stamp>,
    /// End of the fault window: heal complete, or load stop if the heal never completed.
    pub window_end: Stamp,
    /// When the trial's load stopped (after the heal and the settle time): downtime is measured up to here.
    pub trial_end: Stamp,
    /// RTO = fault to the first of this many consecutive successful writes.
    pub rto_consecutive: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrialMeasurements {
    pub trial: u32,
    /// Every metric of `Metric::all()` is a key; `None` = not observed.
    pub values: BTreeMap<Metric, Option<f64>>,
    pub writes: WriteClassification,
    pub latency_buckets: Vec<LatencyBucket>,
    /// The same ops in 100 ms slices with failed and unknown apart (the report's timeline chart).
    pub op_buckets: Vec<OpBucket>,
    /// Why a measurement is missing where the value alone cannot say (e.g. which pod never came back).
    pub notes: Vec<String>,
    /// Metrics whose value is only a lower bound (an outage still open when the trial ended): an upper limit on
    /// them cannot pass.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub lower_bounds: BTreeSet<Metric>,
    /// A drill's integrity checks of what its restore left (empty outside drills).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub integrity: Vec<crate::drill::integrity::IntegrityCheck>,
    /// A scenario that measures several components: each one's own figures, from its own operations and events;
    /// `values` are then the system's (see `system`). Empty for one component.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<ComponentKind, TrialMeasurements>,
    /// Each HTTP probe's figures (`analysis::probe`), by the probe's name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub probes: BTreeMap<String, TrialMeasurements>,
}

impl TrialMeasurements {
    /// The value of a metric; `None` when it was not observed.
    pub fn value(&self, metric: Metric) -> Option<f64> {
        self.values.get(&metric).copied().flatten()
    }

    /// One component's or HTTP probe's figure (`Some(source)`), or the trial's own. A scenario of one component
    /// has no separate figures for it: its component's are the trial's.
    pub fn value_of(&self, source: Option<&Source>, metric: Metric) -> Option<f64> {
        self.of(source).and_then(|m| m.value(metric))
    }

    /// Whether that figure is only a lower bound (an outage still open when the trial ended).
    pub fn is_lower_bound(&self, source: Option<&Source>, metric: Metric) -> bool {
        self.of(source)
            .is_some_and(|m| m.lower_bounds.contains(&metric))
    }

    /// The figures kept beside the trial's own: each component's (several components) and each HTTP probe's.
    pub fn parts(&self) -> impl Iterator<Item = (Source, &TrialMeasurements)> {
        let components = self
            .components
            .iter()
            .map(|(c, m)| (Source::Component(*c), m));
        let probes = self
            .probes
            .iter()
            .map(|(n, m)| (Source::Http(n.as_str().into()), m));
        components.chain(probes)
    }

    fn of(&self, source: Option<&Source>) -> Option<&TrialMeasurements> {
        match source {
            None => Some(self),
            // A run of one component keeps no separate figures: its own are the trial's. With several, a
            // component without figures has none (never the system's in its place).
            Some(Source::Component(_)) if self.components.is_empty() => Some(self),
            Some(Source::Component(c)) => self.components.get(c),
            Some(Source::Http(name)) => self.probes.get(&**name),
        }
    }
}

/// The trial's writes sorted by what the client was told against what the server holds afterwards.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WriteClassification {
    pub attempted: u64,
    /// Outcome ok.
    pub acked: u64,
    /// Outcome failed.
    pub failed: u64,
    /// Outcome unknown.
    pub unknown: u64,
    /// Acked but absent after recovery.
    pub lost: u64,
    /// Unknown and present.
    pub recovered: u64,
    /// Reported failed yet present: the client was told something untrue. Kept visible, not a metric.
    pub failed_but_present: u64,
    /// Present ids that no write of the whole run attempted.
    pub unexpected: u64,
    /// The first lost writes by ack time, at most `SAMPLE_LIMIT`.
    pub lost_sample: Vec<LostWrite>,
    /// The lowest unexpected ids, at most `SAMPLE_LIMIT`.
    pub unexpected_sample: Vec<u64>,
}

impl WriteClassification {
    /// Another component's writes added in: the counts summed, the samples merged (first lost by ack time, lowest
    /// unexpected ids), each still at most `SAMPLE_LIMIT`.
    pub fn add(&mut self, o: &WriteClassification) {
        self.attempted += o.attempted;
        self.acked += o.acked;
        self.failed += o.failed;
        self.unknown += o.unknown;
        self.lost += o.lost;
        self.recovered += o.recovered;
        self.failed_but_present += o.failed_but_present;
        self.unexpected += o.unexpected;
        self.lost_sample.extend(o.lost_sample.iter().cloned());
        self.lost_sample.sort_by_key(|w| (w.acked_at, w.id));
        self.lost_sample.truncate(SAMPLE_LIMIT);
        self.unexpected_sample.extend(&o.unexpected_sample);
        self.unexpected_sample.sort_unstable();
        self.unexpected_sample.truncate(SAMPLE_LIMIT);
    }
}

/// A write the client saw acknowledged that the server no longer has.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LostWrite {
    pub id: u64,
    /// Ack instant on the run clock, in seconds from the run's anchor.
    #[serde(rename = "acked_at_run_s")]
    pub acked_at: Stamp,
    /// Ack instant relative to the trial's fault; None if the fault was never applied.
    pub since_fault_s: Option<f64>,
}

/// One second of the trial's load, for the latency chart.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyBucket {
    /// Bucket start in whole seconds from the fault (or from the baseline start when no fault was applied);
    /// negative before it. Ops are placed by their scheduled time.
    pub t_s: i64,
    pub ops: u64,
    /// Failed plus unknown.
    pub errors: u64,
    /// Quantiles of the ok ops; None when the second had none.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Operations in one 100 ms slice of a trial, for the report's timeline chart.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpBucket {
    /// Slice start in seconds from the fault (or the baseline start), negative before it; by scheduled time.
    pub t_s: f64,
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
    /// Quantiles of the ok ops' latency; None when the slice had none.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The system's figures of a trial that measured several components: `analyze` over every component's operations
/// (write ids are unique across the run, so the components' read-backs join into `input.present`), without the
/// figures that belong to one component (`Metric::is_per_component`), with each component's restore figures and
/// checks. `components` are each component's own analysis, kept beside the system's.
pub fn system(
    input: &TrialInput,
    components: BTreeMap<ComponentKind, TrialMeasurements>,
) -> TrialMeasurements {
    let mut m = analyze(input);
    for (metric, v) in m.values.iter_mut() {
        if metric.is_per_component() {
            *v = None;
        }
    }
    m.lower_bounds.retain(|metric| !metric.is_per_component());
    // Its notes are about per-component figures (an outage still open); each component's say it for itself.
    m.notes.clear();
    for (c, cm) in &components {
        for metric in [
            Metric::PgRestoreS,
            Metric::PitrS,
            Metric::RedisRestoreS,
            Metric::QdrantRestoreS,
            Metric::RecoverableWindowS,
        ] {
            if m.value(metric).is_none() {
                m.values.insert(metric, cm.value(metric));
            }
        }
        m.integrity.extend(cm.integrity.iter().cloned());
        m.notes.extend(cm.notes.iter().map(|n| format!("{c}: {n}")));
    }
    // The counts are the sums of the components' own, which a drill's restore judgement may have refined (a
    // write the restore had to discard is not lost): the system never disagrees with its parts.
    for metric in [
        Metric::AckedWrites,
        Metric::FailedWrites,
        Metric::UnknownWrites,
        Metric::LostAckedWrites,
        Metric::RecoveredWrites,
        Metric::UnexpectedWrites,
        Metric::FailedQueries,
        Metric::DiscardedWrites,
        Metric::IntegrityFailures,
    ] {
        let values: Vec<Option<f64>> = components.values().map(|cm| cm.value(metric)).collect();
        // A write count over a component that wrote nothing is not observed, and neither is the system's: "0
        // lost" must not pass on the other components alone. The other counts add what was observed.
        let writes_count = !matches!(
            metric,
            Metric::FailedQueries | Metric::DiscardedWrites | Metric::IntegrityFailures
        );
        let sum = if writes_count && values.iter().any(Option::is_none) {
            None
        } else {
            let seen: Vec<f64> = values.into_iter().flatten().collect();
            (!seen.is_empty()).then(|| seen.iter().sum())
        };
        m.values.insert(metric, sum);
    }
    // The write classification too: the report's write table agrees with the counts above.
    m.writes = WriteClassification::default();
    for cm in components.values() {
        m.writes.add(&cm.writes);
    }
    m.components = components;
    m
}

/// An HTTP probe's figures, over its own requests (`input.ledger` holds only them): availability, error rate,
/// failed requests, latency and throughput as for any load; and its outage from its requests, since they are all
/// it has: `rto_s` is the fault to the first of `rto_consecutive` successful requests in a row after the first
/// request at or after the fault that failed (a service often fails a moment after the stack does: the answers it
/// gave before noticing are not its recovery), `downtime_s` its longest run without a successful request. A probe has no failover (detection, promotion) and no writes of its
/// own: those figures stay unobserved.
pub fn probe(input: &TrialInput) -> TrialMeasurements {
    let mut m = analyze(input);
    let requests: Vec<&LedgerEntry> = input.ledger.iter().collect();
    for (metric, v) in m.values.iter_mut() {
        let own = metric.is_load_figure()
            || matches!(
                metric,
                Metric::AvailabilityPct | Metric::ErrorRate | Metric::FailedQueries
            );
        if !own {
            *v = None;
        }
    }
    m.lower_bounds.clear();
    m.notes.clear();
    let rto = input.fault_at.and_then(|f| {
        let first_failure = requests
            .iter()
            .filter(|e| e.scheduled >= f && e.outcome != Outcome::Ok)
            .map(|e| e.scheduled)
            .min()
            .unwrap_or(f);
        rto_s_from(&requests, f, first_failure, input.rto_consecutive)
    });
    m.values.insert(Metric::RtoS, rto);
    let downtime = downtime_s(&requests, input.baseline.0, input.trial_end);
    if let Some(d) = downtime.as_ref().filter(|d| d.open_at_end) {
        m.lower_bounds.insert(Metric::DowntimeS);
        m.notes.push(format!(
            "downtime_s is at least {:.3} s: requests were still failing when the trial ended",
            d.longest_s
        ));
    }
    m.values
        .insert(Metric::DowntimeS, downtime.map(|d| d.longest_s));
    m
}

/// Width of an `OpBucket`.
pub const OP_BUCKET_MS: i64 = 100;

pub fn analyze(input: &TrialInput) -> TrialMeasurements {
    let writes: Vec<&LedgerEntry> = input
        .ledger
        .iter()
        .filter(|e| e.op == OpKind::Write)
        .collect();
    let writes_classified =
        classify_writes(&writes, input.present, input.run_attempted, input.fault_at);
    let wrote = !writes.is_empty();

    let mut values: BTreeMap<Metric, Option<f64>> =
        Metric::all().iter().map(|m| (*m, None)).collect();
    let mut set = |m: Metric, v: Option<f64>| {
        values.insert(m, v);
    };

    // A count over nothing is not observed: "0 failed" of 0 attempted would pass a threshold vacuously.
    set(
        Metric::AckedWrites,
        wrote.then_some(writes_classified.acked as f64),
    );
    set(
        Metric::FailedWrites,
        wrote.then_some(writes_classified.failed as f64),
    );
    set(
        Metric::UnknownWrites,
        wrote.then_some(writes_classified.unknown as f64),
    );
    // Without a single write attempted, durability was never exercised: "0 lost" would be a vacuous pass.
    set(
        Metric::LostAckedWrites,
        wrote.then_some(writes_classified.lost as f64),
    );
    set(
        Metric::RecoveredWrites,
        wrote.then_some(writes_classified.recovered as f64),
    );
    set(
        Metric::UnexpectedWrites,
        wrote.then_some(writes_classified.unexpected as f64),
    );
    set(
        Metric::RpoS,
        if wrote {
            Some(rpo_s(&writes, input.present, input.baseline.0))
        } else {
            None
        },
    );

    set(
        Metric::DetectionS,
        first_event_after(
            input,
            |k| matches!(k, EventKind::FailureDetected { component, .. } if *component == input.component),
        ),
    );
    set(
        Metric::PromotionS,
        first_event_after(
            input,
            |k| matches!(k, EventKind::NewPrimaryServing { component, .. } if *component == input.component),
        ),
    );
    // The routing layer carries PostgreSQL's clients only.
    set(
        Metric::RouterSwitchS,
        (input.component == ComponentKind::Postgres)
            .then(|| {
                first_event_after(input, |k| {
                    matches!(k, EventKind::RouterRouted { switched: true, .. })
                })
            })
            .flatten(),
    );
    set(
        Metric::RtoS,
        input
            .fault_at
            .and_then(|f| rto_s(&writes, f, input.rto_consecutive)),
    );
    let mut lower_bounds = BTreeSet::new();
    let mut notes = Vec::new();
    let downtime = downtime_s(&writes, input.baseline.0, input.trial_end);
    if let Some(d) = &downtime {
        if d.open_at_end {
            lower_bounds.insert(Metric::DowntimeS);
            notes.push(format!(
                "downtime_s is at least {:.3} s: writes were still failing when the trial ended",
                d.longest_s
            ));
        }
    }
    set(Metric::DowntimeS, downtime.map(|d| d.longest_s));
    set(
        Metric::ErrorRate,
        input
            .fault_at
            .and_then(|f| error_rate(input.ledger, f, input.window_end)),
    );

    set(
        Metric::RecoveredS,
        first_event_after(input, |k| {
            matches!(k, EventKind::HealComplete { healthy: true, .. })
        }),
    );
    let (pods_ready, pods_note) = pods_ready_s(input);
    set(Metric::PodsReadyS, pods_ready);
    let queries: Vec<&LedgerEntry> = input
        .ledger
        .iter()
        .filter(|e| matches!(e.op, OpKind::Read | OpKind::Search))
        .collect();
    set(
        Metric::FailedQueries,
        (!queries.is_empty())
            .then(|| queries.iter().filter(|e| e.outcome != Outcome::Ok).count() as f64),
    );
    if !input.ledger.is_empty() {
        let ok = input
            .ledger
            .iter()
            .filter(|e| e.outcome == Outcome::Ok)
            .count();
        set(
            Metric::AvailabilityPct,
            Some(ok as f64 * 100.0 / input.ledger.len() as f64),
        );
    }

    // Paired windows: the same load measured right before the fault and from the fault until healed.
    let baseline = (input.baseline.0, input.baseline.1);
    let fault = input.fault_at.map(|f| (f, input.window_end));
    for op in OpClass::ALL {
        let of_class = |e: &&LedgerEntry| match op {
            OpClass::All => true,
            OpClass::Write => e.op == OpKind::Write,
            OpClass::Read => e.op == OpKind::Read,
            OpClass::Search => e.op == OpKind::Search,
        };
        let window_stats = |w: (Stamp, Stamp)| {
            let in_window: Vec<&LedgerEntry> = input
                .ledger
                .iter()
                .filter(of_class)
                .filter(|e| e.scheduled >= w.0 && e.scheduled < w.1)
                .collect();
            let secs = w.1.secs_since(w.0);
            let ok = in_window
                .iter()
                .filter(|e| e.outcome == Outcome::Ok)
                .count();
            let throughput = (secs > 0.0 && !in_window.is_empty()).then(|| ok as f64 / secs);
            let slot_wait = p99_ms(
                in_window
                    .iter()
                    .map(|e| e.slot.unwrap_or(e.done).0.saturating_sub(e.scheduled.0)),
            );
            let server = p99_ms(
                in_window
                    .iter()
                    .filter(|e| e.outcome == Outcome::Ok)
                    .filter_map(|e| e.sent.map(|s| e.done.0.saturating_sub(s.0))),
            );
            (
                latency_quantiles(in_window.iter().copied()),
                throughput,
                slot_wait,
                server,
            )
        };
        let (base_q, base_tp, base_slot, base_server) = window_stats(baseline);
        let (fault_q, fault_tp, fault_slot, fault_server) =
            fault.map(window_stats).unwrap_or((None, None, None, None));
        set(Metric::SlotWaitP99(op, Window::Baseline), base_slot);
        set(Metric::SlotWaitP99(op, Window::Fault), fault_slot);
        set(Metric::ServerP99(op, Window::Baseline), base_server);
        set(Metric::ServerP99(op, Window::Fault), fault_server);
        for (k, q) in Quantile::ALL.into_iter().enumerate() {
            let b = base_q.map(|v| v[k]);
            let f = fault_q.map(|v| v[k]);
            set(Metric::Latency(op, q, Window::Baseline), b);
            set(Metric::Latency(op, q, Window::Fault), f);
            set(
                Metric::LatencyDegradation(op, q),
                degradation_pct(b, f, Direction::HigherIsWorse),
            );
            set(Metric::LatencyAdded(op, q), b.zip(f).map(|(b, f)| f - b));
        }
        set(Metric::Throughput(op, Window::Baseline), base_tp);
        set(Metric::Throughput(op, Window::Fault), fault_tp);
        set(
            Metric::ThroughputDegradation(op),
            degradation_pct(base_tp, fault_tp, Direction::LowerIsWorse),
        );
    }

    for (w, range, label) in [
        (Window::Baseline, Some(baseline), "baseline"),
        (Window::Fault, fault, "fault"),
    ] {
        let Some(range) = range else { continue };
        let lag = replication_lag::in_window(input.events, input.component, range, label);
        set(Metric::ReplicationLagP50(w), lag.p50_ms);
        set(Metric::ReplicationLagMax(w), lag.max_ms);
        if lag.lower_bound {
            lower_bounds.insert(Metric::ReplicationLagP50(w));
            lower_bounds.insert(Metric::ReplicationLagMax(w));
        }
        notes.extend(lag.note);
    }

    TrialMeasurements {
        trial: input.trial,
        values,
        writes: writes_classified,
        latency_buckets: latency_buckets(input.ledger, input.fault_at.unwrap_or(input.baseline.0)),
        op_buckets: op_buckets(input.ledger, input.fault_at.unwrap_or(input.baseline.0)),
        notes: notes.into_iter().chain(pods_note).collect(),
        lower_bounds,
        integrity: Vec::new(),
        components: BTreeMap::new(),
        probes: BTreeMap::new(),
    }
}

/// Present ids that no write of the whole run attempted.
pub fn unexpected_ids(all_ledger: &[LedgerEntry], present: &BTreeSet<u64>) -> Vec<u64> {
    let attempted: BTreeSet<u64> = all_ledger
        .iter()
        .filter(|e| e.op == OpKind::Write)
        .map(|e| e.id)
        .collect();
    present.difference(&attempted).copied().collect()
}

fn classify_writes(
    writes: &[&LedgerEntry],
    present: &BTreeSet<u64>,
    run_attempted: &BTreeSet<u64>,
    fault_at: Option<Stamp>,
) -> WriteClassification {
    let mut c = WriteClassification {
        attempted: writes.len() as u64,
        ..Default::default()
    };
    let mut lost: Vec<&LedgerEntry> = Vec::new();
    for w in writes {
        let is_present = present.contains(&w.id);
        match (w.outcome, is_present) {
            (Outcome::Ok, true) => c.acked += 1,
            (Outcome::Ok, false) => {
                c.acked += 1;
                c.lost += 1;
                lost.push(w);
            }
            (Outcome::Failed, p) => {
                c.failed += 1;
                c.failed_but_present += u64::from(p);
            }
            (Outcome::Unknown, p) => {
                c.unknown += 1;
                c.recovered += u64::from(p);
            }
        }
    }
    lost.sort_by_key(|w| (w.done, w.id));
    c.lost_sample = lost
        .iter()
        .take(SAMPLE_LIMIT)
        .map(|w| LostWrite {
            id: w.id,
            acked_at: w.done,
            since_fault_s: fault_at.map(|f| w.done.secs_since(f)),
        })
        .collect();

    // Over the whole run: an id no write of any trial attempted, wherever it lies (below the first trial's ids,
    // above the last one's, or between trials).
    let unexpected: Vec<u64> = present.difference(run_attempted).copied().collect();
    c.unexpected = unexpected.len() as u64;
    c.unexpected_sample = unexpected.into_iter().take(SAMPLE_LIMIT).collect();
    c
}

/// Max ack of the lost writes minus the last ok-and-present ack before the first lost one (baseline start if none).
fn rpo_s(writes: &[&LedgerEntry], present: &BTreeSet<u64>, baseline_start: Stamp) -> f64 {
    let lost_acks = writes
        .iter()
        .filter(|w| w.outcome == Outcome::Ok && !present.contains(&w.id))
        .map(|w| w.done);
    let (Some(first_lost), Some(last_lost)) = (lost_acks.clone().min(), lost_acks.max()) else {
        return 0.0;
    };
    let last_good = writes
        .iter()
        .filter(|w| w.outcome == Outcome::Ok && present.contains(&w.id) && w.done < first_lost)
        .map(|w| w.done)
        .max()
        .unwrap_or(baseline_start);
    last_lost.secs_since(last_good)
}

fn first_event_after(input: &TrialInput, is_sign: impl Fn(&EventKind) -> bool) -> Option<f64> {
    let fault_at = input.fault_at?;
    input
        .events
        .iter()
        .filter(|e| e.at >= fault_at && is_sign(&e.kind))
        .map(|e| e.at)
        .min()
        .map(|at| at.secs_since(fault_at))
}

/// Fault to the moment every pod that went not Ready (or was deleted) at or after the fault is Ready again, from
/// the readiness changes the target observed up to the window end. None without a fault or without any pod going
/// not Ready (targets that report no readiness never do); None with a note naming the pods when some were still
/// not Ready at the window end, since a figure for the others would hide them.
fn pods_ready_s(input: &TrialInput) -> (Option<f64>, Option<String>) {
    let Some(fault_at) = input.fault_at else {
        return (None, None);
    };
    let mut changes: Vec<&Event> = input
        .events
        .iter()
        .filter(|e| e.at >= fault_at && e.at <= input.window_end)
        .collect();
    changes.sort_by_key(|e| e.at);
    // Per pod that went not Ready: Ready now, and when it last became Ready.
    let mut affected: BTreeMap<&str, (bool, Option<Stamp>)> = BTreeMap::new();
    for e in changes {
        let EventKind::PodReadiness { pod, ready, .. } = &e.kind else {
            continue;
        };
        match affected.get_mut(pod.as_str()) {
            Some(state) if *ready => *state = (true, Some(e.at)),
            Some(state) => state.0 = false,
            None if !*ready => {
                affected.insert(pod, (false, None));
            }
            None => {}
        }
    }
    let still_down: Vec<&str> = affected
        .iter()
        .filter(|(_, (ready, _))| !ready)
        .map(|(pod, _)| *pod)
        .collect();
    if !still_down.is_empty() {
        let note = format!(
            "pods_ready_s not observed: {} not Ready again by the end of the fault window",
            still_down.join(", ")
        );
        return (None, Some(note));
    }
    let back = affected.values().filter_map(|(_, at)| *at).max();
    (back.map(|at| at.secs_since(fault_at)), None)
}

/// Fault to the ack of the first of `consecutive` successful writes, in scheduled order, scheduled at or after
/// the fault. A count of 0 is read as 1: zero writes would prove nothing.
fn rto_s(writes: &[&LedgerEntry], fault_at: Stamp, consecutive: u32) -> Option<f64> {
    rto_s_from(writes, fault_at, fault_at, consecutive)
}

/// RTO counted from `fault_at`, with only writes scheduled from `from` on able to end it (a drill: writes that
/// succeeded on the cluster the restore then replaced were not service).
pub fn rto_s_from(
    writes: &[&LedgerEntry],
    fault_at: Stamp,
    from: Stamp,
    consecutive: u32,
) -> Option<f64> {
    let n = consecutive.max(1) as usize;
    let from = from.max(fault_at);
    let mut after: Vec<&LedgerEntry> = writes
        .iter()
        .copied()
        .filter(|w| w.scheduled >= from)
        .collect();
    after.sort_by_key(|w| (w.scheduled, w.id));
    after
        .windows(n)
        .find(|run| run.iter().all(|w| w.outcome == Outcome::Ok))
        .map(|run| run[0].done.secs_since(fault_at))
}

/// The longest stretch without an ok write ack, and whether the outage was still open at the end.
#[derive(Debug, PartialEq)]
struct Downtime {
    longest_s: f64,
    /// Writes scheduled after the last ok one failed (or stayed unknown) and none succeeded afterwards: the
    /// final stretch is cut off by the end of the trial, so it is only a lower bound.
    open_at_end: bool,
}

/// The longest stretch without an ok write ack in `[baseline_start, trial_end]`: the baseline, the fault window,
/// the heal and the settle time. Both edges count as boundaries, so an outage still running at the end is
/// measured up to `trial_end` instead of disappearing, and flagged. None when no write was scheduled in the span.
fn downtime_s(
    writes: &[&LedgerEntry],
    baseline_start: Stamp,
    trial_end: Stamp,
) -> Option<Downtime> {
    let in_span: Vec<&LedgerEntry> = writes
        .iter()
        .copied()
        .filter(|w| w.scheduled >= baseline_start && w.scheduled <= trial_end)
        .collect();
    if in_span.is_empty() {
        return None;
    }
    // Every ack of a write scheduled in the span counts, even one that came after the trial's end: it closes the
    // gap there. The end is a boundary only when no ack came at or after it.
    let mut points: Vec<Stamp> = in_span
        .iter()
        .filter(|w| w.outcome == Outcome::Ok)
        .map(|w| w.done)
        .collect();
    points.push(baseline_start);
    if points.iter().all(|p| *p < trial_end) {
        points.push(trial_end);
    }
    points.sort();
    let longest_s = points
        .windows(2)
        .map(|p| p[1].secs_since(p[0]))
        .reduce(f64::max)
        .unwrap_or(0.0);
    // Ops cut off by the load's stop say nothing about the servers; every other write scheduled after the last
    // ok one did not succeed.
    let last_ok = in_span
        .iter()
        .filter(|w| w.outcome == Outcome::Ok)
        .map(|w| w.scheduled)
        .max();
    let open_at_end = in_span.iter().any(|w| {
        w.outcome != Outcome::Ok
            && !crate::load::cut_by_stop(w)
            && last_ok.is_none_or(|ok| w.scheduled > ok)
    });
    Some(Downtime {
        longest_s,
        open_at_end,
    })
}

/// Failed plus unknown over all ops (reads and writes) scheduled in `[fault_at, window_end]`.
fn error_rate(ledger: &[LedgerEntry], fault_at: Stamp, window_end: Stamp) -> Option<f64> {
    let in_window = ledger
        .iter()
        .filter(|e| e.scheduled >= fault_at && e.scheduled <= window_end);
    let (mut total, mut errors) = (0u64, 0u64);
    for e in in_window {
        total += 1;
        errors += u64::from(e.outcome != Outcome::Ok);
    }
    (total > 0).then(|| errors as f64 / total as f64)
}

/// p50, p95 and p99 in ms of the ok ops among `entries`, from the scheduled send time. Values come from an HDR
/// histogram at 3 significant digits, which reports a bucket's upper bound: at most 0.1% high, never low, so
/// rounding cannot make an upper limit pass.
fn latency_quantiles<'a>(entries: impl Iterator<Item = &'a LedgerEntry>) -> Option<[f64; 3]> {
    let mut hist =
        Histogram::<u64>::new(3).expect("3 significant digits is a valid histogram precision");
    for e in entries.filter(|e| e.outcome == Outcome::Ok) {
        hist.record(micros(e.latency()))
            .expect("an auto-resizing histogram accepts any u64");
    }
    if hist.is_empty() {
        return None;
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Some(Quantile::ALL.map(|q| ms(q.fraction())))
}

/// p99 in ms of durations, rounded up like `latency_quantiles`.
fn p99_ms(durations: impl Iterator<Item = Duration>) -> Option<f64> {
    let mut hist =
        Histogram::<u64>::new(3).expect("3 significant digits is a valid histogram precision");
    for d in durations {
        hist.record(micros(d))
            .expect("an auto-resizing histogram accepts any u64");
    }
    (!hist.is_empty()).then(|| hist.value_at_quantile(0.99) as f64 / 1000.0)
}

enum Direction {
    HigherIsWorse,
    LowerIsWorse,
}

/// How much worse the fault window is than the baseline, in percent of the baseline (negative = better).
/// None when either side was not measured or the baseline is zero (no meaningful ratio).
fn degradation_pct(baseline: Option<f64>, fault: Option<f64>, direction: Direction) -> Option<f64> {
    let (b, f) = (baseline?, fault?);
    if b == 0.0 {
        return None;
    }
    Some(match direction {
        Direction::HigherIsWorse => (f - b) / b * 100.0,
        Direction::LowerIsWorse => (b - f) / b * 100.0,
    })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One bucket per second from the first to the last op, empty seconds included so a stall shows as a gap.
fn latency_buckets(ledger: &[LedgerEntry], origin: Stamp) -> Vec<LatencyBucket> {
    let second_of = |e: &LedgerEntry| e.scheduled.secs_since(origin).floor() as i64;
    let (Some(first), Some(last)) = (
        ledger.iter().map(second_of).min(),
        ledger.iter().map(second_of).max(),
    ) else {
        return Vec::new();
    };
    let mut by_second: BTreeMap<i64, Vec<&LedgerEntry>> = BTreeMap::new();
    for e in ledger {
        by_second.entry(second_of(e)).or_default().push(e);
    }
    (first..=last)
        .map(|t_s| {
            let ops = by_second.remove(&t_s).unwrap_or_default();
            let quantiles = latency_quantiles(ops.iter().copied());
            LatencyBucket {
                t_s,
                ops: ops.len() as u64,
                errors: ops.iter().filter(|e| e.outcome != Outcome::Ok).count() as u64,
                p50_ms: quantiles.map(|q| q[0]),
                p99_ms: quantiles.map(|q| q[2]),
            }
        })
        .collect()
}

/// One `OP_BUCKET_MS` slice from the first to the last op, empty slices included so a stall shows as a gap.
fn op_buckets(ledger: &[LedgerEntry], origin: Stamp) -> Vec<OpBucket> {
    let slice_of = |e: &LedgerEntry| {
        (e.scheduled.secs_since(origin) * 1000.0 / OP_BUCKET_MS as f64).floor() as i64
    };
    let (Some(first), Some(last)) = (
        ledger.iter().map(slice_of).min(),
        ledger.iter().map(slice_of).max(),
    ) else {
        return Vec::new();
    };
    let mut by_slice: BTreeMap<i64, Vec<&LedgerEntry>> = BTreeMap::new();
    for e in ledger {
        by_slice.entry(slice_of(e)).or_default().push(e);
    }
    (first..=last)
        .map(|i| {
            let ops = by_slice.remove(&i).unwrap_or_default();
            let quantiles = latency_quantiles(ops.iter().copied());
            let count = |o: Outcome| ops.iter().filter(|e| e.outcome == o).count() as u64;
            OpBucket {
                t_s: (i * OP_BUCKET_MS) as f64 / 1000.0,
                ok: count(Outcome::Ok),
                failed: count(Outcome::Failed),
                unknown: count(Outcome::Unknown),
                p50_ms: quantiles.map(|q| q[0]),
                p99_ms: quantiles.map(|q| q[2]),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Stamp {
        Stamp(Duration::from_millis(v))
    }

    fn entry(
        id: u64,
        op: OpKind,
        scheduled_ms: u64,
        done_ms: u64,
        outcome: Outcome,
    ) -> LedgerEntry {
        LedgerEntry {
            id,
            source: crate::ledger::Source::Component(crate::scenario::ComponentKind::Postgres),
            op,
            trial: 1,
            scheduled: ms(scheduled_ms),
            slot: Some(ms(scheduled_ms)),
            sent: Some(ms(scheduled_ms)),
            done: ms(done_ms),
            outcome,
            error: None,
        }
    }

    fn write(id: u64, scheduled_ms: u64, done_ms: u64, outcome: Outcome) -> LedgerEntry {
        entry(id, OpKind::Write, scheduled_ms, done_ms, outcome)
    }

    fn event(at_ms: u64, kind: EventKind) -> Event {
        Event {
            at: ms(at_ms),
            trial: 1,
            kind,
        }
    }

    fn detected(component: ComponentKind) -> EventKind {
        EventKind::FailureDetected {
            component,
            evidence: "leader key gone".into(),
        }
    }

    fn promoted(component: ComponentKind) -> EventKind {
        EventKind::NewPrimaryServing {
            component,
            member: "pg2".into(),
            evidence: "+promoted-slave".into(),
        }
    }

    struct Fixture {
        events: Vec<Event>,
        ledger: Vec<LedgerEntry>,
        present: BTreeSet<u64>,
        fault_at: Option<Stamp>,
        window_end: Stamp,
        trial_end: Stamp,
        /// None: the ids of this fixture's writes.
        run_attempted: Option<BTreeSet<u64>>,
        rto_consecutive: u32,
    }

    impl Fixture {
        fn new(ledger: Vec<LedgerEntry>) -> Self {
            Fixture {
                events: Vec::new(),
                present: BTreeSet::new(),
                ledger,
                fault_at: Some(ms(10_000)),
                window_end: ms(30_000),
                trial_end: ms(30_000),
                run_attempted: None,
                rto_consecutive: 3,
            }
        }

        fn run(&self) -> TrialMeasurements {
            let attempted = self.run_attempted.clone().unwrap_or_else(|| {
                self.ledger
                    .iter()
                    .filter(|e| e.op == OpKind::Write)
                    .map(|e| e.id)
                    .collect()
            });
            analyze(&TrialInput {
                component: ComponentKind::Postgres,
                trial: 1,
                events: &self.events,
                ledger: &self.ledger,
                present: &self.present,
                run_attempted: &attempted,
                baseline: (ms(0), ms(10_000)),
                fault_at: self.fault_at,
                window_end: self.window_end,
                trial_end: self.trial_end,
                rto_consecutive: self.rto_consecutive,
            })
        }
    }

    fn approx(actual: Option<f64>, expected: f64) {
        let a = actual.unwrap_or_else(|| panic!("expected {expected}, got None"));
        assert!((a - expected).abs() < 1e-9, "expected {expected}, got {a}");
    }

    #[test]
    fn the_system_counts_every_components_operations_and_keeps_each_components_failover() {
        // PostgreSQL: 10 writes, 4 failed after the fault; Redis: 10 writes, 1 failed and one acked write lost.
        let mut ledger = Vec::new();
        for i in 0..10u64 {
            let outcome = if (4..8).contains(&i) {
                Outcome::Failed
            } else {
                Outcome::Ok
            };
            ledger.push(write(i + 1, 9_000 + i * 1000, 9_050 + i * 1000, outcome));
        }
        for i in 0..10u64 {
            let mut e = write(100 + i, 9_500 + i * 1000, 9_501 + i * 1000, Outcome::Ok);
            e.source = crate::ledger::Source::Component(ComponentKind::Redis);
            if i == 6 {
                e.outcome = Outcome::Failed;
            }
            ledger.push(e);
        }
        let mut f = Fixture::new(ledger);
        f.events = vec![
            event(13_000, detected(ComponentKind::Postgres)),
            event(19_000, promoted(ComponentKind::Postgres)),
            event(11_000, detected(ComponentKind::Redis)),
            event(15_500, promoted(ComponentKind::Redis)),
            event(
                20_000,
                EventKind::RouterRouted {
                    router: "n1".into(),
                    to: vec!["n2".into()],
                    switched: true,
                },
            ),
        ];
        // Every acked PostgreSQL write is back; Redis lost its acked write 103.
        f.present = (1..=10).chain(100..110).filter(|id| *id != 103).collect();
        let attempted: BTreeSet<u64> = (1..=10).chain(100..110).collect();
        let input = TrialInput {
            component: ComponentKind::Postgres,
            trial: 1,
            events: &f.events,
            ledger: &f.ledger,
            present: &f.present,
            run_attempted: &attempted,
            baseline: (ms(0), ms(10_000)),
            fault_at: f.fault_at,
            window_end: f.window_end,
            trial_end: f.trial_end,
            rto_consecutive: 3,
        };
        let per: BTreeMap<ComponentKind, TrialMeasurements> =
            [ComponentKind::Postgres, ComponentKind::Redis]
                .into_iter()
                .map(|c| {
                    let own: Vec<LedgerEntry> = f
                        .ledger
                        .iter()
                        .filter(|e| e.source == Source::Component(c))
                        .cloned()
                        .collect();
                    let m = analyze(&TrialInput {
                        component: c,
                        ledger: &own,
                        ..input
                    });
                    (c, m)
                })
                .collect();
        let m = system(&input, per);
        // 15 of 20 operations succeeded, over both components.
        approx(m.value(Metric::AvailabilityPct), 75.0);
        approx(m.value(Metric::LostAckedWrites), 1.0);
        // The report's write table is the components' added up, and agrees with the counts.
        assert_eq!(m.writes.lost, 1);
        assert_eq!(
            m.writes
                .lost_sample
                .iter()
                .map(|w| w.id)
                .collect::<Vec<_>>(),
            vec![103]
        );
        assert_eq!(
            m.writes.attempted,
            m.components
                .values()
                .map(|c| c.writes.attempted)
                .sum::<u64>()
        );
        // Redis holding a PostgreSQL write's id is unexpected for Redis, though the run attempted the id.
        let redis_present: BTreeSet<u64> = (100..110).filter(|id| *id != 103).chain([5]).collect();
        let redis_ids: BTreeSet<u64> = (100..110).collect();
        let redis_own: Vec<LedgerEntry> = f
            .ledger
            .iter()
            .filter(|e| e.source == Source::Component(ComponentKind::Redis))
            .cloned()
            .collect();
        let r = analyze(&TrialInput {
            component: ComponentKind::Redis,
            ledger: &redis_own,
            present: &redis_present,
            run_attempted: &redis_ids,
            ..input
        });
        assert_eq!(r.writes.unexpected_sample, vec![5]);
        // A component that wrote nothing leaves the system's write counts unobserved (no "0 lost" on the rest).
        let mut silent = m.components.clone();
        silent
            .get_mut(&ComponentKind::Redis)
            .unwrap()
            .values
            .insert(Metric::LostAckedWrites, None);
        assert_eq!(system(&input, silent).value(Metric::LostAckedWrites), None);
        approx(m.value(Metric::FailedWrites), 5.0);
        // The system has no promotion of its own; each component has its own, from its own events.
        assert_eq!(m.value(Metric::PromotionS), None);
        assert_eq!(m.value(Metric::DowntimeS), None);
        approx(
            m.value_of(
                Some(&Source::Component(ComponentKind::Postgres)),
                Metric::PromotionS,
            ),
            9.0,
        );
        approx(
            m.value_of(
                Some(&Source::Component(ComponentKind::Redis)),
                Metric::PromotionS,
            ),
            5.5,
        );
        approx(
            m.value_of(
                Some(&Source::Component(ComponentKind::Redis)),
                Metric::DetectionS,
            ),
            1.0,
        );
        approx(
            m.value_of(
                Some(&Source::Component(ComponentKind::Postgres)),
                Metric::AvailabilityPct,
            ),
            60.0,
        );
        approx(
            m.value_of(
                Some(&Source::Component(ComponentKind::Redis)),
                Metric::AvailabilityPct,
            ),
            90.0,
        );
        approx(
            m.value_of(
                Some(&Source::Component(ComponentKind::Redis)),
                Metric::LostAckedWrites,
            ),
            1.0,
        );
        approx(
            m.value_of(
                Some(&Source::Component(ComponentKind::Postgres)),
                Metric::LostAckedWrites,
            ),
            0.0,
        );
        // The routing layer carries PostgreSQL's clients only.
        approx(
            m.value_of(
                Some(&Source::Component(ComponentKind::Postgres)),
                Metric::RouterSwitchS,
            ),
            10.0,
        );
        assert_eq!(
            m.value_of(
                Some(&Source::Component(ComponentKind::Redis)),
                Metric::RouterSwitchS
            ),
            None
        );
    }

    #[test]
    fn a_probes_recovery_counts_from_its_first_failure_not_from_answers_given_before_it_noticed() {
        // Fault at 10 s; the service still answers 200 for 150 ms, then 503 until 14 s, then 200 again.
        let requests: Vec<LedgerEntry> = (0..200u64)
            .map(|i| {
                let at = 9_000 + i * 50;
                let ok = !(10_150..14_000).contains(&at);
                let mut e = entry(
                    i + 1,
                    OpKind::Read,
                    at,
                    at + 5,
                    if ok { Outcome::Ok } else { Outcome::Failed },
                );
                e.source = Source::Http("api".into());
                e
            })
            .collect();
        let f = Fixture::new(requests);
        let attempted = BTreeSet::new();
        let m = probe(&TrialInput {
            component: ComponentKind::Postgres,
            trial: 1,
            events: &f.events,
            ledger: &f.ledger,
            present: &f.present,
            run_attempted: &attempted,
            baseline: (ms(0), ms(10_000)),
            fault_at: f.fault_at,
            window_end: f.window_end,
            trial_end: ms(19_000),
            rto_consecutive: 3,
        });
        // The three answers right after the fault are not the recovery: the first 200 after the outage is.
        approx(m.value(Metric::RtoS), 4.005);
        assert!(m.value(Metric::DowntimeS).unwrap() > 3.8);
        assert_eq!(m.value(Metric::PromotionS), None);
        assert_eq!(m.value(Metric::AckedWrites), None, "a probe has no writes");
    }

    #[test]
    fn every_metric_is_a_key_even_with_an_empty_trial() {
        let m = Fixture::new(Vec::new()).run();
        assert_eq!(m.values.len(), Metric::all().len());
        for metric in Metric::all() {
            assert!(m.values.contains_key(metric), "{metric} missing");
        }
        // Nothing was written, so nothing about durability or availability was observed.
        for metric in [
            Metric::LostAckedWrites,
            Metric::RpoS,
            Metric::RtoS,
            Metric::DowntimeS,
            Metric::ErrorRate,
        ] {
            assert_eq!(m.value(metric), None, "{metric}");
        }
        // Counts over nothing are not observed either: 0 failed of 0 attempted would pass vacuously.
        for metric in [
            Metric::AckedWrites,
            Metric::FailedWrites,
            Metric::UnknownWrites,
            Metric::FailedQueries,
        ] {
            assert_eq!(m.value(metric), None, "{metric}");
        }
    }

    #[test]
    fn counts_are_observed_per_kind_of_operation_attempted() {
        let m = Fixture::new(vec![write(1, 12_000, 12_001, Outcome::Ok)]).run();
        assert_eq!(m.value(Metric::FailedWrites), Some(0.0));
        assert_eq!(
            m.value(Metric::FailedQueries),
            None,
            "no query was attempted"
        );
        let m = Fixture::new(vec![entry(
            1,
            OpKind::Search,
            12_000,
            12_001,
            Outcome::Failed,
        )])
        .run();
        assert_eq!(m.value(Metric::FailedQueries), Some(1.0));
        assert_eq!(
            m.value(Metric::FailedWrites),
            None,
            "no write was attempted"
        );
    }

    #[test]
    fn unexpected_writes_look_at_the_whole_run() {
        let mut f = Fixture::new(vec![
            write(50, 1000, 1010, Outcome::Ok),
            write(51, 1100, 1110, Outcome::Ok),
        ]);
        // 3 was written by an earlier trial; 7 and 900 by nobody, below and above this trial's ids.
        f.run_attempted = Some([1, 2, 3, 50, 51].into_iter().collect());
        f.present = [3, 7, 50, 51, 900].into_iter().collect();
        let m = f.run();
        assert_eq!(m.writes.unexpected_sample, vec![7, 900]);
        assert_eq!(m.value(Metric::UnexpectedWrites), Some(2.0));
    }

    #[test]
    fn classifies_lost_recovered_unexpected_and_counts() {
        let mut f = Fixture::new(vec![
            write(10, 1000, 1010, Outcome::Ok),      // present: fine
            write(11, 1100, 1110, Outcome::Ok),      // absent: lost
            write(12, 1200, 1210, Outcome::Unknown), // present: recovered
            write(13, 1300, 1310, Outcome::Unknown), // absent: unknown, not lost
            write(14, 1400, 1410, Outcome::Failed),  // absent
            write(16, 1600, 1610, Outcome::Ok),      // absent: lost
            write(17, 1700, 1710, Outcome::Failed),  // present: failed but present
            entry(18, OpKind::Read, 1800, 1810, Outcome::Ok),
        ]);
        // 15 was never attempted; 99 neither, though it lies outside this trial's ids.
        f.present = [10, 12, 15, 17, 99].into_iter().collect();
        let m = f.run();
        let w = &m.writes;
        assert_eq!(
            (
                w.attempted,
                w.acked,
                w.failed,
                w.unknown,
                w.lost,
                w.recovered,
                w.failed_but_present,
                w.unexpected
            ),
            (7, 3, 2, 2, 2, 1, 1, 2)
        );
        assert_eq!(w.unexpected_sample, vec![15, 99]);
        assert_eq!(
            w.lost_sample.iter().map(|l| l.id).collect::<Vec<_>>(),
            vec![11, 16]
        );
        assert_eq!(w.lost_sample[0].acked_at, ms(1110));
        approx(w.lost_sample[0].since_fault_s, -8.89);
        assert_eq!(m.value(Metric::LostAckedWrites), Some(2.0));
        assert_eq!(m.value(Metric::RecoveredWrites), Some(1.0));
        assert_eq!(m.value(Metric::UnexpectedWrites), Some(2.0));
        assert_eq!(m.value(Metric::AckedWrites), Some(3.0));
        assert_eq!(m.value(Metric::FailedWrites), Some(2.0));
        assert_eq!(m.value(Metric::UnknownWrites), Some(2.0));
    }

    #[test]
    fn lost_sample_is_capped_but_the_count_is_not() {
        let f = Fixture::new(
            (0..25)
                .map(|i| write(i, i * 10, i * 10 + 5, Outcome::Ok))
                .collect(),
        );
        let m = f.run();
        assert_eq!(m.writes.lost, 25);
        assert_eq!(m.writes.lost_sample.len(), SAMPLE_LIMIT);
        assert_eq!(m.value(Metric::LostAckedWrites), Some(25.0));
    }

    #[test]
    fn unexpected_ids_over_the_whole_run() {
        let ledger = vec![
            write(1, 0, 1, Outcome::Ok),
            write(2, 0, 1, Outcome::Failed),
            entry(3, OpKind::Read, 0, 1, Outcome::Ok),
        ];
        let present = [1, 2, 3, 7].into_iter().collect();
        assert_eq!(unexpected_ids(&ledger, &present), vec![3, 7]);
    }

    #[test]
    fn rpo_spans_from_the_last_good_ack_before_the_first_loss_to_the_last_lost_ack() {
        let mut f = Fixture::new(vec![
            write(1, 9000, 9100, Outcome::Ok),   // present
            write(2, 9500, 9600, Outcome::Ok),   // present, last good before the loss
            write(3, 9700, 9800, Outcome::Ok),   // lost, first
            write(4, 9800, 9950, Outcome::Ok),   // present but after the first loss
            write(5, 9900, 10_050, Outcome::Ok), // lost, last
        ]);
        f.present = [1, 2, 4].into_iter().collect();
        approx(f.run().value(Metric::RpoS), 0.45);
    }

    #[test]
    fn rpo_is_zero_without_loss_and_counts_from_baseline_start_without_a_prior_good_write() {
        let mut f = Fixture::new(vec![write(1, 500, 600, Outcome::Ok)]);
        f.present = [1].into_iter().collect();
        assert_eq!(f.run().value(Metric::RpoS), Some(0.0));

        f.present.clear();
        approx(f.run().value(Metric::RpoS), 0.6);
    }

    #[test]
    fn detection_and_promotion_take_the_first_sign_of_this_component_at_or_after_the_fault() {
        let mut f = Fixture::new(Vec::new());
        f.events = vec![
            event(9_000, detected(ComponentKind::Postgres)), // before the fault
            event(11_000, detected(ComponentKind::Redis)),   // other component
            event(18_412, detected(ComponentKind::Postgres)),
            event(19_000, detected(ComponentKind::Postgres)),
            event(12_000, promoted(ComponentKind::Redis)),
            event(25_000, promoted(ComponentKind::Postgres)),
        ];
        let m = f.run();
        approx(m.value(Metric::DetectionS), 8.412);
        approx(m.value(Metric::PromotionS), 15.0);
    }

    #[test]
    fn detection_at_the_fault_instant_counts_and_nothing_is_observed_without_a_fault() {
        let mut f = Fixture::new(Vec::new());
        f.events = vec![event(10_000, detected(ComponentKind::Postgres))];
        assert_eq!(f.run().value(Metric::DetectionS), Some(0.0));
        assert_eq!(f.run().value(Metric::PromotionS), None);

        f.fault_at = None;
        assert_eq!(f.run().value(Metric::DetectionS), None);
    }

    fn readiness(pod: &str, ready: bool) -> EventKind {
        EventKind::PodReadiness {
            pod: pod.into(),
            node: Some("w1".into()),
            ready,
            server_time: None,
        }
    }

    #[test]
    fn pods_ready_is_when_the_last_affected_pod_is_ready_again() {
        let mut f = Fixture::new(Vec::new());
        f.events = vec![
            event(9_000, readiness("redis-0", false)), // before the fault: ignored
            event(9_500, readiness("redis-0", true)),
            event(10_200, readiness("postgres-0", false)),
            event(11_000, readiness("postgres-1", false)),
            event(14_000, readiness("postgres-1", true)),
            event(12_000, readiness("postgres-0", true)),
            // Flaps once more: back for good only at 21 s.
            event(15_000, readiness("postgres-0", false)),
            event(21_000, readiness("postgres-0", true)),
            event(16_000, readiness("redis-2", true)), // never went not Ready after the fault
        ];
        let m = f.run();
        approx(m.value(Metric::PodsReadyS), 11.0);
        assert!(m.notes.is_empty(), "{:?}", m.notes);
    }

    #[test]
    fn a_pod_deleted_and_recreated_under_its_name_counts_once_it_is_ready() {
        let mut f = Fixture::new(Vec::new());
        // Deletion reports not Ready; the recreated pod is new and not Ready, so nothing until it turns Ready.
        f.events = vec![
            event(10_050, readiness("postgres-0", false)),
            event(27_400, readiness("postgres-0", true)),
        ];
        approx(f.run().value(Metric::PodsReadyS), 17.4);
    }

    #[test]
    fn a_pod_not_back_by_the_window_end_leaves_pods_ready_unobserved_with_a_note() {
        let mut f = Fixture::new(Vec::new());
        f.events = vec![
            event(10_500, readiness("postgres-0", false)),
            event(11_000, readiness("qdrant-2", false)),
            event(12_000, readiness("postgres-0", true)),
            event(30_001, readiness("qdrant-2", true)), // after the window end
        ];
        let m = f.run();
        assert_eq!(m.value(Metric::PodsReadyS), None);
        assert_eq!(
            m.notes,
            vec![
                "pods_ready_s not observed: qdrant-2 not Ready again by the end of the fault window"
                    .to_string()
            ]
        );
    }

    #[test]
    fn pods_ready_is_not_observed_without_an_affected_pod_or_without_a_fault() {
        let mut f = Fixture::new(Vec::new());
        assert_eq!(
            f.run().value(Metric::PodsReadyS),
            None,
            "no readiness at all"
        );
        f.events = vec![
            event(8_000, readiness("postgres-0", false)),
            event(9_000, readiness("postgres-0", true)),
            event(12_000, readiness("postgres-1", true)),
        ];
        let m = f.run();
        assert_eq!(
            m.value(Metric::PodsReadyS),
            None,
            "changes only before the fault"
        );
        assert!(m.notes.is_empty());
        f.events.push(event(13_000, readiness("postgres-1", false)));
        f.events.push(event(14_000, readiness("postgres-1", true)));
        f.fault_at = None;
        assert_eq!(f.run().value(Metric::PodsReadyS), None, "no fault");
    }

    #[test]
    fn rto_needs_consecutive_successes_scheduled_after_the_fault() {
        let f = Fixture::new(vec![
            // Scheduled before the fault, acked after it: not evidence of recovery.
            write(1, 9_700, 10_200, Outcome::Ok),
            write(2, 9_800, 10_300, Outcome::Ok),
            write(3, 10_100, 10_400, Outcome::Ok),
            write(4, 10_200, 12_000, Outcome::Failed),
            write(5, 10_300, 13_000, Outcome::Ok),
            write(6, 10_400, 13_100, Outcome::Ok),
            write(7, 10_500, 13_200, Outcome::Unknown),
            write(8, 10_600, 14_000, Outcome::Ok),
            write(9, 10_700, 14_100, Outcome::Ok),
            write(10, 10_800, 14_200, Outcome::Ok),
        ]);
        approx(f.run().value(Metric::RtoS), 4.0);
    }

    #[test]
    fn rto_is_not_observed_without_a_full_run_of_successes() {
        let f = Fixture::new(vec![
            write(1, 10_100, 11_000, Outcome::Ok),
            write(2, 10_200, 11_100, Outcome::Ok),
            write(3, 10_300, 11_200, Outcome::Failed),
            write(4, 10_400, 11_300, Outcome::Ok),
        ]);
        assert_eq!(f.run().value(Metric::RtoS), None);
    }

    #[test]
    fn downtime_is_the_longest_gap_between_ok_acks_across_the_fault() {
        let f = Fixture::new(vec![
            write(1, 4_900, 5_000, Outcome::Ok),
            write(2, 9_000, 9_800, Outcome::Ok), // last ok ack before the fault
            write(3, 10_000, 12_000, Outcome::Failed),
            write(4, 11_000, 16_300, Outcome::Ok), // first ok ack after it
            write(5, 16_400, 16_500, Outcome::Ok),
            write(6, 19_000, 20_000, Outcome::Ok),
            write(7, 24_000, 25_000, Outcome::Ok),
            write(8, 29_000, 29_900, Outcome::Ok),
            write(9, 30_500, 30_600, Outcome::Ok), // scheduled after the trial's end (30 s): not in the span
        ]);
        // Gaps: 5.0 from the baseline start, 4.8, 6.5 across the fault, 0.2, 3.5, 5.0, 4.9, 0.1 to the trial end.
        approx(f.run().value(Metric::DowntimeS), 6.5);

        // A write scheduled before the end and acknowledged 10 s later: nothing was acknowledged for 10.1 s.
        let mut f = f;
        f.ledger.push(write(10, 29_950, 40_000, Outcome::Ok));
        approx(f.run().value(Metric::DowntimeS), 10.1);
    }

    #[test]
    fn downtime_runs_to_the_trial_end_when_writes_never_came_back_and_is_only_a_lower_bound() {
        let mut f = Fixture::new(vec![
            write(1, 9_000, 9_500, Outcome::Ok),
            write(2, 10_500, 12_500, Outcome::Failed),
            write(3, 20_000, 22_000, Outcome::Unknown),
        ]);
        f.trial_end = ms(35_000);
        let m = f.run();
        approx(m.value(Metric::DowntimeS), 25.5);
        assert!(m.lower_bounds.contains(&Metric::DowntimeS));
        assert!(
            m.notes[0].contains("still failing when the trial ended"),
            "{:?}",
            m.notes
        );
    }

    /// The defect this guards against: downtime measured only up to the heal, so an outage in the settle time,
    /// or one still open at the end, did not count.
    #[test]
    fn downtime_covers_the_heal_and_settle_up_to_the_trial_end() {
        let mut f = Fixture::new(vec![
            write(1, 9_000, 9_100, Outcome::Ok),
            write(2, 12_000, 12_100, Outcome::Ok),
            // Healed at 30 s; writes fail again in the settle time from 31 s to 39 s.
            write(3, 30_900, 31_000, Outcome::Ok),
            write(4, 32_000, 34_000, Outcome::Failed),
            write(5, 39_000, 39_010, Outcome::Ok),
            write(6, 39_500, 39_510, Outcome::Ok),
        ]);
        f.trial_end = ms(40_000);
        let m = f.run();
        approx(m.value(Metric::DowntimeS), 18.9);
        assert!(
            m.lower_bounds.is_empty(),
            "writes succeeded again at the end"
        );
    }

    /// The defect this guards against (found in review): acks after the trial's end were left out, so an outage
    /// that writes scheduled near the end closed only after it read as ending exactly at the end, unflagged.
    #[test]
    fn an_ack_after_the_trial_end_closes_the_gap_where_it_came() {
        let mut f = Fixture::new(vec![
            write(1, 9_900, 10_000, Outcome::Ok),
            write(2, 12_000, 14_000, Outcome::Unknown),
            // Scheduled before the end (30 s), acknowledged after it, at 31 s.
            write(3, 29_900, 31_000, Outcome::Ok),
        ]);
        f.trial_end = ms(30_000);
        let m = f.run();
        approx(m.value(Metric::DowntimeS), 21.0);
        assert!(m.lower_bounds.is_empty());
    }

    #[test]
    fn operations_cut_off_by_the_load_stop_do_not_make_an_open_outage() {
        let mut f = Fixture::new(vec![
            write(1, 29_000, 29_001, Outcome::Ok),
            write(2, 29_990, 30_000, Outcome::Ok),
        ]);
        let mut cut = write(3, 29_999, 31_000, Outcome::Unknown);
        cut.error = Some(crate::load::STOPPED_IN_FLIGHT.into());
        f.ledger.push(cut);
        let m = f.run();
        assert!(m.lower_bounds.is_empty());
    }

    #[test]
    fn error_rate_counts_reads_and_writes_scheduled_in_the_fault_window() {
        let f = Fixture::new(vec![
            write(1, 5_000, 5_100, Outcome::Failed), // baseline: ignored
            write(2, 10_000, 10_100, Outcome::Ok),
            write(3, 11_000, 13_000, Outcome::Failed),
            write(4, 12_000, 14_000, Outcome::Unknown),
            entry(5, OpKind::Read, 13_000, 13_100, Outcome::Failed),
            entry(6, OpKind::Read, 30_000, 30_100, Outcome::Ok), // window end is inclusive
            write(7, 30_001, 30_100, Outcome::Failed),           // after the window: ignored
        ]);
        approx(f.run().value(Metric::ErrorRate), 0.6);
    }

    #[test]
    fn error_rate_is_not_observed_without_ops_or_fault() {
        let mut f = Fixture::new(vec![write(1, 5_000, 5_100, Outcome::Ok)]);
        assert_eq!(f.run().value(Metric::ErrorRate), None);
        f.fault_at = None;
        f.ledger.push(write(2, 12_000, 12_100, Outcome::Ok));
        assert_eq!(f.run().value(Metric::ErrorRate), None);
    }

    #[test]
    fn latency_quantiles_are_from_the_scheduled_time_of_ok_ops_per_window() {
        let mut ledger: Vec<LedgerEntry> = (1..=100)
            .map(|i| {
                let op = if i % 2 == 0 {
                    OpKind::Read
                } else {
                    OpKind::Write
                };
                // sent late on purpose: latency counts from `scheduled`, not `sent`.
                let mut e = entry(i, op, 1_000 + i * 10, 1_000 + i * 11, Outcome::Ok);
                e.sent = Some(e.done);
                e
            })
            .collect();
        ledger.push(write(500, 2_000, 9_000, Outcome::Failed)); // not ok: not a latency sample
        ledger.push(write(501, 12_000, 12_007, Outcome::Ok));
        ledger.push(write(502, 13_000, 13_009, Outcome::Ok));
        let m = Fixture::new(ledger).run();
        // Latencies are i ms for i in 1..=100: nearest-rank p50 = 50 ms, p99 = 99 ms, each reported as the upper
        // bound of its histogram bucket (32 µs wide at 50 ms, 64 µs at 99 ms, 4 µs at 7 ms, 8 µs at 9 ms).
        approx(
            m.value(Metric::Latency(
                OpClass::All,
                Quantile::P50,
                Window::Baseline,
            )),
            50.015,
        );
        approx(
            m.value(Metric::Latency(
                OpClass::All,
                Quantile::P99,
                Window::Baseline,
            )),
            99.007,
        );
        approx(
            m.value(Metric::Latency(OpClass::All, Quantile::P50, Window::Fault)),
            7.003,
        );
        approx(
            m.value(Metric::Latency(OpClass::All, Quantile::P99, Window::Fault)),
            9.007,
        );
    }

    #[test]
    fn slot_wait_and_server_time_are_reported_apart() {
        let mut queued = entry(1, OpKind::Search, 12_000, 12_405, Outcome::Ok);
        queued.slot = Some(ms(12_400)); // waited 400 ms for a slot
        queued.sent = Some(ms(12_401));
        let mut starved = entry(2, OpKind::Search, 12_100, 12_600, Outcome::Failed);
        starved.slot = None; // never got one before its 500 ms deadline
        starved.sent = None;
        let m = Fixture::new(vec![queued, starved]).run();
        let slot = m.value(Metric::SlotWaitP99(OpClass::Search, Window::Fault));
        let server = m.value(Metric::ServerP99(OpClass::Search, Window::Fault));
        approx(slot, 500.223); // 500 ms in a 256 µs wide bucket, reported as its upper bound
        approx(server, 4.001);
        assert_eq!(
            Metric::from_name("search_slot_wait_p99_fault_ms"),
            Some(Metric::SlotWaitP99(OpClass::Search, Window::Fault))
        );
    }

    #[test]
    fn latency_quantiles_round_up_never_down() {
        let f = Fixture::new(vec![write(1, 10_000, 20_000, Outcome::Ok)]);
        let p99 = f
            .run()
            .value(Metric::Latency(OpClass::All, Quantile::P99, Window::Fault))
            .unwrap();
        assert!((10_000.0..=10_010.0).contains(&p99), "{p99}");
    }

    #[test]
    fn latency_is_not_observed_without_ok_samples() {
        let f = Fixture::new(vec![write(1, 12_000, 14_000, Outcome::Failed)]);
        let m = f.run();
        assert_eq!(
            m.value(Metric::Latency(
                OpClass::All,
                Quantile::P50,
                Window::Baseline
            )),
            None
        );
        assert_eq!(
            m.value(Metric::Latency(OpClass::All, Quantile::P99, Window::Fault)),
            None
        );
    }

    #[test]
    fn latency_buckets_are_per_second_around_the_fault_with_empty_seconds_kept() {
        let f = Fixture::new(vec![
            write(1, 8_500, 8_502, Outcome::Ok),
            write(2, 8_600, 8_604, Outcome::Ok),
            write(3, 10_000, 12_000, Outcome::Unknown),
            write(4, 11_999, 12_001, Outcome::Ok),
        ]);
        let b = f.run().latency_buckets;
        assert_eq!(
            b.iter().map(|b| b.t_s).collect::<Vec<_>>(),
            vec![-2, -1, 0, 1]
        );
        assert_eq!(
            b.iter().map(|b| (b.ops, b.errors)).collect::<Vec<_>>(),
            vec![(2, 0), (0, 0), (1, 1), (1, 0)]
        );
        // 2 ms is below 2048 µs, where the histogram is exact; 4 ms sits in a 2 µs wide bucket.
        assert_eq!((b[0].p50_ms, b[0].p99_ms), (Some(2.0), Some(4.001)));
        assert_eq!((b[1].p50_ms, b[2].p50_ms), (None, None));
        assert_eq!(b[3].p99_ms, Some(2.0));
    }

    #[test]
    fn op_buckets_are_100_ms_slices_with_failed_and_unknown_apart() {
        // The fixture's fault is at 10 s.
        let f = Fixture::new(vec![
            write(1, 9_850, 9_852, Outcome::Ok),
            write(2, 9_990, 9_995, Outcome::Failed),
            write(3, 10_000, 12_000, Outcome::Unknown),
            write(4, 10_250, 10_253, Outcome::Ok),
        ]);
        let b = f.run().op_buckets;
        let t: Vec<f64> = b.iter().map(|b| b.t_s).collect();
        assert_eq!(t, vec![-0.2, -0.1, 0.0, 0.1, 0.2]);
        let counts: Vec<(u64, u64, u64)> = b.iter().map(|b| (b.ok, b.failed, b.unknown)).collect();
        assert_eq!(
            counts,
            vec![(1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 0), (1, 0, 0)]
        );
        assert_eq!(b[0].p50_ms, Some(2.0));
        assert_eq!((b[1].p50_ms, b[3].p50_ms), (None, None));
    }
}
