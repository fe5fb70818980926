//! Backups as part of the stack: pgBackRest (continuous WAL archive, full/incremental backups, encryption) for
//! PostgreSQL, RDB snapshots for Redis, and the health figures `faultline status` shows. The target decides where
//! the commands run; this module knows what they are and what their output means.

pub mod health;
pub mod pgbackrest;
pub mod pki;
pub mod qdrant_snapshots;
pub mod redis_rdb;

use serde::Serialize;

/// pgBackRest's backup types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    Full,
    Diff,
    Incr,
}

impl BackupType {
    pub fn name(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Diff => "diff",
            BackupType::Incr => "incr",
        }
    }
}
