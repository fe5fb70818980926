//! The run's measurements in the OpenMetrics text format (`metrics.prom` in the run directory), for Prometheus:
//! copy it into node_exporter's textfile collector directory, or push it to a Pushgateway
//! (`curl --data-binary @metrics.prom http://pushgateway:9091/metrics/job/faultline`). Built from the `RunReport`.

use std::fmt::Write;

use super::RunReport;
use crate::verdict::Verdict;

/// A label value escaped as OpenMetrics requires (backslash, double quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn run_openmetrics(r: &RunReport) -> String {
    let mut o = String::new();
    let sc = label(&r.scenario);
    // A run of several components: its unqualified figures are the system's.
    let own = if r.components.len() > 1 {
        "system"
    } else {
        r.component.name()
    };
    let _ = writeln!(o, "# TYPE faultline_measurement gauge");
    let _ = writeln!(
        o,
        "# HELP faultline_measurement A run's measurement, per trial (metric names as in report.json)."
    );
    for t in &r.trials {
        for (name, value) in &t.measurements {
            if let Some(v) = value.filter(|v| v.is_finite()) {
                // `redis.promotion_s` and `http.api.rto_s` are one component's or probe's: the label says whose.
                let (comp, metric) = name.rsplit_once('.').unwrap_or((own, name));
                let _ = writeln!(
                    o,
                    "faultline_measurement{{scenario=\"{sc}\",component=\"{}\",trial=\"{}\",metric=\"{}\"}} {v}",
                    label(comp),
                    t.trial,
                    label(metric)
                );
            }
        }
    }
    let _ = writeln!(o, "# TYPE faultline_threshold_pass gauge");
    let _ = writeln!(
        o,
        "# HELP faultline_threshold_pass 1 when the threshold held, 0 when it failed."
    );
    for t in &r.thresholds {
        let _ = writeln!(
            o,
            "faultline_threshold_pass{{scenario=\"{sc}\",threshold=\"{}\"}} {}",
            label(&t.label()),
            u8::from(t.pass)
        );
    }
    let _ = writeln!(o, "# TYPE faultline_run_pass gauge");
    let _ = writeln!(
        o,
        "# HELP faultline_run_pass 1 when the run passed, 0 when it failed or is incomplete."
    );
    let _ = writeln!(
        o,
        "faultline_run_pass{{scenario=\"{sc}\",run_id=\"{}\"}} {}",
        label(&r.run_id),
        u8::from(r.verdict == Verdict::Pass)
    );
    let _ = writeln!(o, "# EOF");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;
    use crate::scenario::{Metric, Op};

    #[test]
    fn every_observed_measurement_and_threshold_is_a_sample_and_the_text_ends_with_eof() {
        let mut r = fixtures::run_report(
            Verdict::Fail,
            vec![fixtures::threshold(
                Metric::DetectionS,
                Op::Le,
                5.0,
                Some(8.412),
                false,
            )],
        );
        r.scenario = "a \"quoted\" name".into();
        let text = run_openmetrics(&r);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains(
            "faultline_threshold_pass{scenario=\"a \\\"quoted\\\" name\",threshold=\"detection_s <= 5\"} 0"
        ), "{text}");
        assert!(text.contains("faultline_run_pass{"), "{text}");
        // A component's figure is labelled with its component; the run's own with the system in a run of several.
        r.components.push(crate::scenario::ComponentKind::Redis);
        r.trials[0]
            .measurements
            .insert("redis.promotion_s".into(), Some(4.5));
        let text = run_openmetrics(&r);
        assert!(
            text.contains("component=\"redis\",trial=\"1\",metric=\"promotion_s\"} 4.5"),
            "{text}"
        );
        assert!(
            text.contains("component=\"system\",trial=\"1\",metric=\"detection_s\"} 8.412"),
            "{text}"
        );
        // Not observed = no sample (never a made-up 0).
        for t in &r.trials {
            for (name, v) in &t.measurements {
                let (c, m) = name.rsplit_once('.').unwrap_or(("system", name));
                let sample = format!("component=\"{c}\",trial=\"{}\",metric=\"{m}\"}}", t.trial);
                assert_eq!(text.contains(&sample), v.is_some(), "{name}: {text}");
            }
        }
    }
}
