//! partition on Kubernetes: a NetworkPolicy pair. The pods of each side are labelled
//! `faultline.dev/partition=<id>-a` / `<id>-b`; policy `faultline-partition-<id>-a` selects side A and allows
//! every peer except side B's pods (any namespace) plus every node's address, control plane included (kubelet
//! probes, NodePort traffic and the API server, which Patroni's DCS needs), and `-b` mirrors it. NetworkPolicies only allow, so "everything
//! but the other side" is expressed with a `NotIn` pod selector. They are stateful: with a one-way direction,
//! replies on connections the allowed side opened still flow. Reverted by deleting both policies and the labels.

use std::net::Ipv4Addr;
use std::time::Instant;

use ::kube::api::{Api, Patch, PatchParams, PostParams};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{json, Value};

use super::{api_error, status_code, KubeTarget};
use crate::fault::journal::Journal;
use crate::fault::{journal_before_applying, ActiveFault, RevertStep};
use crate::scenario::PartitionDirection;
use crate::target::TargetError;

/// The label that marks which side of a partition a pod is on.
pub const PARTITION_LABEL: &str = "faultline.dev/partition";
pub const OWNER_LABEL: &str = "faultline.dev/owner";

/// The policy pair for a partition `id` between the pods labelled `<id>-a` and `<id>-b`.
pub fn policies(
    id: &str,
    direction: PartitionDirection,
    node_addrs: &[Ipv4Addr],
) -> Result<Vec<NetworkPolicy>, TargetError> {
    let side = |s: &str| format!("{id}-{s}");
    let allowed_except = |other: &str| -> Value {
        let mut peers = vec![json!({
            "namespaceSelector": {},
            "podSelector": {"matchExpressions": [
                {"key": PARTITION_LABEL, "operator": "NotIn", "values": [side(other)]}
            ]}
        })];
        peers.extend(
            node_addrs
                .iter()
                .map(|a| json!({"ipBlock": {"cidr": format!("{a}/32")}})),
        );
        Value::Array(peers)
    };
    // (this side, other side, deny ingress from other, deny egress to other)
    let (a_in, a_out, b_in, b_out) = match direction {
        PartitionDirection::Both => (true, true, true, true),
        PartitionDirection::AToB => (false, true, true, false),
        PartitionDirection::BToA => (true, false, false, true),
    };
    let one = |me: &str, other: &str, deny_in: bool, deny_out: bool| {
        let mut types = Vec::new();
        let mut spec = json!({"podSelector": {"matchLabels": {PARTITION_LABEL: side(me)}}});
        if deny_in {
            types.push("Ingress");
            spec["ingress"] = json!([{"from": allowed_except(other)}]);
        }
        if deny_out {
            types.push("Egress");
            spec["egress"] = json!([{"to": allowed_except(other)}]);
        }
        spec["policyTypes"] = json!(types);
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": format!("faultline-partition-{}", side(me)),
                "labels": {OWNER_LABEL: "faultline"}
            },
            "spec": spec
        })
    };
    [one("a", "b", a_in, a_out), one("b", "a", b_in, b_out)]
        .into_iter()
        .map(|v| {
            serde_json::from_value(v)
                .map_err(|e| TargetError::Fault(format!("bad NetworkPolicy: {e}")))
        })
        .collect()
}

/// Labels the pods of both sides and creates the policy pair; `a` and `b` are pod names. `cordon` nodes are
/// cordoned first (zone isolation on clusters whose nodes faultline cannot stop) and uncordoned on revert.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    target: &KubeTarget,
    journal: &Journal,
    fault_name: &str,
    id: &str,
    a: &[String],
    b: &[String],
    direction: PartitionDirection,
    cordon: &[String],
) -> Result<ActiveFault, TargetError> {
    let pair = policies(id, direction, target.node_addrs())?;
    let ns = target.namespace.clone();
    let mut steps: Vec<RevertStep> = cordon
        .iter()
        .map(|n| RevertStep::KubeUncordon { node: n.clone() })
        .collect();
    steps.extend(pair.iter().map(|p| RevertStep::KubeDeleteNetworkPolicy {
        namespace: ns.clone(),
        name: p.metadata.name.clone().unwrap_or_default(),
    }));
    steps.extend(a.iter().chain(b).map(|p| RevertStep::KubeUnlabelPod {
        namespace: ns.clone(),
        pod: p.clone(),
        label: PARTITION_LABEL.to_string(),
    }));
    let description = format!(
        "NetworkPolicy partition {id} ({direction:?}): [{}] | [{}]",
        a.join(", "),
        b.join(", ")
    );
    let entry = journal_before_applying(journal, fault_name, &description, steps)?;
    let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(target.client.clone());
    for n in cordon {
        nodes
            .cordon(n)
            .await
            .map_err(|e| api_error(&format!("cannot cordon node {n}"), e))?;
    }
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
    let applied_at = Instant::now();
    let api = Api::<NetworkPolicy>::namespaced(target.client.clone(), &ns);
    for p in &pair {
        api.create(&PostParams::default(), p)
            .await
            .map_err(|e| api_error("cannot create NetworkPolicy", e))?;
    }
    let victims = a.iter().chain(b).cloned().collect();
    Ok(ActiveFault::new(entry, description, victims, applied_at))
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
