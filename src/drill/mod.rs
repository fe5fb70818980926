//! Drills: scenarios whose runbook has operator actions (`prepare:` and `recovery:` steps) besides faults. The
//! engine runs the steps as timed phases on the run's one clock; the target carries each action out; the
//! integrity checks here judge what the restore left against the ledger.

pub mod integrity;
pub mod runner;
pub mod target_time;
pub mod tool_logs;

use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::backup::BackupType;

/// An action as the target receives it: recovery targets resolved to an instant.
#[derive(Clone, Debug, PartialEq)]
pub enum ActionRequest {
    Backup {
        kind: BackupType,
    },
    /// `target` None = the end of the archive (latest).
    RestorePostgres {
        target: Option<SystemTime>,
    },
    /// From the newest RDB copy in the backup store.
    RestoreRedis,
    /// From the newest Qdrant snapshot set in the backup store taken before `before` (the incident; None =
    /// the newest).
    RestoreQdrant {
        before: Option<SystemTime>,
    },
    /// The PostgreSQL primary and the Redis master onto nodes of this region or zone.
    MoveRoles {
        to: String,
    },
}

/// What an action did, for the timeline and the analysis.
#[derive(Clone, Debug, Default)]
pub struct ActionOutcome {
    /// Named moments inside the action (e.g. "cluster stopped", "pgbackrest restore ended"), in order.
    pub phases: Vec<(String, Instant)>,
    /// When the restored primary first accepted a write (restores only): service resumed.
    pub served_at: Option<Instant>,
    /// When the cluster being replaced had stopped (restores only): a write sent after it can only have been
    /// acknowledged by the restored cluster.
    pub replaced_at: Option<Instant>,
    /// The instant the restored data is from, when the restore decides it (an RDB copy's snapshot instant, Unix
    /// seconds): the restore's recovery point.
    pub restored_point: Option<f64>,
    /// Facts read before the restore changed anything.
    pub before: RestoreFacts,
    /// Human-readable lines (the backup set restored, the node bootstrapped, ...).
    pub notes: Vec<String>,
}

/// What the repository and the cluster looked like when the restore began.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RestoreFacts {
    pub timeline: Option<i64>,
    /// The repository's recoverable window (Unix seconds).
    pub window: Option<(f64, f64)>,
}
