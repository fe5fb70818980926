//! Redis with Sentinel: master discovery through the sentinels (as clients do), health, the load client (SET of
//! one key per numbered write, GET of the newest acknowledged key, optional WAIT), the pub/sub failover probe, and
//! the ledger read-back (SCAN of the run's keys).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, RedisError, Value};
use tokio::sync::watch;

use super::{retry_each_within, retry_until, Member, READ_BACK_ATTEMPT};
use crate::events::{EventKind, EventLog};
use crate::ledger::{Outcome, ReadBack};
use crate::load::pool::Idle;
use crate::load::{Attempt, BoxFuture, LoadClient, CONNECTION_AT_DEADLINE};
use crate::scenario::{ComponentKind, RedisWait};

#[derive(Clone, Debug)]
pub struct RedisEndpoints {
    pub members: Vec<Member>,
    pub sentinels: Vec<Member>,
    pub master_name: String,
}

impl RedisEndpoints {
    /// The node of the member the servers announce as `addr` (Sentinel's master address, a pub/sub payload).
    pub fn node_of(&self, addr: &str) -> Option<&str> {
        self.member_announced_as(addr).map(|m| m.node.as_str())
    }

    pub fn member_announced_as(&self, addr: &str) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.announced.to_string() == addr)
    }
}

/// Key prefix of one run's writes: `faultline:<run>:<id>`.
pub fn key_prefix(run_id: &str) -> String {
    format!("faultline:{run_id}:")
}

/// The write id encoded in a key of this run, if it is one.
pub fn id_of_key(prefix: &str, key: &str) -> Option<u64> {
    key.strip_prefix(prefix)?.parse().ok()
}

pub async fn connect(
    addr: Ipv4Addr,
    port: u16,
    timeout: Duration,
) -> Result<MultiplexedConnection, RedisError> {
    let client = redis::Client::open(format!("redis://{addr}:{port}/"))?;
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout);
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
}

async fn info_replication(m: &Member) -> Result<String, String> {
    let node = &m.node;
    let mut c = connect(m.addr, m.ports.redis, Duration::from_millis(800))
        .await
        .map_err(|e| format!("redis {node}: {e}"))?;
    redis::cmd("INFO")
        .arg("replication")
        .query_async::<String>(&mut c)
        .await
        .map_err(|e| format!("redis {node}: {e}"))
}

pub(crate) fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
}

/// Keys in a member's database 0.
pub async fn dbsize(m: &Member) -> Result<u64, String> {
    let mut c = connect(m.addr, m.ports.redis, Duration::from_millis(800))
        .await
        .map_err(|e| format!("redis {}: {e}", m.node))?;
    redis::cmd("DBSIZE")
        .query_async(&mut c)
        .await
        .map_err(|e| format!("redis {}: {e}", m.node))
}

/// One SET on a member (a write probe that does not go through Sentinel).
pub async fn set_probe(m: &Member) -> Result<(), String> {
    let mut c = connect(m.addr, m.ports.redis, Duration::from_secs(2))
        .await
        .map_err(|e| format!("redis {}: {e}", m.node))?;
    redis::cmd("SET")
        .arg("faultline:probe")
        .arg("1")
        .query_async::<()>(&mut c)
        .await
        .map_err(|e| format!("redis {}: {e}", m.node))
}

/// FLUSHALL on the master Sentinel names (a committed corruption: the replicas copy it at once). Returns the node.
pub async fn flushall(ep: &RedisEndpoints) -> Result<String, String> {
    let m = discover_master(ep, Duration::from_secs(2)).await?;
    let mut c = connect(m.addr, m.ports.redis, Duration::from_secs(2))
        .await
        .map_err(|e| format!("redis {}: {e}", m.node))?;
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut c)
        .await
        .map_err(|e| format!("redis {}: FLUSHALL: {e}", m.node))?;
    Ok(m.node)
}

/// What one sentinel says the master is: the address the master announces.
pub async fn sentinel_master(
    s: &Member,
    name: &str,
    timeout: Duration,
) -> Result<Ipv4Addr, String> {
    let sentinel = &s.node;
    let mut c = connect(s.addr, s.ports.sentinel, timeout)
        .await
        .map_err(|e| format!("sentinel {sentinel}: {e}"))?;
    let addr: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(name)
        .query_async(&mut c)
        .await
        .map_err(|e| format!("sentinel {sentinel}: {e}"))?;
    let (host, _port) =
        addr.ok_or_else(|| format!("sentinel {sentinel} knows no master `{name}`"))?;
    host.parse()
        .map_err(|_| format!("sentinel {sentinel} returned `{host}` as master address"))
}

/// The master as the first sentinel that answers reports it (what a Sentinel-aware client does), as the
/// member clients reach it by.
pub async fn discover_master(ep: &RedisEndpoints, timeout: Duration) -> Result<Member, String> {
    let mut last = "no sentinel configured".to_string();
    for s in &ep.sentinels {
        match sentinel_master(s, &ep.master_name, timeout).await {
            Ok(a) => {
                return ep
                    .member_announced_as(&a.to_string())
                    .cloned()
                    .ok_or_else(|| format!("Sentinel names {a} as master, which is no member"))
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The master node if a majority of sentinels agree on it.
pub async fn agreed_master(ep: &RedisEndpoints) -> Option<String> {
    let mut votes: Vec<Ipv4Addr> = Vec::new();
    for s in &ep.sentinels {
        if let Ok(a) = sentinel_master(s, &ep.master_name, Duration::from_millis(500)).await {
            votes.push(a);
        }
    }
    let majority = ep.sentinels.len() / 2 + 1;
    votes
        .iter()
        .find(|a| votes.iter().filter(|b| b == a).count() >= majority)
        .and_then(|a| ep.node_of(&a.to_string()).map(str::to_string))
}

/// A SENTINEL subcommand's answer as key/value maps (e.g. `["master", name]` for the monitored master's settings).
pub async fn sentinel_map(s: &Member, args: &[&str]) -> Result<Vec<Vec<(String, String)>>, String> {
    let sentinel = &s.node;
    let mut c = connect(s.addr, s.ports.sentinel, Duration::from_millis(800))
        .await
        .map_err(|e| format!("sentinel {sentinel}: {e}"))?;
    let mut cmd = redis::cmd("SENTINEL");
    for a in args {
        cmd.arg(*a);
    }
    let v: Value = cmd
        .query_async(&mut c)
        .await
        .map_err(|e| format!("sentinel {sentinel}: {e}"))?;
    Ok(flat_maps(&v))
}

/// Sentinel answers lists of flat [k, v, k, v...] arrays (or one such array for SENTINEL MASTER).
fn flat_maps(v: &Value) -> Vec<Vec<(String, String)>> {
    fn pairs(items: &[Value]) -> Vec<(String, String)> {
        items
            .chunks(2)
            .filter_map(|kv| match kv {
                [k, v] => Some((as_string(k)?, as_string(v)?)),
                _ => None,
            })
            .collect()
    }
    match v {
        Value::Array(items) if items.iter().all(|i| matches!(i, Value::Array(_))) => items
            .iter()
            .filter_map(|i| match i {
                Value::Array(inner) => Some(pairs(inner)),
                _ => None,
            })
            .collect(),
        Value::Array(items) => vec![pairs(items)],
        Value::Map(kvs) => vec![kvs
            .iter()
            .filter_map(|(k, v)| Some((as_string(k)?, as_string(v)?)))
            .collect()],
        _ => Vec::new(),
    }
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn get<'a>(m: &'a [(String, String)], k: &str) -> Option<&'a str> {
    m.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.as_str())
}

/// Healthy = all sentinels agree on the master and see every replica and every other sentinel without a down
/// flag; the master has every replica online; every replica's link to it is up.
pub async fn health(ep: &RedisEndpoints) -> Result<String, String> {
    let mut master: Option<Ipv4Addr> = None;
    for s in &ep.sentinels {
        let a = sentinel_master(s, &ep.master_name, Duration::from_millis(800)).await?;
        match master {
            None => master = Some(a),
            Some(m) if m != a => {
                return Err(format!("sentinels disagree on the master ({m} vs {a})"))
            }
            _ => {}
        }
        let m = sentinel_map(s, &["master", &ep.master_name]).await?;
        let m = m.first().ok_or("empty SENTINEL MASTER answer")?;
        if get(m, "flags") != Some("master") {
            return Err(format!(
                "sentinel on {} flags the master `{}`",
                s.node,
                get(m, "flags").unwrap_or("?")
            ));
        }
        let others: usize = get(m, "num-other-sentinels")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if others + 1 < ep.sentinels.len() {
            return Err(format!(
                "sentinel on {} knows {} other sentinels of {}",
                s.node,
                others,
                ep.sentinels.len() - 1
            ));
        }
        let replicas = sentinel_map(s, &["replicas", &ep.master_name]).await?;
        let good = replicas
            .iter()
            .filter(|r| {
                let f = get(r, "flags").unwrap_or("");
                !f.contains("s_down") && !f.contains("disconnected")
            })
            .count();
        if good + 1 < ep.members.len() {
            return Err(format!(
                "sentinel on {} sees {} healthy replicas of {}",
                s.node,
                good,
                ep.members.len() - 1
            ));
        }
    }
    let master = master.ok_or("no sentinel configured")?;
    let master_member = ep
        .member_announced_as(&master.to_string())
        .ok_or_else(|| format!("master {master} is not a member of the stack"))?;
    let info = info_replication(master_member).await?;
    if info_field(&info, "role") != Some("master") {
        return Err(format!("{master} is not a master"));
    }
    let online = info
        .lines()
        .filter(|l| l.starts_with("slave") && l.contains("state=online"))
        .count();
    if online + 1 < ep.members.len() {
        return Err(format!("master {master} has {online} online replicas"));
    }
    for m in ep.members.iter().filter(|m| m.announced != master) {
        let info = info_replication(m).await?;
        if info_field(&info, "master_host") != Some(master.to_string().as_str())
            || info_field(&info, "master_link_status") != Some("up")
        {
            return Err(format!(
                "replica {} is not linked to the master {master}",
                m.node
            ));
        }
    }
    Ok(master_member.node.clone())
}

/// Subscribes to every sentinel's events (PSUBSCRIBE *), stamping each message on receipt. +sdown of the master
/// = FailureDetected; +promoted-slave = NewPrimaryServing; everything else joins the timeline as observed.
pub fn spawn_probe(
    ep: RedisEndpoints,
    events: EventLog,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let tasks: Vec<_> = ep
            .sentinels
            .clone()
            .into_iter()
            .map(|s| {
                let ep = ep.clone();
                let events = events.clone();
                let mut stop = stop.clone();
                tokio::spawn(async move {
                    loop {
                        if *stop.borrow() {
                            return;
                        }
                        let sub = async {
                            let client = redis::Client::open(format!("redis://{}:{}/", s.addr, s.ports.sentinel)).ok()?;
                            let mut ps = tokio::time::timeout(Duration::from_secs(1), client.get_async_pubsub())
                                .await
                                .ok()?
                                .ok()?;
                            ps.psubscribe("*").await.ok()?;
                            Some(ps)
                        };
                        let ps = tokio::select! { p = sub => p, _ = stop.changed() => return };
                        let Some(mut ps) = ps else {
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(300)) => continue,
                                _ = stop.changed() => return,
                            }
                        };
                        let mut stream = ps.on_message();
                        loop {
                            let msg = tokio::select! { m = stream.next() => m, _ = stop.changed() => return };
                            let Some(msg) = msg else { break };
                            let at = events.clock().now();
                            let channel = msg.get_channel_name().to_string();
                            let payload: String = msg.get_payload().unwrap_or_default();
                            for kind in sentinel_events(&ep, &s.node, &channel, &payload) {
                                events.emit_at(at, kind);
                            }
                        }
                    }
                })
            })
            .collect();
        futures_util::future::join_all(tasks).await;
    })
}

/// Turns one Sentinel pub/sub message into timeline events.
pub fn sentinel_events(
    ep: &RedisEndpoints,
    sentinel_node: &str,
    channel: &str,
    payload: &str,
) -> Vec<EventKind> {
    if channel == "__sentinel__:hello" {
        return Vec::new();
    }
    let mut out = vec![EventKind::ServerObservation {
        component: ComponentKind::Redis,
        source: format!("sentinel {sentinel_node}"),
        message: format!("{channel} {payload}"),
    }];
    let fields: Vec<&str> = payload.split_whitespace().collect();
    match channel {
        "+sdown" if fields.first() == Some(&"master") => out.push(EventKind::FailureDetected {
            component: ComponentKind::Redis,
            evidence: format!("sentinel {sentinel_node}: +sdown {payload}"),
        }),
        "+promoted-slave" => {
            // "slave 10.0.0.12:6379 10.0.0.12 6379 @ name 10.0.0.11 6379"
            let ip = fields.get(2).copied().unwrap_or("");
            out.push(EventKind::NewPrimaryServing {
                component: ComponentKind::Redis,
                member: ep.node_of(ip).unwrap_or(ip).to_string(),
                evidence: format!("sentinel {sentinel_node}: +promoted-slave {payload}"),
            });
        }
        _ => {}
    }
    out
}

/// The load client: SETs (and GETs) on the master found through Sentinel, as a Sentinel-aware client does.
/// Without WAIT, operations share `connections` multiplexed connections (RESP pipelines requests and a SET never
/// blocks its connection), as redis-rs, ioredis and Lettuce clients do. With WAIT, which blocks its connection at
/// the server until the replicas answer, each operation takes a connection of its own from a pool. A connection
/// that saw an error (or a WAIT that confirmed too few replicas) is dropped, so the next operation asks Sentinel
/// again.
pub struct RedisLoadClient {
    ep: RedisEndpoints,
    prefix: String,
    wait: Option<RedisWait>,
    /// With WAIT: one connection per operation.
    idle: Idle<MultiplexedConnection>,
    /// Without WAIT: the shared connections, each with the generation it was opened in (so an operation drops
    /// only the connection it saw fail, not its replacement).
    shared: Vec<tokio::sync::Mutex<Option<(u64, MultiplexedConnection)>>>,
    next_shared: AtomicUsize,
    generation: AtomicU64,
    /// The newest id seen acknowledged (0: none yet): what reads ask for.
    last_acked: AtomicU64,
}

/// A connection an operation holds, and where it goes back.
struct Lease {
    conn: MultiplexedConnection,
    /// The shared slot and generation it came from; None = the operation's own.
    shared: Option<(usize, u64)>,
}

impl RedisLoadClient {
    pub fn new(
        ep: RedisEndpoints,
        run_id: &str,
        wait: Option<RedisWait>,
        connections: usize,
    ) -> Self {
        let shared = if wait.is_none() {
            (0..connections.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect()
        } else {
            Vec::new()
        };
        RedisLoadClient {
            ep,
            prefix: key_prefix(run_id),
            wait,
            idle: Idle::default(),
            shared,
            next_shared: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            last_acked: AtomicU64::new(0),
        }
    }

    /// A connection for one operation, if one can be had before `deadline`.
    async fn checkout(&self, deadline: Instant) -> Result<Lease, String> {
        let lease = self.lease(deadline).await?;
        if Instant::now() >= deadline {
            self.check_in(lease, true);
            return Err(CONNECTION_AT_DEADLINE.into());
        }
        Ok(lease)
    }

    async fn lease(&self, deadline: Instant) -> Result<Lease, String> {
        let late = || "not sent: no master reachable before the deadline".to_string();
        if self.shared.is_empty() {
            if let Some(conn) = self.idle.take() {
                return Ok(Lease { conn, shared: None });
            }
            let conn = tokio::time::timeout_at(deadline.into(), self.connect_master(deadline))
                .await
                .map_err(|_| late())??;
            return Ok(Lease { conn, shared: None });
        }
        let i = self.next_shared.fetch_add(1, Ordering::Relaxed) % self.shared.len();
        // Operations of a slot that has no connection wait for the one that opens it (within their deadline).
        let mut slot = tokio::time::timeout_at(deadline.into(), self.shared[i].lock())
            .await
            .map_err(|_| late())?;
        if let Some((generation, conn)) = slot.as_ref() {
            return Ok(Lease {
                conn: conn.clone(),
                shared: Some((i, *generation)),
            });
        }
        let conn = tokio::time::timeout_at(deadline.into(), self.connect_master(deadline))
            .await
            .map_err(|_| late())??;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *slot = Some((generation, conn.clone()));
        Ok(Lease {
            conn,
            shared: Some((i, generation)),
        })
    }

    /// After the operation: a connection that just worked stays in use; any other is dropped.
    fn check_in(&self, lease: Lease, ok: bool) {
        match lease.shared {
            None if ok => self.idle.put(lease.conn),
            None => {}
            Some(_) if ok => {}
            Some((i, generation)) => {
                // Never waits: a slot that is busy is being reopened (or cloned) by another operation, and the
                // generation check below is what keeps a replacement safe anyway.
                if let Ok(mut slot) = self.shared[i].try_lock() {
                    if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
                        *slot = None;
                    }
                }
            }
        }
    }

    async fn connect_master(&self, deadline: Instant) -> Result<MultiplexedConnection, String> {
        let left = || deadline.saturating_duration_since(Instant::now());
        let master = discover_master(&self.ep, left().min(Duration::from_millis(500))).await?;
        let node = &master.node;
        // No response timeout on the connection: each operation's own deadline bounds it.
        let client =
            redis::Client::open(format!("redis://{}:{}/", master.addr, master.ports.redis))
                .map_err(|e| format!("master {node}: {e}"))?;
        let cfg = AsyncConnectionConfig::new().set_connection_timeout(left());
        let mut c = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|e| format!("master {node}: {e}"))?;
        let role: Vec<Value> = redis::cmd("ROLE")
            .query_async(&mut c)
            .await
            .map_err(|e| format!("master {node}: {e}"))?;
        if role.first().and_then(as_string).as_deref() != Some("master") {
            return Err(format!(
                "{node} (named master by Sentinel) is not a master yet"
            ));
        }
        Ok(c)
    }
}

fn classify_redis_error(e: &RedisError) -> Outcome {
    if e.kind() == ErrorKind::ReadOnly {
        Outcome::Failed
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
        Outcome::Unknown
    } else {
        Outcome::Failed
    }
}

impl LoadClient for RedisLoadClient {
    fn write(&self, id: u64, deadline: Instant) -> BoxFuture<'_, Attempt> {
        Box::pin(async move {
            let mut lease = match self.checkout(deadline).await {
                Ok(l) => l,
                Err(e) => return Attempt::failed_unsent(e),
            };
            let sent = Instant::now();
            let key = format!("{}{id}", self.prefix);
            let wait = self.wait.clone();
            let conn = &mut lease.conn;
            let op = async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(id)
                    .query_async::<()>(conn)
                    .await?;
                if let Some(w) = wait {
                    let acked: i64 = redis::cmd("WAIT")
                        .arg(w.replicas)
                        .arg(w.timeout.as_millis() as u64)
                        .query_async(conn)
                        .await?;
                    return Ok(Some((acked, w.replicas)));
                }
                Ok::<_, RedisError>(None)
            };
            let (outcome, error) = match tokio::time::timeout_at(deadline.into(), op).await {
                Err(_) => (Outcome::Unknown, Some("client deadline passed".to_string())),
                Ok(Ok(None)) => (Outcome::Ok, None),
                Ok(Ok(Some((acked, wanted)))) if acked >= wanted as i64 => (Outcome::Ok, None),
                Ok(Ok(Some((acked, wanted)))) => (
                    Outcome::Unknown,
                    Some(format!("WAIT confirmed {acked} of {wanted} replicas")),
                ),
                Ok(Err(e)) => (classify_redis_error(&e), Some(e.to_string())),
            };
            // After a WAIT that confirmed too few replicas the next operation asks Sentinel again, as a client that
            // cares about WAIT would: the master it holds may be cut off from its replicas (and from the Sentinel
            // majority that is promoting another).
            self.check_in(lease, outcome == Outcome::Ok);
            if outcome == Outcome::Ok {
                self.last_acked.fetch_max(id, Ordering::Relaxed);
            }
            Attempt::sent_at(sent, (outcome, error))
        })
    }

    fn read(&self, deadline: Instant) -> BoxFuture<'_, Attempt> {
        Box::pin(async move {
            let mut lease = match self.checkout(deadline).await {
                Ok(l) => l,
                Err(e) => return Attempt::failed_unsent(e),
            };
            let sent = Instant::now();
            // GET of the newest acknowledged key (or of a key that does not exist yet): a read that exercises the
            // same master the writes go to.
            let key = format!("{}{}", self.prefix, self.last_acked.load(Ordering::Relaxed));
            let r = tokio::time::timeout_at(
                deadline.into(),
                redis::cmd("GET")
                    .arg(&key)
                    .query_async::<Option<u64>>(&mut lease.conn),
            )
            .await;
            let (outcome, error) = match r {
                Err(_) => (Outcome::Unknown, Some("client deadline passed".to_string())),
                Ok(Ok(_)) => (Outcome::Ok, None),
                Ok(Err(e)) => (Outcome::Failed, Some(e.to_string())),
            };
            self.check_in(lease, outcome == Outcome::Ok);
            Attempt::sent_at(sent, (outcome, error))
        })
    }

    fn warm_up(&self, connections: usize, deadline: Instant) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if !self.shared.is_empty() {
                // Opens every shared connection (each checkout of an empty slot opens it).
                let leases = futures_util::future::join_all(
                    self.shared.iter().map(|_| self.checkout(deadline)),
                )
                .await;
                drop(leases);
                return;
            }
            let opened =
                futures_util::future::join_all((0..connections).map(|_| {
                    tokio::time::timeout_at(deadline.into(), self.connect_master(deadline))
                }))
                .await;
            for c in opened.into_iter().flatten().flatten() {
                self.idle.put(c);
            }
        })
    }
}

/// Proves the master accepts writes: one SET through Sentinel discovery, on a connection whose ROLE is master.
pub async fn write_probe(ep: &RedisEndpoints, deadline: Duration) -> Result<String, String> {
    retry_until(deadline, || async {
        let master = discover_master(ep, Duration::from_millis(500)).await?;
        let mut c = connect(master.addr, master.ports.redis, Duration::from_secs(1))
            .await
            .map_err(|e| e.to_string())?;
        redis::cmd("SET")
            .arg("faultline:probe")
            .arg(crate::clock::rfc3339_millis(std::time::SystemTime::now()))
            .query_async::<()>(&mut c)
            .await
            .map_err(|e| e.to_string())?;
        Ok(master.node)
    })
    .await
    .map_err(|e| format!("the master does not accept writes: {e}"))
}

/// Reads back the run's keys from the master a majority of sentinels agree on, retrying until `deadline`.
pub async fn read_back_ledger(
    ep: &RedisEndpoints,
    run_id: &str,
    deadline: Duration,
    clock: crate::clock::Clock,
) -> Result<ReadBack, String> {
    let (present, from_member) = retry_each_within(deadline, READ_BACK_ATTEMPT, || async {
        let node = agreed_master(ep)
            .await
            .ok_or("sentinels do not agree on a master")?;
        let m = ep
            .members
            .iter()
            .find(|m| m.node == node)
            .ok_or("unknown master")?;
        let mut c = connect(m.addr, m.ports.redis, Duration::from_secs(2))
            .await
            .map_err(|e| e.to_string())?;
        let role: Vec<Value> = redis::cmd("ROLE")
            .query_async(&mut c)
            .await
            .map_err(|e| e.to_string())?;
        if role.first().and_then(as_string).as_deref() != Some("master") {
            return Err(format!("{node} is not a master yet"));
        }
        let prefix = key_prefix(run_id);
        let mut ids = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await
                .map_err(|e| e.to_string())?;
            ids.extend(keys.iter().filter_map(|k| id_of_key(&prefix, k)));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok::<_, String>((ids, node))
    })
    .await
    .map_err(|e| format!("read-back failed: {e}"))?;
    Ok(ReadBack {
        present,
        from_member,
        at: clock.now(),
    })
}

/// Sentinel log lines for an event (e.g. "+switch-master", "+sdown master") with their timestamps.
pub fn sentinel_log_lines(log: &str, needle: &str) -> Vec<(std::time::SystemTime, String)> {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| super::parse_redis_time(l).map(|t| (t, l.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> RedisEndpoints {
        let m = |n: &str, a: [u8; 4]| Member::local(n, Ipv4Addr::from(a));
        RedisEndpoints {
            members: vec![m("n1", [10, 0, 0, 11]), m("n2", [10, 0, 0, 12])],
            sentinels: vec![m("n1", [10, 0, 0, 11])],
            master_name: "faultline".into(),
        }
    }

    /// A RESP server on 127.0.0.1 that plays both a sentinel and the master it names: enough of Redis for the
    /// load client. WAIT answers after `wait_delay` that one replica confirmed.
    async fn fake_master(wait_delay: Duration) -> u16 {
        fake_master_counting(wait_delay, Default::default()).await
    }

    /// `fake_master` that counts the connections it accepted.
    async fn fake_master_counting(
        wait_delay: Duration,
        accepted: std::sync::Arc<AtomicUsize>,
    ) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf: Vec<u8> = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some((args, used)) = parse_command(&buf) {
                            buf.drain(..used);
                            let name = args
                                .first()
                                .map(|a| a.to_ascii_uppercase())
                                .unwrap_or_default();
                            let reply = match name.as_str() {
                                "SENTINEL" => format!(
                                    "*2\r\n$9\r\n127.0.0.1\r\n${}\r\n{port}\r\n",
                                    port.to_string().len()
                                ),
                                "ROLE" => "*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n".to_string(),
                                "WAIT" => {
                                    tokio::time::sleep(wait_delay).await;
                                    ":1\r\n".to_string()
                                }
                                _ => "+OK\r\n".to_string(),
                            };
                            if sock.write_all(reply.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        port
    }

    /// One member that is both its own sentinel and the master, on 127.0.0.1:`port`.
    fn fake_endpoints(port: u16) -> RedisEndpoints {
        let mut member = Member::local("n1", Ipv4Addr::LOCALHOST);
        member.ports.redis = port;
        member.ports.sentinel = port;
        RedisEndpoints {
            members: vec![member.clone()],
            sentinels: vec![member],
            master_name: "faultline".into(),
        }
    }

    /// One complete RESP array command at the start of `buf`: its arguments and how many bytes it took.
    fn parse_command(buf: &[u8]) -> Option<(Vec<String>, usize)> {
        let text = std::str::from_utf8(buf).ok()?;
        let mut lines = text.split_inclusive("\r\n");
        let header = lines.next()?;
        let n: usize = header.strip_prefix('*')?.trim_end().parse().ok()?;
        let mut used = header.len();
        let mut args = Vec::with_capacity(n);
        for _ in 0..n {
            let len_line = lines.next()?;
            let value = lines.next()?;
            if !value.ends_with("\r\n") {
                return None;
            }
            used += len_line.len() + value.len();
            args.push(value.trim_end().to_string());
        }
        Some((args, used))
    }

    /// The defect this guards against: every Redis call timed out at 1 s whatever the scenario's deadline, so a
    /// `redis_wait` timeout of 1 s or more always ended as "unknown".
    #[tokio::test]
    async fn the_scenario_deadline_bounds_redis_calls_not_a_fixed_second() {
        let port = fake_master(Duration::from_millis(1500)).await;
        let ep = fake_endpoints(port);
        let wait = RedisWait {
            replicas: 1,
            timeout: Duration::from_millis(2000),
        };
        let client = RedisLoadClient::new(ep, "run", Some(wait), 4);
        let a = client
            .write(1, Instant::now() + Duration::from_secs(3))
            .await;
        assert_eq!(a.outcome, Outcome::Ok, "{a:?}");
        // The same WAIT past a 1 s deadline is unknown, at the deadline.
        let started = Instant::now();
        let a = client
            .write(2, Instant::now() + Duration::from_secs(1))
            .await;
        assert_eq!(a.outcome, Outcome::Unknown, "{a:?}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_millis(1300),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn without_wait_operations_share_the_configured_connections() {
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let port = fake_master_counting(Duration::ZERO, accepted.clone()).await;
        let ep = fake_endpoints(port);
        let client = RedisLoadClient::new(ep, "run", None, 2);
        let deadline = Instant::now() + Duration::from_secs(5);
        client.warm_up(2, deadline).await;
        // Each shared connection: one sentinel connection to find the master, one to the master.
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
        let attempts =
            futures_util::future::join_all((1..=40).map(|id| client.write(id, deadline))).await;
        assert!(
            attempts.iter().all(|a| a.outcome == Outcome::Ok),
            "{attempts:?}"
        );
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            4,
            "40 concurrent writes opened no further connection"
        );
        assert_eq!(client.last_acked.load(Ordering::SeqCst), 40);
    }

    #[test]
    fn sentinel_messages_become_detection_and_promotion() {
        let e = ep();
        let sdown = sentinel_events(&e, "n1", "+sdown", "master faultline 10.0.0.11 6379");
        assert!(matches!(sdown[1], EventKind::FailureDetected { .. }));
        let replica_sdown = sentinel_events(
            &e,
            "n1",
            "+sdown",
            "slave 10.0.0.12:6379 10.0.0.12 6379 @ faultline 10.0.0.11 6379",
        );
        assert_eq!(
            replica_sdown.len(),
            1,
            "a replica going down is not the master's failure"
        );
        let promoted = sentinel_events(
            &e,
            "n1",
            "+promoted-slave",
            "slave 10.0.0.12:6379 10.0.0.12 6379 @ faultline 10.0.0.11 6379",
        );
        match &promoted[1] {
            EventKind::NewPrimaryServing { member, .. } => assert_eq!(member, "n2"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(sentinel_events(&e, "n1", "__sentinel__:hello", "x").is_empty());
    }

    #[test]
    fn keys_map_back_to_write_ids_of_their_run_only() {
        let p = key_prefix("run1");
        assert_eq!(id_of_key(&p, "faultline:run1:42"), Some(42));
        assert_eq!(id_of_key(&p, "faultline:run10:42"), None);
        assert_eq!(id_of_key(&p, "faultline:run1:x"), None);
    }

    #[test]
    fn reads_sentinel_flat_maps() {
        let v = Value::Array(vec![
            Value::BulkString(b"name".to_vec()),
            Value::BulkString(b"faultline".to_vec()),
            Value::BulkString(b"flags".to_vec()),
            Value::BulkString(b"master".to_vec()),
        ]);
        let m = flat_maps(&v);
        assert_eq!(get(&m[0], "flags"), Some("master"));
    }
}
