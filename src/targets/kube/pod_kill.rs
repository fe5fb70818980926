//! process-kill on Kubernetes: delete the member's pod with grace period 0 (SIGKILL, no preStop). Reverted by
//! waiting, with a deadline, until its StatefulSet has recreated the pod and it is Ready again.

use std::time::Instant;

use ::kube::api::DeleteParams;

use super::{api_error, pod_name, pod_ready, status_code, wait_until, KubeTarget};
use crate::fault::journal::Journal;
use crate::fault::{journal_before_applying, ActiveFault, RevertStep};
use crate::targets::TargetError;

pub async fn apply(
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
        "delete pod {} in {} with grace period 0",
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

/// Waits until the pod exists (recreated) and is Ready, or the target's deadline passes.
pub async fn wait_ready(target: &KubeTarget, namespace: &str, pod: &str) -> Result<(), String> {
    let api = ::kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(
        target.client.clone(),
        namespace,
    );
    let timing = &target.timing;
    let api = &api;
    wait_until(timing.pod_ready_deadline, timing.poll, || async move {
        match api.get(pod).await {
            Ok(p) if pod_ready(&p) && p.metadata.deletion_timestamp.is_none() => Ok(()),
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
