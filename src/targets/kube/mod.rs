//! The HA stack on Kubernetes (a kind cluster or an existing one): topology from the cluster's nodes, roles from
//! the servers' own labels, faults through the Kubernetes API (kube-rs) and, for kind nodes, the Docker API.
//!
//! Objects faultline creates carry the label `faultline.dev/owner=faultline`; partitions label the pods of each side
//! `faultline.dev/partition=<id>-a|<id>-b` (see `partition.rs`) and cut them apart with a NetworkPolicy pair or, when
//! Chaos Mesh is installed, a NetworkChaos (`chaos_mesh.rs`). Every fault is journaled before it is applied and
//! reverted from its `RevertStep`s alone.
//!
//! Exercised only against fakes (tests/kube_fake.rs: a tower-test API server, a Docker Engine on a unix socket, a
//! Sentinel and a Qdrant REST endpoint); tests/kube_e2e.rs holds the `#[ignore = "needs a kind cluster"]` runs.

pub mod chaos_mesh;
pub mod dcs;
pub mod deploy;
pub mod docker;
pub mod drain;
pub mod endpoints;
mod faults;
pub mod kind_cluster;
mod observe;
pub mod partition;
pub mod pod_kill;
mod roles;
mod target_impl;
pub mod traffic;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ::kube::api::{Api, ListParams};
use ::kube::Client;
use k8s_openapi::api::core::v1::{Namespace, Node as KubeNode, Pod};

use crate::scenario::ComponentKind;
use crate::targets::TargetError;
use crate::topology::{Network, Node, Placement, Topology};

pub use docker::DockerApi;
pub use endpoints::{NodePorts, PodAddr};
pub use observe::spawn_observer;
pub use partition::PartitionBackend;

/// The namespace label an existing cluster must carry before faultline injects anything into it.
pub const CHAOS_LABEL: &str = "faultline.dev/chaos";
pub const CHAOS_LABEL_VALUE: &str = "allowed";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const REGION_LABEL: &str = "topology.kubernetes.io/region";
const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// Which kind of cluster: kind nodes are Docker containers faultline may stop; an existing cluster must opt in.
#[derive(Clone, Debug)]
pub enum Cluster {
    /// A kind cluster; node containers are reached through the Docker Engine API on this socket.
    Kind { docker: DockerApi },
    /// A cluster faultline did not create: faults only where the namespace carries `faultline.dev/chaos=allowed`.
    Existing,
}

/// Label selectors of the stack's pods (the manifests in kind/ use `app.kubernetes.io/name`).
#[derive(Clone, Debug)]
pub struct StackSelectors {
    pub postgres: String,
    pub redis: String,
    pub sentinel: String,
    pub qdrant: String,
    /// Patroni's Kubernetes DCS: the Endpoints object whose `leader` annotation names the leader pod.
    pub patroni_leader_endpoints: String,
    /// Where Sentinel answers from the harness (kind maps the Sentinel NodePort to 127.0.0.1).
    pub sentinel_addr: SocketAddrV4,
    pub redis_master_name: String,
    /// Where Qdrant's REST API answers from the harness.
    pub qdrant_rest: SocketAddrV4,
}

impl Default for StackSelectors {
    fn default() -> Self {
        StackSelectors {
            postgres: "app.kubernetes.io/name=postgres".into(),
            redis: "app.kubernetes.io/name=redis".into(),
            sentinel: "app.kubernetes.io/name=redis-sentinel".into(),
            qdrant: "app.kubernetes.io/name=qdrant".into(),
            patroni_leader_endpoints: "postgres".into(),
            sentinel_addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 32379),
            redis_master_name: "faultline".into(),
            qdrant_rest: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 30333),
        }
    }
}

impl StackSelectors {
    pub fn of(&self, component: ComponentKind) -> &str {
        match component {
            ComponentKind::Postgres => &self.postgres,
            ComponentKind::Redis => &self.redis,
            ComponentKind::Qdrant => &self.qdrant,
        }
    }
}

/// Deadlines and poll intervals of the Kubernetes waits (every wait has a deadline).
#[derive(Clone, Debug)]
pub struct KubeTiming {
    /// How long an eviction refused by a PodDisruptionBudget (HTTP 429) is retried.
    pub eviction_deadline: Duration,
    pub eviction_retry: Duration,
    /// How long a revert waits for a killed pod to be recreated and Ready.
    pub pod_ready_deadline: Duration,
    /// How long Chaos Mesh may take to report a NetworkChaos injected into every selected pod; the fault is not
    /// "applied" before that.
    pub chaos_injected_deadline: Duration,
    /// How long a reverted NetworkChaos may take to disappear (Chaos Mesh's finalizer restores the pods' network
    /// before the object goes).
    pub chaos_removed_deadline: Duration,
    pub poll: Duration,
}

impl Default for KubeTiming {
    fn default() -> Self {
        KubeTiming {
            eviction_deadline: Duration::from_secs(60),
            eviction_retry: Duration::from_secs(2),
            pod_ready_deadline: Duration::from_secs(180),
            chaos_injected_deadline: Duration::from_secs(30),
            chaos_removed_deadline: Duration::from_secs(30),
            poll: Duration::from_secs(1),
        }
    }
}

/// The stack in one namespace of a cluster.
pub struct KubeTarget {
    pub client: Client,
    pub namespace: String,
    pub cluster: Cluster,
    pub selectors: StackSelectors,
    pub timing: KubeTiming,
    topology: Topology,
    /// Every node's InternalIP, control plane included (partitions must keep the API server reachable).
    node_addrs: Vec<Ipv4Addr>,
    /// Every node's name, control plane included (on kind, the node containers' names).
    node_names: Vec<String>,
    /// The control-plane nodes' InternalIPs (where the API server listens when its Endpoints cannot be read).
    control_plane_addrs: Vec<Ipv4Addr>,
    /// Where clients reach the members: kind's NodePorts on 127.0.0.1, or on a worker's address elsewhere.
    pub ports: NodePorts,
    /// The stack settings the components need (collection spec, synchronous mode); the HA timing itself lives in
    /// the manifests.
    pub settings: crate::settings::StackSettings,
    /// The kubeconfig context, for the fingerprint.
    pub context: Option<String>,
    /// How partitions between pod groups are made (`--partition-backend`).
    pub partition_backend: PartitionBackend,
    /// Per node: kubelet version, container runtime, OS image (from the node list at connect time).
    node_versions: Vec<serde_json::Value>,
    /// The stack's pods and what was read with them, as of the last `refresh`.
    snapshot: std::sync::RwLock<target_impl::Snapshot>,
}

pub(crate) fn api_error(what: &str, e: ::kube::Error) -> TargetError {
    TargetError::Fault(format!("{what}: {e}"))
}

/// The HTTP status of a Kubernetes API error response, if it was one.
pub(crate) fn status_code(e: &::kube::Error) -> Option<u16> {
    match e {
        ::kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Calls `check` every `poll` until it returns `Ok`, or `deadline` has passed: then the last `Err` (what was seen
/// instead) is returned, for the error to say what the cluster showed. A polling wait that cannot hang (pod
/// readiness, Chaos Mesh injection and removal).
pub(crate) async fn wait_until<T, F, Fut>(
    deadline: Duration,
    poll: Duration,
    mut check: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let until = Instant::now() + deadline;
    loop {
        let last = match check().await {
            Ok(v) => return Ok(v),
            Err(last) => last,
        };
        if Instant::now() >= until {
            return Err(last);
        }
        tokio::time::sleep(poll).await;
    }
}

impl KubeTarget {
    /// Reads the cluster's nodes and the stack's pods to build the topology (nodes, zones, regions, placement).
    pub async fn connect(
        client: Client,
        namespace: &str,
        cluster: Cluster,
        selectors: StackSelectors,
        timing: KubeTiming,
    ) -> Result<Self, TargetError> {
        let env = |what: &str, e: ::kube::Error| TargetError::Environment(format!("{what}: {e}"));
        let nodes = Api::<KubeNode>::all(client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| env("cannot list the cluster's nodes", e))?;
        let pods = Api::<Pod>::namespaced(client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .map_err(|e| env(&format!("cannot list the pods of namespace {namespace}"), e))?;
        let topology = topology_from(namespace, &nodes.items, &pods.items, &selectors);
        let node_addrs = nodes.items.iter().filter_map(internal_ip).collect();
        let node_names = nodes
            .items
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let control_plane_addrs = nodes
            .items
            .iter()
            .filter(|n| is_control_plane(n))
            .filter_map(internal_ip)
            .collect();
        let ports = match cluster {
            Cluster::Kind { .. } => NodePorts::kind(),
            // NodePorts answer on every node: use the first worker's address.
            Cluster::Existing => NodePorts {
                addr: topology
                    .nodes
                    .first()
                    .map_or(Ipv4Addr::LOCALHOST, |n| n.addr),
                ..NodePorts::kind()
            },
        };
        let node_versions = nodes
            .items
            .iter()
            .map(|n| {
                let info = n.status.as_ref().and_then(|s| s.node_info.as_ref());
                serde_json::json!({
                    "name": n.metadata.name,
                    "kubelet": info.map(|i| i.kubelet_version.clone()),
                    "container_runtime": info.map(|i| i.container_runtime_version.clone()),
                    "os_image": info.map(|i| i.os_image.clone()),
                })
            })
            .collect();
        Ok(KubeTarget {
            client,
            namespace: namespace.to_string(),
            cluster,
            selectors,
            timing,
            topology,
            node_addrs,
            node_names,
            control_plane_addrs,
            ports,
            settings: crate::settings::StackSettings::default(),
            context: None,
            partition_backend: PartitionBackend::default(),
            node_versions,
            snapshot: Default::default(),
        })
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Every node's name, control plane included.
    pub fn node_names(&self) -> &[String] {
        &self.node_names
    }

    /// Every node's address, control plane included.
    pub fn node_addrs(&self) -> &[Ipv4Addr] {
        &self.node_addrs
    }

    pub(crate) fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Refuses any fault on an existing cluster unless the namespace opted in with `faultline.dev/chaos=allowed`.
    pub async fn ensure_chaos_allowed(&self) -> Result<(), TargetError> {
        if matches!(self.cluster, Cluster::Kind { .. }) {
            return Ok(());
        }
        let ns = Api::<Namespace>::all(self.client.clone())
            .get(&self.namespace)
            .await
            .map_err(|e| api_error(&format!("cannot read namespace {}", self.namespace), e))?;
        let allowed = ns
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(CHAOS_LABEL))
            .is_some_and(|v| v == CHAOS_LABEL_VALUE);
        if allowed {
            Ok(())
        } else {
            Err(TargetError::Environment(format!(
                "refusing to inject faults into namespace {ns}: it does not carry the label \
                 {CHAOS_LABEL}={CHAOS_LABEL_VALUE} (opt in with `kubectl label namespace {ns} \
                 {CHAOS_LABEL}={CHAOS_LABEL_VALUE}`)",
                ns = self.namespace
            )))
        }
    }

    /// The stack's pods of a component, with their nodes.
    pub async fn component_pods(&self, component: ComponentKind) -> Result<Vec<Pod>, TargetError> {
        let sel = self.selectors.of(component);
        self.pods()
            .list(&ListParams::default().labels(sel))
            .await
            .map(|l| l.items)
            .map_err(|e| api_error(&format!("cannot list the {component} pods ({sel})"), e))
    }

    /// The pod holding the primary role (Redis: Sentinel's master; Qdrant: the raft leader; Postgres: Patroni's
    /// leader, see `patroni_leader`).
    pub async fn primary_pod(&self, component: ComponentKind) -> Result<Pod, TargetError> {
        match component {
            ComponentKind::Postgres => self.patroni_leader().await,
            ComponentKind::Redis => self.sentinel_master_pod().await,
            ComponentKind::Qdrant => self.qdrant_leader_pod().await,
        }
    }

    /// Patroni's leader pod. The `leader` annotation of Patroni's leader Endpoints is the DCS record itself and
    /// decides. Role labels are a fallback for when it is absent (no leader yet, or a cluster that keeps its lock
    /// elsewhere): Patroni patches only its own pod, so a dead leader's pod keeps `role=master|primary` (`master`
    /// through Patroni 3.x, `primary` from 4.0.0) and two pods can carry it; then there is no answer.
    async fn patroni_leader(&self) -> Result<Pod, TargetError> {
        let pods = self.component_pods(ComponentKind::Postgres).await?;
        self.patroni_leader_among(&pods).await
    }

    /// Patroni's leader among the PostgreSQL pods `pods` (see `patroni_leader`).
    pub(crate) async fn patroni_leader_among(&self, pods: &[Pod]) -> Result<Pod, TargetError> {
        if let Some(leader) = self.patroni_leader_annotation().await? {
            return pods
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(leader.as_str()))
                .cloned()
                .ok_or_else(|| {
                    TargetError::Fault(format!(
                        "Patroni's leader annotation (Endpoints {}) names {leader}, which has no pod",
                        self.selectors.patroni_leader_endpoints
                    ))
                });
        }
        let labelled: Vec<&Pod> = pods
            .iter()
            .filter(|p| {
                let role = p.metadata.labels.as_ref().and_then(|l| l.get("role"));
                matches!(role.map(String::as_str), Some("master" | "primary"))
            })
            .collect();
        match labelled.as_slice() {
            [one] => Ok((*one).clone()),
            many => Err(TargetError::Fault(format!(
                "no Patroni leader: Endpoints {} has no leader annotation, and pods labelled role=master|primary \
                 are [{}] (exactly one is needed)",
                self.selectors.patroni_leader_endpoints,
                many.iter()
                    .filter_map(|p| p.metadata.name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The `leader` annotation of Patroni's Endpoints object (read raw: the Endpoints type is deprecated upstream).
    async fn patroni_leader_annotation(&self) -> Result<Option<String>, TargetError> {
        Ok(self
            .patroni_leader_record()
            .await?
            .and_then(|a| a["leader"].as_str().map(str::to_string))
            .filter(|s| !s.is_empty()))
    }

    /// One object read raw, as JSON (kinds faultline has no typed API for: deprecated Endpoints, CRDs).
    pub(crate) async fn get_json(&self, path: &str) -> Result<serde_json::Value, ::kube::Error> {
        let req = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| ::kube::Error::Service(e.into()))?;
        self.client.request::<serde_json::Value>(req).await
    }

    /// The annotations of Patroni's leader Endpoints (leader, ttl, renewTime, acquireTime, transitions, optime);
    /// None when the object does not exist.
    pub(crate) async fn patroni_leader_record(
        &self,
    ) -> Result<Option<serde_json::Value>, TargetError> {
        let path = format!(
            "/api/v1/namespaces/{}/endpoints/{}",
            self.namespace, self.selectors.patroni_leader_endpoints
        );
        match self.get_json(&path).await {
            Ok(mut v) => Ok(Some(v["metadata"]["annotations"].take())),
            Err(e) if status_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(api_error("cannot read Patroni's leader Endpoints", e)),
        }
    }
}

/// The node a pod runs on.
pub fn pod_node(p: &Pod) -> Option<&str> {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

pub fn pod_name(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap_or("")
}

/// Whether the pod's Ready condition is True.
pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn is_control_plane(n: &KubeNode) -> bool {
    n.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(CONTROL_PLANE_LABEL))
}

fn internal_ip(n: &KubeNode) -> Option<Ipv4Addr> {
    n.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .and_then(|a| a.address.parse().ok())
}

pub(crate) fn matches_selector(p: &Pod, selector: &str) -> bool {
    let labels = p.metadata.labels.clone().unwrap_or_default();
    selector.split(',').all(|kv| match kv.split_once('=') {
        Some((k, v)) => labels.get(k.trim()).map(String::as_str) == Some(v.trim()),
        None => labels.contains_key(kv.trim()),
    })
}

/// Worker nodes (control-plane nodes run no stack pods) with their zone and region labels, in name order.
fn topology_from(
    namespace: &str,
    nodes: &[KubeNode],
    pods: &[Pod],
    selectors: &StackSelectors,
) -> Topology {
    let mut out: Vec<Node> = nodes
        .iter()
        .filter(|n| !is_control_plane(n))
        .map(|n| {
            let label = |k: &str| {
                n.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(k))
                    .cloned()
                    .unwrap_or_default()
            };
            let addr = internal_ip(n).unwrap_or(Ipv4Addr::UNSPECIFIED);
            Node {
                name: n.metadata.name.clone().unwrap_or_default(),
                zone: label(ZONE_LABEL),
                region: label(REGION_LABEL),
                addr,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    let placed = |sel: &str| {
        let mut v: Vec<String> = pods
            .iter()
            .filter(|p| matches_selector(p, sel))
            .filter_map(|p| pod_node(p).map(str::to_string))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    Topology {
        name: format!("kube:{namespace}"),
        source: PathBuf::new(),
        network: Network {
            bridge: String::new(),
            namespace_prefix: String::new(),
            host_addr: Ipv4Addr::LOCALHOST,
            prefix_len: 0,
        },
        nodes: out,
        placement: Placement {
            etcd: Vec::new(),
            postgres: placed(&selectors.postgres),
            redis: placed(&selectors.redis),
            sentinel: placed(&selectors.sentinel),
            qdrant: placed(&selectors.qdrant),
            // Backups on Kubernetes are not run by faultline (drills are refused there).
            backup: String::new(),
            // The routing layer is the user's own there (Services; PgBouncer if they run one).
            router: Vec::new(),
        },
    }
}
