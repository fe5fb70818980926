//! partition and loss: nft drop rules inside the nodes' namespaces between two groups of nodes, symmetric or
//! one-way; a loss drops a share of the packets at random (`numgen random mod 100 < N`; this machine's kernel has no
//! netem). The harness (on the bridge address) still reaches every node, as clients outside would.

use std::net::Ipv4Addr;

use super::journal::Journal;
use super::{journal_before_applying, ActiveFault, RevertStep};
use crate::scenario::PartitionDirection;
use crate::targets::local::{netns, LocalStack};
use crate::targets::TargetError;

/// Per node: (addresses whose outgoing packets are dropped, addresses whose incoming packets are dropped).
pub fn plan_rules(
    a: &[(String, Ipv4Addr)],
    b: &[(String, Ipv4Addr)],
    direction: PartitionDirection,
) -> Vec<(String, Vec<Ipv4Addr>, Vec<Ipv4Addr>)> {
    let addrs = |s: &[(String, Ipv4Addr)]| s.iter().map(|(_, a)| *a).collect::<Vec<_>>();
    let (a_addrs, b_addrs) = (addrs(a), addrs(b));
    let mut rules = Vec::new();
    let (a_out, a_in, b_out, b_in) = match direction {
        PartitionDirection::Both => (true, true, true, true),
        PartitionDirection::AToB => (true, false, false, true),
        PartitionDirection::BToA => (false, true, true, false),
    };
    for (n, _) in a {
        rules.push((
            n.clone(),
            if a_out { b_addrs.clone() } else { vec![] },
            if a_in { b_addrs.clone() } else { vec![] },
        ));
    }
    for (n, _) in b {
        rules.push((
            n.clone(),
            if b_out { a_addrs.clone() } else { vec![] },
            if b_in { a_addrs.clone() } else { vec![] },
        ));
    }
    rules.retain(|(_, o, i)| !o.is_empty() || !i.is_empty());
    rules
}

/// The nodes with their addresses, as `plan_rules` takes them.
pub fn with_addrs(stack: &LocalStack, nodes: &[String]) -> Vec<(String, Ipv4Addr)> {
    nodes.iter().map(|n| (n.clone(), stack.addr(n))).collect()
}

/// Side B as resolved (empty: every node not on side A), checked against side A.
pub fn other_side(
    stack: &LocalStack,
    side_a: &[String],
    side_b: &[String],
) -> Result<Vec<String>, TargetError> {
    let t = stack.topology();
    let side_b: Vec<String> = if side_b.is_empty() {
        t.nodes
            .iter()
            .map(|n| n.name.clone())
            .filter(|n| !side_a.contains(n))
            .collect()
    } else {
        side_b.to_vec()
    };
    if side_a.is_empty() || side_b.is_empty() {
        return Err(TargetError::Fault(
            "a network fault needs nodes on both sides".into(),
        ));
    }
    if let Some(n) = side_a.iter().find(|n| side_b.contains(n)) {
        return Err(TargetError::Fault(format!(
            "node {n} is on both sides of the network fault"
        )));
    }
    Ok(side_b)
}

/// The sides resolved (side B defaulting to every other node) and, per node, the addresses whose packets it
/// sends and receives are affected: what partition, loss, bandwidth and latency all start from.
pub type NodeRules = Vec<(String, Vec<Ipv4Addr>, Vec<Ipv4Addr>)>;

pub fn sides_and_rules(
    stack: &LocalStack,
    side_a: &[String],
    side_b: &[String],
    direction: PartitionDirection,
) -> Result<(Vec<String>, NodeRules), TargetError> {
    let side_b = other_side(stack, side_a, side_b)?;
    let rules = plan_rules(
        &with_addrs(stack, side_a),
        &with_addrs(stack, &side_b),
        direction,
    );
    Ok((side_b, rules))
}

pub fn apply(
    stack: &LocalStack,
    journal: &Journal,
    side_a: &[String],
    side_b: &[String],
    direction: PartitionDirection,
    loss_pct: u8,
) -> Result<ActiveFault, TargetError> {
    let t = stack.topology();
    let (side_b, rules) = sides_and_rules(stack, side_a, side_b, direction)?;
    let steps = rules
        .iter()
        .map(|(n, _, _)| RevertStep::DeleteRules { node: n.clone() })
        .collect();
    let arrow = match direction {
        PartitionDirection::Both => "<-x->",
        PartitionDirection::AToB => "-x->",
        PartitionDirection::BToA => "<-x-",
    };
    let (name, description) = if loss_pct == 100 {
        (
            "partition",
            format!(
                "partition [{}] {arrow} [{}]",
                side_a.join(" "),
                side_b.join(" ")
            ),
        )
    } else {
        (
            "loss",
            format!(
                "loss {loss_pct}% [{}] {arrow} [{}] (nft numgen random drop in each node's namespace)",
                side_a.join(" "),
                side_b.join(" ")
            ),
        )
    };
    let entry = journal_before_applying(journal, name, &description, steps)?;
    let requested_at = std::time::Instant::now();
    for (n, out, inn) in &rules {
        netns::add_drop_rules(&t.namespace(n), out, inn, loss_pct)
            .map_err(|e| TargetError::Fault(format!("cannot add {name} rules on {n}: {e}")))?;
    }
    // Effective once every node's nft rules are committed.
    Ok(ActiveFault::effective_now(
        entry,
        description,
        side_a.to_vec(),
        requested_at,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(names: &[(&str, u8)]) -> Vec<(String, Ipv4Addr)> {
        names
            .iter()
            .map(|(n, o)| (n.to_string(), Ipv4Addr::new(10, 0, 0, *o)))
            .collect()
    }

    #[test]
    fn symmetric_partition_drops_both_ways_on_both_sides() {
        let rules = plan_rules(
            &side(&[("n1", 11)]),
            &side(&[("n2", 12), ("n3", 13)]),
            PartitionDirection::Both,
        );
        assert_eq!(rules.len(), 3);
        assert_eq!(
            rules[0].1,
            vec![Ipv4Addr::new(10, 0, 0, 12), Ipv4Addr::new(10, 0, 0, 13)]
        );
        assert_eq!(rules[0].2, rules[0].1);
        assert_eq!(rules[1].1, vec![Ipv4Addr::new(10, 0, 0, 11)]);
    }

    #[test]
    fn one_way_partition_lets_the_other_direction_through() {
        let rules = plan_rules(
            &side(&[("n1", 11)]),
            &side(&[("n2", 12)]),
            PartitionDirection::AToB,
        );
        // n1 may not send to n2; n2 drops what comes from n1; n2 -> n1 flows.
        assert_eq!(
            rules,
            vec![
                ("n1".to_string(), vec![Ipv4Addr::new(10, 0, 0, 12)], vec![]),
                ("n2".to_string(), vec![], vec![Ipv4Addr::new(10, 0, 0, 11)]),
            ]
        );
    }
}
