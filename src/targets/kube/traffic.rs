//! latency, loss and bandwidth on Kubernetes: Chaos Mesh's NetworkChaos `delay`, `loss` and `bandwidth` actions.
//! Chaos Mesh's daemon carries them out with tc in the pods' network namespaces (netem for delay and loss, tbf for
//! bandwidth), on each sending pod's interface and filtered to the other side's pod IPs through an ipset
//! (`trafficcontrol/impl.go`: the selector's pods get it towards the target's with direction `to` or `both`, the
//! target's towards the selector's with `from` or `both`). This is the netem a kind node's kernel has; the local stack
//! uses nft, htb and an NFQUEUE delay agent instead (this machine's kernel has no netem).
//!
//! The pods of each side are labelled `faultline.dev/partition=<id>-a` / `<id>-b` as a partition's are (side A is
//! the NetworkChaos's selector, side B its target); the revert deletes the NetworkChaos, waits until Chaos Mesh has
//! removed it (its finalizer holds it until every pod's tc rules are gone) and takes the labels off. Nothing cuts the
//! API server: Patroni's DCS sees the same slow or lossy network as the pods do (only towards the other side).
//! Without the NetworkChaos CRD the fault is refused: there is no NetworkPolicy that slows traffic.

use std::time::{Duration, Instant};

use ::kube::api::DynamicObject;
use serde_json::{json, Value};

use super::partition::{label_sides, undo, SidePods, OWNER_LABEL, PARTITION_LABEL};
use super::{chaos_mesh, KubeTarget};
use crate::fault::journal::Journal;
use crate::fault::{journal_before_applying, ActiveFault, RevertStep};
use crate::scenario::PartitionDirection;
use crate::targets::TargetError;

/// What the NetworkChaos does to the packets one side sends the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shaping {
    /// netem delay `delay` with `jitter` (each packet's delay uniform in delay ± jitter: netem without a
    /// distribution table).
    Delay { delay: Duration, jitter: Duration },
    /// netem loss: this share of the packets dropped at random.
    Loss { pct: u8 },
    /// tbf at this rate.
    Bandwidth { rate_kbit: u32 },
}

impl Shaping {
    /// Chaos Mesh's `spec.action`.
    pub fn action(self) -> &'static str {
        match self {
            Shaping::Delay { .. } => "delay",
            Shaping::Loss { .. } => "loss",
            Shaping::Bandwidth { .. } => "bandwidth",
        }
    }

    /// The fault's kind as scenarios name it.
    pub fn fault_name(self) -> &'static str {
        match self {
            Shaping::Delay { .. } => "latency",
            Shaping::Loss { .. } => "loss",
            Shaping::Bandwidth { .. } => "bandwidth",
        }
    }

    /// The action's parameters, the field of `spec` Chaos Mesh reads them from (`TcParameter` in
    /// api/v1alpha1/networkchaos_types.go).
    fn parameters(self) -> (&'static str, Value) {
        match self {
            Shaping::Delay { delay, jitter } => (
                "delay",
                json!({
                    "latency": chaos_duration(delay),
                    "jitter": chaos_duration(jitter),
                    "correlation": "0"
                }),
            ),
            Shaping::Loss { pct } => ("loss", json!({"loss": pct.to_string(), "correlation": "0"})),
            Shaping::Bandwidth { rate_kbit } => {
                let bytes_per_s = u64::from(rate_kbit) * 1000 / 8;
                (
                    "bandwidth",
                    json!({
                        "rate": format!("{rate_kbit}kbit"),
                        // What may wait for tokens: about the 1000 full-size packets the local stack's htb class
                        // queues, so both targets hold a comparable backlog before they drop.
                        "limit": BANDWIDTH_QUEUE_BYTES,
                        // The burst that may leave at once: 10 ms worth at the rate, at least two full frames.
                        "buffer": (bytes_per_s / 100).max(3028)
                    }),
                )
            }
        }
    }

    /// The fault in a few words, as its description starts.
    pub fn words(self) -> String {
        match self {
            Shaping::Delay { delay, jitter } if jitter.is_zero() => {
                format!("latency {} ms", delay.as_millis())
            }
            Shaping::Delay { delay, jitter } => format!(
                "latency {} ms ± {} ms",
                delay.as_millis(),
                jitter.as_millis()
            ),
            Shaping::Loss { pct } => format!("loss {pct} %"),
            Shaping::Bandwidth { rate_kbit } => format!("bandwidth {rate_kbit} kbit/s"),
        }
    }

    /// The tc discipline Chaos Mesh's daemon installs for it.
    pub fn mechanism(self) -> &'static str {
        match self {
            Shaping::Delay { .. } | Shaping::Loss { .. } => "netem",
            Shaping::Bandwidth { .. } => "tbf",
        }
    }
}

/// A duration as Chaos Mesh's pattern takes it (`^[0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h)$`): whole milliseconds, else
/// microseconds (a jitter of 500 µs is not 0 ms).
fn chaos_duration(d: Duration) -> String {
    if d.as_micros().is_multiple_of(1000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

/// tbf's `limit` for a bandwidth fault, in bytes.
const BANDWIDTH_QUEUE_BYTES: u64 = 1_514_000;

/// The NetworkChaos of traffic fault `id`.
pub fn name(shaping: Shaping, id: &str) -> String {
    format!("faultline-{}-{id}", shaping.action())
}

/// The NetworkChaos that shapes what the pods labelled `<id>-a` and `<id>-b` in `namespace` send each other.
pub fn network_chaos(
    id: &str,
    namespace: &str,
    direction: PartitionDirection,
    shaping: Shaping,
) -> Result<DynamicObject, TargetError> {
    let side = |s: &str| {
        json!({
            "namespaces": [namespace],
            "labelSelectors": {PARTITION_LABEL: format!("{id}-{s}")}
        })
    };
    let (field, parameters) = shaping.parameters();
    let mut spec = json!({
        "action": shaping.action(),
        "mode": "all",
        "selector": side("a"),
        "direction": chaos_mesh::direction(direction),
        "target": {"mode": "all", "selector": side("b")}
    });
    spec[field] = parameters;
    let object = json!({
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "NetworkChaos",
        "metadata": {"name": name(shaping, id), "labels": {OWNER_LABEL: "faultline"}},
        "spec": spec
    });
    serde_json::from_value(object).map_err(|e| TargetError::Fault(format!("bad NetworkChaos: {e}")))
}

/// Refuses the fault before anything is touched when Chaos Mesh is not installed (or nobody may tell).
pub async fn require_chaos_mesh(target: &KubeTarget, shaping: Shaping) -> Result<(), TargetError> {
    match chaos_mesh::crd_installed(target).await? {
        Some(true) => Ok(()),
        Some(false) => Err(TargetError::Fault(format!(
            "{} on Kubernetes needs Chaos Mesh (its NetworkChaos `{}` action puts {} in the pods' network \
             namespaces), and the cluster has no CRD {}: install Chaos Mesh, or run it on the local stack",
            shaping.fault_name(),
            shaping.action(),
            shaping.mechanism(),
            chaos_mesh::CRD
        ))),
        None => Err(TargetError::Fault(format!(
            "{} on Kubernetes needs Chaos Mesh, and reading CRD {} is forbidden, so whether it is installed is \
             unknown: allow faultline to read customresourcedefinitions, or run it on the local stack",
            shaping.fault_name(),
            chaos_mesh::CRD
        ))),
    }
}

/// Labels both sides, creates the NetworkChaos and waits until Chaos Mesh reports it injected into every pod
/// (the fault instant). A fault that does not take effect is reverted before the error returns.
pub async fn apply(
    target: &KubeTarget,
    journal: &Journal,
    id: &str,
    (a, b): (&SidePods, &SidePods),
    direction: PartitionDirection,
    shaping: Shaping,
) -> Result<ActiveFault, TargetError> {
    if a.names.is_empty() || b.names.is_empty() {
        return Err(TargetError::Fault(format!(
            "{}: a side without pods (side A [{}], side B [{}]): nothing to shape between",
            shaping.words(),
            a.names.join(", "),
            b.names.join(", ")
        )));
    }
    require_chaos_mesh(target, shaping).await?;
    let ns = target.namespace.clone();
    let chaos = name(shaping, id);
    let mut steps = vec![RevertStep::KubeDeleteNetworkChaos {
        namespace: ns.clone(),
        name: chaos.clone(),
    }];
    steps.extend(
        a.names
            .iter()
            .chain(&b.names)
            .map(|p| RevertStep::KubeUnlabelPod {
                namespace: ns.clone(),
                pod: p.clone(),
                label: PARTITION_LABEL.to_string(),
            }),
    );
    let pods = format!("[{}] | [{}]", a.names.join(", "), b.names.join(", "));
    let mechanism = format!(
        "Chaos Mesh NetworkChaos {chaos} (action {}: {} in each sending pod, direction {})",
        shaping.action(),
        shaping.mechanism(),
        chaos_mesh::direction(direction)
    );
    let description = format!("{} by {mechanism}: {pods}", shaping.words());
    let entry = journal_before_applying(journal, shaping.fault_name(), &description, steps)?;
    let requested_at = Instant::now();
    let labelled = async {
        label_sides(target, id, &a.names, &b.names).await?;
        let object = network_chaos(id, &ns, direction, shaping)?;
        chaos_mesh::inject(target, object).await
    };
    match labelled.await {
        Ok((created, delay)) => Ok(ActiveFault::new(
            entry,
            format!(
                "{} by {mechanism}, injected after {:.1} s: {pods}",
                shaping.words(),
                delay.as_secs_f64()
            ),
            a.names.iter().chain(&b.names).cloned().collect(),
            requested_at,
            created + delay,
        )),
        Err(e) => Err(undo(target, journal, &entry, e).await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_carries_chaos_meshs_parameters() {
        let spec = |s: Shaping| {
            serde_json::to_value(network_chaos("t1", "ns", PartitionDirection::Both, s).unwrap())
                .unwrap()["spec"]
                .clone()
        };
        let delay = spec(Shaping::Delay {
            delay: Duration::from_millis(100),
            jitter: Duration::from_millis(20),
        });
        assert_eq!(delay["action"], "delay");
        assert_eq!(
            delay["delay"],
            json!({"latency": "100ms", "jitter": "20ms", "correlation": "0"})
        );
        assert_eq!(delay["direction"], "both");
        assert_eq!(
            delay["target"]["selector"]["labelSelectors"][PARTITION_LABEL],
            "t1-b"
        );
        let loss = spec(Shaping::Loss { pct: 5 });
        assert_eq!(loss["action"], "loss");
        assert_eq!(loss["loss"], json!({"loss": "5", "correlation": "0"}));
        assert!(loss.get("delay").is_none());
        // 1 mbit/s: 125000 B/s, 10 ms of it is 1250 B, less than two frames
        let bw = spec(Shaping::Bandwidth { rate_kbit: 1000 });
        assert_eq!(bw["action"], "bandwidth");
        assert_eq!(
            bw["bandwidth"],
            json!({"rate": "1000kbit", "limit": 1_514_000, "buffer": 3028})
        );
        let fast = spec(Shaping::Bandwidth { rate_kbit: 100_000 });
        assert_eq!(fast["bandwidth"]["buffer"], 125_000);
    }

    #[test]
    fn sub_millisecond_durations_keep_their_microseconds() {
        assert_eq!(chaos_duration(Duration::from_micros(500)), "500us");
        assert_eq!(chaos_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(chaos_duration(Duration::ZERO), "0ms");
    }

    #[test]
    fn names_say_the_action() {
        assert_eq!(
            name(Shaping::Loss { pct: 5 }, "x1"),
            "faultline-loss-x1".to_string()
        );
        assert_eq!(
            Shaping::Delay {
                delay: Duration::from_millis(100),
                jitter: Duration::ZERO
            }
            .words(),
            "latency 100 ms"
        );
    }
}
