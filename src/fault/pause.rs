//! process-pause: SIGSTOP of every process of one member; SIGCONT on revert. The member holds its sockets open
//! but answers nothing, like a process stuck in a long GC pause or on a hung disk.

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
        if stack.pids(n, process).is_empty() {
            return Err(TargetError::Fault(format!(
                "{} is not running on {n}",
                process.name()
            )));
        }
    }
    let steps = nodes
        .iter()
        .map(|n| RevertStep::Continue {
            node: n.clone(),
            process,
        })
        .collect();
    let victims = member_victims(nodes, process);
    let description = format!("SIGSTOP {}", victims.join(", "));
    let entry = journal_before_applying(journal, "process-pause", &description, steps)?;
    let requested_at = std::time::Instant::now();
    for n in nodes {
        stack.signal(n, process, libc::SIGSTOP);
    }
    // Effective once SIGSTOP has been sent to every process of every member.
    Ok(ActiveFault::effective_now(
        entry,
        description,
        victims,
        requested_at,
    ))
}
