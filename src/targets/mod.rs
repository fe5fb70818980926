//! Where the stack lives. A target knows its nodes (zones, regions), which node holds which role, how clients
//! reach each component, how to tell the stack is healthy, and how to apply and revert fault primitives.
//! `local` implements it with network namespaces, `kube` with the Kubernetes API (a kind cluster or an existing one).

pub mod kube;
pub mod local;

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use crate::component::Component;
use crate::events::EventLog;
use crate::fault::journal::Journal;
use crate::fault::{ActiveFault, RevertStep};
use crate::scenario::{ClientPath, ComponentKind, FaultKind, NodeSelector, Scenario};
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

/// Every component a scenario measures or aims a fault at (a process fault's component, a role selector's).
pub fn components_needed(scenario: &Scenario) -> Vec<ComponentKind> {
    let mut found: Vec<Option<ComponentKind>> =
        scenario.components.iter().copied().map(Some).collect();
    for f in &scenario.faults {
        match &f.kind {
            FaultKind::ProcessKill { component, target }
            | FaultKind::ProcessPause { component, target } => {
                found.extend([Some(*component), target.component()]);
            }
            FaultKind::Partition { side_a, side_b, .. }
            | FaultKind::Bandwidth { side_a, side_b, .. }
            | FaultKind::Latency { side_a, side_b, .. } => {
                found.extend(side_a.iter().chain(side_b).map(NodeSelector::component));
            }
            FaultKind::RouterProcess { target, .. } => {
                found.extend([Some(ComponentKind::Postgres), target.component()]);
            }
            FaultKind::NodeLoss { target, .. }
            | FaultKind::ZoneLoss { target, .. }
            | FaultKind::RegionLoss { target, .. }
            | FaultKind::NodeDrain { target } => found.push(target.component()),
            FaultKind::Corruption { component, .. } => found.push(Some(*component)),
            FaultKind::RepositoryOutage => {}
        }
    }
    let mut out: Vec<ComponentKind> = Vec::new();
    for c in found.into_iter().flatten() {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

pub trait Target {
    fn topology(&self) -> &Topology;
    /// The component as clients and probes reach it on this target.
    fn component(&self, kind: ComponentKind) -> Box<dyn Component>;
    /// The component whose load goes through `path` (the routing layer, for PostgreSQL). A target without a
    /// routing layer serves only `direct`.
    fn client_component(
        &self,
        kind: ComponentKind,
        path: ClientPath,
    ) -> Result<Box<dyn Component>, TargetError> {
        match path {
            ClientPath::Direct => Ok(self.component(kind)),
            p => Err(TargetError::Environment(format!(
                "client_path {} needs a routing layer, which this target does not run (use client_path direct)",
                p.name()
            ))),
        }
    }
    /// The node currently holding the primary/master role, by the servers' own view.
    fn role_holder(&self, component: ComponentKind) -> impl Future<Output = Option<String>>;
    /// The node of the component's synchronous replica (Patroni's sync standby), by the servers' own view.
    fn sync_replica(&self, component: ComponentKind) -> impl Future<Output = Option<String>>;
    /// Ok with a one-line summary once every member is back and the replication groups agree.
    fn wait_healthy(&self, timeout: Duration) -> impl Future<Output = Result<String, String>>;
    fn fingerprint(&self) -> serde_json::Value;
    /// The configuration files the target wrote for the stack's members (name, path), for the evidence bundle.
    fn config_files(&self) -> Vec<(String, std::path::PathBuf)> {
        Vec::new()
    }
    /// The credentials this target knows, so that no report or evidence file can carry them.
    fn secrets(&self) -> Vec<crate::secret::Secret> {
        Vec::new()
    }
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
    ) -> impl Future<Output = Vec<(std::time::SystemTime, String)>>;
    /// Every line of the component's server logs stamped within `around` of `at` (wall time, "node process:
    /// line"), for the evidence bundle's excerpts around each event. Empty where the logs cannot be read.
    fn log_excerpt(
        &self,
        _component: ComponentKind,
        _at: std::time::SystemTime,
        _around: Duration,
    ) -> impl Future<Output = Vec<(std::time::SystemTime, String)>> {
        async { Vec::new() }
    }
    /// Carries out a drill's operator action within `deadline`, journaling what must be completed if it is cut
    /// short. Drills run on the local stack only.
    fn run_action(
        &self,
        _journal: &Journal,
        action: &crate::drill::ActionRequest,
        _deadline: Duration,
    ) -> impl Future<Output = Result<crate::drill::ActionOutcome, String>> {
        let what = format!("{action:?}");
        async move {
            Err(format!(
                "{what}: drills (operator actions) run on the local stack only: faultline does not run backups or                  restores on Kubernetes"
            ))
        }
    }
    /// The restored PostgreSQL cluster's facts for a drill's integrity checks.
    fn postgres_after(
        &self,
        _corruption: Option<crate::scenario::CorruptionKind>,
        _run_id: &str,
    ) -> impl Future<Output = crate::drill::integrity::PostgresAfter> {
        async {
            crate::drill::integrity::PostgresAfter {
                error: Some("drills run on the local stack only".into()),
                ..Default::default()
            }
        }
    }
    /// The tools' log lines about a restore that began at `since` (pgBackRest, PostgreSQL), for the timeline
    /// and the restore's log agreement.
    fn restore_tool_lines(
        &self,
        _component: ComponentKind,
        _since: std::time::SystemTime,
    ) -> impl Future<Output = Vec<crate::drill::tool_logs::ToolLine>> {
        async { Vec::new() }
    }
    /// Starts watching what the platform itself reports about the stack (on Kubernetes: pod readiness and the
    /// namespace's Events) onto the trial's timeline; it stops when `stop` turns true. None where the platform
    /// has nothing of its own to report (the local stack), so the engine runs only the component probe there.
    fn spawn_observer(
        &self,
        _events: EventLog,
        _stop: watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::scenario::parse_scenario;

    #[test]
    fn a_fault_on_a_qdrant_member_needs_qdrant() {
        let text = "name: s\ncomponent: postgres\nbaseline: 1s\nobserve: 5s\nthresholds: [rto_s <= 1]\nfaults:\n";
        let needed = |faults: &str| {
            let s = parse_scenario(&format!("{text}{faults}"), Path::new("s.yaml"), None).unwrap();
            components_needed(&s)
        };
        assert_eq!(
            needed("  - {kind: process-kill, target: {role: primary}}\n"),
            vec![ComponentKind::Postgres]
        );
        assert_eq!(
            needed("  - {kind: process-kill, component: qdrant, target: {node: n1}}\n"),
            vec![ComponentKind::Postgres, ComponentKind::Qdrant]
        );
        assert_eq!(
            needed("  - {kind: partition, side_a: [{role: replica, component: qdrant}]}\n"),
            vec![ComponentKind::Postgres, ComponentKind::Qdrant]
        );
        assert_eq!(
            needed("  - {kind: node-loss, target: {zone_of: {role: primary, component: redis}}}\n"),
            vec![ComponentKind::Postgres, ComponentKind::Redis]
        );
    }
}
