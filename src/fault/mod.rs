//! Faults: each kind plans its revert steps, journals them, then applies itself to the target. Revert steps are
//! data, so a crashed run's faults can be reverted by `faultline recover` from the journal alone.

pub mod bandwidth;
pub mod corruption;
pub mod drain;
pub mod journal;
pub mod kill;
pub mod latency;
pub mod node_loss;
pub mod partition;
pub mod pause;
pub mod plan;

use serde::{Deserialize, Serialize};

use crate::scenario::{ComponentKind, NodeSelector, Role};
use crate::targets::local::ProcessKind;
use crate::targets::{Target, TargetError};

/// One step of a revert, executed in order by the target. Idempotent by construction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum RevertStep {
    /// Delete faultline's nft table in the node's namespace.
    DeleteRules { node: String },
    /// SIGCONT every process of the member.
    Continue { node: String, process: ProcessKind },
    /// Bring the node's link up.
    LinkUp { node: String },
    /// Thaw the member's cgroup (frozen by a node pause).
    Thaw { node: String, process: ProcessKind },
    /// Remove faultline's traffic shaping from the node's interface.
    DeleteShaping { node: String },
    /// Delete the node's latency rules of `queue`, then stop the delay agent bound to it (found by its command
    /// line in the node's namespace), which releases the packets it holds.
    StopDelay { node: String, queue: u16 },
    /// Start the member again if it is not running.
    Restart { node: String, process: ProcessKind },
    /// Put Patroni's dynamic `synchronous_node_count` back to `count` (None: remove it, Patroni's default of 1),
    /// through the first member that accepts it. A switchover to an asynchronous replica raises it for a moment
    /// (see `drain::switchover_postgres`); a crash in that moment must not leave it raised.
    RestoreSynchronousNodeCount { count: Option<u64> },
    /// A drill's PostgreSQL restore that did not complete: run it again to completion (bootstrap on `node` from
    /// the repository, to `target` in pgBackRest's form, or to the end of the archive).
    CompletePostgresRestore {
        node: String,
        target: Option<String>,
    },
    /// A drill's Redis restore that did not complete: run it again from the same RDB copy onto `node`.
    CompleteRedisRestore { node: String, file: String },
    /// Nodes a `destroy` removed come back empty: links up, the surviving clusters made to serve if no restore
    /// did it (etcd formed anew from the survivors, PostgreSQL restored from the repository, Redis re-seated on a
    /// survivor), then each node rejoins them (etcd member add, Patroni replicas from the leader, Redis replicas,
    /// sentinels afresh), so the stack has its default layout again.
    RebuildLostNodes { nodes: Vec<String> },
    /// A drill's Qdrant restore that did not complete: recover every peer from the same snapshot set again.
    CompleteQdrantRestore {
        set: String,
        /// The restore forms a new cluster on the surviving peers (they lost their quorum) from the set's shard
        /// snapshots, instead of recovering each peer from its own snapshot.
        #[serde(default)]
        new_cluster: bool,
    },
    /// Kubernetes: wait (with the target's deadline) until the StatefulSet has recreated the pod and it is Ready.
    KubePodReady { namespace: String, pod: String },
    /// Kubernetes (kind): wait (with the target's deadline) until the kubelet has replaced the `killed` containers
    /// of the pod (container IDs) with new ones and the pod is Ready again.
    KubeContainersRestarted {
        namespace: String,
        pod: String,
        killed: Vec<String>,
    },
    /// Kubernetes: mark the node schedulable again.
    KubeUncordon { node: String },
    /// Kubernetes: delete faultline's NetworkPolicy (absent = already reverted).
    KubeDeleteNetworkPolicy { namespace: String, name: String },
    /// Kubernetes: delete faultline's Chaos Mesh NetworkChaos and wait (with the target's deadline) until it is gone,
    /// which is when Chaos Mesh has restored the pods' network (absent = already reverted).
    KubeDeleteNetworkChaos { namespace: String, name: String },
    /// Kubernetes: remove faultline's label from the pod (absent pod or label = already reverted).
    KubeUnlabelPod {
        namespace: String,
        pod: String,
        label: String,
    },
    /// Docker (kind nodes): start the node container again (already running = nothing to do).
    DockerStart { container: String },
    /// Docker (kind nodes): unpause the node container (not paused = nothing to do).
    DockerUnpause { container: String },
    /// Docker (kind nodes): connect the node container to its network again with the addresses it had (kubelet
    /// certificates and the other nodes know it by them); already connected = nothing to do.
    DockerConnect {
        container: String,
        network: String,
        ipv4: Option<String>,
        ipv6: Option<String>,
    },
}

impl RevertStep {
    /// Whether the Kubernetes target (rather than the local stack) executes this step.
    pub fn is_kube(&self) -> bool {
        matches!(
            self,
            RevertStep::KubePodReady { .. }
                | RevertStep::KubeContainersRestarted { .. }
                | RevertStep::KubeUncordon { .. }
                | RevertStep::KubeDeleteNetworkPolicy { .. }
                | RevertStep::KubeDeleteNetworkChaos { .. }
                | RevertStep::KubeUnlabelPod { .. }
                | RevertStep::DockerStart { .. }
                | RevertStep::DockerUnpause { .. }
                | RevertStep::DockerConnect { .. }
        )
    }
}

/// A fault that is applied; revert it with `Target::revert(&fault.steps)` and close its journal entry.
#[derive(Clone, Debug)]
pub struct ActiveFault {
    pub journal_id: String,
    pub name: String,
    pub description: String,
    pub victims: Vec<String>,
    pub steps: Vec<RevertStep>,
    /// When faultline started applying the fault (its first action).
    pub requested_at: std::time::Instant,
    /// When the fault had taken effect: the processes gone after cgroup.kill, the nft rules committed, the link
    /// down, the cgroup frozen, the pod deletion accepted, the container stopped. Every measurement counts from
    /// this instant, so writes that succeeded while the fault was still being put in place cannot satisfy RTO.
    pub effective_at: std::time::Instant,
}

impl ActiveFault {
    /// The applied fault whose action started at `requested_at` and has taken effect just now.
    pub fn effective_now(
        entry: journal::JournalEntry,
        description: String,
        victims: Vec<String>,
        requested_at: std::time::Instant,
    ) -> Self {
        Self::new(
            entry,
            description,
            victims,
            requested_at,
            std::time::Instant::now(),
        )
    }

    /// The applied fault for a journal entry whose action started at `requested_at` and had taken effect at
    /// `effective_at`.
    pub fn new(
        entry: journal::JournalEntry,
        description: String,
        victims: Vec<String>,
        requested_at: std::time::Instant,
        effective_at: std::time::Instant,
    ) -> Self {
        ActiveFault {
            journal_id: entry.id,
            name: entry.fault,
            description,
            victims,
            steps: entry.steps,
            requested_at,
            effective_at,
        }
    }
}

/// `patroni@n1`-style names of the members a process fault hits.
pub fn member_victims(nodes: &[String], process: ProcessKind) -> Vec<String> {
    nodes
        .iter()
        .map(|n| format!("{}@{n}", process.name()))
        .collect()
}

/// Writes and syncs the journal entry that says how to revert the fault; the fault may be applied once this
/// returns.
pub fn journal_before_applying(
    journal: &journal::Journal,
    name: &str,
    description: &str,
    steps: Vec<RevertStep>,
) -> Result<journal::JournalEntry, TargetError> {
    journal
        .open(name, description, steps)
        .map_err(|e| TargetError::Environment(format!("cannot write the fault journal: {e}")))
}

/// Resolves a selector to node names at the moment the fault is applied (the primary moves between trials).
pub async fn resolve<T: Target>(
    target: &T,
    selector: &NodeSelector,
) -> Result<Vec<String>, TargetError> {
    let t = target.topology();
    match selector {
        NodeSelector::Node(n) => {
            if t.node(n).is_none() {
                return Err(TargetError::Fault(format!(
                    "node `{n}` is not in topology `{}`",
                    t.name
                )));
            }
            Ok(vec![n.clone()])
        }
        NodeSelector::Role { component, role } => {
            Ok(vec![role_node(target, *component, *role).await?])
        }
        NodeSelector::Zone(area) | NodeSelector::Region(area) => {
            let is_region = matches!(selector, NodeSelector::Region(_));
            let nodes = t.names_in(area, is_region);
            if nodes.is_empty() {
                let what = if is_region { "region" } else { "zone" };
                return Err(TargetError::Fault(format!(
                    "{what} `{area}` has no node in topology `{}`",
                    t.name
                )));
            }
            Ok(nodes)
        }
        NodeSelector::ZoneOf { component, role } | NodeSelector::RegionOf { component, role } => {
            let node = role_node(target, *component, *role).await?;
            let is_region = matches!(selector, NodeSelector::RegionOf { .. });
            let area = t.node(&node).map(|n| n.area(is_region)).unwrap_or_default();
            Ok(t.names_in(area, is_region))
        }
    }
}

/// The primary, the first replica in topology order, or the synchronous replica.
pub async fn role_node<T: Target>(
    target: &T,
    component: ComponentKind,
    role: Role,
) -> Result<String, TargetError> {
    let primary = target.role_holder(component).await.ok_or_else(|| {
        TargetError::Fault(format!(
            "no current primary for {component}: the servers do not agree on one"
        ))
    })?;
    match role {
        Role::Primary => Ok(primary),
        Role::SyncReplica => target.sync_replica(component).await.ok_or_else(|| {
            TargetError::Fault(format!(
                "{component} has no synchronous replica: Patroni names no sync standby"
            ))
        }),
        Role::Replica => target
            .topology()
            .members(component)
            .iter()
            .find(|n| **n != primary)
            .cloned()
            .ok_or_else(|| TargetError::Fault(format!("{component} has no replica"))),
    }
}
