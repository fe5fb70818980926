//! Redis backups: a BGSAVE on the master, its dump.rdb copied into the backup store with the data's age beside it.
//! The age is the instant the snapshot was forked (what a restore brings back), not the copy's time: `LASTSAVE`
//! is reset when a server starts, so it is no measure of the data.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::component::redis::{connect, info_field as field};
use crate::component::Member;
use crate::drill::target_time::unix;

/// One RDB file in the backup store, described by the JSON file written beside it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RdbBackup {
    /// File name of the copy in the store.
    pub file: String,
    /// The node whose master was saved.
    pub source: String,
    /// When the snapshot was taken (Unix seconds): the newest data the copy holds.
    pub taken_at: f64,
    /// Keys in the master's database when BGSAVE was asked for.
    pub keys: u64,
    pub bytes: u64,
}

impl RdbBackup {
    pub fn age_s(&self, now: SystemTime) -> f64 {
        unix(now) - self.taken_at
    }
}

/// Asks the master for a BGSAVE and waits until it has finished. Returns (snapshot instant, keys).
pub async fn bgsave(master: &Member, timeout: Duration) -> Result<(f64, u64), String> {
    let node = &master.node;
    let deadline = Instant::now() + timeout;
    let mut c = connect(master.addr, master.ports.redis, Duration::from_secs(2))
        .await
        .map_err(|e| format!("redis {node}: {e}"))?;
    let keys: u64 = redis::cmd("DBSIZE")
        .query_async(&mut c)
        .await
        .map_err(|e| format!("redis {node}: DBSIZE: {e}"))?;
    let saves_before = saves(&mut c, node).await?;
    let asked = unix(SystemTime::now());
    redis::cmd("BGSAVE")
        .query_async::<String>(&mut c)
        .await
        .map_err(|e| format!("redis {node}: BGSAVE: {e}"))?;
    loop {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query_async(&mut c)
            .await
            .map_err(|e| format!("redis {node}: INFO persistence: {e}"))?;
        let in_progress = field(&info, "rdb_bgsave_in_progress") == Some("1");
        let done =
            field(&info, "rdb_saves").and_then(|v| v.parse::<u64>().ok()) > Some(saves_before);
        if !in_progress && done {
            if field(&info, "rdb_last_bgsave_status") != Some("ok") {
                return Err(format!(
                    "redis {node}: BGSAVE failed (rdb_last_bgsave_status {})",
                    field(&info, "rdb_last_bgsave_status").unwrap_or("?")
                ));
            }
            return Ok((asked, keys));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "redis {node}: BGSAVE did not finish within {} s",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `rdb_saves` (Redis 7: snapshots since start): a BGSAVE is finished when it has grown and none is running.
async fn saves(c: &mut redis::aio::MultiplexedConnection, node: &str) -> Result<u64, String> {
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query_async(c)
        .await
        .map_err(|e| format!("redis {node}: INFO persistence: {e}"))?;
    field(&info, "rdb_saves")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            format!("redis {node}: INFO persistence has no rdb_saves (Redis 7 or newer is needed)")
        })
}

/// Copies the saved dump into the store and writes its description beside it.
pub fn store(
    dump: &Path,
    store_dir: &Path,
    source: &str,
    taken_at: f64,
    keys: u64,
) -> std::io::Result<RdbBackup> {
    std::fs::create_dir_all(store_dir)?;
    let stamp = crate::clock::rfc3339_millis(UNIX_EPOCH + Duration::from_secs_f64(taken_at));
    let compact: String = stamp
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let file = format!("{compact}-{source}.rdb");
    let dest = store_dir.join(&file);
    let tmp = store_dir.join(format!("{file}.partial"));
    let bytes = std::fs::copy(dump, &tmp)?;
    std::fs::rename(&tmp, &dest)?;
    let b = RdbBackup {
        file,
        source: source.into(),
        taken_at,
        keys,
        bytes,
    };
    std::fs::write(
        dest.with_extension("json"),
        serde_json::to_vec_pretty(&b).map_err(std::io::Error::other)?,
    )?;
    Ok(b)
}

/// Every backup in the store, oldest first.
pub fn list(store_dir: &Path) -> Vec<(PathBuf, RdbBackup)> {
    let mut v: Vec<(PathBuf, RdbBackup)> = std::fs::read_dir(store_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| {
            let b: RdbBackup = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            let rdb = store_dir.join(&b.file);
            rdb.exists().then_some((rdb, b))
        })
        .collect();
    v.sort_by(|a, b| a.1.taken_at.total_cmp(&b.1.taken_at));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_lists_copies_by_the_age_of_their_data() {
        let dir = tempfile::tempdir().unwrap();
        let dump = dir.path().join("dump.rdb");
        std::fs::write(&dump, b"REDIS0011-fake").unwrap();
        let store_dir = dir.path().join("store");
        let newer = store(&dump, &store_dir, "n2", 1_796_000_100.25, 7).unwrap();
        let older = store(&dump, &store_dir, "n1", 1_796_000_000.0, 5).unwrap();
        assert_eq!(newer.bytes, 14);
        // A copy whose data file is gone is not a backup.
        std::fs::write(
            store_dir.join("orphan.json"),
            serde_json::to_vec(&older).unwrap(),
        )
        .unwrap();
        std::fs::remove_file(store_dir.join(&older.file)).unwrap();
        let l = list(&store_dir);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].1, newer);
        assert!(l[0].0.ends_with(&newer.file));
        let age = newer.age_s(UNIX_EPOCH + Duration::from_secs(1_796_000_110));
        assert!((age - 9.75).abs() < 1e-6, "{age}");
    }
}
