//! process-kill: SIGKILL of every process of one component member (its whole cgroup: Patroni and PostgreSQL
//! with every backend). Reverted by starting the member again.

use std::time::Duration;

use super::journal::Journal;
use super::{journal_before_applying, member_victims, ActiveFault, RevertStep};
use crate::targets::local::{LocalStack, ProcessKind};
use crate::targets::TargetError;

pub fn apply(
    stack: &LocalStack,
    journal: &Journal,
    nodes: &[String],
    process: ProcessKind,
) -> Result<ActiveFault, TargetError> {
    for n in nodes {
        if !stack.members_on(n).contains(&process) {
            return Err(TargetError::Fault(format!(
                "{} does not run on {n}",
                process.name()
            )));
        }
    }
    let steps = nodes
        .iter()
        .map(|n| RevertStep::Restart {
            node: n.clone(),
            process,
        })
        .collect();
    let victims = member_victims(nodes, process);
    let description = format!("SIGKILL {}", victims.join(", "));
    let entry = journal_before_applying(journal, "process-kill", &description, steps)?;
    let requested_at = std::time::Instant::now();
    for n in nodes {
        stack.kill(n, process);
    }
    for n in nodes {
        stack.wait_gone(n, process, Duration::from_secs(3));
    }
    // Effective once cgroup.kill has returned and the processes are gone.
    Ok(ActiveFault::effective_now(
        entry,
        description,
        victims,
        requested_at,
    ))
}
