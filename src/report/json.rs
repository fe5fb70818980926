//! Machine-readable reports: `report.json` per run and `suite-report.json` per suite, pretty-printed.

use serde::Serialize;

use super::{suite_verdict, RunReport, SuiteEntry};
use crate::verdict::Verdict;

/// `suite-report.json`.
#[derive(Clone, Debug, Serialize)]
pub struct SuiteReport {
    pub name: String,
    pub verdict: Verdict,
    pub scenarios: Vec<SuiteScenario>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SuiteScenario {
    pub scenario: String,
    pub verdict: Verdict,
    pub run_id: String,
    pub run_dir: String,
}

pub fn run_json(report: &RunReport) -> serde_json::Result<String> {
    serde_json::to_string_pretty(report)
}

pub fn suite_json(name: &str, runs: &[SuiteEntry]) -> serde_json::Result<String> {
    let reports: Vec<&RunReport> = runs.iter().map(|r| &r.report).collect();
    let suite = SuiteReport {
        name: name.to_string(),
        verdict: suite_verdict(&reports),
        scenarios: runs
            .iter()
            .map(|r| SuiteScenario {
                scenario: r.report.scenario.clone(),
                verdict: r.report.verdict,
                run_id: r.report.run_id.clone(),
                run_dir: r.run_dir.display().to_string(),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&suite)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::fixtures::*;
    use super::*;
    use crate::scenario::{Metric, Op};
    use crate::verdict::overall;

    fn parse(report: &RunReport) -> Value {
        serde_json::from_str(&run_json(report).unwrap()).unwrap()
    }

    #[test]
    fn run_report_has_the_documented_shape() {
        let report = run_report(
            Verdict::Fail,
            vec![
                threshold(Metric::DetectionS, Op::Le, 10.0, Some(8.412), true),
                threshold(Metric::PromotionS, Op::Le, 30.0, None, false),
            ],
        );
        let v = parse(&report);
        assert_eq!(v["verdict"], Value::String("fail".into()));

        let thresholds = v["thresholds"].as_array().expect("thresholds is an array");
        assert_eq!(thresholds.len(), 2);
        for t in thresholds {
            assert!(t["metric"].is_string(), "{t}");
            assert!(t["op"].is_string(), "{t}");
            assert!(t["limit"].is_number(), "{t}");
            assert!(t["pass"].is_boolean(), "{t}");
            assert!(
                t.get("measured").is_some(),
                "measured must be present even when null: {t}"
            );
        }
        assert_eq!(thresholds[0]["metric"], "detection_s");
        assert_eq!(thresholds[0]["op"], "<=");
        assert_eq!(thresholds[0]["measured"], 8.412);
        assert!(thresholds[1]["measured"].is_null());

        let m = v["measurements"]
            .as_object()
            .expect("measurements is an object");
        assert_eq!(m["detection_s"], 8.412);
        assert!(m["promotion_s"].is_null());
        assert!(v["timeline"].is_array());
        assert_eq!(v["timeline"][0]["event"]["type"], "fault_applied");
        assert!(v["fingerprint"].is_object());
        assert_eq!(v["component"], "postgres");
        assert!(v["trials"][0]["writes"]["lost"].is_u64());
    }

    #[test]
    fn every_verdict_string_is_lowercase() {
        for verdict in [Verdict::Pass, Verdict::Fail, Verdict::Incomplete] {
            let v = parse(&run_report(verdict, Vec::new()));
            let s = v["verdict"].as_str().unwrap();
            assert_eq!(s, s.to_lowercase());
            assert_eq!(s, verdict.as_str());
        }
    }

    #[test]
    fn an_incomplete_run_never_serialises_as_pass() {
        let all_pass = vec![threshold(Metric::DetectionS, Op::Le, 10.0, Some(1.0), true)];
        let report = run_report(overall(&all_pass, false), all_pass);
        let v = parse(&report);
        assert_eq!(v["verdict"], "incomplete");
        assert_eq!(v["incomplete_reason"], "interrupted by SIGINT");
    }
}
