//! The run's single event stream. Engine, faults and probes append; analysis and every reporter read the same list.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::clock::{Clock, Stamp};
use crate::scenario::ComponentKind;

#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub at: Stamp,
    pub trial: u32,
    pub kind: EventKind,
}

/// What happened. Server-side observations are normalised into `FailureDetected` / `NewPrimaryServing` by the
/// component probes; the raw observation travels along as `evidence` so a reader can check it.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    TrialStarted,
    BaselineStarted,
    /// faultline started applying a fault (its first action).
    FaultRequested {
        fault: String,
    },
    /// The fault had taken effect (processes gone, rules committed, link down, pod deletion accepted): the fault
    /// instant every measurement counts from.
    FaultApplied {
        fault: String,
        victims: Vec<String>,
    },
    FaultReverted {
        fault: String,
    },
    FaultRevertFailed {
        fault: String,
        error: String,
    },
    /// A server-side sign that the victim's failure was noticed (leader key gone, +sdown, replica not Active).
    FailureDetected {
        component: ComponentKind,
        evidence: String,
    },
    /// A new primary/master is serving (leader key owned and /primary 200, +promoted-slave).
    NewPrimaryServing {
        component: ComponentKind,
        member: String,
        evidence: String,
    },
    /// Any other raw observation worth keeping on the timeline (sentinel messages, role changes).
    ServerObservation {
        component: ComponentKind,
        source: String,
        message: String,
    },
    /// The primary's own view of its standbys (`pg_stat_replication`), sampled once a second while the trial
    /// runs: the replication lag as PostgreSQL measures it. Not a milestone: reporters leave it off the markers.
    ReplicationSample {
        component: ComponentKind,
        /// The member that answered as the primary.
        primary: String,
        /// Its `pg_current_wal_flush_lsn()`, in bytes: WAL durable on the primary at this reading.
        flush_lsn: Option<f64>,
        standbys: Vec<StandbyLag>,
    },
    /// A pod's readiness changed as the Kubernetes API reports it (a deleted or terminating pod counts as not
    /// Ready). Stamped on receipt; `server_time` is the Ready condition's lastTransitionTime, when the API gave one
    /// that belongs to this transition, so the receipt delay can be judged.
    PodReadiness {
        pod: String,
        node: Option<String>,
        ready: bool,
        server_time: Option<String>,
    },
    /// A Kubernetes Event (core/v1) of the namespace that occurred while the trial ran. Stamped on receipt;
    /// `server_time` is the Event's own time of its latest occurrence.
    KubernetesEvent {
        /// `kind/name` of the involved object, e.g. `Pod/postgres-0`.
        object: String,
        reason: String,
        message: String,
        /// `Normal` or `Warning`.
        event_type: String,
        server_time: Option<String>,
    },
    FirstWriteAfterFault {
        component: ComponentKind,
        ok: bool,
    },
    /// The routing layer changed where it sends read-write connections: HAProxy on `router` now has `to` up in
    /// its read-write proxy (empty: nowhere). Stamped when the probe read it from the stats page.
    RouterRouted {
        router: String,
        to: Vec<String>,
        /// `to` is one member, and not the one this router last sent read-write connections to alone: the
        /// router switched (a router restarted onto the same member did not).
        switched: bool,
    },
    /// A drill step (operator action or wait) began.
    StepStarted {
        step: String,
    },
    /// A named moment inside a drill step (e.g. "pgbackrest restore ended", "restored primary accepts writes").
    StepPhase {
        step: String,
        phase: String,
    },
    /// A drill step ended: completed (`ok`) or failed / past its deadline, with the reason.
    StepFinished {
        step: String,
        ok: bool,
        detail: String,
    },
    HealStarted,
    HealComplete {
        healthy: bool,
        detail: String,
    },
    TrialEnded,
    Note {
        message: String,
    },
}

impl EventKind {
    /// The component an event is about, when it is about one (the routing layer's are PostgreSQL's).
    pub fn component(&self) -> Option<ComponentKind> {
        match self {
            EventKind::FailureDetected { component, .. }
            | EventKind::NewPrimaryServing { component, .. }
            | EventKind::ServerObservation { component, .. }
            | EventKind::FirstWriteAfterFault { component, .. }
            | EventKind::ReplicationSample { component, .. } => Some(*component),
            EventKind::RouterRouted { .. } => Some(ComponentKind::Postgres),
            _ => None,
        }
    }
}

/// One standby in a `ReplicationSample`: a row of the primary's `pg_stat_replication`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StandbyLag {
    /// Its `application_name`: the Patroni member name.
    pub name: String,
    /// `streaming`, `catchup`, `startup`, ...
    pub state: String,
    /// `sync`, `quorum`, `potential` or `async`.
    pub sync_state: String,
    /// `replay_lag` in milliseconds: from the primary flushing WAL to this standby reporting it written, flushed
    /// and applied (a round trip of the network included). NULL once the standby has reported everything it was
    /// sent applied twice in a row (walsender.c clears the lag then), or before anything was measured.
    pub replay_lag_ms: Option<f64>,
    /// WAL bytes the standby has yet to replay (`pg_current_wal_lsn() - replay_lsn`), sent or not.
    pub behind_bytes: Option<f64>,
    /// Its `replay_lsn`, in bytes: with an earlier reading's flush position it bounds the lag from below even
    /// when `replay_lag` is stale (a stream that stopped keeps its last `replay_lag` until the walsender times
    /// out).
    pub replay_lsn: Option<f64>,
}

impl StandbyLag {
    /// The lag this reading shows for a `streaming` standby: `replay_lag`, or 0 when PostgreSQL shows none (it
    /// had applied everything it was sent). None for any other state (`catchup`, `startup`, ...): its lag is not
    /// known.
    pub fn lag_ms(&self) -> Option<f64> {
        (self.state == "streaming").then(|| self.replay_lag_ms.unwrap_or(0.0))
    }
}

#[derive(Clone)]
pub struct EventLog {
    clock: Clock,
    inner: Arc<Mutex<Vec<Event>>>,
    trial: Arc<std::sync::atomic::AtomicU32>,
}

impl EventLog {
    pub fn new(clock: Clock) -> Self {
        EventLog {
            clock,
            inner: Arc::default(),
            trial: Arc::default(),
        }
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    pub fn set_trial(&self, trial: u32) {
        self.trial.store(trial, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn trial(&self) -> u32 {
        self.trial.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Appends an event stamped now and returns its stamp.
    pub fn emit(&self, kind: EventKind) -> Stamp {
        let at = self.clock.now();
        self.emit_at(at, kind);
        at
    }

    /// Appends an event stamped at a time taken earlier (e.g. the receipt of a message).
    pub fn emit_at(&self, at: Stamp, kind: EventKind) {
        let event = Event {
            at,
            trial: self.trial(),
            kind,
        };
        self.inner.lock().unwrap().push(event);
    }

    /// Appends an event that belongs to a given trial (derived after the fact, e.g. from the ledger).
    pub fn emit_for_trial(&self, trial: u32, at: Stamp, kind: EventKind) {
        self.inner.lock().unwrap().push(Event { at, trial, kind });
    }

    /// The events appended after the first `seen` (in the order they were appended), and how many there are now.
    pub fn since(&self, seen: usize) -> (Vec<Event>, usize) {
        let g = self.inner.lock().unwrap();
        (
            g.get(seen..).map(<[Event]>::to_vec).unwrap_or_default(),
            g.len(),
        )
    }

    /// All events so far, ordered by their stamp.
    pub fn snapshot(&self) -> Vec<Event> {
        let mut v = self.inner.lock().unwrap().clone();
        v.sort_by_key(|e| e.at);
        v
    }
}
