//! Backups are part of the stack: pgBackRest archives WAL from whichever member is primary into an encrypted
//! repository on the backup node, `faultline backup` takes backups, `faultline status` shows their health, and no
//! secret reaches a log. Real stack; needs root.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const STATE: &str = "/var/tmp/faultline";

fn repo_dir() -> PathBuf {
    // The default topology's backup node is its last node.
    Path::new(STATE).join("nodes/n3/pgbackrest/repo")
}

/// `faultline status` once the stack is healthy. Right after a backup (two WAL switches) or a switchover a replica
/// can show a lag of a segment or two for a Patroni loop (seen: "n1 lags 33451728 bytes" 1 s after a backup): the
/// backup lines are what these tests check, so a lag that clears is waited out (for at most 20 s).
fn status() -> String {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let o = faultline(&["status"]);
        let lagging = o.status.code() == Some(3) && text(&o).contains(" lags ");
        if !lagging || Instant::now() >= until {
            assert_eq!(o.status.code(), Some(0), "status:\n{}", text(&o));
            return text(&o);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn backup(kind: &str) -> String {
    let o = faultline(&["backup", "--type", kind]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "backup --type {kind}:\n{}",
        text(&o)
    );
    text(&o)
}

fn starts_salted(p: &Path) -> bool {
    std::fs::read(p)
        .map(|b| b.starts_with(b"Salted__"))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every archived WAL file of the repository.
fn archived_wal() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![repo_dir().join("archive")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.file_name().unwrap().to_string_lossy().len() > 24
                && !p.to_string_lossy().contains("archive.info")
            {
                out.push(p);
            }
        }
    }
    out
}

fn leader_of(status: &str) -> String {
    status
        .lines()
        .find_map(|l| l.split("postgres leader ").nth(1))
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("no leader in status:\n{status}"))
        .to_string()
}

fn cipher_pass() -> String {
    let s: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(STATE).join("secrets.json")).unwrap(),
    )
    .unwrap();
    s["backup_cipher"]
        .as_str()
        .expect("a generated cipher passphrase")
        .to_string()
}

/// Every file under a directory, as text (lossy), for secret scans.
fn all_text_under(dir: &Path) -> String {
    let mut out = String::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out += &String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

#[test]
fn backups_are_encrypted_archived_from_every_primary_and_reported() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let s = status();
    assert!(s.contains("backups: encryption: aes-256-cbc"), "{s}");
    assert!(s.contains("backups: repository: n3:"), "{s}");

    let out = backup("full");
    assert!(out.contains("postgres: full backup "), "{out}");
    assert!(out.contains("redis: "), "{out}");
    let s = status();
    assert!(
        s.lines()
            .any(|l| l.starts_with("backups: newest backup: ") && l.contains("(full)")),
        "{s}"
    );
    assert!(s.contains("backups: recoverable window: 20"), "{s}");
    assert!(
        !s.contains("PROBLEM"),
        "a fresh backup of a working archive has no problem:\n{s}"
    );

    // Encrypted at rest: the repository's info files and every archived segment are OpenSSL-salted ciphertext.
    assert!(starts_salted(
        &repo_dir().join("backup/faultline/backup.info")
    ));
    assert!(starts_salted(
        &repo_dir().join("archive/faultline/archive.info")
    ));
    let wal = archived_wal();
    assert!(!wal.is_empty(), "no WAL was archived");
    for w in &wal {
        assert!(starts_salted(w), "{} is not encrypted", w.display());
    }

    // A promoted member archives at once: after a switchover, an incremental backup (which waits for its WAL to
    // reach the repository) succeeds and the archiver that answers is the new primary's.
    let old = leader_of(&s);
    let patroni_conf = Path::new(STATE).join(format!("nodes/{old}/patroni/config"));
    let o = Command::new("patronictl")
        .arg("-c")
        .arg(&patroni_conf)
        .args(["switchover", "--force"])
        .output()
        .expect("patronictl runs");
    assert!(o.status.success(), "switchover: {}", text(&o));
    let o = faultline(&["recover"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "recover after switchover:\n{}",
        text(&o)
    );
    let s = status();
    let new = leader_of(&s);
    assert_ne!(new, old, "the switchover did not move the leader:\n{s}");
    let out = backup("incr");
    assert!(out.contains("postgres: incr backup "), "{out}");
    let s = status();
    assert!(s.contains(&format!("WAL archive (primary {new})")), "{s}");
    assert!(
        s.lines()
            .any(|l| l.contains("newest backup: ") && l.contains("(incr)")),
        "{s}"
    );

    // The passphrase is in no log, no status output, no report.
    let pass = cipher_pass();
    assert!(pass.len() >= 64, "a 32-byte passphrase");
    let logs = all_text_under(&Path::new(STATE).join("nodes/n3/pgbackrest/logs"))
        + &all_text_under(&Path::new(STATE).join(format!("nodes/{new}/patroni/log")))
        + &s
        + &out;
    assert!(!logs.contains(&pass), "the repository passphrase leaked");
}

#[test]
fn encryption_can_be_turned_off_and_status_says_so() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    let o = faultline(&["down"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.yaml");
    std::fs::write(&settings, "backup:\n  cipher: none\n").unwrap();
    let o = faultline(&["up", "--settings", settings.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let s = status();
    backup("full");
    assert!(s.contains("backups: encryption: none"), "{s}");
    let info = std::fs::read_to_string(repo_dir().join("backup/faultline/backup.info")).unwrap();
    assert!(
        info.contains("[backrest]"),
        "an unencrypted repository is plain text: {info}"
    );
    // Back to the default stack for the tests that follow.
    let o = faultline(&["down"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
