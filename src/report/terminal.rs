//! What a person reads at the end of a run: the thresholds as a table, then one line with the verdict.

use tabled::builder::Builder;
use tabled::settings::Style;

use super::{suite_verdict, RunReport};
use crate::scenario::Statistic;
use crate::verdict::{format_number, Verdict};

pub fn terminal_summary(report: &RunReport) -> String {
    let with_trial = report.trials.len() > 1;
    let mut table = Builder::default();
    let mut header = vec!["metric", "op", "limit", "measured", "result"];
    if with_trial {
        header.push("judged");
    }
    table.push_record(header);
    for t in &report.thresholds {
        let metric = match t.statistic {
            Statistic::Every => t.metric_name(),
            s => format!("{}({})", s.name(), t.metric_name()),
        };
        let mut row = vec![
            metric,
            t.op.symbol().to_string(),
            t.limit.to_string(),
            t.measured
                .map_or_else(|| "not observed".to_string(), format_number),
            if t.pass { "pass" } else { "FAIL" }.to_string(),
        ];
        if with_trial {
            let n = report.trials.len();
            row.push(match (t.statistic, t.trial) {
                (Statistic::Every, Some(k)) if t.pass => format!("every trial; worst: {k}"),
                (Statistic::Every, Some(k)) => format!("every trial; fails in {k}"),
                (Statistic::Every, None) => "every trial".to_string(),
                (s, _) => format!("{} of {n} trials", s.name()),
            });
        }
        table.push_record(row);
    }
    let table = table.build().with(Style::sharp()).to_string();
    let mut paired = paired_windows(report);
    paired += &routing_share(report);
    paired += &replication_lag(report);
    paired += &component_lines(report);
    if let Some(pct) = report.availability.pct {
        let whose = if report.components.len() > 1 {
            format!(
                " (the system: every operation of {})",
                components_joined(report)
            )
        } else {
            String::new()
        };
        paired += &format!(
            "availability over the run: {pct:.3}% ({} of {} operations succeeded){whose}\n",
            report.availability.ok, report.availability.attempted
        );
    }
    let spread = if with_trial {
        trial_spread(report)
    } else {
        String::new()
    };

    let notes: String = report
        .trials
        .iter()
        .flat_map(|t| t.notes.iter().map(|n| format!("trial {}: {n}\n", t.trial)))
        .collect();

    let read_backs: String = report
        .read_backs
        .iter()
        .map(|r| {
            let which = r.trial.map_or_else(
                || "final read-back".to_string(),
                |t| format!("trial {t} read-back"),
            );
            let which = if report.components.len() > 1 {
                format!("{which} ({})", r.component)
            } else {
                which
            };
            match (&r.from_member, &r.at, r.ids_present, &r.error) {
                (Some(m), Some(at), Some(n), _) => {
                    format!("{which}: {n} ids present, answered by {m} at {at}\n")
                }
                (_, _, _, e) => {
                    format!("{which}: FAILED: {}\n", e.as_deref().unwrap_or("no answer"))
                }
            }
        })
        .collect();

    let mut agreement: String = report
        .log_agreement
        .iter()
        .map(|r| match (&r.harness_at, &r.server_log_at, r.delta_s) {
            (Some(h), Some(s), Some(d)) => format!(
                "log agreement, trial {}: {}: harness {h}, server log {s} ({d:+.3} s)\n",
                r.trial, r.event
            ),
            (Some(h), _, _) => format!(
                "log agreement, trial {}: {}: harness {h}, NO server log line in the trial\n",
                r.trial, r.event
            ),
            (None, _, _) => format!(
                "log agreement, trial {}: {}: server log {}, NOT seen by the harness\n",
                r.trial,
                r.event,
                r.server_log_at.as_deref().unwrap_or("?")
            ),
        })
        .collect();
    for u in &report.log_agreement_unchecked {
        agreement += &format!("log agreement not checked: {u}\n");
    }

    let drill = drill_steps(report);
    let history = history_lines(report);

    let failed = report.thresholds.iter().filter(|t| !t.pass).count();
    let total = report.thresholds.len();
    let verdict = match report.verdict {
        Verdict::Pass => format!("PASS: {total} of {total} thresholds held"),
        Verdict::Fail if total == 0 => "FAIL: the scenario has no thresholds".to_string(),
        Verdict::Fail => format!("FAIL: {failed} of {total} thresholds failed"),
        Verdict::Incomplete => format!(
            "INCOMPLETE: {} (measurements above are partial)",
            report
                .incomplete_reason
                .as_deref()
                .unwrap_or("the run did not complete")
        ),
    };
    format!(
        "{} ({}) run {}\n{table}\n{paired}{spread}{drill}{notes}{agreement}{read_backs}{history}{verdict}\n",
        report.scenario,
        components_joined(report),
        report.run_id
    )
}

fn components_joined(report: &RunReport) -> String {
    report
        .components
        .iter()
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A scenario of several components: each component's failover on a line of its own (its figures are
/// namespaced in the report: `redis.promotion_s`); then each HTTP probe's outage as its requests saw it.
fn component_lines(report: &RunReport) -> String {
    let m = |c: &str, k: &str| {
        report
            .measurements
            .get(&format!("{c}.{k}"))
            .copied()
            .flatten()
    };
    let unseen = || "not observed".to_string();
    let secs = |v: Option<f64>| v.map_or_else(unseen, |v| format!("{v:.3} s"));
    let pct = |v: Option<f64>| v.map_or_else(unseen, |v| format!("{v:.3}%"));
    let mut out = String::new();
    if report.components.len() > 1 {
        for c in report.components.iter().map(|c| c.name()) {
            out += &format!(
                "{c}: detection_s {}, promotion_s {}, rto_s {}, downtime_s {}, lost_acked_writes {}, availability \
                 {}\n",
                secs(m(c, "detection_s")),
                secs(m(c, "promotion_s")),
                secs(m(c, "rto_s")),
                secs(m(c, "downtime_s")),
                m(c, "lost_acked_writes").map_or_else(unseen, format_number),
                pct(m(c, "availability_pct")),
            );
        }
    }
    for p in report.http_probes.iter().map(|p| format!("http.{p}")) {
        out += &format!(
            "{p}: availability {}, error_rate {}, rto_s {}, downtime_s {} (the user's service: not part of the \
             system's availability)\n",
            pct(m(&p, "availability_pct")),
            m(&p, "error_rate").map_or_else(unseen, format_number),
            secs(m(&p, "rto_s")),
            secs(m(&p, "downtime_s")),
        );
    }
    out
}

/// The comparison with the scenario's recent runs.
pub(super) fn history_lines(report: &RunReport) -> String {
    let mut out = previous_lines(report);
    if report.history_runs == 0 {
        out += &format!(
            "history: the first completed run of this scenario here (regressions are judged once {} earlier runs \
             exist)\n",
            crate::history::MIN_RUNS
        );
        return out;
    }
    if report.history_runs < crate::history::MIN_RUNS {
        out += &format!(
            "history: {} earlier run(s) of this scenario; regressions are judged from {}\n",
            report.history_runs,
            crate::history::MIN_RUNS
        );
        return out;
    }
    if report.regressions.is_empty() {
        out += &format!(
            "history: no regression against the last {} run(s)\n",
            report.history_runs.min(crate::history::WINDOW)
        );
        return out;
    }
    out + &report
        .regressions
        .iter()
        .map(|r| {
            format!(
                "REGRESSION: {} = {:.3}, median of the last {} runs {:.3}, their spread {:.3}\n",
                r.metric, r.value, r.runs, r.median, r.spread
            )
        })
        .collect::<String>()
}

/// The thresholded metrics next to the previous run's values.
fn previous_lines(report: &RunReport) -> String {
    let Some(p) = &report.previous else {
        return String::new();
    };
    let judged: Vec<String> = report.thresholds.iter().map(|t| t.metric_name()).collect();
    let mut out = format!(
        "compared with the previous run {} ({}, {}):",
        p.run_id, p.started_at, p.verdict
    );
    let rows: Vec<String> = p
        .metrics
        .iter()
        .filter(|c| judged.contains(&c.metric))
        .map(|c| {
            format!(
                " {} {:.3} -> {:.3} ({:+.3})",
                c.metric,
                c.previous,
                c.now,
                c.now - c.previous
            )
        })
        .collect();
    if rows.is_empty() {
        out += " no thresholded metric in common";
    }
    out += &rows.join(";");
    out + "\n"
}

/// A drill's steps with their times and phases (seconds from the fault), then each trial's integrity checks.
fn drill_steps(report: &RunReport) -> String {
    let mut out = String::new();
    let mut started: Vec<(u32, String, Option<f64>)> = Vec::new();
    for e in &report.timeline {
        let kind = e.event["type"].as_str().unwrap_or_default();
        let step = e.event["step"].as_str().unwrap_or_default().to_string();
        let t = e.t_s;
        let at = |t: Option<f64>| {
            t.map(|t| format!("{t:+.1} s"))
                .unwrap_or_else(|| e.at.clone())
        };
        match kind {
            "step_started" => {
                out += &format!("step, trial {}: {step} started at {}\n", e.trial, at(t));
                started.push((e.trial, step, t));
            }
            "step_phase" => {
                out += &format!(
                    "  {}  {}\n",
                    at(t),
                    e.event["phase"].as_str().unwrap_or_default()
                )
            }
            "step_finished" => {
                let began = started
                    .iter()
                    .rev()
                    .find(|(tr, s, _)| *tr == e.trial && *s == step)
                    .and_then(|(_, _, b)| *b);
                let took = match (began, t) {
                    (Some(b), Some(f)) => format!(" in {:.1} s", f - b),
                    _ => String::new(),
                };
                let ok = e.event["ok"].as_bool().unwrap_or(false);
                let detail = e.event["detail"].as_str().unwrap_or_default();
                out += &format!(
                    "step, trial {}: {step} {} at {}{took}{}\n",
                    e.trial,
                    if ok { "done" } else { "FAILED" },
                    at(t),
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {detail}")
                    }
                );
            }
            _ => {}
        }
    }
    for t in &report.trials {
        for c in &t.integrity {
            out += &format!(
                "integrity, trial {}: {} {}: {} ({})\n",
                t.trial,
                c.component,
                if c.ok { "ok" } else { "FAILED" },
                c.check,
                c.detail
            );
        }
    }
    out
}

/// Baseline vs fault window per operation class that had load: throughput and p50/p95/p99 latency, and how much
/// worse the fault window was (degradation in percent of the baseline; positive = worse).
fn paired_windows(report: &RunReport) -> String {
    let get = |name: String| report.measurements.get(&name).copied().flatten();
    let show = |v: Option<f64>| v.map_or_else(|| "-".to_string(), format_number);
    let mut table = Builder::default();
    table.push_record([
        "ops",
        "window",
        "ok ops/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "p99 slot wait ms",
        "p99 server ms",
    ]);
    let mut rows = 0;
    let mut namespaces: Vec<(String, String)> = if report.components.len() > 1 {
        report
            .components
            .iter()
            .map(|c| (format!("{c} "), format!("{c}.")))
            .collect()
    } else {
        vec![(String::new(), String::new())]
    };
    namespaces.extend(
        report
            .http_probes
            .iter()
            .map(|p| (format!("http.{p} "), format!("http.{p}."))),
    );
    let classes = namespaces.iter().flat_map(|(label, ns)| {
        [
            ("write", "write_"),
            ("read", "read_"),
            ("search", "search_"),
        ]
        .map(|(op, p)| (format!("{label}{op}"), format!("{ns}{p}")))
    });
    for (op, prefix) in classes {
        if get(format!("{prefix}throughput_baseline_per_s")).is_none() {
            continue;
        }
        rows += 1;
        for w in ["baseline", "fault"] {
            table.push_record([
                op.to_string(),
                w.to_string(),
                show(get(format!("{prefix}throughput_{w}_per_s"))),
                show(get(format!("{prefix}p50_{w}_ms"))),
                show(get(format!("{prefix}p95_{w}_ms"))),
                show(get(format!("{prefix}p99_{w}_ms"))),
                show(get(format!("{prefix}slot_wait_p99_{w}_ms"))),
                show(get(format!("{prefix}server_p99_{w}_ms"))),
            ]);
        }
        let pct = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:+.1}%"));
        table.push_record([
            op.to_string(),
            "degradation".to_string(),
            pct(get(format!("{prefix}throughput_degradation_pct"))),
            pct(get(format!("{prefix}p50_degradation_pct"))),
            pct(get(format!("{prefix}p95_degradation_pct"))),
            pct(get(format!("{prefix}p99_degradation_pct"))),
            String::new(),
            String::new(),
        ]);
    }
    if rows == 0 {
        return String::new();
    }
    format!("{}\n", table.build().with(Style::sharp()))
}

/// PostgreSQL's own replication lag in each window, when it was measured ("-" where it was not claimed; the
/// notes say why).
fn replication_lag(report: &RunReport) -> String {
    let ns = if report.components.len() > 1 {
        "postgres."
    } else {
        ""
    };
    let get = |name: String| report.measurements.get(&name).copied().flatten();
    let windows: Vec<String> = ["baseline", "fault"]
        .iter()
        .filter_map(|w| {
            let p50 = get(format!("{ns}replication_lag_p50_{w}_ms"));
            let max = get(format!("{ns}replication_lag_max_{w}_ms"));
            let show = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
            (p50.is_some() || max.is_some())
                .then(|| format!("{w} p50 {} ms, max {} ms", show(p50), show(max)))
        })
        .collect();
    if windows.is_empty() {
        return String::new();
    }
    format!(
        "replication lag (replay_lag in the primary's pg_stat_replication, the most-behind standby): {}\n",
        windows.join("; ")
    )
}

/// For a multi-trial run: each judged metric's distribution over the trials.
fn trial_spread(report: &RunReport) -> String {
    let mut table = Builder::default();
    table.push_record(["metric", "trials", "min", "p50", "p95", "max"]);
    let mut seen = Vec::new();
    for t in &report.thresholds {
        let name = t.metric_name();
        if seen.contains(&name) {
            continue;
        }
        seen.push(name.clone());
        let Some(d) = report.distribution.get(&name) else {
            continue;
        };
        table.push_record([
            name,
            format!("{}/{}", d.observed, report.trials.len()),
            format_number(d.min),
            format_number(d.p50),
            format_number(d.p95),
            format_number(d.max),
        ]);
    }
    format!("{}\n", table.build().with(Style::sharp()))
}

pub fn terminal_suite_summary(reports: &[RunReport]) -> String {
    let mut table = Builder::default();
    table.push_record(["scenario", "verdict", "thresholds failed", "run"]);
    for r in reports {
        let failed = r.thresholds.iter().filter(|t| !t.pass).count();
        table.push_record([
            r.scenario.clone(),
            r.verdict.as_str().to_uppercase(),
            format!("{failed} of {}", r.thresholds.len()),
            r.run_id.clone(),
        ]);
    }
    let table = table.build().with(Style::sharp()).to_string();
    let refs: Vec<&RunReport> = reports.iter().collect();
    let passed = reports
        .iter()
        .filter(|r| r.verdict == Verdict::Pass)
        .count();
    let verdict = suite_verdict(&refs).as_str().to_uppercase();
    format!(
        "{table}\nsuite {verdict}: {passed} of {} scenarios passed\n",
        reports.len()
    )
}

/// With clients behind the routing layer: the server-side promotion, the router's switch and the clients'
/// recovery side by side, so the router's share of the outage shows.
fn routing_share(report: &RunReport) -> String {
    if report.client_path == crate::scenario::ClientPath::Direct {
        return String::new();
    }
    let prefix = if report.components.len() > 1 {
        "postgres."
    } else {
        ""
    };
    let m = |k: &str| {
        report
            .measurements
            .get(&format!("{prefix}{k}"))
            .copied()
            .flatten()
    };
    let fmt =
        |v: Option<f64>| v.map_or_else(|| "not observed".to_string(), |v| format!("{v:.3} s"));
    let share = match (m("rto_s"), m("promotion_s")) {
        (Some(r), Some(p)) => format!("; the routing layer's share: {:.3} s", r - p),
        _ => String::new(),
    };
    format!(
        "clients through {}: promotion_s {} (server side), router_switch_s {}, rto_s {}{share}\n",
        report.client_path.name(),
        fmt(m("promotion_s")),
        fmt(m("router_switch_s")),
        fmt(m("rto_s")),
    )
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::TrialReport;
    use super::*;
    use crate::scenario::{Metric, Op};

    #[test]
    fn summary_lists_each_threshold_and_the_verdict() {
        let report = run_report(
            Verdict::Fail,
            vec![
                threshold(Metric::DetectionS, Op::Le, 10.0, Some(8.412), true),
                threshold(Metric::PromotionS, Op::Le, 30.0, None, false),
            ],
        );
        let s = terminal_summary(&report);
        assert!(s.contains("detection_s"), "{s}");
        assert!(s.contains("8.412"), "{s}");
        assert!(s.contains("not observed"), "{s}");
        assert!(!s.contains("trial"), "single trial: no trial column\n{s}");
        assert!(
            s.trim_end().ends_with("FAIL: 1 of 2 thresholds failed"),
            "{s}"
        );
    }

    #[test]
    fn multi_trial_runs_get_a_trial_column() {
        let mut report = run_report(
            Verdict::Pass,
            vec![threshold(Metric::RtoS, Op::Le, 10.0, Some(4.0), true)],
        );
        let second = TrialReport {
            trial: 2,
            ..report.trials[0].clone()
        };
        report.trials.push(second);
        let s = terminal_summary(&report);
        assert!(s.contains("trial"), "{s}");
        assert!(
            s.trim_end().ends_with("PASS: 1 of 1 thresholds held"),
            "{s}"
        );
    }

    #[test]
    fn trial_notes_say_why_a_measurement_is_missing() {
        let mut report = run_report(
            Verdict::Fail,
            vec![threshold(Metric::PodsReadyS, Op::Le, 120.0, None, false)],
        );
        report.trials[0]
            .notes
            .push("pods_ready_s not observed: qdrant-2 not Ready again".into());
        let s = terminal_summary(&report);
        assert!(
            s.contains("trial 1: pods_ready_s not observed: qdrant-2 not Ready again\n")
                && s.contains("\nFAIL"),
            "{s}"
        );
    }

    #[test]
    fn incomplete_is_never_shown_as_pass() {
        let report = run_report(
            Verdict::Incomplete,
            vec![threshold(Metric::RtoS, Op::Le, 10.0, Some(4.0), true)],
        );
        let s = terminal_summary(&report);
        assert!(s.contains("INCOMPLETE: interrupted by SIGINT"), "{s}");
        assert!(!s.contains("PASS"), "{s}");
    }

    #[test]
    fn suite_summary_counts_passed_scenarios() {
        let a = run_report(Verdict::Pass, Vec::new());
        let b = run_report(Verdict::Fail, Vec::new());
        let s = terminal_suite_summary(&[a, b]);
        assert!(
            s.trim_end()
                .ends_with("suite FAIL: 1 of 2 scenarios passed"),
            "{s}"
        );
    }
}
