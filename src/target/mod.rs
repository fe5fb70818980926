//! Where the stack lives. A target knows its nodes (zones, regions), which node holds which role, how clients
//! reach each component, how to tell the stack is healthy, and how to apply and revert fault primitives.
//! `local` implements it with network namespaces; a Kubernetes target implements the same trait later.

pub mod local;

use std::future::Future;
use std::time::Duration;

use crate::component::Component;
use crate::fault::journal::Journal;
use crate::fault::{ActiveFault, RevertStep};
use crate::scenario::{ComponentKind, FaultKind};
use crate::topology::Topology;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The environment cannot do what was asked (rights, packages, a stack that does not come up).
    #[error("{0}")]
    Environment(String),
    /// A fault could not be planned or applied (e.g. no current primary to kill).
    #[error("{0}")]
    Fault(String),
}

pub trait Target {
    fn topology(&self) -> &Topology;
    /// The component as clients and probes reach it on this target.
    fn component(&self, kind: ComponentKind) -> Box<dyn Component>;
    /// The node currently holding the primary/master role, by the servers' own view.
    fn role_holder(&self, component: ComponentKind) -> impl Future<Output = Option<String>>;
    /// Ok with a one-line summary once every member is back and the replication groups agree.
    fn wait_healthy(&self, timeout: Duration) -> impl Future<Output = Result<String, String>>;
    fn fingerprint(&self) -> serde_json::Value;
    /// Journals how to revert the fault, then applies it.
    fn apply_fault(
        &self,
        journal: &Journal,
        fault: &FaultKind,
    ) -> impl Future<Output = Result<ActiveFault, TargetError>>;
    /// Executes revert steps (idempotent: reverting something already reverted is harmless).
    fn revert(&self, steps: &[RevertStep]) -> impl Future<Output = Result<(), String>>;
    /// Server log lines relevant to the log-agreement check: (wall time, line) for the named event.
    fn server_log_lines(
        &self,
        component: ComponentKind,
        event: &str,
    ) -> Vec<(std::time::SystemTime, String)>;
}
