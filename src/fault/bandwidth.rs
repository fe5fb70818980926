//! bandwidth: what the nodes of one group send to the other is limited to a rate (htb in each node's namespace; this
//! kernel has no netem), symmetric or one-way, with the partition's sides. The harness's own traffic is not limited.

use std::net::Ipv4Addr;

use super::journal::Journal;
use super::partition::sides_and_rules;
use super::{journal_before_applying, ActiveFault, RevertStep};
use crate::scenario::PartitionDirection;
use crate::targets::local::{netns, LocalStack};
use crate::targets::TargetError;

pub fn apply(
    stack: &LocalStack,
    journal: &Journal,
    side_a: &[String],
    side_b: &[String],
    direction: PartitionDirection,
    rate_kbit: u32,
) -> Result<ActiveFault, TargetError> {
    let t = stack.topology();
    let (side_b, rules) = sides_and_rules(stack, side_a, side_b, direction)?;
    // A node limits what it sends (its egress): the partition's "out" addresses.
    let rules: Vec<(String, Vec<Ipv4Addr>)> = rules
        .into_iter()
        .filter(|(_, out, _)| !out.is_empty())
        .map(|(n, out, _)| (n, out))
        .collect();
    let steps = rules
        .iter()
        .map(|(n, _)| RevertStep::DeleteShaping { node: n.clone() })
        .collect();
    let description = format!(
        "bandwidth {rate_kbit} kbit/s {} [{}] / [{}] (htb on each sending node's interface)",
        direction.between(),
        side_a.join(" "),
        side_b.join(" ")
    );
    let entry = journal_before_applying(journal, "bandwidth", &description, steps)?;
    let requested_at = std::time::Instant::now();
    for (n, dsts) in &rules {
        netns::shape_egress(&t.namespace(n), dsts, rate_kbit)
            .map_err(|e| TargetError::Fault(format!("cannot limit the bandwidth on {n}: {e}")))?;
    }
    // Effective once every sending node's shaping is installed.
    Ok(ActiveFault::effective_now(
        entry,
        description,
        side_a.to_vec(),
        requested_at,
    ))
}
