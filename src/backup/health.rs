//! Backup health as `faultline status` shows it: is WAL reaching the repository, how old is the newest backup,
//! which span of time can be restored, is the repository encrypted.

use serde::Serialize;

use super::pgbackrest::StanzaInfo;
use super::redis_rdb::RdbBackup;
use crate::component::postgres::ArchiverStatus;

#[derive(Clone, Debug, Default, Serialize)]
pub struct BackupHealth {
    /// Where the repository is: `node:path` or `s3://bucket/path`.
    pub repository: String,
    /// The repository's cipher as pgBackRest reports it (`aes-256-cbc` or `none`).
    pub encryption: Option<String>,
    pub archiver: Option<ArchiverStatus>,
    /// Segments written but not yet archived (current segment minus the last archived one, same timeline).
    pub segments_behind: Option<u64>,
    /// Seconds since the last segment was archived, on the server's clock.
    pub last_archived_age_s: Option<f64>,
    pub newest_backup: Option<BackupSummary>,
    /// Oldest and newest instant (Unix seconds) a point-in-time restore can reach.
    pub window: Option<(f64, f64)>,
    pub redis_rdb: Option<RdbBackup>,
    pub redis_rdb_age_s: Option<f64>,
    /// The newest Qdrant snapshot set, when the stack runs Qdrant (`Some(None)`: none stored yet).
    pub qdrant: Option<Option<QdrantSetHealth>>,
    /// Everything that makes the backups untrustworthy right now.
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct QdrantSetHealth {
    pub set: String,
    /// The peers (nodes) the set has a collection snapshot of.
    pub peers: Vec<String>,
    /// The shards the set has a shard snapshot of (what a cluster formed anew is restored from).
    pub shards: Vec<u32>,
    /// Seconds since the oldest snapshot of the set was asked for.
    pub age_s: f64,
}

impl QdrantSetHealth {
    pub fn of(set: &[super::qdrant_snapshots::QdrantSnapshot], now: f64) -> Option<Self> {
        let first = set.first()?;
        Some(QdrantSetHealth {
            set: first.set.clone(),
            peers: set
                .iter()
                .filter(|s| s.shard.is_none())
                .map(|s| s.peer.clone())
                .collect(),
            shards: set.iter().filter_map(|s| s.shard).collect(),
            age_s: now - set.iter().map(|s| s.taken_at).fold(f64::INFINITY, f64::min),
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct BackupSummary {
    pub label: String,
    pub kind: String,
    pub stopped_at: f64,
    pub age_s: f64,
    pub repository_bytes: u64,
}

/// WAL file name -> (timeline, segment number) for 16 MB segments (`TTTTTTTTXXXXXXXXYYYYYYYY`).
/// A backup label file (`<segment>.<offset>.backup`) or a partial segment counts as its segment; a timeline
/// history file (`00000002.history`) has none.
fn segment(name: &str) -> Option<(u64, u64)> {
    let name = name.get(..24)?;
    if !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let tl = u64::from_str_radix(&name[..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..], 16).ok()?;
    Some((tl, log * 0x100 + seg))
}

impl BackupHealth {
    /// Combines what the repository and the primary say. `now` is Unix seconds.
    pub fn assemble(
        repository: String,
        info: Result<StanzaInfo, String>,
        archiver: Result<ArchiverStatus, String>,
        redis_rdb: Option<RdbBackup>,
        now: f64,
    ) -> BackupHealth {
        let mut h = BackupHealth {
            repository,
            ..BackupHealth::default()
        };
        match info {
            Ok(i) => {
                h.encryption = Some(if i.cipher.is_empty() {
                    "none".into()
                } else {
                    i.cipher.clone()
                });
                if i.status.code != 0 && i.status.code != 2 {
                    // 2 = "no valid backups": reported below as no backup.
                    h.problems
                        .push(format!("repository status: {}", i.status.message));
                }
                match i.newest_backup() {
                    Some(b) => {
                        h.newest_backup = Some(BackupSummary {
                            label: b.label.clone(),
                            kind: b.kind.clone(),
                            stopped_at: b.timestamp.stop as f64,
                            age_s: now - b.timestamp.stop as f64,
                            repository_bytes: b.info.repository.size,
                        })
                    }
                    None => h.problems.push(
                        "no complete backup in the repository: nothing can be restored (run `faultline backup`)".into(),
                    ),
                }
                if let Some(oldest) = i.oldest_recoverable() {
                    let newest = archiver
                        .as_ref()
                        .ok()
                        .and_then(|a| a.last_archived_time)
                        .unwrap_or(oldest as f64);
                    h.window = Some((oldest as f64, newest.max(oldest as f64)));
                }
            }
            Err(e) => h.problems.push(format!("repository: {e}")),
        }
        match archiver {
            Ok(a) => {
                h.last_archived_age_s = a.last_archived_time.map(|t| a.now - t);
                h.segments_behind = a
                    .last_archived_wal
                    .as_deref()
                    .and_then(segment)
                    .zip(segment(&a.current_wal))
                    .and_then(|((tl_a, a_seg), (tl_c, c_seg))| {
                        (tl_a == tl_c).then(|| c_seg.saturating_sub(a_seg + 1))
                    });
                let failing = match (a.last_failed_time, a.last_archived_time) {
                    (Some(f), Some(ok)) => f > ok,
                    (Some(_), None) => true,
                    _ => false,
                };
                if failing {
                    let failed = a.last_failed_wal.as_deref().unwrap_or("?");
                    let older_timeline = segment(failed)
                        .zip(segment(&a.current_wal))
                        .filter(|((tl_f, _), (tl_c, _))| tl_f < tl_c)
                        .map(|((tl_f, _), (tl_c, _))| {
                            format!(
                                ": {failed} is from timeline {tl_f}, older than the primary's {tl_c}, a former \
                                 primary's WAL left marked ready after pg_rewind; pgBackRest refuses a segment the \
                                 archive holds with other contents (error 045), so the archiver retries it forever \
                                 and every newer segment waits behind it. Compare it with the archive's copy, then \
                                 rename pg_wal/archive_status/{failed}.ready to .done on {} (or rebuild the stack: \
                                 `faultline down && faultline up`)",
                                a.member
                            )
                        })
                        .unwrap_or_else(|| " (see the PostgreSQL log)".into());
                    h.problems.push(format!(
                        "archiving is failing on {}: {} failed attempt(s), last for {failed}{older_timeline}",
                        a.member, a.failed_count,
                    ));
                }
                h.archiver = Some(a);
            }
            Err(e) => h
                .problems
                .push(format!("the primary's archiver status is unavailable: {e}")),
        }
        h.redis_rdb_age_s = redis_rdb.as_ref().map(|r| now - r.taken_at);
        h.redis_rdb = redis_rdb;
        h
    }

    /// Lines for the terminal.
    pub fn lines(&self) -> Vec<String> {
        let t = |s: f64| {
            crate::clock::rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(s.max(0.0)),
            )
        };
        let mut v = vec![format!("repository: {}", self.repository)];
        v.push(format!(
            "encryption: {}",
            self.encryption.as_deref().unwrap_or("unknown")
        ));
        match &self.archiver {
            Some(a) => v.push(format!(
                "WAL archive (primary {}): last archived {} ({}), {} segment(s) waiting, {} failed attempt(s)",
                a.member,
                a.last_archived_wal.as_deref().unwrap_or("none yet"),
                self.last_archived_age_s
                    .map(|s| format!("{s:.1} s ago"))
                    .unwrap_or_else(|| "never".into()),
                self.segments_behind
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "?".into()),
                a.failed_count
            )),
            None => v.push("WAL archive: unknown".into()),
        }
        match &self.newest_backup {
            Some(b) => v.push(format!(
                "newest backup: {} ({}), finished {} ({:.0} s ago), {} bytes in the repository",
                b.label,
                b.kind,
                t(b.stopped_at),
                b.age_s,
                b.repository_bytes
            )),
            None => v.push("newest backup: none".into()),
        }
        match self.window {
            Some((a, b)) => v.push(format!(
                "recoverable window: {} .. {} ({:.0} s)",
                t(a),
                t(b),
                b - a
            )),
            None => v.push("recoverable window: none".into()),
        }
        match (&self.redis_rdb, self.redis_rdb_age_s) {
            (Some(r), Some(age)) => v.push(format!(
                "redis RDB: {} from {}, {} keys, data {:.0} s old",
                r.file, r.source, r.keys, age
            )),
            _ => v.push("redis RDB: none in the backup store".into()),
        }
        match &self.qdrant {
            Some(Some(q)) => v.push(format!(
                "qdrant snapshots: set {} of {} peer(s) ({}) and {} shard(s), data {:.0} s old",
                q.set,
                q.peers.len(),
                q.peers.join(", "),
                q.shards.len(),
                q.age_s
            )),
            Some(None) => v.push("qdrant snapshots: none in the backup store".into()),
            None => {}
        }
        for p in &self.problems {
            v.push(format!("PROBLEM: {p}"));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::pgbackrest::parse_info;

    fn archiver(failed_after_ok: bool) -> ArchiverStatus {
        ArchiverStatus {
            member: "n1".into(),
            archived_count: 12,
            last_archived_wal: Some("00000002000000000000000A".into()),
            last_archived_time: Some(1000.0),
            failed_count: if failed_after_ok { 3 } else { 0 },
            last_failed_wal: failed_after_ok.then(|| "00000002000000000000000B".into()),
            last_failed_time: failed_after_ok.then_some(1010.0),
            current_wal: "00000002000000000000000D".into(),
            now: 1030.0,
        }
    }

    const INFO: &str = r#"[{"name":"faultline","cipher":"aes-256-cbc","status":{"code":0,"message":"ok"},
      "backup":[{"label":"F1","type":"full","error":false,"timestamp":{"start":900,"stop":950},
      "info":{"size":10,"repository":{"size":4}}}],"archive":[{"id":"15-1","min":"a","max":"b"}]}]"#;

    #[test]
    fn a_working_archive_gives_the_window_and_the_lag() {
        let h = BackupHealth::assemble(
            "n3:/repo".into(),
            parse_info(INFO, "faultline"),
            Ok(archiver(false)),
            None,
            1030.0,
        );
        assert!(h.problems.is_empty(), "{:?}", h.problems);
        assert_eq!(h.encryption.as_deref(), Some("aes-256-cbc"));
        assert_eq!(h.window, Some((950.0, 1000.0)));
        assert_eq!(h.segments_behind, Some(2));
        assert_eq!(h.last_archived_age_s, Some(30.0));
        assert_eq!(h.newest_backup.as_ref().unwrap().age_s, 80.0);
        assert_eq!(
            segment("000000010000000000000006.00000028.backup"),
            Some((1, 6))
        );
        assert_eq!(segment("0000000100000001000000FF"), Some((1, 0x1FF)));
        assert_eq!(segment("00000002.history"), None);
    }

    #[test]
    fn a_segment_of_an_older_timeline_stuck_in_the_archiver_is_explained() {
        let mut a = archiver(true);
        a.last_failed_wal = Some("00000001000000000000000B".into());
        let h = BackupHealth::assemble(
            "n3:/repo".into(),
            parse_info(INFO, "faultline"),
            Ok(a),
            None,
            1030.0,
        );
        let p = h.problems.join("\n");
        assert!(
            p.contains("00000001000000000000000B is from timeline 1, older than the primary's 2")
                && p.contains("error 045"),
            "{p}"
        );
        // The same timeline: nothing to explain beyond the log.
        let h = BackupHealth::assemble(
            "n3:/repo".into(),
            parse_info(INFO, "faultline"),
            Ok(archiver(true)),
            None,
            1030.0,
        );
        let p = h.problems.join("\n");
        assert!(
            p.contains("(see the PostgreSQL log)") && !p.contains("timeline"),
            "{p}"
        );
    }

    #[test]
    fn a_failing_archive_and_a_missing_backup_are_problems() {
        let empty = r#"[{"name":"faultline","cipher":"none","status":{"code":2,"message":"no valid backups"},"backup":[],"archive":[]}]"#;
        let h = BackupHealth::assemble(
            "n3:/repo".into(),
            parse_info(empty, "faultline"),
            Ok(archiver(true)),
            None,
            1030.0,
        );
        assert_eq!(h.encryption.as_deref(), Some("none"));
        assert_eq!(h.window, None);
        assert!(h.problems.iter().any(|p| p.contains("no complete backup")));
        assert!(h
            .problems
            .iter()
            .any(|p| p.contains("archiving is failing on n1: 3 failed attempt(s)")));
        let text = h.lines().join("\n");
        assert!(text.contains("PROBLEM: archiving is failing"), "{text}");
    }
}
