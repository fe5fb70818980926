//! Qdrant against a real 3-peer cluster. Needs a Qdrant executable (QDRANT_BIN, or `qdrant` on PATH); without
//! one there is nothing to run them against, so they are ignored by default: run them with
//! `QDRANT_BIN=/path/to/qdrant cargo test --test qdrant -- --ignored` (they still skip with a message if the
//! executable is missing).
//!
//! - `loopback_cluster_*` starts three peers on 127.0.0.1 (own ports, no root needed) and drives faultline's
//!   Qdrant client, probe, health check and read-back against them while one peer is killed and restarted.
//! - `qdrant_node_kill_scenario_on_the_local_stack` runs scenarios/qdrant-node-kill.yaml end to end on the local
//!   stack (needs root and the stack's packages as well; it re-creates the stack with Qdrant if the running one
//!   has none).

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use faultline::clock::Clock;
use faultline::component::qdrant::{
    health, prepare, read_back_ledger, spawn_probe, CollectionSpec, QdrantEndpoints,
    QdrantLoadClient, QdrantPeer,
};
use faultline::events::{EventKind, EventLog};
use faultline::ledger::Outcome;
use faultline::load::LoadClient;

/// The Qdrant executable, or None after saying why the test is skipped.
fn qdrant_bin() -> Option<PathBuf> {
    if let Some(b) = std::env::var_os("QDRANT_BIN").filter(|b| !b.is_empty()) {
        let b = PathBuf::from(b);
        if b.is_file() {
            return Some(b);
        }
        eprintln!("skipped: QDRANT_BIN={} does not exist", b.display());
        return None;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("qdrant"))
            .find(|p| p.is_file())
    });
    if on_path.is_none() {
        eprintln!(
            "skipped: no Qdrant executable; set QDRANT_BIN to a Qdrant release binary (or put `qdrant` on PATH) \
             to run the real-cluster tests"
        );
    }
    on_path
}

/// Three peers on 127.0.0.1: peer i has REST 26333+10i, gRPC 26334+10i, p2p 26335+10i.
/// The loopback clusters use fixed ports: one at a time.
static LOOPBACK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct LoopbackCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    children: Vec<Option<Child>>,
    ep: QdrantEndpoints,
}

impl LoopbackCluster {
    fn peer(i: usize) -> QdrantPeer {
        let base = 26333 + 10 * i as u16;
        QdrantPeer {
            node: format!("p{i}"),
            addr: Ipv4Addr::LOCALHOST,
            rest_port: base,
            grpc_port: base + 1,
            p2p_port: base + 2,
            announced: vec!["127.0.0.1".into()],
        }
    }

    fn new(bin: PathBuf) -> Self {
        let peers: Vec<QdrantPeer> = (0..3).map(Self::peer).collect();
        LoopbackCluster {
            bin,
            dir: tempfile::tempdir().unwrap(),
            children: (0..3).map(|_| None).collect(),
            ep: QdrantEndpoints {
                peers,
                collection: CollectionSpec {
                    name: "faultline".into(),
                    vector_size: 32,
                    shard_number: 6,
                    replication_factor: 2,
                    write_consistency_factor: 1,
                },
                seed: 42,
            },
        }
    }

    fn start(&mut self, i: usize, bootstrap: Option<usize>) {
        let p = &self.ep.peers[i];
        let d = self.dir.path().join(&p.node);
        std::fs::create_dir_all(&d).unwrap();
        let config = d.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "log_level: INFO\nstorage:\n  storage_path: {0}/storage\n  snapshots_path: {0}/snapshots\nservice:\n  \
                 host: 127.0.0.1\n  http_port: {1}\n  grpc_port: {2}\ncluster:\n  enabled: true\n  p2p:\n    port: \
                 {3}\n  consensus:\n    tick_period_ms: 100\ntelemetry_disabled: true\n",
                d.display(),
                p.rest_port,
                p.grpc_port,
                p.p2p_port
            ),
        )
        .unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config-path")
            .arg(&config)
            .arg("--uri")
            .arg(p.p2p_uri())
            .arg("--disable-telemetry")
            .env("QDRANT__TELEMETRY_DISABLED", "true")
            .current_dir(&d)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(d.join("log")).unwrap())
            .stderr(Stdio::inherit());
        if let Some(b) = bootstrap {
            cmd.arg("--bootstrap").arg(self.ep.peers[b].p2p_uri());
        }
        self.children[i] = Some(cmd.spawn().expect("qdrant starts"));
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn wait_endpoint(&self, i: usize, path: &str, timeout: Duration) {
        let http = faultline::component::http_client(Duration::from_millis(500));
        let url = self.ep.peers[i].rest_url(path);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = http.get(&url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{url} did not answer within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// HA-FACTS: the first peer, /healthz, then the others bootstrapping from it, then /readyz on all.
    async fn start_all(&mut self) {
        self.start(0, None);
        self.wait_endpoint(0, "/healthz", Duration::from_secs(30))
            .await;
        self.start(1, Some(0));
        self.start(2, Some(0));
        for i in 0..3 {
            self.wait_endpoint(i, "/readyz", Duration::from_secs(60))
                .await;
        }
    }
}

impl Drop for LoopbackCluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Qdrant executable: set QDRANT_BIN (or put qdrant on PATH), then cargo test --test qdrant -- --ignored"]
async fn loopback_cluster_keeps_every_point_and_answers_every_search_when_a_peer_dies() {
    let Some(bin) = qdrant_bin() else { return };
    let _one = LOOPBACK.lock().await;
    let mut cluster = LoopbackCluster::new(bin);
    cluster.start_all().await;
    let ep = cluster.ep.clone();
    let deadline = Duration::from_secs(60);
    let healthy_until = Instant::now() + deadline;
    while let Err(e) = health(&ep).await {
        assert!(Instant::now() < healthy_until, "cluster not healthy: {e}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    prepare(&ep, Duration::from_secs(30)).await.unwrap();

    let events = EventLog::new(Clock::start());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let probe = spawn_probe(ep.clone(), events.clone(), stop_rx);
    let leader = faultline::component::qdrant::raft_leader(&ep)
        .await
        .expect("a raft leader");
    let victim = ep
        .peers
        .iter()
        .position(|p| p.node != leader)
        .expect("a non-leader peer");

    let client = QdrantLoadClient::new(ep.clone(), "itest");
    let mut acked = Vec::new();
    let mut failed_queries = Vec::new();
    let op_deadline = Duration::from_secs(2);
    let mut killed_at = None;
    let started = Instant::now();
    let mut id = 0u64;
    while started.elapsed() < Duration::from_secs(12) {
        if killed_at.is_none() && started.elapsed() > Duration::from_secs(3) {
            cluster.kill(victim);
            killed_at = Some(events.clock().now());
        }
        id += 1;
        if client.write(id, Instant::now() + op_deadline).await.outcome == Outcome::Ok {
            acked.push(id);
        }
        for q in [
            client.search(Instant::now() + op_deadline).await,
            client.read(Instant::now() + op_deadline).await,
        ] {
            if q.outcome != Outcome::Ok {
                failed_queries.push(q.error.unwrap_or_default());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        failed_queries.is_empty(),
        "queries failed with one peer down: {failed_queries:?}"
    );
    assert!(
        acked.len() > 100,
        "only {} acknowledged upserts",
        acked.len()
    );

    // Detection: a replica of the victim seen not Active by a survivor.
    let killed_at = killed_at.unwrap();
    let detection = events
        .snapshot()
        .into_iter()
        .find(|e| e.at >= killed_at && matches!(e.kind, EventKind::FailureDetected { .. }))
        .expect("a survivor marks the dead peer's replicas");
    eprintln!(
        "detection after {:.2} s: {:?}",
        detection.at.secs_since(killed_at),
        detection.kind
    );

    // Every acknowledged point is still retrievable from the survivors.
    let (rb, report) = read_back_ledger(&ep, "itest", Duration::from_secs(5), Clock::start())
        .await
        .unwrap();
    let lost: Vec<&u64> = acked.iter().filter(|i| !rb.present.contains(i)).collect();
    assert!(lost.is_empty(), "lost acknowledged points: {lost:?}");
    assert_eq!(report.unanswered.len(), 1, "only the dead peer is missing");

    // Restarted into the running cluster, the peer's replicas come back Active everywhere.
    let live = (0..3).find(|i| *i != victim).unwrap();
    cluster.start(victim, Some(live));
    let until = Instant::now() + Duration::from_secs(60);
    while let Err(e) = health(&ep).await {
        assert!(Instant::now() < until, "not healthy after the restart: {e}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (rb, report) = read_back_ledger(&ep, "itest", Duration::from_secs(10), Clock::start())
        .await
        .unwrap();
    assert!(acked.iter().all(|i| rb.present.contains(i)));
    assert!(
        report.inconsistencies().is_empty(),
        "{:?}",
        report.inconsistencies()
    );
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), probe).await;
}

/// Backups of Qdrant: one snapshot per peer (a collection snapshot holds one peer's shards), each copied into the
/// store, matching the SHA-256 Qdrant reported, described beside it, and removed from the peer.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Qdrant executable: set QDRANT_BIN (or put qdrant on PATH), then cargo test --test qdrant -- --ignored"]
async fn every_peer_is_snapshotted_into_the_backup_store_and_checked() {
    use faultline::backup::qdrant_snapshots::{newest_set, sha256_file, take};
    let Some(bin) = qdrant_bin() else { return };
    let _one = LOOPBACK.lock().await;
    let mut cluster = LoopbackCluster::new(bin);
    cluster.start_all().await;
    let ep = cluster.ep.clone();
    let healthy_until = Instant::now() + Duration::from_secs(60);
    while let Err(e) = health(&ep).await {
        assert!(Instant::now() < healthy_until, "cluster not healthy: {e}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    prepare(&ep, Duration::from_secs(30)).await.unwrap();
    let client = QdrantLoadClient::new(ep.clone(), "snap");
    for id in 1..=200u64 {
        let w = client
            .write(id, Instant::now() + Duration::from_secs(2))
            .await;
        assert_eq!(w.outcome, Outcome::Ok, "{w:?}");
    }
    let store = tempfile::tempdir().unwrap();
    let mut taken = Vec::new();
    for peer in &ep.peers {
        taken.push(
            take(
                peer,
                "faultline",
                None,
                store.path(),
                "set1",
                Duration::from_secs(60),
            )
            .await
            .unwrap(),
        );
    }
    let set = newest_set(store.path());
    assert_eq!(set.len(), 3, "{set:?}");
    let http = faultline::component::http_client(Duration::from_secs(5));
    for ((path, described), s) in set.iter().zip(&taken) {
        assert_eq!(
            (&described.file, &described.sha256, described.bytes),
            (&s.file, &s.sha256, s.bytes)
        );
        assert!((described.taken_at - s.taken_at).abs() < 1e-3);
        // A real snapshot of the peer's shards: a tar archive of some size, the digest Qdrant reported.
        let len = std::fs::metadata(path).unwrap().len();
        assert_eq!(len, s.bytes);
        assert!(len > 10_000, "{} is {len} bytes", s.file);
        assert_eq!(sha256_file(path).unwrap(), s.sha256);
        // The peer's own copy is gone (lost with the peer, so not a backup).
        let peer = ep.peer(&s.peer).unwrap();
        let listed: serde_json::Value = http
            .get(peer.rest_url("/collections/faultline/snapshots"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(listed["result"], serde_json::json!([]), "{listed}");
    }

    // After the snapshots: 50 more points (the snapshot's RPO), then points 1..100 deleted (the incident).
    for id in 201..=250u64 {
        let w = client
            .write(id, Instant::now() + Duration::from_secs(2))
            .await;
        assert_eq!(w.outcome, Outcome::Ok, "{w:?}");
    }
    let del = http
        .post(ep.peers[0].rest_url("/collections/faultline/points/delete?wait=true"))
        .json(&serde_json::json!({"points": (1..=100u64).collect::<Vec<_>>()}))
        .send()
        .await
        .unwrap();
    assert!(del.status().is_success(), "{:?}", del.text().await);
    // Each peer recovers its own snapshot (priority snapshot).
    for ((path, described), peer) in set.iter().zip(&ep.peers) {
        faultline::backup::qdrant_snapshots::recover(
            peer,
            described,
            path,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    }
    let healthy_until = Instant::now() + Duration::from_secs(60);
    while let Err(e) = health(&ep).await {
        assert!(
            Instant::now() < healthy_until,
            "cluster stuck after recovery: {e}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (rb, _) = read_back_ledger(&ep, "snap", Duration::from_secs(10), Clock::start())
        .await
        .unwrap();
    let want: std::collections::BTreeSet<u64> = (1..=200).collect();
    assert_eq!(
        rb.present, want,
        "the restored collection is the snapshot's data"
    );
    // The vectors came back too: a point searched with its own vector is its own nearest neighbour.
    let id = faultline::component::qdrant::known_vector_search(&ep)
        .await
        .unwrap();
    assert!(want.contains(&id), "{id}");
}

#[test]
#[ignore = "needs a Qdrant executable: set QDRANT_BIN (or put qdrant on PATH), then cargo test --test qdrant -- --ignored"]
fn qdrant_node_kill_scenario_on_the_local_stack() {
    needs_root!();
    let Some(bin) = qdrant_bin() else { return };
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up_with_qdrant(&bin);
    let o = with_qdrant(&bin, &["run", "scenarios/qdrant-node-kill.yaml"]);
    let code = o.status.code();
    assert!(
        code == Some(0) || code == Some(1),
        "run failed:\n{}",
        text(&o)
    );
    let (_dir, r) = report_of(&o);
    assert_eq!(
        measured(&r, "failed_queries"),
        Some(0.0),
        "no failed query with one peer down"
    );
    assert_eq!(measured(&r, "lost_acked_writes"), Some(0.0));
    assert!(
        measured(&r, "search_p99_degradation_pct").is_some(),
        "a degradation figure is measured: {r:#}"
    );
    assert!(measured(&r, "detection_s").is_some());
    assert!(measured(&r, "recovered_s").is_some());
    assert_no_residue();
}

/// The Qdrant restore drill on the local stack: every point deleted under load, every peer recovered from its
/// snapshot of the backup, the data proven against the ledger (nothing from before the snapshots lost, the points
/// acknowledged after them reported as the snapshot's RPO, the writes after the incident gone).
#[test]
#[ignore = "needs a Qdrant executable: set QDRANT_BIN (or put qdrant on PATH), then cargo test --test qdrant -- --ignored"]
fn qdrant_snapshot_restore_drill_on_the_local_stack() {
    needs_root!();
    let Some(bin) = qdrant_bin() else { return };
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up_with_qdrant(&bin);
    let o = with_qdrant(&bin, &["run", "scenarios/qdrant-snapshot-restore.yaml"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let (_dir, r) = report_of(&o);
    let m = |k: &str| measured(&r, k).unwrap_or_else(|| panic!("{k} not observed: {out}"));
    let restore = m("qdrant_restore_s");
    assert!(
        (0.05..300.0).contains(&restore),
        "qdrant_restore_s = {restore}"
    );
    // ~5 s of upserts at 50/s landed between the snapshots and the incident: lost, and said so.
    assert!(m("lost_acked_writes") >= 100.0, "{out}");
    let rpo = m("rpo_s");
    assert!((2.0..30.0).contains(&rpo), "rpo_s = {rpo}");
    // Upserts after the incident went into the emptied collection; the restore replaced them.
    assert!(m("discarded_writes") > 0.0, "{out}");
    assert_eq!(m("integrity_failures"), 0.0, "{out}");
    let checks = r["trials"][0]["integrity"].as_array().unwrap();
    assert_eq!(checks.len(), 4, "{checks:#?}");
    assert!(checks
        .iter()
        .all(|c| c["ok"] == true && c["component"] == "qdrant"));
    // One recover per peer, then the cluster unstuck, then a write: each a phase on the timeline.
    let timeline = serde_json::to_string(&r["timeline"]).unwrap();
    for phase in [
        "n1 recovered from",
        "n2 recovered from",
        "n3 recovered from",
        "every shard replica Active",
        "known-vector search finds point",
        "restored collection accepts writes",
    ] {
        assert!(timeline.contains(phase), "no `{phase}` on the timeline");
    }
    assert_no_residue();
}

/// Region loss with Qdrant (two-region stack, peers n2, n4 in ra and n6 in rb): the survivor lost its raft
/// majority, so the drill forms a new cluster on n6 and restores every shard from its shard snapshot, with clients
/// kept out until the data is in place; the revert rebuilds ra and copies every shard back to replication factor 2.
/// Then a region-loss drill that restores only PostgreSQL and Redis: the revert itself restores Qdrant.
#[test]
#[ignore = "needs a Qdrant executable: set QDRANT_BIN (or put qdrant on PATH), then cargo test --test qdrant -- --ignored"]
fn qdrant_region_loss_drill_restores_a_new_cluster_in_the_surviving_region() {
    needs_root!();
    let Some(bin) = qdrant_bin() else { return };
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    let _down = TwoRegionDown;
    let env = [("QDRANT_BIN", bin.as_path())];
    let run = |args: &[&str]| faultline_two_region_env(&env, args);
    let o = run(&["up", "--topology", "fixtures/topologies/two-region.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let o = run(&["run", "scenarios/dr-region-loss-qdrant.yaml"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let (_, r) = report_of(&o);
    let m = |k: &str| measured(&r, k).unwrap_or_else(|| panic!("{k} not observed: {out}"));
    let restore = m("qdrant_restore_s");
    assert!(
        (0.05..300.0).contains(&restore),
        "qdrant_restore_s = {restore}"
    );
    assert!(m("pg_restore_s") >= 1.0, "{out}");
    let rto = m("qdrant.rto_s");
    assert!((10.0 + 0.5..900.0).contains(&rto), "qdrant.rto_s = {rto}");
    // The snapshots were taken ~5 s before the region was lost: the points acknowledged since are the RPO,
    // and nothing acknowledged during or after the restore was lost (clients were kept out meanwhile).
    assert!(m("qdrant.lost_acked_writes") >= 100.0, "{out}");
    let rpo = m("qdrant.rpo_s");
    assert!((2.0..30.0).contains(&rpo), "qdrant.rpo_s = {rpo}");
    // PostgreSQL and Redis are judged in the same run, each from its own ledger.
    for c in ["postgres", "redis"] {
        let rpo = m(&format!("{c}.rpo_s"));
        assert!((0.5..300.0).contains(&rpo), "{c}.rpo_s = {rpo}");
        assert!(checks_of(&r, c) > 0, "{c} not judged from its ledger");
    }
    assert_eq!(m("integrity_failures"), 0.0, "{out}");
    let checks = r["trials"][0]["integrity"].as_array().unwrap();
    assert_eq!(checks_of(&r, "qdrant"), 4, "{checks:#?}");
    let qdrant: Vec<_> = checks
        .iter()
        .filter(|c| c["component"] == "qdrant")
        .collect();
    assert_eq!(qdrant.len(), 4, "{checks:#?}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{checks:#?}");
    let timeline = serde_json::to_string(&r["timeline"]).unwrap();
    for phase in [
        "qdrant formed anew on n6",
        "shard 0 recovered on n6",
        "shard 5 recovered on n6",
        "clients let in again",
        "known-vector search finds point",
    ] {
        assert!(timeline.contains(phase), "no `{phase}` on the timeline");
    }
    // The read-back after the revert: every peer of the rebuilt layout answers with the same points.
    assert_eq!(
        r["read_backs"][0]["from_member"], "n2+n4+n6",
        "{:#}",
        r["read_backs"]
    );
    let s = text(&run(&["status"]));
    assert!(
        s.contains("health: ok") && s.contains("qdrant raft leader"),
        "{s}"
    );
    assert!(s.contains("and 6 shard(s)"), "{s}");
    assert!(!s.contains("lost nodes"), "{s}");

    // Qdrant not restored by the runbook: the revert restores it (a new cluster on n6) before ra rejoins.
    let o = run(&["run", "scenarios/dr-region-loss.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let s = text(&run(&["status"]));
    assert!(
        s.contains("health: ok") && s.contains("qdrant raft leader"),
        "{s}"
    );
    assert!(s.contains("fault journal: no open entry"), "{s}");
}

/// How many of the run's integrity checks judged `component` from its acknowledged writes or restore.
fn checks_of(r: &serde_json::Value, component: &str) -> usize {
    r["trials"][0]["integrity"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["component"] == component)
        .count()
}

/// The local stack, with Qdrant: a running stack brought up without it is re-created with the executable.
fn up_with_qdrant(bin: &Path) {
    let state = std::fs::read_to_string("/var/tmp/faultline/state.json").unwrap_or_default();
    if !state.contains("\"status\": \"present\"") {
        let o = faultline(&["down"]);
        assert_eq!(o.status.code(), Some(0), "down failed:\n{}", text(&o));
    }
    let o = with_qdrant(bin, &["up"]);
    assert_eq!(o.status.code(), Some(0), "up failed:\n{}", text(&o));
}

fn with_qdrant(bin: &Path, args: &[&str]) -> std::process::Output {
    Command::new(common::bin())
        .args(args)
        .env("QDRANT_BIN", bin)
        .env("FAULTLINE_REPORTS_DIR", reports_dir())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("faultline runs")
}
