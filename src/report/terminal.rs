//! What a person reads at the end of a run: the thresholds as a table, then one line with the verdict.

use tabled::builder::Builder;
use tabled::settings::Style;

use super::{suite_verdict, RunReport};
use crate::verdict::{format_number, Verdict};

pub fn terminal_summary(report: &RunReport) -> String {
    let with_trial = report.trials.len() > 1;
    let mut table = Builder::default();
    let mut header = vec!["metric", "op", "limit", "measured", "result"];
    if with_trial {
        header.push("trial");
    }
    table.push_record(header);
    for t in &report.thresholds {
        let mut row = vec![
            t.metric.name().to_string(),
            t.op.symbol().to_string(),
            t.limit.to_string(),
            t.measured
                .map_or_else(|| "not observed".to_string(), format_number),
            if t.pass { "pass" } else { "FAIL" }.to_string(),
        ];
        if with_trial {
            row.push(t.trial.map_or_else(|| "-".to_string(), |n| n.to_string()));
        }
        table.push_record(row);
    }
    let table = table.build().with(Style::sharp()).to_string();

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
        "{} ({}) run {}\n{table}\n{verdict}\n",
        report.scenario, report.component, report.run_id
    )
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
