//! process-kill on Kubernetes. The local stack's process-kill is a SIGKILL of the member: no shutdown, no leader
//! key handed over. A pod delete is not that, even with grace period 0: the kubelet still stops the containers with
//! SIGTERM and at least 1 s of grace, Spilo traps TERM and Patroni hands the leader key over cleanly, which is a
//! graceful switchover.
//!
//! - kind: the member's containers are SIGKILLed inside their node container (`crictl stop --timeout 0 <ids>`
//!   through the Docker exec API; containerd's StopContainer with a zero timeout sends SIGKILL at once). The pod
//!   stays, and the kubelet restarts the containers as it would after a crash. Reverted by waiting, with a
//!   deadline, until the killed containers have been replaced and the pod is Ready.
//! - Other clusters (no access to the nodes): the pod is deleted with grace period 0, and the plan and the fault
//!   description say it is a SIGTERM delete. Reverted by waiting until the StatefulSet has recreated the pod and it
//!   is Ready.

use std::time::Instant;

use ::kube::api::DeleteParams;
use k8s_openapi::api::core::v1::Pod;

use super::{
    api_error, pod_name, pod_node, pod_ready, status_code, wait_until, Cluster, KubeTarget,
};
use crate::fault::journal::Journal;
use crate::fault::{journal_before_applying, ActiveFault, RevertStep};
use crate::targets::TargetError;

/// What process-kill does on this cluster, in the words of the plan and the fault description.
pub fn mechanism(cluster: &Cluster) -> &'static str {
    match cluster {
        Cluster::Kind { .. } => {
            "SIGKILL of the pod's containers in their kind node (crictl stop --timeout 0; the kubelet restarts them)"
        }
        Cluster::Existing => {
            "delete with grace period 0, which is a SIGTERM delete: the kubelet gives at least 1 s of grace and \
             Patroni hands its leader key over cleanly (a switchover, not a crash; faultline cannot reach the nodes \
             of a cluster it did not create)"
        }
    }
}

pub async fn apply(
    target: &KubeTarget,
    journal: &Journal,
    pods: &[String],
) -> Result<ActiveFault, TargetError> {
    match &target.cluster {
        Cluster::Kind { docker } => sigkill_in_node(target, docker, journal, pods).await,
        Cluster::Existing => delete(target, journal, pods).await,
    }
}

/// The IDs of the pod's running containers, as the runtime knows them (`containerd://<id>` without the scheme).
pub fn running_containers(p: &Pod) -> Vec<String> {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        .filter_map(|c| c.container_id.as_deref())
        .map(|id| id.split_once("://").map_or(id, |(_, id)| id).to_string())
        .collect()
}

async fn sigkill_in_node(
    target: &KubeTarget,
    docker: &super::DockerApi,
    journal: &Journal,
    pods: &[String],
) -> Result<ActiveFault, TargetError> {
    // (pod, node container, container IDs), read before anything is journaled or changed.
    let mut victims = Vec::new();
    for name in pods {
        let p = target
            .pods()
            .get(name)
            .await
            .map_err(|e| api_error(&format!("cannot read pod {name}"), e))?;
        let node = pod_node(&p)
            .ok_or_else(|| TargetError::Fault(format!("pod {name} is not scheduled")))?
            .to_string();
        let ids = running_containers(&p);
        if ids.is_empty() {
            return Err(TargetError::Fault(format!(
                "pod {name} has no running container to kill"
            )));
        }
        victims.push((name.clone(), node, ids));
    }
    let steps = victims
        .iter()
        .map(|(pod, _, ids)| RevertStep::KubeContainersRestarted {
            namespace: target.namespace.clone(),
            pod: pod.clone(),
            killed: ids.clone(),
        })
        .collect();
    let description = format!(
        "{}: {}",
        mechanism(&target.cluster),
        victims
            .iter()
            .map(|(p, n, _)| format!("{p} on {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let entry = journal_before_applying(journal, "process-kill", &description, steps)?;
    let requested_at = Instant::now();
    for (killed, (pod, node, ids)) in victims.iter().enumerate() {
        let mut cmd = vec!["crictl", "stop", "--timeout", "0"];
        cmd.extend(ids.iter().map(String::as_str));
        let failure = match docker.exec(node, &cmd).await {
            Ok((0, _)) => continue,
            Ok((code, output)) => format!(
                "`{}` in node {node} (pod {pod}) exited {code}: {}",
                cmd.join(" "),
                output.trim()
            ),
            Err(e) => e,
        };
        // The pods before this one were killed: wait for their replacements (the revert), then close the entry.
        // The steps of the pods not killed would wait for containers that were never stopped.
        let cause = TargetError::Fault(failure);
        return Err(match target.revert(&entry.steps[..killed]).await {
            Ok(()) => {
                let _ = journal.close(&entry.id, "reverted: the kill failed part-way");
                cause
            }
            Err(e) => TargetError::Fault(format!(
                "{cause}; waiting for the pods killed before it failed too (journal entry {} stays open for \
                 `faultline recover`): {e}",
                entry.id
            )),
        });
    }
    // Effective once crictl has returned: containerd has SIGKILLed every container.
    Ok(ActiveFault::effective_now(
        entry,
        description,
        pods.to_vec(),
        requested_at,
    ))
}

async fn delete(
    target: &KubeTarget,
    journal: &Journal,
    pods: &[String],
) -> Result<ActiveFault, TargetError> {
    let steps = pods
        .iter()
        .map(|p| RevertStep::KubePodReady {
            namespace: target.namespace.clone(),
            pod: p.clone(),
        })
        .collect();
    let description = format!(
        "{}: pod {} in {}",
        mechanism(&target.cluster),
        pods.join(", "),
        target.namespace
    );
    let entry = journal_before_applying(journal, "process-kill", &description, steps)?;
    let requested_at = Instant::now();
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    for p in pods {
        target
            .pods()
            .delete(p, &params)
            .await
            .map_err(|e| api_error(&format!("cannot delete pod {p}"), e))?;
    }
    // Effective once the API server has accepted every deletion.
    Ok(ActiveFault::effective_now(
        entry,
        description,
        pods.to_vec(),
        requested_at,
    ))
}

/// Waits until the pod exists (recreated) and is Ready, and none of `killed` is among its running containers, or
/// the target's deadline passes.
pub async fn wait_ready(
    target: &KubeTarget,
    namespace: &str,
    pod: &str,
    killed: &[String],
) -> Result<(), String> {
    let api = ::kube::Api::<Pod>::namespaced(target.client.clone(), namespace);
    let timing = &target.timing;
    let api = &api;
    wait_until(timing.pod_ready_deadline, timing.poll, || async move {
        match api.get(pod).await {
            Ok(p) if p.metadata.deletion_timestamp.is_some() => {
                Err(format!("{} is being deleted", pod_name(&p)))
            }
            Ok(p) if running_containers(&p).iter().any(|c| killed.contains(c)) => Err(format!(
                "{} still runs a killed container (the kubelet has not noticed yet)",
                pod_name(&p)
            )),
            Ok(p) if pod_ready(&p) => Ok(()),
            Ok(p) => Err(format!("{} exists but is not Ready", pod_name(&p))),
            Err(e) if status_code(&e) == Some(404) => Err("not recreated yet".to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .map_err(|last| {
        format!(
            "pod {namespace}/{pod} was not Ready within {} s: {last}",
            timing.pod_ready_deadline.as_secs()
        )
    })
}
