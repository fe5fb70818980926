//! Scenario fault kinds mapped onto the Kubernetes primitives, selector resolution against the live cluster, the
//! revert of journaled steps, and the dry-run plan.

use std::time::{SystemTime, UNIX_EPOCH};

use ::kube::api::ListParams;
use k8s_openapi::api::core::v1::Pod;

use super::{
    api_error, chaos_mesh, drain, partition, pod_kill, pod_name, pod_node, Cluster, KubeTarget,
};
use crate::fault::journal::Journal;
use crate::fault::{ActiveFault, RevertStep};
use crate::scenario::{
    ComponentKind, FaultKind, FaultSpec, NodeSelector, PartitionDirection, Role,
};
use crate::target::TargetError;

impl KubeTarget {
    /// The node holding the role; a replica is the first member node (name order) that is not the primary's.
    pub async fn role_node(
        &self,
        component: ComponentKind,
        role: Role,
    ) -> Result<String, TargetError> {
        let primary = self.primary_pod(component).await?;
        let node = pod_node(&primary).map(str::to_string).ok_or_else(|| {
            TargetError::Fault(format!(
                "the {component} primary pod {} is not scheduled",
                pod_name(&primary)
            ))
        })?;
        match role {
            Role::Primary => Ok(node),
            Role::Replica => self
                .topology()
                .members(component)
                .iter()
                .find(|n| **n != node)
                .cloned()
                .ok_or_else(|| TargetError::Fault(format!("{component} has no replica"))),
        }
    }

    /// Resolves a selector to node names now (the primary moves between trials).
    pub async fn resolve(&self, selector: &NodeSelector) -> Result<Vec<String>, TargetError> {
        let t = self.topology();
        let zone_nodes = |z: &str| -> Result<Vec<String>, TargetError> {
            let nodes: Vec<String> = t.nodes_in_zone(z).iter().map(|n| n.name.clone()).collect();
            if nodes.is_empty() {
                return Err(TargetError::Fault(format!(
                    "zone `{z}` has no worker node in {} (nodes carry topology.kubernetes.io/zone)",
                    t.name
                )));
            }
            Ok(nodes)
        };
        match selector {
            NodeSelector::Node(n) => match t.node(n) {
                Some(_) => Ok(vec![n.clone()]),
                None => Err(TargetError::Fault(format!(
                    "node `{n}` is not a worker node of {}",
                    t.name
                ))),
            },
            NodeSelector::Role { component, role } => {
                Ok(vec![self.role_node(*component, *role).await?])
            }
            NodeSelector::Zone(z) => zone_nodes(z),
            NodeSelector::ZoneOf { component, role } => {
                let node = self.role_node(*component, *role).await?;
                let zone = t.node(&node).map(|n| n.zone.clone()).unwrap_or_default();
                zone_nodes(&zone)
            }
        }
    }

    async fn resolve_all(&self, selectors: &[NodeSelector]) -> Result<Vec<String>, TargetError> {
        let mut nodes: Vec<String> = Vec::new();
        for s in selectors {
            for n in self.resolve(s).await? {
                if !nodes.contains(&n) {
                    nodes.push(n);
                }
            }
        }
        Ok(nodes)
    }

    /// The pods a process fault hits: the role's pod itself, or the component's pods on the selected nodes.
    async fn process_pods(
        &self,
        component: ComponentKind,
        selector: &NodeSelector,
    ) -> Result<Vec<String>, TargetError> {
        if let NodeSelector::Role {
            component: c,
            role: Role::Primary,
        } = selector
        {
            if *c == component {
                return Ok(vec![
                    pod_name(&self.primary_pod(component).await?).to_string()
                ]);
            }
        }
        let nodes = self.resolve(selector).await?;
        let pods: Vec<String> = self
            .component_pods(component)
            .await?
            .iter()
            .filter(|p| pod_node(p).is_some_and(|n| nodes.iter().any(|x| x == n)))
            .map(|p| pod_name(p).to_string())
            .collect();
        if pods.is_empty() {
            return Err(TargetError::Fault(format!(
                "no {component} pod runs on {}",
                nodes.join(", ")
            )));
        }
        Ok(pods)
    }

    /// The namespace's pods on the nodes, and on every other node.
    async fn pods_split(
        &self,
        nodes: &[String],
    ) -> Result<(Vec<String>, Vec<String>), TargetError> {
        let all: Vec<Pod> = self
            .pods()
            .list(&ListParams::default())
            .await
            .map_err(|e| api_error(&format!("cannot list the pods of {}", self.namespace), e))?
            .items;
        let (inside, outside): (Vec<&Pod>, Vec<&Pod>) = all
            .iter()
            .filter(|p| pod_node(p).is_some())
            .partition(|p| pod_node(p).is_some_and(|n| nodes.iter().any(|x| x == n)));
        let names = |v: Vec<&Pod>| v.iter().map(|p| pod_name(p).to_string()).collect();
        Ok((names(inside), names(outside)))
    }

    /// Journals how to revert the fault, then applies it through the Kubernetes (and, on kind, Docker) API.
    pub async fn apply_fault(
        &self,
        journal: &Journal,
        kind: &FaultKind,
    ) -> Result<ActiveFault, TargetError> {
        self.ensure_chaos_allowed().await?;
        match kind {
            FaultKind::ProcessKill { component, target } => {
                let pods = self.process_pods(*component, target).await?;
                pod_kill::apply(self, journal, &pods).await
            }
            FaultKind::ProcessPause { .. } => Err(TargetError::Fault(
                "process-pause is not available on the Kubernetes target (the API cannot SIGSTOP a container); \
                 use process-kill, partition or node faults"
                    .into(),
            )),
            FaultKind::Partition { side_a, side_b, direction } => {
                let a_nodes = self.resolve_all(side_a).await?;
                let (a, rest) = self.pods_split(&a_nodes).await?;
                let b = if side_b.is_empty() {
                    rest
                } else {
                    let b_nodes = self.resolve_all(side_b).await?;
                    self.pods_split(&b_nodes).await?.0
                };
                partition::apply(self, journal, "partition", &fault_id(), &a, &b, *direction, &[]).await
            }
            FaultKind::NodeLoss { target } | FaultKind::ZoneLoss { target } => {
                let nodes = self.resolve(target).await?;
                match &self.cluster {
                    Cluster::Kind { docker } => node_loss_kind(docker, journal, kind.name(), &nodes).await,
                    Cluster::Existing => {
                        let (inside, outside) = self.pods_split(&nodes).await?;
                        partition::apply(
                            self,
                            journal,
                            kind.name(),
                            &fault_id(),
                            &inside,
                            &outside,
                            PartitionDirection::Both,
                            &nodes,
                        )
                        .await
                    }
                }
            }
            FaultKind::NodeDrain { target } => {
                let nodes = self.resolve(target).await?;
                drain::apply(self, journal, &nodes).await
            }
        }
    }

    /// Executes revert steps; every step runs even if an earlier one failed. Local-stack steps are refused.
    pub async fn revert(&self, steps: &[RevertStep]) -> Result<(), String> {
        let mut errors = Vec::new();
        for step in steps {
            let r = match step {
                RevertStep::KubePodReady { namespace, pod } => {
                    pod_kill::wait_ready(self, namespace, pod).await
                }
                RevertStep::KubeUncordon { node } => drain::uncordon(self, node).await,
                RevertStep::KubeDeleteNetworkPolicy { namespace, name } => {
                    partition::delete_policy(self, namespace, name).await
                }
                RevertStep::KubeDeleteNetworkChaos { namespace, name } => {
                    chaos_mesh::delete(self, namespace, name).await
                }
                RevertStep::KubeUnlabelPod {
                    namespace,
                    pod,
                    label,
                } => partition::unlabel(self, namespace, pod, label).await,
                RevertStep::DockerStart { container } => match &self.cluster {
                    Cluster::Kind { docker } => docker.start(container).await,
                    Cluster::Existing => Err(format!(
                        "cannot start node container {container}: this is not a kind cluster"
                    )),
                },
                local => Err(format!(
                    "{local:?} belongs to the local stack; the Kubernetes target cannot revert it \
                     (run the revert with --target local)"
                )),
            };
            if let Err(e) = r {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// The dry-run plan: for each fault, which pods or nodes it would hit if applied now.
    pub async fn plan(&self, faults: &[FaultSpec]) -> Result<Vec<String>, TargetError> {
        let mut lines = Vec::new();
        for f in faults {
            let at = humantime::format_duration(f.at);
            let what = match &f.kind {
                FaultKind::ProcessKill { component, target } => format!(
                    "delete pod(s) {} (grace period 0)",
                    self.process_pods(*component, target).await?.join(", ")
                ),
                FaultKind::ProcessPause { .. } => {
                    "not available on the Kubernetes target (the run would fail here)".to_string()
                }
                FaultKind::Partition {
                    side_a,
                    side_b,
                    direction,
                } => {
                    let a_nodes = self.resolve_all(side_a).await?;
                    let (a, rest) = self.pods_split(&a_nodes).await?;
                    let b = if side_b.is_empty() {
                        rest
                    } else {
                        self.pods_split(&self.resolve_all(side_b).await?).await?.0
                    };
                    format!(
                        "{} between pods [{}] and [{}]",
                        partition::choose(self).await?.mechanism(*direction),
                        a.join(", "),
                        b.join(", ")
                    )
                }
                FaultKind::NodeLoss { target } | FaultKind::ZoneLoss { target } => {
                    let nodes = self.resolve(target).await?;
                    match self.cluster {
                        Cluster::Kind { .. } => {
                            format!("docker stop node container(s) {}", nodes.join(", "))
                        }
                        Cluster::Existing => {
                            let (inside, _) = self.pods_split(&nodes).await?;
                            format!(
                                "cordon {} and isolate their pods [{}] with a {}",
                                nodes.join(", "),
                                inside.join(", "),
                                partition::choose(self)
                                    .await?
                                    .mechanism(PartitionDirection::Both)
                            )
                        }
                    }
                }
                FaultKind::NodeDrain { target } => {
                    let nodes = self.resolve(target).await?;
                    let (inside, _) = self.pods_split(&nodes).await?;
                    format!(
                        "cordon {} and evict pods [{}]",
                        nodes.join(", "),
                        inside.join(", ")
                    )
                }
            };
            lines.push(format!("at +{at}: {}: {what}", f.kind.name()));
        }
        Ok(lines)
    }
}

/// Stops the kind node containers (journaled first; reverted by starting them).
async fn node_loss_kind(
    docker: &super::DockerApi,
    journal: &Journal,
    name: &str,
    nodes: &[String],
) -> Result<ActiveFault, TargetError> {
    let steps = nodes
        .iter()
        .map(|n| RevertStep::DockerStart {
            container: n.clone(),
        })
        .collect();
    let description = format!("docker stop -t 0 {}", nodes.join(" "));
    let entry = crate::fault::journal_before_applying(journal, name, &description, steps)?;
    let applied_at = std::time::Instant::now();
    for n in nodes {
        docker.stop(n).await.map_err(TargetError::Fault)?;
    }
    Ok(ActiveFault::new(
        entry,
        description,
        nodes.to_vec(),
        applied_at,
    ))
}

/// A short id for the objects of one fault (valid as a label value and in object names).
fn fault_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}{:06x}", std::process::id(), nanos & 0xff_ffff)
}
