//! The components under test. Each module gives the role probe, health check, load client and ledger read-back
//! for one replicated store, reached through plain endpoints so any target (local namespaces, Kubernetes) can
//! provide them.

pub mod haproxy;
pub mod postgres;
pub mod qdrant;
pub mod redis;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::clock::Clock;
use crate::events::{EventKind, EventLog};
use crate::ledger::ReadBack;
use crate::load::{BoxFuture, LoadClient};
use crate::scenario::{ComponentKind, LoadProfile};

/// A replicated store under test, as the engine sees it: how to prepare it for a run, how to watch its failover
/// (probe), how clients write to it (load), how to verify what it kept (read-back), and which of its own log
/// lines the harness's stamps are checked against. Built by a target from the endpoints it knows.
pub trait Component: Send + Sync {
    fn kind(&self) -> ComponentKind;
    /// Makes the store ready for the run's writes (e.g. the ledger table), retrying until `deadline`.
    fn prepare(&self, deadline: Duration) -> BoxFuture<'_, Result<(), String>>;
    /// Starts the failover probe; it stops when `stop` turns true.
    fn spawn_probe(
        &self,
        events: EventLog,
        stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()>;
    /// One client connection of the load driver.
    /// The load client every operation of the component shares (it keeps its own pool of connections).
    fn load_client(&self, run_id: &str, profile: &LoadProfile) -> Arc<dyn LoadClient>;
    /// Every write id of the run present on the current primary/master.
    fn read_back(
        &self,
        run_id: &str,
        deadline: Duration,
        clock: Clock,
    ) -> BoxFuture<'_, Result<ReadBack, String>>;
    /// Which harness events are compared with which server log lines.
    fn log_checks(&self) -> Vec<LogCheck>;
    /// Harness events of this component that no server log records, each with why: their stamps cannot be
    /// checked, and the report says so rather than compare them with an unrelated line.
    fn unlogged_events(&self) -> Vec<&'static str> {
        Vec::new()
    }
}

/// One log-agreement comparison: the first timeline event matching `event` after the fault against the first
/// server log line containing `needle` after the fault.
pub struct LogCheck {
    pub label: &'static str,
    pub needle: &'static str,
    pub event: fn(&EventKind) -> bool,
}

fn is_detection(k: &EventKind) -> bool {
    matches!(k, EventKind::FailureDetected { .. })
}

fn is_promotion(k: &EventKind) -> bool {
    matches!(k, EventKind::NewPrimaryServing { .. })
}

fn is_router_switch(k: &EventKind) -> bool {
    matches!(k, EventKind::RouterRouted { switched: true, .. })
}

fn is_switch_master(k: &EventKind) -> bool {
    matches!(k, EventKind::ServerObservation { message, .. } if message.starts_with("+switch-master"))
}

pub struct PostgresComponent(pub postgres::PostgresEndpoints);

impl Component for PostgresComponent {
    fn kind(&self) -> ComponentKind {
        ComponentKind::Postgres
    }

    fn prepare(&self, deadline: Duration) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(postgres::prepare(&self.0, deadline))
    }

    fn spawn_probe(
        &self,
        events: EventLog,
        stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let patroni = postgres::spawn_probe(self.0.clone(), events.clone(), stop.clone());
        if self.0.routers.is_empty() {
            return patroni;
        }
        let routers = haproxy::spawn_probe(self.0.routers.clone(), events, stop);
        tokio::spawn(async move {
            let _ = patroni.await;
            let _ = routers.await;
        })
    }

    fn load_client(&self, run_id: &str, _profile: &LoadProfile) -> Arc<dyn LoadClient> {
        Arc::new(postgres::PostgresLoadClient::new(self.0.clone(), run_id))
    }

    fn read_back(
        &self,
        run_id: &str,
        deadline: Duration,
        clock: Clock,
    ) -> BoxFuture<'_, Result<ReadBack, String>> {
        let run_id = run_id.to_string();
        Box::pin(async move { postgres::read_back_ledger(&self.0, &run_id, deadline, clock).await })
    }

    fn log_checks(&self) -> Vec<LogCheck> {
        let mut checks = vec![LogCheck {
            label: "promotion (Patroni: promoted self to leader)",
            needle: "promoted self to leader",
            event: is_promotion,
        }];
        if !self.0.routers.is_empty() {
            checks.push(LogCheck {
                label: "router switch (HAProxy: Server postgres_rw/<member> is UP)",
                needle: haproxy::SWITCH_NEEDLE,
                event: is_router_switch,
            });
        }
        checks
    }

    fn unlogged_events(&self) -> Vec<&'static str> {
        vec![
            "postgres detection (leader key gone): no server-side record of the key's expiry exists: etcd does not \
             log TTL expiries and Patroni logs only the lock it acquires, so detection_s is checked against no log",
        ]
    }
}

pub struct RedisComponent(pub redis::RedisEndpoints);

impl Component for RedisComponent {
    fn kind(&self) -> ComponentKind {
        ComponentKind::Redis
    }

    fn prepare(&self, _deadline: Duration) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn spawn_probe(
        &self,
        events: EventLog,
        stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        redis::spawn_probe(self.0.clone(), events, stop)
    }

    fn load_client(&self, run_id: &str, profile: &LoadProfile) -> Arc<dyn LoadClient> {
        Arc::new(redis::RedisLoadClient::new(
            self.0.clone(),
            run_id,
            profile.redis_wait.clone(),
            profile.connections as usize,
        ))
    }

    fn read_back(
        &self,
        run_id: &str,
        deadline: Duration,
        clock: Clock,
    ) -> BoxFuture<'_, Result<ReadBack, String>> {
        let run_id = run_id.to_string();
        Box::pin(async move { redis::read_back_ledger(&self.0, &run_id, deadline, clock).await })
    }

    fn log_checks(&self) -> Vec<LogCheck> {
        vec![
            LogCheck {
                label: "detection (Sentinel +sdown master)",
                needle: "+sdown master",
                event: is_detection,
            },
            LogCheck {
                label: "promotion (Sentinel +promoted-slave)",
                needle: "+promoted-slave",
                event: is_promotion,
            },
            LogCheck {
                label: "switch (Sentinel +switch-master)",
                needle: "+switch-master",
                event: is_switch_master,
            },
        ]
    }
}

/// Qdrant keeps the run's event log from its probe so that the read-back can put what it found inconsistent
/// across peers (duplicates, counts, points only some peers return) on the timeline.
pub struct QdrantComponent {
    pub endpoints: qdrant::QdrantEndpoints,
    events: std::sync::Mutex<Option<EventLog>>,
}

impl QdrantComponent {
    pub fn new(endpoints: qdrant::QdrantEndpoints) -> Self {
        QdrantComponent {
            endpoints,
            events: std::sync::Mutex::new(None),
        }
    }
}

impl Component for QdrantComponent {
    fn kind(&self) -> ComponentKind {
        ComponentKind::Qdrant
    }

    fn prepare(&self, deadline: Duration) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(qdrant::prepare(&self.endpoints, deadline))
    }

    fn spawn_probe(
        &self,
        events: EventLog,
        stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        *self.events.lock().unwrap() = Some(events.clone());
        qdrant::spawn_probe(self.endpoints.clone(), events, stop)
    }

    fn load_client(&self, run_id: &str, _profile: &LoadProfile) -> Arc<dyn LoadClient> {
        Arc::new(qdrant::QdrantLoadClient::new(
            self.endpoints.clone(),
            run_id,
        ))
    }

    fn read_back(
        &self,
        run_id: &str,
        deadline: Duration,
        clock: Clock,
    ) -> BoxFuture<'_, Result<ReadBack, String>> {
        let run_id = run_id.to_string();
        Box::pin(async move {
            let (read_back, report) =
                qdrant::read_back_ledger(&self.endpoints, &run_id, deadline, clock).await?;
            let events = self.events.lock().unwrap().clone();
            if let Some(events) = events {
                let findings = report.inconsistencies().into_iter().chain(
                    report
                        .unanswered
                        .iter()
                        .map(|(n, e)| format!("read-back without {n}: {e}")),
                );
                for message in findings {
                    events.emit(EventKind::ServerObservation {
                        component: ComponentKind::Qdrant,
                        source: "read-back".into(),
                        message,
                    });
                }
            }
            Ok(read_back)
        })
    }

    /// None yet: no Qdrant log line has been checked against a real cluster's timing here, and a line that was
    /// never verified would make the agreement check meaningless.
    fn log_checks(&self) -> Vec<LogCheck> {
        Vec::new()
    }
}

/// PostgreSQL's port on the local stack (and in the pods).
pub const POSTGRES_PORT: u16 = 5432;
/// Patroni's REST API.
pub const PATRONI_PORT: u16 = 8008;
pub const REDIS_PORT: u16 = 6379;
pub const SENTINEL_PORT: u16 = 26379;

/// The ports clients reach a member's services on. The local stack uses the standard ports on every node; on
/// Kubernetes each member is reached through its own NodePort on one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberPorts {
    pub postgres: u16,
    pub patroni: u16,
    pub redis: u16,
    pub sentinel: u16,
}

impl MemberPorts {
    pub const STANDARD: MemberPorts = MemberPorts {
        postgres: POSTGRES_PORT,
        patroni: PATRONI_PORT,
        redis: REDIS_PORT,
        sentinel: SENTINEL_PORT,
    };
}

impl Default for MemberPorts {
    fn default() -> Self {
        MemberPorts::STANDARD
    }
}

/// A member of a replicated component: the node it runs on, where clients reach it, and how the servers
/// themselves name it. The two differ on Kubernetes, where clients outside the cluster use NodePorts on one
/// address while Patroni, Sentinel and Redis speak of pod names and pod IPs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub node: String,
    /// The address clients connect to.
    pub addr: Ipv4Addr,
    pub ports: MemberPorts,
    /// The member's name in Patroni's /cluster and the DCS leader key: the node's name on the local stack, the
    /// pod's on Kubernetes.
    pub name: String,
    /// The address the servers announce for it (Sentinel's master address, a replica's master_host,
    /// `inet_server_addr()`): `addr` on the local stack, the pod IP on Kubernetes.
    pub announced: Ipv4Addr,
}

impl Member {
    /// A member of the local stack: named after its node, reached and announced on the node's address at the
    /// standard ports.
    pub fn local(node: impl Into<String>, addr: Ipv4Addr) -> Self {
        let node = node.into();
        Member {
            name: node.clone(),
            node,
            addr,
            ports: MemberPorts::STANDARD,
            announced: addr,
        }
    }
}

/// Retries `attempt` every 300 ms until it succeeds or `deadline` has passed; the error is the last attempt's.
/// Every wait in faultline has an explicit deadline like this one.
pub async fn retry_until<T, F, Fut>(deadline: Duration, mut attempt: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let until = std::time::Instant::now() + deadline;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if std::time::Instant::now() >= until => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// How long one read-back attempt may take before it is abandoned and tried again (a connection to a
/// black-holed member would otherwise hold the whole deadline).
pub const READ_BACK_ATTEMPT: Duration = Duration::from_secs(5);

/// Like `retry_until`, with every attempt bounded by `per_attempt` (and by what is left of `deadline`).
pub async fn retry_each_within<T, F, Fut>(
    deadline: Duration,
    per_attempt: Duration,
    mut attempt: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let until = std::time::Instant::now() + deadline;
    retry_until(deadline, || {
        let left = until.saturating_duration_since(std::time::Instant::now());
        let bound = per_attempt.min(left).max(Duration::from_millis(100));
        let fut = attempt();
        async move {
            tokio::time::timeout(bound, fut).await.unwrap_or_else(|_| {
                Err(format!(
                    "attempt gave no answer within {} ms",
                    bound.as_millis()
                ))
            })
        }
    })
    .await
}

/// HTTP client for probes: short timeout, never a proxy (all traffic stays on this machine).
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .no_proxy()
        .build()
        .expect("a plain HTTP client builds")
}

/// The response when its status is a success; otherwise an error naming `what` failed, the status and the start
/// of the body (servers say why there).
pub async fn success_or_body(
    r: reqwest::Response,
    what: impl std::fmt::Display,
) -> Result<reqwest::Response, String> {
    if r.status().is_success() {
        return Ok(r);
    }
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    Err(format!(
        "{what}: HTTP {status}: {}",
        text.chars().take(300).collect::<String>()
    ))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (etcd's v3 JSON gateway encodes keys and values so).
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = B64.iter().position(|&x| x == c)? as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn utc(y: i64, mo: u32, d: u32, h: u64, mi: u64, s: u64, ms: u64) -> Option<SystemTime> {
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let secs = days * 86400 + (h * 3600 + mi * 60 + s) as i64;
    (secs >= 0).then(|| UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_millis(ms))
}

/// "2026-11-23 06:30:09,456 INFO: ..." (Python logging's asctime; the stack runs with TZ=UTC).
pub fn parse_patroni_time(line: &str) -> Option<SystemTime> {
    let ts = line.get(..23)?;
    let (date, time) = ts.split_once(' ')?;
    let mut d = date.split('-');
    let (y, mo, day) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (hms, ms) = time.split_once(',')?;
    let mut t = hms.split(':');
    let (h, mi, s) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    utc(y, mo, day, h, mi, s, ms.parse().ok()?)
}

/// "12345:X 23 Nov 2026 06:30:01.123 # +switch-master ..." (Redis and Sentinel logs, TZ=UTC).
pub fn parse_redis_time(line: &str) -> Option<SystemTime> {
    let mut f = line.split_whitespace();
    let _pid_role = f.next()?;
    let day: u32 = f.next()?.parse().ok()?;
    let month = f.next()?;
    let year: i64 = f.next()?.parse().ok()?;
    let time = f.next()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mo = MONTHS.iter().position(|m| *m == month)? as u32 + 1;
    let (hms, ms) = time.split_once('.')?;
    let mut t = hms.split(':');
    let (h, mi, s) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    utc(year, mo, day, h, mi, s, ms.parse().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::rfc3339_millis;

    #[tokio::test]
    async fn a_hung_attempt_is_abandoned_and_the_next_one_runs() {
        let mut n = 0;
        let started = std::time::Instant::now();
        let r = retry_each_within(Duration::from_secs(5), Duration::from_millis(200), || {
            n += 1;
            let first = n == 1;
            async move {
                if first {
                    std::future::pending::<()>().await;
                }
                Ok::<_, String>(n)
            }
        })
        .await;
        assert_eq!(r, Ok(2));
        assert!(started.elapsed() < Duration::from_secs(1));
        let r: Result<(), String> =
            retry_each_within(Duration::from_millis(300), Duration::from_secs(5), || {
                std::future::pending()
            })
            .await;
        assert!(r.unwrap_err().contains("no answer within"));
    }

    #[test]
    fn base64_round_trips() {
        for s in ["", "f", "fo", "foo", "/service/faultline/leader"] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
    }

    #[test]
    fn parses_server_log_stamps() {
        let p = parse_patroni_time("2024-02-29 23:59:59,999 INFO: x").unwrap();
        assert_eq!(rfc3339_millis(p), "2024-02-29T23:59:59.999Z");
        let r =
            parse_redis_time("812:X 23 Nov 2026 06:30:01.123 # +switch-master a b c d e").unwrap();
        assert_eq!(rfc3339_millis(r), "2026-11-23T06:30:01.123Z");
        assert!(parse_redis_time("garbage line").is_none());
        assert!(parse_patroni_time("2026-13-01 00:00:00,000 x").is_none());
    }
}
