//! The kind cluster config and the HA stack's manifests, checked without a cluster: every manifest document is
//! deserialised into its k8s-openapi type by `kind` and must survive the round trip back to JSON unchanged, so a
//! misspelt field (which k8s-openapi would silently drop) fails here; then the stack's invariants (HA settings,
//! PDBs, spread, NodePorts matching kind's extraPortMappings) are checked on the typed values.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

const NAMESPACE: &str = "faultline";

/// Every file in kind/manifests/ must be listed here (and so get its test below).
const MANIFEST_FILES: &[&str] = &[
    "00-namespace.yaml",
    "10-postgres-rbac.yaml",
    "11-postgres.yaml",
    "20-redis.yaml",
    "21-redis-sentinel.yaml",
    "30-qdrant.yaml",
];

fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// One manifest document, typed by its `kind`.
#[allow(clippy::large_enum_variant)]
enum Doc {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    Role(Role),
    RoleBinding(RoleBinding),
    StatefulSet(StatefulSet),
    Service(Service),
    Endpoints(Endpoints),
    PodDisruptionBudget(PodDisruptionBudget),
    ConfigMap(ConfigMap),
    Secret(Secret),
}

impl Doc {
    fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Doc::Namespace(o) => &o.metadata,
            Doc::ServiceAccount(o) => &o.metadata,
            Doc::Role(o) => &o.metadata,
            Doc::RoleBinding(o) => &o.metadata,
            Doc::StatefulSet(o) => &o.metadata,
            Doc::Service(o) => &o.metadata,
            Doc::Endpoints(o) => &o.metadata,
            Doc::PodDisruptionBudget(o) => &o.metadata,
            Doc::ConfigMap(o) => &o.metadata,
            Doc::Secret(o) => &o.metadata,
        }
    }
}

fn typed(value: &serde_norway::Value) -> Result<Doc, String> {
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .ok_or("no `kind`")?;
    Ok(match kind {
        "Namespace" => Doc::Namespace(round_trip(value)?),
        "ServiceAccount" => Doc::ServiceAccount(round_trip(value)?),
        "Role" => Doc::Role(round_trip(value)?),
        "RoleBinding" => Doc::RoleBinding(round_trip(value)?),
        "StatefulSet" => Doc::StatefulSet(round_trip(value)?),
        "Service" => Doc::Service(round_trip(value)?),
        "Endpoints" => Doc::Endpoints(round_trip(value)?),
        "PodDisruptionBudget" => Doc::PodDisruptionBudget(round_trip(value)?),
        "ConfigMap" => Doc::ConfigMap(round_trip(value)?),
        "Secret" => Doc::Secret(round_trip(value)?),
        other => {
            return Err(format!(
                "unknown kind {other:?}: add its k8s-openapi type to tests/kind_manifests.rs"
            ))
        }
    })
}

/// Deserialise into `T`, serialise back and compare with the document: whatever k8s-openapi dropped or changed
/// is a field it does not know (or a value of the wrong type).
fn round_trip<T: DeserializeOwned + Serialize>(value: &serde_norway::Value) -> Result<T, String> {
    let object: T = serde_norway::from_value(value.clone())
        .map_err(|e| format!("does not deserialise: {e}"))?;
    let original = serde_json::to_value(value).map_err(|e| format!("not JSON-compatible: {e}"))?;
    let again = serde_json::to_value(&object).map_err(|e| format!("does not serialise: {e}"))?;
    let mut diffs = Vec::new();
    diff("", Some(&original), Some(&again), &mut diffs);
    if diffs.is_empty() {
        Ok(object)
    } else {
        Err(format!(
            "not kept by k8s-openapi (misspelt or mistyped field?):\n    {}",
            diffs.join("\n    ")
        ))
    }
}

/// Missing, null, [] and {} count as the same "nothing".
fn is_nothing(v: Option<&Json>) -> bool {
    match v {
        None | Some(Json::Null) => true,
        Some(Json::Array(a)) => a.is_empty(),
        Some(Json::Object(o)) => o.is_empty(),
        Some(_) => false,
    }
}

fn diff(path: &str, a: Option<&Json>, b: Option<&Json>, out: &mut Vec<String>) {
    if is_nothing(a) && is_nothing(b) {
        return;
    }
    // k8s-openapi writes apiVersion/kind into embedded objects (a StatefulSet's volumeClaimTemplates) that
    // manifests leave out.
    if a.is_none()
        && (path.ends_with(".apiVersion") || path.ends_with(".kind"))
        && path.contains('[')
    {
        return;
    }
    match (a, b) {
        (Some(Json::Object(x)), Some(Json::Object(y))) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                diff(&format!("{path}.{k}"), x.get(k), y.get(k), out);
            }
        }
        (Some(Json::Array(x)), Some(Json::Array(y))) if x.len() == y.len() => {
            for (i, (xi, yi)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), Some(xi), Some(yi), out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!(
            "{path}: manifest {} -> typed {}",
            a.map_or("(absent)".into(), Json::to_string),
            b.map_or("(absent)".into(), Json::to_string)
        )),
    }
}

/// Every document of one manifest file, typed; panics with every problem in the file at once.
fn load(file: &str) -> Vec<Doc> {
    let path = repo_path("kind/manifests").join(file);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(&text).enumerate() {
        let value = serde_norway::Value::deserialize(de)
            .unwrap_or_else(|e| panic!("{file} document {}: not YAML: {e}", i + 1));
        if value.is_null() {
            continue;
        }
        let what = format!(
            "{file} document {} ({} {})",
            i + 1,
            value.get("kind").and_then(|v| v.as_str()).unwrap_or("?"),
            value
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(|v| v.as_str())
                .unwrap_or("?")
        );
        match typed(&value) {
            Ok(doc) => {
                let meta = doc.metadata();
                if meta.name.is_none() {
                    problems.push(format!("{what}: no metadata.name"));
                }
                let namespaced = !matches!(doc, Doc::Namespace(_));
                if namespaced && meta.namespace.as_deref() != Some(NAMESPACE) {
                    problems.push(format!("{what}: metadata.namespace must be {NAMESPACE}"));
                }
                docs.push(doc);
            }
            Err(e) => problems.push(format!("{what}: {e}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(!docs.is_empty(), "{file}: no documents");
    docs
}

fn services(docs: &[Doc]) -> impl Iterator<Item = &Service> {
    docs.iter().filter_map(|d| match d {
        Doc::Service(s) => Some(s),
        _ => None,
    })
}

fn stateful_sets(docs: &[Doc]) -> impl Iterator<Item = &StatefulSet> {
    docs.iter().filter_map(|d| match d {
        Doc::StatefulSet(s) => Some(s),
        _ => None,
    })
}

fn config_maps(docs: &[Doc]) -> impl Iterator<Item = &ConfigMap> {
    docs.iter().filter_map(|d| match d {
        Doc::ConfigMap(c) => Some(c),
        _ => None,
    })
}

fn name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("?")
}

fn env_value<'a>(sts: &'a StatefulSet, var: &str) -> Option<&'a str> {
    let pod = sts.spec.template.spec.as_ref()?;
    pod.containers
        .iter()
        .flat_map(|c| c.env.iter().flatten())
        .find(|e| e.name == var)
        .and_then(|e| e.value.as_deref())
}

/// The HA shape every StatefulSet of the stack must have: 3 replicas, no two on one node, spread evenly over
/// zones, a PDB allowing one disruption, small requests on every container, pinned images.
fn check_ha_stateful_sets(file: &str, docs: &[Doc]) {
    let pdbs: Vec<&PodDisruptionBudget> = docs
        .iter()
        .filter_map(|d| match d {
            Doc::PodDisruptionBudget(p) => Some(p),
            _ => None,
        })
        .collect();
    let mut seen = 0;
    for sts in stateful_sets(docs) {
        seen += 1;
        let n = name(&sts.metadata);
        let spec = &sts.spec;
        assert_eq!(spec.replicas, Some(3), "{file} {n}: replicas");
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let selector = spec.selector.match_labels.clone().unwrap_or_default();
        assert!(
            !selector.is_empty() && selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "{file} {n}: the selector must match the pod template's labels"
        );
        let pod = spec.template.spec.as_ref().expect("pod spec");

        let anti = pod
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .unwrap_or_else(|| panic!("{file} {n}: required pod anti-affinity"));
        assert!(
            anti.iter()
                .any(|t| t.topology_key == "kubernetes.io/hostname"
                    && t.label_selector
                        .as_ref()
                        .and_then(|s| s.match_labels.as_ref())
                        == Some(&selector)),
            "{file} {n}: anti-affinity per node on the pods' own labels"
        );
        let spread = pod
            .topology_spread_constraints
            .as_ref()
            .unwrap_or_else(|| panic!("{file} {n}: topologySpreadConstraints"));
        assert!(
            spread
                .iter()
                .any(|c| c.topology_key == "topology.kubernetes.io/zone"
                    && c.max_skew == 1
                    && c.when_unsatisfiable == "DoNotSchedule"
                    && c.label_selector
                        .as_ref()
                        .and_then(|s| s.match_labels.as_ref())
                        == Some(&selector)),
            "{file} {n}: spread over zones, maxSkew 1, DoNotSchedule"
        );
        for c in &pod.containers {
            let image = c.image.as_deref().unwrap_or("");
            let tag = image
                .rsplit('/')
                .next()
                .and_then(|last| last.split_once(':'));
            assert!(
                matches!(tag, Some((_, t)) if !t.is_empty() && t != "latest"),
                "{file} {n}: image {image:?} must be pinned to a version tag"
            );
            let requests = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .unwrap_or_else(|| panic!("{file} {n}/{}: resource requests", c.name));
            assert!(
                requests.contains_key("cpu") && requests.contains_key("memory"),
                "{file} {n}/{}: cpu and memory requests",
                c.name
            );
            assert!(
                c.readiness_probe.is_some(),
                "{file} {n}/{}: readiness probe",
                c.name
            );
        }
        let governing = &spec.service_name;
        let headless = services(docs)
            .find(|s| s.metadata.name.as_ref() == governing.as_ref())
            .unwrap_or_else(|| panic!("{file} {n}: governing Service {governing:?}"));
        let hs = headless.spec.as_ref().expect("spec");
        assert_eq!(
            hs.cluster_ip.as_deref(),
            Some("None"),
            "{file} {governing:?}: headless"
        );
        assert_eq!(
            hs.publish_not_ready_addresses,
            Some(true),
            "{file} {governing:?}"
        );

        let pdb = pdbs
            .iter()
            .find(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .and_then(|s| s.match_labels.as_ref())
                    == Some(&selector)
            })
            .unwrap_or_else(|| panic!("{file} {n}: a PodDisruptionBudget selecting its pods"));
        assert_eq!(
            pdb.spec.as_ref().and_then(|s| s.max_unavailable.clone()),
            Some(IntOrString::Int(1)),
            "{file} {n}: PDB maxUnavailable 1"
        );
    }
    assert!(seen > 0, "{file}: no StatefulSet");
}

/// Shell scripts shipped in ConfigMaps must at least parse (`sh -n` / `bash -n`, by their shebang).
fn check_scripts(file: &str, docs: &[Doc]) {
    let dir = tempfile::tempdir().expect("tempdir");
    for cm in config_maps(docs) {
        for (key, script) in cm.data.iter().flatten().filter(|(k, _)| k.ends_with(".sh")) {
            let shell = if script.starts_with("#!/bin/bash") {
                "bash"
            } else {
                "sh"
            };
            let path = dir.path().join(key);
            fs::write(&path, script).expect("write script");
            let out = Command::new(shell)
                .arg("-n")
                .arg(&path)
                .output()
                .unwrap_or_else(|e| panic!("run {shell}: {e}"));
            assert!(
                out.status.success(),
                "{file} ConfigMap {} key {key}: {shell} -n failed: {}",
                name(&cm.metadata),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// NodePorts of the Services in one file, with the Service's name.
fn node_ports(docs: &[Doc]) -> Vec<(i32, String)> {
    services(docs)
        .flat_map(|s| {
            let n = name(&s.metadata).to_string();
            s.spec
                .iter()
                .flat_map(|sp| sp.ports.iter().flatten())
                .filter_map(move |p| p.node_port.map(|np| (np, n.clone())))
        })
        .collect()
}

#[test]
fn every_manifest_file_is_checked() {
    let mut on_disk: Vec<String> = fs::read_dir(repo_path("kind/manifests"))
        .expect("kind/manifests")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    assert_eq!(
        on_disk, MANIFEST_FILES,
        "kind/manifests/ and MANIFEST_FILES in tests/kind_manifests.rs differ"
    );
}

#[test]
fn namespace_manifest() {
    let docs = load("00-namespace.yaml");
    let [Doc::Namespace(ns)] = docs.as_slice() else {
        panic!("00-namespace.yaml: exactly one Namespace");
    };
    assert_eq!(ns.metadata.name.as_deref(), Some(NAMESPACE));
    assert_eq!(
        ns.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("faultline.dev/chaos"))
            .map(String::as_str),
        Some("allowed"),
        "the namespace carries faultline's opt-in label"
    );
}

#[test]
fn postgres_rbac_manifest() {
    let docs = load("10-postgres-rbac.yaml");
    let role = docs
        .iter()
        .find_map(|d| match d {
            Doc::Role(r) => Some(r),
            _ => None,
        })
        .expect("a Role");
    let verbs = |resource: &str| -> BTreeSet<String> {
        role.rules
            .iter()
            .flatten()
            .filter(|r| r.resources.iter().flatten().any(|x| x == resource))
            .flat_map(|r| r.verbs.iter().cloned())
            .collect()
    };
    // Patroni's Kubernetes DCS with use_endpoints (Patroni's docs and its kubernetes/ example).
    for (resource, needed) in [
        (
            "endpoints",
            &["get", "list", "watch", "create", "patch", "update"][..],
        ),
        (
            "configmaps",
            &["get", "list", "watch", "create", "patch", "update"][..],
        ),
        ("pods", &["get", "list", "watch", "patch", "update"][..]),
        ("services", &["create"][..]),
    ] {
        let have = verbs(resource);
        for v in needed {
            assert!(have.contains(*v), "Role postgres: {resource} needs {v}");
        }
    }
    let binding = docs
        .iter()
        .find_map(|d| match d {
            Doc::RoleBinding(b) => Some(b),
            _ => None,
        })
        .expect("a RoleBinding");
    assert_eq!(binding.role_ref.name, "postgres");
    assert!(docs
        .iter()
        .any(|d| matches!(d, Doc::ServiceAccount(sa) if name(&sa.metadata) == "postgres")));
    assert!(binding
        .subjects
        .iter()
        .flatten()
        .any(|s| s.kind == "ServiceAccount" && s.name == "postgres"));
}

#[test]
fn postgres_manifest() {
    let docs = load("11-postgres.yaml");
    check_ha_stateful_sets("11-postgres.yaml", &docs);
    let sts = stateful_sets(&docs).next().expect("StatefulSet");
    let pod = sts.spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("postgres"));
    let scope = env_value(sts, "SCOPE").expect("SCOPE");
    assert_eq!(env_value(sts, "DCS_ENABLE_KUBERNETES_API"), Some("true"));
    // Patroni reaches its DCS through the `kubernetes` Service, the address a Chaos Mesh partition cuts.
    assert_eq!(
        env_value(sts, "KUBERNETES_BYPASS_API_SERVICE"),
        Some("false")
    );

    let spilo: Json =
        serde_norway::from_str(env_value(sts, "SPILO_CONFIGURATION").expect("SPILO_CONFIGURATION"))
            .expect("SPILO_CONFIGURATION is YAML");
    let dcs = &spilo["bootstrap"]["dcs"];
    // ttl: the minimum Patroni 3.2+ enforces (Spilo 3.3-p2 ships Patroni 3.3.2; a lower value would be raised
    // silently, and the manifest would not say what runs). Patroni's rule loop_wait + 2*retry_timeout <= ttl.
    assert_eq!(dcs["ttl"], 20);
    assert_eq!(dcs["loop_wait"], 2);
    assert_eq!(dcs["retry_timeout"], 4);
    let (ttl, loop_wait, retry) = (
        dcs["ttl"].as_i64().unwrap(),
        dcs["loop_wait"].as_i64().unwrap(),
        dcs["retry_timeout"].as_i64().unwrap(),
    );
    assert!(
        ttl >= 20 && loop_wait >= 1 && retry >= 3,
        "Patroni 3.2+ minimums"
    );
    assert!(loop_wait + 2 * retry <= ttl, "Patroni's timing rule");
    assert_eq!(dcs["synchronous_mode"], true);
    assert_eq!(dcs["primary_stop_timeout"], 5);
    assert_eq!(dcs["postgresql"]["parameters"]["wal_sender_timeout"], "5s");
    let k8s = &spilo["kubernetes"];
    assert_eq!(k8s["use_endpoints"], true);
    let endpoint_port = k8s["ports"][0]["name"]
        .as_str()
        .expect("kubernetes.ports[0].name");

    // Patroni's labels must select exactly the StatefulSet's pods, plus the scope label = scope.
    let pod_labels = sts
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    for (k, v) in k8s["labels"].as_object().expect("kubernetes.labels") {
        assert_eq!(
            pod_labels.get(k).map(String::as_str),
            v.as_str(),
            "label {k}"
        );
    }
    let scope_label = k8s["scope_label"].as_str().expect("scope_label");
    assert_eq!(pod_labels.get(scope_label).map(String::as_str), Some(scope));
    assert_eq!(env_value(sts, "KUBERNETES_SCOPE_LABEL"), Some(scope_label));

    // The read-write Service: named like the scope, no selector (Patroni writes its Endpoints), port named as
    // Patroni names the Endpoints' port.
    let rw = services(&docs)
        .find(|s| name(&s.metadata) == scope)
        .expect("a Service named like the Patroni scope");
    let rw_spec = rw.spec.as_ref().unwrap();
    assert!(
        rw_spec.selector.is_none(),
        "the read-write Service has no selector"
    );
    let port = &rw_spec.ports.as_ref().unwrap()[0];
    assert_eq!(port.name.as_deref(), Some(endpoint_port));
    assert_eq!(port.port, 5432);
    assert!(
        services(&docs).any(|s| name(&s.metadata) == format!("{scope}-config")),
        "the {scope}-config Service that keeps Patroni's config Endpoints"
    );
}

#[test]
fn redis_manifest() {
    let docs = load("20-redis.yaml");
    check_ha_stateful_sets("20-redis.yaml", &docs);
    check_scripts("20-redis.yaml", &docs);
    let sts = stateful_sets(&docs).next().expect("StatefulSet");
    assert_eq!(env_value(sts, "MASTER_NAME"), Some("faultline"));
    let script = config_maps(&docs)
        .flat_map(|c| c.data.iter().flatten())
        .find(|(k, _)| k.as_str() == "redis-start.sh")
        .map(|(_, v)| v.as_str())
        .expect("redis-start.sh");
    for line in [
        "replica-announce-ip $POD_IP",
        "replicaof $master 6379",
        "save \"\"",
    ] {
        assert!(script.contains(line), "redis-start.sh writes {line:?}");
    }
}

#[test]
fn redis_sentinel_manifest() {
    let docs = load("21-redis-sentinel.yaml");
    check_ha_stateful_sets("21-redis-sentinel.yaml", &docs);
    check_scripts("21-redis-sentinel.yaml", &docs);
    let script = config_maps(&docs)
        .flat_map(|c| c.data.iter().flatten())
        .find(|(k, _)| k.as_str() == "sentinel-start.sh")
        .map(|(_, v)| v.as_str())
        .expect("sentinel-start.sh");
    // The local stack's Sentinel settings (quorum 2, down-after 3000 ms, failover-timeout 10000 ms).
    for line in [
        "sentinel monitor $MASTER_NAME $master 6379 2\n",
        "sentinel down-after-milliseconds $MASTER_NAME 3000\n",
        "sentinel failover-timeout $MASTER_NAME 10000\n",
        "sentinel announce-ip $POD_IP\n",
    ] {
        assert!(script.contains(line), "sentinel-start.sh writes {line:?}");
    }
}

#[test]
fn qdrant_manifest() {
    let docs = load("30-qdrant.yaml");
    check_ha_stateful_sets("30-qdrant.yaml", &docs);
    check_scripts("30-qdrant.yaml", &docs);
    let sts = stateful_sets(&docs).next().expect("StatefulSet");
    let pod = sts.spec.template.spec.as_ref().unwrap();
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("qdrant/qdrant:v1.18.3"),
        "the Qdrant version the local stack measured"
    );
    assert_eq!(env_value(sts, "QDRANT__CLUSTER__ENABLED"), Some("true"));
    assert_eq!(env_value(sts, "QDRANT__TELEMETRY_DISABLED"), Some("true"));
    assert_eq!(
        sts.spec.pod_management_policy.as_deref(),
        Some("Parallel"),
        "a lone Qdrant peer with data never turns ready: OrderedReady would deadlock a restart"
    );
    let script = config_maps(&docs)
        .flat_map(|c| c.data.iter().flatten())
        .find(|(k, _)| k.as_str() == "qdrant-start.sh")
        .map(|(_, v)| v.as_str())
        .expect("qdrant-start.sh");
    assert!(script.contains("--uri") && script.contains("--bootstrap"));
}

/// kind/cluster.yaml as plain YAML (kind's config types are Go-only).
fn cluster_config() -> Json {
    let path = repo_path("kind/cluster.yaml");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).expect("kind/cluster.yaml is YAML")
}

#[test]
fn kind_cluster_layout() {
    let cfg = cluster_config();
    assert_eq!(cfg["kind"], "Cluster");
    assert_eq!(cfg["apiVersion"], "kind.x-k8s.io/v1alpha4");
    let nodes = cfg["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 7, "1 control-plane + 6 workers");
    assert_eq!(
        nodes
            .iter()
            .filter(|n| n["role"] == "control-plane")
            .count(),
        1
    );
    let mut zones: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate() {
        let image = node["image"].as_str().unwrap_or("");
        assert!(
            image.starts_with("kindest/node:v1.3")
                && image
                    .split_once("@sha256:")
                    .is_some_and(|(_, d)| d.len() == 64 && d.chars().all(|c| c.is_ascii_hexdigit())),
            "node {i}: kindest/node image pinned by sha256 digest, got {image:?}"
        );
        if let Some(labels) = node["labels"].as_object() {
            for key in labels.keys() {
                assert!(
                    !key.starts_with("node-role.kubernetes.io"),
                    "node {i}: node-role labels stop kind's kubelet"
                );
            }
        }
        if node["role"] == "worker" {
            let region = node["labels"]["topology.kubernetes.io/region"]
                .as_str()
                .unwrap_or_else(|| panic!("worker {i}: region label"));
            let zone = node["labels"]["topology.kubernetes.io/zone"]
                .as_str()
                .unwrap_or_else(|| panic!("worker {i}: zone label"));
            *zones.entry((region.into(), zone.into())).or_default() += 1;
        } else {
            assert_eq!(node["role"], "control-plane", "node {i}: role");
        }
    }
    let expected: BTreeMap<(String, String), usize> =
        [("region-a", "a1"), ("region-a", "a2"), ("region-b", "b1")]
            .into_iter()
            .map(|(r, z)| ((r.to_string(), z.to_string()), 2))
            .collect();
    assert_eq!(
        zones, expected,
        "two regions: A with zones a1 + a2, B with b1; two workers each"
    );
}

#[test]
fn node_ports_match_kind_port_mappings_and_the_table() {
    let mut in_manifests: BTreeMap<i32, String> = BTreeMap::new();
    for file in MANIFEST_FILES {
        for (port, service) in node_ports(&load(file)) {
            assert!(
                (30000..=32767).contains(&port),
                "{file} Service {service}: nodePort {port} outside 30000-32767"
            );
            if let Some(other) = in_manifests.insert(port, service.clone()) {
                panic!("nodePort {port} used by both {other} and {service}");
            }
        }
    }
    let cfg = cluster_config();
    let mut mapped = BTreeSet::new();
    for node in cfg["nodes"].as_array().expect("nodes") {
        for m in node["extraPortMappings"].as_array().into_iter().flatten() {
            let container = m["containerPort"].as_i64().expect("containerPort") as i32;
            assert_eq!(
                m["hostPort"], m["containerPort"],
                "host port = NodePort, so the table holds for both"
            );
            assert_eq!(
                m["listenAddress"], "127.0.0.1",
                "port {container}: host-local only"
            );
            assert!(mapped.insert(container), "port {container} mapped twice");
        }
    }
    let in_manifests_set: BTreeSet<i32> = in_manifests.keys().copied().collect();
    assert_eq!(
        in_manifests_set, mapped,
        "every NodePort in kind/manifests/ must be in extraPortMappings and vice versa"
    );

    // The comment table at the top of kind/cluster.yaml: "#   <port>   <service> ..." lines.
    let text = fs::read_to_string(repo_path("kind/cluster.yaml")).unwrap();
    let mut table: BTreeMap<i32, String> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.trim_start_matches('#').split_whitespace();
        if !line.starts_with('#') {
            continue;
        }
        if let (Some(Ok(port)), Some(service)) = (words.next().map(str::parse::<i32>), words.next())
        {
            table.insert(port, service.to_string());
        }
    }
    assert_eq!(
        table, in_manifests,
        "the NodePort table in kind/cluster.yaml's header must list every NodePort and its Service"
    );
}

#[test]
fn workflow_creates_the_cluster_and_runs_the_suite() {
    let path = repo_path(".github/workflows/faultline-kind.yml");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let wf: Json = serde_norway::from_str(&text).expect("the workflow is YAML");
    assert!(
        wf["jobs"].as_object().is_some_and(|j| !j.is_empty()),
        "jobs"
    );
    for needle in [
        "kind/cluster.yaml",
        "faultline up --target kind",
        "suite scenarios/suites/nightly.yaml --target kind",
        "cargo test --test kube_e2e -- --ignored --test-threads=1",
        "sysctl fs.inotify.max_user_watches=524288 fs.inotify.max_user_instances=512",
        "actions/upload-artifact",
    ] {
        assert!(text.contains(needle), "the workflow mentions {needle:?}");
    }
    // The cluster comes from `faultline up`, which creates the kind network with an IPv4 subnet first (a bare
    // `kind create cluster` would let the engine choose it, and a disconnected node could not get its address back
    // on Docker Engine 29.0.0-29.0.3).
    assert!(
        !text.contains("run: kind create cluster"),
        "the workflow creates the cluster with faultline up"
    );
    // The inotify limits are raised before any cluster exists.
    for job in wf["jobs"].as_object().unwrap().values() {
        let steps: Vec<String> = job["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["run"].as_str().unwrap_or_default().to_string())
            .collect();
        let sysctl = steps.iter().position(|r| r.contains("fs.inotify"));
        let up = steps.iter().position(|r| r.contains("up --target kind"));
        assert!(
            sysctl.is_some() && sysctl < up,
            "inotify limits before the cluster: {steps:?}"
        );
    }
}

#[test]
fn every_end_to_end_fault_is_reverted_by_a_guard() {
    let path = repo_path("tests/kube_e2e.rs");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    let mut applied = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.contains(".apply_fault(") {
            applied += 1;
            assert!(
                lines[i + 1].contains("Reverting::new(&t, &active)"),
                "kube_e2e.rs:{}: a fault applied without a Reverting guard on the next line",
                i + 2
            );
        }
        if line.trim_start().starts_with("#[tokio::test") {
            assert!(
                line.contains("flavor = \"multi_thread\""),
                "kube_e2e.rs:{}: the guard blocks on its revert in Drop, which needs the multi-threaded runtime",
                i + 1
            );
        }
    }
    assert!(applied >= 4, "{applied} faults applied");
}
