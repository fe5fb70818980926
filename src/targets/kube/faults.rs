//! Scenario fault kinds mapped onto the Kubernetes primitives, selector resolution against the live cluster, the
//! revert of journaled steps, and the dry-run plan.

use std::time::{SystemTime, UNIX_EPOCH};

use ::kube::api::ListParams;
use k8s_openapi::api::core::v1::Pod;

use super::docker::{NetworkAddrs, KIND_NETWORK};
use super::partition::SidePods;
use super::traffic::{self, Shaping};
use super::{
    api_error, chaos_mesh, drain, partition, pod_kill, pod_name, pod_node, Cluster, KubeTarget,
};
use crate::fault::journal::Journal;
use crate::fault::{ActiveFault, RevertStep};
use crate::scenario::{
    ComponentKind, FaultKind, FaultSpec, NodeLossMethod, NodeSelector, PartitionDirection, Role,
};
use crate::targets::TargetError;

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
            Role::SyncReplica => crate::targets::Target::sync_replica(self, component)
                .await
                .ok_or_else(|| {
                    TargetError::Fault(format!(
                        "{component} has no synchronous replica: Patroni names no sync standby"
                    ))
                }),
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
        let area_nodes = |area: &str, is_region: bool| -> Result<Vec<String>, TargetError> {
            let nodes = t.names_in(area, is_region);
            if nodes.is_empty() {
                let (what, label) = if is_region {
                    ("region", "topology.kubernetes.io/region")
                } else {
                    ("zone", "topology.kubernetes.io/zone")
                };
                return Err(TargetError::Fault(format!(
                    "{what} `{area}` has no worker node in {} (nodes carry {label})",
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
            NodeSelector::Zone(z) => area_nodes(z, false),
            NodeSelector::Region(r) => area_nodes(r, true),
            NodeSelector::ZoneOf { component, role }
            | NodeSelector::RegionOf { component, role } => {
                let is_region = matches!(selector, NodeSelector::RegionOf { .. });
                let node = self.role_node(*component, *role).await?;
                let area = t.node(&node).map(|n| n.area(is_region)).unwrap_or_default();
                area_nodes(area, is_region)
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

    /// The namespace's pods on the nodes, and on every other node: (name, pod IP once it has one).
    async fn pods_split(&self, nodes: &[String]) -> Result<(SidePods, SidePods), TargetError> {
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
        let side = |v: Vec<&Pod>| SidePods {
            names: v.iter().map(|p| pod_name(p).to_string()).collect(),
            ips: v
                .iter()
                .filter_map(|p| p.status.as_ref()?.pod_ip.as_deref()?.parse().ok())
                .collect(),
        };
        Ok((side(inside), side(outside)))
    }

    /// The pods of a traffic fault's sides (side B empty: every other pod).
    async fn traffic_sides(
        &self,
        side_a: &[NodeSelector],
        side_b: &[NodeSelector],
    ) -> Result<(SidePods, SidePods), TargetError> {
        let (a, rest) = self.pods_split(&self.resolve_all(side_a).await?).await?;
        let b = if side_b.is_empty() {
            rest
        } else {
            self.pods_split(&self.resolve_all(side_b).await?).await?.0
        };
        Ok((a, b))
    }

    /// The pods of a partition's sides (side B empty: every other pod) and which side holds Patroni's leader.
    async fn partition_sides(
        &self,
        side_a: &[NodeSelector],
        side_b: &[NodeSelector],
    ) -> Result<partition::Sides, TargetError> {
        let a_nodes = self.resolve_all(side_a).await?;
        let (a, rest) = self.pods_split(&a_nodes).await?;
        let b = if side_b.is_empty() {
            rest
        } else {
            self.pods_split(&self.resolve_all(side_b).await?).await?.0
        };
        let dcs = self.dcs_for_partition(&a.names, &b.names, false).await?;
        Ok(partition::Sides { a, b, dcs })
    }

    /// The nodes' pods against every other pod (a zone or region isolated on an existing cluster).
    async fn isolation_sides(&self, nodes: &[String]) -> Result<partition::Sides, TargetError> {
        let (a, b) = self.pods_split(nodes).await?;
        let dcs = self.dcs_for_partition(&a.names, &b.names, true).await?;
        Ok(partition::Sides { a, b, dcs })
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
            FaultKind::Bandwidth { .. }
            | FaultKind::Latency { .. }
            | FaultKind::Partition { loss_pct: 0..=99, .. } => {
                let (side_a, side_b, direction, shaping) =
                    traffic_shaping(kind).expect("a traffic fault");
                let (a, b) = self.traffic_sides(side_a, side_b).await?;
                traffic::apply(self, journal, &fault_id(), (&a, &b), direction, shaping).await
            }
            FaultKind::RouterProcess { process, .. } => Err(TargetError::Fault(format!(
                "{} is a process of the local stack's routing layer; the Kubernetes target runs none",
                process.name()
            ))),
            FaultKind::ProcessPause { .. } => Err(TargetError::Fault(
                "process-pause is not available on the Kubernetes target (the API cannot SIGSTOP a container); \
                 use process-kill, partition or node faults"
                    .into(),
            )),
            FaultKind::Corruption { .. } | FaultKind::RepositoryOutage => Err(TargetError::Fault(
                "corruption is a drill fault, and drills run on the local stack only".into(),
            )),
            FaultKind::Partition { side_a, side_b, direction, .. } => {
                let sides = self.partition_sides(side_a, side_b).await?;
                partition::apply(self, journal, "partition", &fault_id(), &sides, *direction, &[]).await
            }
            FaultKind::NodeLoss { target, method }
            | FaultKind::ZoneLoss { target, method }
            | FaultKind::RegionLoss { target, method } => {
                if *method == NodeLossMethod::Destroy {
                    return Err(TargetError::Environment(DESTROY_REFUSED.into()));
                }
                let nodes = self.resolve(target).await?;
                match &self.cluster {
                    Cluster::Kind { docker } => {
                        node_loss_kind(docker, journal, kind.name(), &nodes, *method).await
                    }
                    Cluster::Existing => {
                        let sides = self.isolation_sides(&nodes).await?;
                        let mut active = partition::apply(
                            self,
                            journal,
                            kind.name(),
                            &fault_id(),
                            &sides,
                            PartitionDirection::Both,
                            &nodes,
                        )
                        .await?;
                        active.description =
                            format!("{} ({})", active.description, existing_cluster_note(*method));
                        Ok(active)
                    }
                }
            }
            FaultKind::NodeDrain { target } => {
                let nodes = self.resolve(target).await?;
                drain::apply(self, journal, &nodes).await
            }
        }
    }

    /// The Docker engine of a kind cluster; node containers of other clusters are not faultline's to touch.
    fn docker(&self, container: &str) -> Result<&super::DockerApi, String> {
        match &self.cluster {
            Cluster::Kind { docker } => Ok(docker),
            Cluster::Existing => Err(format!(
                "cannot revert node container {container} through Docker: this is not a kind cluster"
            )),
        }
    }

    /// Executes revert steps; every step runs even if an earlier one failed. Local-stack steps are refused.
    pub async fn revert(&self, steps: &[RevertStep]) -> Result<(), String> {
        let mut errors = Vec::new();
        for step in steps {
            let r = match step {
                RevertStep::KubePodReady { namespace, pod } => {
                    pod_kill::wait_ready(self, namespace, pod, &[]).await
                }
                RevertStep::KubeContainersRestarted {
                    namespace,
                    pod,
                    killed,
                } => pod_kill::wait_ready(self, namespace, pod, killed).await,
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
                RevertStep::DockerStart { container } => match self.docker(container) {
                    Ok(docker) => docker.start(container).await,
                    Err(e) => Err(e),
                },
                RevertStep::DockerUnpause { container } => match self.docker(container) {
                    Ok(docker) => docker.unpause(container).await,
                    Err(e) => Err(e),
                },
                RevertStep::DockerConnect {
                    container,
                    network,
                    ipv4,
                    ipv6,
                } => match self.docker(container) {
                    Ok(docker) => {
                        let addrs = NetworkAddrs {
                            ipv4: ipv4.clone(),
                            ipv6: ipv6.clone(),
                        };
                        docker.connect(container, network, &addrs).await
                    }
                    Err(e) => Err(e),
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
                    "{}: pod(s) {}",
                    pod_kill::mechanism(&self.cluster),
                    self.process_pods(*component, target).await?.join(", ")
                ),
                FaultKind::ProcessPause { .. }
                | FaultKind::RouterProcess { .. }
                | FaultKind::Corruption { .. }
                | FaultKind::RepositoryOutage => {
                    "not available on the Kubernetes target (the run would fail here)".to_string()
                }
                FaultKind::Bandwidth { .. }
                | FaultKind::Latency { .. }
                | FaultKind::Partition {
                    loss_pct: 0..=99, ..
                } => {
                    let (side_a, side_b, direction, shaping) =
                        traffic_shaping(&f.kind).expect("a traffic fault");
                    let (a, b) = self.traffic_sides(side_a, side_b).await?;
                    let installed = match traffic::require_chaos_mesh(self, shaping).await {
                        Ok(()) => String::new(),
                        Err(e) => format!(" (the run would fail here: {e})"),
                    };
                    format!(
                        "{} by Chaos Mesh NetworkChaos (action {}: {}, direction {}) between pods [{}] and [{}]{installed}",
                        shaping.words(),
                        shaping.action(),
                        shaping.mechanism(),
                        chaos_mesh::direction(direction),
                        a.names.join(", "),
                        b.names.join(", ")
                    )
                }
                FaultKind::Partition {
                    side_a,
                    side_b,
                    direction,
                    ..
                } => {
                    let sides = self.partition_sides(side_a, side_b).await?;
                    let backend = partition::choose(self).await?;
                    format!(
                        "{} between pods [{}] and [{}]{}",
                        backend.mechanism(*direction),
                        sides.a.names.join(", "),
                        sides.b.names.join(", "),
                        dcs_words(&sides, &backend)
                    )
                }
                FaultKind::NodeLoss { target, method }
                | FaultKind::ZoneLoss { target, method }
                | FaultKind::RegionLoss { target, method } => {
                    let nodes = self.resolve(target).await?;
                    match self.cluster {
                        Cluster::Kind { .. } => format!(
                            "{} node container(s) {}",
                            kind_loss_command(*method),
                            nodes.join(", ")
                        ),
                        Cluster::Existing => {
                            let sides = self.isolation_sides(&nodes).await?;
                            let backend = partition::choose(self).await?;
                            format!(
                                "cordon {} and isolate their pods [{}] with a {} ({}){}",
                                nodes.join(", "),
                                sides.a.names.join(", "),
                                backend.mechanism(PartitionDirection::Both),
                                existing_cluster_note(*method),
                                dcs_words(&sides, &backend)
                            )
                        }
                    }
                }
                FaultKind::NodeDrain { target } => {
                    let nodes = self.resolve(target).await?;
                    let inside = self.pods_split(&nodes).await?.0.names;
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

/// What the partition does to Patroni's DCS, as a clause for the plan line.
fn dcs_words(sides: &partition::Sides, backend: &partition::ChosenBackend) -> String {
    sides
        .dcs
        .describe(matches!(
            backend,
            partition::ChosenBackend::NetworkPolicy { .. }
        ))
        .map(|d| format!("; {d}"))
        .unwrap_or_default()
}

/// Why `method: destroy` does not run on Kubernetes.
const DESTROY_REFUSED: &str = "method destroy removes nodes' data directories and needs a restore to bring service \
     back; faultline runs it only on the local stack (on Kubernetes, write the region loss with method stop)";

/// What a loss method does to kind node containers, as the docker command that does the same.
fn kind_loss_command(method: NodeLossMethod) -> String {
    match method {
        NodeLossMethod::Stop => "docker stop -t 0".into(),
        NodeLossMethod::Pause => "docker pause".into(),
        NodeLossMethod::Disconnect => format!("docker network disconnect --force {KIND_NETWORK}"),
        NodeLossMethod::Destroy => "(refused: destroy is a local-stack method)".into(),
    }
}

/// On a cluster faultline did not create, nodes cannot be stopped, paused or unplugged: every method becomes
/// cordon + isolation of the nodes' pods, which is closest to `disconnect` (the pods keep running).
fn existing_cluster_note(method: NodeLossMethod) -> String {
    match method {
        NodeLossMethod::Disconnect => "method disconnect".into(),
        m => format!(
            "method {} cannot stop or freeze nodes of an existing cluster; the pods are isolated and keep running",
            m.name()
        ),
    }
}

/// Stops, pauses or disconnects the kind node containers (journaled first, with what restores each).
async fn node_loss_kind(
    docker: &super::DockerApi,
    journal: &Journal,
    name: &str,
    nodes: &[String],
    method: NodeLossMethod,
) -> Result<ActiveFault, TargetError> {
    let mut steps = Vec::new();
    for n in nodes {
        let container = n.clone();
        steps.push(match method {
            NodeLossMethod::Stop => RevertStep::DockerStart { container },
            NodeLossMethod::Pause => RevertStep::DockerUnpause { container },
            NodeLossMethod::Destroy => {
                return Err(TargetError::Environment(DESTROY_REFUSED.into()))
            }
            NodeLossMethod::Disconnect => {
                // Refused up front where the engine could not give the node its address back; the addresses are
                // read before anything changes, so the revert can.
                docker
                    .check_reconnectable(KIND_NETWORK)
                    .await
                    .map_err(TargetError::Environment)?;
                let addrs = docker
                    .addresses(n, KIND_NETWORK)
                    .await
                    .map_err(TargetError::Fault)?;
                RevertStep::DockerConnect {
                    container,
                    network: KIND_NETWORK.into(),
                    ipv4: addrs.ipv4,
                    ipv6: addrs.ipv6,
                }
            }
        });
    }
    let description = format!("{} {}", kind_loss_command(method), nodes.join(" "));
    let entry = crate::fault::journal_before_applying(journal, name, &description, steps)?;
    let requested_at = std::time::Instant::now();
    for n in nodes {
        match method {
            NodeLossMethod::Stop => docker.stop(n).await,
            NodeLossMethod::Pause => docker.pause(n).await,
            NodeLossMethod::Disconnect => docker.disconnect(n, KIND_NETWORK).await,
            NodeLossMethod::Destroy => Err(DESTROY_REFUSED.into()),
        }
        .map_err(TargetError::Fault)?;
    }
    // Effective once the engine has stopped, paused or disconnected every node container.
    Ok(ActiveFault::effective_now(
        entry,
        description,
        nodes.to_vec(),
        requested_at,
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

/// A latency, loss or bandwidth fault's sides, direction and what Chaos Mesh is to do; None for other faults.
fn traffic_shaping(
    kind: &FaultKind,
) -> Option<(
    &[NodeSelector],
    &[NodeSelector],
    PartitionDirection,
    Shaping,
)> {
    match kind {
        FaultKind::Latency {
            side_a,
            side_b,
            direction,
            delay,
            jitter,
        } => Some((
            side_a,
            side_b,
            *direction,
            Shaping::Delay {
                delay: *delay,
                jitter: *jitter,
            },
        )),
        FaultKind::Bandwidth {
            side_a,
            side_b,
            direction,
            rate_kbit,
        } => Some((
            side_a,
            side_b,
            *direction,
            Shaping::Bandwidth {
                rate_kbit: *rate_kbit,
            },
        )),
        FaultKind::Partition {
            side_a,
            side_b,
            direction,
            loss_pct,
        } if *loss_pct < 100 => {
            Some((side_a, side_b, *direction, Shaping::Loss { pct: *loss_pct }))
        }
        _ => None,
    }
}
