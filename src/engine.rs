//! Runs a scenario against a target: per trial, load and probes start, the baseline window passes, faults are
//! applied and reverted on schedule, the stack heals, the ledger is read back. Every applied fault is reverted on
//! every exit path (success, error, interrupt). One event stream on one clock feeds analysis and the reporters.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::analysis::{self, TrialInput, TrialMeasurements};
use crate::clock::{rfc3339_millis, Clock, Stamp};
use crate::component::Component;
use crate::drill::integrity::{
    judge_other_restore, judge_restore, PostgresAfter, RestoreJudgement,
};
use crate::drill::runner::{run_steps, StepsRun};
use crate::events::{Event, EventKind, EventLog};
use crate::exit;
use crate::fault::journal::Journal;
use crate::fault::ActiveFault;
use crate::ledger::{Ledger, ReadBack, Source};
use crate::load;
use crate::log_agreement::{LogAgreement, TrialSpan};
use crate::report::{self, RunReport, TrialReport};
use crate::scenario::{ClientPath, ComponentKind, LoadProfile, Metric, Scenario};
use crate::targets::{Target, TargetError};
use crate::verdict::{self, Verdict};

/// Counts SIGINT/SIGTERM received; the engine stops injecting at the first and always reverts.
pub type Interrupts = watch::Receiver<u32>;

/// The window of server log lines kept around each paired event, and at most how many (the last ones).
const EXCERPT_AROUND: Duration = Duration::from_secs(3);
const EXCERPT_MAX_LINES: usize = 60;

pub struct RunOptions {
    pub reports_dir: PathBuf,
    pub journal: Journal,
    /// The settings file the stack was configured from, for the evidence bundle.
    pub settings_file: Option<PathBuf>,
    /// Live progress on stderr (quiet by default).
    pub progress: crate::progress::Progress,
}

pub struct RunOutcome {
    pub report: RunReport,
    pub run_dir: PathBuf,
}

#[derive(Debug)]
enum Stop {
    Interrupted,
    Failed(String, i32),
}

struct TrialWindow {
    trial: u32,
    baseline: (Stamp, Stamp),
    fault_at: Option<Stamp>,
    /// When the first fault was requested; a point-in-time target "before the fault" is this instant, or the
    /// corruption's when the scenario has one (`corruption_requested`).
    fault_requested: Option<Stamp>,
    corruption_requested: Option<Stamp>,
    /// A drill's recovery steps, when the scenario has any.
    drill: Option<StepsRun>,
    /// The restored PostgreSQL cluster as found at the end of the trial (drills with a restore).
    postgres_after: Option<PostgresAfter>,
    /// The tools' own log lines about the trial's restore.
    restore_lines: Vec<crate::drill::tool_logs::ToolLine>,
    window_end: Stamp,
    /// When the trial's load was told to stop.
    trial_end: Stamp,
    /// Each component's read-back of the run's writes after the trial (an error: why it has no result).
    read_backs: Vec<(ComponentKind, Result<ReadBack, String>)>,
}

impl TrialWindow {
    /// The component's read-back, when it succeeded.
    fn read_back(&self, c: ComponentKind) -> Option<&ReadBack> {
        self.read_backs
            .iter()
            .find(|(k, _)| *k == c)
            .and_then(|(_, r)| r.as_ref().ok())
    }

    /// Why a read-back of the trial failed, first component first; None when all succeeded.
    fn read_back_error(&self) -> Option<String> {
        self.read_backs
            .iter()
            .find_map(|(c, r)| r.as_ref().err().map(|e| format!("{c}: {e}")))
    }
}

/// Resolves once at least `count` signals have been received (never, if signals cannot be delivered).
async fn signalled(intr: &mut Interrupts, count: u32) {
    loop {
        if *intr.borrow() >= count {
            return;
        }
        if intr.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Sleeps unless interrupted.
async fn pause(d: Duration, intr: &mut Interrupts) -> Result<(), Stop> {
    if *intr.borrow() > 0 {
        return Err(Stop::Interrupted);
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = signalled(intr, 1) => Err(Stop::Interrupted),
    }
}

pub fn new_run_id(scenario: &str) -> String {
    let now = rfc3339_millis(SystemTime::now());
    // 2026-11-23T06:30:01.123Z -> 20261123T063001Z
    let compact: String = now[..19]
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    format!("{compact}Z-{scenario}-{}", std::process::id())
}

pub async fn run_scenario<T: Target>(
    target: &T,
    scenario: &Scenario,
    opts: &RunOptions,
    mut intr: Interrupts,
) -> std::io::Result<RunOutcome> {
    // The routing layer carries PostgreSQL's clients; the other components' are always direct.
    let mut components: Vec<Box<dyn Component>> = Vec::new();
    for kind in &scenario.components {
        let path = match kind {
            ComponentKind::Postgres => scenario.client_path,
            _ => ClientPath::Direct,
        };
        match target.client_component(*kind, path) {
            Ok(c) => components.push(c),
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        }
    }
    let run_id = new_run_id(&scenario.name);
    let run_dir = opts.reports_dir.join(&run_id);
    std::fs::create_dir_all(&run_dir)?;
    let clock = Clock::start();
    let started_at = rfc3339_millis(SystemTime::now());
    let events = EventLog::new(clock);
    let ledger = Ledger::with_file(&run_dir.join("ledger.jsonl"))?;
    let per_trial =
        Duration::from_secs(1) + scenario.baseline + scenario.observe + scenario.heal.settle;
    let progress = crate::progress::spawn(
        &opts.progress,
        crate::progress::RunPlan {
            scenario: scenario.name.clone(),
            trials: scenario.trials,
            planned: per_trial * scenario.trials,
        },
        events.clone(),
        ledger.clone(),
    );
    let mut active: Vec<ActiveFault> = Vec::new();
    let mut windows: Vec<TrialWindow> = Vec::new();
    let write_ids = Arc::new(AtomicU64::new(1));

    let mut stop: Option<Stop> = None;
    for trial in 1..=scenario.trials {
        events.set_trial(trial);
        let r = run_trial(
            target,
            &components,
            scenario,
            &run_id,
            &opts.journal,
            &events,
            &ledger,
            &mut active,
            &mut intr,
            &write_ids,
            trial,
        )
        .await;
        // Whatever happened, nothing stays applied past its trial.
        revert_all(target, &opts.journal, &events, &mut active).await;
        match r {
            Ok(w) => windows.push(w),
            Err((w, s)) => {
                if let Some(w) = w {
                    windows.push(w);
                }
                stop = Some(s);
                break;
            }
        }
    }
    ledger.flush();

    // Verify once more at the end of the run: a loss can surface a round later (pitfall 10). A final read-back
    // that fails leaves the run incomplete: the losses it would have found are unknown.
    let mut finals: Vec<(ComponentKind, Result<ReadBack, String>)> = Vec::new();
    for c in &components {
        let r = match stop {
            Some(Stop::Failed(..)) => Err("skipped: the run had already failed".to_string()),
            _ => {
                read_back_unless_interrupted(
                    c.as_ref(),
                    &run_id,
                    clock,
                    Duration::from_secs(20),
                    &mut intr,
                )
                .await
            }
        };
        finals.push((c.kind(), r));
    }
    let mut read_backs: Vec<report::ReadBackRecord> = windows
        .iter()
        .flat_map(|w| {
            w.read_backs
                .iter()
                .map(|(c, r)| report::ReadBackRecord::of(Some(w.trial), *c, &clock, r))
        })
        .collect();
    read_backs.extend(
        finals
            .iter()
            .map(|(c, r)| report::ReadBackRecord::of(None, *c, &clock, r)),
    );
    let final_error = finals
        .iter()
        .find_map(|(c, r)| r.as_ref().err().map(|e| format!("{c}: {e}")));
    if stop.is_none() {
        if let Some(e) = &final_error {
            stop = Some(Stop::Failed(
                format!("the final read-back of the run's ledger failed: {e}"),
                exit::ENVIRONMENT,
            ));
        }
    }
    let entries = ledger.entries();
    for w in &windows {
        let Some(fault_at) = w.fault_at else { continue };
        for c in &scenario.components {
            let first_ok = entries
                .iter()
                .filter(|e| e.trial == w.trial && e.op == crate::ledger::OpKind::Write)
                .filter(|e| e.source == Source::Component(*c))
                .filter(|e| {
                    e.outcome == crate::ledger::Outcome::Ok && e.sent.is_some_and(|s| s >= fault_at)
                })
                .min_by_key(|e| e.done);
            if let Some(e) = first_ok {
                events.emit_for_trial(
                    w.trial,
                    e.done,
                    EventKind::FirstWriteAfterFault {
                        component: *c,
                        ok: true,
                    },
                );
            }
        }
    }
    let all_events = events.snapshot();
    let run_attempted: BTreeSet<u64> = entries
        .iter()
        .filter(|e| e.op == crate::ledger::OpKind::Write)
        .map(|e| e.id)
        .collect();
    // A component's present id is unexpected unless that component attempted it (ids come from one counter).
    let attempted_by = |c: ComponentKind| -> BTreeSet<u64> {
        entries
            .iter()
            .filter(|e| e.op == crate::ledger::OpKind::Write && e.source == Source::Component(c))
            .map(|e| e.id)
            .collect()
    };
    let attempted_by: BTreeMap<ComponentKind, BTreeSet<u64>> = scenario
        .components
        .iter()
        .map(|c| (*c, attempted_by(*c)))
        .collect();
    let mut measurements: Vec<TrialMeasurements> = Vec::new();
    'trials: for w in &windows {
        // Each component's ids present after the trial and at the end of the run (a loss can surface a round
        // later); a component with neither leaves the trial unmeasured.
        let mut present_by: BTreeMap<ComponentKind, BTreeSet<u64>> = BTreeMap::new();
        for c in &scenario.components {
            let fin = finals
                .iter()
                .find(|(k, _)| k == c)
                .and_then(|(_, r)| r.as_ref().ok());
            let present = match (w.read_back(*c), fin) {
                (Some(t), Some(f)) => t.present.intersection(&f.present).copied().collect(),
                (Some(t), None) => t.present.clone(),
                (None, Some(f)) => f.present.clone(),
                (None, None) => continue 'trials,
            };
            present_by.insert(*c, present);
        }
        let trial_entries: Vec<_> = entries
            .iter()
            .filter(|e| e.trial == w.trial)
            .cloned()
            .collect();
        // The system is the data stack: the components' operations, not the HTTP probes'.
        let component_entries: Vec<_> = trial_entries
            .iter()
            .filter(|e| matches!(e.source, Source::Component(_)))
            .cloned()
            .collect();
        let trial_events: Vec<Event> = all_events
            .iter()
            .filter(|e| e.trial == w.trial)
            .cloned()
            .collect();
        let restores = w.drill.as_ref().map_or(&[][..], |d| &d.restores[..]);
        let empty = BTreeSet::new();
        let base = TrialInput {
            component: scenario.component,
            trial: w.trial,
            events: &trial_events,
            ledger: &component_entries,
            present: &empty,
            run_attempted: &run_attempted,
            baseline: w.baseline,
            fault_at: w.fault_at,
            window_end: w.window_end,
            trial_end: w.trial_end,
            rto_consecutive: scenario.load.rto_consecutive,
        };
        let mut per_component = BTreeMap::new();
        for (c, present) in &present_by {
            let own: Vec<_> = trial_entries
                .iter()
                .filter(|e| e.source == Source::Component(*c))
                .cloned()
                .collect();
            let mut m = analysis::analyze(&TrialInput {
                component: *c,
                ledger: &own,
                present,
                run_attempted: &attempted_by[c],
                ..base
            });
            // A component is judged from its ledger; another component's restore (a region-loss runbook
            // restores every component) by its own checks, which the step ran before it completed.
            for restore in restores.iter().filter(|r| r.component == *c).take(1) {
                let writes: Vec<&crate::ledger::LedgerEntry> = own
                    .iter()
                    .filter(|e| e.op == crate::ledger::OpKind::Write)
                    .collect();
                judge_restore(
                    &mut m,
                    &RestoreJudgement {
                        writes: &writes,
                        present,
                        fault_at: w.fault_at,
                        restore,
                        after: w.postgres_after.as_ref(),
                        rto_consecutive: scenario.load.rto_consecutive,
                        target_wall: restore.target.map(|t| clock.wall(t)),
                        tool_lines: &w.restore_lines,
                    },
                );
            }
            per_component.insert(*c, m);
        }
        let mut m = if per_component.len() == 1 {
            per_component.into_values().next().expect("one component")
        } else {
            let all_present: BTreeSet<u64> = present_by.values().flatten().copied().collect();
            analysis::system(
                &TrialInput {
                    present: &all_present,
                    ..base
                },
                per_component,
            )
        };
        for restore in restores
            .iter()
            .filter(|r| !scenario.components.contains(&r.component))
        {
            judge_other_restore(&mut m, restore);
        }
        for p in &scenario.http_probes {
            let source = Source::Http(p.name.as_str().into());
            let own: Vec<_> = trial_entries
                .iter()
                .filter(|e| e.source == source)
                .cloned()
                .collect();
            let measured = analysis::probe(&TrialInput {
                ledger: &own,
                ..base
            });
            m.notes.extend(
                measured
                    .notes
                    .iter()
                    .map(|n| format!("http.{}: {n}", p.name)),
            );
            m.probes.insert(p.name.clone(), measured);
        }
        if let Some(why) = w.drill.as_ref().and_then(|d| d.failed.as_ref()) {
            m.notes.push(format!("the drill's recovery stopped: {why}"));
        }
        measurements.push(m);
    }

    // A drill's restore replaces the cluster: the component's failover pairs (Patroni's "promoted self to leader",
    // Sentinel's events) apply up to the restore; the restore's own pair covers its new primary.
    let spans: Vec<TrialSpan> = windows
        .iter()
        .filter_map(|w| {
            let restore_started = w.drill.as_ref().and_then(StepsRun::first_restore_started);
            w.fault_at.map(|fault_at| TrialSpan {
                trial: w.trial,
                fault_at,
                end: restore_started.map_or(w.trial_end, |r| r.min(w.trial_end)),
            })
        })
        .collect();
    // Each row with the component whose server logs it was read from (for the excerpts).
    let mut rows: Vec<(ComponentKind, LogAgreement)> = Vec::new();
    for c in &components {
        let own: Vec<Event> = all_events
            .iter()
            .filter(|e| e.kind.component().is_none_or(|k| k == c.kind()))
            .cloned()
            .collect();
        rows.extend(
            log_agreement_of(target, c.as_ref(), &clock, &own, &spans)
                .await
                .into_iter()
                .map(|r| (c.kind(), r)),
        );
    }
    for w in &windows {
        for r in w.drill.iter().flat_map(|d| &d.restores) {
            rows.extend(
                crate::drill::integrity::restore_agreement(w.trial, &clock, r, &w.restore_lines)
                    .into_iter()
                    .map(|row| (r.component, row)),
            );
        }
    }
    let (row_components, log_agreement): (Vec<ComponentKind>, Vec<LogAgreement>) =
        rows.into_iter().unzip();
    for m in &mut measurements {
        let rows: Vec<LogAgreement> = log_agreement
            .iter()
            .filter(|r| r.trial == m.trial)
            .cloned()
            .collect();
        let (max, note) = crate::log_agreement::max_delta(&rows);
        m.values.insert(Metric::LogAgreementMaxS, max);
        m.notes.extend(note);
    }

    // Each trial compared with the scenario's recent runs (`regressions`); never a reason to fail a run when
    // the history cannot be read: said in the notes instead.
    let mut history = match crate::history::History::open(&opts.reports_dir) {
        Ok(h) => Some(h),
        Err(e) => {
            eprintln!("warning: run history unavailable: {e}");
            None
        }
    };
    let history_runs = history
        .as_ref()
        .map_or(0, |h| h.count(&scenario.name, &run_id));
    let previous_run = history
        .as_ref()
        .and_then(|h| h.previous(&scenario.name, &run_id));
    let mut regressions_by_trial = BTreeMap::new();
    for m in &mut measurements {
        let values = report::measurement_map(m);
        let found = match &history {
            Some(h) => crate::history::regressions(&values, |metric| {
                h.values(&scenario.name, metric, &run_id, crate::history::WINDOW)
            }),
            None => Vec::new(),
        };
        m.values
            .insert(Metric::Regressions, Some(found.len() as f64));
        regressions_by_trial.insert(m.trial, found);
    }

    // The servers' own lines around each paired event, for the evidence bundle.
    let mut log_excerpts = Vec::new();
    for (row, component) in log_agreement.iter().zip(&row_components) {
        let Some(at) = row
            .server_log_at
            .as_deref()
            .or(row.harness_at.as_deref())
            .and_then(|s| humantime::parse_rfc3339(s).ok())
        else {
            continue;
        };
        let lines = target.log_excerpt(*component, at, EXCERPT_AROUND).await;
        log_excerpts.push(report::LogExcerpt {
            trial: row.trial,
            event: row.event.clone(),
            at: rfc3339_millis(at),
            lines: lines
                .into_iter()
                .rev()
                .take(EXCERPT_MAX_LINES)
                .rev()
                .map(|(t, l)| format!("{}  {l}", rfc3339_millis(t)))
                .collect(),
        });
    }
    // The last milestones printed and the status line cleared before the summary.
    progress.finish().await;
    let completed = stop.is_none() && measurements.len() == scenario.trials as usize;
    let thresholds = verdict::judge(&scenario.thresholds, &measurements);
    let verdict = verdict::overall(&thresholds, completed);
    let (incomplete_reason, exit_code) = match (&stop, verdict) {
        (Some(Stop::Interrupted), _) => (
            Some("interrupted by a signal; applied faults were reverted".to_string()),
            exit::INTERRUPTED,
        ),
        (Some(Stop::Failed(reason, code)), _) => (Some(reason.clone()), *code),
        (None, Verdict::Pass) => (None, exit::PASS),
        (None, Verdict::Fail) => (None, exit::THRESHOLD_FAILED),
        (None, Verdict::Incomplete) => (
            Some("not every trial produced measurements".to_string()),
            exit::ENVIRONMENT,
        ),
    };
    let fault_at_by_trial: BTreeMap<u32, Stamp> = windows
        .iter()
        .filter_map(|w| w.fault_at.map(|f| (w.trial, f)))
        .collect();
    let judged = report::judged_trial(&thresholds, &measurements);
    let headline = judged
        .and_then(|t| measurements.iter().find(|m| m.trial == t))
        .or(measurements.first());
    let report = RunReport {
        run_id: run_id.clone(),
        scenario: scenario.name.clone(),
        scenario_file: scenario.source.display().to_string(),
        component: scenario.component,
        components: scenario.components.clone(),
        http_probes: scenario
            .http_probes
            .iter()
            .map(|p| p.name.clone())
            .collect(),
        client_path: scenario.client_path,
        started_at,
        finished_at: rfc3339_millis(SystemTime::now()),
        verdict,
        incomplete_reason,
        thresholds,
        measurements: headline.map(report::measurement_map).unwrap_or_default(),
        regressions: headline
            .and_then(|m| regressions_by_trial.remove(&m.trial))
            .unwrap_or_default(),
        history_runs,
        previous: previous_run
            .as_ref()
            .zip(headline)
            .map(|(p, m)| crate::history::compare(&report::measurement_map(m), p)),
        measurements_trial: headline.map(|m| m.trial),
        trials: measurements.iter().map(TrialReport::from).collect(),
        distribution: report::distribution(&measurements),
        availability: report::Availability::of(
            &entries
                .iter()
                .filter(|e| matches!(e.source, Source::Component(_)))
                .cloned()
                .collect::<Vec<_>>(),
        ),
        timeline: report::build_timeline(&clock, &all_events, &fault_at_by_trial),
        read_backs,
        log_agreement,
        log_excerpts,
        log_agreement_unchecked: components
            .iter()
            .flat_map(|c| c.unlogged_events())
            .map(str::to_string)
            .collect(),
        fingerprint: target.fingerprint(),
        exit_code,
    };
    report::write_run(&run_dir, &report)?;
    ledger.flush();
    let evidence = report::evidence::EvidenceSources {
        configs: [
            Some(scenario.source.clone()),
            scenario.topology.clone(),
            opts.settings_file.clone(),
        ]
        .into_iter()
        .flatten()
        .collect(),
        stack_configs: target.config_files(),
        secrets: target
            .secrets()
            .into_iter()
            .chain(scenario.http_probes.iter().flat_map(|p| p.secrets()))
            .collect(),
    };
    report::evidence::write_evidence(&run_dir, &report, &evidence)?;
    if let Some(h) = history.as_mut() {
        if let Err(e) = h.record(&report) {
            eprintln!("warning: the run was not added to the history: {e}");
        }
    }
    Ok(RunOutcome { report, run_dir })
}

#[allow(clippy::too_many_arguments)]
async fn run_trial<T: Target>(
    target: &T,
    components: &[Box<dyn Component>],
    scenario: &Scenario,
    run_id: &str,
    journal: &Journal,
    events: &EventLog,
    ledger: &Ledger,
    active: &mut Vec<ActiveFault>,
    intr: &mut Interrupts,
    write_ids: &Arc<AtomicU64>,
    trial: u32,
) -> Result<TrialWindow, (Option<TrialWindow>, Stop)> {
    let clock = events.clock();
    events.emit(EventKind::TrialStarted);
    let healthy = tokio::select! {
        h = target.wait_healthy(scenario.heal.timeout) => h,
        _ = signalled(intr, 1) => return Err((None, Stop::Interrupted)),
    };
    if let Err(e) = healthy {
        return Err((
            None,
            Stop::Failed(
                format!("the stack is not healthy before trial {trial}: {e}"),
                exit::ENVIRONMENT,
            ),
        ));
    }
    for c in components {
        if let Err(e) = c.prepare(Duration::from_secs(20)).await {
            return Err((None, Stop::Failed(e, exit::ENVIRONMENT)));
        }
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let probes: Vec<_> = components
        .iter()
        .map(|c| c.spawn_probe(events.clone(), stop_rx.clone()))
        .collect();
    let observer = target.spawn_observer(events.clone(), stop_rx);
    let mut clients: Vec<(Source, Arc<dyn load::LoadClient>, LoadProfile)> = components
        .iter()
        .map(|c| {
            let profile = scenario.load.for_component(c.kind());
            (
                Source::Component(c.kind()),
                c.load_client(run_id, &profile),
                profile,
            )
        })
        .collect();
    // The user's own service, probed beside the components' load on the same clock.
    for p in &scenario.http_probes {
        match load::http::HttpProbeClient::new(p) {
            Ok(client) => clients.push((
                Source::Http(p.name.as_str().into()),
                Arc::new(client),
                p.load_profile(),
            )),
            Err(e) => {
                let _ = stop_tx.send(true);
                return Err((
                    None,
                    Stop::Failed(format!("HTTP probe `{}`: {e}", p.name), exit::ENVIRONMENT),
                ));
            }
        }
    }
    // Connections are established (SCRAM, primary discovery) before the load starts, and the sentinel
    // subscriptions have a moment, so the baseline starts with every probe attached.
    let warm_until = Instant::now() + Duration::from_secs(5);
    tokio::join!(
        futures_util::future::join_all(
            clients
                .iter()
                .map(|(_, client, p)| client.warm_up(p.connections as usize, warm_until))
        ),
        tokio::time::sleep(Duration::from_millis(300)),
    );
    let loads: Vec<_> = clients
        .into_iter()
        .map(|(source, client, profile)| {
            load::start(
                &profile,
                client,
                source,
                ledger.clone(),
                events.clone(),
                write_ids.clone(),
            )
        })
        .collect();
    // Warm-up: connections are established (SCRAM, primary discovery) before the baseline window opens, so the
    // baseline measures steady state. Operations of the warm-up are in the ledger all the same.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A drill's preparation (a backup to restore from) runs under load, before the baseline.
    let prepared = if scenario.prepare.is_empty() {
        Ok(())
    } else {
        let signals = intr.clone();
        run_steps(
            target,
            journal,
            events,
            &scenario.prepare,
            None,
            async move {
                let mut s = signals;
                signalled(&mut s, 1).await
            },
        )
        .await
        .map(|_| ())
        .map_err(|r| r.failed.unwrap_or_default())
    };

    let baseline_start = events.emit(EventKind::BaselineStarted);
    let mut window = TrialWindow {
        trial,
        baseline: (baseline_start, baseline_start + scenario.baseline),
        fault_at: None,
        fault_requested: None,
        corruption_requested: None,
        drill: None,
        postgres_after: None,
        restore_lines: Vec::new(),
        window_end: baseline_start + scenario.baseline,
        trial_end: baseline_start + scenario.baseline,
        read_backs: Vec::new(),
    };
    let result = match prepared {
        Ok(()) => fault_window(target, scenario, journal, events, active, intr, &mut window).await,
        Err(_) if *intr.borrow() > 0 => Err(Stop::Interrupted),
        Err(why) => Err(Stop::Failed(
            format!("a prepare step failed, so the drill cannot run: {why}"),
            exit::ENVIRONMENT,
        )),
    };
    // A drill's recovery: the operator's runbook, step by step, before anything is reverted. A failed step is the
    // drill's result (its metrics are not observed, its checks fail), not an error of the harness.
    let result = match result {
        Ok(()) if !scenario.recovery.is_empty() => {
            let signals = intr.clone();
            let run = run_steps(
                target,
                journal,
                events,
                &scenario.recovery,
                window.corruption_requested.or(window.fault_requested),
                async move {
                    let mut s = signals;
                    signalled(&mut s, 1).await
                },
            )
            .await;
            let run = run.unwrap_or_else(|r| r);
            window.drill = Some(run);
            if *intr.borrow() > 0 {
                Err(Stop::Interrupted)
            } else {
                Ok(())
            }
        }
        other => other,
    };
    // Revert before healing, whatever happened in the window.
    let mut revert_errors = revert_all(target, journal, events, active).await;
    if !revert_errors.is_empty() {
        // Revert steps are idempotent: one more pass over what is still open before the trial is given up.
        revert_errors = revert_all(target, journal, events, &mut Vec::new()).await;
    }
    let result = match result {
        Ok(()) if !revert_errors.is_empty() => Err(Stop::Failed(
            format!(
                "the faults could not be reverted (their journal entries stay open; `faultline recover` runs them \
                 again): {}",
                revert_errors.join("; ")
            ),
            exit::ENVIRONMENT,
        )),
        Ok(()) => {
            events.emit(EventKind::HealStarted);
            let heal = tokio::select! {
                h = target.wait_healthy(scenario.heal.timeout) => Ok(h),
                _ = signalled(intr, 1) => Err(Stop::Interrupted),
            };
            match heal {
                Ok(h) => {
                    let healthy = h.is_ok();
                    let detail = h.unwrap_or_else(|e| e);
                    window.window_end = events.emit(EventKind::HealComplete {
                        healthy,
                        detail: detail.clone(),
                    });
                    if healthy {
                        pause(scenario.heal.settle, intr).await
                    } else {
                        Err(Stop::Failed(
                            format!(
                                "the stack did not heal within {} s after the faults were reverted: {detail}",
                                scenario.heal.timeout.as_secs()
                            ),
                            exit::THRESHOLD_FAILED,
                        ))
                    }
                }
                Err(s) => Err(s),
            }
        }
        Err(s) => Err(s),
    };
    if window.window_end <= window.baseline.1 {
        window.window_end = clock.now();
    }
    window.trial_end = clock.now();
    let drain = scenario.load.deadline + Duration::from_secs(2);
    futures_util::future::join_all(loads.into_iter().map(|l| l.stop(drain))).await;
    let _ = stop_tx.send(true);
    // All were told to stop at the same moment, so they share the one deadline.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        futures_util::future::join_all(probes).await;
        if let Some(observer) = observer {
            let _ = observer.await;
        }
    })
    .await;
    ledger.flush();
    let restores = window
        .drill
        .as_ref()
        .map(|d| d.restores.clone())
        .unwrap_or_default();
    if restores
        .iter()
        .any(|r| r.component == crate::scenario::ComponentKind::Postgres)
    {
        let corruption = scenario.faults.iter().find_map(|f| match f.kind {
            crate::scenario::FaultKind::Corruption { how, .. } => Some(how),
            _ => None,
        });
        window.postgres_after = Some(target.postgres_after(corruption, run_id).await);
    }
    let mut read_for = Vec::new();
    for r in &restores {
        // Each component's tools once, from its first restore on.
        if read_for.contains(&r.component) {
            continue;
        }
        read_for.push(r.component);
        let (from, to) = (clock.wall(r.started), clock.wall(clock.now()));
        let lines: Vec<crate::drill::tool_logs::ToolLine> = target
            .restore_tool_lines(r.component, from)
            .await
            .into_iter()
            .filter(|l| l.at <= to)
            .collect();
        for l in &lines {
            if let Some(at) = clock.stamp_of_wall(l.at) {
                events.emit_at(
                    at,
                    EventKind::ServerObservation {
                        component: r.component,
                        source: l.source.clone(),
                        message: l.line.clone(),
                    },
                );
            }
        }
        window.restore_lines.extend(lines);
    }
    window.restore_lines.sort_by_key(|l| l.at);
    for c in components {
        let r =
            read_back_unless_interrupted(c.as_ref(), run_id, clock, scenario.heal.timeout, intr)
                .await;
        window.read_backs.push((c.kind(), r));
    }
    events.emit(EventKind::TrialEnded);
    match result {
        Ok(()) if window.read_back_error().is_some() => {
            let why = window.read_back_error().unwrap_or_default();
            Err((
                Some(window),
                Stop::Failed(
                    format!("the ledger of trial {trial} could not be read back: {why}"),
                    exit::ENVIRONMENT,
                ),
            ))
        }
        Ok(()) => Ok(window),
        Err(s) => Err((Some(window), s)),
    }
}

/// Baseline, then faults applied and reverted on their schedule until the observation window ends.
async fn fault_window<T: Target>(
    target: &T,
    scenario: &Scenario,
    journal: &Journal,
    events: &EventLog,
    active: &mut Vec<ActiveFault>,
    intr: &mut Interrupts,
    window: &mut TrialWindow,
) -> Result<(), Stop> {
    let clock = events.clock();
    pause(scenario.baseline, intr).await?;
    let start = Instant::now();
    let mut schedule: Vec<(usize, &crate::scenario::FaultSpec)> =
        scenario.faults.iter().enumerate().collect();
    schedule.sort_by_key(|(_, f)| f.at);
    let mut applied: Vec<(usize, Option<Instant>)> = Vec::new(); // (index into `active`, revert deadline)
    let observe_end = start + scenario.observe;
    let mut pending = schedule.into_iter().peekable();
    loop {
        let now = Instant::now();
        // Revert what is due.
        for (idx, due) in applied.iter_mut() {
            if due.is_some_and(|d| d <= now) {
                *due = None;
                let f = active[*idx].clone();
                // A failed revert leaves its journal entry open: the trial's revert_all runs it again.
                let _ = revert_one(target, journal, events, &f).await;
            }
        }
        if let Some((_, spec)) = pending.peek() {
            if start + spec.at <= now {
                let (_, spec) = pending.next().expect("peeked");
                match target.apply_fault(journal, &spec.kind).await {
                    Ok(f) => {
                        events.emit_at(
                            clock.stamp_of(f.requested_at),
                            EventKind::FaultRequested {
                                fault: f.description.clone(),
                            },
                        );
                        let at = clock.stamp_of(f.effective_at);
                        events.emit_at(
                            at,
                            EventKind::FaultApplied {
                                fault: f.description.clone(),
                                victims: f.victims.clone(),
                            },
                        );
                        window.fault_at.get_or_insert(at);
                        window
                            .fault_requested
                            .get_or_insert(clock.stamp_of(f.requested_at));
                        if matches!(spec.kind, crate::scenario::FaultKind::Corruption { .. }) {
                            window
                                .corruption_requested
                                .get_or_insert(clock.stamp_of(f.requested_at));
                        }
                        let due = spec.duration.map(|d| f.effective_at + d);
                        active.push(f);
                        applied.push((active.len() - 1, due));
                    }
                    Err(e) => {
                        let code = match e {
                            TargetError::Environment(_) => exit::ENVIRONMENT,
                            TargetError::Fault(_) => exit::ENVIRONMENT,
                        };
                        return Err(Stop::Failed(
                            format!("cannot apply {}: {e}", spec.kind.name()),
                            code,
                        ));
                    }
                }
                continue;
            }
        }
        if now >= observe_end {
            return Ok(());
        }
        let mut next = observe_end;
        if let Some((_, spec)) = pending.peek() {
            next = next.min(start + spec.at);
        }
        for (_, due) in &applied {
            if let Some(d) = due {
                next = next.min(*d);
            }
        }
        pause(next.saturating_duration_since(Instant::now()), intr).await?;
    }
}

async fn revert_one<T: Target>(
    target: &T,
    journal: &Journal,
    events: &EventLog,
    f: &ActiveFault,
) -> Result<(), String> {
    match target.revert(&f.steps).await {
        Ok(()) => {
            let _ = journal.close(&f.journal_id, "reverted");
            events.emit(EventKind::FaultReverted {
                fault: f.description.clone(),
            });
            Ok(())
        }
        Err(e) => {
            events.emit(EventKind::FaultRevertFailed {
                fault: f.description.clone(),
                error: e.clone(),
            });
            Err(format!("{}: {e}", f.description))
        }
    }
}

/// Reverts every fault still applied (journal entries that are already closed are skipped), then every journal
/// entry this process opened that is still open: a fault that failed part-way through being applied never became
/// an `ActiveFault`, yet what it did apply is undone here, from its journaled steps (which are idempotent).
async fn revert_all<T: Target>(
    target: &T,
    journal: &Journal,
    events: &EventLog,
    active: &mut Vec<ActiveFault>,
) -> Vec<String> {
    let mut errors = Vec::new();
    let open = journal.open_entries();
    let open_ids: BTreeSet<&str> = open.iter().map(|e| e.id.as_str()).collect();
    let active_ids: BTreeSet<String> = active.iter().map(|f| f.journal_id.clone()).collect();
    for f in active.drain(..).rev() {
        if open_ids.contains(f.journal_id.as_str()) {
            errors.extend(revert_one(target, journal, events, &f).await.err());
        }
    }
    let half_applied = open
        .iter()
        .filter(|e| e.pid == std::process::id() && !active_ids.contains(&e.id));
    for e in half_applied {
        match target.revert(&e.steps).await {
            Ok(()) => {
                let _ = journal.close(&e.id, "reverted after it failed while being applied");
                events.emit(EventKind::FaultReverted {
                    fault: e.description.clone(),
                });
            }
            Err(error) => {
                errors.push(format!("{}: {error}", e.description));
                events.emit(EventKind::FaultRevertFailed {
                    fault: e.description.clone(),
                    error,
                });
            }
        }
    }
    errors
}

/// Read-back, bounded: after a first signal it gets 10 s at most; a second signal skips it (faults are already
/// reverted by then; only evidence is lost, and the run is reported incomplete anyway).
async fn read_back_unless_interrupted(
    component: &dyn Component,
    run_id: &str,
    clock: Clock,
    deadline: Duration,
    intr: &mut Interrupts,
) -> Result<ReadBack, String> {
    let signals = *intr.borrow();
    if signals >= 2 {
        return Err("skipped: interrupted twice".into());
    }
    let deadline = if signals == 1 {
        deadline.min(Duration::from_secs(10))
    } else {
        deadline
    };
    tokio::select! {
        r = component.read_back(run_id, deadline, clock) => r,
        _ = signalled(intr, 2) => Err("skipped: interrupted twice".into()),
    }
}

/// Pairs the harness's stamps with the servers' own log lines, trial by trial (see `log_agreement`).
async fn log_agreement_of<T: Target>(
    target: &T,
    component: &dyn Component,
    clock: &Clock,
    events: &[Event],
    spans: &[TrialSpan],
) -> Vec<LogAgreement> {
    let checks = component.log_checks();
    let mut lines = Vec::with_capacity(checks.len());
    for c in &checks {
        lines.push(target.server_log_lines(component.kind(), c.needle).await);
    }
    spans
        .iter()
        .flat_map(|span| crate::log_agreement::pair(clock, *span, events, &checks, &lines))
        .collect()
}

/// Where reports go: `reports/` under the current directory unless FAULTLINE_REPORTS_DIR says otherwise.
pub fn default_reports_dir() -> PathBuf {
    std::env::var_os("FAULTLINE_REPORTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new("reports").to_path_buf())
}
