//! A Markdown summary for CI pages: appended to `$GITHUB_STEP_SUMMARY` when it is set (GitHub Actions shows it on
//! the run's page). Built from the `RunReport` alone.

use std::fmt::Write;

use super::RunReport;
use crate::verdict::Verdict;

fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Incomplete => "INCOMPLETE",
    }
}

/// One run: its verdict, thresholds, regressions and where its reports are.
pub fn run_markdown(r: &RunReport, run_dir: &std::path::Path) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "### faultline `{}`: **{}**\n",
        super::md_cell(&r.scenario),
        verdict(r.verdict)
    );
    if let Some(why) = &r.incomplete_reason {
        let _ = writeln!(o, "Incomplete: {}\n", super::md_cell(why));
    }
    let _ = writeln!(o, "| threshold | measured | result |\n|---|---|---|");
    for t in &r.thresholds {
        let _ = writeln!(
            o,
            "| `{}` | {} | {} |",
            super::md_cell(&t.label()),
            t.measured
                .map_or("not observed".into(), |v| format!("{v:.3}")),
            if t.pass { "pass" } else { "**FAIL**" }
        );
    }
    if let Some(p) = r.availability.pct {
        let _ = writeln!(o, "\nAvailability over the run: {p:.3} %.");
    }
    for g in &r.regressions {
        let _ = writeln!(
            o,
            "\n**Regression**: `{}` = {:.3} (median of the last {} runs {:.3}, spread {:.3}).",
            g.metric, g.value, g.runs, g.median, g.spread
        );
    }
    let _ = writeln!(
        o,
        "\nReports: `{}` (report.html, report.json, junit.xml, evidence/, SHA256SUMS).\n",
        run_dir.display()
    );
    o
}

/// Appends `text` to the file `$GITHUB_STEP_SUMMARY` names, if set; an error is a warning, never a failure.
pub fn append_step_summary(text: &str) {
    let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) else {
        return;
    };
    let r = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
    if let Err(e) = r {
        eprintln!(
            "warning: cannot append to GITHUB_STEP_SUMMARY ({}): {e}",
            std::path::Path::new(&path).display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;
    use crate::scenario::{Metric, Op};

    #[test]
    fn the_summary_names_the_verdict_each_threshold_and_the_run_directory() {
        let r = fixtures::run_report(
            Verdict::Fail,
            vec![
                fixtures::threshold(Metric::DetectionS, Op::Le, 5.0, Some(8.412), false),
                fixtures::threshold(Metric::PromotionS, Op::Le, 20.0, None, false),
            ],
        );
        let md = run_markdown(&r, std::path::Path::new("reports/x"));
        assert!(
            md.contains("### faultline `primary-kill`: **FAIL**"),
            "{md}"
        );
        assert!(
            md.contains("| `detection_s <= 5` | 8.412 | **FAIL** |"),
            "{md}"
        );
        assert!(
            md.contains("| `promotion_s <= 20` | not observed | **FAIL** |"),
            "{md}"
        );
        assert!(md.contains("`reports/x`"));
    }
}
