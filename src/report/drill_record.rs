//! The printable drill record (Markdown) a DR drill leaves for its approvers and auditors: what was tested, by
//! what, against which targets, what was achieved, what deviated, and blank approval fields. Built from the
//! `RunReport` alone.

use std::fmt::Write;

use serde_json::Value;

use super::RunReport;
use crate::verdict::Verdict;

/// The controls a restore test serves as evidence for (named, not interpreted).
const CONTROLS: [(&str, &str); 6] = [
    (
        "SOC 2 A1.2",
        "recovery infrastructure and backups are in place",
    ),
    ("SOC 2 A1.3", "recovery plan procedures are tested"),
    (
        "ISO/IEC 27001:2022 A.5.30",
        "ICT readiness for business continuity",
    ),
    ("ISO/IEC 27001:2022 A.8.13", "information backup, tested"),
    (
        "ISO/IEC 27001:2022 A.8.14",
        "redundancy of information processing facilities",
    ),
    (
        "DORA Art. 11-12",
        "response and recovery; backup, restoration and recovery, tested",
    ),
];

/// Metrics that are recovery objectives, by the component they belong to (None: the scenario's component).
const OBJECTIVES: [(&str, Option<&str>); 8] = [
    ("pg_restore_s", Some("postgres")),
    ("pitr_s", Some("postgres")),
    ("redis_restore_s", Some("redis")),
    ("qdrant_restore_s", Some("qdrant")),
    ("rto_s", None),
    ("rpo_s", None),
    ("lost_acked_writes", None),
    ("integrity_failures", None),
];

fn identity() -> String {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            // The account name of the effective uid, from /etc/passwd (CI jobs often set no USER).
            std::fs::read_to_string("/etc/passwd")
                .ok()?
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.get(2)? == &uid.to_string().as_str()).then(|| f[0].to_string())
                })
        })
        .unwrap_or_else(|| format!("uid {uid}"));
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown host".into());
    format!(
        "faultline {} (automated runbook), started by {user} on {host}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The record. `configuration` is the statement's list of configuration files with their digests.
pub fn render(report: &RunReport, configuration: &[Value]) -> String {
    let mut o = String::new();
    let verdict = match report.verdict {
        Verdict::Pass => "PASSED",
        Verdict::Fail => "FAILED",
        Verdict::Incomplete => "INCOMPLETE (counts as failed)",
    };
    let _ = writeln!(o, "# Disaster-recovery drill record\n");
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| Drill id | `{}` |", report.run_id);
    let _ = writeln!(
        o,
        "| Scenario | `{}` ({}) |",
        report.scenario,
        super::md_cell(&report.scenario_file)
    );
    let _ = writeln!(o, "| Started (UTC) | {} |", report.started_at);
    let _ = writeln!(o, "| Ended (UTC) | {} |", report.finished_at);
    let _ = writeln!(o, "| Result | **{verdict}** |");
    let _ = writeln!(o, "| Automation | {} |", super::md_cell(&identity()));

    let _ = writeln!(o, "\n## Scope\n");
    let _ = writeln!(
        o,
        "Component under load (its data proves RTO and RPO): `{}`.\n",
        report.component.name()
    );
    let _ = writeln!(o, "Systems and versions, as the servers reported them:\n");
    let _ = writeln!(
        o,
        "```json\n{}\n```\n",
        serde_json::to_string_pretty(&report.fingerprint).unwrap_or_default()
    );
    let _ = writeln!(o, "Configuration files (SHA-256 of the files as read):\n");
    for c in configuration {
        let _ = writeln!(
            o,
            "- `{}`: `{}`",
            c["name"].as_str().unwrap_or("?"),
            c["digest"]["sha256"].as_str().unwrap_or("?")
        );
    }

    let _ = writeln!(o, "\n## Recovery objectives: target and achieved\n");
    let _ = writeln!(
        o,
        "| Component | Objective | Target | Achieved | Result |\n|---|---|---|---|---|"
    );
    for (metric, comp) in OBJECTIVES {
        let achieved = report.measurements.get(metric).copied().flatten();
        let targets: Vec<_> = report
            .thresholds
            .iter()
            .filter(|t| t.metric.to_string() == metric)
            .collect();
        if achieved.is_none() && targets.is_empty() {
            continue;
        }
        let comp = comp.unwrap_or(report.component.name());
        let achieved = achieved.map_or("not observed".into(), |v| format!("{v:.3}"));
        if targets.is_empty() {
            let _ = writeln!(o, "| {comp} | `{metric}` | (none set) | {achieved} | |");
        }
        for t in targets {
            let _ = writeln!(
                o,
                "| {comp} | `{metric}` | `{}` | {achieved} | {} |",
                super::md_cell(&t.label()),
                if t.pass { "met" } else { "**NOT MET**" }
            );
        }
    }
    let _ = writeln!(
        o,
        "\n`rto_s` runs from the fault to service resumed; `rpo_s` and `lost_acked_writes` come from the ledger of \
         every acknowledged write (end to end for the scenario's component)."
    );

    let _ = writeln!(o, "\n## Step timeline\n");
    let _ = writeln!(
        o,
        "| t (s from the fault) | UTC | Step | What |\n|---|---|---|---|"
    );
    for e in &report.timeline {
        let kind = e.event["type"].as_str().unwrap_or("");
        let what = match kind {
            "step_started" => "started".to_string(),
            "step_phase" => e.event["phase"].as_str().unwrap_or("").to_string(),
            "step_finished" => format!(
                "{}: {}",
                if e.event["ok"] == true {
                    "done"
                } else {
                    "FAILED"
                },
                e.event["detail"].as_str().unwrap_or("")
            ),
            "fault_applied" => {
                let _ = writeln!(
                    o,
                    "| {} | {} | (fault) | {} |",
                    e.t_s.map_or("".into(), |t| format!("{t:+.1}")),
                    e.at,
                    super::md_cell(e.event["fault"].as_str().unwrap_or(""))
                );
                continue;
            }
            _ => continue,
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            e.t_s.map_or("".into(), |t| format!("{t:+.1}")),
            e.at,
            super::md_cell(e.event["step"].as_str().unwrap_or("")),
            super::md_cell(&what)
        );
    }

    let _ = writeln!(o, "\n## Integrity\n");
    let mut any = false;
    for t in &report.trials {
        for c in &t.integrity {
            any = true;
            let _ = writeln!(
                o,
                "- trial {}, {}: {} **{}**: {}",
                t.trial,
                c.component,
                c.check,
                if c.ok { "ok" } else { "FAILED" },
                c.detail
            );
        }
    }
    if !any {
        let _ = writeln!(o, "No integrity check ran (no restore completed).");
    }

    let _ = writeln!(o, "\n## Deviations\n");
    let mut deviations = Vec::new();
    if let Some(r) = &report.incomplete_reason {
        deviations.push(format!("The run is incomplete: {r}"));
    }
    for t in report.thresholds.iter().filter(|t| !t.pass) {
        deviations.push(format!("Threshold not met: `{}`: {}", t.label(), t.message));
    }
    for t in &report.trials {
        for c in t.integrity.iter().filter(|c| !c.ok) {
            deviations.push(format!(
                "Integrity, trial {}: {}: {}",
                t.trial, c.check, c.detail
            ));
        }
    }
    for e in &report.timeline {
        if e.event["type"] == "step_finished" && e.event["ok"] == false {
            deviations.push(format!(
                "Step `{}` failed: {}",
                e.event["step"].as_str().unwrap_or(""),
                e.event["detail"].as_str().unwrap_or("")
            ));
        }
    }
    if deviations.is_empty() {
        let _ = writeln!(o, "None.");
    }
    for d in deviations {
        let _ = writeln!(o, "- {d}");
    }

    let _ = writeln!(o, "\n## Controls this record serves\n");
    for (c, what) in CONTROLS {
        let _ = writeln!(o, "- {c}: {what}");
    }

    let _ = writeln!(o, "\n## Approval\n");
    let _ = writeln!(
        o,
        "| Name | Role | Date | Signature |\n|---|---|---|---|\n| | | | |\n| | | | |"
    );
    let _ = writeln!(
        o,
        "\nThe run directory's `SHA256SUMS` covers this record and every artefact it cites; \
         `faultline verify <run directory>` re-checks it."
    );
    o
}
