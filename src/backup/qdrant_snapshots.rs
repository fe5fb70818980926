//! Qdrant backups: a collection snapshot holds one peer's shards only (HA-FACTS), so every peer is snapshotted;
//! and every shard is snapshotted once more on its own, from a peer holding an Active replica of it, for a
//! restore onto a cluster formed anew (a lost region took the peers, so no peer's collection snapshot fits).
//! Each snapshot is created on its peer (`POST /collections/{c}/snapshots?wait=true`, or
//! `/collections/{c}/shards/{s}/snapshots`), downloaded into the backup store, checked against the SHA-256
//! Qdrant reports for it, and deleted from the peer. The snapshots of one backup share a set name; a JSON file
//! beside each describes it. Qdrant has no point-in-time restore: a restore's recovery point is the newest
//! snapshot set before the target.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::component::http_client;
use crate::component::qdrant::QdrantPeer;
use crate::drill::target_time::unix;

/// One peer's snapshot in the backup store, described by the JSON file written beside it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QdrantSnapshot {
    /// The backup this snapshot belongs to (one snapshot per peer shares it).
    pub set: String,
    /// File name of the copy in the store.
    pub file: String,
    /// The node whose peer was snapshotted.
    pub peer: String,
    pub collection: String,
    /// A shard snapshot: the shard it holds. None: the peer's collection snapshot (every shard it holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
    /// When the snapshot was asked for (Unix seconds): its data is at least this new.
    pub taken_at: f64,
    pub bytes: u64,
    /// Qdrant's SHA-256 of the snapshot, which the copy matched.
    pub sha256: String,
}

impl QdrantSnapshot {
    /// The REST path snapshots of this kind live under.
    fn api_base(&self) -> String {
        api_base(&self.collection, self.shard)
    }
}

fn api_base(collection: &str, shard: Option<u32>) -> String {
    match shard {
        None => format!("/collections/{collection}"),
        Some(s) => format!("/collections/{collection}/shards/{s}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(hex(&h.finalize())),
            n => h.update(&buf[..n]),
        }
    }
}

/// Snapshots `collection` on `peer` (the whole of its local shards, or with `shard` that shard alone) and
/// copies the snapshot into `store` as `<set>-<node>.snapshot` (or `<set>-shard<s>.snapshot`).
pub async fn take(
    peer: &QdrantPeer,
    collection: &str,
    shard: Option<u32>,
    store: &Path,
    set: &str,
    timeout: Duration,
) -> Result<QdrantSnapshot, String> {
    let node = &peer.node;
    let http = http_client(timeout);
    let asked = unix(SystemTime::now());
    let base = api_base(collection, shard);
    let created: serde_json::Value = http
        .post(peer.rest_url(&format!("{base}/snapshots?wait=true")))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("qdrant {node}: create snapshot: {e}"))?
        .json()
        .await
        .map_err(|e| format!("qdrant {node}: create snapshot: {e}"))?;
    let name = created["result"]["name"]
        .as_str()
        .ok_or_else(|| format!("qdrant {node}: the snapshot answer names no snapshot: {created}"))?
        .to_string();
    let reported = created["result"]["checksum"].as_str().map(str::to_string);
    let url = peer.rest_url(&format!("{base}/snapshots/{name}"));
    let mut resp = http
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("qdrant {node}: download {name}: {e}"))?;
    std::fs::create_dir_all(store).map_err(|e| format!("mkdir {}: {e}", store.display()))?;
    let file = match shard {
        None => format!("{set}-{node}.snapshot"),
        Some(s) => format!("{set}-shard{s}.snapshot"),
    };
    let path = store.join(&file);
    let mut out =
        std::fs::File::create(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("qdrant {node}: download {name}: {e}"))?
    {
        hasher.update(&chunk);
        bytes += chunk.len() as u64;
        out.write_all(&chunk)
            .map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    out.sync_all()
        .map_err(|e| format!("write {}: {e}", path.display()))?;
    let sha256 = hex(&hasher.finalize());
    if let Some(r) = reported.filter(|r| *r != sha256) {
        let _ = std::fs::remove_file(&path);
        return Err(format!(
            "qdrant {node}: the copy of {name} has SHA-256 {sha256}, Qdrant reported {r}: not stored"
        ));
    }
    // The peer's own copy is not a backup (it is lost with the peer) and takes its disk.
    let _ = http.delete(&url).send().await;
    let s = QdrantSnapshot {
        set: set.to_string(),
        file,
        peer: node.clone(),
        collection: collection.to_string(),
        shard,
        taken_at: asked,
        bytes,
        sha256,
    };
    let json = serde_json::to_vec_pretty(&s).expect("serializable");
    std::fs::write(path.with_extension("json"), json)
        .map_err(|e| format!("write the description of {}: {e}", s.file))?;
    Ok(s)
}

/// Recovers `collection` on `peer` from a snapshot in the store, uploaded to it (`POST
/// /collections/{c}/snapshots/upload`, or `/collections/{c}/shards/{s}/snapshots/upload` for a shard snapshot:
/// a `file://` location must lie inside the peer's own snapshots directory, and the upload works the same for a
/// peer on another machine), with `priority: snapshot`: the snapshot's data replaces the peer's replicas, and
/// Qdrant marks the shard's other replicas Dead so they are rebuilt from it (the default, `replica`, would take
/// the other replicas' data, and into an emptied cluster gives an empty collection; HA-FACTS; Qdrant
/// src/common/snapshots.rs `recover_shard_snapshot_impl`). The file is checked against its recorded SHA-256
/// first. The snapshot is read into memory for the upload.
pub async fn recover(
    peer: &QdrantPeer,
    snapshot: &QdrantSnapshot,
    path: &Path,
    timeout: Duration,
) -> Result<(), String> {
    let node = &peer.node;
    let data = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let mut h = Sha256::new();
    h.update(&data);
    let actual = hex(&h.finalize());
    if actual != snapshot.sha256 {
        return Err(format!(
            "{} has SHA-256 {actual}, {} when it was stored: the copy is damaged",
            path.display(),
            snapshot.sha256
        ));
    }
    let form = reqwest::multipart::Form::new().part(
        "snapshot",
        reqwest::multipart::Part::bytes(data).file_name(snapshot.file.clone()),
    );
    let r = http_client(timeout)
        .post(peer.rest_url(&format!(
            "{}/snapshots/upload?priority=snapshot&wait=true",
            snapshot.api_base()
        )))
        .multipart(form)
        .send()
        .await
        .map_err(|e| format!("qdrant {node}: recover from {}: {e}", snapshot.file))?;
    crate::component::success_or_body(r, format!("qdrant {node}: recover from {}", snapshot.file))
        .await
        .map(|_| ())
}

/// Every snapshot in the store, oldest set first (peers in name order within a set).
pub fn list(store: &Path) -> Vec<(PathBuf, QdrantSnapshot)> {
    let mut v: Vec<(PathBuf, QdrantSnapshot)> = std::fs::read_dir(store)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| {
            let s: QdrantSnapshot =
                serde_json::from_str(&std::fs::read_to_string(e.path()).ok()?).ok()?;
            Some((store.join(&s.file), s))
        })
        .filter(|(p, _)| p.exists())
        .collect();
    v.sort_by(|a, b| {
        a.1.taken_at
            .total_cmp(&b.1.taken_at)
            .then(a.1.peer.cmp(&b.1.peer))
    });
    v
}

/// The newest set: the newest set name with its snapshots.
pub fn newest_set(store: &Path) -> Vec<(PathBuf, QdrantSnapshot)> {
    newest_set_before(store, None)
}

/// The newest set whose every snapshot was taken before `before` (Unix seconds; None = any): the snapshot a
/// restore to before an incident uses, since Qdrant has no point-in-time restore.
pub fn newest_set_before(store: &Path, before: Option<f64>) -> Vec<(PathBuf, QdrantSnapshot)> {
    let all = list(store);
    let newest_of = |set: &str| {
        all.iter()
            .filter(|(_, s)| s.set == set)
            .map(|(_, s)| s.taken_at)
            .fold(f64::NEG_INFINITY, f64::max)
    };
    let Some(set) = all
        .iter()
        .rev()
        .map(|(_, s)| s.set.clone())
        .find(|set| before.is_none_or(|b| newest_of(set) < b))
    else {
        return Vec::new();
    };
    all.into_iter().filter(|(_, s)| s.set == set).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_listed_oldest_first_and_the_newest_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let put = |set: &str, peer: &str, at: f64| {
            let s = QdrantSnapshot {
                set: set.into(),
                file: format!("{set}-{peer}.snapshot"),
                peer: peer.into(),
                collection: "c".into(),
                shard: None,
                taken_at: at,
                bytes: 3,
                sha256: String::new(),
            };
            std::fs::write(dir.path().join(&s.file), b"abc").unwrap();
            std::fs::write(
                dir.path().join(format!("{set}-{peer}.json")),
                serde_json::to_vec(&s).unwrap(),
            )
            .unwrap();
        };
        put("b", "n2", 20.0);
        put("a", "n1", 10.0);
        put("b", "n1", 20.1);
        put("a", "n2", 10.1);
        let sets: Vec<String> = list(dir.path())
            .iter()
            .map(|(_, s)| format!("{}-{}", s.set, s.peer))
            .collect();
        assert_eq!(sets, ["a-n1", "a-n2", "b-n2", "b-n1"]);
        let newest: Vec<String> = newest_set(dir.path())
            .iter()
            .map(|(_, s)| s.peer.clone())
            .collect();
        assert_eq!(newest, ["n2", "n1"]);
        // Before an incident between the two sets, the older set is the one to restore.
        let before: Vec<String> = newest_set_before(dir.path(), Some(15.0))
            .iter()
            .map(|(_, s)| s.set.clone())
            .collect();
        assert_eq!(before, ["a", "a"]);
        assert!(newest_set_before(dir.path(), Some(5.0)).is_empty());
        // A description whose snapshot file is gone is not a backup.
        std::fs::remove_file(dir.path().join("b-n1.snapshot")).unwrap();
        assert_eq!(newest_set(dir.path()).len(), 1);
    }

    #[test]
    fn sha256_of_a_file_is_the_standard_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
