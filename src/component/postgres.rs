//! PostgreSQL under Patroni: roles and health from Patroni's REST API and the etcd leader key, the load client
//! (numbered INSERTs through the current primary), the failover probe, and the ledger read-back.

mod replication;

pub use replication::SAMPLE_EVERY as REPLICATION_SAMPLE_EVERY;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::watch;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, NoTls, Statement};

use super::{
    base64_decode, base64_encode, http_client, retry_each_within, retry_until, Member,
    READ_BACK_ATTEMPT,
};
use crate::clock::{Clock, Stamp};
use crate::events::{EventKind, EventLog};
use crate::ledger::{Outcome, ReadBack};
use crate::load::pool::Idle;
use crate::load::{Attempt, BoxFuture, LoadClient, CONNECTION_AT_DEADLINE};
use crate::scenario::ComponentKind;
use crate::secret::Secret;
use crate::settings::DcsApi;

/// etcd's client port on the local stack.
pub const ETCD_PORT: u16 = 2379;

/// How to reach the Patroni cluster: what an application and an operator would use.
#[derive(Clone, Debug)]
pub struct PostgresEndpoints {
    pub members: Vec<Member>,
    pub etcd: Vec<Ipv4Addr>,
    pub etcd_port: u16,
    pub scope: String,
    pub dcs_api: DcsApi,
    pub user: String,
    pub password: Secret,
    /// Where the load's clients connect when they go through a routing layer (HAProxy or PgBouncer addresses, in
    /// the order tried); None = straight to the members. Probes and checks always ask the members themselves.
    pub client_via: Option<Vec<std::net::SocketAddrV4>>,
    /// The routers between those clients and the members (node, HAProxy stats address), watched by the probe.
    pub routers: Vec<(String, std::net::SocketAddrV4)>,
}

impl PostgresEndpoints {
    fn member_by_addr(&self, host: &str) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.announced.to_string() == host)
    }

    /// The member Patroni calls `name` (in /cluster and the leader key).
    pub fn member_named(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    fn leader_key(&self) -> String {
        if self.etcd.is_empty() {
            format!("of scope {} (Patroni /cluster)", self.scope)
        } else {
            format!("/service/{}/leader", self.scope)
        }
    }

    /// Where the leader is read from: etcd, or, where Patroni keeps its DCS elsewhere (the Kubernetes API),
    /// the members' own /cluster.
    fn leader_source(&self) -> &'static str {
        if self.etcd.is_empty() {
            "patroni /cluster"
        } else {
            "etcd"
        }
    }
}

/// One member as Patroni's /cluster reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct PatroniMember {
    pub name: String,
    pub role: String,
    pub state: String,
    pub lag: Option<u64>,
    pub timeline: Option<u64>,
}

/// The base URL of a member's Patroni REST API.
pub fn patroni_url(m: &Member, path: &str) -> String {
    format!("http://{}:{}{path}", m.addr, m.ports.patroni)
}

pub async fn cluster_view(
    http: &reqwest::Client,
    m: &Member,
) -> Result<Vec<PatroniMember>, String> {
    let v: Value = http
        .get(patroni_url(m, "/cluster"))
        .send()
        .await
        .map_err(|e| format!("Patroni on {}: {e}", m.node))?
        .json()
        .await
        .map_err(|e| format!("Patroni on {}: bad /cluster answer: {e}", m.node))?;
    Ok(parse_cluster(&v))
}

pub fn parse_cluster(v: &Value) -> Vec<PatroniMember> {
    v["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| PatroniMember {
                    name: m["name"].as_str().unwrap_or_default().to_string(),
                    role: m["role"].as_str().unwrap_or_default().to_string(),
                    state: m["state"].as_str().unwrap_or_default().to_string(),
                    lag: m["lag"].as_u64(),
                    timeline: m["timeline"].as_u64(),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub async fn primary_answers(http: &reqwest::Client, m: &Member) -> bool {
    match http.get(patroni_url(m, "/primary")).send().await {
        Ok(r) => r.status().as_u16() == 200,
        Err(_) => false,
    }
}

/// The owner of the Patroni leader key, read with a quorum read from the first etcd member that answers.
/// Ok(None) = no leader key; Err = no etcd member answered. Without etcd endpoints (Patroni on the Kubernetes
/// DCS), the leader named by the first member whose /cluster answers.
pub async fn leader_key_owner(
    http: &reqwest::Client,
    ep: &PostgresEndpoints,
) -> Result<Option<String>, String> {
    if ep.etcd.is_empty() {
        let mut last_err = String::from("no Patroni member configured");
        for m in &ep.members {
            match cluster_view(http, m).await {
                Ok(view) => {
                    return Ok(view
                        .iter()
                        .find(|p| p.role == "leader")
                        .map(|p| p.name.clone()))
                }
                Err(e) => last_err = e,
            }
        }
        return Err(last_err);
    }
    let key = ep.leader_key();
    let mut last_err = String::from("no etcd member configured");
    for addr in &ep.etcd {
        let result = match ep.dcs_api {
            DcsApi::Etcd2 => {
                let url = format!("http://{addr}:{}/v2/keys{key}?quorum=true", ep.etcd_port);
                match http.get(url).send().await {
                    Ok(r) if r.status().as_u16() == 404 => Ok(None),
                    Ok(r) if r.status().is_success() => r
                        .json::<Value>()
                        .await
                        .map(|v| v["node"]["value"].as_str().map(str::to_string))
                        .map_err(|e| e.to_string()),
                    Ok(r) => Err(format!("etcd {addr}: HTTP {}", r.status())),
                    Err(e) => Err(format!("etcd {addr}: {e}")),
                }
            }
            DcsApi::Etcd3 => {
                let url = format!("http://{addr}:{}/v3/kv/range", ep.etcd_port);
                let body = serde_json::json!({ "key": base64_encode(key.as_bytes()) });
                match http.post(url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => r
                        .json::<Value>()
                        .await
                        .map(|v| {
                            v["kvs"][0]["value"]
                                .as_str()
                                .and_then(base64_decode)
                                .map(|b| String::from_utf8_lossy(&b).into_owned())
                        })
                        .map_err(|e| e.to_string()),
                    Ok(r) => Err(format!("etcd {addr}: HTTP {}", r.status())),
                    Err(e) => Err(format!("etcd {addr}: {e}")),
                }
            }
        };
        match result {
            Ok(owner) => return Ok(owner),
            Err(e) => last_err = e,
        }
    }
    Err(last_err)
}

/// Removes the cluster's keys from the DCS (`/service/<scope>/`), as an operator does before bootstrapping a
/// cluster anew from a backup: with the old `initialize` key in place Patroni would never bootstrap.
pub async fn wipe_dcs(ep: &PostgresEndpoints) -> Result<(), String> {
    let http = http_client(Duration::from_secs(3));
    let prefix = format!("/service/{}", ep.scope);
    let mut last_err = String::from("no etcd member configured");
    for addr in &ep.etcd {
        let result = match ep.dcs_api {
            DcsApi::Etcd2 => {
                let url = format!(
                    "http://{addr}:{}/v2/keys{prefix}?recursive=true&dir=true",
                    ep.etcd_port
                );
                match http.delete(url).send().await {
                    Ok(r) if r.status().is_success() || r.status().as_u16() == 404 => Ok(()),
                    Ok(r) => Err(format!("etcd {addr}: HTTP {}", r.status())),
                    Err(e) => Err(format!("etcd {addr}: {e}")),
                }
            }
            DcsApi::Etcd3 => {
                let start = format!("{prefix}/");
                // range_end = the prefix with its last byte incremented: every key under it.
                let end = format!("{prefix}0");
                let url = format!("http://{addr}:{}/v3/kv/deleterange", ep.etcd_port);
                let body = serde_json::json!({
                    "key": base64_encode(start.as_bytes()),
                    "range_end": base64_encode(end.as_bytes()),
                });
                match http.post(url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("etcd {addr}: HTTP {}", r.status())),
                    Err(e) => Err(format!("etcd {addr}: {e}")),
                }
            }
        };
        match result {
            Ok(()) => return Ok(()),
            Err(e) => last_err = e,
        }
    }
    Err(format!(
        "cannot remove the cluster's keys from the DCS: {last_err}"
    ))
}

/// Healthy = every member's /cluster view lists all members running with one agreed leader, the leader's own
/// /primary answers 200 (HA-FACTS pitfall 6), and with synchronous_mode a sync standby exists.
pub async fn health(ep: &PostgresEndpoints, synchronous: bool) -> Result<String, String> {
    let http = http_client(Duration::from_millis(800));
    let mut leader: Option<String> = None;
    for m in &ep.members {
        let view = cluster_view(&http, m).await?;
        if view.len() != ep.members.len() {
            return Err(format!(
                "{} sees {} of {} Patroni members",
                m.node,
                view.len(),
                ep.members.len()
            ));
        }
        for pm in &view {
            if pm.state != "running" && pm.state != "streaming" {
                return Err(format!(
                    "{} reports {} in state `{}`",
                    m.node, pm.name, pm.state
                ));
            }
            if pm.lag.unwrap_or(0) > 16 * 1024 * 1024 {
                return Err(format!("{} lags {} bytes", pm.name, pm.lag.unwrap_or(0)));
            }
        }
        let leaders: Vec<&PatroniMember> = view.iter().filter(|p| p.role == "leader").collect();
        if leaders.len() != 1 {
            return Err(format!("{} sees {} leaders", m.node, leaders.len()));
        }
        if synchronous && !view.iter().any(|p| p.role == "sync_standby") {
            return Err(format!("{} sees no sync standby", m.node));
        }
        match &leader {
            None => leader = Some(leaders[0].name.clone()),
            Some(l) if *l != leaders[0].name => {
                return Err(format!(
                    "members disagree on the leader ({l} vs {})",
                    leaders[0].name
                ))
            }
            _ => {}
        }
    }
    let leader = leader.ok_or("no Patroni member configured")?;
    let m = ep
        .member_named(&leader)
        .ok_or_else(|| format!("leader {leader} is not a known member"))?;
    if !primary_answers(&http, m).await {
        return Err(format!("leader {leader} does not answer 200 on /primary"));
    }
    // Patroni (3.0) calls a replica "running" as soon as its PostgreSQL runs, before it streams: the primary's
    // own pg_stat_replication says whether every replica is back in the stream.
    let streaming = streaming_standbys(ep, m).await?;
    let missing: Vec<&str> = ep
        .members
        .iter()
        .filter(|r| r.name != leader && !streaming.contains(&r.name))
        .map(|r| r.node.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} not streaming from the primary {} yet (its pg_stat_replication)",
            missing.join(", "),
            m.node
        ));
    }
    Ok(m.node.clone())
}

/// The application names (Patroni member names) of the standbys streaming from `primary`, from its
/// pg_stat_replication.
async fn streaming_standbys(
    ep: &PostgresEndpoints,
    primary: &Member,
) -> Result<Vec<String>, String> {
    let cfg = pg_config_to(ep, &[(primary.addr.to_string(), primary.ports.postgres)]);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(2), cfg.connect(NoTls))
        .await
        .map_err(|_| {
            format!(
                "the primary {} did not accept a connection within 2 s",
                primary.node
            )
        })?
        .map_err(|e| ep.password.redact(&e.to_string()))?;
    tokio::spawn(connection);
    let rows = tokio::time::timeout(
        Duration::from_secs(2),
        client.query(
            "SELECT coalesce(application_name, '') FROM pg_stat_replication WHERE state = 'streaming'",
            &[],
        ),
    )
    .await
    .map_err(|_| format!("the primary {} did not answer within 2 s", primary.node))?
    .map_err(|e| e.to_string())?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The node of Patroni's synchronous standby, as the first member whose /cluster answers names it.
pub async fn sync_standby_node(ep: &PostgresEndpoints) -> Option<String> {
    let http = http_client(Duration::from_millis(800));
    for m in &ep.members {
        if let Ok(view) = cluster_view(&http, m).await {
            return view
                .iter()
                .find(|p| p.role == "sync_standby")
                .and_then(|p| ep.member_named(&p.name))
                .map(|m| m.node.clone());
        }
    }
    None
}

/// The node of the current leader according to the DCS (falls back to Patroni's /cluster).
pub async fn current_leader(ep: &PostgresEndpoints) -> Option<String> {
    let http = http_client(Duration::from_millis(500));
    let node_of = |name: &str| {
        ep.member_named(name)
            .map_or_else(|| name.to_string(), |m| m.node.clone())
    };
    if let Ok(Some(owner)) = leader_key_owner(&http, ep).await {
        return Some(node_of(&owner));
    }
    for m in &ep.members {
        if let Ok(view) = cluster_view(&http, m).await {
            if let Some(l) = view.iter().find(|p| p.role == "leader") {
                return Some(node_of(&l.name));
            }
        }
    }
    None
}

/// Reads the leader key's owner and stamps the answer when it was received: a read that waited on silent etcd
/// members (300 ms each) must not date what it found to before it asked them.
async fn observe_leader_key(
    http: &reqwest::Client,
    ep: &PostgresEndpoints,
    clock: Clock,
) -> (Result<Option<String>, String>, Stamp) {
    let owner = leader_key_owner(http, ep).await;
    (owner, clock.now())
}

/// Samples the leader key every 100 ms and turns its changes into timeline events:
/// key gone (or taken over) = FailureDetected; new owner whose /primary answers 200 = NewPrimaryServing.
pub fn spawn_probe(
    ep: PostgresEndpoints,
    events: EventLog,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    if ep.dcs_api == DcsApi::Etcd2 {
        for addr in ep.etcd.clone() {
            tokio::spawn(watch_leader_key_v2(
                ep.clone(),
                addr,
                events.clone(),
                stop.clone(),
            ));
        }
    }
    tokio::spawn(watch_member_roles(ep.clone(), events.clone(), stop.clone()));
    tokio::spawn(replication::watch_replication(
        ep.clone(),
        events.clone(),
        stop.clone(),
    ));
    tokio::spawn(async move {
        let http = http_client(Duration::from_millis(300));
        let key = ep.leader_key();
        let mut last_owner: Option<String> = None;
        let mut owner_before_gap: Option<String> = None;
        let mut awaiting_primary: Option<String> = None;
        let mut etcd_down_reported = false;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut first = true;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            let (owner, observed_at) = observe_leader_key(&http, &ep, events.clock()).await;
            let owner = match owner {
                Ok(o) => {
                    etcd_down_reported = false;
                    o
                }
                Err(e) => {
                    if !etcd_down_reported {
                        events.emit(EventKind::ServerObservation {
                            component: ComponentKind::Postgres,
                            source: ep.leader_source().into(),
                            message: if ep.etcd.is_empty() {
                                format!("no Patroni member answered /cluster: {e}")
                            } else {
                                format!("no etcd member answered a quorum read: {e}")
                            },
                        });
                        etcd_down_reported = true;
                    }
                    continue;
                }
            };
            if first {
                first = false;
                last_owner = owner.clone();
                owner_before_gap = owner.clone();
                continue;
            }
            if owner != last_owner {
                match (&last_owner, &owner) {
                    (Some(prev), None) => {
                        owner_before_gap = Some(prev.clone());
                        events.emit_at(
                            observed_at,
                            EventKind::FailureDetected {
                                component: ComponentKind::Postgres,
                                evidence: format!("leader key {key} gone (was held by {prev})"),
                            },
                        );
                    }
                    (Some(prev), Some(new)) => {
                        owner_before_gap = Some(prev.clone());
                        events.emit_at(
                            observed_at,
                            EventKind::FailureDetected {
                                component: ComponentKind::Postgres,
                                evidence: format!(
                                    "leader key {key} taken over by {new} from {prev}"
                                ),
                            },
                        );
                    }
                    _ => {}
                }
                if let Some(new) = &owner {
                    events.emit_at(
                        observed_at,
                        EventKind::ServerObservation {
                            component: ComponentKind::Postgres,
                            source: ep.leader_source().into(),
                            message: format!("leader key {key} now held by {new}"),
                        },
                    );
                    if owner_before_gap.as_deref() != Some(new.as_str()) {
                        awaiting_primary = Some(new.clone());
                    }
                }
                last_owner = owner.clone();
            }
            if let Some(candidate) = awaiting_primary.clone() {
                if owner.as_deref() != Some(candidate.as_str()) {
                    awaiting_primary = None;
                    continue;
                }
                if let Some(m) = ep.member_named(&candidate) {
                    if primary_answers(&http, m).await {
                        let at = events.clock().now();
                        events.emit_at(
                            at,
                            EventKind::NewPrimaryServing {
                                component: ComponentKind::Postgres,
                                member: m.node.clone(),
                                evidence: format!(
                                    "leader key held by {candidate} and its Patroni /primary answers 200"
                                ),
                            },
                        );
                        awaiting_primary = None;
                        owner_before_gap = Some(candidate.clone());
                        if let Some(h) = promotion_history(&http, m).await {
                            events.emit(EventKind::ServerObservation {
                                component: ComponentKind::Postgres,
                                source: format!("patroni {candidate} /history"),
                                message: h,
                            });
                        }
                    }
                }
            }
        }
    })
}

/// Every member's own view of itself (GET /patroni) every 500 ms; changes of role or state join the timeline,
/// e.g. "n2: replica/streaming -> primary/running", "n1: primary/running -> unreachable".
async fn watch_member_roles(
    ep: PostgresEndpoints,
    events: EventLog,
    mut stop: watch::Receiver<bool>,
) {
    let http = http_client(Duration::from_millis(400));
    let mut last: Vec<Option<String>> = vec![None; ep.members.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let views = futures_util::future::join_all(ep.members.iter().map(|m| {
            let http = http.clone();
            async move {
                let v: Option<Value> = match http.get(patroni_url(m, "/patroni")).send().await {
                    Ok(r) => r.json().await.ok(),
                    Err(_) => None,
                };
                v.map(|v| {
                    format!(
                        "{}/{}",
                        v["role"].as_str().unwrap_or("?"),
                        v["state"].as_str().unwrap_or("?")
                    )
                })
                .unwrap_or_else(|| "unreachable".to_string())
            }
        }))
        .await;
        let at = events.clock().now();
        for (i, view) in views.into_iter().enumerate() {
            if let Some(prev) = &last[i] {
                if *prev != view {
                    events.emit_at(
                        at,
                        EventKind::ServerObservation {
                            component: ComponentKind::Postgres,
                            source: format!("patroni {}", ep.members[i].node),
                            message: format!("{}: {prev} -> {view}", ep.members[i].node),
                        },
                    );
                }
            }
            last[i] = Some(view);
        }
    }
}

/// Long-polls one etcd member's v2 watch on the leader key, so its expiry is stamped the moment etcd reports it
/// rather than at the next 100 ms sample. One watcher per member: a member cut off by a partition stays silent
/// while the others report.
async fn watch_leader_key_v2(
    ep: PostgresEndpoints,
    addr: Ipv4Addr,
    events: EventLog,
    mut stop: watch::Receiver<bool>,
) {
    let http = http_client(Duration::from_secs(30));
    let key = ep.leader_key();
    let mut wait_index: Option<u64> = None;
    loop {
        let url = match wait_index {
            Some(i) => format!(
                "http://{addr}:{}/v2/keys{key}?wait=true&waitIndex={i}",
                ep.etcd_port
            ),
            None => format!("http://{addr}:{}/v2/keys{key}?wait=true", ep.etcd_port),
        };
        // etcd answers a v2 watch with its headers at once and the body when the event happens: the event is
        // stamped when the body has arrived, never when the headers did.
        let body = async {
            match http.get(url).send().await {
                Ok(r) => r.json::<Value>().await.ok(),
                Err(_) => None,
            }
        };
        let v: Option<Value> = tokio::select! {
            v = body => v,
            _ = stop.changed() => return,
        };
        let at = events.clock().now();
        let Some(v) = v else {
            wait_index = None;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                _ = stop.changed() => return,
            }
        };
        if v.get("errorCode").is_some() {
            // e.g. 401 "the event in requested index is outdated and cleared": start from now.
            wait_index = None;
            continue;
        }
        wait_index = v["node"]["modifiedIndex"].as_u64().map(|i| i + 1);
        let action = v["action"].as_str().unwrap_or_default();
        let prev = v["prevNode"]["value"].as_str().unwrap_or("?");
        if matches!(action, "expire" | "delete" | "compareAndDelete") {
            events.emit_at(
                at,
                EventKind::FailureDetected {
                    component: ComponentKind::Postgres,
                    evidence: format!(
                        "etcd {addr} watch: leader key {key} {action} (was held by {prev})"
                    ),
                },
            );
        }
    }
}

/// The newest entry of Patroni's /history (timeline switch with its timestamp), as evidence for the report.
async fn promotion_history(http: &reqwest::Client, m: &Member) -> Option<String> {
    let v: Value = http
        .get(patroni_url(m, "/history"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let last = v.as_array()?.last()?;
    Some(format!("last timeline switch: {last}"))
}

/// A connection to the primary as the harness's own checks make it: a multi-host list of the members.
fn pg_config(ep: &PostgresEndpoints) -> tokio_postgres::Config {
    let hosts: Vec<(String, u16)> = ep
        .members
        .iter()
        .map(|m| (m.addr.to_string(), m.ports.postgres))
        .collect();
    pg_config_to(ep, &hosts)
}

/// A connection as the load's clients make it: through the routing layer when the scenario says so.
fn client_config(ep: &PostgresEndpoints) -> tokio_postgres::Config {
    match &ep.client_via {
        Some(via) => {
            let hosts: Vec<(String, u16)> =
                via.iter().map(|a| (a.ip().to_string(), a.port())).collect();
            pg_config_to(ep, &hosts)
        }
        None => pg_config(ep),
    }
}

fn pg_config_to(ep: &PostgresEndpoints, hosts: &[(String, u16)]) -> tokio_postgres::Config {
    let mut cfg = tokio_postgres::Config::new();
    for (h, p) in hosts {
        cfg.host(h).port(*p);
    }
    cfg.user(&ep.user)
        .password(ep.password.expose())
        .dbname("postgres")
        .application_name("faultline")
        .connect_timeout(Duration::from_millis(1000))
        .tcp_user_timeout(Duration::from_secs(3))
        .keepalives(true)
        .target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
    cfg
}

/// A connection to the current primary whose notices are watched: a commit answered with the synchronous
/// replication cancellation WARNING is not an acknowledgement (pitfall 4).
struct PrimaryConnection {
    client: tokio_postgres::Client,
    commit_warning: Arc<AtomicBool>,
    insert: Statement,
    select: Statement,
}

async fn connect_primary(ep: &PostgresEndpoints) -> Result<PrimaryConnection, String> {
    let (client, mut connection) = client_config(ep)
        .connect(NoTls)
        .await
        .map_err(|e| ep.password.redact(&e.to_string()))?;
    let commit_warning = Arc::new(AtomicBool::new(false));
    let flag = commit_warning.clone();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notice(n)) if n.message().contains("synchronous replication") => {
                    flag.store(true, Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    let insert = client
        .prepare("INSERT INTO faultline_ledger (run_id, id) VALUES ($1, $2)")
        .await
        .map_err(|e| e.to_string())?;
    let select = client
        .prepare("SELECT max(id) FROM faultline_ledger WHERE run_id = $1")
        .await
        .map_err(|e| e.to_string())?;
    Ok(PrimaryConnection {
        client,
        commit_warning,
        insert,
        select,
    })
}

/// Creates the ledger table on the primary, retrying until `deadline`.
pub async fn prepare(ep: &PostgresEndpoints, deadline: Duration) -> Result<(), String> {
    retry_until(deadline, || async {
        let conn = connect_primary_raw(ep).await?;
        conn.batch_execute(
            "CREATE TABLE IF NOT EXISTS faultline_ledger (run_id text NOT NULL, id bigint NOT NULL, \
             written_at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (run_id, id))",
        )
        .await
        .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("cannot create the ledger table on the primary: {e}"))
}

/// How long establishing a connection may take in all (TCP, startup, SCRAM): a frozen server completes the TCP
/// handshake from its kernel and then answers nothing, which `connect_timeout` alone does not bound.
const CONNECT_BOUND: Duration = Duration::from_secs(5);

async fn connect_primary_raw(ep: &PostgresEndpoints) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio::time::timeout(CONNECT_BOUND, pg_config(ep).connect(NoTls))
        .await
        .map_err(|_| format!("no primary answered within {} s", CONNECT_BOUND.as_secs()))?
        .map_err(|e| ep.password.redact(&e.to_string()))?;
    tokio::spawn(connection);
    Ok(client)
}

/// The primary's WAL archiver, from `pg_stat_archiver` (all times in Unix seconds, as the server sees them).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ArchiverStatus {
    pub member: String,
    pub archived_count: i64,
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<f64>,
    pub failed_count: i64,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<f64>,
    /// The segment the primary is writing now.
    pub current_wal: String,
    /// The server's clock when it answered.
    pub now: f64,
}

/// Commits a corruption of the ledger table through the primary; returns the member that committed it.
pub async fn corrupt(
    ep: &PostgresEndpoints,
    how: crate::scenario::CorruptionKind,
) -> Result<String, String> {
    let client = connect_primary_raw(ep).await?;
    let member = server_member(ep, &client).await?;
    let sql = match how {
        crate::scenario::CorruptionKind::UpdateAll => {
            "UPDATE faultline_ledger SET written_at = 'epoch'"
        }
        crate::scenario::CorruptionKind::DropTable => "DROP TABLE faultline_ledger",
        crate::scenario::CorruptionKind::Flushall
        | crate::scenario::CorruptionKind::DeletePoints => {
            return Err(format!("{} is not a PostgreSQL corruption", how.name()))
        }
    };
    client
        .batch_execute(sql)
        .await
        .map_err(|e| format!("the corruption was not committed: {e}"))?;
    Ok(member)
}

/// Whether the corruption is in the primary's data: the table missing, or rows of this run marked with the epoch
/// (rows of earlier runs on a long-lived stack may carry an earlier drill's corruption; they are not this one's).
pub async fn corruption_present(
    ep: &PostgresEndpoints,
    how: crate::scenario::CorruptionKind,
    run_id: &str,
) -> Result<bool, String> {
    let client = connect_primary_raw(ep).await?;
    let exists: bool = client
        .query_one("SELECT to_regclass('faultline_ledger') IS NOT NULL", &[])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    match how {
        crate::scenario::CorruptionKind::DropTable => Ok(!exists),
        crate::scenario::CorruptionKind::Flushall
        | crate::scenario::CorruptionKind::DeletePoints => Ok(false),
        crate::scenario::CorruptionKind::UpdateAll => {
            if !exists {
                return Ok(true);
            }
            let n: i64 = client
                .query_one(
                    "SELECT count(*) FROM faultline_ledger WHERE run_id = $1 AND written_at = 'epoch'",
                    &[&run_id],
                )
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            Ok(n > 0)
        }
    }
}

/// The primary's timeline and the replicas streaming from it (`pg_stat_replication`, state `streaming`).
pub async fn timeline_and_streaming(ep: &PostgresEndpoints) -> Result<(i64, Vec<String>), String> {
    let client = connect_primary_raw(ep).await?;
    let tl: i32 = client
        .query_one("SELECT timeline_id FROM pg_control_checkpoint()", &[])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    let rows = client
        .query(
            "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        tl as i64,
        rows.iter().map(|r| r.get::<_, String>(0)).collect(),
    ))
}

/// Removes recovery settings a restore left in postgresql.auto.conf (ALTER SYSTEM RESET) and reloads.
pub async fn reset_recovery_settings(ep: &PostgresEndpoints) -> Result<(), String> {
    let client = connect_primary_raw(ep).await?;
    for p in [
        "restore_command",
        "recovery_target_time",
        "recovery_target_action",
        "recovery_target",
        "recovery_target_lsn",
        "recovery_target_name",
        "recovery_target_xid",
        "recovery_target_timeline",
        "recovery_target_inclusive",
    ] {
        client
            .batch_execute(&format!("ALTER SYSTEM RESET {p}"))
            .await
            .map_err(|e| e.to_string())?;
    }
    client
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .map_err(|e| e.to_string())
}

/// Zeroes the primary's `pg_stat_archiver` counters.
pub async fn reset_archiver_stats(ep: &PostgresEndpoints) -> Result<(), String> {
    let client = connect_primary_raw(ep).await?;
    client
        .batch_execute("SELECT pg_stat_reset_shared('archiver')")
        .await
        .map_err(|e| format!("cannot reset pg_stat_archiver: {e}"))
}

/// Reads the current primary's archiver statistics.
pub async fn archiver_status(ep: &PostgresEndpoints) -> Result<ArchiverStatus, String> {
    let client = connect_primary_raw(ep).await?;
    let row = client
        .query_one(
            "SELECT archived_count, last_archived_wal, extract(epoch FROM last_archived_time)::float8, \
             failed_count, last_failed_wal, extract(epoch FROM last_failed_time)::float8, \
             pg_walfile_name(pg_current_wal_lsn()), extract(epoch FROM clock_timestamp())::float8 \
             FROM pg_stat_archiver",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(ArchiverStatus {
        member: server_member(ep, &client).await?,
        archived_count: row.get(0),
        last_archived_wal: row.get(1),
        last_archived_time: row.get(2),
        failed_count: row.get(3),
        last_failed_wal: row.get(4),
        last_failed_time: row.get(5),
        current_wal: row.get(6),
        now: row.get(7),
    })
}

/// Proves the primary accepts writes: one committed INSERT through the same path clients use.
pub async fn write_probe(ep: &PostgresEndpoints, deadline: Duration) -> Result<String, String> {
    retry_until(deadline, || async {
        let client = connect_primary_raw(ep).await?;
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS faultline_probe (at timestamptz NOT NULL DEFAULT clock_timestamp()); \
                 INSERT INTO faultline_probe DEFAULT VALUES",
            )
            .await
            .map_err(|e| e.to_string())?;
        server_member(ep, &client).await
    })
    .await
    .map_err(|e| format!("the primary does not accept writes: {e}"))
}

/// The member a connection is served by (from `inet_server_addr()`).
async fn server_member(
    ep: &PostgresEndpoints,
    client: &tokio_postgres::Client,
) -> Result<String, String> {
    let row = client
        .query_one("SELECT inet_server_addr()::text", &[])
        .await
        .map_err(|e| e.to_string())?;
    let host: String = row.get(0);
    let host = host.split('/').next().unwrap_or_default().to_string();
    Ok(ep
        .member_by_addr(&host)
        .map(|m| m.node.clone())
        .unwrap_or(host))
}

/// Reads back every id of the run from the current primary (retrying until `deadline`).
pub async fn read_back(
    ep: &PostgresEndpoints,
    run_id: &str,
    deadline: Duration,
) -> Result<(std::collections::BTreeSet<u64>, String), String> {
    retry_each_within(deadline, READ_BACK_ATTEMPT, || async {
        let client = connect_primary_raw(ep).await?;
        let rows = client
            .query(
                "SELECT id FROM faultline_ledger WHERE run_id = $1",
                &[&run_id],
            )
            .await
            .map_err(|e| e.to_string())?;
        let member = server_member(ep, &client).await?;
        Ok((
            rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect(),
            member,
        ))
    })
    .await
    .map_err(|e| format!("read-back failed: {e}"))
}

pub async fn read_back_ledger(
    ep: &PostgresEndpoints,
    run_id: &str,
    deadline: Duration,
    clock: crate::clock::Clock,
) -> Result<ReadBack, String> {
    let (present, from_member) = read_back(ep, run_id, deadline).await?;
    Ok(ReadBack {
        present,
        from_member,
        at: clock.now(),
    })
}

/// What one load operation runs.
#[derive(Clone, Copy)]
enum LoadStatement {
    Insert(u64),
    SelectNewest,
}

/// The load client: numbered INSERTs (and reads) through the current primary, found libpq-style (multi-host,
/// read-write target). Each operation takes a connection of its own from the pool; one that saw any error is
/// dropped, so the next operation connects afresh and finds the new primary.
pub struct PostgresLoadClient {
    ep: PostgresEndpoints,
    run_id: String,
    idle: Idle<PrimaryConnection>,
}

impl PostgresLoadClient {
    pub fn new(ep: PostgresEndpoints, run_id: &str) -> Self {
        PostgresLoadClient {
            ep,
            run_id: run_id.to_string(),
            idle: Idle::default(),
        }
    }

    /// An idle open connection, or a new one if it can be had before `deadline`.
    async fn checkout(&self, deadline: Instant) -> Result<PrimaryConnection, String> {
        let conn = match std::iter::from_fn(|| self.idle.take()).find(|c| !c.client.is_closed()) {
            Some(c) => c,
            None => tokio::time::timeout_at(deadline.into(), connect_primary(&self.ep))
                .await
                .map_err(|_| {
                    "not sent: no read-write primary reachable before the deadline".to_string()
                })??,
        };
        if Instant::now() >= deadline {
            self.idle.put(conn);
            return Err(CONNECTION_AT_DEADLINE.into());
        }
        Ok(conn)
    }

    /// Runs one statement on a connection of its own; the connection goes back to the pool only after success.
    async fn run(&self, deadline: Instant, op: LoadStatement) -> Attempt {
        let conn = match self.checkout(deadline).await {
            Ok(c) => c,
            Err(e) => return Attempt::failed_unsent(e),
        };
        conn.commit_warning.store(false, Ordering::SeqCst);
        let sent = Instant::now();
        let statement = async {
            match op {
                LoadStatement::Insert(id) => {
                    conn.client
                        .execute(&conn.insert, &[&self.run_id, &(id as i64)])
                        .await
                }
                LoadStatement::SelectNewest => conn
                    .client
                    .query_opt(&conn.select, &[&self.run_id])
                    .await
                    .map(|_| 0),
            }
        };
        let r = tokio::time::timeout_at(deadline.into(), statement).await;
        let classify = match op {
            LoadStatement::Insert(_) => classify_pg_error,
            // A failed read changed nothing.
            LoadStatement::SelectNewest => |_: &tokio_postgres::Error| Outcome::Failed,
        };
        let (outcome, error) = match r {
            Err(_) => (Outcome::Unknown, Some("client deadline passed".to_string())),
            Ok(Ok(_)) if conn.commit_warning.load(Ordering::SeqCst) => (
                Outcome::Unknown,
                Some("answered with a synchronous replication WARNING".to_string()),
            ),
            Ok(Ok(_)) => (Outcome::Ok, None),
            Ok(Err(e)) => (classify(&e), Some(e.to_string())),
        };
        if outcome == Outcome::Ok {
            self.idle.put(conn);
        }
        Attempt::sent_at(sent, (outcome, error))
    }
}

/// Maps a PostgreSQL error to what it says about the write: a server-side refusal means it did not happen;
/// a lost connection or an operator-intervention error after sending may hide a commit.
pub fn classify_pg_error(e: &tokio_postgres::Error) -> Outcome {
    if let Some(code) = e.code() {
        if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
            return Outcome::Failed;
        }
        let class = &code.code()[..2];
        if class == "08" || class == "57" || class == "58" || class == "XX" {
            return Outcome::Unknown;
        }
        return Outcome::Failed;
    }
    Outcome::Unknown
}

impl LoadClient for PostgresLoadClient {
    fn write(&self, id: u64, deadline: Instant) -> BoxFuture<'_, Attempt> {
        Box::pin(self.run(deadline, LoadStatement::Insert(id)))
    }

    fn read(&self, deadline: Instant) -> BoxFuture<'_, Attempt> {
        Box::pin(self.run(deadline, LoadStatement::SelectNewest))
    }

    fn warm_up(&self, connections: usize, deadline: Instant) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let opened = futures_util::future::join_all(
                (0..connections)
                    .map(|_| tokio::time::timeout_at(deadline.into(), connect_primary(&self.ep))),
            )
            .await;
            for c in opened.into_iter().flatten().flatten() {
                self.idle.put(c);
            }
        })
    }
}

/// Patroni log lines "promoted self to leader" with their timestamps (Patroni logs local time; the stack runs
/// with TZ=UTC), for the report's log agreement check.
pub fn promotion_log_lines(log: &str) -> Vec<(std::time::SystemTime, String)> {
    log.lines()
        .filter(|l| l.contains("promoted self to leader"))
        .filter_map(|l| super::parse_patroni_time(l).map(|t| (t, l.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> PostgresEndpoints {
        PostgresEndpoints {
            members: vec![Member::local("n1", Ipv4Addr::new(10, 0, 0, 11))],
            etcd: Vec::new(),
            etcd_port: ETCD_PORT,
            scope: "faultline".into(),
            dcs_api: DcsApi::Etcd2,
            user: "postgres".into(),
            password: Secret::new("x"),
            client_via: None,
            routers: Vec::new(),
        }
    }

    /// An etcd member that answers every request after `delay` with `status`.
    async fn slow_etcd(delay: Duration, status: &'static str) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    tokio::time::sleep(delay).await;
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                });
            }
        });
        addr
    }

    /// The defect this guards against: the probe stamped "leader key gone" before its read of etcd began, which
    /// could date detection up to a second early (in the PASS direction) when etcd members were slow to answer.
    #[tokio::test]
    async fn the_leader_key_is_stamped_when_the_answer_arrives() {
        let addr = slow_etcd(Duration::from_millis(400), "404 Not Found").await;
        let mut ep = endpoints();
        ep.etcd = vec![Ipv4Addr::LOCALHOST];
        ep.etcd_port = addr.port();
        let clock = Clock::start();
        let http = http_client(Duration::from_secs(2));
        let asked = clock.now();
        let (owner, at) = observe_leader_key(&http, &ep, clock).await;
        assert_eq!(owner, Ok(None), "404 = no leader key");
        assert!(
            at.secs_since(asked) >= 0.4,
            "stamped {:.3} s after asking, before the answer arrived",
            at.secs_since(asked)
        );
    }

    #[test]
    fn parses_patroni_cluster_json() {
        let v: Value = serde_json::from_str(
            r#"{"members":[{"name":"n1","role":"leader","state":"running","timeline":2},
               {"name":"n2","role":"sync_standby","state":"streaming","lag":0,"timeline":2}]}"#,
        )
        .unwrap();
        let ms = parse_cluster(&v);
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[0].role, "leader");
        assert_eq!(ms[1].lag, Some(0));
        assert_eq!(ms[1].state, "streaming");
    }

    #[test]
    fn finds_promotion_lines_with_their_time() {
        let log = "2026-11-23 06:30:01,123 INFO: no action. I am (n2), a secondary, and following a leader (n1)\n\
                   2026-11-23 06:30:09,456 INFO: promoted self to leader by acquiring session lock\n";
        let lines = promotion_log_lines(log);
        assert_eq!(lines.len(), 1);
        assert_eq!(
            crate::clock::rfc3339_millis(lines[0].0),
            "2026-11-23T06:30:09.456Z"
        );
    }
}
