//! restore-postgres on the local stack, the runbook an operator follows (HA-FACTS "Backups and restores"):
//! check the repository can reach the target, stop every Patroni member, remove the cluster's keys from the DCS,
//! empty the data directories, start Patroni on one node with a custom bootstrap that runs `pgbackrest restore`
//! (to the target, or to the end of the archive), wait until that new leader accepts writes (service resumed),
//! then start the other members, which re-create themselves as replicas from it. Journaled before anything is
//! stopped, so `faultline recover` after a crash completes the restore.

use std::fs;
use std::time::{Duration, Instant, SystemTime};

use super::{LocalStack, ProcessKind};
use crate::component::postgres;
use crate::drill::{target_time, ActionOutcome, RestoreFacts};
use crate::fault::journal::Journal;
use crate::fault::RevertStep;

impl LocalStack {
    /// The node a restore bootstraps on: the first PostgreSQL node of the live layout whose link is up.
    fn bootstrap_node(&self) -> Result<String, String> {
        self.first_reachable(&self.live_topology().placement.postgres, "PostgreSQL")
    }

    /// The first of `nodes` whose link is up (where a restore brings a component back).
    pub(super) fn first_reachable(
        &self,
        nodes: &[String],
        component: &str,
    ) -> Result<String, String> {
        nodes
            .iter()
            .find(|n| super::netns::link_is_up(self.topology(), n))
            .cloned()
            .ok_or_else(|| format!("no {component} node is reachable to restore onto"))
    }

    /// The pgBackRest restore command Patroni's custom bootstrap runs.
    fn restore_command(&self, node: &str, target: Option<&str>) -> String {
        let mut cmd = format!(
            "{} --config={} --stanza={} --delta",
            self.settings().backup.pgbackrest_bin.display(),
            self.client_conf(node).display(),
            self.settings().backup.stanza
        );
        match target {
            Some(t) => cmd += &format!(" --type=time \"--target={t}\" --target-action=promote"),
            None => cmd += " --type=default",
        }
        cmd + " restore"
    }

    /// Runs the restore under a journal entry; closes the entry when the cluster is serving and every member is
    /// back. `target` None = latest.
    pub async fn restore_postgres(
        &self,
        journal: &Journal,
        target: Option<SystemTime>,
        deadline: Duration,
    ) -> Result<ActionOutcome, String> {
        let start = Instant::now();
        let end = start + deadline;
        let target_text = target.map(target_time::for_pgbackrest);
        let mut out = ActionOutcome::default();

        // 1. Before touching anything: what the repository can restore to.
        let info = self.repo_info().await?;
        // A region loss takes the primary with it: then nothing more can be archived, and what it had not archived
        // is the drill's loss (its RPO), not a reason to refuse.
        let primary_up = postgres::write_probe(&self.postgres_endpoints(), Duration::from_secs(2))
            .await
            .is_ok();
        let archiver = if primary_up {
            self.archiver_status(Duration::from_secs(5)).await.ok()
        } else {
            None
        };
        let oldest = info.oldest_recoverable().ok_or(
            "the repository holds no complete backup: there is nothing to restore from (take one with `faultline \
             backup` or a `prepare: [{action: backup}]` step)",
        )?;
        let newest = archiver
            .as_ref()
            .and_then(|a| a.last_archived_time)
            .unwrap_or(oldest as f64);
        out.before = RestoreFacts {
            timeline: tokio::time::timeout(
                Duration::from_secs(5),
                postgres::timeline_and_streaming(&self.postgres_endpoints()),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(|(tl, _)| tl)
            // No primary (a region loss took it): the timeline its archive ends on.
            .or_else(|| info.newest_timeline()),
            window: Some((oldest as f64, newest.max(oldest as f64))),
        };
        if let Some(t) = target {
            if target_time::unix(t) < oldest as f64 {
                return Err(format!(
                    "the recovery target {} is before the oldest backup's end ({}): no backup in the repository can \
                     restore to it",
                    target_text.as_deref().unwrap_or_default(),
                    target_time::for_pgbackrest(
                        std::time::UNIX_EPOCH + Duration::from_secs(oldest as u64)
                    )
                ));
            }
        }
        let node = self.bootstrap_node()?;
        // The node that will restore must reach the repository, or stopping the cluster would leave nothing.
        let client_conf = self.client_conf(&node);
        self.pgbackrest(&node, &client_conf, &["info"], Duration::from_secs(30))
            .await
            .map_err(|e| {
                format!(
                    "the repository is unreachable from {node}, the node that would restore; the cluster was left \
                     running: {e}"
                )
            })?;
        // While the primary still runs, its newest WAL goes to the archive first (`check` switches the segment and
        // waits for it to be archived): otherwise the transactions since the last switch exist nowhere the
        // restore can read, and recovery would end before the target. A primary that is gone keeps them: that
        // loss is the drill's RPO.
        let archived = if primary_up {
            self.archive_current_wal().await
        } else {
            Err("no primary is reachable".into())
        };
        match archived {
            Ok(()) => out
                .phases
                .push(("newest WAL archived".into(), Instant::now())),
            Err(e) => {
                let archived = self
                    .archiver_status(Duration::from_secs(5))
                    .await
                    .ok()
                    .and_then(|a| a.last_archived_time);
                if let (Some(t), Some(a)) = (target, archived) {
                    if target_time::unix(t) > a {
                        return Err(format!(
                            "the WAL archive stops at {} ({e}), before the recovery target {}: a restore cannot \
                             reach it, so the cluster was left running",
                            target_time::for_pgbackrest(
                                std::time::UNIX_EPOCH + Duration::from_secs_f64(a)
                            ),
                            target_text.as_deref().unwrap_or_default()
                        ));
                    }
                }
                out.notes.push(format!(
                    "the newest WAL could not be archived before the restore ({e}); transactions after the last \
                     archived segment cannot be recovered"
                ))
            }
        }
        out.notes.push(format!(
            "bootstrapping on {node} from {} (newest backup {})",
            self.repository_label(),
            info.newest_backup()
                .map(|b| b.label.as_str())
                .unwrap_or("-")
        ));

        // 2. Journaled first: from here on the cluster is down until the restore completes.
        journal
            .around(
                "restore-postgres",
                &format!(
                    "restore postgres to {} on {node}",
                    target_text.as_deref().unwrap_or("the end of the archive")
                ),
                vec![RevertStep::CompletePostgresRestore {
                    node: node.clone(),
                    target: target_text.clone(),
                }],
                self.restore_postgres_steps(&node, target_text.as_deref(), end, &mut out),
            )
            .await
            .map(|()| out)
    }

    /// The restore itself; idempotent (it starts from stopping whatever runs), so a revert can run it again.
    pub(super) async fn restore_postgres_steps(
        &self,
        node: &str,
        target: Option<&str>,
        end: Instant,
        out: &mut ActionOutcome,
    ) -> Result<(), String> {
        let left = || end.saturating_duration_since(Instant::now());
        let members = self.live_topology().placement.postgres;
        for n in &members {
            self.kill(n, ProcessKind::Patroni);
        }
        for n in &members {
            if !self.wait_gone(n, ProcessKind::Patroni, Duration::from_secs(10)) {
                return Err(format!("patroni on {n} did not stop"));
            }
        }
        let stopped = Instant::now();
        out.replaced_at = Some(stopped);
        out.phases.push(("cluster stopped".into(), stopped));
        if let Some(what) = self.form_etcd_on_survivors().await? {
            out.phases.push((what, Instant::now()));
        }
        postgres::wipe_dcs(&self.postgres_endpoints()).await?;
        for n in &members {
            let dir = self.dir.member_dir(n, ProcessKind::Patroni);
            // A SIGKILLed postmaster leaves its socket lock file; a new postmaster refuses to start over it when the
            // recorded pid has been reused meanwhile.
            for entry in fs::read_dir(dir.join("run"))
                .into_iter()
                .flatten()
                .flatten()
            {
                if entry.file_name().to_string_lossy().starts_with(".s.PGSQL.") {
                    let _ = fs::remove_file(entry.path());
                }
            }
            // `data.failed` is where Patroni moves a data directory whose bootstrap failed.
            for data in [dir.join("data"), dir.join("data.failed")] {
                if data.exists() {
                    fs::remove_dir_all(&data)
                        .map_err(|e| format!("cannot empty {}: {e}", data.display()))?;
                }
            }
        }
        out.phases.push((
            "DCS keys and data directories removed".into(),
            Instant::now(),
        ));

        let log_offset = fs::metadata(self.dir.log_file(node, ProcessKind::Patroni))
            .map(|m| m.len())
            .unwrap_or(0);
        let cmd = self.restore_command(node, target);
        self.start_with(
            node,
            ProcessKind::Patroni,
            None,
            super::StartHow::BootstrapFromBackup(&cmd),
        )
        .map_err(|e| e.to_string())?;
        // Service resumed = the bootstrapped leader accepts a write. Patroni exits when the bootstrap fails
        // ("Failed to bootstrap cluster"): that ends the wait at once, with PostgreSQL's reason.
        let ep = self.postgres_endpoints();
        let log = self.dir.log_file(node, ProcessKind::Patroni);
        let served = loop {
            let attempt = Duration::from_secs(2).min(left());
            match postgres::write_probe(&ep, attempt).await {
                Ok(m) => break m,
                Err(e) => {
                    if self.pids(node, ProcessKind::Patroni).is_empty() {
                        return Err(format!(
                            "Patroni gave up bootstrapping from the backup: {} (see {} and {})",
                            bootstrap_failure(&log, &self.pgbackrest_log_dir(node), log_offset),
                            log.display(),
                            self.pgbackrest_log_dir(node).display()
                        ));
                    }
                    if left().is_zero() {
                        return Err(format!(
                            "the restored cluster did not accept writes before the deadline: {e} (see {})",
                            log.display()
                        ));
                    }
                }
            }
        };
        let served_at = Instant::now();
        out.served_at = Some(served_at);
        // pgBackRest wrote its recovery settings into postgresql.auto.conf; a restored cluster must not carry a
        // recovery target into its future (a later demotion would recover towards it again).
        postgres::reset_recovery_settings(&ep)
            .await
            .map_err(|e| format!("cannot clear the restore's recovery settings: {e}"))?;
        out.phases.push((
            format!("restored primary on {served} accepts writes"),
            served_at,
        ));

        for n in members.iter().filter(|n| *n != node) {
            self.start(n, ProcessKind::Patroni, None)
                .map_err(|e| e.to_string())?;
        }
        // A surviving layout of one member has no replica to re-create, and no synchronous standby to wait for.
        let sync = self.settings().synchronous_mode && members.len() > 1;
        loop {
            let Err(last) = postgres::health(&ep, sync).await else {
                break;
            };
            if Instant::now() >= end {
                return Err(format!(
                    "the replicas were not re-created before the deadline: {last}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        out.phases.push((
            match members.len() {
                1 => "no replica to re-create: the layout has one PostgreSQL member".into(),
                n => format!("{} replicas re-created and streaming", n - 1),
            },
            Instant::now(),
        ));
        Ok(())
    }

    /// `faultline recover` / the engine's revert of an interrupted restore: run it again to completion. A
    /// target the archive cannot reach is given up for the end of the archive, so the stack serves again.
    pub(super) async fn complete_postgres_restore(
        &self,
        node: &str,
        target: Option<&str>,
    ) -> Result<(), String> {
        let mut out = ActionOutcome::default();
        let end = Instant::now() + COMPLETE_RESTORE_TIMEOUT;
        match self
            .restore_postgres_steps(node, target, end, &mut out)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if target.is_some() => {
                let mut out = ActionOutcome::default();
                self.restore_postgres_steps(node, None, end, &mut out)
                    .await
                    .map_err(|e2| format!("{e}; then, to the end of the archive: {e2}"))?;
                eprintln!(
                    "warning: the restore to {} could not complete ({e}); the cluster was restored to the end of \
                     the archive instead and serves again",
                    target.unwrap_or_default()
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Forces a WAL segment switch on the primary and waits until the segment is in the repository.
    async fn archive_current_wal(&self) -> Result<(), String> {
        let (Some(node), Some(conf)) = (self.backup_node(), self.repo_conf()) else {
            return Err("no backup node".into());
        };
        self.pgbackrest(
            node,
            &conf,
            &["--archive-timeout=30", "check"],
            Duration::from_secs(45),
        )
        .await
        .map(|_| ())
    }
}

/// Why the bootstrap failed: pgBackRest's ERROR from its restore log, else PostgreSQL's FATAL line written since
/// the bootstrap started (`offset` = the member log's length then).
fn bootstrap_failure(
    log: &std::path::Path,
    pgbackrest_logs: &std::path::Path,
    offset: u64,
) -> String {
    let restore_log =
        fs::read_to_string(pgbackrest_logs.join("faultline-restore.log")).unwrap_or_default();
    let last_run = restore_log
        .rfind("restore command begin")
        .map_or("", |i| &restore_log[i..]);
    if let Some(l) = last_run.lines().find(|l| l.contains(" ERROR: ")) {
        return format!("pgbackrest restore: {}", l.trim());
    }
    let text = fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(text.get(offset as usize..).unwrap_or_default());
    text.lines()
        .rev()
        .find(|l| l.contains("FATAL:") && !l.contains("the database system is"))
        .or_else(|| {
            text.lines()
                .rev()
                .find(|l| l.contains("PatroniFatalException"))
        })
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| "no FATAL line in the log since the bootstrap began".into())
}

/// How long completing an interrupted restore may take.
pub const COMPLETE_RESTORE_TIMEOUT: Duration = Duration::from_secs(900);
