//! partition on Kubernetes: the pods of each side are labelled `faultline.dev/partition=<id>-a` / `<id>-b`, then cut
//! apart by one of two backends (`PartitionBackend`): a NetworkPolicy pair (below) or a Chaos Mesh NetworkChaos
//! (`chaos_mesh.rs`). Both share the labelling, the journal entry, the cordon of isolated nodes and the unlabelling on
//! revert; only the object that does the cutting differs.
//!
//! The NetworkPolicy pair: policy `faultline-partition-<id>-a` selects side A and allows every peer except side B's
//! pods (any namespace) plus every node's address, control plane included (kubelet probes, NodePort traffic and the
//! API server), and `-b` mirrors it. NetworkPolicies only allow, so "everything but the other side" is expressed with
//! a `NotIn` pod selector. The side holding Patroni's leader without the members' majority also loses the API
//! server, its DCS (`dcs.rs`): its egress leaves out the API server's addresses. They are stateful: with a one-way
//! direction, replies on connections the allowed side opened still flow. Whether connections opened before the
//! policy are cut depends on the CNI (kindnet's kube-network-policies judges only new connections unless built in
//! strict mode; Chaos Mesh's rules drop every packet). They only work where the CNI enforces NetworkPolicies.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Instant;

use ::kube::api::{Api, Patch, PatchParams, PostParams};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{json, Value};

use super::dcs::{Dcs, DcsCut, Side};
use super::{api_error, chaos_mesh, status_code, KubeTarget};
use crate::fault::journal::{Journal, JournalEntry};
use crate::fault::{journal_before_applying, ActiveFault, RevertStep};
use crate::scenario::PartitionDirection;
use crate::targets::TargetError;

/// How partitions between pod groups are made on Kubernetes (`--partition-backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PartitionBackend {
    /// Chaos Mesh when its NetworkChaos CRD is installed, the NetworkPolicy pair otherwise.
    #[default]
    Auto,
    /// Always the NetworkPolicy pair (the CNI must enforce NetworkPolicies).
    NetworkPolicy,
    /// Always Chaos Mesh; refused when its CRD is not installed rather than silently partitioning otherwise.
    ChaosMesh,
}

impl PartitionBackend {
    fn name(self) -> &'static str {
        match self {
            PartitionBackend::Auto => "auto",
            PartitionBackend::NetworkPolicy => "network-policy",
            PartitionBackend::ChaosMesh => "chaos-mesh",
        }
    }
}

impl fmt::Display for PartitionBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PartitionBackend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [
            PartitionBackend::Auto,
            PartitionBackend::NetworkPolicy,
            PartitionBackend::ChaosMesh,
        ]
        .into_iter()
        .find(|b| b.name() == s)
        .ok_or_else(|| {
            format!("unknown partition backend `{s}` (expected auto, network-policy or chaos-mesh)")
        })
    }
}

/// The backend a partition uses, decided against the cluster at the moment it is applied or planned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChosenBackend {
    /// `note` says why Chaos Mesh was not used when `auto` could not tell whether it is installed.
    NetworkPolicy {
        note: Option<String>,
    },
    ChaosMesh,
}

impl ChosenBackend {
    /// What cuts the sides apart, in the words of the plan and the journal.
    pub fn mechanism(&self, direction: PartitionDirection) -> String {
        match self {
            ChosenBackend::NetworkPolicy { note: None } => {
                format!("NetworkPolicy pair ({direction:?})")
            }
            ChosenBackend::NetworkPolicy { note: Some(n) } => {
                format!("NetworkPolicy pair ({direction:?}; {n})")
            }
            ChosenBackend::ChaosMesh => format!(
                "Chaos Mesh NetworkChaos (direction {})",
                chaos_mesh::direction(direction)
            ),
        }
    }
}

/// The backend for the configured choice, given whether the NetworkChaos CRD is installed (`None`: cannot tell).
pub fn decide(
    choice: PartitionBackend,
    crd_installed: Option<bool>,
) -> Result<ChosenBackend, TargetError> {
    let crd = chaos_mesh::CRD;
    match (choice, crd_installed) {
        (PartitionBackend::NetworkPolicy, _) | (PartitionBackend::Auto, Some(false)) => {
            Ok(ChosenBackend::NetworkPolicy { note: None })
        }
        (PartitionBackend::Auto, Some(true)) => Ok(ChosenBackend::ChaosMesh),
        (PartitionBackend::Auto, None) => Ok(ChosenBackend::NetworkPolicy {
            note: Some(format!(
                "not Chaos Mesh: reading CRD {crd} is forbidden, so whether it is installed is unknown"
            )),
        }),
        // Asked for explicitly: when nobody can tell, creating the NetworkChaos will say.
        (PartitionBackend::ChaosMesh, Some(true) | None) => Ok(ChosenBackend::ChaosMesh),
        (PartitionBackend::ChaosMesh, Some(false)) => Err(TargetError::Environment(format!(
            "--partition-backend chaos-mesh, but the cluster has no CRD {crd}: install Chaos Mesh or use \
             --partition-backend network-policy"
        ))),
    }
}

/// Decides the backend for the target's choice now (one CRD read unless the choice is network-policy).
pub async fn choose(target: &KubeTarget) -> Result<ChosenBackend, TargetError> {
    let crd = match target.partition_backend {
        PartitionBackend::NetworkPolicy => None,
        _ => chaos_mesh::crd_installed(target).await?,
    };
    decide(target.partition_backend, crd)
}

/// The label that marks which side of a partition a pod is on.
pub const PARTITION_LABEL: &str = "faultline.dev/partition";
pub const OWNER_LABEL: &str = "faultline.dev/owner";

/// The policy pair for a partition `id` between the pods labelled `<id>-a` and `<id>-b`. With a `cut`, the side
/// holding Patroni's leader may not send to the API server either (`dcs.rs`): its egress allows neither the API
/// server's addresses nor, when the direction left its egress open, anything beyond "every address except those".
pub fn policies(
    id: &str,
    direction: PartitionDirection,
    node_addrs: &[Ipv4Addr],
    cut: Option<&DcsCut>,
) -> Result<Vec<NetworkPolicy>, TargetError> {
    let side = |s: &str| format!("{id}-{s}");
    let api_ips = cut.map(|c| c.api.ips()).unwrap_or_default();
    let allowed_except = |other: &str, cut_api: bool| -> Value {
        let mut peers = vec![json!({
            "namespaceSelector": {},
            "podSelector": {"matchExpressions": [
                {"key": PARTITION_LABEL, "operator": "NotIn", "values": [side(other)]}
            ]}
        })];
        peers.extend(
            node_addrs
                .iter()
                .filter(|a| !(cut_api && api_ips.contains(a)))
                .map(|a| json!({"ipBlock": {"cidr": format!("{a}/32")}})),
        );
        Value::Array(peers)
    };
    // Everything but the API server: every pod, and every address except the API server's.
    let all_but_api = || -> Value {
        let except: Vec<String> = api_ips.iter().map(|a| format!("{a}/32")).collect();
        json!([
            {"namespaceSelector": {}},
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": except}}
        ])
    };
    // (this side, other side, deny ingress from other, deny egress to other)
    let (a_in, a_out, b_in, b_out) = match direction {
        PartitionDirection::Both => (true, true, true, true),
        PartitionDirection::AToB => (false, true, true, false),
        PartitionDirection::BToA => (true, false, false, true),
    };
    let one = |me: Side, other: &str, deny_in: bool, deny_out: bool| {
        let me_label = me.label();
        let cut_api = cut.is_some_and(|c| c.side == me);
        let mut types = Vec::new();
        let mut spec = json!({"podSelector": {"matchLabels": {PARTITION_LABEL: side(me_label)}}});
        if deny_in {
            types.push("Ingress");
            spec["ingress"] = json!([{"from": allowed_except(other, false)}]);
        }
        if deny_out {
            types.push("Egress");
            spec["egress"] = json!([{"to": allowed_except(other, cut_api)}]);
        } else if cut_api {
            types.push("Egress");
            spec["egress"] = json!([{"to": all_but_api()}]);
        }
        spec["policyTypes"] = json!(types);
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": format!("faultline-partition-{}", side(me_label)),
                "labels": {OWNER_LABEL: "faultline"}
            },
            "spec": spec
        })
    };
    [
        one(Side::A, "b", a_in, a_out),
        one(Side::B, "a", b_in, b_out),
    ]
    .into_iter()
    .map(|v| {
        serde_json::from_value(v).map_err(|e| TargetError::Fault(format!("bad NetworkPolicy: {e}")))
    })
    .collect()
}

/// The pods of one side of a partition: their names, and the IPs of those that have one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SidePods {
    pub names: Vec<String>,
    pub ips: Vec<Ipv4Addr>,
}

/// The pods of each side of one partition, and what it does to Patroni's DCS.
pub struct Sides {
    pub a: SidePods,
    pub b: SidePods,
    pub dcs: Dcs,
}

/// The shell script that deletes, in one node's connection tracking, the connections the partition blocks that
/// were open before it: from each source to each destination pod IP in the blocked direction(s), and from the side
/// cut from the API server to the API server's addresses. Without it, a CNI that judges only new connections (kindnet's
/// kube-network-policies) lets them through: replication streams, Sentinel links and Patroni's kept-alive
/// connection to its DCS would survive the partition. With the entries gone, the next packet of such a connection is
/// judged as new, against the policies. Prints `conntrack -D`'s counts; exits 127 when the node has no conntrack.
pub fn conntrack_script(sides: &Sides, direction: PartitionDirection) -> String {
    let mut pairs: Vec<(Ipv4Addr, Ipv4Addr)> = Vec::new();
    let (a, b) = (&sides.a.ips, &sides.b.ips);
    let mut add = |from: &[Ipv4Addr], to: &[Ipv4Addr]| {
        for s in from {
            for d in to {
                if s != d && !pairs.contains(&(*s, *d)) {
                    pairs.push((*s, *d));
                }
            }
        }
    };
    if direction != PartitionDirection::BToA {
        add(a, b);
    }
    if direction != PartitionDirection::AToB {
        add(b, a);
    }
    if let Some(cut) = sides.dcs.cut() {
        let from = match cut.side {
            Side::A => a,
            Side::B => b,
        };
        add(from, &cut.api.ips());
    }
    let mut script = String::from(
        "command -v conntrack >/dev/null || { echo 'no conntrack in this node' >&2; exit 127; }\n",
    );
    for (s, d) in pairs {
        script.push_str(&format!("conntrack -D -s {s} -d {d} 2>&1 || true\n"));
    }
    script
}

/// The number of entries `conntrack -D` reported deleted in a script's output.
pub fn conntrack_deleted(output: &str) -> u64 {
    output
        .lines()
        .filter_map(|l| {
            let before = l.split(" flow entries have been deleted").next()?;
            (before.len() < l.len()).then(|| before.rsplit(' ').next()?.parse::<u64>().ok())?
        })
        .sum()
}

/// Runs `conntrack_script` in every running kind node container. Returns how many entries were deleted in all,
/// and the nodes skipped because they are stopped or paused (a node fault: the engine refuses an exec there).
async fn cut_open_connections(
    target: &KubeTarget,
    docker: &super::DockerApi,
    sides: &Sides,
    direction: PartitionDirection,
) -> Result<(u64, Vec<String>), TargetError> {
    let script = conntrack_script(sides, direction);
    let mut deleted = 0;
    let mut skipped = Vec::new();
    for node in target.node_names() {
        let (code, output) = match docker.exec(node, &["sh", "-c", &script]).await {
            Ok(r) => r,
            Err(e) if e.contains("is paused") || e.contains("is not running") => {
                skipped.push(node.clone());
                continue;
            }
            Err(e) => return Err(TargetError::Fault(e)),
        };
        if code != 0 {
            return Err(TargetError::Fault(format!(
                "cutting the connections open before the partition in node {node} failed (exit {code}): {}",
                output.trim()
            )));
        }
        deleted += conntrack_deleted(&output);
    }
    Ok((deleted, skipped))
}

/// Labels the pods of both sides and cuts them apart with the backend chosen now (the side holding Patroni's
/// leader from the API server too). `cordon` nodes are cordoned first (zone isolation on clusters whose nodes
/// faultline cannot stop) and uncordoned on revert.
pub async fn apply(
    target: &KubeTarget,
    journal: &Journal,
    fault_name: &str,
    id: &str,
    sides: &Sides,
    direction: PartitionDirection,
    cordon: &[String],
) -> Result<ActiveFault, TargetError> {
    let (a, b) = (&sides.a.names, &sides.b.names);
    let cut = sides.dcs.cut();
    let backend = choose(target).await?;
    let ns = target.namespace.clone();
    let mut steps: Vec<RevertStep> = cordon
        .iter()
        .map(|n| RevertStep::KubeUncordon { node: n.clone() })
        .collect();
    let pair = match backend {
        ChosenBackend::NetworkPolicy { .. } => policies(id, direction, target.node_addrs(), cut)?,
        ChosenBackend::ChaosMesh => Vec::new(),
    };
    steps.extend(pair.iter().map(|p| RevertStep::KubeDeleteNetworkPolicy {
        namespace: ns.clone(),
        name: p.metadata.name.clone().unwrap_or_default(),
    }));
    if backend == ChosenBackend::ChaosMesh {
        steps.push(RevertStep::KubeDeleteNetworkChaos {
            namespace: ns.clone(),
            name: chaos_mesh::name(id),
        });
        if cut.is_some() {
            steps.push(RevertStep::KubeDeleteNetworkChaos {
                namespace: ns.clone(),
                name: chaos_mesh::dcs_name(id),
            });
        }
    }
    steps.extend(a.iter().chain(b).map(|p| RevertStep::KubeUnlabelPod {
        namespace: ns.clone(),
        pod: p.clone(),
        label: PARTITION_LABEL.to_string(),
    }));
    let dcs_words = sides
        .dcs
        .describe(matches!(backend, ChosenBackend::NetworkPolicy { .. }))
        .map(|d| format!("; {d}"))
        .unwrap_or_default();
    let pods = format!("[{}] | [{}]", a.join(", "), b.join(", "));
    let description = format!(
        "partition {id} by {}: {pods}{dcs_words}",
        backend.mechanism(direction)
    );
    let entry = journal_before_applying(journal, fault_name, &description, steps)?;
    let requested_at = Instant::now();
    let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(target.client.clone());
    for n in cordon {
        nodes
            .cordon(n)
            .await
            .map_err(|e| api_error(&format!("cannot cordon node {n}"), e))?;
    }
    label_sides(target, id, a, b).await?;
    let victims = a.iter().chain(b).cloned().collect();
    if backend == ChosenBackend::ChaosMesh {
        let injected = async {
            let pair = chaos_mesh::network_chaos(id, &ns, direction)?;
            let (created, delay) = chaos_mesh::inject(target, pair).await?;
            match cut {
                // The API server cut is its own object; the fault is effective once both are injected.
                Some(c) => {
                    let dcs = chaos_mesh::dcs_chaos(id, &ns, c)?;
                    let (dcs_created, dcs_delay) = chaos_mesh::inject(target, dcs).await?;
                    Ok((created, (dcs_created + dcs_delay).duration_since(created)))
                }
                None => Ok((created, delay)),
            }
        };
        return match injected.await {
            Ok((created, delay)) => {
                let description = format!(
                    "partition {id} by Chaos Mesh NetworkChaos {} (direction {}), injected after {:.1} s: \
                     {pods}{dcs_words}",
                    chaos_mesh::name(id),
                    chaos_mesh::direction(direction),
                    delay.as_secs_f64()
                );
                // Effective when Chaos Mesh reported every selected pod injected.
                Ok(ActiveFault::new(
                    entry,
                    description,
                    victims,
                    requested_at,
                    created + delay,
                ))
            }
            Err(e) => Err(undo(target, journal, &entry, e).await),
        };
    }
    let api = Api::<NetworkPolicy>::namespaced(target.client.clone(), &ns);
    for p in &pair {
        api.create(&PostParams::default(), p)
            .await
            .map_err(|e| api_error("cannot create NetworkPolicy", e))?;
    }
    let description = match &target.cluster {
        super::Cluster::Kind { docker } => {
            match cut_open_connections(target, docker, sides, direction).await {
                Ok((n, skipped)) if skipped.is_empty() => format!(
                    "{description}; connections open before the partition cut in every kind node ({n} conntrack \
                     entries deleted)"
                ),
                Ok((n, skipped)) => format!(
                    "{description}; connections open before the partition cut in the running kind nodes ({n} \
                     conntrack entries deleted; not in {}, stopped or paused: their pods' connections there were \
                     left as they are)",
                    skipped.join(", ")
                ),
                Err(e) => return Err(undo(target, journal, &entry, e).await),
            }
        }
        super::Cluster::Existing => format!(
            "{description}; connections open before the partition survive it where the CNI judges only new \
             connections (faultline cannot reach the nodes of a cluster it did not create)"
        ),
    };
    // Effective once the API server holds both policies (the CNI enforces them from there) and, on kind, the
    // connections open before them are cut.
    Ok(ActiveFault::effective_now(
        entry,
        description,
        victims,
        requested_at,
    ))
}

/// Labels side A's pods `<id>-a` and side B's `<id>-b` (what a partition's and a traffic fault's objects select).
pub(super) async fn label_sides(
    target: &KubeTarget,
    id: &str,
    a: &[String],
    b: &[String],
) -> Result<(), TargetError> {
    for (pods, s) in [(a, "a"), (b, "b")] {
        for p in pods {
            let patch = json!({"metadata": {"labels": {PARTITION_LABEL: format!("{id}-{s}")}}});
            target
                .pods()
                .patch(p, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| api_error(&format!("cannot label pod {p}"), e))?;
        }
    }
    Ok(())
}

/// Reverts a fault that did not take effect, so that a failed application leaves nothing behind, and closes its
/// journal entry; if the revert fails too, the entry stays open for `faultline recover` and the error says so.
pub(super) async fn undo(
    target: &KubeTarget,
    journal: &Journal,
    entry: &JournalEntry,
    cause: TargetError,
) -> TargetError {
    match target.revert(&entry.steps).await {
        Ok(()) => {
            // A close that fails leaves the entry open: `recover` then reverts again, which is idempotent.
            let _ = journal.close(&entry.id, "reverted: the fault did not take effect");
            cause
        }
        Err(e) => TargetError::Fault(format!(
            "{cause}; reverting what was applied failed too (journal entry {} stays open for `faultline recover`): {e}",
            entry.id
        )),
    }
}

/// Deletes the policy; already absent is fine.
pub async fn delete_policy(target: &KubeTarget, namespace: &str, name: &str) -> Result<(), String> {
    let api = Api::<NetworkPolicy>::namespaced(target.client.clone(), namespace);
    match api.delete(name, &Default::default()).await {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(format!(
            "cannot delete NetworkPolicy {namespace}/{name}: {e}"
        )),
    }
}

/// Removes the label from the pod; a pod that is gone (or recreated without it) is fine.
pub async fn unlabel(
    target: &KubeTarget,
    namespace: &str,
    pod: &str,
    label: &str,
) -> Result<(), String> {
    let api = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(target.client.clone(), namespace);
    let patch = json!({"metadata": {"labels": {label: null}}});
    match api
        .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(format!(
            "cannot remove label {label} from pod {namespace}/{pod}: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_names_are_the_flag_values() {
        for b in [
            PartitionBackend::Auto,
            PartitionBackend::NetworkPolicy,
            PartitionBackend::ChaosMesh,
        ] {
            assert_eq!(b.to_string().parse::<PartitionBackend>(), Ok(b));
        }
        assert_eq!(
            "network-policy".parse::<PartitionBackend>(),
            Ok(PartitionBackend::NetworkPolicy)
        );
        let err = "chaosmesh".parse::<PartitionBackend>().unwrap_err();
        assert!(
            err.contains("`chaosmesh`") && err.contains("chaos-mesh"),
            "{err}"
        );
    }

    #[test]
    fn auto_uses_chaos_mesh_only_when_its_crd_is_known_to_be_there() {
        let np = ChosenBackend::NetworkPolicy { note: None };
        assert_eq!(
            decide(PartitionBackend::Auto, Some(true)).unwrap(),
            ChosenBackend::ChaosMesh
        );
        assert_eq!(decide(PartitionBackend::Auto, Some(false)).unwrap(), np);
        match decide(PartitionBackend::Auto, None).unwrap() {
            ChosenBackend::NetworkPolicy { note: Some(n) } => {
                assert!(
                    n.contains("forbidden") && n.contains(chaos_mesh::CRD),
                    "{n}"
                )
            }
            other => panic!("403 must fall back with a note, got {other:?}"),
        }
        assert_eq!(
            decide(PartitionBackend::NetworkPolicy, Some(true)).unwrap(),
            np
        );
    }

    #[test]
    fn explicit_chaos_mesh_without_its_crd_is_refused_naming_the_crd() {
        let err = decide(PartitionBackend::ChaosMesh, Some(false))
            .unwrap_err()
            .to_string();
        assert!(err.contains("networkchaos.chaos-mesh.org"), "{err}");
        assert_eq!(
            decide(PartitionBackend::ChaosMesh, Some(true)).unwrap(),
            ChosenBackend::ChaosMesh
        );
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn sides(dcs: Dcs) -> Sides {
        Sides {
            a: SidePods {
                names: vec!["postgres-2".into()],
                ips: vec![ip("10.244.3.2")],
            },
            b: SidePods {
                names: vec!["postgres-0".into(), "redis-0".into()],
                ips: vec![ip("10.244.1.2"), ip("10.244.1.3")],
            },
            dcs,
        }
    }

    #[test]
    fn conntrack_deletes_the_blocked_directions_and_the_cut_sides_api_server_connections() {
        let lines = |s: &Sides, d| -> Vec<String> {
            conntrack_script(s, d)
                .lines()
                .skip(1)
                .map(str::to_string)
                .collect()
        };
        let plain = sides(Dcs::NoPatroni);
        assert_eq!(
            lines(&plain, PartitionDirection::AToB),
            [
                "conntrack -D -s 10.244.3.2 -d 10.244.1.2 2>&1 || true",
                "conntrack -D -s 10.244.3.2 -d 10.244.1.3 2>&1 || true",
            ]
        );
        assert_eq!(lines(&plain, PartitionDirection::Both).len(), 4);
        assert!(lines(&plain, PartitionDirection::BToA)
            .iter()
            .all(|l| l.starts_with("conntrack -D -s 10.244.1.")));
        let cut = sides(Dcs::Cut(DcsCut {
            side: Side::A,
            leader_pod: "postgres-2".into(),
            api: super::super::dcs::ApiServer {
                service: Some("10.96.0.1:443".parse().unwrap()),
                endpoints: vec!["172.18.0.2:6443".parse().unwrap()],
                note: None,
            },
        }));
        let with_api = lines(&cut, PartitionDirection::BToA);
        assert_eq!(
            with_api[2..],
            [
                "conntrack -D -s 10.244.3.2 -d 10.96.0.1 2>&1 || true",
                "conntrack -D -s 10.244.3.2 -d 172.18.0.2 2>&1 || true",
            ]
        );
        assert!(conntrack_script(&cut, PartitionDirection::Both)
            .starts_with("command -v conntrack >/dev/null || {"));
    }

    #[test]
    fn conntrack_counts_are_summed_from_its_messages() {
        let out = "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted.\n\
                   conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n\
                   conntrack v1.4.7 (conntrack-tools): 12 flow entries have been deleted.\n";
        assert_eq!(conntrack_deleted(out), 15);
        assert_eq!(conntrack_deleted("something else"), 0);
    }

    #[test]
    fn the_mechanism_names_the_backend_and_its_direction() {
        assert_eq!(
            ChosenBackend::ChaosMesh.mechanism(PartitionDirection::AToB),
            "Chaos Mesh NetworkChaos (direction to)"
        );
        assert_eq!(
            ChosenBackend::NetworkPolicy { note: None }.mechanism(PartitionDirection::BToA),
            "NetworkPolicy pair (BToA)"
        );
    }
}
