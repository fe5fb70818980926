//! restore-qdrant on the local stack: every live peer recovers from its own snapshot of the newest set in the
//! backup store (uploaded, `priority: snapshot`, checked against its SHA-256 first), then the cluster must show
//! every shard replica Active on every peer within a bound — a cluster stuck after recovery (HA-FACTS: consensus
//! wedged, shards left Partial) is reported as such, never waited on forever — answer a known-vector search (a
//! point searched with its own vector is its own nearest neighbour) and accept a write. Qdrant has no
//! point-in-time restore: the set's oldest snapshot is the recovery point. Journaled before anything is
//! replaced, so `faultline recover` completes it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::LocalStack;
use crate::backup::qdrant_snapshots::{self, QdrantSnapshot};
use crate::component::qdrant as qdrant_component;
use crate::drill::ActionOutcome;
use crate::fault::journal::Journal;
use crate::fault::RevertStep;

/// How long the cluster may take to show every shard Active after the last peer recovered.
const UNSTICK_BOUND: Duration = Duration::from_secs(60);
/// One peer's recover call (the upload and the shard replacement).
const RECOVER_CALL: Duration = Duration::from_secs(120);

impl LocalStack {
    /// The set named, or the newest taken before `before`, one snapshot per live peer, or why it cannot be
    /// restored.
    fn qdrant_restore_set(
        &self,
        set: Option<&str>,
        before: Option<std::time::SystemTime>,
    ) -> Result<Vec<(PathBuf, QdrantSnapshot)>, String> {
        if !self.state.qdrant.is_present() {
            return Err("this stack runs no Qdrant".into());
        }
        let all = match set {
            None => self
                .backup_node()
                .map(|n| {
                    qdrant_snapshots::newest_set_before(
                        &self.qdrant_store(n),
                        before.map(crate::drill::target_time::unix),
                    )
                })
                .unwrap_or_default(),
            Some(name) => self
                .backup_node()
                .map(|n| {
                    qdrant_snapshots::list(&self.qdrant_store(n))
                        .into_iter()
                        .filter(|(_, s)| s.set == name)
                        .collect()
                })
                .unwrap_or_default(),
        };
        if all.is_empty() {
            return Err(
                "the backup store holds no Qdrant snapshot set taken before the incident: there is nothing to \
                 restore from (take one with `faultline backup` or a `prepare: [{action: backup}]` step)"
                    .into(),
            );
        }
        let ep = self.qdrant_endpoints();
        let missing: Vec<&str> = ep
            .peers
            .iter()
            .filter(|p| !all.iter().any(|(_, s)| s.peer == p.node))
            .map(|p| p.node.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the snapshot set {} has no snapshot of {} (a collection snapshot holds one peer's shards only)",
                all[0].1.set,
                missing.join(", ")
            ));
        }
        Ok(all)
    }

    pub async fn restore_qdrant(
        &self,
        journal: &Journal,
        before: Option<std::time::SystemTime>,
        deadline: Duration,
    ) -> Result<ActionOutcome, String> {
        let end = Instant::now() + deadline;
        let set = self.qdrant_restore_set(None, before)?;
        let name = set[0].1.set.clone();
        let point = set
            .iter()
            .map(|(_, s)| s.taken_at)
            .fold(f64::INFINITY, f64::min);
        let mut out = ActionOutcome {
            notes: vec![format!(
                "restoring snapshot set {name} ({} peer(s), data taken {})",
                set.len(),
                crate::clock::rfc3339_millis(
                    std::time::UNIX_EPOCH + Duration::from_secs_f64(point)
                )
            )],
            restored_point: Some(point),
            ..ActionOutcome::default()
        };
        journal
            .around(
                "restore-qdrant",
                &format!("restore qdrant from snapshot set {name}"),
                vec![RevertStep::CompleteQdrantRestore { set: name.clone() }],
                self.restore_qdrant_steps(&set, end, &mut out),
            )
            .await
            .map(|()| out)
    }

    /// The restore itself; idempotent (recovering a peer from its snapshot again gives the same data).
    async fn restore_qdrant_steps(
        &self,
        set: &[(PathBuf, QdrantSnapshot)],
        end: Instant,
        out: &mut ActionOutcome,
    ) -> Result<(), String> {
        let ep = self.qdrant_endpoints();
        out.replaced_at = Some(Instant::now());
        for peer in &ep.peers {
            let (path, snap) = set
                .iter()
                .find(|(_, s)| s.peer == peer.node)
                .ok_or_else(|| format!("no snapshot of {}", peer.node))?;
            let bound = RECOVER_CALL.min(end.saturating_duration_since(Instant::now()));
            qdrant_snapshots::recover(peer, snap, path, bound).await?;
            out.phases.push((
                format!("{} recovered from {}", peer.node, snap.file),
                Instant::now(),
            ));
        }
        let stuck_at = (Instant::now() + UNSTICK_BOUND).min(end);
        loop {
            match qdrant_component::health(&ep).await {
                Ok(_) => break,
                Err(e) if Instant::now() >= stuck_at => {
                    return Err(format!(
                        "the Qdrant cluster is stuck after recovery: {e} (still so {} s after the last peer \
                         recovered)",
                        UNSTICK_BOUND.as_secs()
                    ))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        out.phases
            .push(("every shard replica Active".into(), Instant::now()));
        let id = qdrant_component::known_vector_search(&ep)
            .await
            .map_err(|e| format!("the restored collection fails a known-vector search: {e}"))?;
        out.phases.push((
            format!("known-vector search finds point {id}"),
            Instant::now(),
        ));
        let bound = Duration::from_secs(10).min(end.saturating_duration_since(Instant::now()));
        let node = qdrant_component::write_probe(&ep, bound)
            .await
            .map_err(|e| format!("the restored collection does not accept writes: {e}"))?;
        let served = Instant::now();
        out.served_at = Some(served);
        out.phases.push((
            format!("restored collection accepts writes (via {node})"),
            served,
        ));
        Ok(())
    }

    /// The revert of an interrupted Qdrant restore: run it again from the same set.
    pub(super) async fn complete_qdrant_restore(&self, set: &str) -> Result<(), String> {
        let snaps = self.qdrant_restore_set(Some(set), None)?;
        let mut out = ActionOutcome::default();
        self.restore_qdrant_steps(&snaps, Instant::now() + Duration::from_secs(600), &mut out)
            .await
    }
}
