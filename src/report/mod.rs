//! Reports. The engine assembles one `RunReport` per scenario run; every reporter (JSON, JUnit, terminal) reads
//! only that value, never the engine, so all outputs tell the same story.

mod charts;
mod drill_record;
pub mod evidence;
pub mod html;
mod json;
mod junit;
pub mod markdown;
mod openmetrics;
mod terminal;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::analysis::{LatencyBucket, TrialMeasurements, WriteClassification};
use crate::clock::{Clock, Stamp};
use crate::events::Event;
use crate::ledger::Source;
use crate::scenario::ComponentKind;
use crate::verdict::{ThresholdResult, Verdict};

pub use crate::log_agreement::LogAgreement;
pub use json::{run_json, suite_json, SuiteReport, SuiteScenario};
pub use junit::{run_junit, suite_junit};
pub use terminal::{terminal_suite_summary, terminal_summary};

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub scenario: String,
    pub scenario_file: String,
    /// The lead component (the only one, unless the scenario measures several).
    pub component: ComponentKind,
    /// Every component measured, lead first; with several, `measurements` holds the system's figures and each
    /// component's under its name (`redis.promotion_s`).
    pub components: Vec<ComponentKind>,
    /// The scenario's HTTP probes, by name: their figures are `http.<name>.<metric>`; not part of the system's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub http_probes: Vec<String>,
    /// How the load's clients reached PostgreSQL: `direct`, `haproxy` or `pgbouncer`.
    #[serde(default)]
    pub client_path: crate::scenario::ClientPath,
    /// RFC 3339 with milliseconds.
    pub started_at: String,
    pub finished_at: String,
    pub verdict: Verdict,
    pub incomplete_reason: Option<String>,
    pub thresholds: Vec<ThresholdResult>,
    /// Metric name -> value of the trial named by `measurements_trial`; null = not observed.
    pub measurements: BTreeMap<String, Option<f64>>,
    /// Which trial `measurements` shows, so a multi-trial run never mixes values of different trials unlabelled.
    pub measurements_trial: Option<u32>,
    /// The metrics of that trial worse than the scenario's recent runs by more than their spread.
    pub regressions: Vec<crate::history::Regression>,
    /// How many earlier completed runs of the scenario the history held.
    pub history_runs: usize,
    /// The headline measurements next to the scenario's previous completed run's (None: the first run).
    pub previous: Option<crate::history::Comparison>,
    pub trials: Vec<TrialReport>,
    /// Per metric, its distribution over the trials (only metrics observed in at least one trial).
    pub distribution: BTreeMap<String, Distribution>,
    /// Successful / attempted operations over the whole run (every trial, reads, writes and searches).
    pub availability: Availability,
    pub timeline: Vec<TimelineEntry>,
    /// Every read-back of the ledger: one per trial and the run's final one, with who answered and when.
    pub read_backs: Vec<ReadBackRecord>,
    pub log_agreement: Vec<LogAgreement>,
    /// The servers' log lines around each paired event (the evidence bundle's excerpts).
    pub log_excerpts: Vec<LogExcerpt>,
    /// Events of the component that no server log records, so their stamps cannot be checked (said plainly).
    pub log_agreement_unchecked: Vec<String>,
    /// Component versions and HA settings, built by the target.
    pub fingerprint: serde_json::Value,
    pub exit_code: i32,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrialReport {
    pub trial: u32,
    pub measurements: BTreeMap<String, Option<f64>>,
    pub writes: WriteClassification,
    pub latency_buckets: Vec<LatencyBucket>,
    /// Ops per 100 ms (ok, failed, unknown) and latency p50/p99 per slice: the HTML timeline chart's data.
    pub op_buckets: Vec<crate::analysis::OpBucket>,
    /// Why a measurement of this trial is missing where the value alone cannot say.
    pub notes: Vec<String>,
    /// A drill's integrity checks of its restore.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub integrity: Vec<crate::drill::integrity::IntegrityCheck>,
}

impl From<&TrialMeasurements> for TrialReport {
    fn from(m: &TrialMeasurements) -> Self {
        TrialReport {
            trial: m.trial,
            measurements: measurement_map(m),
            writes: m.writes.clone(),
            latency_buckets: m.latency_buckets.clone(),
            op_buckets: m.op_buckets.clone(),
            notes: m.notes.clone(),
            integrity: m.integrity.clone(),
        }
    }
}

/// One read-back of the run's writes from the servers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReadBackRecord {
    /// The trial it followed; None = the final read-back at the end of the run.
    pub trial: Option<u32>,
    /// Whose writes were read back.
    pub component: ComponentKind,
    /// Which member(s) answered; None when it failed.
    pub from_member: Option<String>,
    /// When the answer arrived (RFC 3339).
    pub at: Option<String>,
    /// How many of the run's write ids were present.
    pub ids_present: Option<usize>,
    pub error: Option<String>,
}

impl ReadBackRecord {
    pub fn of(
        trial: Option<u32>,
        component: ComponentKind,
        clock: &Clock,
        result: &Result<crate::ledger::ReadBack, String>,
    ) -> Self {
        let read_back = result.as_ref().ok();
        ReadBackRecord {
            trial,
            component,
            from_member: read_back.map(|r| r.from_member.clone()),
            at: read_back.map(|r| clock.rfc3339(r.at)),
            ids_present: read_back.map(|r| r.present.len()),
            error: result.as_ref().err().cloned(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Availability {
    pub ok: u64,
    pub attempted: u64,
    /// None when nothing was attempted.
    pub pct: Option<f64>,
}

impl Availability {
    pub fn of(entries: &[crate::ledger::LedgerEntry]) -> Availability {
        let ok = entries
            .iter()
            .filter(|e| e.outcome == crate::ledger::Outcome::Ok)
            .count() as u64;
        let attempted = entries.len() as u64;
        Availability {
            ok,
            attempted,
            pct: (attempted > 0).then(|| ok as f64 * 100.0 / attempted as f64),
        }
    }
}

/// One metric over the trials. `observed` counts trials with a value; the statistics cover only those, and
/// `not_observed_in` names the others so a partial distribution is never mistaken for a full one.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Distribution {
    pub observed: usize,
    pub not_observed_in: Vec<u32>,
    pub min: f64,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
    pub mean: f64,
}

/// Min, nearest-rank p50/p95, max and mean of every metric over the trials.
pub fn distribution(trials: &[TrialMeasurements]) -> BTreeMap<String, Distribution> {
    use crate::scenario::{Metric, Statistic};
    let mut out = BTreeMap::new();
    let sources: Vec<Option<Source>> = std::iter::once(None)
        .chain(
            trials
                .first()
                .into_iter()
                .flat_map(|t| t.parts().map(|(s, _)| Some(s))),
        )
        .collect();
    for (source, metric) in sources
        .iter()
        .flat_map(|s| Metric::all().iter().map(move |m| (s.as_ref(), *m)))
    {
        let mut values = Vec::new();
        let mut missing = Vec::new();
        for t in trials {
            match t.value_of(source, metric) {
                Some(v) => values.push(v),
                None => missing.push(t.trial),
            }
        }
        if values.is_empty() {
            continue;
        }
        let stat = |s: Statistic| s.of(&values).expect("values is not empty");
        out.insert(
            crate::verdict::metric_name(source, metric),
            Distribution {
                observed: values.len(),
                not_observed_in: missing,
                min: stat(Statistic::Min),
                p50: stat(Statistic::P50),
                p95: stat(Statistic::P95),
                max: stat(Statistic::Max),
                mean: stat(Statistic::Mean),
            },
        );
    }
    out
}

/// Metric name -> value, the shape every report uses.
/// The trial's figures by name; in a scenario of several components, each component's own figures follow the
/// system's under its name (`redis.promotion_s`).
pub fn measurement_map(m: &TrialMeasurements) -> BTreeMap<String, Option<f64>> {
    let mut out: BTreeMap<String, Option<f64>> = m
        .values
        .iter()
        .map(|(k, v)| (k.name().to_string(), *v))
        .collect();
    for (source, part) in m.parts() {
        out.extend(
            part.values
                .iter()
                .map(|(k, v)| (crate::verdict::metric_name(Some(&source), *k), *v)),
        );
    }
    out
}

/// The trial a run's headline `measurements` should show: the first failing threshold's trial, so the numbers
/// next to a FAIL are the ones that failed; otherwise the first trial.
pub fn judged_trial(results: &[ThresholdResult], trials: &[TrialMeasurements]) -> Option<u32> {
    results
        .iter()
        .find(|r| !r.pass)
        .and_then(|r| r.trial)
        .or_else(|| trials.first().map(|t| t.trial))
}

/// The server log lines within a few seconds of one event the run paired with a log line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogExcerpt {
    pub trial: u32,
    pub event: String,
    /// The instant the window is centred on (the server's line, else the harness's stamp), RFC 3339.
    pub at: String,
    /// "RFC 3339 time  node process: line", in time order.
    pub lines: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelineEntry {
    /// RFC 3339 with milliseconds.
    pub at: String,
    /// Seconds from that trial's first fault, negative before it; None when the trial had no fault.
    pub t_s: Option<f64>,
    pub trial: u32,
    pub event: serde_json::Value,
}

pub fn build_timeline(
    clock: &Clock,
    events: &[Event],
    fault_at_by_trial: &BTreeMap<u32, Stamp>,
) -> Vec<TimelineEntry> {
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| e.at);
    sorted
        .into_iter()
        .map(|e| TimelineEntry {
            at: clock.rfc3339(e.at),
            t_s: fault_at_by_trial.get(&e.trial).map(|f| e.at.secs_since(*f)),
            trial: e.trial,
            // EventKind holds only strings, enums and vectors, which always serialise.
            event: serde_json::to_value(&e.kind).unwrap_or(serde_json::Value::Null),
        })
        .collect()
}

/// A timeline event (as serialised) in a few words, for the HTML chart's markers and the live progress; None
/// for events that are not milestones. `verbose` adds the servers' own messages, drill phases and notes.
pub fn describe_event(e: &serde_json::Value, verbose: bool) -> Option<String> {
    let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
    Some(match e["type"].as_str()? {
        "fault_requested" => format!("fault requested: {}", s("fault")),
        "fault_applied" => format!("fault effective: {}", s("fault")),
        "failure_detected" => format!("failure detected ({})", s("component")),
        "new_primary_serving" => format!("promotion: new primary serving ({})", s("component")),
        "first_write_after_fault" if e["ok"] == true => {
            format!(
                "first successful write after the fault ({})",
                s("component")
            )
        }
        "router_routed" => {
            let to: Vec<&str> = e["to"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            if to.is_empty() {
                format!(
                    "router {}: no member takes read-write connections",
                    s("router")
                )
            } else {
                format!("router {}: read-write to {}", s("router"), to.join(", "))
            }
        }
        "fault_reverted" => "fault reverted".into(),
        "heal_complete" => format!("healed: {}", s("detail")),
        "step_started" => format!("step started: {}", s("step")),
        "step_finished" => format!(
            "step {}: {}",
            if e["ok"] == true { "done" } else { "FAILED" },
            s("step")
        ),
        "step_phase" if verbose => format!("step {}: {}", s("step"), s("phase")),
        "server_observation" if verbose => format!("[{}] {}", s("source"), s("message")),
        "note" if verbose => s("message"),
        _ => return None,
    })
}

/// Text for a Markdown table cell: pipes escaped, on one line.
fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// One run of a suite: where its report was written and the report itself.
#[derive(Clone, Debug)]
pub struct SuiteEntry {
    pub run_dir: PathBuf,
    pub report: RunReport,
}

/// Pass only if every scenario passed; any incomplete scenario makes the suite incomplete; an empty suite fails.
pub fn suite_verdict(reports: &[&RunReport]) -> Verdict {
    if reports.is_empty() {
        Verdict::Fail
    } else if reports.iter().any(|r| r.verdict == Verdict::Incomplete) {
        Verdict::Incomplete
    } else if reports.iter().any(|r| r.verdict != Verdict::Pass) {
        Verdict::Fail
    } else {
        Verdict::Pass
    }
}

/// Writes `report.json`, `junit.xml` and `report.html` into `dir`, each atomically.
pub fn write_run(dir: &Path, report: &RunReport) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    write_atomic(dir, "report.json", run_json(report)?.as_bytes())?;
    write_atomic(
        dir,
        "report.html",
        html::run_html(report).map_err(io::Error::other)?.as_bytes(),
    )?;
    write_atomic(
        dir,
        "metrics.prom",
        openmetrics::run_openmetrics(report).as_bytes(),
    )?;
    write_atomic(
        dir,
        "junit.xml",
        run_junit(report)
            .to_string()
            .map_err(io::Error::other)?
            .as_bytes(),
    )
}

/// Writes `suite-report.json` and a combined `junit.xml` (one testsuite per scenario) into `dir`.
pub fn write_suite(dir: &Path, name: &str, runs: &[SuiteEntry]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    write_atomic(dir, "suite-report.json", suite_json(name, runs)?.as_bytes())?;
    write_atomic(
        dir,
        "suite-report.html",
        html::suite_html(name, runs, dir)
            .map_err(io::Error::other)?
            .as_bytes(),
    )?;
    let reports: Vec<&RunReport> = runs.iter().map(|r| &r.report).collect();
    write_atomic(
        dir,
        "junit.xml",
        suite_junit(name, &reports)
            .to_string()
            .map_err(io::Error::other)?
            .as_bytes(),
    )
}

/// Write to a temporary file in the same directory, fsync, rename: a reader sees the old file or the whole new
/// one, never half a report.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    // Persist the rename itself; not every platform can open a directory for syncing, so this is best effort.
    if let Ok(d) = File::open(dir) {
        d.sync_all().ok();
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::scenario::{Metric, Op};

    pub fn threshold(
        metric: Metric,
        op: Op,
        limit: f64,
        measured: Option<f64>,
        pass: bool,
    ) -> ThresholdResult {
        ThresholdResult {
            source: None,
            metric,
            op,
            limit,
            statistic: crate::scenario::Statistic::Every,
            measured,
            pass,
            trial: Some(1),
            message: format!("{metric} test message"),
        }
    }

    pub fn run_report(verdict: Verdict, thresholds: Vec<ThresholdResult>) -> RunReport {
        let measurements = [
            ("detection_s".to_string(), Some(8.412)),
            ("promotion_s".to_string(), None),
        ]
        .into_iter()
        .collect::<BTreeMap<_, _>>();
        RunReport {
            run_id: "20250101-000000-primary-kill".into(),
            scenario: "primary-kill".into(),
            scenario_file: "scenarios/primary-kill.yaml".into(),
            component: ComponentKind::Postgres,
            components: vec![ComponentKind::Postgres],
            http_probes: Vec::new(),
            client_path: Default::default(),
            started_at: "2025-01-01T00:00:00.000Z".into(),
            finished_at: "2025-01-01T00:01:30.500Z".into(),
            verdict,
            incomplete_reason: (verdict == Verdict::Incomplete)
                .then(|| "interrupted by SIGINT".to_string()),
            thresholds,
            measurements: measurements.clone(),
            measurements_trial: Some(1),
            regressions: Vec::new(),
            history_runs: 0,
            previous: None,
            log_excerpts: Vec::new(),
            trials: vec![TrialReport {
                trial: 1,
                measurements,
                writes: WriteClassification::default(),
                latency_buckets: Vec::new(),
                op_buckets: Vec::new(),
                notes: Vec::new(),
                integrity: Vec::new(),
            }],
            distribution: BTreeMap::new(),
            availability: Availability::default(),
            timeline: vec![TimelineEntry {
                at: "2025-01-01T00:00:30.000Z".into(),
                t_s: Some(0.0),
                trial: 1,
                event: serde_json::json!({"type": "fault_applied", "fault": "process-kill", "victims": ["pg1"]}),
            }],
            read_backs: Vec::new(),
            log_agreement: Vec::new(),
            log_agreement_unchecked: Vec::new(),
            fingerprint: serde_json::json!({"postgres": "17.2", "patroni": "4.0.4", "ttl": 30}),
            exit_code: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::fixtures::*;
    use super::*;
    use crate::events::EventKind;
    use crate::scenario::{Metric, Op};

    #[test]
    fn timeline_is_relative_to_each_trials_fault() {
        let clock =
            Clock::with_wall_anchor(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let at = |ms| Stamp(Duration::from_millis(ms));
        let events = vec![
            Event {
                at: at(12_500),
                trial: 1,
                kind: EventKind::HealStarted,
            },
            Event {
                at: at(1_000),
                trial: 1,
                kind: EventKind::TrialStarted,
            },
            Event {
                at: at(20_000),
                trial: 2,
                kind: EventKind::TrialStarted,
            },
        ];
        let faults = [(1, at(10_000))].into_iter().collect();
        let t = build_timeline(&clock, &events, &faults);
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].at, "2023-11-14T22:13:21.000Z");
        assert_eq!(t[0].t_s, Some(-9.0));
        assert_eq!(t[0].event, serde_json::json!({"type": "trial_started"}));
        assert_eq!(t[1].t_s, Some(2.5));
        assert_eq!((t[2].trial, t[2].t_s), (2, None));
    }

    #[test]
    fn kubernetes_observations_keep_their_server_time_on_the_timeline() {
        let clock =
            Clock::with_wall_anchor(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let event = |ms, kind| Event {
            at: Stamp(Duration::from_millis(ms)),
            trial: 1,
            kind,
        };
        let events = vec![
            event(
                10_400,
                EventKind::PodReadiness {
                    pod: "postgres-0".into(),
                    node: Some("faultline-worker".into()),
                    ready: false,
                    server_time: Some("2023-11-14T22:13:30.000Z".into()),
                },
            ),
            event(
                10_900,
                EventKind::KubernetesEvent {
                    object: "Pod/postgres-0".into(),
                    reason: "Killing".into(),
                    message: "Stopping container postgres".into(),
                    event_type: "Normal".into(),
                    server_time: None,
                },
            ),
        ];
        let faults = [(1, Stamp(Duration::from_secs(10)))].into_iter().collect();
        let t = build_timeline(&clock, &events, &faults);
        assert_eq!(
            t[0].event,
            serde_json::json!({"type": "pod_readiness", "pod": "postgres-0", "node": "faultline-worker",
                               "ready": false, "server_time": "2023-11-14T22:13:30.000Z"})
        );
        assert_eq!(t[0].at, "2023-11-14T22:13:30.400Z");
        assert_eq!(
            t[1].event,
            serde_json::json!({"type": "kubernetes_event", "object": "Pod/postgres-0", "reason": "Killing",
                               "message": "Stopping container postgres", "event_type": "Normal",
                               "server_time": null})
        );
    }

    #[test]
    fn judged_trial_is_the_first_failing_one() {
        let mut failing = threshold(Metric::RtoS, Op::Le, 10.0, Some(12.0), false);
        failing.trial = Some(3);
        let passing = threshold(Metric::DetectionS, Op::Le, 10.0, Some(1.0), true);
        assert_eq!(judged_trial(&[passing.clone(), failing], &[]), Some(3));
        assert_eq!(judged_trial(&[passing], &[]), None);
    }

    #[test]
    fn suite_is_never_a_pass_with_an_incomplete_or_failed_scenario() {
        let pass = run_report(Verdict::Pass, Vec::new());
        let fail = run_report(Verdict::Fail, Vec::new());
        let incomplete = run_report(Verdict::Incomplete, Vec::new());
        assert_eq!(suite_verdict(&[&pass, &pass]), Verdict::Pass);
        assert_eq!(suite_verdict(&[&pass, &fail]), Verdict::Fail);
        assert_eq!(
            suite_verdict(&[&fail, &incomplete, &pass]),
            Verdict::Incomplete
        );
        assert_eq!(suite_verdict(&[]), Verdict::Fail);
    }

    #[test]
    fn write_run_and_suite_leave_only_finished_files() {
        let dir = tempfile::tempdir().unwrap();
        let report = run_report(
            Verdict::Pass,
            vec![threshold(Metric::DetectionS, Op::Le, 10.0, Some(8.4), true)],
        );
        let run_dir = dir.path().join("run");
        write_run(&run_dir, &report).unwrap();
        let mut names: Vec<String> = fs::read_dir(&run_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec!["junit.xml", "metrics.prom", "report.html", "report.json"]
        );
        let back: serde_json::Value =
            serde_json::from_slice(&fs::read(run_dir.join("report.json")).unwrap()).unwrap();
        assert_eq!(back["verdict"], "pass");

        let entries = [SuiteEntry {
            run_dir: run_dir.clone(),
            report,
        }];
        write_suite(dir.path(), "nightly", &entries).unwrap();
        let suite: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("suite-report.json")).unwrap())
                .unwrap();
        assert_eq!(suite["verdict"], "pass");
        assert_eq!(suite["scenarios"][0]["scenario"], "primary-kill");
        assert_eq!(
            suite["scenarios"][0]["run_dir"],
            run_dir.display().to_string()
        );
        assert!(dir.path().join("junit.xml").exists());
        assert!(!dir.path().join("junit.xml.tmp").exists());
        let page = fs::read_to_string(dir.path().join("suite-report.html")).unwrap();
        assert!(page.contains("href=\"run/report.html\""), "{page}");
    }
}
