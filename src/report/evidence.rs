//! The evidence bundle written with every run, for auditors: the configurations the run used (redacted), the
//! component and faultline versions, the server log lines the run paired with its events, for a drill a printable
//! drill record, an in-toto Statement v1 with the test-result predicate over the run's artefacts, and a SHA-256
//! manifest of every file in the run directory (`SHA256SUMS`, `sha256sum -c --strict` reads it). `faultline
//! verify DIR` re-checks the manifest later. Built from the `RunReport` alone, like every reporter.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{drill_record, write_atomic, RunReport};
use crate::backup::qdrant_snapshots::sha256_file;
use crate::secret::Secret;
use crate::verdict::Verdict;

/// The manifest's file name, at the top of the run directory.
pub const MANIFEST: &str = "SHA256SUMS";
/// Where the bundle's own files go inside the run directory.
pub const EVIDENCE_DIR: &str = "evidence";
const STATEMENT: &str = "statement.intoto.json";

/// What the bundle needs beyond the report: the configuration files the run read and the secrets that must not
/// appear in it.
#[derive(Clone, Debug, Default)]
pub struct EvidenceSources {
    /// The scenario, topology and settings files (those that exist).
    pub configs: Vec<PathBuf>,
    /// The stack's own configuration files as the target wrote them (name, e.g. `n1/patroni/config`, and path).
    pub stack_configs: Vec<(String, PathBuf)>,
    pub secrets: Vec<Secret>,
}

/// Keys whose values are credentials wherever they appear in a configuration file.
const SECRET_KEYS: [&str; 10] = [
    "password",
    "passphrase",
    "secret",
    "token",
    "cipher_pass",
    "cipher-pass",
    "api_key",
    "requirepass",
    "masterauth",
    "auth-pass",
];

fn is_secret_key(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    SECRET_KEYS.iter().any(|k| key.contains(k))
}

/// A configuration file's text with every known secret replaced and the value of every credential-like key
/// masked: YAML `password: x`, INI `repo1-cipher-pass=x`, Redis `requirepass x` / `sentinel auth-pass m x`.
pub fn redact_config(text: &str, secrets: &[Secret]) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let end = if line.ends_with('\n') { "\n" } else { "" };
        let body = line.trim_end_matches('\n');
        let words: Vec<&str> = body.split_whitespace().collect();
        let masked = match body.find([':', '=']) {
            Some(i) if is_secret_key(&body[..i]) && !body[i + 1..].trim().is_empty() => {
                format!("{}{} [redacted]{end}", &body[..i], &body[i..=i])
            }
            _ if words.len() >= 2
                && (is_secret_key(words[0])
                    || (words[0] == "sentinel" && is_secret_key(words[1]))) =>
            {
                format!("{} [redacted]{end}", words[..words.len() - 1].join(" "))
            }
            _ => line.to_string(),
        };
        out.push_str(&masked);
    }
    redact(&out, secrets)
}

fn redact(text: &str, secrets: &[Secret]) -> String {
    secrets.iter().fold(text.to_string(), |t, s| s.redact(&t))
}

/// Writes `evidence/` and then `SHA256SUMS` over everything in `dir` (report.json, junit.xml and the ledger
/// included). Call it last: a file written afterwards is not covered and `verify` reports it.
pub fn write_evidence(dir: &Path, report: &RunReport, src: &EvidenceSources) -> io::Result<()> {
    let ev = dir.join(EVIDENCE_DIR);
    let config_dir = ev.join("config");
    fs::create_dir_all(&config_dir)?;
    let mut configuration = Vec::new();
    let mut used_names = BTreeSet::new();
    for path in &src.configs {
        let Ok(text) = fs::read_to_string(path) else {
            continue;
        };
        let base = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "config".into());
        let mut name = base.clone();
        let mut i = 2;
        while !used_names.insert(name.clone()) {
            name = format!("{i}-{base}");
            i += 1;
        }
        write_atomic(
            &config_dir,
            &name,
            redact_config(&text, &src.secrets).as_bytes(),
        )?;
        configuration.push(json!({
            "name": path.display().to_string(),
            "digest": {"sha256": sha256_file(path)?},
        }));
    }
    if !src.stack_configs.is_empty() {
        let stack_dir = config_dir.join("stack");
        fs::create_dir_all(&stack_dir)?;
        for (name, path) in &src.stack_configs {
            let Ok(text) = fs::read_to_string(path) else {
                continue;
            };
            let flat = name.replace('/', "-");
            write_atomic(
                &stack_dir,
                &flat,
                redact_config(&text, &src.secrets).as_bytes(),
            )?;
        }
    }
    let scenario_digest = sha256_file(Path::new(&report.scenario_file)).ok();
    let versions = json!({
        "faultline": env!("CARGO_PKG_VERSION"),
        "scenario_file": report.scenario_file,
        "scenario_sha256": scenario_digest,
        "components": report.fingerprint,
    });
    let versions = serde_json::to_string_pretty(&versions)?;
    write_atomic(
        &ev,
        "versions.json",
        redact(&versions, &src.secrets).as_bytes(),
    )?;
    write_atomic(
        &ev,
        "log-excerpts.txt",
        redact(&log_excerpts(report), &src.secrets).as_bytes(),
    )?;
    if is_drill(report) {
        write_atomic(
            &ev,
            "drill-record.md",
            redact(&drill_record::render(report, &configuration), &src.secrets).as_bytes(),
        )?;
    }
    // The statement's subjects are every artefact so far; the manifest then covers the statement too.
    let subjects: Vec<Value> = files_under(dir)?
        .into_iter()
        .filter(|p| p != MANIFEST)
        .map(|p| Ok(json!({"name": p, "digest": {"sha256": sha256_file(&dir.join(&p))?}})))
        .collect::<io::Result<_>>()?;
    let statement = statement(report, subjects, configuration);
    write_atomic(
        &ev,
        STATEMENT,
        serde_json::to_string_pretty(&statement)?.as_bytes(),
    )?;
    write_manifest(dir)
}

/// Whether the run was a drill (it ran operator steps: prepare or recovery actions).
pub fn is_drill(report: &RunReport) -> bool {
    report
        .timeline
        .iter()
        .any(|e| e.event["type"] == "step_started")
}

/// in-toto Statement v1 with the test-result predicate (v0.1): the run's verdict, the thresholds as tests, the
/// configuration files' digests.
fn statement(report: &RunReport, subject: Vec<Value>, configuration: Vec<Value>) -> Value {
    let result = match report.verdict {
        Verdict::Pass => "PASSED",
        // An incomplete run proves nothing: never anything but FAILED.
        Verdict::Fail | Verdict::Incomplete => "FAILED",
    };
    let tests = |pass: bool| -> Vec<String> {
        report
            .thresholds
            .iter()
            .filter(|t| t.pass == pass)
            .map(|t| t.label())
            .collect()
    };
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subject,
        "predicateType": "https://in-toto.io/attestation/test-result/v0.1",
        "predicate": {
            "result": result,
            "configuration": configuration,
            "passedTests": tests(true),
            "warnedTests": [],
            "failedTests": tests(false),
        },
    })
}

/// The server log lines the run paired with its events (log agreement) and the tools' lines it read during
/// restores, in time order.
fn log_excerpts(report: &RunReport) -> String {
    let mut lines: Vec<(String, String)> = Vec::new();
    for a in &report.log_agreement {
        if let (Some(at), Some(line)) = (&a.server_log_at, &a.server_log_line) {
            lines.push((
                at.clone(),
                format!(
                    "trial {} `{}` (harness {}, delta {} s): {line}",
                    a.trial,
                    a.event,
                    a.harness_at.as_deref().unwrap_or("not stamped"),
                    a.delta_s.map_or("unknown".into(), |d| format!("{d:+.3}"))
                ),
            ));
        }
    }
    for e in &report.timeline {
        if e.event["type"] == "server_observation" {
            lines.push((
                e.at.clone(),
                format!(
                    "trial {} [{}] {}",
                    e.trial,
                    e.event["source"].as_str().unwrap_or("server"),
                    e.event["message"].as_str().unwrap_or("")
                ),
            ));
        }
    }
    lines.sort();
    let mut out = format!(
        "# Server log lines of run {} ({}), as the run read them\n",
        report.run_id, report.scenario
    );
    if lines.is_empty() {
        out.push_str("# none: this run paired no event with a server log line\n");
    }
    for (at, l) in lines {
        out.push_str(&format!("{at} {l}\n"));
    }
    for x in &report.log_excerpts {
        out.push_str(&format!(
            "\n# trial {} `{}`: every server log line within 3 s of {}\n",
            x.trial, x.event, x.at
        ));
        if x.lines.is_empty() {
            out.push_str("# (no stamped line in that window)\n");
        }
        for l in &x.lines {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Every regular file under `dir`, as `/`-separated paths relative to it, sorted.
fn files_under(dir: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(dir.join(&rel))? {
            let e = e?;
            let p = rel.join(e.file_name());
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() && !e.file_name().to_string_lossy().ends_with(".tmp") {
                out.push(p.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn write_manifest(dir: &Path) -> io::Result<()> {
    let mut text = String::new();
    for p in files_under(dir)?.into_iter().filter(|p| p != MANIFEST) {
        text.push_str(&format!("{}  {p}\n", sha256_file(&dir.join(&p))?));
    }
    write_atomic(dir, MANIFEST, text.as_bytes())
}

/// What `verify` found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verification {
    pub checked: usize,
    /// Listed files whose content changed.
    pub changed: Vec<String>,
    /// Listed files that are gone.
    pub missing: Vec<String>,
    /// Files in the directory the manifest does not list (added after the run).
    pub unlisted: Vec<String>,
}

impl Verification {
    pub fn intact(&self) -> bool {
        self.changed.is_empty() && self.missing.is_empty() && self.unlisted.is_empty()
    }
}

/// Re-checks a run directory against its manifest. Err: no readable manifest, or a line that is not
/// `<64 hex>  <path>` (with the line number).
pub fn verify(dir: &Path) -> Result<Verification, String> {
    let manifest = dir.join(MANIFEST);
    let text = fs::read_to_string(&manifest).map_err(|e| {
        format!(
            "{}: {e} (not a faultline run directory?)",
            manifest.display()
        )
    })?;
    let mut v = Verification::default();
    let mut listed = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let bad = || {
            format!(
                "{}:{}: not a `<sha256>  <path>` line: {line:?}",
                manifest.display(),
                i + 1
            )
        };
        let (digest, path) = line.split_once("  ").ok_or_else(bad)?;
        let digest_ok = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
        if !digest_ok || path.is_empty() || path.starts_with('/') || path.contains("..") {
            return Err(bad());
        }
        listed.insert(path.to_string());
        v.checked += 1;
        match sha256_file(&dir.join(path)) {
            Ok(d) if d.eq_ignore_ascii_case(digest) => {}
            Ok(_) => v.changed.push(path.to_string()),
            Err(_) => v.missing.push(path.to_string()),
        }
    }
    let present = files_under(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    v.unlisted = present
        .into_iter()
        .filter(|p| p != MANIFEST && !listed.contains(p))
        .collect();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    #[test]
    fn credentials_are_masked_and_known_secrets_replaced() {
        let text = "backup:\n  cipher: aes-256-cbc\n  cipher_pass: hunter2\npostgres_password: \"p4ss\"\nnote: uses s3cr3tvalue here\nrepo1-cipher-pass=abc123\nrequirepass r3d1s\nsentinel auth-pass mymaster s3nt\nport 6379\n";
        let out = redact_config(text, &[Secret::new("s3cr3tvalue")]);
        for secret in ["hunter2", "p4ss", "s3cr3tvalue", "abc123", "r3d1s", "s3nt"] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(out.contains("  cipher: aes-256-cbc\n"), "{out}");
        assert!(out.contains("  cipher_pass: [redacted]\n"), "{out}");
        assert!(out.contains("repo1-cipher-pass= [redacted]\n"), "{out}");
        assert!(out.contains("requirepass [redacted]\n"), "{out}");
        assert!(
            out.contains("sentinel auth-pass mymaster [redacted]\n"),
            "{out}"
        );
        assert!(out.contains("port 6379\n"), "{out}");
        assert!(out.contains("note: uses [redacted] here"), "{out}");
    }

    #[test]
    fn the_manifest_covers_every_file_and_verify_catches_any_change() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let scenario = d.join("scenario-src.yaml");
        fs::write(&scenario, "name: x\n# password: letmein\n").unwrap();
        let mut report = fixtures::run_report(Verdict::Pass, vec![]);
        report.scenario_file = scenario.display().to_string();
        let run = d.join("run");
        fs::create_dir_all(&run).unwrap();
        super::super::write_run(&run, &report).unwrap();
        fs::write(run.join("ledger.jsonl"), "{}\n").unwrap();
        write_evidence(
            &run,
            &report,
            &EvidenceSources {
                configs: vec![scenario.clone()],
                stack_configs: Vec::new(),
                secrets: vec![Secret::new("letmein")],
            },
        )
        .unwrap();
        let v = verify(&run).unwrap();
        assert!(v.intact(), "{v:?}");
        // The manifest is what coreutils reads.
        let o = std::process::Command::new("sha256sum")
            .args(["-c", "--strict", "--quiet", MANIFEST])
            .current_dir(&run)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        // report.json, report.html, metrics.prom, junit.xml, ledger, config copy, versions, excerpts, statement.
        assert_eq!(v.checked, 9, "{v:?}");
        let manifest = fs::read_to_string(run.join(MANIFEST)).unwrap();
        assert!(
            manifest.contains("  evidence/statement.intoto.json\n"),
            "{manifest}"
        );
        let copy = fs::read_to_string(run.join("evidence/config/scenario-src.yaml")).unwrap();
        assert!(!copy.contains("letmein"), "{copy}");
        let st: Value = serde_json::from_str(
            &fs::read_to_string(run.join("evidence/statement.intoto.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(st["predicate"]["result"], "PASSED");
        assert_eq!(
            st["predicate"]["configuration"][0]["digest"]["sha256"],
            sha256_file(&scenario).unwrap()
        );
        assert!(st["subject"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "report.json"));

        // One byte changed, a file removed, a file added: each is named.
        let mut bytes = fs::read(run.join("report.json")).unwrap();
        bytes[0] ^= 1;
        fs::write(run.join("report.json"), bytes).unwrap();
        fs::remove_file(run.join("junit.xml")).unwrap();
        fs::write(run.join("evidence/extra.txt"), "x").unwrap();
        let v = verify(&run).unwrap();
        assert_eq!(v.changed, ["report.json"]);
        assert_eq!(v.missing, ["junit.xml"]);
        assert_eq!(v.unlisted, ["evidence/extra.txt"]);
        assert!(!v.intact());
    }

    #[test]
    fn a_malformed_manifest_is_an_input_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(MANIFEST),
            format!("{}  a\nnonsense\n", "0".repeat(64)),
        )
        .unwrap();
        let e = verify(dir.path()).unwrap_err();
        assert!(e.contains("SHA256SUMS:2:"), "{e}");
        let e = verify(&dir.path().join("nowhere")).unwrap_err();
        assert!(e.contains("not a faultline run directory"), "{e}");
    }

    #[test]
    fn an_incomplete_run_is_never_passed() {
        let r = fixtures::run_report(Verdict::Incomplete, vec![]);
        assert_eq!(
            statement(&r, vec![], vec![])["predicate"]["result"],
            "FAILED"
        );
    }
}
