//! The `faults:` entries of a scenario: fault kinds, node selectors, and timing within the observation window.

use std::time::Duration;

use serde::Deserialize;

use super::document::{did_you_mean, Diagnostics};
use super::duration::format_duration;
use super::model::{
    ComponentKind, CorruptionKind, FaultKind, FaultSpec, NodeLossMethod, NodeSelector,
    PartitionDirection, Role, RouterProcess,
};
use super::parse::{component, duration_in, role, HOUR};
use crate::topology::Topology;

const FAULT_KINDS: [&str; 12] = [
    "process-kill",
    "process-pause",
    "partition",
    "loss",
    "bandwidth",
    "latency",
    "node-loss",
    "zone-loss",
    "region-loss",
    "node-drain",
    "corruption",
    "repository-outage",
];
const MAX_FAULTS: usize = 16;

/// One shape for every kind, so that a key used with the wrong kind gets a sentence about that kind.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFault {
    #[schemars(extend("enum" = ["process-kill", "process-pause", "partition", "loss", "bandwidth", "latency", "node-loss", "zone-loss", "region-loss", "node-drain", "corruption", "repository-outage"]))]
    kind: Option<String>,
    component: Option<String>,
    target: Option<RawSelector>,
    at: Option<String>,
    duration: Option<String>,
    side_a: Option<Vec<RawSelector>>,
    side_b: Option<Vec<RawSelector>>,
    direction: Option<String>,
    method: Option<String>,
    how: Option<String>,
    /// `loss` only: the share of the packets between the sides dropped at random, 1 to 99.
    percent: Option<i64>,
    /// `bandwidth` only: the rate the sides may send to each other, e.g. `1mbit`, `500kbit`.
    rate: Option<String>,
    /// `latency` only: the one-way delay added to every packet a side sends to the other, 1ms to 10s.
    delay: Option<String>,
    /// `latency` only: each packet's delay is uniform in `delay` ± `jitter` (at most `delay`; default 0).
    jitter: Option<String>,
    /// process-kill and process-pause: `haproxy` or `pgbouncer` hits the routing layer's process on the target's
    /// nodes instead of the component's member.
    #[schemars(extend("enum" = ["member", "haproxy", "pgbouncer"]))]
    process: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawSelector {
    node: Option<String>,
    role: Option<String>,
    zone: Option<String>,
    zone_of: Option<RawRoleRef>,
    region: Option<String>,
    region_of: Option<RawRoleRef>,
    component: Option<String>,
}

/// The role inside `zone_of` / `region_of`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawRoleRef {
    role: Option<String>,
    component: Option<String>,
}

/// What every fault is checked against.
pub(super) struct FaultContext<'t> {
    /// The scenario's component (postgres when the scenario's own is invalid, to keep checking the rest).
    pub component: ComponentKind,
    pub topology: Option<&'t Topology>,
    pub observe: Option<Duration>,
}

pub(super) fn fault_list(
    d: &mut Diagnostics<'_>,
    raw: &[RawFault],
    ctx: &FaultContext<'_>,
) -> Option<Vec<FaultSpec>> {
    if raw.is_empty() {
        d.at(
            "faults",
            "`faults` is empty; list at least one fault, e.g. `- kind: process-kill` with `target: {role: primary}`",
        );
        return None;
    }
    if raw.len() > MAX_FAULTS {
        d.at(
            &format!("faults[{MAX_FAULTS}]"),
            format!(
                "a scenario has at most {MAX_FAULTS} faults; this one has {}",
                raw.len()
            ),
        );
    }
    let faults: Vec<Option<FaultSpec>> = raw
        .iter()
        .enumerate()
        .map(|(i, f)| fault(d, i, f, ctx))
        .collect();
    faults.into_iter().collect()
}

fn fault(
    d: &mut Diagnostics<'_>,
    index: usize,
    raw: &RawFault,
    ctx: &FaultContext<'_>,
) -> Option<FaultSpec> {
    let path = format!("faults[{index}]");
    let n = index + 1;
    let kind = match raw.kind.as_deref() {
        None => {
            d.at(
                &path,
                format!(
                    "fault {n} has no `kind`; known kinds: {}",
                    FAULT_KINDS.join(", ")
                ),
            );
            None
        }
        Some(k) if FAULT_KINDS.contains(&k) => Some(k),
        Some(k) => {
            let hint = did_you_mean(k, &FAULT_KINDS)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            d.at(
                &format!("{path}.kind"),
                format!(
                    "unknown fault kind `{k}`{hint}; known kinds: {}",
                    FAULT_KINDS.join(", ")
                ),
            );
            None
        }
    };
    let label = match kind {
        Some(k) => format!("fault {n} ({k})"),
        None => format!("fault {n}"),
    };

    let timing = fault_timing(d, &path, &label, raw, ctx.observe);
    let kind = kind.and_then(|k| fault_kind(d, &path, &label, k, raw, ctx));
    let (at, duration) = timing?;
    Some(FaultSpec {
        kind: kind?,
        at,
        duration,
    })
}

/// `at` and `duration`, checked against the observation window.
fn fault_timing(
    d: &mut Diagnostics<'_>,
    path: &str,
    label: &str,
    raw: &RawFault,
    observe: Option<Duration>,
) -> Option<(Duration, Option<Duration>)> {
    let at_path = format!("{path}.at");
    let duration_path = format!("{path}.duration");
    let at = match &raw.at {
        None => Some(Duration::ZERO),
        Some(t) => duration_in(
            d,
            t,
            &at_path,
            &format!("{label} at"),
            Duration::ZERO,
            24 * HOUR,
        ),
    };
    let duration = match &raw.duration {
        None => Some(None),
        Some(t) => duration_in(
            d,
            t,
            &duration_path,
            &format!("{label} duration"),
            Duration::from_millis(1),
            24 * HOUR,
        )
        .map(Some),
    };
    let (at, duration) = (at?, duration?);
    if let Some(observe) = observe {
        if at >= observe {
            d.at(
                &at_path,
                format!(
                    "{label} starts at {}, which is not before the end of the observation window (observe: {})",
                    format_duration(at),
                    format_duration(observe)
                ),
            );
            return None;
        }
        if let Some(length) = duration.filter(|l| at + *l > observe) {
            d.at(
                &duration_path,
                format!(
                    "{label} ends at {} (at {} + duration {}), after the observation window ends (observe: {})",
                    format_duration(at + length),
                    format_duration(at),
                    format_duration(length),
                    format_duration(observe)
                ),
            );
            return None;
        }
    }
    Some((at, duration))
}

fn fault_kind(
    d: &mut Diagnostics<'_>,
    path: &str,
    label: &str,
    kind: &str,
    raw: &RawFault,
    ctx: &FaultContext<'_>,
) -> Option<FaultKind> {
    let is_process = matches!(kind, "process-kill" | "process-pause");
    let is_partition = matches!(kind, "partition" | "loss" | "bandwidth" | "latency");

    let mut misplaced = |present: bool, key: &str, why: &str| {
        if present {
            d.at_key(
                &format!("{path}.{key}"),
                format!("{label} does not take `{key}`; {why}"),
            );
        }
    };
    if !is_process {
        misplaced(
            raw.component.is_some(),
            "component",
            "`component` only applies to process-kill and process-pause (for a role target, put it inside the \
             target: `{role: primary, component: redis}`)",
        );
    }
    if is_partition {
        misplaced(
            raw.target.is_some(),
            "target",
            "a partition takes `side_a` (and optionally `side_b`) instead",
        );
    } else {
        let why = "only a partition or a loss takes side_a, side_b and direction";
        misplaced(raw.side_a.is_some(), "side_a", why);
        misplaced(raw.side_b.is_some(), "side_b", why);
        misplaced(raw.direction.is_some(), "direction", why);
    }
    if !matches!(kind, "node-loss" | "zone-loss" | "region-loss") {
        misplaced(
            raw.method.is_some(),
            "method",
            "only node-loss, zone-loss and region-loss take a method (stop, pause or disconnect)",
        );
    }

    if !is_process {
        misplaced(
            raw.process.is_some(),
            "process",
            "only process-kill and process-pause take `process` (member, haproxy or pgbouncer)",
        );
    }
    if kind != "bandwidth" {
        misplaced(
            raw.rate.is_some(),
            "rate",
            "only a bandwidth fault takes `rate` (e.g. `1mbit`)",
        );
    }
    if kind != "latency" {
        let why = "only a latency fault takes `delay` and `jitter` (e.g. `delay: 100ms`)";
        misplaced(raw.delay.is_some(), "delay", why);
        misplaced(raw.jitter.is_some(), "jitter", why);
    }
    if kind != "loss" {
        misplaced(
            raw.percent.is_some(),
            "percent",
            "only a loss takes `percent` (a partition drops everything)",
        );
    }
    if kind != "corruption" {
        misplaced(
            raw.how.is_some(),
            "how",
            "only a corruption takes `how` (update-all or drop-table)",
        );
    }

    let fault_component = match (&raw.component, is_process) {
        (Some(c), true) => component(d, c, &format!("{path}.component")),
        _ => Some(ctx.component),
    };
    let default_component = fault_component.unwrap_or(ctx.component);

    if kind == "bandwidth" {
        let key = format!("{path}.rate");
        let rate = d.require(
            raw.rate.as_deref(),
            &key,
            "say how fast the sides may send to each other, e.g. `rate: 1mbit`",
        );
        let rate_kbit = rate.and_then(|r| match parse_rate_kbit(r) {
            Ok(k) => Some(k),
            Err(e) => {
                d.at(&key, e);
                None
            }
        });
        let cut = partition(d, path, label, raw, default_component, ctx.topology, 100)?;
        let FaultKind::Partition {
            side_a,
            side_b,
            direction,
            ..
        } = cut
        else {
            return None;
        };
        return Some(FaultKind::Bandwidth {
            side_a,
            side_b,
            direction,
            rate_kbit: rate_kbit?,
        });
    }
    if kind == "latency" {
        let delays = latency_delays(d, path, label, raw);
        let FaultKind::Partition {
            side_a,
            side_b,
            direction,
            ..
        } = partition(d, path, label, raw, default_component, ctx.topology, 100)?
        else {
            return None;
        };
        let (delay, jitter) = delays?;
        return Some(FaultKind::Latency {
            side_a,
            side_b,
            direction,
            delay,
            jitter,
        });
    }
    if is_partition {
        let loss_pct = if kind == "loss" {
            let key = format!("{path}.percent");
            let pct = d.require(
                raw.percent,
                &key,
                "say which share of the packets is dropped, e.g. `percent: 5`",
            )?;
            u8::try_from(d.int_in_range(pct, &key, "percent", 1, 99)?).ok()?
        } else {
            100
        };
        return partition(
            d,
            path,
            label,
            raw,
            default_component,
            ctx.topology,
            loss_pct,
        );
    }
    if kind == "corruption" {
        return corruption(d, path, label, raw, ctx.component);
    }
    if kind == "repository-outage" {
        if raw.target.is_some() {
            d.at_key(
                &format!("{path}.target"),
                format!("{label} does not take `target`: it hits the topology's backup node"),
            );
            return None;
        }
        return Some(FaultKind::RepositoryOutage);
    }

    let target_path = format!("{path}.target");
    let raw_target = d.require(
        raw.target.as_ref(),
        &target_path,
        "say which node(s) it hits, e.g. `target: {role: primary}`",
    )?;
    let target = selector(
        d,
        raw_target,
        &target_path,
        default_component,
        &format!("{label} targets"),
        ctx.topology,
    )?;

    match kind {
        "process-kill" | "process-pause" => {
            let component = fault_component?;
            let router = match raw.process.as_deref() {
                None | Some("member") => None,
                Some("haproxy") => Some(RouterProcess::Haproxy),
                Some("pgbouncer") => Some(RouterProcess::Pgbouncer),
                Some(other) => {
                    d.at(
                        &format!("{path}.process"),
                        format!("unknown process `{other}`: use member, haproxy or pgbouncer"),
                    );
                    return None;
                }
            };
            if let Some(process) = router {
                // The routers run on the topology's router nodes, whatever the component's members do.
                return Some(FaultKind::RouterProcess {
                    process,
                    pause: kind == "process-pause",
                    target,
                });
            }
            check_member(d, &target_path, label, &target, component, ctx.topology);
            Some(if kind == "process-kill" {
                FaultKind::ProcessKill { component, target }
            } else {
                FaultKind::ProcessPause { component, target }
            })
        }
        "node-drain" => Some(FaultKind::NodeDrain { target }),
        "node-loss" | "zone-loss" | "region-loss" => {
            let method = loss_method(d, path, label, raw);
            let area_ok = match kind {
                "zone-loss" => {
                    matches!(target, NodeSelector::Zone(_) | NodeSelector::ZoneOf { .. })
                }
                "region-loss" => matches!(
                    target,
                    NodeSelector::Region(_) | NodeSelector::RegionOf { .. }
                ),
                _ => true,
            };
            if !area_ok {
                let area = kind.trim_end_matches("-loss");
                d.at(
                    &target_path,
                    format!(
                        "{label} must target a {area}: use `{{{area}: <name>}}` or \
                         `{{{area}_of: {{role: primary}}}}`"
                    ),
                );
                return None;
            }
            let method = method?;
            Some(match kind {
                "node-loss" => FaultKind::NodeLoss { target, method },
                "zone-loss" => FaultKind::ZoneLoss { target, method },
                _ => FaultKind::RegionLoss { target, method },
            })
        }
        _ => None,
    }
}

/// A corruption of the scenario's component's data through its primary.
fn corruption(
    d: &mut Diagnostics<'_>,
    path: &str,
    label: &str,
    raw: &RawFault,
    component: ComponentKind,
) -> Option<FaultKind> {
    if raw.target.is_some() {
        d.at_key(
            &format!("{path}.target"),
            format!("{label} does not take `target`: it is written through the current primary"),
        );
        return None;
    }
    if raw.duration.is_some() {
        d.at_key(
            &format!("{path}.duration"),
            format!("{label} does not take `duration`: a committed corruption is not reverted, it is restored away"),
        );
        return None;
    }
    let how = match raw.how.as_deref() {
        None if component == ComponentKind::Redis => CorruptionKind::Flushall,
        None if component == ComponentKind::Qdrant => CorruptionKind::DeletePoints,
        None => CorruptionKind::default(),
        Some(h) => match CorruptionKind::parse(h) {
            Some(k) => k,
            None => {
                let hint = did_you_mean(h, &CorruptionKind::NAMES)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                d.at(
                    &format!("{path}.how"),
                    format!(
                        "{label} has unknown `how: {h}`{hint}; use {}",
                        CorruptionKind::NAMES.join(", ")
                    ),
                );
                return None;
            }
        },
    };
    let fits = match component {
        ComponentKind::Redis => how == CorruptionKind::Flushall,
        ComponentKind::Qdrant => how == CorruptionKind::DeletePoints,
        _ => !matches!(how, CorruptionKind::Flushall | CorruptionKind::DeletePoints),
    };
    if !fits {
        d.at(
            &format!("{path}.how"),
            format!(
                "{label}: `how: {}` does not apply to {component} (postgres: update-all, drop-table; redis: flushall; qdrant: delete-points)",
                how.name()
            ),
        );
        return None;
    }
    Some(FaultKind::Corruption { component, how })
}

/// `method:` of a node, zone or region loss; `stop` when absent.
fn loss_method(
    d: &mut Diagnostics<'_>,
    path: &str,
    label: &str,
    raw: &RawFault,
) -> Option<NodeLossMethod> {
    match raw.method.as_deref() {
        None => Some(NodeLossMethod::default()),
        Some(m) => NodeLossMethod::parse(m).or_else(|| {
            let hint = did_you_mean(m, &NodeLossMethod::NAMES)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            d.at(
                &format!("{path}.method"),
                format!(
                    "{label} has unknown method `{m}`{hint}; use {}",
                    NodeLossMethod::NAMES.join(", ")
                ),
            );
            None
        }),
    }
}

/// A process fault aimed at a named node that runs no member of the component would do nothing.
fn check_member(
    d: &mut Diagnostics<'_>,
    target_path: &str,
    label: &str,
    target: &NodeSelector,
    component: ComponentKind,
    topology: Option<&Topology>,
) {
    let (NodeSelector::Node(node), Some(topo)) = (target, topology) else {
        return;
    };
    let members = topo.members(component);
    if topo.node(node).is_some() && !members.contains(node) {
        d.at(
            &format!("{target_path}.node"),
            format!(
                "{label} targets node `{node}`, which runs no {component} member (in topology `{}`, {component} \
                 runs on {})",
                topo.name,
                members.join(", ")
            ),
        );
    }
}

fn partition(
    d: &mut Diagnostics<'_>,
    path: &str,
    label: &str,
    raw: &RawFault,
    default_component: ComponentKind,
    topology: Option<&Topology>,
    loss_pct: u8,
) -> Option<FaultKind> {
    let direction = match raw.direction.as_deref() {
        None | Some("both") => Some(PartitionDirection::Both),
        Some("a-to-b") => Some(PartitionDirection::AToB),
        Some("b-to-a") => Some(PartitionDirection::BToA),
        Some(other) => {
            d.at(
                &format!("{path}.direction"),
                format!("unknown partition direction `{other}`; use both, a-to-b or b-to-a"),
            );
            None
        }
    };
    let side_a_path = format!("{path}.side_a");
    let side_a = d
        .require(
            raw.side_a.as_ref(),
            &side_a_path,
            "list the nodes cut off from the rest, e.g. `side_a: [{role: primary}]`",
        )
        .and_then(|side| {
            if side.is_empty() {
                d.at(
                    &side_a_path,
                    format!("{label} has an empty `side_a`; list at least one node selector, e.g. `[{{role: primary}}]`"),
                );
                None
            } else {
                selectors(d, side, &side_a_path, default_component, &format!("{label} side_a includes"), topology)
            }
        });
    let side_b = match &raw.side_b {
        None => Some(Vec::new()),
        Some(side) => selectors(
            d,
            side,
            &format!("{path}.side_b"),
            default_component,
            &format!("{label} side_b includes"),
            topology,
        ),
    };
    if let (Some(a), Some(b)) = (&side_a, &side_b) {
        if let Some(problem) = sides_overlap(a, b, topology) {
            d.at(&format!("{path}.side_b"), format!("{label}: {problem}"));
            return None;
        }
    }
    Some(FaultKind::Partition {
        side_a: side_a?,
        side_b: side_b?,
        direction: direction?,
        loss_pct,
    })
}

/// A latency's `delay` (1 ms to 10 s) and `jitter` (default 0, at most the delay).
fn latency_delays(
    d: &mut Diagnostics<'_>,
    path: &str,
    label: &str,
    raw: &RawFault,
) -> Option<(Duration, Duration)> {
    let key = format!("{path}.delay");
    let delay = d
        .require(
            raw.delay.as_deref(),
            &key,
            "say how long each packet is held, e.g. `delay: 100ms`",
        )
        .and_then(|t| {
            duration_in(
                d,
                t,
                &key,
                &format!("{label} delay"),
                Duration::from_millis(1),
                Duration::from_secs(10),
            )
        });
    let jitter_key = format!("{path}.jitter");
    let jitter = match raw.jitter.as_deref() {
        None => Some(Duration::ZERO),
        Some(t) => duration_in(
            d,
            t,
            &jitter_key,
            &format!("{label} jitter"),
            Duration::ZERO,
            Duration::from_secs(10),
        ),
    };
    let (delay, jitter) = (delay?, jitter?);
    if jitter > delay {
        d.at(
            &jitter_key,
            format!(
                "{label} jitter {} is larger than its delay {}: each packet is held delay ± jitter, which cannot \
                 be less than nothing",
                format_duration(jitter),
                format_duration(delay)
            ),
        );
        return None;
    }
    Some((delay, jitter))
}

/// A rate as tc writes it: `<integer>kbit`, `mbit` or `gbit`, from 8 kbit/s to 10 gbit/s; in kbit/s.
pub(super) fn parse_rate_kbit(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let (num, factor) = if let Some(n) = t.strip_suffix("kbit") {
        (n, 1u64)
    } else if let Some(n) = t.strip_suffix("mbit") {
        (n, 1_000)
    } else if let Some(n) = t.strip_suffix("gbit") {
        (n, 1_000_000)
    } else {
        return Err(format!(
            "rate `{t}` needs a unit: kbit, mbit or gbit (e.g. `1mbit`)"
        ));
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("rate `{t}` is not a whole number of {}", &t[num.len()..]))?;
    let kbit = n * factor;
    if !(8..=10_000_000).contains(&kbit) {
        return Err(format!(
            "rate `{t}` is out of range: allowed 8kbit to 10gbit"
        ));
    }
    Ok(kbit as u32)
}

/// Why two partition sides share a node, when that can be told before the run: the same selector on both sides,
/// or (with the topology) nodes, zones and regions that include a common node. Role selectors are checked when
/// the fault is applied, once the role holders are known.
fn sides_overlap(
    a: &[NodeSelector],
    b: &[NodeSelector],
    topology: Option<&Topology>,
) -> Option<String> {
    if let Some(sel) = a.iter().find(|s| b.contains(s)) {
        return Some(format!(
            "{} is on both sides of the partition; a node cannot be cut off from itself",
            describe(sel)
        ));
    }
    let t = topology?;
    let nodes_of = |sel: &NodeSelector| -> Vec<String> {
        match sel {
            NodeSelector::Node(n) => vec![n.clone()],
            NodeSelector::Zone(z) => t.names_in(z, false),
            NodeSelector::Region(r) => t.names_in(r, true),
            _ => Vec::new(),
        }
    };
    for sa in a {
        for sb in b {
            let in_b = nodes_of(sb);
            if let Some(n) = nodes_of(sa).into_iter().find(|n| in_b.contains(n)) {
                return Some(format!(
                    "node `{n}` is on both sides of the partition (side_a: {}, side_b: {})",
                    describe(sa),
                    describe(sb)
                ));
            }
        }
    }
    None
}

/// `sync-replica` names Patroni's synchronous standby: no other component has one.
fn role_fits(
    d: &mut Diagnostics<'_>,
    role: Role,
    component: ComponentKind,
    path: &str,
) -> Option<()> {
    if role == Role::SyncReplica && component != ComponentKind::Postgres {
        d.at(
            path,
            format!(
                "role `sync-replica` is Patroni's synchronous standby and exists only for postgres (this selector's \
                 component is {component}); use `replica`"
            ),
        );
        return None;
    }
    Some(())
}

fn describe(sel: &NodeSelector) -> String {
    match sel {
        NodeSelector::Node(n) => format!("{{node: {n}}}"),
        NodeSelector::Zone(z) => format!("{{zone: {z}}}"),
        NodeSelector::Region(r) => format!("{{region: {r}}}"),
        NodeSelector::Role { component, role } => {
            format!("{{role: {}, component: {component}}}", role.name())
        }
        NodeSelector::ZoneOf { component, role } => {
            format!(
                "{{zone_of: {{role: {}, component: {component}}}}}",
                role.name()
            )
        }
        NodeSelector::RegionOf { component, role } => {
            format!(
                "{{region_of: {{role: {}, component: {component}}}}}",
                role.name()
            )
        }
    }
}

fn selectors(
    d: &mut Diagnostics<'_>,
    raw: &[RawSelector],
    path: &str,
    default_component: ComponentKind,
    who: &str,
    topology: Option<&Topology>,
) -> Option<Vec<NodeSelector>> {
    let parsed: Vec<Option<NodeSelector>> = raw
        .iter()
        .enumerate()
        .map(|(i, s)| {
            selector(
                d,
                s,
                &format!("{path}[{i}]"),
                default_component,
                who,
                topology,
            )
        })
        .collect();
    parsed.into_iter().collect()
}

/// One of `{node: n1}`, `{role: primary}` (optionally with `component`), `{zone: z1}`, `{zone_of: {role: ...}}`,
/// `{region: r1}`, `{region_of: {role: ...}}`.
/// `who` starts the sentence for names missing from the topology, e.g. "fault 1 (process-kill) targets".
fn selector(
    d: &mut Diagnostics<'_>,
    raw: &RawSelector,
    path: &str,
    default_component: ComponentKind,
    who: &str,
    topology: Option<&Topology>,
) -> Option<NodeSelector> {
    let forms: Vec<&str> = [
        ("node", raw.node.is_some()),
        ("role", raw.role.is_some()),
        ("zone", raw.zone.is_some()),
        ("zone_of", raw.zone_of.is_some()),
        ("region", raw.region.is_some()),
        ("region_of", raw.region_of.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, present)| present.then_some(key))
    .collect();
    match forms.as_slice() {
        [] => {
            d.at(
                path,
                "a node selector needs one of `node`, `role`, `zone`, `zone_of`, `region` or `region_of`, e.g. \
                 `{role: primary}`",
            );
            return None;
        }
        [_] => {}
        [first, second, ..] => {
            d.at_key(
                &format!("{path}.{second}"),
                format!(
                    "a node selector takes exactly one of node, role, zone, zone_of, region or region_of; this one \
                     has both `{first}` and `{second}`"
                ),
            );
            return None;
        }
    }
    if raw.component.is_some() && raw.role.is_none() {
        d.at_key(
            &format!("{path}.component"),
            "`component` in a node selector only goes with `role` (for zone_of or region_of, put it inside: \
             `{zone_of: {role: primary, component: redis}}`)",
        );
        return None;
    }
    let component_at = |d: &mut Diagnostics<'_>, value: &Option<String>, p: String| match value {
        None => Some(default_component),
        Some(c) => component(d, c, &p),
    };

    if let Some(node) = &raw.node {
        if let Some(topo) = topology.filter(|t| t.node(node).is_none()) {
            let names: Vec<&str> = topo.nodes.iter().map(|n| n.name.as_str()).collect();
            d.at(
                &format!("{path}.node"),
                format!(
                    "{who} node `{node}`, which is not in topology `{}` (nodes: {})",
                    topo.name,
                    names.join(", ")
                ),
            );
            return None;
        }
        return Some(NodeSelector::Node(node.clone()));
    }
    for (key, value, is_region) in [("zone", &raw.zone, false), ("region", &raw.region, true)] {
        let Some(area) = value else { continue };
        if let Some(topo) = topology.filter(|t| t.names_in(area, is_region).is_empty()) {
            let known = if is_region {
                topo.regions()
            } else {
                topo.zones()
            };
            d.at(
                &format!("{path}.{key}"),
                format!(
                    "{who} {key} `{area}`, which is not in topology `{}` ({key}s: {})",
                    topo.name,
                    known.join(", ")
                ),
            );
            return None;
        }
        return Some(if is_region {
            NodeSelector::Region(area.clone())
        } else {
            NodeSelector::Zone(area.clone())
        });
    }
    if let Some(text) = &raw.role {
        let role = role(d, text, &format!("{path}.role"));
        let component = component_at(d, &raw.component, format!("{path}.component"));
        let (component, role) = (component?, role?);
        role_fits(d, role, component, &format!("{path}.role"))?;
        return Some(NodeSelector::Role { component, role });
    }
    let (key, role_ref) = match (&raw.zone_of, &raw.region_of) {
        (Some(z), _) => ("zone_of", z),
        (None, Some(r)) => ("region_of", r),
        (None, None) => return None,
    };
    let ref_path = format!("{path}.{key}");
    let role = d
        .require(
            role_ref.role.as_ref(),
            &format!("{ref_path}.role"),
            &format!("e.g. `{{{key}: {{role: primary}}}}`"),
        )
        .and_then(|r| role(d, r, &format!("{ref_path}.role")));
    let component = component_at(d, &role_ref.component, format!("{ref_path}.component"));
    let (component, role) = (component?, role?);
    role_fits(d, role, component, &format!("{ref_path}.role"))?;
    Some(if key == "zone_of" {
        NodeSelector::ZoneOf { component, role }
    } else {
        NodeSelector::RegionOf { component, role }
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::scenario::parse::tests::{err, err_with, path, topo, with_faults};
    use crate::scenario::parse_scenario;
    use crate::scenario::Role;
    use crate::topology::parse_topology;

    #[test]
    fn process_fault_role_defaults_to_the_fault_component() {
        let text = with_faults(
            "  - kind: process-kill\n    component: redis\n    target: {role: primary}\n",
        );
        let s = parse_scenario(&text, path(), None).unwrap();
        assert_eq!(
            s.faults[0].kind,
            FaultKind::ProcessKill {
                component: ComponentKind::Redis,
                target: NodeSelector::Role {
                    component: ComponentKind::Redis,
                    role: Role::Primary
                }
            }
        );
    }

    #[test]
    fn sync_replica_is_a_postgres_role() {
        let s = parse_scenario(
            &with_faults("  - kind: process-kill\n    target: {role: sync-replica}\n"),
            path(),
            None,
        )
        .unwrap();
        assert_eq!(
            s.faults[0].kind,
            FaultKind::ProcessKill {
                component: ComponentKind::Postgres,
                target: NodeSelector::Role {
                    component: ComponentKind::Postgres,
                    role: Role::SyncReplica
                }
            }
        );
        let e = err(&with_faults(
            "  - kind: process-kill\n    component: redis\n    target: {role: sync-replica}\n",
        ));
        assert!(e.contains("exists only for postgres"), "{e}");
    }

    #[test]
    fn rates_are_tc_rates_in_kbit() {
        assert_eq!(parse_rate_kbit("1mbit"), Ok(1000));
        assert_eq!(parse_rate_kbit("500kbit"), Ok(500));
        assert_eq!(parse_rate_kbit("2gbit"), Ok(2_000_000));
        assert!(parse_rate_kbit("1mb").unwrap_err().contains("needs a unit"));
        assert!(parse_rate_kbit("1.5mbit")
            .unwrap_err()
            .contains("whole number"));
        assert!(parse_rate_kbit("4kbit")
            .unwrap_err()
            .contains("out of range"));
        assert!(parse_rate_kbit("20gbit")
            .unwrap_err()
            .contains("out of range"));
    }

    #[test]
    fn latency_takes_a_delay_of_1ms_to_10s_and_a_jitter_no_larger() {
        let s = parse_scenario(
            &with_faults(
                "  - kind: latency\n    delay: 100ms\n    jitter: 20ms\n    side_a: [{zone: z1}]\n    direction: a-to-b\n",
            ),
            path(),
            Some(&topo()),
        )
        .unwrap();
        assert_eq!(
            s.faults[0].kind,
            FaultKind::Latency {
                side_a: vec![NodeSelector::Zone("z1".into())],
                side_b: vec![],
                direction: PartitionDirection::AToB,
                delay: Duration::from_millis(100),
                jitter: Duration::from_millis(20),
            }
        );
        assert_eq!(s.faults[0].kind.name(), "latency");
        let e = err(&with_faults(
            "  - kind: latency\n    side_a: [{role: primary}]\n",
        ));
        assert!(e.contains("missing required key `delay`"), "{e}");
        let e = err(&with_faults(
            "  - kind: latency\n    delay: 20s\n    side_a: [{role: primary}]\n",
        ));
        assert!(
            e.contains("delay `20s` is out of range: allowed 1ms to 10s"),
            "{e}"
        );
        let e = err(&with_faults(
            "  - kind: latency\n    delay: 10ms\n    jitter: 11ms\n    side_a: [{role: primary}]\n",
        ));
        assert!(
            e.contains("jitter 11ms is larger than its delay 10ms"),
            "{e}"
        );
        let e = err(&with_faults(
            "  - kind: partition\n    delay: 10ms\n    side_a: [{role: primary}]\n",
        ));
        assert!(e.contains("does not take `delay`"), "{e}");
    }

    /// The defect this guards against: partition sides that share a node were accepted.
    #[test]
    fn partition_sides_that_share_a_node_are_invalid() {
        let e = err(&with_faults(
            "  - kind: partition\n    side_a: [{role: primary}]\n    side_b: [{node: n2}, {role: primary}]\n",
        ));
        assert!(
            e.contains("{role: primary, component: postgres} is on both sides of the partition"),
            "{e}"
        );
        let e = err_with(
            &with_faults(
                "  - kind: partition\n    side_a: [{zone: z2}]\n    side_b: [{node: n2}]\n",
            ),
            Some(&topo()),
        );
        assert!(
            e.contains("node `n2` is on both sides of the partition (side_a: {zone: z2}, side_b: {node: n2})"),
            "{e}"
        );
        let e = err_with(
            &with_faults(
                "  - kind: partition\n    side_a: [{node: n1}]\n    side_b: [{region: r1}]\n",
            ),
            Some(&topo()),
        );
        assert!(e.contains("node `n1` is on both sides"), "{e}");
        // Disjoint sides are fine.
        parse_scenario(
            &with_faults("  - kind: partition\n    side_a: [{zone: z1}]\n    side_b: [{zone: z2}, {node: n3}]\n"),
            path(),
            Some(&topo()),
        )
        .unwrap();
    }

    #[test]
    fn region_loss_takes_a_region_or_the_region_of_a_role_and_a_method() {
        let s = parse_scenario(
            &with_faults(
                "  - {kind: region-loss, target: {region: r1}}\n  - kind: region-loss\n    target: {region_of: \
                 {role: primary, component: redis}}\n    method: disconnect\n  - {kind: node-loss, target: {node: n1}, \
                 method: pause}\n",
            ),
            path(),
            Some(&topo()),
        )
        .unwrap();
        let kinds: Vec<&FaultKind> = s.faults.iter().map(|f| &f.kind).collect();
        assert_eq!(
            kinds,
            [
                &FaultKind::RegionLoss {
                    target: NodeSelector::Region("r1".into()),
                    method: NodeLossMethod::Stop
                },
                &FaultKind::RegionLoss {
                    target: NodeSelector::RegionOf {
                        component: ComponentKind::Redis,
                        role: Role::Primary
                    },
                    method: NodeLossMethod::Disconnect
                },
                &FaultKind::NodeLoss {
                    target: NodeSelector::Node("n1".into()),
                    method: NodeLossMethod::Pause
                },
            ]
        );
    }

    #[test]
    fn region_errors_name_the_known_regions_and_the_selector_forms() {
        let e = err_with(
            &with_faults("  - {kind: region-loss, target: {region: r9}}\n"),
            Some(&topo()),
        );
        assert!(
            e.contains("fault 1 (region-loss) targets region `r9`, which is not in topology")
                && e.contains("(regions: r1)"),
            "{e}"
        );
        let e = err(&with_faults(
            "  - {kind: zone-loss, target: {region_of: {role: primary}}}\n",
        ));
        assert!(e.contains("fault 1 (zone-loss) must target a zone"), "{e}");
        let e = err(&with_faults(
            "  - {kind: node-loss, target: {region: r1, zone: z1}}\n",
        ));
        assert!(e.contains("this one has both `zone` and `region`"), "{e}");
        let e = err(&with_faults(
            "  - {kind: partition, side_a: [{role: primary}], method: stop}\n",
        ));
        assert!(
            e.contains("fault 1 (partition) does not take `method`"),
            "{e}"
        );
    }

    #[test]
    fn too_many_faults() {
        let many = "  - {kind: process-kill, target: {role: primary}}\n".repeat(17);
        let e = err(&with_faults(&many));
        assert!(e.contains("at most 16 faults; this one has 17"), "{e}");
    }

    #[test]
    fn selector_forms_are_exclusive() {
        let e = err(&with_faults(
            "  - kind: node-loss\n    target: {node: n1, role: primary}\n",
        ));
        assert!(
            e.contains("s.yaml:6:24: a node selector takes exactly one of"),
            "{e}"
        );
        let e = err(&with_faults("  - kind: node-loss\n    target: {}\n"));
        assert!(
            e.contains("s.yaml:6:13: a node selector needs one of"),
            "{e}"
        );
        let e = err(&with_faults(
            "  - kind: node-loss\n    target: {zone: z1, component: redis}\n",
        ));
        assert!(e.contains("only goes with `role`"), "{e}");
        let e = err(&with_faults(
            "  - kind: node-loss\n    target: {zone_of: {component: redis}}\n",
        ));
        assert!(e.contains("missing required key `role`"), "{e}");
        let e = err(&with_faults("  - kind: node-loss\n    target: primary\n"));
        assert!(e.contains("s.yaml:6:13: faults[0].target: invalid type: string \"primary\", expected a mapping"), "{e}");
    }

    #[test]
    fn names_are_checked_against_the_topology() {
        let t = topo();
        let e = err_with(
            &with_faults("  - kind: process-kill\n    target: {node: n9}\n"),
            Some(&t),
        );
        assert!(
            e.contains("s.yaml:6:20: fault 1 (process-kill) targets node `n9`, which is not in topology `three-node` (nodes: n1, n2, n3)"),
            "{e}"
        );
        let e = err_with(
            &with_faults("  - kind: zone-loss\n    target: {zone: z9}\n"),
            Some(&t),
        );
        assert!(
            e.contains(
                "targets zone `z9`, which is not in topology `three-node` (zones: z1, z2, z3)"
            ),
            "{e}"
        );
        let e = err_with(
            &with_faults(
                "  - kind: partition\n    side_a: [{node: n1}]\n    side_b: [{node: n7}]\n",
            ),
            Some(&t),
        );
        assert!(
            e.contains("fault 1 (partition) side_b includes node `n7`"),
            "{e}"
        );
        // Without a topology the names cannot be checked and are accepted.
        assert!(parse_scenario(
            &with_faults("  - kind: process-kill\n    target: {node: n9}\n"),
            path(),
            None
        )
        .is_ok());
    }

    #[test]
    fn process_faults_must_hit_a_member() {
        let text = "name: t\nnodes:\n  - {name: n1, zone: z1, region: r1}\n  - {name: n2, zone: z2, region: r1}\n  - {name: n3, zone: z3, region: r1}\n  - {name: n4, zone: z3, region: r1}\n";
        let t = parse_topology(text, Path::new("t.yaml")).unwrap();
        let e = err_with(
            &with_faults("  - kind: process-kill\n    target: {node: n4}\n"),
            Some(&t),
        );
        assert!(e.contains("runs no postgres member"), "{e}");
    }

    #[test]
    fn zone_loss_needs_a_zone_target() {
        let e = err(&with_faults(
            "  - kind: zone-loss\n    target: {role: primary}\n",
        ));
        assert!(
            e.contains("s.yaml:6:13: fault 1 (zone-loss) must target a zone"),
            "{e}"
        );
    }

    #[test]
    fn keys_that_do_not_fit_the_kind() {
        let e = err(&with_faults("  - kind: partition\n    component: redis\n    target: {role: primary}\n    side_a: [{role: primary}]\n"));
        assert!(
            e.contains("s.yaml:6:5: fault 1 (partition) does not take `component`"),
            "{e}"
        );
        assert!(
            e.contains("s.yaml:7:5: fault 1 (partition) does not take `target`"),
            "{e}"
        );
        let e = err(&with_faults(
            "  - kind: node-loss\n    target: {node: n1}\n    direction: both\n",
        ));
        assert!(
            e.contains("s.yaml:7:5: fault 1 (node-loss) does not take `direction`"),
            "{e}"
        );
        let e = err(&with_faults("  - kind: node-loss\n"));
        assert!(
            e.contains("s.yaml:5:5: missing required key `target`"),
            "{e}"
        );
        let e = err(&with_faults("  - kind: partition\n    side_a: []\n"));
        assert!(e.contains("empty `side_a`"), "{e}");
        let e = err(&with_faults(
            "  - kind: partition\n    side_a: [{role: primary}]\n    direction: sideways\n",
        ));
        assert!(e.contains("unknown partition direction `sideways`"), "{e}");
    }

    #[test]
    fn unknown_fault_kind_lists_the_known_ones() {
        let e = err(&with_faults(
            "  - kind: process-kil\n    target: {role: primary}\n",
        ));
        assert!(
            e.contains("s.yaml:5:11: unknown fault kind `process-kil` (did you mean `process-kill`?); known kinds: process-kill, process-pause, partition, loss, bandwidth, latency, node-loss, zone-loss, region-loss, node-drain"),
            "{e}"
        );
        let e = err(&with_faults("  - target: {role: primary}\n"));
        assert!(e.contains("fault 1 has no `kind`"), "{e}");
    }

    #[test]
    fn fault_timing_must_fit_the_observation_window() {
        let e = err(&with_faults(
            "  - kind: process-kill\n    target: {role: primary}\n    at: 30s\n",
        ));
        assert!(e.contains("s.yaml:7:9: fault 1 (process-kill) starts at 30s, which is not before the end of the observation window (observe: 30s)"), "{e}");
        let e = err(&with_faults(
            "  - kind: process-kill\n    target: {role: primary}\n    at: 10s\n    duration: 25s\n",
        ));
        assert!(
            e.contains("s.yaml:8:15: fault 1 (process-kill) ends at 35s (at 10s + duration 25s)"),
            "{e}"
        );
        let e = err(&with_faults(
            "  - kind: process-kill\n    target: {role: primary}\n    duration: 0s\n",
        ));
        assert!(e.contains("duration `0s` is out of range"), "{e}");
        let ok = with_faults(
            "  - kind: process-kill\n    target: {role: primary}\n    at: 10s\n    duration: 20s\n",
        );
        assert!(parse_scenario(&ok, path(), None).is_ok());
    }
}
