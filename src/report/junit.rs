//! JUnit XML for CI: a scenario is a testsuite, a threshold a testcase. The XML never shows green for a run
//! whose verdict is not pass.

use std::time::SystemTime;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::RunReport;
use crate::verdict::{format_number, ThresholdResult, Verdict, NO_THRESHOLDS};

pub fn run_junit(report: &RunReport) -> Report {
    let mut junit = Report::new(format!("faultline {}", report.run_id));
    junit.add_test_suite(test_suite(report));
    junit
}

/// One testsuite per scenario.
pub fn suite_junit(name: &str, reports: &[&RunReport]) -> Report {
    let mut junit = Report::new(name);
    junit.add_test_suites(reports.iter().map(|r| test_suite(r)));
    junit
}

fn test_suite(report: &RunReport) -> TestSuite {
    let mut suite = TestSuite::new(report.scenario.as_str());
    suite.add_property(Property::new("run_id", report.run_id.as_str()));
    suite.add_property(Property::new("component", report.component.name()));
    suite.add_property(Property::new("verdict", report.verdict.as_str()));
    if let Some(trial) = report.measurements_trial {
        suite.add_property(Property::new("measurements_trial", trial.to_string()));
    }
    for (metric, value) in &report.measurements {
        let shown = value.map_or_else(|| "not observed".to_string(), format_number);
        suite.add_property(Property::new(metric.as_str(), shown));
    }
    for row in &report.log_agreement {
        let shown = match row.delta_s {
            Some(d) => format!("server log - harness = {d:+.3} s"),
            None if row.harness_at.is_some() => "no server log line in the trial".to_string(),
            None => "server log line the harness did not see".to_string(),
        };
        suite.add_property(Property::new(
            format!("log_agreement trial {}: {}", row.trial, row.event),
            shown,
        ));
    }
    if let Some(time) = elapsed(&report.started_at, &report.finished_at) {
        suite.set_time(time);
    }

    let mut cases: Vec<TestCase> = report
        .thresholds
        .iter()
        .map(|t| threshold_case(report, t))
        .collect();
    if report.thresholds.is_empty() {
        cases.push(failed_case(
            report,
            "thresholds defined",
            NO_THRESHOLDS,
            NO_THRESHOLDS,
        ));
    }
    if report.verdict == Verdict::Incomplete {
        let reason = report
            .incomplete_reason
            .as_deref()
            .unwrap_or("the run did not complete");
        cases.push(failed_case(report, "run completed", reason, reason));
    }
    let any_failed = cases
        .iter()
        .any(|c| matches!(c.status, TestCaseStatus::NonSuccess { .. }));
    if report.verdict != Verdict::Pass && !any_failed {
        let why = format!("verdict is {}", report.verdict);
        cases.push(failed_case(report, "verdict", &why, &why));
    }
    suite.add_test_cases(cases);
    suite
}

fn threshold_case(report: &RunReport, t: &ThresholdResult) -> TestCase {
    if t.pass {
        let mut case = TestCase::new(t.label(), TestCaseStatus::success());
        case.set_classname(report.scenario.as_str());
        return case;
    }
    let limit = format!("limit {} {}", t.op.symbol(), t.limit);
    let trial = match t.trial {
        Some(n) if report.trials.len() > 1 => format!(" in trial {n}"),
        _ => String::new(),
    };
    let message = match t.measured {
        Some(v) => format!(
            "measured {}{}{trial}, {limit}",
            format_number(v),
            unit(t.metric.name())
        ),
        None => format!("not observed{trial}, {limit}"),
    };
    failed_case(report, &t.label(), &message, &t.message)
}

fn failed_case(report: &RunReport, name: &str, message: &str, description: &str) -> TestCase {
    let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
    status.set_message(message);
    status.set_description(description);
    let mut case = TestCase::new(name, status);
    case.set_classname(report.scenario.as_str());
    case
}

fn unit(metric: &str) -> &'static str {
    if metric.ends_with("_ms") {
        " ms"
    } else if metric.ends_with("_s") {
        " s"
    } else {
        ""
    }
}

fn elapsed(started_at: &str, finished_at: &str) -> Option<std::time::Duration> {
    let start: SystemTime = humantime::parse_rfc3339(started_at).ok()?;
    let end: SystemTime = humantime::parse_rfc3339(finished_at).ok()?;
    end.duration_since(start).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fixtures::*;
    use super::*;
    use crate::scenario::{Metric, Op};

    fn failure_message(case: &TestCase) -> Option<&str> {
        match &case.status {
            TestCaseStatus::NonSuccess {
                kind: NonSuccessKind::Failure,
                message,
                ..
            } => Some(message.as_ref().map_or("", |m| m.as_str())),
            _ => None,
        }
    }

    fn round_trip(report: &RunReport) -> Report {
        let xml = run_junit(report).to_string().unwrap();
        Report::deserialize_from_str(&xml).unwrap()
    }

    #[test]
    fn failing_thresholds_are_failures_with_measured_and_limit() {
        let report = run_report(
            Verdict::Fail,
            vec![
                threshold(Metric::DetectionS, Op::Le, 10.0, Some(8.4), true),
                threshold(Metric::RtoS, Op::Le, 10.0, Some(12.3), false),
                threshold(Metric::PromotionS, Op::Le, 30.0, None, false),
            ],
        );
        let back = round_trip(&report);
        assert_eq!(back.test_suites.len(), 1);
        let suite = &back.test_suites[0];
        assert_eq!(suite.name.as_str(), "primary-kill");
        assert_eq!((suite.tests, suite.failures), (3, 2));
        assert_eq!(suite.time, Some(Duration::from_millis(90_500)));
        let names: Vec<&str> = suite.test_cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["detection_s <= 10", "rto_s <= 10", "promotion_s <= 30"]
        );
        assert_eq!(failure_message(&suite.test_cases[0]), None);
        assert_eq!(
            failure_message(&suite.test_cases[1]),
            Some("measured 12.300 s, limit <= 10")
        );
        assert_eq!(
            failure_message(&suite.test_cases[2]),
            Some("not observed, limit <= 30")
        );

        let props: Vec<(&str, &str)> = suite
            .properties
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_str()))
            .collect();
        assert!(props.contains(&("detection_s", "8.412")), "{props:?}");
        assert!(
            props.contains(&("promotion_s", "not observed")),
            "{props:?}"
        );
    }

    #[test]
    fn an_incomplete_run_adds_a_failing_run_completed_case() {
        let report = run_report(
            Verdict::Incomplete,
            vec![threshold(Metric::DetectionS, Op::Le, 10.0, Some(1.0), true)],
        );
        let suite = &round_trip(&report).test_suites[0];
        assert_eq!(suite.failures, 1);
        let case = suite
            .test_cases
            .iter()
            .find(|c| c.name.as_str() == "run completed")
            .unwrap();
        assert_eq!(failure_message(case), Some("interrupted by SIGINT"));
    }

    #[test]
    fn a_non_passing_verdict_never_yields_an_all_green_suite() {
        let no_thresholds = run_report(Verdict::Fail, Vec::new());
        assert_eq!(round_trip(&no_thresholds).test_suites[0].failures, 1);

        let inconsistent = run_report(
            Verdict::Fail,
            vec![threshold(Metric::DetectionS, Op::Le, 10.0, Some(1.0), true)],
        );
        let suite = &round_trip(&inconsistent).test_suites[0];
        assert_eq!(suite.failures, 1);
        assert_eq!(
            failure_message(suite.test_cases.last().unwrap()),
            Some("verdict is fail")
        );
    }

    #[test]
    fn suite_junit_has_one_testsuite_per_scenario() {
        let a = run_report(
            Verdict::Pass,
            vec![threshold(Metric::DetectionS, Op::Le, 10.0, Some(1.0), true)],
        );
        let mut b = run_report(
            Verdict::Fail,
            vec![threshold(Metric::RtoS, Op::Le, 10.0, Some(11.0), false)],
        );
        b.scenario = "replica-partition".into();
        let xml = suite_junit("nightly", &[&a, &b]).to_string().unwrap();
        let back = Report::deserialize_from_str(&xml).unwrap();
        assert_eq!(back.name.as_str(), "nightly");
        let names: Vec<&str> = back.test_suites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["primary-kill", "replica-partition"]);
        assert_eq!(back.failures, 1);
    }
}
