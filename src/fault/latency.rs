//! latency: what the nodes of one group send to the other is delayed by `delay` (each packet uniform in
//! `delay ± jitter`), symmetric or one-way, with the partition's sides. This machine's kernel has no netem, so each
//! receiving node's namespace gets a delay agent (on kernels with netem too: one mechanism, the one measured here;
//! the description says whether netem was there; on Kubernetes, Chaos Mesh's netem: `targets::kube::traffic`)
//! (targets::local::delay_agent) that holds the packets arriving from the other side, which its NFQUEUE rules hand
//! it. Unlike a TCP proxy, this delays connections that were open before the fault too (replication streams, pooled clients). The harness's own
//! traffic is not delayed.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::journal::Journal;
use super::partition::sides_and_rules;
use super::{journal_before_applying, ActiveFault, RevertStep};
use crate::scenario::PartitionDirection;
use crate::targets::local::{delay_agent, netns, LocalStack};
use crate::targets::TargetError;

pub fn apply(
    stack: &LocalStack,
    journal: &Journal,
    side_a: &[String],
    side_b: &[String],
    direction: PartitionDirection,
    delay: Duration,
    jitter: Duration,
) -> Result<ActiveFault, TargetError> {
    let t = stack.topology();
    let (side_b, rules) = sides_and_rules(stack, side_a, side_b, direction)?;
    // Each node holds what arrives from the other side (see `netns::add_delay_rules` for why on arrival), on
    // a queue of its own.
    let rules: Vec<(String, Vec<Ipv4Addr>, u16)> = rules
        .into_iter()
        .filter(|(_, _, arriving)| !arriving.is_empty())
        .map(|(n, _, arriving)| {
            let queue = delay_agent::free_queue(&t.namespace(&n));
            (n, arriving, queue)
        })
        .collect();
    let steps = rules
        .iter()
        .map(|(n, _, queue)| RevertStep::StopDelay {
            node: n.clone(),
            queue: *queue,
        })
        .collect();
    let ms = |d: Duration| format!("{}", d.as_secs_f64() * 1e3);
    let netem = match side_a.first().or(side_b.first()) {
        Some(n) if netns::kernel_has_netem(&stack.topology().namespace(n)) => {
            "netem is on this kernel, not used: the agent runs everywhere, the mechanism measured here"
        }
        _ => "no netem on this kernel",
    };
    let description = format!(
        "latency {} ms{} {} [{}] / [{}] (NFQUEUE delay agent in each receiving node's namespace; {netem})",
        ms(delay),
        if jitter.is_zero() {
            String::new()
        } else {
            format!(" ± {} ms", ms(jitter))
        },
        direction.between(),
        side_a.join(" "),
        side_b.join(" ")
    );
    let exe = delay_agent::faultline_exe().map_err(|e| TargetError::Environment(e.to_string()))?;
    let entry = journal_before_applying(journal, "latency", &description, steps)?;
    let requested_at = std::time::Instant::now();
    for (n, srcs, queue) in &rules {
        let ns = t.namespace(n);
        let log = stack
            .dir
            .root
            .join("nodes")
            .join(n)
            .join(format!("delay-agent-{queue}.log"));
        // The agent first: rules without a bound queue would let the packets pass (queue-bypass), not delay them.
        delay_agent::start(&exe, &ns, *queue, delay, jitter, &log)
            .map_err(|e| TargetError::Fault(format!("cannot start the delay agent on {n}: {e}")))?;
        netns::add_delay_rules(&ns, *queue, srcs)
            .map_err(|e| TargetError::Fault(format!("cannot add the latency rules on {n}: {e}")))?;
    }
    // Effective once every sending node's rules are in.
    Ok(ActiveFault::effective_now(
        entry,
        description,
        side_a.to_vec(),
        requested_at,
    ))
}
