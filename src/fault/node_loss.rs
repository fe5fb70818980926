//! node-loss, zone-loss and region-loss on the local stack, by method:
//! - stop: the node's link goes down first (no FIN or RST leaves it, as when a machine dies), then every process
//!   of the node is killed; reverted by bringing the link up and starting every member again.
//! - pause: every member's cgroup is frozen (what `docker pause` does to a kind node); reverted by thawing.
//! - disconnect: only the link goes down; the processes keep running; reverted by bringing the link up.
//! - destroy: as stop, then every member's data directory on the nodes is removed (and the backup store, when the
//!   backup node is among them); the nodes are recorded as lost, so health, endpoints and restores follow the
//!   surviving layout. Reverted by rebuilding the nodes empty into the clusters that run then
//!   (`RevertStep::RebuildLostNodes`). Logs stay, as evidence.

use std::time::Duration;

use super::journal::Journal;
use super::{journal_before_applying, ActiveFault, RevertStep};
use crate::scenario::NodeLossMethod;
use crate::targets::local::{netns, process, LocalStack};
use crate::targets::TargetError;

pub fn apply(
    stack: &LocalStack,
    journal: &Journal,
    name: &str,
    nodes: &[String],
    method: NodeLossMethod,
) -> Result<ActiveFault, TargetError> {
    let members = |n: &String| {
        let n = n.clone();
        stack
            .members_on(&n)
            .into_iter()
            .map(move |p| (n.clone(), p))
    };
    let link_down = method != NodeLossMethod::Pause;
    let mut steps: Vec<RevertStep> = Vec::new();
    if method == NodeLossMethod::Destroy {
        steps.push(RevertStep::RebuildLostNodes {
            nodes: nodes.to_vec(),
        });
    } else if link_down {
        steps.extend(nodes.iter().map(|n| RevertStep::LinkUp { node: n.clone() }));
    }
    steps.extend(
        nodes
            .iter()
            .flat_map(members)
            .filter_map(|(node, process)| match method {
                NodeLossMethod::Stop => Some(RevertStep::Restart { node, process }),
                NodeLossMethod::Pause => Some(RevertStep::Thaw { node, process }),
                NodeLossMethod::Disconnect | NodeLossMethod::Destroy => None,
            }),
    );
    let what = match method {
        NodeLossMethod::Stop => "link down and every process killed",
        NodeLossMethod::Pause => "every process frozen (cgroup.freeze), link up",
        NodeLossMethod::Disconnect => "link down, processes left running",
        NodeLossMethod::Destroy => "link down, every process killed, data directories removed",
    };
    let description = format!("{name} ({}): {what} on {}", method.name(), nodes.join(", "));
    let entry = journal_before_applying(journal, name, &description, steps)?;
    let requested_at = std::time::Instant::now();
    if method == NodeLossMethod::Destroy {
        // Recorded before anything is destroyed: from here on the stack is the surviving layout.
        let mut lost = stack.lost_nodes();
        lost.extend(nodes.iter().cloned());
        stack
            .dir
            .save_lost_nodes(&lost)
            .map_err(|e| TargetError::Fault(format!("cannot record the lost nodes: {e}")))?;
    }
    if link_down {
        for n in nodes {
            netns::set_link(stack.topology(), n, false).map_err(|e| {
                TargetError::Fault(format!("cannot take the link of {n} down: {e}"))
            })?;
        }
    }
    match method {
        NodeLossMethod::Stop | NodeLossMethod::Destroy => {
            for (n, p) in nodes.iter().flat_map(members) {
                stack.kill(&n, p);
            }
            for (n, p) in nodes.iter().flat_map(members) {
                stack.wait_gone(&n, p, Duration::from_secs(3));
            }
            if method == NodeLossMethod::Destroy {
                for n in nodes {
                    stack.remove_node_data(n).map_err(TargetError::Fault)?;
                }
            }
        }
        NodeLossMethod::Pause => {
            for (n, p) in nodes.iter().flat_map(members) {
                process::freeze_cgroup(&stack.cgroup(&n, p), true, Duration::from_secs(3))
                    .map_err(|e| {
                        TargetError::Fault(format!("cannot freeze {} on {n}: {e}", p.name()))
                    })?;
            }
        }
        NodeLossMethod::Disconnect => {}
    }
    // Effective once every link is down and every process is gone (stop) or frozen (pause).
    Ok(ActiveFault::effective_now(
        entry,
        description,
        nodes.to_vec(),
        requested_at,
    ))
}
