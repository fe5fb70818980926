//! Validated scenario, suite and threshold types: what the engine runs. Parsed from the YAML forms in `parse.rs`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    Postgres,
    Redis,
}

impl ComponentKind {
    pub const ALL: [ComponentKind; 2] = [ComponentKind::Postgres, ComponentKind::Redis];

    pub fn name(self) -> &'static str {
        match self {
            ComponentKind::Postgres => "postgres",
            ComponentKind::Redis => "redis",
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
    Replica,
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
    /// Drop traffic between node groups. `side_b` empty = every other node of the topology.
    Partition {
        side_a: Vec<NodeSelector>,
        side_b: Vec<NodeSelector>,
        direction: PartitionDirection,
    },
    /// Every process of the node killed and its link down.
    NodeLoss { target: NodeSelector },
    /// Node loss for every node of a zone. `target` must be `Zone` or `ZoneOf`.
    ZoneLoss { target: NodeSelector },
    /// Graceful: switch over away from the node where the component supports it, then SIGTERM its processes.
    NodeDrain { target: NodeSelector },
}

impl FaultKind {
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::ProcessKill { .. } => "process-kill",
            FaultKind::ProcessPause { .. } => "process-pause",
            FaultKind::Partition { .. } => "partition",
            FaultKind::NodeLoss { .. } => "node-loss",
            FaultKind::ZoneLoss { .. } => "zone-loss",
            FaultKind::NodeDrain { .. } => "node-drain",
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

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoadProfile {
    /// Writes per second, open loop.
    pub write_rate: u32,
    /// Reads per second, open loop (0 = none).
    pub read_rate: u32,
    /// Concurrent client connections executing the schedule.
    pub connections: u32,
    /// Client-side deadline per operation; past it the outcome is unknown.
    pub deadline: Duration,
    /// Redis only: `WAIT replicas timeout` after every write.
    pub redis_wait: Option<RedisWait>,
    /// RTO = fault to the first of this many consecutive successful writes.
    pub rto_consecutive: u32,
}

impl Default for LoadProfile {
    fn default() -> Self {
        LoadProfile {
            write_rate: 100,
            read_rate: 20,
            connections: 4,
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

/// The metrics a threshold can judge. Names are the ones used in scenario files and reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    DetectionS,
    PromotionS,
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
    LatencyP50BaselineMs,
    LatencyP99BaselineMs,
    LatencyP50FaultMs,
    LatencyP99FaultMs,
}

impl Metric {
    pub const ALL: [Metric; 16] = [
        Metric::DetectionS,
        Metric::PromotionS,
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
        Metric::LatencyP50BaselineMs,
        Metric::LatencyP99BaselineMs,
        Metric::LatencyP50FaultMs,
        Metric::LatencyP99FaultMs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::DetectionS => "detection_s",
            Metric::PromotionS => "promotion_s",
            Metric::RtoS => "rto_s",
            Metric::DowntimeS => "downtime_s",
            Metric::LostAckedWrites => "lost_acked_writes",
            Metric::RpoS => "rpo_s",
            Metric::ErrorRate => "error_rate",
            Metric::FailedWrites => "failed_writes",
            Metric::UnknownWrites => "unknown_writes",
            Metric::RecoveredWrites => "recovered_writes",
            Metric::UnexpectedWrites => "unexpected_writes",
            Metric::AckedWrites => "acked_writes",
            Metric::LatencyP50BaselineMs => "latency_p50_baseline_ms",
            Metric::LatencyP99BaselineMs => "latency_p99_baseline_ms",
            Metric::LatencyP50FaultMs => "latency_p50_fault_ms",
            Metric::LatencyP99FaultMs => "latency_p99_fault_ms",
        }
    }

    pub fn from_name(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == s)
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

/// `metric op limit`, e.g. `detection_s <= 10`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Threshold {
    pub metric: Metric,
    pub op: Op,
    pub limit: f64,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.metric, self.op.symbol(), self.limit)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// The file it was read from.
    pub source: PathBuf,
    /// The component whose failover is measured (load, probes and ledger).
    pub component: ComponentKind,
    /// Topology file, resolved relative to the scenario file; None = the stack's current/default topology.
    pub topology: Option<PathBuf>,
    pub load: LoadProfile,
    pub baseline: Duration,
    pub faults: Vec<FaultSpec>,
    /// The fault window: from the end of the baseline until faults are reverted and the heal starts.
    pub observe: Duration,
    pub heal: HealSpec,
    pub thresholds: Vec<Threshold>,
    pub trials: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Suite {
    pub name: String,
    pub source: PathBuf,
    pub scenarios: Vec<Scenario>,
}
