//! The `prepare:` and `recovery:` steps of a drill: operator actions with deadlines, and pauses.

use std::time::Duration;

use serde::Deserialize;

use super::document::{did_you_mean, Diagnostics};
use super::model::{Action, RecoveryTarget, Step};
use super::parse::{duration_in, HOUR};
use crate::backup::BackupType;

const ACTIONS: [&str; 5] = [
    "backup",
    "move-roles",
    "restore-postgres",
    "restore-qdrant",
    "restore-redis",
];
const MAX_STEPS: usize = 32;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    /// An operator action (or `wait:` instead).
    #[schemars(extend("enum" = ["backup", "move-roles", "restore-postgres", "restore-qdrant", "restore-redis"]))]
    action: Option<String>,
    /// A pause between steps, e.g. `10s`.
    wait: Option<String>,
    /// How long the step may take, e.g. `10m`.
    deadline: Option<String>,
    /// backup: `full`, `diff` or `incr`.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// restore-postgres: `latest`, `before-fault` or an RFC 3339 time; move-roles: a region or zone.
    to: Option<String>,
}

pub(super) struct StepContext<'t> {
    /// The scenario's topology, when known: `move-roles` must name one of its regions or zones.
    pub topology: Option<&'t crate::topology::Topology>,
    /// Whether the scenario has any fault (`to: before-fault` needs one).
    pub has_faults: bool,
}

/// Parses one list (`prepare` or `recovery`).
pub(super) fn step_list(
    d: &mut Diagnostics<'_>,
    key: &str,
    raw: &[RawStep],
    ctx: &StepContext,
) -> Option<Vec<Step>> {
    if raw.is_empty() {
        d.at(
            key,
            format!(
                "`{key}` is empty; leave it out or list at least one step, e.g. `- action: backup`"
            ),
        );
        return None;
    }
    if raw.len() > MAX_STEPS {
        d.at(
            &format!("{key}[{MAX_STEPS}]"),
            format!(
                "`{key}` has at most {MAX_STEPS} steps; this one has {}",
                raw.len()
            ),
        );
        return None;
    }
    let steps: Vec<Option<Step>> = raw
        .iter()
        .enumerate()
        .map(|(i, s)| step(d, &format!("{key}[{i}]"), i + 1, key, s, ctx))
        .collect();
    steps.into_iter().collect()
}

fn step(
    d: &mut Diagnostics<'_>,
    path: &str,
    n: usize,
    list: &str,
    raw: &RawStep,
    ctx: &StepContext,
) -> Option<Step> {
    let label = format!("{list} step {n}");
    match (&raw.action, &raw.wait) {
        (Some(_), Some(_)) => {
            d.at(
                path,
                format!("{label} has both `action` and `wait`; a step is one or the other"),
            );
            None
        }
        (None, None) => {
            d.at(
                path,
                format!(
                    "{label} has neither `action` nor `wait`; actions: {}",
                    ACTIONS.join(", ")
                ),
            );
            None
        }
        (None, Some(w)) => {
            for (present, key) in [
                (raw.deadline.is_some(), "deadline"),
                (raw.kind.is_some(), "type"),
                (raw.to.is_some(), "to"),
            ] {
                if present {
                    d.at_key(
                        &format!("{path}.{key}"),
                        format!("{label} is a wait and does not take `{key}`"),
                    );
                    return None;
                }
            }
            duration_in(
                d,
                w,
                &format!("{path}.wait"),
                &format!("{label} wait"),
                Duration::from_millis(1),
                24 * HOUR,
            )
            .map(Step::Wait)
        }
        (Some(a), None) => action(d, path, &label, a, raw, ctx),
    }
}

fn action(
    d: &mut Diagnostics<'_>,
    path: &str,
    label: &str,
    name: &str,
    raw: &RawStep,
    ctx: &StepContext,
) -> Option<Step> {
    if !ACTIONS.contains(&name) {
        let hint = did_you_mean(name, &ACTIONS)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        d.at(
            &format!("{path}.action"),
            format!(
                "{label}: unknown action `{name}`{hint}; known actions: {}",
                ACTIONS.join(", ")
            ),
        );
        return None;
    }
    let label = format!("{label} ({name})");
    let misplaced = |d: &mut Diagnostics<'_>, present: bool, key: &str, why: &str| {
        if present {
            d.at_key(
                &format!("{path}.{key}"),
                format!("{label} does not take `{key}`; {why}"),
            );
        }
        !present
    };
    let default_deadline = match name {
        "backup" | "restore-redis" | "restore-qdrant" => Duration::from_secs(600),
        "move-roles" => Duration::from_secs(120),
        _ => Duration::from_secs(1800),
    };
    let deadline = match &raw.deadline {
        None => Some(default_deadline),
        Some(t) => duration_in(
            d,
            t,
            &format!("{path}.deadline"),
            &format!("{label} deadline"),
            Duration::from_secs(1),
            24 * HOUR,
        ),
    };
    let action = match name {
        "backup" => {
            let ok = misplaced(
                d,
                raw.to.is_some(),
                "to",
                "only restore-postgres takes a recovery target",
            );
            let kind = match raw.kind.as_deref() {
                None | Some("full") => Some(BackupType::Full),
                Some("diff") => Some(BackupType::Diff),
                Some("incr") => Some(BackupType::Incr),
                Some(other) => {
                    d.at(
                        &format!("{path}.type"),
                        format!("{label} has unknown `type: {other}`; use full, diff or incr"),
                    );
                    None
                }
            };
            kind.filter(|_| ok).map(|kind| Action::Backup { kind })
        }
        "move-roles" => {
            let ok = misplaced(
                d,
                raw.kind.is_some(),
                "type",
                "only a backup takes a backup type",
            );
            match raw.to.as_deref().map(str::trim) {
                Some(area) if !area.is_empty() => {
                    let known = ctx
                        .topology
                        .is_none_or(|t| t.nodes.iter().any(|n| n.region == area || n.zone == area));
                    if !known {
                        let t = ctx.topology.expect("checked");
                        let mut areas: Vec<&str> = t
                            .nodes
                            .iter()
                            .flat_map(|n| [n.region.as_str(), n.zone.as_str()])
                            .collect();
                        areas.sort_unstable();
                        areas.dedup();
                        d.at(
                            &format!("{path}.to"),
                            format!(
                                "{label}: `{area}` is no region or zone of topology `{}` ({})",
                                t.name,
                                areas.join(", ")
                            ),
                        );
                    }
                    (ok && known).then(|| Action::MoveRoles {
                        to: area.to_string(),
                    })
                }
                _ => {
                    d.at_key(
                        &format!("{path}.action"),
                        format!(
                            "{label} needs `to:` the region or zone that must hold the PostgreSQL primary and \
                             the Redis master"
                        ),
                    );
                    None
                }
            }
        }
        "restore-redis" => {
            let why = "restore-redis restores the newest RDB copy in the backup store";
            let ok = misplaced(d, raw.kind.is_some(), "type", why)
                & misplaced(d, raw.to.is_some(), "to", why);
            ok.then_some(Action::RestoreRedis)
        }
        "restore-qdrant" => {
            let why = "restore-qdrant restores the newest snapshot set in the backup store (Qdrant has no \
                       point-in-time restore)";
            let ok = misplaced(d, raw.kind.is_some(), "type", why)
                & misplaced(d, raw.to.is_some(), "to", why);
            ok.then_some(Action::RestoreQdrant)
        }
        _ => {
            let ok = misplaced(
                d,
                raw.kind.is_some(),
                "type",
                "only a backup takes a backup type",
            );
            // Any scenario may restore PostgreSQL (a region-loss runbook restores every component); the
            // scenario's own component is judged from its data, another by the restore's own checks.
            let target = recovery_target(d, &format!("{path}.to"), &label, raw.to.as_deref(), ctx);
            target
                .filter(|_| ok)
                .map(|target| Action::RestorePostgres { target })
        }
    };
    Some(Step::Action {
        action: action?,
        deadline: deadline?,
    })
}

fn recovery_target(
    d: &mut Diagnostics<'_>,
    path: &str,
    label: &str,
    raw: Option<&str>,
    ctx: &StepContext,
) -> Option<RecoveryTarget> {
    match raw {
        None | Some("latest") => Some(RecoveryTarget::Latest),
        Some("before-fault") => {
            if ctx.has_faults {
                Some(RecoveryTarget::BeforeFault)
            } else {
                d.at(
                    path,
                    format!("{label} restores to before the fault, but the scenario has no fault"),
                );
                None
            }
        }
        Some(t) => match crate::drill::target_time::parse(t) {
            Ok(at) => Some(RecoveryTarget::Time {
                text: t.to_string(),
                at,
            }),
            Err(why) => {
                d.at(
                    path,
                    format!(
                        "{label}: `to: {t}` is not latest, before-fault or a time: {why} (e.g. \
                         2026-11-30T01:02:03.456+00:00)"
                    ),
                );
                None
            }
        },
    }
}
