//! Dry-run plan on the local stack: which members and nodes each fault of a scenario would hit if it were applied
//! now (role selectors are resolved against the live servers, so the plan reflects the current primary).

use super::resolve;
use crate::scenario::{FaultKind, FaultSpec, NodeLossMethod, NodeSelector};
use crate::targets::{Target, TargetError};

/// One human-readable line per fault, in scenario order.
pub async fn plan<T: Target>(target: &T, faults: &[FaultSpec]) -> Result<Vec<String>, TargetError> {
    let mut lines = Vec::new();
    for f in faults {
        let what = match &f.kind {
            FaultKind::ProcessKill {
                component,
                target: s,
            } => {
                format!(
                    "SIGKILL {component} on {}",
                    nodes(target, std::slice::from_ref(s)).await?
                )
            }
            FaultKind::Bandwidth {
                side_a,
                side_b,
                direction,
                rate_kbit,
            } => {
                let (a, b) = sides(target, side_a, side_b).await?;
                format!("limit traffic to {rate_kbit} kbit/s ({direction:?}) between {a} and {b}")
            }
            FaultKind::Latency {
                side_a,
                side_b,
                direction,
                delay,
                jitter,
            } => {
                let (a, b) = sides(target, side_a, side_b).await?;
                format!(
                    "delay traffic by {} ± {} ({direction:?}) between {a} and {b} (NFQUEUE delay agents)",
                    humantime::format_duration(*delay),
                    humantime::format_duration(*jitter)
                )
            }
            FaultKind::RouterProcess {
                process,
                pause,
                target: s,
            } => format!(
                "{} {} on {}",
                if *pause { "SIGSTOP" } else { "SIGKILL" },
                process.name(),
                nodes(target, std::slice::from_ref(s)).await?
            ),
            FaultKind::ProcessPause {
                component,
                target: s,
            } => {
                format!(
                    "SIGSTOP {component} on {}",
                    nodes(target, std::slice::from_ref(s)).await?
                )
            }
            FaultKind::Partition {
                side_a,
                side_b,
                direction,
                loss_pct,
            } => {
                let (a, b) = sides(target, side_a, side_b).await?;
                let what = if *loss_pct == 100 {
                    "drop traffic".to_string()
                } else {
                    format!("drop {loss_pct}% of the packets")
                };
                format!("{what} ({direction:?}) between {a} and {b}")
            }
            FaultKind::NodeLoss { target: s, method }
            | FaultKind::ZoneLoss { target: s, method }
            | FaultKind::RegionLoss { target: s, method } => {
                let how = match method {
                    NodeLossMethod::Stop => "kill every process and take the link down",
                    NodeLossMethod::Pause => "freeze every process (link stays up)",
                    NodeLossMethod::Disconnect => "take the link down (processes keep running)",
                    NodeLossMethod::Destroy => {
                        "take the link down, kill every process and remove the data directories"
                    }
                };
                format!("{how} on {}", nodes(target, std::slice::from_ref(s)).await?)
            }
            FaultKind::NodeDrain { target: s } => format!(
                "move roles away, then SIGTERM every process on {}",
                nodes(target, std::slice::from_ref(s)).await?
            ),
            FaultKind::RepositoryOutage => {
                "SIGKILL the backup repository's pgbackrest server (WAL archiving and restores fail)".to_string()
            }
            FaultKind::Corruption { component, how } => format!(
                "commit a corruption of the {component} ledger ({}) through the primary",
                how.name()
            ),
        };
        lines.push(format!(
            "at +{}: {}: {what}",
            humantime::format_duration(f.at),
            f.kind.name()
        ));
    }
    Ok(lines)
}

/// The nodes of a network fault's two sides, in words (side B empty: every other node).
async fn sides<T: Target>(
    target: &T,
    side_a: &[NodeSelector],
    side_b: &[NodeSelector],
) -> Result<(String, String), TargetError> {
    let b = if side_b.is_empty() {
        "every other node".to_string()
    } else {
        nodes(target, side_b).await?
    };
    Ok((nodes(target, side_a).await?, b))
}

async fn nodes<T: Target>(target: &T, selectors: &[NodeSelector]) -> Result<String, TargetError> {
    let mut out: Vec<String> = Vec::new();
    for s in selectors {
        for n in resolve(target, s).await? {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    Ok(out.join(", "))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::component::redis::RedisEndpoints;
    use crate::component::{Component, RedisComponent};
    use crate::fault::journal::Journal;
    use crate::fault::{ActiveFault, RevertStep};
    use crate::scenario::{parse_scenario, ComponentKind};
    use crate::topology::{parse_topology, Topology};

    /// A target whose servers agree that the primary of everything is on n2; nothing else is reachable.
    struct Planned(Topology);

    impl Target for Planned {
        fn topology(&self) -> &Topology {
            &self.0
        }
        fn component(&self, _: ComponentKind) -> Box<dyn Component> {
            Box::new(RedisComponent(RedisEndpoints {
                members: Vec::new(),
                sentinels: Vec::new(),
                master_name: "m".into(),
            }))
        }
        async fn role_holder(&self, _: ComponentKind) -> Option<String> {
            Some("n2".into())
        }
        async fn sync_replica(&self, _: ComponentKind) -> Option<String> {
            Some("n3".into())
        }
        async fn wait_healthy(&self, _: Duration) -> Result<String, String> {
            Err("not a stack".into())
        }
        fn fingerprint(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
        async fn apply_fault(
            &self,
            _: &Journal,
            _: &FaultKind,
        ) -> Result<ActiveFault, TargetError> {
            Err(TargetError::Fault("planning only".into()))
        }
        async fn revert(&self, _: &[RevertStep]) -> Result<(), String> {
            Ok(())
        }
        async fn server_log_lines(
            &self,
            _: ComponentKind,
            _: &str,
        ) -> Vec<(std::time::SystemTime, String)> {
            Vec::new()
        }
    }

    #[tokio::test]
    async fn the_plan_resolves_roles_and_zones_to_nodes() {
        let topo_text = std::fs::read_to_string("fixtures/topologies/three-node.yaml").unwrap();
        let topo = parse_topology(&topo_text, Path::new("three-node.yaml")).unwrap();
        let text = "name: s\ncomponent: postgres\nbaseline: 1s\nobserve: 60s\nthresholds: [rto_s <= 1]\nfaults:\n\
            \x20 - {kind: process-kill, target: {role: primary}, at: 5s}\n\
            \x20 - {kind: partition, side_a: [{role: replica}], at: 10s}\n\
            \x20 - {kind: zone-loss, target: {zone: z3}, at: 20s}\n";
        let s = parse_scenario(text, Path::new("s.yaml"), None).unwrap();
        let lines = plan(&Planned(topo), &s.faults).await.unwrap();
        assert_eq!(
            lines,
            [
                "at +5s: process-kill: SIGKILL postgres on n2",
                "at +10s: partition: drop traffic (Both) between n1 and every other node",
                "at +20s: zone-loss: kill every process and take the link down on n3",
            ]
        );
    }
}
