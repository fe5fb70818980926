//! Runs a drill's steps in order, each a timed phase on the run's clock: `StepStarted`, the action's own phases,
//! `StepFinished` (ok, or the reason it failed or ran past its deadline). The first failed step ends the list:
//! an operator does not re-point clients to a restore that did not happen.

use std::time::Duration;

use super::{ActionRequest, RestoreFacts};
use crate::clock::Stamp;
use crate::events::{EventKind, EventLog};
use crate::fault::journal::Journal;
use crate::scenario::{Action, ComponentKind, RecoveryTarget, Step};
use crate::targets::Target;

/// A restore step as the analysis needs it.
#[derive(Clone, Debug)]
pub struct RestoreRecord {
    pub component: ComponentKind,
    pub started: Stamp,
    pub finished: Stamp,
    /// When the restored primary first accepted a write.
    pub served_at: Option<Stamp>,
    /// When the replaced cluster had stopped.
    pub replaced_at: Option<Stamp>,
    /// The recovery point on the run's clock: the point-in-time target, or the instant a snapshot restore's data
    /// is from; None = the end of the archive.
    pub target: Option<Stamp>,
    /// Whether the target was asked for (a point in time) rather than given by the backup (a snapshot).
    pub point_in_time: bool,
    /// The instant a snapshot restore's data is from (an RDB copy's).
    pub snapshot: Option<Stamp>,
    pub ok: bool,
    pub before: RestoreFacts,
}

#[derive(Clone, Debug, Default)]
pub struct StepsRun {
    /// Every restore step, in the order they ran.
    pub restores: Vec<RestoreRecord>,
    /// Why the steps stopped early.
    pub failed: Option<String>,
}

impl StepsRun {
    /// When the first restore began: the replaced clusters' own failover events count only until then.
    pub fn first_restore_started(&self) -> Option<Stamp> {
        self.restores.iter().map(|r| r.started).min()
    }
}

/// Runs `steps`; `fault_requested` resolves `to: before-fault`. `interrupted` resolves when the run is told to
/// stop: the current step is abandoned (an abandoned restore stays in the journal and is completed by the revert).
pub async fn run_steps<T: Target>(
    target: &T,
    journal: &Journal,
    events: &EventLog,
    steps: &[Step],
    fault_requested: Option<Stamp>,
    interrupted: impl std::future::Future<Output = ()>,
) -> Result<StepsRun, StepsRun> {
    let clock = events.clock();
    let mut run = StepsRun::default();
    tokio::pin!(interrupted);
    for step in steps {
        let label = step.label();
        let started = events.emit(EventKind::StepStarted {
            step: label.clone(),
        });
        let result: Result<Vec<String>, String> = match step {
            Step::Wait(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(*d) => Ok(Vec::new()),
                    _ = &mut interrupted => Err("interrupted".into()),
                }
            }
            Step::Action { action, deadline } => {
                let (request, target_at) = match action {
                    Action::Backup { kind } => (ActionRequest::Backup { kind: *kind }, None),
                    Action::MoveRoles { to } => (ActionRequest::MoveRoles { to: to.clone() }, None),
                    // A snapshot restore's writes are judged against the incident: those acknowledged before it had
                    // to survive (losing them is the snapshot's RPO), those sent after it to the replaced server are
                    // discarded with it.
                    Action::RestoreRedis => (
                        ActionRequest::RestoreRedis,
                        Some(fault_requested.map(|f| clock.wall(f))),
                    ),
                    // Like an RDB copy: Qdrant has no point-in-time restore, the snapshot is the recovery point.
                    Action::RestoreQdrant => {
                        let incident = fault_requested.map(|f| clock.wall(f));
                        (
                            ActionRequest::RestoreQdrant { before: incident },
                            Some(incident),
                        )
                    }
                    Action::RestorePostgres { target: t } => {
                        let at = match t {
                            RecoveryTarget::Latest => None,
                            RecoveryTarget::BeforeFault => match fault_requested {
                                Some(f) => Some(clock.wall(f)),
                                None => {
                                    let why =
                                        "restore to before the fault, but no fault was applied"
                                            .to_string();
                                    finish(events, &label, false, &why);
                                    run.failed = Some(why);
                                    return Err(run);
                                }
                            },
                            RecoveryTarget::Time { at, .. } => Some(*at),
                        };
                        (ActionRequest::RestorePostgres { target: at }, Some(at))
                    }
                };
                // The action's own deadline, plus a margin for the target to report why it gave up.
                let outcome = tokio::select! {
                    r = tokio::time::timeout(*deadline + Duration::from_secs(5), target.run_action(journal, &request, *deadline)) => {
                        r.unwrap_or_else(|_| Err(format!("{label} ran past its deadline of {}", humantime::format_duration(*deadline))))
                    }
                    _ = &mut interrupted => Err("interrupted".into()),
                };
                let finished = clock.now();
                if let Some(target_at) = target_at {
                    let component = match action {
                        Action::RestoreRedis => ComponentKind::Redis,
                        Action::RestoreQdrant => ComponentKind::Qdrant,
                        _ => ComponentKind::Postgres,
                    };
                    let snapshot_point = outcome
                        .as_ref()
                        .ok()
                        .and_then(|o| o.restored_point)
                        .map(|s| std::time::UNIX_EPOCH + Duration::from_secs_f64(s));
                    let served = outcome
                        .as_ref()
                        .ok()
                        .and_then(|o| o.served_at)
                        .map(|i| clock.stamp_of(i));
                    let replaced = outcome
                        .as_ref()
                        .ok()
                        .and_then(|o| o.replaced_at)
                        .map(|i| clock.stamp_of(i));
                    run.restores.push(RestoreRecord {
                        component,
                        point_in_time: matches!(
                            action,
                            Action::RestorePostgres { target: t } if *t != RecoveryTarget::Latest
                        ),
                        started,
                        finished,
                        served_at: served,
                        replaced_at: replaced,
                        target: target_at.and_then(|w| clock.stamp_of_wall(w)),
                        snapshot: snapshot_point.and_then(|w| clock.stamp_of_wall(w)),
                        ok: outcome.is_ok(),
                        before: outcome
                            .as_ref()
                            .map(|o| o.before.clone())
                            .unwrap_or_default(),
                    });
                }
                match outcome {
                    Ok(o) => {
                        for (phase, at) in &o.phases {
                            events.emit_at(
                                clock.stamp_of(*at),
                                EventKind::StepPhase {
                                    step: label.clone(),
                                    phase: phase.clone(),
                                },
                            );
                        }
                        Ok(o.notes)
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(notes) => finish(events, &label, true, &notes.join("; ")),
            Err(why) => {
                finish(events, &label, false, &why);
                run.failed = Some(format!("{label}: {why}"));
                return Err(run);
            }
        }
    }
    Ok(run)
}

fn finish(events: &EventLog, step: &str, ok: bool, detail: &str) {
    events.emit(EventKind::StepFinished {
        step: step.to_string(),
        ok,
        detail: detail.to_string(),
    });
}
