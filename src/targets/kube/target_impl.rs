//! The stack on Kubernetes as a `Target`: components reached through the NodePorts (pods mapped to their
//! per-member ports, what the servers announce mapped back through the pods' names and IPs), health as pods Ready
//! plus the components' own checks, faults and reverts through the code in `faults.rs`, server log lines
//! through the pods' logs, and the cluster's own account (pod readiness, Events) through `observe.rs`.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use ::kube::api::{Api, ListParams, LogParams};
use k8s_openapi::api::core::v1::{Pod, Secret as KubeSecret};
use tokio::sync::watch;

use super::endpoints::{members, qdrant_peers, MemberService, PodAddr};
use super::{matches_selector, pod_name, pod_ready, Cluster, KubeTarget};
use crate::component::postgres::{self, PostgresEndpoints};
use crate::component::qdrant::{self as qdrant_component, QdrantEndpoints};
use crate::component::redis::{self as redis_component, RedisEndpoints};
use crate::component::{
    http_client, retry_until, Component, PostgresComponent, QdrantComponent, RedisComponent,
};
use crate::events::EventLog;
use crate::fault::journal::Journal;
use crate::fault::{ActiveFault, RevertStep};
use crate::scenario::{ComponentKind, FaultKind, Role};
use crate::secret::Secret;
use crate::settings::DcsApi;
use crate::targets::{Target, TargetError};
use crate::topology::Topology;

/// The Secret of kind/manifests/11-postgres.yaml holding the superuser password the clients log in with.
const POSTGRES_SECRET: &str = "postgres-credentials";
const POSTGRES_SECRET_KEY: &str = "superuser-password";
/// Patroni's scope in the manifests (its Kubernetes DCS objects are named after it).
const PATRONI_SCOPE: &str = "postgres";
/// How much of each pod's log the log-agreement check reads.
const LOG_TAIL_LINES: i64 = 5000;

/// The stack's pods and what was read with them at the last `refresh`. Components are built from it, so a pod
/// recreated with a new IP is mapped correctly from the next refresh on (every `wait_healthy` refreshes).
#[derive(Default)]
pub(super) struct Snapshot {
    postgres: Vec<PodAddr>,
    redis: Vec<PodAddr>,
    sentinel: Vec<PodAddr>,
    qdrant: Vec<PodAddr>,
    images: BTreeSet<String>,
    password: Option<Secret>,
    patroni_config: Option<serde_json::Value>,
    /// The ttl Patroni's leader writes into its lock (the leader Endpoints' `ttl` annotation): the value in
    /// effect, after Patroni's own minimum (20 since Patroni 3.2), where /config shows what was configured.
    patroni_lock_ttl: Option<u64>,
    sentinel_settings: Option<serde_json::Value>,
}

impl KubeTarget {
    /// Reads the stack's pods (names, nodes, IPs, images) and the Postgres password, and keeps them for the
    /// components. Returns the stack's pods (every pod of the four selectors).
    pub async fn refresh(&self) -> Result<Vec<Pod>, TargetError> {
        let env = |what: String, e: ::kube::Error| TargetError::Environment(format!("{what}: {e}"));
        let all = self
            .pods()
            .list(&ListParams::default())
            .await
            .map_err(|e| {
                env(
                    format!("cannot list the pods of namespace {}", self.namespace),
                    e,
                )
            })?
            .items;
        let sel = &self.selectors;
        let of = |s: &str| -> Vec<Pod> {
            all.iter()
                .filter(|p| matches_selector(p, s))
                .cloned()
                .collect()
        };
        let (pg, rd, st, qd) = (
            of(&sel.postgres),
            of(&sel.redis),
            of(&sel.sentinel),
            of(&sel.qdrant),
        );
        let password = match Api::<KubeSecret>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(POSTGRES_SECRET)
            .await
        {
            Ok(s) => s
                .and_then(|s| s.data)
                .and_then(|d| d.get(POSTGRES_SECRET_KEY).cloned())
                .map(|b| Secret::new(String::from_utf8_lossy(&b.0).into_owned())),
            Err(e) => {
                return Err(env(
                    format!("cannot read Secret {POSTGRES_SECRET} in {}", self.namespace),
                    e,
                ))
            }
        };
        let stack: Vec<Pod> = [&pg, &rd, &st, &qd]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let images = stack
            .iter()
            .filter_map(|p| p.spec.as_ref())
            .flat_map(|s| s.containers.iter().filter_map(|c| c.image.clone()))
            .collect();
        let addrs = |v: &[Pod]| v.iter().filter_map(PodAddr::of).collect::<Vec<_>>();
        {
            let mut snap = self.snapshot.write().expect("snapshot lock");
            snap.postgres = addrs(&pg);
            snap.redis = addrs(&rd);
            snap.sentinel = addrs(&st);
            snap.qdrant = addrs(&qd);
            snap.images = images;
            snap.password = password;
        }
        self.refresh_ha_settings().await;
        Ok(stack)
    }

    /// The HA settings the servers run with, for the fingerprint: Patroni's dynamic configuration and the
    /// Sentinels' view of the monitored master. Best effort: a server that does not answer leaves it unknown.
    async fn refresh_ha_settings(&self) {
        let lock_ttl = self
            .patroni_leader_record()
            .await
            .ok()
            .flatten()
            .and_then(|a| a["ttl"].as_str().and_then(|t| t.parse().ok()));
        let http = http_client(Duration::from_secs(1));
        let mut patroni = None;
        for m in &self.postgres_endpoints().members {
            if let Ok(r) = http.get(postgres::patroni_url(m, "/config")).send().await {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    patroni = Some(v);
                    break;
                }
            }
        }
        let ep = self.redis_endpoints();
        let mut sentinel = None;
        for s in &ep.sentinels {
            if let Ok(maps) = redis_component::sentinel_map(s, &["master", &ep.master_name]).await {
                if let Some(m) = maps.first() {
                    let keep = [
                        "quorum",
                        "down-after-milliseconds",
                        "failover-timeout",
                        "parallel-syncs",
                    ];
                    sentinel = Some(serde_json::Value::Object(
                        m.iter()
                            .filter(|(k, _)| keep.contains(&k.as_str()))
                            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                            .collect(),
                    ));
                    break;
                }
            }
        }
        let mut snap = self.snapshot.write().expect("snapshot lock");
        snap.patroni_config = patroni;
        snap.patroni_lock_ttl = lock_ttl;
        snap.sentinel_settings = sentinel;
    }

    pub fn postgres_endpoints(&self) -> PostgresEndpoints {
        let snap = self.snapshot.read().expect("snapshot lock");
        PostgresEndpoints {
            members: members(&self.ports, &snap.postgres, MemberService::Postgres),
            // Patroni uses the Kubernetes API as its DCS here: there is no etcd to watch.
            etcd: Vec::new(),
            etcd_port: postgres::ETCD_PORT,
            scope: PATRONI_SCOPE.into(),
            dcs_api: DcsApi::Etcd2,
            user: "postgres".into(),
            password: snap.password.clone().unwrap_or_else(|| Secret::new("")),
            client_via: None,
            routers: Vec::new(),
        }
    }

    pub fn redis_endpoints(&self) -> RedisEndpoints {
        let snap = self.snapshot.read().expect("snapshot lock");
        RedisEndpoints {
            members: members(&self.ports, &snap.redis, MemberService::Redis),
            sentinels: members(&self.ports, &snap.sentinel, MemberService::Sentinel),
            master_name: self.selectors.redis_master_name.clone(),
        }
    }

    pub fn qdrant_endpoints(&self) -> QdrantEndpoints {
        let snap = self.snapshot.read().expect("snapshot lock");
        let s = &self.settings;
        QdrantEndpoints {
            peers: qdrant_peers(&self.ports, &snap.qdrant),
            collection: s.qdrant_collection_spec(),
            seed: s.qdrant_seed,
        }
    }

    /// One health round: every stack pod Ready, then Patroni, Sentinel/Redis and Qdrant healthy by their own
    /// checks (through the NodePorts).
    async fn health_once(&self) -> Result<String, String> {
        let pods = self.refresh().await.map_err(|e| e.to_string())?;
        for (what, sel) in [
            ("postgres", &self.selectors.postgres),
            ("redis", &self.selectors.redis),
            ("sentinel", &self.selectors.sentinel),
        ] {
            if !pods.iter().any(|p| matches_selector(p, sel)) {
                return Err(format!(
                    "no {what} pod ({sel}) in namespace {}",
                    self.namespace
                ));
            }
        }
        let not_ready: Vec<&str> = pods
            .iter()
            .filter(|p| !pod_ready(p))
            .map(pod_name)
            .collect();
        if !not_ready.is_empty() {
            return Err(format!("pods not Ready: {}", not_ready.join(", ")));
        }
        let pg = postgres::health(&self.postgres_endpoints(), self.settings.synchronous_mode)
            .await
            .map_err(|e| format!("postgres: {e}"))?;
        let redis = redis_component::health(&self.redis_endpoints())
            .await
            .map_err(|e| format!("redis: {e}"))?;
        let mut summary = format!("postgres leader on {pg}, redis master on {redis}");
        let qdrant = self.qdrant_endpoints();
        if !qdrant.peers.is_empty() {
            let q = qdrant_component::health(&qdrant)
                .await
                .map_err(|e| format!("qdrant: {e}"))?;
            summary.push_str(&format!(", qdrant {q}"));
        }
        Ok(summary)
    }

    /// The text of one pod's log (the last `LOG_TAIL_LINES` lines).
    async fn pod_log(&self, pod: &str) -> Result<String, ::kube::Error> {
        self.pods()
            .logs(
                pod,
                &LogParams {
                    tail_lines: Some(LOG_TAIL_LINES),
                    ..LogParams::default()
                },
            )
            .await
    }
}

impl Target for KubeTarget {
    fn topology(&self) -> &Topology {
        KubeTarget::topology(self)
    }

    fn component(&self, kind: ComponentKind) -> Box<dyn Component> {
        match kind {
            ComponentKind::Postgres => Box::new(PostgresComponent(self.postgres_endpoints())),
            ComponentKind::Redis => Box::new(RedisComponent(self.redis_endpoints())),
            ComponentKind::Qdrant => Box::new(QdrantComponent::new(self.qdrant_endpoints())),
        }
    }

    async fn role_holder(&self, component: ComponentKind) -> Option<String> {
        self.role_node(component, Role::Primary).await.ok()
    }

    async fn sync_replica(&self, component: ComponentKind) -> Option<String> {
        match component {
            ComponentKind::Postgres => {
                postgres::sync_standby_node(&self.postgres_endpoints()).await
            }
            _ => None,
        }
    }

    async fn wait_healthy(&self, timeout: Duration) -> Result<String, String> {
        retry_until(timeout, || self.health_once())
            .await
            .map_err(|e| format!("not healthy within {} s: {e}", timeout.as_secs()))
    }

    fn fingerprint(&self) -> serde_json::Value {
        let snap = self.snapshot.read().expect("snapshot lock");
        let t = KubeTarget::topology(self);
        serde_json::json!({
            "target": match self.cluster { Cluster::Kind { .. } => "kind", Cluster::Existing => "kube" },
            "context": self.context,
            "namespace": self.namespace,
            "nodes": t.nodes.iter().map(|n| serde_json::json!({
                "name": n.name, "zone": n.zone, "region": n.region, "addr": n.addr.to_string(),
            })).collect::<Vec<_>>(),
            "node_versions": self.node_versions,
            "images": snap.images,
            "settings": {
                "patroni": snap.patroni_config,
                "patroni_ttl_in_effect": snap.patroni_lock_ttl,
                "sentinel": snap.sentinel_settings,
                "qdrant_collection": {
                    "name": self.settings.qdrant_collection,
                    "shard_number": self.settings.qdrant_shard_number,
                    "replication_factor": self.settings.qdrant_replication_factor,
                    "write_consistency_factor": self.settings.qdrant_write_consistency_factor,
                },
            },
        })
    }

    async fn apply_fault(
        &self,
        journal: &Journal,
        fault: &FaultKind,
    ) -> Result<ActiveFault, TargetError> {
        KubeTarget::apply_fault(self, journal, fault).await
    }

    async fn revert(&self, steps: &[RevertStep]) -> Result<(), String> {
        KubeTarget::revert(self, steps).await
    }

    async fn server_log_lines(
        &self,
        component: ComponentKind,
        event: &str,
    ) -> Vec<(SystemTime, String)> {
        let selector = match component {
            ComponentKind::Postgres => &self.selectors.postgres,
            ComponentKind::Redis => &self.selectors.sentinel,
            // No Qdrant log check is defined (see QdrantComponent::log_checks).
            ComponentKind::Qdrant => return Vec::new(),
        };
        let pods = match self
            .pods()
            .list(&ListParams::default().labels(selector))
            .await
        {
            Ok(l) => l.items,
            Err(_) => return Vec::new(),
        };
        let mut lines = Vec::new();
        for p in &pods {
            let name = pod_name(p);
            let Ok(text) = self.pod_log(name).await else {
                continue;
            };
            let found = match component {
                ComponentKind::Postgres => postgres::promotion_log_lines(&text),
                _ => redis_component::sentinel_log_lines(&text, event),
            };
            lines.extend(found.into_iter().map(|(t, l)| (t, format!("{name}: {l}"))));
        }
        lines.sort();
        lines
    }

    fn spawn_observer(
        &self,
        events: EventLog,
        stop: watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        Some(super::spawn_observer(
            self.client.clone(),
            &self.namespace,
            events,
            stop,
        ))
    }
}
