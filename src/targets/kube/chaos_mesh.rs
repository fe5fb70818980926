//! partition on Kubernetes through Chaos Mesh, instead of the NetworkPolicy pair when the cluster serves the
//! NetworkChaos CRD (see `PartitionBackend`). One NetworkChaos `faultline-partition-<id>` with `action: partition`
//! selects side A's pods (`faultline.dev/partition=<id>-a`, labelled by `partition.rs`) and targets side B's
//! (`<id>-b`). Chaos Mesh's daemon drops the packets between the two sides inside the pods' network namespaces, so it
//! needs no CNI that enforces NetworkPolicies, and traffic to and from anything else (nodes, kubelet probes, the API
//! server) is untouched. It has no `duration`: it lasts until faultline deletes it.
//!
//! Direction: Chaos Mesh's `to` blocks the packets from the selector's pods to the target's, `from` the packets from
//! the target's pods to the selector's (`PartitionDirection` in Chaos Mesh's api/v1alpha1). Side A being the
//! selector, faultline's a-to-b is `to` and b-to-a is `from`.
//!
//! The fault instant: the creation starts the injection, and the fault counts as applied only once Chaos Mesh
//! reports the conditions `Selected` and `AllInjected` True. `AllInjected` alone is not enough: Chaos Mesh computes it
//! over the selected pods' records, so it is also True while no pod has been selected yet. The revert deletes the
//! object and waits until it is gone: Chaos Mesh's finalizer keeps it until every pod's network is restored.

use std::time::{Duration, Instant};

use ::kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use serde_json::{json, Value};

use super::dcs::DcsCut;
use super::partition::{OWNER_LABEL, PARTITION_LABEL};
use super::{api_error, status_code, wait_until, KubeTarget};
use crate::scenario::PartitionDirection;
use crate::targets::TargetError;

/// The CustomResourceDefinition whose presence means Chaos Mesh is installed and can partition pods.
pub const CRD: &str = "networkchaos.chaos-mesh.org";

fn resource() -> ApiResource {
    ApiResource {
        group: "chaos-mesh.org".into(),
        version: "v1alpha1".into(),
        api_version: "chaos-mesh.org/v1alpha1".into(),
        kind: "NetworkChaos".into(),
        plural: "networkchaos".into(),
    }
}

fn api(target: &KubeTarget, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(target.client.clone(), namespace, &resource())
}

/// The NetworkChaos of partition `id`.
pub fn name(id: &str) -> String {
    format!("faultline-partition-{id}")
}

/// Chaos Mesh's `spec.direction` for a partition whose side A is the selector and side B the target.
pub fn direction(d: PartitionDirection) -> &'static str {
    match d {
        PartitionDirection::Both => "both",
        PartitionDirection::AToB => "to",
        PartitionDirection::BToA => "from",
    }
}

/// The NetworkChaos that partitions the pods labelled `<id>-a` from those labelled `<id>-b` in `namespace`.
pub fn network_chaos(
    id: &str,
    namespace: &str,
    d: PartitionDirection,
) -> Result<DynamicObject, TargetError> {
    let side = |s: &str| {
        json!({
            "namespaces": [namespace],
            "labelSelectors": {PARTITION_LABEL: format!("{id}-{s}")}
        })
    };
    let object = json!({
        "apiVersion": resource().api_version,
        "kind": resource().kind,
        "metadata": {"name": name(id), "labels": {OWNER_LABEL: "faultline"}},
        "spec": {
            "action": "partition",
            "mode": "all",
            "selector": side("a"),
            "direction": direction(d),
            "target": {"mode": "all", "selector": side("b")}
        }
    });
    serde_json::from_value(object).map_err(|e| TargetError::Fault(format!("bad NetworkChaos: {e}")))
}

/// The NetworkChaos that cuts partition `id`'s side holding Patroni's leader off from the API server.
pub fn dcs_name(id: &str) -> String {
    format!("faultline-partition-{id}-dcs")
}

/// Cuts the side holding Patroni's leader off from the API server (`dcs.rs`): a partition from the side's pods to
/// an external target, the `kubernetes` Service's ClusterIP. Chaos Mesh's rules sit in the pod's network namespace,
/// before kube-proxy's translation, so the ClusterIP is what they see; the endpoints are left out (see `dcs.rs`).
pub fn dcs_chaos(id: &str, namespace: &str, cut: &DcsCut) -> Result<DynamicObject, TargetError> {
    let object = json!({
        "apiVersion": resource().api_version,
        "kind": resource().kind,
        "metadata": {"name": dcs_name(id), "labels": {OWNER_LABEL: "faultline"}},
        "spec": {
            "action": "partition",
            "mode": "all",
            "selector": {
                "namespaces": [namespace],
                "labelSelectors": {PARTITION_LABEL: format!("{id}-{}", cut.side.label())}
            },
            "direction": "to",
            "externalTargets": cut.api.chaos_targets().iter().map(|a| a.to_string()).collect::<Vec<_>>()
        }
    });
    serde_json::from_value(object).map_err(|e| TargetError::Fault(format!("bad NetworkChaos: {e}")))
}

/// Whether the cluster serves NetworkChaos: `None` when reading the CRD is forbidden (403), so nobody can tell.
pub async fn crd_installed(target: &KubeTarget) -> Result<Option<bool>, TargetError> {
    let path = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD}");
    match target.get_json(&path).await {
        Ok(_) => Ok(Some(true)),
        Err(e) if status_code(&e) == Some(404) => Ok(Some(false)),
        Err(e) if status_code(&e) == Some(403) => Ok(None),
        Err(e) => Err(api_error(
            &format!("cannot tell whether Chaos Mesh is installed (reading CRD {CRD})"),
            e,
        )),
    }
}

/// Whether Chaos Mesh reports the object injected into every selected pod (see the module doc for why both
/// conditions).
pub fn injected(object: &Value) -> bool {
    let is_true = |kind: &str| {
        object["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == kind && c["status"] == "True")
        })
    };
    is_true("Selected") && is_true("AllInjected")
}

/// The conditions as Chaos Mesh reports them, for the error when injection does not come.
fn conditions(object: &Value) -> String {
    match object["status"]["conditions"].as_array() {
        Some(cs) if !cs.is_empty() => cs
            .iter()
            .map(|c| {
                format!(
                    "{}={}",
                    c["type"].as_str().unwrap_or("?"),
                    c["status"].as_str().unwrap_or("?")
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => "no status conditions yet".into(),
    }
}

/// Creates the NetworkChaos and waits until Chaos Mesh reports it injected. Returns the instant the creation
/// returned (the fault instant) and how long after it the injection was observed. On error the object may exist:
/// the caller reverts.
pub async fn inject(
    target: &KubeTarget,
    object: DynamicObject,
) -> Result<(Instant, Duration), TargetError> {
    let ns = &target.namespace;
    let name = object.metadata.name.clone().unwrap_or_default();
    let api = api(target, ns);
    api.create(&PostParams::default(), &object)
        .await
        .map_err(|e| api_error(&format!("cannot create NetworkChaos {ns}/{name}"), e))?;
    let created = Instant::now();
    let deadline = target.timing.chaos_injected_deadline;
    let (api, name) = (&api, name.as_str());
    wait_until(deadline, target.timing.poll, || async move {
        match api.get(name).await {
            Ok(o) if injected(&o.data) => Ok(created.elapsed()),
            Ok(o) => Err(conditions(&o.data)),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .map(|delay| (created, delay))
    .map_err(|last| {
        TargetError::Fault(format!(
            "Chaos Mesh did not inject NetworkChaos {ns}/{name} within {} (last seen: {last}); is its \
             controller running, and do the pods of both sides exist?",
            humantime::format_duration(deadline)
        ))
    })
}

/// Deletes the NetworkChaos and waits until it is gone, i.e. until Chaos Mesh has restored the pods' network;
/// already absent is fine.
pub async fn delete(target: &KubeTarget, namespace: &str, name: &str) -> Result<(), String> {
    let api = api(target, namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(e) if status_code(&e) == Some(404) => return Ok(()),
        Err(e) => {
            return Err(format!(
                "cannot delete NetworkChaos {namespace}/{name}: {e}"
            ))
        }
    }
    let deadline = target.timing.chaos_removed_deadline;
    let api = &api;
    wait_until(deadline, target.timing.poll, || async move {
        match api.get_opt(name).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => {
                Err("it still exists (Chaos Mesh has not restored the network yet)".into())
            }
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .map_err(|last| {
        format!(
            "NetworkChaos {namespace}/{name} was not gone within {} after its deletion: {last}",
            humantime::format_duration(deadline)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_conditions(cs: Value) -> Value {
        json!({"status": {"conditions": cs, "experiment": {"desiredPhase": "Run"}}})
    }

    #[test]
    fn injected_needs_both_selected_and_all_injected() {
        let c = |t: &str, s: &str| json!({"type": t, "status": s});
        assert!(injected(&with_conditions(json!([
            c("Selected", "True"),
            c("AllInjected", "True"),
            c("AllRecovered", "False"),
            c("Paused", "False")
        ]))));
        // Before selection AllInjected is vacuously True.
        assert!(!injected(&with_conditions(json!([
            c("Selected", "False"),
            c("AllInjected", "True")
        ]))));
        assert!(!injected(&with_conditions(json!([
            c("Selected", "True"),
            c("AllInjected", "False")
        ]))));
        assert!(!injected(&json!({"metadata": {"name": "x"}})));
    }

    #[test]
    fn conditions_are_named_for_the_error() {
        let v = with_conditions(json!([{"type": "Selected", "status": "True"},
                                       {"type": "AllInjected", "status": "False"}]));
        assert_eq!(conditions(&v), "Selected=True, AllInjected=False");
        assert_eq!(conditions(&json!({})), "no status conditions yet");
    }

    #[test]
    fn side_a_is_the_selector_so_a_to_b_is_chaos_mesh_to() {
        assert_eq!(direction(PartitionDirection::AToB), "to");
        assert_eq!(direction(PartitionDirection::BToA), "from");
        assert_eq!(direction(PartitionDirection::Both), "both");
    }
}
