//! node-loss and zone-loss: the node's link goes down first (no FIN or RST leaves it, as when a machine dies),
//! then every process of the node is killed. Reverted by bringing the link up and starting every member again.

use std::time::Duration;

use super::journal::Journal;
use super::{journal_before_applying, ActiveFault, RevertStep};
use crate::target::local::{netns, LocalStack};
use crate::target::TargetError;

pub fn apply(
    stack: &LocalStack,
    journal: &Journal,
    name: &str,
    nodes: &[String],
) -> Result<ActiveFault, TargetError> {
    let mut steps = Vec::new();
    for n in nodes {
        steps.push(RevertStep::LinkUp { node: n.clone() });
    }
    for n in nodes {
        for p in stack.members_on(n) {
            steps.push(RevertStep::Restart {
                node: n.clone(),
                process: p,
            });
        }
    }
    let description = format!(
        "{name}: link down and every process killed on {}",
        nodes.join(", ")
    );
    let entry = journal_before_applying(journal, name, &description, steps)?;
    let applied_at = std::time::Instant::now();
    for n in nodes {
        netns::set_link(stack.topology(), n, false)
            .map_err(|e| TargetError::Fault(format!("cannot take the link of {n} down: {e}")))?;
    }
    for n in nodes {
        for p in stack.members_on(n) {
            stack.kill(n, p);
        }
    }
    for n in nodes {
        for p in stack.members_on(n) {
            stack.wait_gone(n, p, Duration::from_secs(3));
        }
    }
    Ok(ActiveFault::new(
        entry,
        description,
        nodes.to_vec(),
        applied_at,
    ))
}
