//! Nodes lost for good (`method: destroy`) and their return. A destroyed node has no processes, no link and no
//! data; it is recorded as lost, so the stack is its surviving layout (`LocalStack::live_topology`) until the
//! node is rebuilt. Here: removing a node's data, forming etcd anew on the surviving nodes when the lost ones held
//! its majority (a restore needs a DCS), and rebuilding lost nodes empty into the clusters that run then.

use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, Instant};

use super::{netns, LocalStack, ProcessKind, StartHow};
use crate::component::http_client;
use crate::component::postgres;
use crate::component::qdrant as qdrant_component;
use crate::component::redis as redis_component;
use crate::drill::ActionOutcome;
use crate::targets::local::configs::{ETCD_CLIENT_PORT, ETCD_PEER_PORT};

/// How long a rebuilt or re-formed etcd member may take to be healthy.
const ETCD_READY: Duration = Duration::from_secs(30);
/// How long rebuilt Qdrant peers may take to receive their replicas (seconds per shard here: HA-FACTS).
const QDRANT_REPLICATED: Duration = Duration::from_secs(120);

impl LocalStack {
    /// Removes what a destroyed node held: every member's data directory, pgBackRest's spool, and on the backup
    /// node the repository and the backup store. Configurations and logs stay (logs are evidence).
    pub fn remove_node_data(&self, node: &str) -> Result<(), String> {
        let mut dirs = Vec::new();
        for kind in ProcessKind::ALL {
            let d = self.dir.member_dir(node, kind);
            dirs.extend([d.join("data"), d.join("data.failed"), d.join("spool")]);
        }
        if self.backup_node() == Some(node) {
            dirs.extend(self.repo_path());
            dirs.push(self.dir.backup_store(node));
        }
        for d in dirs.iter().filter(|d| d.exists()) {
            fs::remove_dir_all(d).map_err(|e| format!("cannot remove {}: {e}", d.display()))?;
        }
        Ok(())
    }

    /// What `destroy` does to a node after recording it as lost: every member gone, its data removed. Only a node
    /// still recorded as lost (not yet rebuilt) gets here, so nothing rebuilt is destroyed again.
    fn finish_destroy(&self, node: &str) -> Result<(), String> {
        let members = self.members_on(node);
        for kind in &members {
            self.kill(node, *kind);
        }
        for kind in &members {
            if !self.wait_gone(node, *kind, Duration::from_secs(3)) {
                return Err(format!(
                    "{} on lost node {node} is still running after SIGKILL; its data is left in place",
                    kind.name()
                ));
            }
        }
        self.remove_node_data(node)
    }

    /// Whether the etcd nodes still alive hold a majority of the etcd cluster the topology places.
    fn etcd_survivors_have_quorum(&self) -> bool {
        let all = self.topology().placement.etcd.len();
        let live = self.live_topology().placement.etcd.len();
        live * 2 > all
    }

    /// A restore in a surviving layout needs a DCS. When the lost nodes held etcd's majority, the surviving etcd
    /// can never elect a leader again: its members are stopped, emptied and started as a new cluster of the
    /// surviving etcd nodes. Returns what was done (None: etcd had its quorum and was left alone).
    pub(super) async fn form_etcd_on_survivors(&self) -> Result<Option<String>, String> {
        if self.lost_nodes().is_empty() || self.etcd_survivors_have_quorum() {
            return Ok(None);
        }
        // Formed anew already (by the drill's restore, before a revert runs): it holds the restored cluster's keys.
        if self.etcd_health().await.is_ok() {
            return Ok(None);
        }
        let live = self.live_topology().placement.etcd;
        if live.is_empty() {
            return Err("no etcd node survives: there is nowhere to form a DCS".into());
        }
        self.stop_and_empty(&live, ProcessKind::Etcd)?;
        for n in &live {
            self.start(n, ProcessKind::Etcd, None)
                .map_err(|e| e.to_string())?;
        }
        self.wait_etcd_healthy().await?;
        Ok(Some(format!(
            "etcd formed anew on {} (the lost nodes held its majority)",
            live.join(", ")
        )))
    }

    /// Kills `kind` on every node of `nodes`, waits until each is gone and removes its data directory: the
    /// first step of forming a cluster anew on survivors that can never agree again.
    pub(super) fn stop_and_empty(&self, nodes: &[String], kind: ProcessKind) -> Result<(), String> {
        for n in nodes {
            self.kill(n, kind);
        }
        for n in nodes {
            if !self.wait_gone(n, kind, Duration::from_secs(10)) {
                return Err(format!("{} on {n} did not stop", kind.name()));
            }
            let data = self.dir.member_dir(n, kind).join("data");
            if data.exists() {
                fs::remove_dir_all(&data)
                    .map_err(|e| format!("cannot empty {}: {e}", data.display()))?;
            }
        }
        Ok(())
    }

    async fn wait_etcd_healthy(&self) -> Result<(), String> {
        let end = Instant::now() + ETCD_READY;
        loop {
            match self.etcd_health().await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= end => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Adds `node` to the running etcd cluster (removing a member of the same name first: the destroyed one)
    /// and starts it empty to join.
    async fn join_etcd(&self, node: &str) -> Result<(), String> {
        let http = http_client(Duration::from_secs(5));
        let peer = format!("http://{}:{ETCD_PEER_PORT}", self.addr(node));
        let live: Vec<String> = self
            .live_topology()
            .placement
            .etcd
            .into_iter()
            .filter(|n| n != node)
            .collect();
        let base = live
            .first()
            .map(|n| {
                format!(
                    "http://{}:{ETCD_CLIENT_PORT}/v3/cluster/member",
                    self.addr(n)
                )
            })
            .ok_or("no running etcd member to join")?;
        let list: serde_json::Value = http
            .post(format!("{base}/list"))
            .json(&serde_json::json!({}))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("etcd member list: {e}"))?
            .json()
            .await
            .map_err(|e| format!("etcd member list: {e}"))?;
        for m in list["members"].as_array().into_iter().flatten() {
            let same = m["name"] == node
                || m["peerURLs"]
                    .as_array()
                    .is_some_and(|u| u.iter().any(|u| u == peer.as_str()));
            if same {
                http.post(format!("{base}/remove"))
                    .json(&serde_json::json!({"ID": m["ID"]}))
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| format!("etcd member remove {node}: {e}"))?;
            }
        }
        // Added as a learner: it does not count towards the quorum until promoted, so a member that fails to
        // start can never take the running cluster's majority with it (adding a voter to a one-member cluster
        // makes the quorum two at once). etcd refuses a reconfiguration until its leader has been connected to
        // every peer for a few seconds (strict reconfig check, HTTP 503): right after a member joined, it waits.
        let end = Instant::now() + ETCD_READY;
        let added: serde_json::Value = loop {
            let r = http
                .post(format!("{base}/add"))
                .json(&serde_json::json!({"peerURLs": [peer], "isLearner": true}))
                .send()
                .await
                .and_then(|r| r.error_for_status());
            match r {
                Ok(r) => {
                    break r
                        .json()
                        .await
                        .map_err(|e| format!("etcd member add: {e}"))?
                }
                Err(e) if Instant::now() >= end => {
                    return Err(format!("etcd member add {node}: {e}"))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        let id = added["member"]["ID"].clone();
        // From here the node belongs to the live layout: its initial cluster is the live etcd nodes, itself
        // included. A joining member starts from nothing (a half-joined earlier attempt may have left data); one
        // that exits (it could not fetch the cluster from its peers yet) is started again.
        self.mark_rebuilt(node)?;
        let data = self.dir.member_dir(node, ProcessKind::Etcd).join("data");
        let mut last;
        loop {
            if self.pids(node, ProcessKind::Etcd).is_empty() {
                self.wait_gone(node, ProcessKind::Etcd, Duration::from_secs(10));
                if data.exists() {
                    fs::remove_dir_all(&data)
                        .map_err(|e| format!("cannot empty {}: {e}", data.display()))?;
                }
                self.start_with(node, ProcessKind::Etcd, None, StartHow::JoinEtcd)
                    .map_err(|e| e.to_string())?;
            }
            // Promotion succeeds once the learner has caught up with the leader's log.
            let r = http
                .post(format!("{base}/promote"))
                .json(&serde_json::json!({ "ID": id }))
                .send()
                .await
                .and_then(|r| r.error_for_status());
            match r {
                Ok(_) => break,
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= end {
                return Err(format!(
                    "etcd on {node} did not join (it stays a learner, outside the quorum): {last} (see {})",
                    self.dir.log_file(node, ProcessKind::Etcd).display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.wait_etcd_healthy()
            .await
            .map_err(|e| format!("etcd on {node} did not join: {e}"))
    }

    fn mark_rebuilt(&self, node: &str) -> Result<(), String> {
        let mut lost = self.lost_nodes();
        lost.remove(node);
        self.dir
            .save_lost_nodes(&lost)
            .map_err(|e| format!("cannot record {node} as rebuilt: {e}"))
    }

    /// The revert of `destroy`: the nodes come back empty and join the clusters that run then. When nothing
    /// restored service in the surviving layout (a destroy without a drill's restore, or a restore that failed),
    /// this does it first, from the backups: a revert always ends with a serving stack. Idempotent: a node stays
    /// recorded as lost until its etcd member has joined, and members already running are left alone, so a
    /// revert that failed part-way (or `faultline recover`) runs it again.
    pub(super) async fn rebuild_lost_nodes(&self, nodes: &[String]) -> Result<(), String> {
        let lost = self.lost_nodes();
        // A destroy faultline did not finish (it died after recording the nodes as lost, before their members were
        // gone and their data removed) is finished first: a half-removed data directory must not pass for a
        // member to start again (Patroni then waits forever on "system ID is invalid").
        for n in nodes.iter().filter(|n| lost.contains(*n)) {
            self.finish_destroy(n)?;
        }
        for n in nodes {
            netns::set_link(self.topology(), n, true).map_err(|e| format!("link of {n}: {e}"))?;
        }
        // 1. The survivors serve (a DCS, a PostgreSQL primary, a Redis master), or are made to.
        self.form_etcd_on_survivors().await?;
        let end = Instant::now() + super::restore_postgres::COMPLETE_RESTORE_TIMEOUT;
        let pg_live = !self.live_topology().placement.postgres.is_empty();
        if pg_live
            && postgres::write_probe(&self.postgres_endpoints(), Duration::from_secs(5))
                .await
                .is_err()
        {
            let node = self.live_topology().placement.postgres[0].clone();
            self.restore_postgres_steps(&node, None, end, &mut ActionOutcome::default())
                .await
                .map_err(|e| format!("restoring PostgreSQL on the surviving nodes: {e}"))?;
        }
        // The Redis master, named by the surviving sentinels (before the rebuilt nodes count towards their
        // majority).
        let mut redis_master = None;
        let live_redis = self.live_topology().placement.redis;
        if !live_redis.is_empty() {
            // Surviving sentinels still name a lost master when nothing restored Redis: that one is gone.
            redis_master = redis_component::agreed_master(&self.redis_endpoints())
                .await
                .filter(|m| live_redis.contains(m));
            if redis_master.is_none() {
                self.complete_newest_redis_restore()
                    .await
                    .map_err(|e| format!("restoring Redis on the surviving nodes: {e}"))?;
                redis_master = redis_component::agreed_master(&self.redis_endpoints()).await;
            }
        }

        // Qdrant: survivors that lost their quorum can never serve again; they are formed into a new cluster and
        // restored from the newest set (a drill's restore-qdrant did this already when it ran).
        let qdrant_live =
            self.state.qdrant.is_present() && !self.live_topology().placement.qdrant.is_empty();
        if qdrant_live
            && self.qdrant_survivors_lack_quorum()
            && qdrant_component::health(&self.qdrant_endpoints())
                .await
                .is_err()
        {
            self.complete_newest_qdrant_restore(true)
                .await
                .map_err(|e| format!("restoring Qdrant on the surviving nodes: {e}"))?;
        }

        // 2. Each node rejoins: etcd one member at a time (each addition changes the quorum).
        let etcd: BTreeSet<&String> = self.topology().placement.etcd.iter().collect();
        for n in nodes {
            let rejoin = etcd.contains(n)
                && (lost.contains(n) || self.pids(n, ProcessKind::Etcd).is_empty());
            if !rejoin {
                self.mark_rebuilt(n)?;
                continue;
            }
            let others = self.live_topology().placement.etcd.iter().any(|e| e != n);
            if others {
                self.join_etcd(n).await?;
            } else {
                // Every etcd node was lost: this one forms the cluster the others join.
                self.mark_rebuilt(n)?;
                self.start(n, ProcessKind::Etcd, None)
                    .map_err(|e| e.to_string())?;
                self.wait_etcd_healthy().await?;
            }
        }
        let not_running = |n: &String, kind: ProcessKind| {
            self.members_on(n).contains(&kind) && self.pids(n, kind).is_empty()
        };
        for n in nodes {
            for kind in [
                ProcessKind::Pgbackrest,
                ProcessKind::Patroni,
                ProcessKind::Haproxy,
                ProcessKind::Pgbouncer,
            ] {
                if not_running(n, kind) {
                    self.start(n, kind, None).map_err(|e| e.to_string())?;
                }
            }
        }
        // Nothing PostgreSQL survived: the rebuilt nodes restore it.
        if !pg_live {
            let node = self.topology().placement.postgres[0].clone();
            self.restore_postgres_steps(&node, None, end, &mut ActionOutcome::default())
                .await?;
        }
        let master = match redis_master {
            Some(m) => m,
            // Nothing of Redis survived: the rebuilt nodes restore it.
            None => {
                self.complete_newest_redis_restore().await?;
                redis_component::agreed_master(&self.redis_endpoints())
                    .await
                    .ok_or("the sentinels agree on no Redis master")?
            }
        };
        // Redis: the rebuilt members replicate the master; every sentinel starts afresh with the whole layout
        // (the surviving ones were configured for the smaller one).
        let master_addr = self.addr(&master);
        for n in nodes.iter().filter(|n| not_running(n, ProcessKind::Redis)) {
            self.start(n, ProcessKind::Redis, Some(master_addr))
                .map_err(|e| e.to_string())?;
        }
        let sentinels = self.topology().placement.sentinel.clone();
        for n in &sentinels {
            self.kill(n, ProcessKind::Sentinel);
        }
        for n in &sentinels {
            self.wait_gone(n, ProcessKind::Sentinel, Duration::from_secs(10));
            self.start(n, ProcessKind::Sentinel, Some(master_addr))
                .map_err(|e| e.to_string())?;
        }
        if self.state.qdrant.is_present() {
            if qdrant_live {
                self.rejoin_qdrant(nodes).await?;
            } else {
                // Nothing of Qdrant survived: the rebuilt peers form a cluster and restore it.
                self.complete_newest_qdrant_restore(true).await?;
            }
        }
        Ok(())
    }

    /// Rebuilt Qdrant peers join the running cluster empty (an old identity at the same address removed
    /// first), then every shard is copied to them until it has its replication factor again, and the cluster
    /// must be healthy within a bound.
    async fn rejoin_qdrant(&self, nodes: &[String]) -> Result<(), String> {
        let ep = self.qdrant_endpoints();
        let running = |n: &String| !self.pids(n, ProcessKind::Qdrant).is_empty();
        let via = ep
            .peers
            .iter()
            .find(|p| !nodes.contains(&p.node) && running(&p.node))
            .or_else(|| ep.peers.iter().find(|p| running(&p.node)))
            .ok_or("no Qdrant peer runs to join")?
            .clone();
        for n in nodes {
            let placed = self.topology().placement.qdrant.contains(n);
            if !placed || running(n) {
                continue;
            }
            qdrant_component::admin::remove_stale_peers(&via, &ep, n, None).await?;
            self.start(n, ProcessKind::Qdrant, Some(self.addr(&via.node)))
                .map_err(|e| e.to_string())?;
            self.wait_qdrant_endpoint(n, "/readyz", Duration::from_secs(60))
                .await
                .map_err(|e| e.to_string())?;
        }
        let end = Instant::now() + QDRANT_REPLICATED;
        let mut asked: Option<Instant> = None;
        loop {
            let health = qdrant_component::health(&ep).await;
            match health {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= end => {
                    return Err(format!(
                        "qdrant did not return to its replication factor within {} s: {e}",
                        QDRANT_REPLICATED.as_secs()
                    ))
                }
                // Asked again now and then: a transfer that failed leaves its shard short again.
                Err(_) if asked.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) => {
                    // Every peer must know the joined ones before replicas are placed on them.
                    let ids = qdrant_component::admin::peer_ids(&ep).await;
                    if ep.peers.iter().all(|p| ids.contains_key(&p.node)) {
                        qdrant_component::admin::restore_replication(&via, &ep).await?;
                        asked = Some(Instant::now());
                    }
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
