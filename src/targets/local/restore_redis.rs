//! restore-redis on the local stack (HA-FACTS "Backups and restores"): the newest RDB copy in the backup node's
//! store is validated with `redis-check-rdb`; every sentinel forgets the master (otherwise Sentinel, which never
//! forgets old masters and replicas, turns the restored node into a replica and its data is lost); every Redis
//! member stops; the RDB goes into one node's data directory (`appendonly no`, so the RDB is what loads); that
//! node starts as the master and must hold the RDB's keys; the other members start as its replicas; the sentinels
//! start afresh monitoring it. Journaled before anything stops, so `faultline recover` completes it.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{LocalStack, ProcessKind};
use crate::component::redis as redis_component;
use crate::drill::ActionOutcome;
use crate::fault::journal::Journal;
use crate::fault::RevertStep;

impl LocalStack {
    /// The node a Redis restore brings the master up on: the first Redis node of the live layout whose link is
    /// up.
    fn redis_restore_node(&self) -> Result<String, String> {
        self.first_reachable(&self.live_topology().placement.redis, "Redis")
    }

    pub async fn restore_redis(
        &self,
        journal: &Journal,
        deadline: Duration,
    ) -> Result<ActionOutcome, String> {
        let end = Instant::now() + deadline;
        let (file, backup) = self.redis_backups().pop().ok_or(
            "the backup store holds no Redis RDB copy: there is nothing to restore from (take one with `faultline \
             backup` or a `prepare: [{action: backup}]` step)",
        )?;
        let check = Path::new(&self.settings().redis_server_bin).with_file_name("redis-check-rdb");
        let out = tokio::process::Command::new(&check)
            .arg(&file)
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", check.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} is not a valid RDB file: {}",
                file.display(),
                String::from_utf8_lossy(&out.stdout).trim()
            ));
        }
        let node = self.redis_restore_node()?;
        let mut outcome = ActionOutcome {
            notes: vec![format!(
                "restoring {} (from {}, {} keys, data taken {}) onto {node}",
                backup.file,
                backup.source,
                backup.keys,
                crate::clock::rfc3339_millis(
                    std::time::UNIX_EPOCH + Duration::from_secs_f64(backup.taken_at)
                )
            )],
            restored_point: Some(backup.taken_at),
            ..ActionOutcome::default()
        };
        outcome.phases.push((
            "RDB copy validated (redis-check-rdb)".into(),
            Instant::now(),
        ));
        journal
            .around(
                "restore-redis",
                &format!("restore redis from {} on {node}", backup.file),
                vec![RevertStep::CompleteRedisRestore {
                    node: node.clone(),
                    file: backup.file.clone(),
                }],
                self.restore_redis_steps(&node, &file, backup.keys, end, &mut outcome),
            )
            .await
            .map(|()| outcome)
    }

    /// The restore itself; idempotent, so a revert can run it again.
    pub(super) async fn restore_redis_steps(
        &self,
        node: &str,
        rdb: &Path,
        keys: u64,
        end: Instant,
        out: &mut ActionOutcome,
    ) -> Result<(), String> {
        let t = self.live_topology();
        // Sentinels forget everything they knew by being replaced with fresh ones at the end; stopping them first
        // keeps them from promoting anything while the members are down.
        for n in &t.placement.sentinel {
            self.kill(n, ProcessKind::Sentinel);
        }
        for n in &t.placement.redis {
            self.kill(n, ProcessKind::Redis);
        }
        for (n, k) in t
            .placement
            .sentinel
            .iter()
            .map(|n| (n, ProcessKind::Sentinel))
            .chain(t.placement.redis.iter().map(|n| (n, ProcessKind::Redis)))
        {
            if !self.wait_gone(n, k, Duration::from_secs(10)) {
                return Err(format!("{} on {n} did not stop", k.name()));
            }
        }
        let stopped = Instant::now();
        out.replaced_at = Some(stopped);
        out.phases
            .push(("sentinels and redis members stopped".into(), stopped));
        for n in &t.placement.redis {
            let data = self.dir.member_dir(n, ProcessKind::Redis).join("data");
            fs::create_dir_all(&data).map_err(|e| format!("mkdir {}: {e}", data.display()))?;
            for f in ["dump.rdb", "appendonly.aof"] {
                let _ = fs::remove_file(data.join(f));
            }
            let _ = fs::remove_dir_all(data.join("appendonlydir"));
        }
        let dest = self
            .dir
            .member_dir(node, ProcessKind::Redis)
            .join("data/dump.rdb");
        fs::copy(rdb, &dest).map_err(|e| format!("cannot copy the RDB into place: {e}"))?;
        let me = self.addr(node);
        self.start(node, ProcessKind::Redis, Some(me))
            .map_err(|e| e.to_string())?;
        // Served = the restored master holds the RDB's keys and accepts a write.
        let ep = self.redis_endpoints();
        let member = ep
            .members
            .iter()
            .find(|m| m.node == node)
            .cloned()
            .ok_or("the restore node runs no Redis member")?;
        loop {
            if let Ok(n) = redis_component::dbsize(&member).await {
                if n >= keys {
                    break;
                }
                return Err(format!(
                    "the restored master on {node} holds {n} keys, the RDB copy {keys}"
                ));
            }
            if self.pids(node, ProcessKind::Redis).is_empty() {
                return Err(format!(
                    "redis on {node} exited while loading the RDB (see {})",
                    self.dir.log_file(node, ProcessKind::Redis).display()
                ));
            }
            if Instant::now() >= end {
                return Err(format!(
                    "redis on {node} did not load the RDB before the deadline"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        redis_component::set_probe(&member)
            .await
            .map_err(|e| format!("the restored master does not accept writes: {e}"))?;
        let served = Instant::now();
        out.served_at = Some(served);
        out.phases
            .push((format!("restored master on {node} accepts writes"), served));
        for n in t.placement.redis.iter().filter(|n| *n != node) {
            self.start(n, ProcessKind::Redis, Some(me))
                .map_err(|e| e.to_string())?;
        }
        for n in &t.placement.sentinel {
            self.start(n, ProcessKind::Sentinel, Some(me))
                .map_err(|e| e.to_string())?;
        }
        loop {
            let Err(last) = redis_component::health(&ep).await else {
                break;
            };
            if Instant::now() >= end {
                return Err(format!(
                    "replicas and sentinels were not back on the restored master before the deadline: {last}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        out.phases.push((
            "replicas re-synced and sentinels monitoring the restored master".into(),
            Instant::now(),
        ));
        Ok(())
    }

    /// Redis restored from the newest RDB copy onto the live layout (the revert of a `destroy` that nothing
    /// restored from).
    pub(super) async fn complete_newest_redis_restore(&self) -> Result<(), String> {
        let (path, backup) = self
            .redis_backups()
            .pop()
            .ok_or("the backup store holds no Redis RDB copy to restore from")?;
        let node = self.redis_restore_node()?;
        self.restore_redis_steps(
            &node,
            &path,
            backup.keys,
            Instant::now() + Duration::from_secs(300),
            &mut ActionOutcome::default(),
        )
        .await
    }

    /// The revert of an interrupted Redis restore: run it again from the same copy.
    pub(super) async fn complete_redis_restore(
        &self,
        node: &str,
        file: &str,
    ) -> Result<(), String> {
        let (path, backup) = self
            .redis_backups()
            .into_iter()
            .find(|(_, b)| b.file == file)
            .ok_or_else(|| format!("the RDB copy {file} is gone from the backup store"))?;
        let mut out = ActionOutcome::default();
        self.restore_redis_steps(
            node,
            &path,
            backup.keys,
            Instant::now() + Duration::from_secs(300),
            &mut out,
        )
        .await
    }
}
