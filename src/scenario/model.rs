//! Validated scenario, suite and threshold types: what the engine runs. Parsed from the YAML forms in `parse.rs`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::http_probe::HttpProbe;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    Postgres,
    Redis,
    Qdrant,
}

impl ComponentKind {
    pub const ALL: [ComponentKind; 3] = [
        ComponentKind::Postgres,
        ComponentKind::Redis,
        ComponentKind::Qdrant,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ComponentKind::Postgres => "postgres",
            ComponentKind::Redis => "redis",
            ComponentKind::Qdrant => "qdrant",
        }
    }
}

impl fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A member's role in its replication group. For Redis, `Primary` is the master.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    /// The first replica in topology order.
    Replica,
    /// Patroni's synchronous standby (`sync-replica`): the replica whose loss stalls commits. Postgres only.
    #[serde(rename = "sync-replica")]
    SyncReplica,
}

impl Role {
    /// The name used in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::SyncReplica => "sync-replica",
        }
    }
}

/// Which node(s) a fault hits, resolved when the fault is applied (the primary moves between trials).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeSelector {
    /// A node by its topology name.
    Node(String),
    /// The node currently holding this role for the component (first replica in topology order for `Replica`).
    Role {
        component: ComponentKind,
        role: Role,
    },
    /// Every node of a zone.
    Zone(String),
    /// Every node of the zone that holds the role (`zone_of` in YAML).
    ZoneOf {
        component: ComponentKind,
        role: Role,
    },
    /// Every node of a region.
    Region(String),
    /// Every node of the region that holds the role (`region_of` in YAML).
    RegionOf {
        component: ComponentKind,
        role: Role,
    },
}

impl NodeSelector {
    /// The component whose current role holder the selector follows, if it follows one.
    pub fn component(&self) -> Option<ComponentKind> {
        match self {
            NodeSelector::Role { component, .. }
            | NodeSelector::ZoneOf { component, .. }
            | NodeSelector::RegionOf { component, .. } => Some(*component),
            NodeSelector::Node(_) | NodeSelector::Zone(_) | NodeSelector::Region(_) => None,
        }
    }
}

/// How the nodes of a node, zone or region loss go away. Each is a different failure for the survivors: a stopped
/// machine's peers see connections time out, a paused one holds its sockets open and answers nothing, a
/// disconnected one keeps running (and may keep accepting writes from clients that still reach it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeLossMethod {
    /// Power loss: every process killed, the network gone (kind: `docker stop -t 0`).
    #[default]
    Stop,
    /// Frozen: every process stopped in place, the network up (kind: `docker pause`).
    Pause,
    /// Cut off: processes keep running, the network gone (kind: `docker network disconnect`).
    Disconnect,
    /// Gone for good (local stack only): the link down, every process killed and the nodes' data directories
    /// removed, so nothing on them can be used again; only a restore brings service back. Reverted by rebuilding
    /// the nodes empty and joining them to the clusters that run then.
    Destroy,
}

impl NodeLossMethod {
    pub const NAMES: [&'static str; 4] = ["stop", "pause", "disconnect", "destroy"];

    pub fn name(self) -> &'static str {
        match self {
            NodeLossMethod::Stop => "stop",
            NodeLossMethod::Pause => "pause",
            NodeLossMethod::Disconnect => "disconnect",
            NodeLossMethod::Destroy => "destroy",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stop" => Some(NodeLossMethod::Stop),
            "pause" => Some(NodeLossMethod::Pause),
            "disconnect" => Some(NodeLossMethod::Disconnect),
            "destroy" => Some(NodeLossMethod::Destroy),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionDirection {
    /// Neither side reaches the other.
    Both,
    /// Packets from side A to side B are dropped; B to A still flows.
    AToB,
    /// Packets from side B to side A are dropped.
    BToA,
}

impl PartitionDirection {
    /// How a fault description says which way its effect goes between `[side A] / [side B]`.
    pub fn between(self) -> &'static str {
        match self {
            PartitionDirection::Both => "both ways between",
            PartitionDirection::AToB => "from the first to the second of",
            PartitionDirection::BToA => "from the second to the first of",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL of every process of one component member.
    ProcessKill {
        component: ComponentKind,
        target: NodeSelector,
    },
    /// SIGSTOP of every process of one component member, SIGCONT on revert.
    ProcessPause {
        component: ComponentKind,
        target: NodeSelector,
    },
    /// Limit the bandwidth between node groups (sides and direction as a partition's) to `rate_kbit`.
    Bandwidth {
        side_a: Vec<NodeSelector>,
        side_b: Vec<NodeSelector>,
        direction: PartitionDirection,
        rate_kbit: u32,
    },
    /// Delay what each side sends to the other (sides and direction as a partition's) by `delay`, each packet's
    /// delay uniform in `delay ± jitter`.
    Latency {
        side_a: Vec<NodeSelector>,
        side_b: Vec<NodeSelector>,
        direction: PartitionDirection,
        delay: Duration,
        jitter: Duration,
    },
    /// process-kill or process-pause of a router process (`process: haproxy | pgbouncer`) on the target's nodes.
    RouterProcess {
        process: RouterProcess,
        pause: bool,
        target: NodeSelector,
    },
    /// Drop traffic between node groups. `side_b` empty = every other node of the topology. `loss_pct` below
    /// 100 drops that share of the packets at random (`kind: loss`); 100 is the partition.
    Partition {
        side_a: Vec<NodeSelector>,
        side_b: Vec<NodeSelector>,
        direction: PartitionDirection,
        loss_pct: u8,
    },
    /// The node goes away (how: `method`).
    NodeLoss {
        target: NodeSelector,
        method: NodeLossMethod,
    },
    /// Node loss for every node of a zone. `target` must be `Zone` or `ZoneOf`.
    ZoneLoss {
        target: NodeSelector,
        method: NodeLossMethod,
    },
    /// Node loss for every node of a region. `target` must be `Region` or `RegionOf`.
    RegionLoss {
        target: NodeSelector,
        method: NodeLossMethod,
    },
    /// Graceful: switch over away from the node where the component supports it, then SIGTERM its processes.
    NodeDrain { target: NodeSelector },
    /// The backup repository becomes unreachable: its host's pgBackRest server is killed, so WAL archiving fails
    /// and nothing can be restored until it is back (reverted by starting it again).
    RepositoryOutage,
    /// Data corruption through the primary, committed like any other write: nothing reverts it; a drill's
    /// recovery (a point-in-time restore to before it) is what undoes it.
    Corruption {
        component: ComponentKind,
        how: CorruptionKind,
    },
}

/// What a corruption does to the ledger table of the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CorruptionKind {
    /// Every row's `written_at` overwritten with the epoch: every row still there, every row wrong.
    #[default]
    UpdateAll,
    /// The ledger table dropped.
    DropTable,
    /// Redis: every key of every database removed (`FLUSHALL`).
    Flushall,
    /// Qdrant: every point of the harness's collection deleted.
    DeletePoints,
}

impl CorruptionKind {
    pub const NAMES: [&'static str; 4] = ["update-all", "drop-table", "flushall", "delete-points"];

    pub fn name(self) -> &'static str {
        match self {
            CorruptionKind::UpdateAll => "update-all",
            CorruptionKind::DropTable => "drop-table",
            CorruptionKind::Flushall => "flushall",
            CorruptionKind::DeletePoints => "delete-points",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "update-all" => Some(CorruptionKind::UpdateAll),
            "drop-table" => Some(CorruptionKind::DropTable),
            "flushall" => Some(CorruptionKind::Flushall),
            "delete-points" => Some(CorruptionKind::DeletePoints),
            _ => None,
        }
    }
}

/// The point a PostgreSQL restore recovers to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryTarget {
    /// The newest backup plus every archived WAL segment: the end of the archive.
    Latest,
    /// Just before the trial's corruption was requested (its transaction is not replayed), or its first fault
    /// when it has no corruption.
    BeforeFault,
    /// An absolute instant, written in RFC 3339 with an explicit offset (a time without one would be read as
    /// local time); parsed once, when the scenario is read.
    Time {
        text: String,
        at: std::time::SystemTime,
    },
}

/// An operator action of a drill.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// pgBackRest backup of the given type and a Redis RDB copy into the backup store.
    Backup { kind: crate::backup::BackupType },
    /// Stop the Patroni cluster, restore it from the repository to the target, bootstrap Patroni from it and
    /// re-create the replicas from the new leader.
    RestorePostgres { target: RecoveryTarget },
    /// Bring Redis back from the newest RDB copy in the backup store, with its replicas and fresh sentinels.
    RestoreRedis,
    /// Recover every Qdrant peer from its snapshot of the newest set in the backup store (priority `snapshot`).
    RestoreQdrant,
    /// Put the PostgreSQL primary and the Redis master on nodes of a region or zone (Patroni switchover,
    /// Sentinel failover), so a drill starts from the layout it was written for.
    MoveRoles { to: String },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Backup { .. } => "backup",
            Action::RestorePostgres { .. } => "restore-postgres",
            Action::RestoreRedis => "restore-redis",
            Action::RestoreQdrant => "restore-qdrant",
            Action::MoveRoles { .. } => "move-roles",
        }
    }
}

/// One step of a drill: an operator action with its deadline, or a pause.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Action { action: Action, deadline: Duration },
    Wait(Duration),
}

impl Step {
    /// How the step is named on the timeline.
    pub fn label(&self) -> String {
        match self {
            Step::Action { action, .. } => match action {
                Action::Backup { kind } => format!("backup ({})", kind.name()),
                Action::RestorePostgres { target } => format!(
                    "restore-postgres (to {})",
                    match target {
                        RecoveryTarget::Latest => "latest",
                        RecoveryTarget::BeforeFault => "before-fault",
                        RecoveryTarget::Time { text, .. } => text.as_str(),
                    }
                ),
                Action::RestoreRedis => "restore-redis (newest RDB)".into(),
                Action::RestoreQdrant => "restore-qdrant (newest snapshots)".into(),
                Action::MoveRoles { to } => format!("move-roles (to {to})"),
            },
            Step::Wait(d) => format!("wait {}", humantime::format_duration(*d)),
        }
    }
}

impl FaultKind {
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::ProcessKill { .. } => "process-kill",
            FaultKind::ProcessPause { .. } => "process-pause",
            FaultKind::RouterProcess { pause: false, .. } => "process-kill",
            FaultKind::RouterProcess { pause: true, .. } => "process-pause",
            FaultKind::Partition { loss_pct: 100, .. } => "partition",
            FaultKind::Partition { .. } => "loss",
            FaultKind::Bandwidth { .. } => "bandwidth",
            FaultKind::Latency { .. } => "latency",
            FaultKind::NodeLoss { .. } => "node-loss",
            FaultKind::ZoneLoss { .. } => "zone-loss",
            FaultKind::RegionLoss { .. } => "region-loss",
            FaultKind::NodeDrain { .. } => "node-drain",
            FaultKind::Corruption { .. } => "corruption",
            FaultKind::RepositoryOutage => "repository-outage",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultSpec {
    pub kind: FaultKind,
    /// Offset from the end of the baseline window.
    pub at: Duration,
    /// How long the fault stays applied; None = until the end of the observation window.
    pub duration: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RedisWait {
    pub replicas: u32,
    pub timeout: Duration,
}

/// How operations are spaced in time, at the same average rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrivals {
    /// Evenly spaced: the n-th operation at n / rate.
    #[default]
    Uniform,
    /// A Poisson process (exponential gaps, seeded so every run is the same schedule), as `pgbench -R` and real
    /// client populations send: bursts and lulls at the same average rate.
    Poisson,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoadProfile {
    /// Writes per second, open loop.
    pub write_rate: u32,
    /// Reads per second, open loop (0 = none).
    pub read_rate: u32,
    /// Searches per second, open loop (0 = none); only for components that have a search (Qdrant).
    pub search_rate: u32,
    /// Client connections opened before the load starts (the pool grows on demand up to `max_in_flight`).
    pub connections: u32,
    /// Operations of the component in flight at once; an operation that finds every slot taken waits for one,
    /// within its deadline (the wait is recorded apart from the server's time).
    pub max_in_flight: u32,
    /// Client-side deadline per operation; past it the outcome is unknown.
    pub deadline: Duration,
    /// How the operations of each stream are spaced.
    pub arrivals: Arrivals,
    /// Redis only: `WAIT replicas timeout` after every write.
    pub redis_wait: Option<RedisWait>,
    /// RTO = fault to the first of this many consecutive successful writes.
    pub rto_consecutive: u32,
}

impl LoadProfile {
    /// The profile one component's load runs with: searches only where there is a search (Qdrant), Redis's
    /// `WAIT` only for Redis. The rest applies to every component of the scenario alike.
    pub fn for_component(&self, kind: ComponentKind) -> LoadProfile {
        LoadProfile {
            search_rate: if kind == ComponentKind::Qdrant {
                self.search_rate
            } else {
                0
            },
            redis_wait: self
                .redis_wait
                .clone()
                .filter(|_| kind == ComponentKind::Redis),
            ..self.clone()
        }
    }
}

impl Default for LoadProfile {
    fn default() -> Self {
        LoadProfile {
            write_rate: 100,
            read_rate: 20,
            search_rate: 0,
            connections: 4,
            max_in_flight: 64,
            arrivals: Arrivals::Uniform,
            deadline: Duration::from_secs(2),
            redis_wait: None,
            rto_consecutive: 3,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HealSpec {
    /// Deadline for the stack to be healthy again after the faults are reverted.
    pub timeout: Duration,
    /// Load keeps running this long after the heal so late losses and recoveries show.
    pub settle: Duration,
}

impl Default for HealSpec {
    fn default() -> Self {
        HealSpec {
            timeout: Duration::from_secs(90),
            settle: Duration::from_secs(3),
        }
    }
}

/// Which operations a latency or throughput metric covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpClass {
    /// Every operation (reads, writes, searches).
    All,
    Write,
    Read,
    Search,
}

impl OpClass {
    pub const ALL: [OpClass; 4] = [OpClass::All, OpClass::Write, OpClass::Read, OpClass::Search];

    /// Prefix in metric names; `All` keeps the historical `latency_`/`throughput_` names.
    fn prefix(self) -> &'static str {
        match self {
            OpClass::All => "",
            OpClass::Write => "write_",
            OpClass::Read => "read_",
            OpClass::Search => "search_",
        }
    }
}

/// The paired measurement windows: steady state right before the fault, and fault to healed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Window {
    Baseline,
    Fault,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Quantile {
    P50,
    P95,
    P99,
}

impl Quantile {
    pub const ALL: [Quantile; 3] = [Quantile::P50, Quantile::P95, Quantile::P99];

    pub fn fraction(self) -> f64 {
        match self {
            Quantile::P50 => 0.50,
            Quantile::P95 => 0.95,
            Quantile::P99 => 0.99,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Quantile::P50 => "p50",
            Quantile::P95 => "p95",
            Quantile::P99 => "p99",
        }
    }
}

/// The metrics a threshold can judge. Names are the ones used in scenario files and reports (see `name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    DetectionS,
    PromotionS,
    /// Fault to the first router (HAProxy) sending read-write connections to another single member than before;
    /// only with a `client_path` through the routing layer.
    RouterSwitchS,
    /// Fault to the stack healthy again after the heal (every replica back).
    RecoveredS,
    /// Fault to every pod that went not Ready (or was deleted) after it being Ready again; Kubernetes only.
    PodsReadyS,
    RtoS,
    DowntimeS,
    LostAckedWrites,
    RpoS,
    ErrorRate,
    FailedWrites,
    UnknownWrites,
    RecoveredWrites,
    UnexpectedWrites,
    AckedWrites,
    /// Failed or unknown reads and searches over the trial.
    FailedQueries,
    /// Successful / attempted operations over the trial, in percent.
    AvailabilityPct,
    /// The largest |server log time - harness stamp| over the trial's paired events (see `log_agreement`).
    LogAgreementMaxS,
    /// A drill's `restore-postgres` step: start to the restored primary accepting writes.
    PgRestoreS,
    /// The same, for a restore to a point in time (not `latest`).
    PitrS,
    /// A drill's `restore-redis` step: start to the restored master holding the RDB's keys and accepting writes.
    RedisRestoreS,
    /// A drill's `restore-qdrant` step: start to every peer recovered, every shard Active and a write accepted.
    QdrantRestoreS,
    /// Newest minus oldest instant the repository could restore to, read before the drill's restore.
    RecoverableWindowS,
    /// Acknowledged writes sent after a restore's recovery target that the restore removed, as it must.
    DiscardedWrites,
    /// Integrity checks of a drill's restore that failed (each is listed in the report).
    IntegrityFailures,
    /// Metrics of this trial worse than the scenario's recent runs by more than their spread (see `history`).
    Regressions,
    /// `[op_]latency_pXX_{baseline,fault}_ms`; for a single op class `write_p99_fault_ms`.
    Latency(OpClass, Quantile, Window),
    /// Successful operations per second in the window: `[op_]throughput_{baseline,fault}_per_s`.
    Throughput(OpClass, Window),
    /// (fault - baseline) / baseline in percent, positive = slower: `[op_|latency_]pXX_degradation_pct`.
    LatencyDegradation(OpClass, Quantile),
    /// fault - baseline in milliseconds, the delay the fault added: `[op_|latency_]pXX_added_ms` (a `latency`
    /// fault of 100 ms each way between a primary and its synchronous standby adds about 200 ms to a commit).
    LatencyAdded(OpClass, Quantile),
    /// p99 of the time operations waited in the harness for an in-flight slot (scheduled to slot; the whole wait
    /// for one that never got a slot): `[op_]slot_wait_p99_{baseline,fault}_ms`. Not part of the server's time.
    SlotWaitP99(OpClass, Window),
    /// p99 of the server's (and the network's) time of the ok operations, sent to done:
    /// `[op_]server_p99_{baseline,fault}_ms`.
    ServerP99(OpClass, Window),
    /// (baseline - fault) / baseline in percent, positive = fewer ops: `[op_]throughput_degradation_pct`.
    ThroughputDegradation(OpClass),
    /// PostgreSQL's own replication lag (`pg_stat_replication.replay_lag` of the most-behind standby per reading,
    /// read from the primary once a second; see `analysis::replication_lag`), median over the window's readings:
    /// `replication_lag_p50_{baseline,fault}_ms`.
    ReplicationLagP50(Window),
    /// The same, the largest reading: `replication_lag_max_{baseline,fault}_ms`. Not observed when a standby
    /// streaming before the fault was not streaming in a reading, the primary changed, or it went unread for a
    /// while (the lag then is unknown, and a maximum over the rest would look better than it was).
    ReplicationLagMax(Window),
}

static METRICS: std::sync::LazyLock<Vec<(Metric, String)>> = std::sync::LazyLock::new(|| {
    let mut v: Vec<Metric> = vec![
        Metric::DetectionS,
        Metric::PromotionS,
        Metric::RouterSwitchS,
        Metric::RecoveredS,
        Metric::PodsReadyS,
        Metric::RtoS,
        Metric::DowntimeS,
        Metric::LostAckedWrites,
        Metric::RpoS,
        Metric::ErrorRate,
        Metric::FailedWrites,
        Metric::UnknownWrites,
        Metric::RecoveredWrites,
        Metric::UnexpectedWrites,
        Metric::AckedWrites,
        Metric::FailedQueries,
        Metric::AvailabilityPct,
        Metric::LogAgreementMaxS,
        Metric::PgRestoreS,
        Metric::PitrS,
        Metric::RedisRestoreS,
        Metric::QdrantRestoreS,
        Metric::RecoverableWindowS,
        Metric::DiscardedWrites,
        Metric::IntegrityFailures,
        Metric::Regressions,
    ];
    for op in OpClass::ALL {
        for w in [Window::Baseline, Window::Fault] {
            for q in Quantile::ALL {
                v.push(Metric::Latency(op, q, w));
            }
            v.push(Metric::Throughput(op, w));
            v.push(Metric::SlotWaitP99(op, w));
            v.push(Metric::ServerP99(op, w));
        }
        for q in Quantile::ALL {
            v.push(Metric::LatencyDegradation(op, q));
        }
        for q in Quantile::ALL {
            v.push(Metric::LatencyAdded(op, q));
        }
        v.push(Metric::ThroughputDegradation(op));
    }
    for w in [Window::Baseline, Window::Fault] {
        v.push(Metric::ReplicationLagP50(w));
        v.push(Metric::ReplicationLagMax(w));
    }
    v.into_iter().map(|m| (m, m.compose_name())).collect()
});

static ALL_METRICS: std::sync::LazyLock<Vec<Metric>> =
    std::sync::LazyLock::new(|| METRICS.iter().map(|(m, _)| *m).collect());

impl Metric {
    /// Every metric, in report order.
    pub fn all() -> &'static [Metric] {
        &ALL_METRICS
    }

    /// A figure of one component's failover (its detection, its clients' outage, its latencies): in a scenario
    /// that measures several components it must be named with its component (`redis.promotion_s`). The others are
    /// also the system's: counted over every component's operations (`availability_pct`, `lost_acked_writes`),
    /// or observed once for the whole stack (`recovered_s`), or named after their component already
    /// (`pg_restore_s`).
    pub fn is_per_component(self) -> bool {
        self.is_load_figure()
            || matches!(
                self,
                Metric::DetectionS
                    | Metric::PromotionS
                    | Metric::RouterSwitchS
                    | Metric::RtoS
                    | Metric::DowntimeS
                    | Metric::RpoS
                    | Metric::ReplicationLagP50(..)
                    | Metric::ReplicationLagMax(..)
            )
    }

    /// A latency or throughput figure of one load's operations, in the baseline and fault windows.
    pub fn is_load_figure(self) -> bool {
        matches!(
            self,
            Metric::Latency(..)
                | Metric::Throughput(..)
                | Metric::LatencyDegradation(..)
                | Metric::LatencyAdded(..)
                | Metric::SlotWaitP99(..)
                | Metric::ServerP99(..)
                | Metric::ThroughputDegradation(..)
        )
    }

    fn compose_name(self) -> String {
        let window = |w: Window| match w {
            Window::Baseline => "baseline",
            Window::Fault => "fault",
        };
        match self {
            Metric::DetectionS => "detection_s".into(),
            Metric::PromotionS => "promotion_s".into(),
            Metric::RouterSwitchS => "router_switch_s".into(),
            Metric::RecoveredS => "recovered_s".into(),
            Metric::PodsReadyS => "pods_ready_s".into(),
            Metric::RtoS => "rto_s".into(),
            Metric::DowntimeS => "downtime_s".into(),
            Metric::LostAckedWrites => "lost_acked_writes".into(),
            Metric::RpoS => "rpo_s".into(),
            Metric::ErrorRate => "error_rate".into(),
            Metric::FailedWrites => "failed_writes".into(),
            Metric::UnknownWrites => "unknown_writes".into(),
            Metric::RecoveredWrites => "recovered_writes".into(),
            Metric::UnexpectedWrites => "unexpected_writes".into(),
            Metric::AckedWrites => "acked_writes".into(),
            Metric::FailedQueries => "failed_queries".into(),
            Metric::AvailabilityPct => "availability_pct".into(),
            Metric::LogAgreementMaxS => "log_agreement_max_s".into(),
            Metric::PgRestoreS => "pg_restore_s".into(),
            Metric::PitrS => "pitr_s".into(),
            Metric::RedisRestoreS => "redis_restore_s".into(),
            Metric::QdrantRestoreS => "qdrant_restore_s".into(),
            Metric::RecoverableWindowS => "recoverable_window_s".into(),
            Metric::DiscardedWrites => "discarded_writes".into(),
            Metric::IntegrityFailures => "integrity_failures".into(),
            Metric::Regressions => "regressions".into(),
            Metric::Latency(OpClass::All, q, w) => {
                format!("latency_{}_{}_ms", q.label(), window(w))
            }
            Metric::Latency(op, q, w) => format!("{}{}_{}_ms", op.prefix(), q.label(), window(w)),
            Metric::Throughput(op, w) => format!("{}throughput_{}_per_s", op.prefix(), window(w)),
            Metric::LatencyDegradation(OpClass::All, q) => {
                format!("latency_{}_degradation_pct", q.label())
            }
            Metric::LatencyDegradation(op, q) => {
                format!("{}{}_degradation_pct", op.prefix(), q.label())
            }
            Metric::ThroughputDegradation(op) => {
                format!("{}throughput_degradation_pct", op.prefix())
            }
            Metric::LatencyAdded(OpClass::All, q) => format!("latency_{}_added_ms", q.label()),
            Metric::LatencyAdded(op, q) => format!("{}{}_added_ms", op.prefix(), q.label()),
            Metric::SlotWaitP99(op, w) => format!("{}slot_wait_p99_{}_ms", op.prefix(), window(w)),
            Metric::ServerP99(op, w) => format!("{}server_p99_{}_ms", op.prefix(), window(w)),
            Metric::ReplicationLagP50(w) => format!("replication_lag_p50_{}_ms", window(w)),
            Metric::ReplicationLagMax(w) => format!("replication_lag_max_{}_ms", window(w)),
        }
    }

    pub fn name(self) -> &'static str {
        METRICS
            .iter()
            .find(|(m, _)| *m == self)
            .map(|(_, n)| n.as_str())
            .expect("every metric is in the table")
    }

    pub fn from_name(s: &str) -> Option<Metric> {
        METRICS.iter().find(|(_, n)| n == s).map(|(m, _)| *m)
    }

    /// Whether a larger value is better (judging "every trial" uses the worst trial in that direction).
    pub fn larger_is_better(self) -> bool {
        matches!(
            self,
            Metric::AckedWrites
                | Metric::AvailabilityPct
                | Metric::Throughput(..)
                | Metric::RecoverableWindowS
        )
    }
}

impl Serialize for Metric {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Op {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = ">")]
    Gt,
}

impl Op {
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ge => ">=",
            Op::Gt => ">",
        }
    }

    pub fn holds(self, measured: f64, limit: f64) -> bool {
        match self {
            Op::Lt => measured < limit,
            Op::Le => measured <= limit,
            Op::Eq => measured == limit,
            Op::Ge => measured >= limit,
            Op::Gt => measured > limit,
        }
    }
}

/// Which value over the trials a threshold judges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Statistic {
    /// Every trial must hold the threshold (the default): the worst trial is judged.
    Every,
    Min,
    Max,
    Mean,
    /// Nearest-rank percentiles over the trials' values.
    P50,
    P95,
}

impl Statistic {
    pub const NAMED: [Statistic; 5] = [
        Statistic::Min,
        Statistic::Max,
        Statistic::Mean,
        Statistic::P50,
        Statistic::P95,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Statistic::Every => "every",
            Statistic::Min => "min",
            Statistic::Max => "max",
            Statistic::Mean => "mean",
            Statistic::P50 => "p50",
            Statistic::P95 => "p95",
        }
    }

    /// The statistic over the trials' values (non-empty, all observed). Percentiles use the nearest rank,
    /// so the value is always one that a trial actually measured.
    pub fn of(self, values: &[f64]) -> Option<f64> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(match self {
            Statistic::Every | Statistic::Max => v[v.len() - 1],
            Statistic::Min => v[0],
            Statistic::Mean => v.iter().sum::<f64>() / v.len() as f64,
            Statistic::P50 => rank(0.50),
            Statistic::P95 => rank(0.95),
        })
    }
}

/// `metric op limit`, e.g. `detection_s <= 10`, optionally over a statistic of the trials: `p95(detection_s) <= 8`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Threshold {
    /// `postgres.promotion_s`: the figure of one component of a scenario that measures several, or
    /// `http.api.rto_s` of one HTTP probe; None = the scenario's own figure (its only component's, or the system's).
    pub source: Option<crate::ledger::Source>,
    pub metric: Metric,
    pub op: Op,
    pub limit: f64,
    pub statistic: Statistic,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let metric = crate::verdict::metric_name(self.source.as_ref(), self.metric);
        match self.statistic {
            Statistic::Every => write!(f, "{metric} {} {}", self.op.symbol(), self.limit),
            s => write!(
                f,
                "{}({metric}) {} {}",
                s.name(),
                self.op.symbol(),
                self.limit
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// The file it was read from.
    pub source: PathBuf,
    /// The lead component: the one process faults and role selectors name by default, and whose restore a drill
    /// judges first. Always `components[0]`.
    pub component: ComponentKind,
    /// Every component whose failover is measured (each with its own load, probes and ledger), lead first. One
    /// entry for `component: x`; several for `components: [postgres, redis]`, whose figures are then namespaced
    /// (`postgres.promotion_s`) beside the system's (`availability_pct` over every operation of every component).
    pub components: Vec<ComponentKind>,
    /// How the load's PostgreSQL clients reach the primary (direct, or through the routing layer).
    pub client_path: ClientPath,
    /// Topology file, resolved relative to the scenario file; None = the stack's current/default topology.
    pub topology: Option<PathBuf>,
    pub load: LoadProfile,
    pub baseline: Duration,
    pub faults: Vec<FaultSpec>,
    /// The fault window: from the end of the baseline until faults are reverted and the heal starts (in a drill:
    /// until the recovery steps start).
    pub observe: Duration,
    /// Drill steps run in order under load before the baseline window (a backup to restore from, say).
    pub prepare: Vec<Step>,
    /// Drill steps run in order when the fault window ends, each a timed phase: the operator's runbook.
    pub recovery: Vec<Step>,
    pub heal: HealSpec,
    pub thresholds: Vec<Threshold>,
    pub trials: u32,
    /// The user's own endpoints, each requested at its rate through every trial beside the component's load.
    pub http_probes: Vec<HttpProbe>,
}

impl Scenario {
    /// A disaster-recovery drill: operator steps or a fault only a restore undoes.
    pub fn is_drill(&self) -> bool {
        !self.prepare.is_empty()
            || !self.recovery.is_empty()
            || self.faults.iter().any(|f| {
                matches!(
                    f.kind,
                    FaultKind::Corruption { .. }
                        | FaultKind::RepositoryOutage
                        | FaultKind::NodeLoss {
                            method: NodeLossMethod::Destroy,
                            ..
                        }
                        | FaultKind::ZoneLoss {
                            method: NodeLossMethod::Destroy,
                            ..
                        }
                        | FaultKind::RegionLoss {
                            method: NodeLossMethod::Destroy,
                            ..
                        }
                )
            })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Suite {
    pub name: String,
    pub source: PathBuf,
    pub scenarios: Vec<Scenario>,
}

/// Which way clients reach PostgreSQL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientPath {
    /// A multi-host connection to the members, `target_session_attrs=read-write` (libpq's own failover).
    #[default]
    Direct,
    /// HAProxy's read-write port on the router nodes.
    Haproxy,
    /// PgBouncer on the router nodes, in front of HAProxy.
    Pgbouncer,
}

impl ClientPath {
    pub fn name(self) -> &'static str {
        match self {
            ClientPath::Direct => "direct",
            ClientPath::Haproxy => "haproxy",
            ClientPath::Pgbouncer => "pgbouncer",
        }
    }
}

/// A process of the routing layer a process fault can hit instead of a component's member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouterProcess {
    Haproxy,
    Pgbouncer,
}

impl RouterProcess {
    pub fn name(self) -> &'static str {
        match self {
            RouterProcess::Haproxy => "haproxy",
            RouterProcess::Pgbouncer => "pgbouncer",
        }
    }
}
