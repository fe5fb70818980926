//! Integrity of a drill's restore, judged against the ledger: which acknowledged writes had to survive, which
//! had to be discarded (sent after a point-in-time target), and the checks a restore must pass before service
//! counts as resumed. A restore that "succeeds" with missing data fails the drill.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::clock::Stamp;
use crate::ledger::{LedgerEntry, OpKind, Outcome};

/// What the ledger says about a restore.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RestoredWrites {
    /// Acknowledged writes that had to survive and are missing: acknowledged at or before the recovery point, or
    /// sent after the replaced cluster had stopped (so acknowledged by the restored one).
    pub lost: Vec<u64>,
    /// Acknowledged writes sent after the recovery target and before the replaced cluster stopped, absent as the
    /// target demands.
    pub discarded: u64,
    /// Writes sent after the recovery target to the replaced cluster that are still present: the restore did not
    /// stop at its target.
    pub present_after_target: Vec<u64>,
    /// The recovery point the restore reached: the newest surviving write acknowledged at or before the target
    /// (or the fault), in seconds before it. None without such a write.
    pub recovery_point_gap_s: Option<f64>,
    /// Span of acknowledged time lost (the first lost write to the last, from the last good one before them).
    pub rpo_s: f64,
    /// Lost writes that no recovery point explains: acknowledged before a write that survived was sent, or
    /// acknowledged by the restored cluster. A restore to the end of the archive may lose a tail (its RPO), never
    /// one of these.
    pub holes: Vec<u64>,
}

pub struct RestoreInput<'a> {
    pub writes: &'a [&'a LedgerEntry],
    pub present: &'a BTreeSet<u64>,
    /// The point-in-time target; None = restored to the end of the archive.
    pub target: Option<Stamp>,
    /// The first fault (the incident); the reference instant when there is no target.
    pub fault_at: Option<Stamp>,
    /// When the cluster the restore replaced had stopped: writes sent later reached the restored cluster.
    pub replaced_at: Option<Stamp>,
}

pub fn classify(input: &RestoreInput) -> RestoredWrites {
    let mut out = RestoredWrites::default();
    let acked = || {
        input
            .writes
            .iter()
            .filter(|w| w.op == OpKind::Write && w.outcome == Outcome::Ok)
    };
    let replaced = input.replaced_at;
    let mut must_survive: Vec<&LedgerEntry> = Vec::new();
    for w in acked() {
        let sent = w.sent.unwrap_or(w.scheduled);
        let after_serving = replaced.is_some_and(|s| sent >= s);
        match input.target {
            Some(t) if !after_serving && sent >= t => {
                if input.present.contains(&w.id) {
                    out.present_after_target.push(w.id);
                } else {
                    out.discarded += 1;
                }
            }
            // In flight across the target: the restore may or may not hold it; neither outcome is wrong.
            Some(t) if !after_serving && w.done > t => {}
            _ => must_survive.push(w),
        }
    }
    for w in &must_survive {
        if !input.present.contains(&w.id) {
            out.lost.push(w.id);
        }
    }
    out.lost.sort_unstable();
    out.present_after_target.sort_unstable();
    // Only the replaced cluster's writes date its history: what the restored one acknowledged came later anyway.
    let newest_present_sent = must_survive
        .iter()
        .map(|w| w.sent.unwrap_or(w.scheduled))
        .zip(must_survive.iter())
        .filter(|(sent, w)| input.present.contains(&w.id) && replaced.is_none_or(|s| *sent < s))
        .map(|(sent, _)| sent)
        .max();
    out.holes = must_survive
        .iter()
        .filter(|w| !input.present.contains(&w.id))
        .filter(|w| {
            replaced.is_some_and(|s| w.sent.unwrap_or(w.scheduled) >= s)
                || newest_present_sent.is_some_and(|s| w.done < s)
        })
        .map(|w| w.id)
        .collect();
    out.holes.sort_unstable();
    let reference = input.target.or(input.fault_at);
    if let Some(r) = reference {
        out.recovery_point_gap_s = must_survive
            .iter()
            .filter(|w| w.done <= r && input.present.contains(&w.id))
            .map(|w| w.done)
            .max()
            .map(|d| r.secs_since(d));
    }
    let lost: Vec<&&LedgerEntry> = must_survive
        .iter()
        .filter(|w| !input.present.contains(&w.id))
        .collect();
    if let (Some(first), Some(last)) = (
        lost.iter().map(|w| w.done).min(),
        lost.iter().map(|w| w.done).max(),
    ) {
        let last_good = must_survive
            .iter()
            .filter(|w| input.present.contains(&w.id) && w.done < first)
            .map(|w| w.done)
            .max()
            .unwrap_or(first);
        out.rpo_s = last.secs_since(last_good);
    }
    out
}

/// One integrity check of a restore.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IntegrityCheck {
    pub component: String,
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

/// What the restored PostgreSQL cluster looked like at the end of the trial.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PostgresAfter {
    pub timeline: Option<i64>,
    pub streaming_replicas: Vec<String>,
    pub expected_replicas: usize,
    /// Whether the scenario's corruption is still in the data (None: no corruption in the scenario).
    pub corruption_present: Option<bool>,
    /// Why the facts could not be read, if they could not.
    pub error: Option<String>,
}

fn ids(v: &[u64]) -> String {
    let shown: Vec<String> = v.iter().take(20).map(u64::to_string).collect();
    if v.len() > 20 {
        format!("{} … ({} in all)", shown.join(", "), v.len())
    } else {
        shown.join(", ")
    }
}

/// The checks of a PostgreSQL restore.
pub fn postgres_checks(
    writes: &RestoredWrites,
    has_target: bool,
    timeline_before: Option<i64>,
    after: &PostgresAfter,
) -> Vec<IntegrityCheck> {
    let c = |check: &str, ok: bool, detail: String| IntegrityCheck {
        component: "postgres".into(),
        check: check.into(),
        ok,
        detail,
    };
    let gap = match writes.recovery_point_gap_s {
        Some(g) => format!(
            "the newest surviving write was acknowledged {g:.3} s before the recovery point"
        ),
        None => "no surviving write before the recovery point".into(),
    };
    // To a target, everything acknowledged before it is in the archive and must be back. To the end of the
    // archive, what the archive never received is the RPO (a tail); a write lost before one that survived is not.
    let mut v = vec![if has_target || writes.lost.is_empty() {
        c(
            "acknowledged writes that had to survive are present",
            writes.lost.is_empty(),
            if writes.lost.is_empty() {
                format!("none lost; {gap}")
            } else {
                format!("{} lost: {}", writes.lost.len(), ids(&writes.lost))
            },
        )
    } else {
        c(
            "acknowledged writes up to the archive's end are present",
            writes.holes.is_empty(),
            if writes.holes.is_empty() {
                format!(
                    "{} acknowledged after the archive's end are lost (the RPO: lost_acked_writes, rpo_s); none \
                     before it; {gap}",
                    writes.lost.len()
                )
            } else {
                format!(
                    "{} lost before a write that survived: {}",
                    writes.holes.len(),
                    ids(&writes.holes)
                )
            },
        )
    }];
    if has_target {
        v.push(c(
            "writes sent after the recovery target are absent",
            writes.present_after_target.is_empty(),
            if writes.present_after_target.is_empty() {
                format!(
                    "{} acknowledged write(s) discarded, as the target demands",
                    writes.discarded
                )
            } else {
                format!(
                    "{} still present: the restore did not stop at its target: {}",
                    writes.present_after_target.len(),
                    ids(&writes.present_after_target)
                )
            },
        ));
    }
    if let Some(e) = &after.error {
        v.push(c("restored cluster readable", false, e.clone()));
        return v;
    }
    if let Some(present) = after.corruption_present {
        v.push(c(
            "the corruption is absent",
            !present,
            if present {
                "the corruption is still in the restored data".into()
            } else {
                "no corrupted row and the table is there".into()
            },
        ));
    }
    match (timeline_before, after.timeline) {
        (Some(b), Some(a)) => v.push(c(
            "the restored cluster runs on a new timeline",
            a > b,
            format!("timeline {b} before, {a} after"),
        )),
        (_, a) => v.push(c(
            "the restored cluster runs on a new timeline",
            false,
            format!("timeline before unknown, after {a:?}"),
        )),
    }
    v.push(c(
        "replicas re-created and streaming",
        after.streaming_replicas.len() >= after.expected_replicas,
        format!(
            "{} of {} streaming ({})",
            after.streaming_replicas.len(),
            after.expected_replicas,
            after.streaming_replicas.join(", ")
        ),
    ));
    v
}

/// Everything a trial's restore is judged on.
pub struct RestoreJudgement<'a> {
    pub writes: &'a [&'a LedgerEntry],
    pub present: &'a BTreeSet<u64>,
    pub fault_at: Option<Stamp>,
    pub restore: &'a super::runner::RestoreRecord,
    pub after: Option<&'a PostgresAfter>,
    pub rto_consecutive: u32,
    /// The restore target as a wall-clock instant, and the tools' log lines about the restore.
    pub target_wall: Option<std::time::SystemTime>,
    pub tool_lines: &'a [super::tool_logs::ToolLine],
}

/// Sets a drill's restore metrics and integrity checks on the trial's measurements. Loss and RPO are the
/// restore's: acknowledged writes a point-in-time target removes on purpose are counted as discarded, not lost.
pub fn judge_restore(m: &mut crate::analysis::TrialMeasurements, j: &RestoreJudgement) {
    use crate::scenario::Metric;
    let r = j.restore;
    let mut set = |metric: Metric, v: Option<f64>| {
        m.values.insert(metric, v);
    };
    let restore_s = r
        .served_at
        .filter(|_| r.ok)
        .map(|s| s.secs_since(r.started));
    match r.component {
        crate::scenario::ComponentKind::Redis => set(Metric::RedisRestoreS, restore_s),
        crate::scenario::ComponentKind::Qdrant => set(Metric::QdrantRestoreS, restore_s),
        _ => {
            set(Metric::PgRestoreS, restore_s);
            set(Metric::PitrS, restore_s.filter(|_| r.point_in_time));
        }
    }
    set(
        Metric::RecoverableWindowS,
        r.before.window.map(|(a, b)| b - a),
    );
    set(
        Metric::RtoS,
        j.fault_at
            .and_then(|f| crate::analysis::rto_s_from(j.writes, f, r.started, j.rto_consecutive)),
    );
    let writes = classify(&RestoreInput {
        writes: j.writes,
        present: j.present,
        target: r.target,
        fault_at: j.fault_at,
        replaced_at: r.replaced_at,
    });
    set(Metric::LostAckedWrites, Some(writes.lost.len() as f64));
    // The write classification the report lists agrees: writes the restore had to discard are not lost.
    m.writes.lost = writes.lost.len() as u64;
    let mut lost: Vec<&&LedgerEntry> = j
        .writes
        .iter()
        .filter(|w| writes.lost.binary_search(&w.id).is_ok())
        .collect();
    lost.sort_by_key(|w| (w.done, w.id));
    m.writes.lost_sample = lost
        .into_iter()
        .take(crate::analysis::SAMPLE_LIMIT)
        .map(|w| crate::analysis::LostWrite {
            id: w.id,
            acked_at: w.done,
            since_fault_s: j.fault_at.map(|f| w.done.secs_since(f)),
        })
        .collect();
    set(Metric::RpoS, Some(writes.rpo_s));
    set(Metric::DiscardedWrites, Some(writes.discarded as f64));
    let after = match j.after {
        Some(a) => a.clone(),
        None => PostgresAfter {
            error: Some("the restored cluster was not examined (the trial ended early)".into()),
            ..PostgresAfter::default()
        },
    };
    let snapshot_restore = matches!(
        r.component,
        crate::scenario::ComponentKind::Redis | crate::scenario::ComponentKind::Qdrant
    );
    let mut checks = if r.ok && snapshot_restore {
        // Writes acknowledged before the RDB copy was taken are in it: losing one of those is an integrity
        // failure; losing those acknowledged between the copy and the incident is the snapshot's RPO.
        let before_copy: Vec<u64> = j
            .writes
            .iter()
            .filter(|w| writes.lost.binary_search(&w.id).is_ok())
            .filter(|w| r.snapshot.is_some_and(|s| w.done <= s))
            .map(|w| w.id)
            .collect();
        // A write the restored cluster acknowledged (sent once the old data was being replaced) and then lost:
        // the restore took in writes before its data was in place.
        let after_restore = lost_sent_from(j.writes, &writes.lost, r.replaced_at);
        snapshot_checks(&writes, &before_copy, &after_restore, r, j.fault_at)
    } else if r.ok {
        postgres_checks(&writes, r.target.is_some(), r.before.timeline, &after)
    } else {
        vec![IntegrityCheck {
            component: r.component.name().into(),
            check: "the restore completed".into(),
            ok: false,
            detail: "the restore step failed; see its StepFinished event".into(),
        }]
    };
    if let Some(t) = j.target_wall.filter(|_| r.ok && r.point_in_time) {
        checks.push(recovery_point_check(t, j.tool_lines));
    }
    let failures = checks.iter().filter(|c| !c.ok).count();
    m.values
        .insert(Metric::IntegrityFailures, Some(failures as f64));
    if let Some((a, b)) = r.before.window {
        if b - a < 7.0 * 86_400.0 {
            m.notes.push(format!(
                "recoverable_window_s is {:.0} s: the repository's oldest backup is that recent (a fresh stack); \
                 a long-lived environment holds 7 days (604800 s)",
                b - a
            ));
        }
    }
    if r.component == crate::scenario::ComponentKind::Postgres && r.target.is_none() {
        m.notes.push(
            "restored to the end of the archive: acknowledged writes the archive never received are the RPO \
             (lost_acked_writes, rpo_s); one lost before a write that survived fails integrity"
                .into(),
        );
    }
    m.integrity = checks;
}

/// A restore of a component other than the scenario's (a region-loss runbook restores every component; the
/// scenario's load and ledger are one component's): its time, and whether it completed with the checks the step
/// ran before it did (the data loaded, a write accepted, replicas and sentinels in agreement). Its RPO is judged
/// by a scenario whose component it is.
pub fn judge_other_restore(
    m: &mut crate::analysis::TrialMeasurements,
    r: &super::runner::RestoreRecord,
) {
    use crate::scenario::{ComponentKind, Metric};
    let restore_s = r
        .served_at
        .filter(|_| r.ok)
        .map(|s| s.secs_since(r.started));
    let metric = match r.component {
        ComponentKind::Redis => Metric::RedisRestoreS,
        ComponentKind::Qdrant => Metric::QdrantRestoreS,
        _ => Metric::PgRestoreS,
    };
    m.values.insert(metric, restore_s);
    m.integrity.push(IntegrityCheck {
        component: r.component.name().into(),
        check: "the restore completed and its own checks passed".into(),
        ok: r.ok,
        detail: if r.ok {
            "the step verified the restored data loaded, a write accepted and every member back in agreement; \
             its acknowledged-write loss is judged by a scenario with this component's load"
                .into()
        } else {
            "the restore step failed; see its StepFinished event".into()
        },
    });
    let failures = m.integrity.iter().filter(|c| !c.ok).count();
    m.values
        .insert(Metric::IntegrityFailures, Some(failures as f64));
}

/// The lost writes (ids sorted) that were sent at or after `from`.
fn lost_sent_from(writes: &[&LedgerEntry], lost: &[u64], from: Option<Stamp>) -> Vec<u64> {
    let Some(from) = from else {
        return Vec::new();
    };
    writes
        .iter()
        .filter(|w| lost.binary_search(&w.id).is_ok())
        .filter(|w| w.sent.unwrap_or(w.scheduled) >= from)
        .map(|w| w.id)
        .collect()
}

/// The checks of a restore from a snapshot (a Redis RDB copy, a Qdrant snapshot set): neither has a
/// point-in-time restore, so the snapshot is the recovery point.
fn snapshot_checks(
    writes: &RestoredWrites,
    lost_before_copy: &[u64],
    lost_after_restore: &[u64],
    r: &super::runner::RestoreRecord,
    fault_at: Option<Stamp>,
) -> Vec<IntegrityCheck> {
    let qdrant = r.component == crate::scenario::ComponentKind::Qdrant;
    let copy = if qdrant { "snapshot set" } else { "RDB copy" };
    let c = |check: &str, ok: bool, detail: String| IntegrityCheck {
        component: r.component.name().into(),
        check: check.into(),
        ok,
        detail,
    };
    let age = match (r.snapshot, r.target.or(fault_at)) {
        (Some(s), Some(t)) => format!(
            "the {copy}'s data is from {:.3} s before the incident",
            t.secs_since(s)
        ),
        _ => format!("the {copy}'s age at the incident is unknown"),
    };
    let (members_check, members_detail) = if qdrant {
        (
            "every shard replica is Active on every peer (the cluster is not stuck)",
            "checked before the step completed (every peer's view of every shard replica Active, a write accepted)",
        )
    } else {
        (
            "sentinels agree on the restored master and every replica is linked",
            "checked before the step completed (every sentinel names it, knows the others, sees every replica online)",
        )
    };
    vec![
        c(
            &format!("acknowledged writes from before the {copy} are present"),
            lost_before_copy.is_empty(),
            if lost_before_copy.is_empty() {
                format!(
                    "none lost; {age}, so the {} acknowledged after it are lost (the snapshot's RPO, in \
                     lost_acked_writes and rpo_s)",
                    writes.lost.len()
                )
            } else {
                format!(
                    "{} lost that the copy should hold: {}",
                    lost_before_copy.len(),
                    ids(lost_before_copy)
                )
            },
        ),
        c(
            "writes sent after the incident are absent",
            writes.present_after_target.is_empty(),
            if writes.present_after_target.is_empty() {
                format!(
                    "{} acknowledged write(s) discarded with the replaced data",
                    writes.discarded
                )
            } else {
                format!(
                    "{} still present: the restore did not replace the data: {}",
                    writes.present_after_target.len(),
                    ids(&writes.present_after_target)
                )
            },
        ),
        c(
            "writes the restored data acknowledged are present",
            lost_after_restore.is_empty(),
            if lost_after_restore.is_empty() {
                "none lost".into()
            } else {
                format!(
                    "{} acknowledged after the restore began and then lost (taken in before the restored data \
                     was in place): {}",
                    lost_after_restore.len(),
                    ids(lost_after_restore)
                )
            },
        ),
        c(members_check, r.ok, members_detail.into()),
    ]
}

/// The restore's log-agreement pair: the harness's "restored primary accepts writes" against PostgreSQL's own
/// "database system is ready to accept connections".
pub fn restore_agreement(
    trial: u32,
    clock: &crate::clock::Clock,
    r: &super::runner::RestoreRecord,
    lines: &[super::tool_logs::ToolLine],
) -> Option<crate::log_agreement::LogAgreement> {
    // Qdrant logs no line for a recovered snapshot: its own account is the recover call's answer, which the step
    // waited for (a phase per peer).
    if r.component == crate::scenario::ComponentKind::Qdrant {
        return None;
    }
    use crate::clock::rfc3339_millis;
    let harness = r.served_at.map(|s| clock.wall(s));
    let (event, needle, source) = match r.component {
        crate::scenario::ComponentKind::Redis => (
            "restore: restored master serving (Redis: DB loaded from disk)",
            "DB loaded from disk",
            "redis ",
        ),
        _ => (
            "restore: restored primary serving (PostgreSQL: ready to accept connections)",
            "database system is ready to accept connections",
            "postgresql ",
        ),
    };
    let own: Vec<super::tool_logs::ToolLine> = lines
        .iter()
        .filter(|l| l.source.starts_with(source))
        .cloned()
        .collect();
    let server = super::tool_logs::serving_line(&own, needle, harness);
    Some(crate::log_agreement::LogAgreement {
        trial,
        event: event.into(),
        harness_at: harness.map(rfc3339_millis),
        server_log_at: server.map(|l| rfc3339_millis(l.at)),
        server_log_line: server.map(|l| format!("{}: {}", l.source, l.line)),
        delta_s: match (server, harness) {
            (Some(l), Some(h)) => Some(crate::log_agreement::signed_secs(l.at, h)),
            _ => None,
        },
    })
}

/// PostgreSQL's own recovery point must not be after the target: "last completed transaction was at log time".
pub fn recovery_point_check(
    target: std::time::SystemTime,
    lines: &[super::tool_logs::ToolLine],
) -> IntegrityCheck {
    let c = |ok: bool, detail: String| IntegrityCheck {
        component: "postgres".into(),
        check: "PostgreSQL's recovery point is not after the target".into(),
        ok,
        detail,
    };
    let t = crate::clock::rfc3339_millis(target);
    match super::tool_logs::recovery_point(lines) {
        None => c(
            false,
            format!("PostgreSQL logged no \"last completed transaction was at log time\" for this restore (target {t})"),
        ),
        Some(rp) => {
            let gap = crate::log_agreement::signed_secs(target, rp);
            let ok = gap >= 0.0;
            c(
                ok,
                format!(
                    "last replayed transaction committed at {} ({gap:.3} s before the target {t})",
                    humantime::format_rfc3339_micros(rp)
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn w(id: u64, sent_ms: u64, done_ms: u64, ok: bool) -> LedgerEntry {
        LedgerEntry {
            id,
            source: crate::ledger::Source::Component(crate::scenario::ComponentKind::Postgres),
            op: OpKind::Write,
            trial: 1,
            scheduled: Stamp(Duration::from_millis(sent_ms)),
            slot: None,
            sent: Some(Stamp(Duration::from_millis(sent_ms))),
            done: Stamp(Duration::from_millis(done_ms)),
            outcome: if ok { Outcome::Ok } else { Outcome::Failed },
            error: None,
        }
    }

    fn ms(v: u64) -> Stamp {
        Stamp(Duration::from_millis(v))
    }

    #[test]
    fn a_point_in_time_restore_keeps_what_came_before_and_drops_what_came_after() {
        let ledger = [
            w(1, 100, 110, true),
            w(2, 900, 910, true),
            w(3, 995, 1005, true), // in flight across the target (1000): either way is right
            w(4, 1100, 1110, true), // after the target: must be gone
            w(5, 1200, 1210, true), // after the target: must be gone
            w(6, 1300, 1310, false), // failed: not judged
            w(7, 5000, 5010, true), // after the old cluster stopped (4000): the restored one took it
        ];
        let writes: Vec<&LedgerEntry> = ledger.iter().collect();
        let present: BTreeSet<u64> = [1, 2, 7].into();
        let input = RestoreInput {
            writes: &writes,
            present: &present,
            target: Some(ms(1000)),
            fault_at: Some(ms(1000)),
            replaced_at: Some(ms(4000)),
        };
        let r = classify(&input);
        assert!(r.lost.is_empty(), "{r:?}");
        assert_eq!(r.discarded, 2);
        assert!(r.present_after_target.is_empty());
        assert!((r.recovery_point_gap_s.unwrap() - 0.09).abs() < 1e-9);
        assert_eq!(r.rpo_s, 0.0);

        // A restore that went too far keeps a write sent after the target; one that stopped short loses one.
        let present: BTreeSet<u64> = [1, 4, 7].into();
        let r = classify(&RestoreInput {
            present: &present,
            ..input
        });
        assert_eq!(r.present_after_target, vec![4]);
        assert_eq!(r.lost, vec![2]);
        // The acknowledged time lost runs from the last good write (done at 110 ms) to the lost one (910 ms).
        assert!((r.rpo_s - 0.8).abs() < 1e-9, "{r:?}");
        let checks = postgres_checks(&r, true, Some(1), &PostgresAfter::default());
        assert!(
            !checks[0].ok && checks[0].detail.contains("1 lost: 2"),
            "{checks:?}"
        );
        assert!(!checks[1].ok && checks[1].detail.contains("did not stop at its target: 4"));
    }

    #[test]
    fn a_snapshot_restore_that_takes_writes_in_before_its_data_is_in_place_is_caught() {
        // Snapshot at 1000, incident at 2000, restore begins at 4000. Write 2 (after the snapshot) is the
        // snapshot's RPO; write 4 was acknowledged into the cluster being rebuilt and then overwritten.
        let ledger = [
            w(1, 100, 110, true),
            w(2, 1500, 1510, true),
            w(3, 3000, 3010, true),
            w(4, 4100, 4110, true),
            w(5, 4600, 4610, true),
        ];
        let writes: Vec<&LedgerEntry> = ledger.iter().collect();
        let present: BTreeSet<u64> = [1, 5].into();
        let r = classify(&RestoreInput {
            writes: &writes,
            present: &present,
            target: Some(ms(2000)),
            fault_at: Some(ms(2000)),
            replaced_at: Some(ms(4000)),
        });
        assert_eq!(r.lost, vec![2, 4]);
        assert_eq!(r.discarded, 1);
        assert_eq!(lost_sent_from(&writes, &r.lost, Some(ms(4000))), vec![4]);
        assert!(lost_sent_from(&writes, &r.lost, None).is_empty());
    }

    #[test]
    fn a_restore_to_the_end_of_the_archive_may_lose_a_tail_never_a_hole() {
        let ledger = [
            w(1, 100, 110, true),
            w(2, 200, 210, true),
            w(3, 300, 310, true),
            // Acknowledged by the restored cluster, after the old one stopped (4000): later than the tail, yet
            // no evidence of a hole in the old cluster's history.
            w(9, 5000, 5010, true),
        ];
        let writes: Vec<&LedgerEntry> = ledger.iter().collect();
        let present: BTreeSet<u64> = [1, 9].into();
        let r = classify(&RestoreInput {
            writes: &writes,
            present: &present,
            target: None,
            fault_at: Some(ms(400)),
            replaced_at: Some(ms(4000)),
        });
        // The archive ended after write 1: 2 and 3 are the tail it never received, the RPO.
        assert_eq!(r.lost, vec![2, 3]);
        assert!(r.holes.is_empty(), "{r:?}");
        assert_eq!(r.discarded, 0);
        assert!((r.rpo_s - 0.2).abs() < 1e-9, "{r:?}");
        let after = PostgresAfter {
            timeline: Some(3),
            streaming_replicas: vec!["n2".into(), "n3".into()],
            expected_replicas: 2,
            corruption_present: Some(false),
            error: None,
        };
        let checks = postgres_checks(&r, false, Some(2), &after);
        assert_eq!(checks.len(), 4, "{checks:?}");
        assert!(checks.iter().all(|c| c.ok), "{checks:?}");
        assert!(checks[0]
            .detail
            .contains("2 acknowledged after the archive's end are lost"));

        // Write 2 lost while 3, sent after 2 was acknowledged, survived: a hole, whatever the recovery point.
        let present: BTreeSet<u64> = [1, 3, 9].into();
        let input = RestoreInput {
            writes: &writes,
            present: &present,
            target: None,
            fault_at: Some(ms(400)),
            replaced_at: Some(ms(4000)),
        };
        let r = classify(&input);
        assert_eq!(r.holes, vec![2]);
        let checks = postgres_checks(&r, false, Some(2), &after);
        assert!(
            !checks[0].ok
                && checks[0]
                    .detail
                    .contains("1 lost before a write that survived: 2")
        );
        // A write the restored cluster acknowledged (sent after the old one stopped) and then lost is a hole.
        let present: BTreeSet<u64> = [1, 2, 3].into();
        let r = classify(&RestoreInput {
            present: &present,
            ..input
        });
        assert_eq!(r.holes, vec![9], "{r:?}");
        let stale = PostgresAfter {
            timeline: Some(2),
            ..after
        };
        let checks = postgres_checks(&r, false, Some(2), &stale);
        assert!(
            !checks
                .iter()
                .find(|c| c.check.contains("timeline"))
                .unwrap()
                .ok
        );
    }
}
