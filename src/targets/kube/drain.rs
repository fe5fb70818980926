//! node-drain on Kubernetes, as `kubectl drain` does it: cordon the node, then evict the stack's pods on it through
//! the Eviction API. An eviction a PodDisruptionBudget refuses (HTTP 429) is retried until the deadline and then
//! reported with the budget's name. Reverted by uncordoning and waiting for the evicted pods to be Ready again
//! (their volumes are pinned to the node, so they come back there).

use std::time::Instant;

use ::kube::api::{Api, EvictParams, ListParams};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use super::{api_error, pod_name, pod_node, status_code, KubeTarget};
use crate::fault::journal::Journal;
use crate::fault::{journal_before_applying, ActiveFault, RevertStep};
use crate::targets::TargetError;

pub async fn apply(
    target: &KubeTarget,
    journal: &Journal,
    nodes: &[String],
) -> Result<ActiveFault, TargetError> {
    let all = target
        .pods()
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error(&format!("cannot list the pods of {}", target.namespace), e))?;
    let victims: Vec<&Pod> = all
        .items
        .iter()
        .filter(|p| pod_node(p).is_some_and(|n| nodes.iter().any(|d| d == n)))
        .collect();
    let mut steps: Vec<RevertStep> = nodes
        .iter()
        .map(|n| RevertStep::KubeUncordon { node: n.clone() })
        .collect();
    steps.extend(victims.iter().map(|p| RevertStep::KubePodReady {
        namespace: target.namespace.clone(),
        pod: pod_name(p).to_string(),
    }));
    let names: Vec<String> = victims.iter().map(|p| pod_name(p).to_string()).collect();
    let description = format!(
        "drain {}: cordon, evict {}",
        nodes.join(", "),
        if names.is_empty() {
            "no pod".to_string()
        } else {
            names.join(", ")
        }
    );
    let entry = journal_before_applying(journal, "node-drain", &description, steps)?;
    let requested_at = Instant::now();
    let node_api = Api::<Node>::all(target.client.clone());
    for n in nodes {
        node_api
            .cordon(n)
            .await
            .map_err(|e| api_error(&format!("cannot cordon node {n}"), e))?;
    }
    for p in &victims {
        evict(target, p).await?;
    }
    // Effective from the first cordon, as on the local stack: the evictions are part of the fault.
    Ok(ActiveFault::new(
        entry,
        description,
        names,
        requested_at,
        requested_at,
    ))
}

/// Evicts one pod, retrying while a PodDisruptionBudget refuses (429) until the target's eviction deadline.
async fn evict(target: &KubeTarget, pod: &Pod) -> Result<(), TargetError> {
    let name = pod_name(pod);
    let deadline = Instant::now() + target.timing.eviction_deadline;
    loop {
        match target.pods().evict(name, &EvictParams::default()).await {
            Ok(_) => return Ok(()),
            // Already gone: nothing left to evict.
            Err(e) if status_code(&e) == Some(404) => return Ok(()),
            Err(e) if status_code(&e) == Some(429) => {
                if Instant::now() >= deadline {
                    let budgets = budgets_covering(target, pod).await;
                    return Err(TargetError::Fault(format!(
                        "eviction of pod {name} still refused after {} s by PodDisruptionBudget {}: {e}",
                        target.timing.eviction_deadline.as_secs(),
                        if budgets.is_empty() {
                            "(none found matching the pod)".to_string()
                        } else {
                            budgets.join(", ")
                        }
                    )));
                }
                tokio::time::sleep(target.timing.eviction_retry).await;
            }
            Err(e) => return Err(api_error(&format!("cannot evict pod {name}"), e)),
        }
    }
}

/// Names of the namespace's PodDisruptionBudgets whose matchLabels select the pod.
async fn budgets_covering(target: &KubeTarget, pod: &Pod) -> Vec<String> {
    let api = Api::<PodDisruptionBudget>::namespaced(target.client.clone(), &target.namespace);
    let Ok(list) = api.list(&ListParams::default()).await else {
        return Vec::new();
    };
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    list.items
        .iter()
        .filter(|b| {
            let wanted = b
                .spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .and_then(|s| s.match_labels.as_ref());
            wanted.is_some_and(|w| w.iter().all(|(k, v)| labels.get(k) == Some(v)))
        })
        .filter_map(|b| b.metadata.name.clone())
        .collect()
}

/// Marks the node schedulable again (idempotent).
pub async fn uncordon(target: &KubeTarget, node: &str) -> Result<(), String> {
    Api::<Node>::all(target.client.clone())
        .uncordon(node)
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot uncordon node {node}: {e}"))
}
