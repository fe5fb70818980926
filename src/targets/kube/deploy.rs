//! Deploying the stack: the manifests of kind/manifests/ (embedded in the binary, applied in file-name order) with
//! server-side apply under the field manager `faultline`, then a wait with a deadline until every StatefulSet of
//! the namespace is Ready.

use std::time::{Duration, Instant};

use ::kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use ::kube::Client;
use k8s_openapi::api::apps::v1::StatefulSet;
use serde::Deserialize;

use crate::targets::TargetError;

/// The field manager of every object faultline applies.
pub const FIELD_MANAGER: &str = "faultline";

/// kind/manifests/, in the order they are applied.
pub const MANIFESTS: [(&str, &str); 6] = [
    (
        "00-namespace.yaml",
        include_str!("../../../kind/manifests/00-namespace.yaml"),
    ),
    (
        "10-postgres-rbac.yaml",
        include_str!("../../../kind/manifests/10-postgres-rbac.yaml"),
    ),
    (
        "11-postgres.yaml",
        include_str!("../../../kind/manifests/11-postgres.yaml"),
    ),
    (
        "20-redis.yaml",
        include_str!("../../../kind/manifests/20-redis.yaml"),
    ),
    (
        "21-redis-sentinel.yaml",
        include_str!("../../../kind/manifests/21-redis-sentinel.yaml"),
    ),
    (
        "30-qdrant.yaml",
        include_str!("../../../kind/manifests/30-qdrant.yaml"),
    ),
];

/// The namespace the manifests are written for; objects are moved to the requested one on apply.
const MANIFEST_NAMESPACE: &str = "faultline";

/// The resource (plural, scope) of each kind the manifests use: no discovery round trip, and a kind added to the
/// manifests without an entry here fails loudly.
fn resource_of(api_version: &str, kind: &str) -> Option<(ApiResource, bool)> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let (plural, namespaced) = match kind {
        "Namespace" => ("namespaces", false),
        "ServiceAccount" => ("serviceaccounts", true),
        "Role" => ("roles", true),
        "RoleBinding" => ("rolebindings", true),
        "Secret" => ("secrets", true),
        "ConfigMap" => ("configmaps", true),
        "Service" => ("services", true),
        "StatefulSet" => ("statefulsets", true),
        "PodDisruptionBudget" => ("poddisruptionbudgets", true),
        _ => return None,
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Some((ApiResource::from_gvk_with_plural(&gvk, plural), namespaced))
}

/// The documents of one manifest file as dynamic objects, moved to `namespace` (objects, the Namespace itself and
/// RoleBinding subjects that name the manifests' namespace). Without `opt_in` the Namespace loses its
/// `faultline.dev/chaos=allowed` label: on a cluster faultline did not create, only its owner opts in.
pub fn parse_manifest(
    file: &str,
    text: &str,
    namespace: &str,
    opt_in: bool,
) -> Result<Vec<DynamicObject>, String> {
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let mut v = serde_json::Value::deserialize(doc).map_err(|e| format!("{file}: {e}"))?;
        if v.is_null() {
            continue;
        }
        if v["kind"] == "Namespace" {
            v["metadata"]["name"] = namespace.into();
            if !opt_in {
                if let Some(labels) = v["metadata"]
                    .get_mut("labels")
                    .and_then(|l| l.as_object_mut())
                {
                    labels.remove(super::CHAOS_LABEL);
                }
            }
        } else if v["metadata"].get("namespace").is_some() {
            v["metadata"]["namespace"] = namespace.into();
        }
        if let Some(subjects) = v.get_mut("subjects").and_then(|s| s.as_array_mut()) {
            for s in subjects {
                if s["namespace"] == MANIFEST_NAMESPACE {
                    s["namespace"] = namespace.into();
                }
            }
        }
        out.push(serde_json::from_value(v).map_err(|e| format!("{file}: {e}"))?);
    }
    Ok(out)
}

/// Server-side applies every manifest (field manager `faultline`) into `namespace`; `opt_in` keeps the
/// namespace's chaos opt-in label (faultline's own kind cluster).
pub async fn apply_manifests(
    client: &Client,
    namespace: &str,
    opt_in: bool,
) -> Result<usize, TargetError> {
    let mut applied = 0;
    for (file, text) in MANIFESTS {
        for obj in
            parse_manifest(file, text, namespace, opt_in).map_err(TargetError::Environment)?
        {
            let types = obj.types.clone().unwrap_or_default();
            let name = obj.metadata.name.clone().unwrap_or_default();
            let (ar, namespaced) =
                resource_of(&types.api_version, &types.kind).ok_or_else(|| {
                    TargetError::Environment(format!(
                        "{file}: faultline does not know how to apply a {} ({})",
                        types.kind, types.api_version
                    ))
                })?;
            let api: Api<DynamicObject> = if namespaced {
                Api::namespaced_with(client.clone(), namespace, &ar)
            } else {
                Api::all_with(client.clone(), &ar)
            };
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .map_err(|e| {
                TargetError::Environment(format!(
                    "{file}: server-side apply of {} {name} failed: {e}",
                    types.kind
                ))
            })?;
            applied += 1;
        }
    }
    Ok(applied)
}

/// Waits until the namespace has StatefulSets and each has all its replicas Ready, or the deadline passes.
pub async fn wait_stateful_sets_ready(
    client: &Client,
    namespace: &str,
    deadline: Duration,
    poll: Duration,
) -> Result<(), TargetError> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let until = Instant::now() + deadline;
    loop {
        let waiting = match api.list(&ListParams::default()).await {
            Ok(l) if l.items.is_empty() => format!("no StatefulSet in namespace {namespace}"),
            Ok(l) => l
                .items
                .iter()
                .filter_map(|s| {
                    let want = s.spec.replicas.unwrap_or(1);
                    let ready = s
                        .status
                        .as_ref()
                        .and_then(|s| s.ready_replicas)
                        .unwrap_or(0);
                    (ready < want).then(|| {
                        format!(
                            "{} {ready}/{want} Ready",
                            s.metadata.name.as_deref().unwrap_or("?")
                        )
                    })
                })
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("cannot list StatefulSets: {e}"),
        };
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(TargetError::Environment(format!(
                "the StatefulSets of namespace {namespace} are not Ready within {} s: {waiting}",
                deadline.as_secs()
            )));
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_manifest_object_has_a_known_resource() {
        for (file, text) in MANIFESTS {
            for obj in parse_manifest(file, text, "faultline", true).unwrap() {
                let t = obj.types.unwrap();
                assert!(
                    resource_of(&t.api_version, &t.kind).is_some(),
                    "{file}: {} {}",
                    t.api_version,
                    t.kind
                );
            }
        }
    }

    #[test]
    fn objects_move_to_the_requested_namespace() {
        let text = "apiVersion: v1\nkind: Namespace\n\
                    metadata: {name: faultline, labels: {faultline.dev/chaos: allowed}}\n---\n\
                    apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
                    metadata: {name: rb, namespace: faultline}\n\
                    subjects: [{kind: ServiceAccount, name: sa, namespace: faultline}]\n\
                    roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}\n";
        let objs = parse_manifest("t.yaml", text, "chaos", false).unwrap();
        assert_eq!(objs[0].metadata.name.as_deref(), Some("chaos"));
        assert!(
            objs[0]
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.is_empty()),
            "no opt-in on a cluster faultline did not create"
        );
        assert_eq!(objs[1].metadata.namespace.as_deref(), Some("chaos"));
        assert_eq!(objs[1].data["subjects"][0]["namespace"], "chaos");
        let (ar, namespaced) = resource_of("apps/v1", "StatefulSet").unwrap();
        assert_eq!(
            (ar.group.as_str(), ar.plural.as_str(), namespaced),
            ("apps", "statefulsets", true)
        );
    }
}
