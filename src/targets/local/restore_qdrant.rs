//! restore-qdrant on the local stack. While the cluster keeps its quorum, every live peer recovers from its own
//! snapshot of the newest set in the backup store (uploaded, `priority: snapshot`, checked against its SHA-256
//! first). When lost nodes took the majority of the peers (a region loss), the survivors can never agree again:
//! they are stopped, emptied and formed into a new cluster, the collection is created on it, and every shard is
//! recovered from the set's shard snapshot on a peer holding it (the other replica, if any, is rebuilt from it).
//! Then the cluster must show
//! every shard replica Active on every peer within a bound — a cluster stuck after recovery (HA-FACTS: consensus
//! wedged, shards left Partial) is reported as such, never waited on forever — answer a known-vector search (a
//! point searched with its own vector is its own nearest neighbour) and accept a write. Qdrant has no
//! point-in-time restore: the set's oldest snapshot is the recovery point. Journaled before anything is
//! replaced, so `faultline recover` completes it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{netns, LocalStack, ProcessKind};
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
    /// Whether the lost nodes took the majority of the Qdrant peers: the survivors can never elect a raft leader
    /// again, and a restore forms a new cluster on them.
    pub(super) fn qdrant_survivors_lack_quorum(&self) -> bool {
        let all = self.topology().placement.qdrant.len();
        let live = self.live_topology().placement.qdrant.len();
        live < all && live * 2 <= all
    }

    /// The set named, or the newest taken before `before`: one snapshot per live peer (`new_cluster` false) or
    /// one per shard (true), or why it cannot be restored.
    fn qdrant_restore_set(
        &self,
        set: Option<&str>,
        before: Option<std::time::SystemTime>,
        new_cluster: bool,
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
        let name = all[0].1.set.clone();
        if new_cluster {
            let shards = self.settings().qdrant_collection_spec().shard_number;
            let used: Vec<_> = all.into_iter().filter(|(_, s)| s.shard.is_some()).collect();
            let missing: Vec<String> = (0..shards)
                .filter(|i| !used.iter().any(|(_, s)| s.shard == Some(*i)))
                .map(|i| i.to_string())
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "the snapshot set {name} has no snapshot of shard(s) {} (a cluster formed anew is restored \
                     shard by shard; sets taken before faultline snapshotted shards hold peers' snapshots only)",
                    missing.join(", ")
                ));
            }
            return Ok(used);
        }
        let ep = self.qdrant_endpoints();
        let used: Vec<_> = all.into_iter().filter(|(_, s)| s.shard.is_none()).collect();
        let missing: Vec<&str> = ep
            .peers
            .iter()
            .filter(|p| !used.iter().any(|(_, s)| s.peer == p.node))
            .map(|p| p.node.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the snapshot set {name} has no snapshot of {} (a collection snapshot holds one peer's shards only)",
                missing.join(", ")
            ));
        }
        Ok(used)
    }

    pub async fn restore_qdrant(
        &self,
        journal: &Journal,
        before: Option<std::time::SystemTime>,
        deadline: Duration,
    ) -> Result<ActionOutcome, String> {
        let end = Instant::now() + deadline;
        let new_cluster = self.qdrant_survivors_lack_quorum();
        let set = self.qdrant_restore_set(None, before, new_cluster)?;
        let name = set[0].1.set.clone();
        let point = set
            .iter()
            .map(|(_, s)| s.taken_at)
            .fold(f64::INFINITY, f64::min);
        let what = if new_cluster {
            "shard snapshots onto a cluster formed anew on the surviving peers (the lost nodes held the \
             majority of the peers)"
        } else {
            "peer snapshots"
        };
        let mut out = ActionOutcome {
            notes: vec![format!(
                "restoring snapshot set {name} ({} {what}, data taken {})",
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
                vec![RevertStep::CompleteQdrantRestore {
                    set: name.clone(),
                    new_cluster,
                }],
                self.restore_qdrant_steps(&set, new_cluster, end, &mut out),
            )
            .await
            .map(|()| out)
    }

    /// The restore itself; idempotent (recovering a peer from its snapshot again gives the same data, and a
    /// cluster formed anew again is formed from nothing again).
    async fn restore_qdrant_steps(
        &self,
        set: &[(PathBuf, QdrantSnapshot)],
        new_cluster: bool,
        end: Instant,
        out: &mut ActionOutcome,
    ) -> Result<(), String> {
        // Clients (gRPC) are kept out until every shard holds the backup's data and every replica is Active
        // again: a write a peer acknowledged between the collection's creation and its shard's recovery was
        // overwritten (seen: 0.4 s of acknowledged writes lost), and so was one a replica acknowledged after the
        // last peer recovered but before the rebuilt replicas were Active (seen: one write). The harness's own
        // calls until then use REST.
        let live = self.live_topology().placement.qdrant;
        let shut = |n: &String| {
            netns::close_port(&self.topology().namespace(n), qdrant_component::GRPC_PORT)
                .map_err(|e| format!("cannot close qdrant's client port on {n}: {e}"))
        };
        let closed = live.iter().try_for_each(shut);
        // From here no client reaches the data being replaced: a write sent later is the restored cluster's
        // (one sent just before, while the ports were being closed, still met the old data).
        out.replaced_at = Some(Instant::now());
        let restored = async {
            closed?;
            if new_cluster {
                self.restore_qdrant_new_cluster(set, end, out).await?;
            } else {
                self.restore_qdrant_peers(set, end, out).await?;
            }
            self.qdrant_all_active(end, out).await
        }
        .await;
        let mut reopened = Ok(());
        for n in &live {
            if let Err(e) = netns::open_ports(&self.topology().namespace(n)) {
                reopened = Err(format!("cannot reopen qdrant's client port on {n}: {e}"));
            }
        }
        restored?;
        reopened?;
        out.phases
            .push(("clients let in again".into(), Instant::now()));
        self.qdrant_restored_serves(end, out).await
    }

    /// Every live peer from its own collection snapshot.
    async fn restore_qdrant_peers(
        &self,
        set: &[(PathBuf, QdrantSnapshot)],
        end: Instant,
        out: &mut ActionOutcome,
    ) -> Result<(), String> {
        let ep = self.qdrant_endpoints();
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
        Ok(())
    }

    /// A new cluster on the surviving peers (stopped, emptied, started with the first as the new cluster's
    /// first peer), the collection created with the settings' parameters, and each shard recovered from its
    /// shard snapshot on a peer holding a replica of it.
    async fn restore_qdrant_new_cluster(
        &self,
        set: &[(PathBuf, QdrantSnapshot)],
        end: Instant,
        out: &mut ActionOutcome,
    ) -> Result<(), String> {
        let ep = self.qdrant_endpoints();
        let live: Vec<String> = ep.peers.iter().map(|p| p.node.clone()).collect();
        let first = live
            .first()
            .ok_or("no Qdrant peer survives: there is nowhere to restore")?;
        self.stop_and_empty(&live, ProcessKind::Qdrant)?;
        self.start(first, ProcessKind::Qdrant, None)
            .map_err(|e| e.to_string())?;
        self.wait_qdrant_endpoint(first, "/healthz", Duration::from_secs(30))
            .await
            .map_err(|e| e.to_string())?;
        for n in &live[1..] {
            self.start(n, ProcessKind::Qdrant, Some(self.addr(first)))
                .map_err(|e| e.to_string())?;
        }
        for n in &live {
            self.wait_qdrant_endpoint(n, "/readyz", Duration::from_secs(60))
                .await
                .map_err(|e| e.to_string())?;
        }
        out.phases.push((
            format!("qdrant formed anew on {}", live.join(", ")),
            Instant::now(),
        ));
        qdrant_component::admin::create_collection(&ep.peers[0], &ep).await?;
        let until = (Instant::now() + Duration::from_secs(60)).min(end);
        while let Err(e) = qdrant_component::health(&ep).await {
            if Instant::now() >= until {
                return Err(format!("the new cluster's collection is not ready: {e}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        out.phases.push((
            format!("collection `{}` created empty", ep.collection.name),
            Instant::now(),
        ));
        let holders: std::collections::BTreeMap<u32, String> =
            self.qdrant_shard_holders().await?.into_iter().collect();
        for (path, snap) in set {
            let shard = snap.shard.expect("a shard snapshot");
            let node = holders
                .get(&shard)
                .ok_or_else(|| format!("no peer of the new cluster holds shard {shard}"))?;
            let peer = ep.peer(node).expect("a holder is a live peer");
            let bound = RECOVER_CALL.min(end.saturating_duration_since(Instant::now()));
            qdrant_snapshots::recover(peer, snap, path, bound).await?;
            out.phases.push((
                format!("shard {shard} recovered on {node} from {}", snap.file),
                Instant::now(),
            ));
        }
        Ok(())
    }

    /// The bounded wait for every shard replica Active on every peer (a cluster stuck after recovery fails).
    async fn qdrant_all_active(&self, end: Instant, out: &mut ActionOutcome) -> Result<(), String> {
        let ep = self.qdrant_endpoints();
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
        Ok(())
    }

    /// A known-vector search and a write: what "restored" means once clients are let in.
    async fn qdrant_restored_serves(
        &self,
        end: Instant,
        out: &mut ActionOutcome,
    ) -> Result<(), String> {
        let ep = self.qdrant_endpoints();
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

    /// The revert of an interrupted Qdrant restore: run it again from the same set, the same way.
    pub(super) async fn complete_qdrant_restore(
        &self,
        set: &str,
        new_cluster: bool,
    ) -> Result<(), String> {
        let snaps = self.qdrant_restore_set(Some(set), None, new_cluster)?;
        let mut out = ActionOutcome::default();
        let end = Instant::now() + Duration::from_secs(600);
        self.restore_qdrant_steps(&snaps, new_cluster, end, &mut out)
            .await
    }

    /// A restore from the newest set, when a revert finds Qdrant not serving (nothing restored it).
    pub(super) async fn complete_newest_qdrant_restore(
        &self,
        new_cluster: bool,
    ) -> Result<(), String> {
        let snaps = self.qdrant_restore_set(None, None, new_cluster)?;
        let mut out = ActionOutcome::default();
        let end = Instant::now() + Duration::from_secs(600);
        self.restore_qdrant_steps(&snaps, new_cluster, end, &mut out)
            .await
    }
}
