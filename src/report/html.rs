//! The HTML report: one self-contained page per run (`report.html`) and per suite (`suite-report.html`). No
//! network access of any kind: styles are inline, charts are inline SVG, and a Content-Security-Policy forbids
//! loading anything. Built from the `RunReport` alone (askama templates under `templates/`, checked at compile
//! time and escaped; charts in `charts.rs`).

use askama::Template;

use super::charts::{timeline_svg, Marker, TrialChart};
use super::{RunReport, SuiteEntry, TrialReport};
use crate::verdict::{ThresholdResult, Verdict};

const CSS: &str = include_str!("../../templates/base.css");

struct ThresholdRow {
    label: String,
    measured: String,
    trial: String,
    result: &'static str,
    class: &'static str,
    message: String,
}

struct MarkerRow {
    number: usize,
    t: String,
    at: String,
    what: String,
}

struct TrialView<'a> {
    trial: u32,
    svg: String,
    markers: Vec<MarkerRow>,
    writes: String,
    lost: String,
    integrity: &'a [crate::drill::integrity::IntegrityCheck],
    measurements: Vec<(String, String)>,
    notes: &'a [String],
}

struct DistRow {
    metric: String,
    observed: String,
    min: String,
    p50: String,
    p95: String,
    max: String,
    mean: String,
}

struct AgreeRow {
    trial: u32,
    event: String,
    harness: String,
    server: String,
    delta: String,
    line: String,
}

#[derive(Template)]
#[template(path = "report.html")]
struct RunPage<'a> {
    r: &'a RunReport,
    css: &'static str,
    verdict: &'static str,
    verdict_class: &'static str,
    component: &'static str,
    availability: String,
    thresholds: Vec<ThresholdRow>,
    trials: Vec<TrialView<'a>>,
    distribution: Vec<DistRow>,
    log_agreement: Vec<AgreeRow>,
    fingerprint: String,
    version: &'static str,
    history: Vec<String>,
}

struct SuiteRow {
    scenario: String,
    verdict: &'static str,
    class: &'static str,
    failed: String,
    link: String,
    thresholds: Vec<ThresholdRow>,
    charts: Vec<String>,
}

#[derive(Template)]
#[template(path = "suite.html")]
struct SuitePage {
    css: &'static str,
    name: String,
    verdict: &'static str,
    verdict_class: &'static str,
    scenarios: Vec<SuiteRow>,
}

fn verdict_words(v: Verdict) -> (&'static str, &'static str) {
    match v {
        Verdict::Pass => ("PASS", "pass"),
        Verdict::Fail => ("FAIL", "fail"),
        Verdict::Incomplete => ("INCOMPLETE", "incomplete"),
    }
}

fn num(v: Option<f64>) -> String {
    v.map_or("not observed".into(), |v| format!("{v:.3}"))
}

fn threshold_rows(ts: &[ThresholdResult]) -> Vec<ThresholdRow> {
    ts.iter()
        .map(|t| ThresholdRow {
            label: t.label(),
            measured: num(t.measured),
            trial: t.trial.map_or(String::new(), |t| t.to_string()),
            result: if t.pass { "pass" } else { "FAIL" },
            class: if t.pass { "pass" } else { "fail" },
            message: t.message.clone(),
        })
        .collect()
}

fn trial_view<'a>(r: &'a RunReport, t: &'a TrialReport) -> TrialView<'a> {
    let events: Vec<_> = r
        .timeline
        .iter()
        .filter(|e| e.trial == t.trial && e.t_s.is_some())
        .collect();
    let mut markers = Vec::new();
    let mut rows = Vec::new();
    for e in &events {
        if let (Some(what), Some(t_s)) = (super::describe_event(&e.event, false), e.t_s) {
            let number = rows.len() + 1;
            markers.push(Marker { number, t_s });
            rows.push(MarkerRow {
                number,
                t: format!("{t_s:+.3}"),
                at: e.at.clone(),
                what,
            });
        }
    }
    let at = |kind: &str| {
        events
            .iter()
            .filter(|e| e.event["type"] == kind)
            .filter_map(|e| e.t_s)
            .next()
    };
    let last = t.op_buckets.last().map(|b| b.t_s);
    let window = at("fault_applied").map(|a| {
        let z = at("heal_started")
            .or_else(|| at("fault_reverted"))
            .or(last)
            .unwrap_or(a);
        (a, z.max(a))
    });
    let svg = timeline_svg(&TrialChart {
        buckets: &t.op_buckets,
        window,
        markers: &markers,
    })
    .unwrap_or_else(|e| format!("<p>chart not drawn: {}</p>", askama_escape(&e)));
    let w = &t.writes;
    TrialView {
        trial: t.trial,
        svg,
        markers: rows,
        writes: format!(
            "{} attempted, {} acknowledged, {} failed, {} unknown; {} acknowledged lost, {} unknown recovered, \
             {} reported failed yet present, {} unexpected",
            w.attempted, w.acked, w.failed, w.unknown, w.lost, w.recovered, w.failed_but_present, w.unexpected
        ),
        lost: {
            let ids: Vec<String> = w.lost_sample.iter().map(|l| l.id.to_string()).collect();
            match w.lost.saturating_sub(ids.len() as u64) {
                0 => ids.join(", "),
                more => format!("{} and {more} more (report.json)", ids.join(", ")),
            }
        },
        integrity: &t.integrity,
        measurements: t
            .measurements
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, v)| (k.clone(), num(*v)))
            .collect(),
        notes: &t.notes,
    }
}

fn askama_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The run's page.
pub fn run_html(r: &RunReport) -> Result<String, askama::Error> {
    let (verdict, verdict_class) = verdict_words(r.verdict);
    RunPage {
        r,
        css: CSS,
        verdict,
        verdict_class,
        component: r.component.name(),
        availability: match r.availability.pct {
            Some(p) => format!(
                "{p:.3} % ({} of {} operations succeeded)",
                r.availability.ok, r.availability.attempted
            ),
            None => "nothing attempted".into(),
        },
        thresholds: threshold_rows(&r.thresholds),
        trials: r.trials.iter().map(|t| trial_view(r, t)).collect(),
        distribution: if r.trials.len() > 1 {
            r.distribution
                .iter()
                .map(|(k, d)| DistRow {
                    metric: k.clone(),
                    observed: format!("{} of {}", d.observed, d.observed + d.not_observed_in.len()),
                    min: num(Some(d.min)),
                    p50: num(Some(d.p50)),
                    p95: num(Some(d.p95)),
                    max: num(Some(d.max)),
                    mean: num(Some(d.mean)),
                })
                .collect()
        } else {
            Vec::new()
        },
        log_agreement: r
            .log_agreement
            .iter()
            .map(|a| AgreeRow {
                trial: a.trial,
                event: a.event.clone(),
                harness: a
                    .harness_at
                    .clone()
                    .unwrap_or_else(|| "not observed".into()),
                server: a
                    .server_log_at
                    .clone()
                    .unwrap_or_else(|| "no line found".into()),
                delta: a.delta_s.map_or(String::new(), |d| format!("{d:+.3}")),
                line: a.server_log_line.clone().unwrap_or_default(),
            })
            .collect(),
        fingerprint: serde_json::to_string_pretty(&r.fingerprint).unwrap_or_default(),
        version: env!("CARGO_PKG_VERSION"),
        history: super::terminal::history_lines(r)
            .lines()
            .map(str::to_string)
            .collect(),
    }
    .render()
}

/// The suite's page: each scenario's verdict, thresholds and charts, with a link to its own page.
pub fn suite_html(
    name: &str,
    runs: &[SuiteEntry],
    suite_dir: &std::path::Path,
) -> Result<String, askama::Error> {
    let reports: Vec<&RunReport> = runs.iter().map(|e| &e.report).collect();
    let (verdict, verdict_class) = verdict_words(super::suite_verdict(&reports));
    let scenarios = runs
        .iter()
        .map(|e| {
            let r = &e.report;
            let (v, c) = verdict_words(r.verdict);
            let page = e.run_dir.join("report.html");
            let link = relative(suite_dir, &page);
            SuiteRow {
                scenario: r.scenario.clone(),
                verdict: v,
                class: c,
                failed: r
                    .thresholds
                    .iter()
                    .filter(|t| !t.pass)
                    .map(|t| t.label())
                    .collect::<Vec<_>>()
                    .join("; "),
                link,
                thresholds: threshold_rows(&r.thresholds),
                charts: r.trials.iter().map(|t| trial_view(r, t).svg).collect(),
            }
        })
        .collect();
    SuitePage {
        css: CSS,
        name: name.to_string(),
        verdict,
        verdict_class,
        scenarios,
    }
    .render()
}

/// `to` relative to the directory `from` (both under the same reports directory as a rule).
fn relative(from: &std::path::Path, to: &std::path::Path) -> String {
    let from: Vec<_> = from.components().collect();
    let to_c: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to_c).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> =
        std::iter::repeat_n("..".to_string(), from.len() - common).collect();
    parts.extend(
        to_c[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;
    use crate::scenario::{Metric, Op};

    #[test]
    fn the_page_holds_the_verdict_the_thresholds_and_a_chart_and_escapes_text() {
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
        r.scenario = "kill <b>primary</b>".into();
        let html = run_html(&r).unwrap();
        assert!(
            html.contains("<span class=\"verdict fail\">FAIL</span>"),
            "{html}"
        );
        assert!(
            html.contains("kill &#60;b&#62;primary&#60;/b&#62;")
                || html.contains("kill &lt;b&gt;primary"),
            "escaped"
        );
        assert!(!html.contains("<b>primary</b>"));
        assert!(html.contains("8.412"));
        assert!(html.contains("<svg"), "a chart per trial");
        assert!(html.contains("Content-Security-Policy"));
        // Nothing that would make the browser fetch anything.
        for bad in ["<script", "<link", "@import", "url(", "https://", "src="] {
            assert!(!html.contains(bad), "{bad} in the page");
        }
    }

    #[test]
    fn suite_links_are_relative() {
        assert_eq!(
            relative(
                std::path::Path::new("/r/suite-1"),
                std::path::Path::new("/r/run-2/report.html")
            ),
            "../run-2/report.html"
        );
    }
}
