//! Qdrant's own views over REST: GET /cluster (peers, raft leader and term, failed peer-to-peer sends) and
//! GET /collections/{c}/cluster (the state of every replica of every shard as one peer sees it); health and the
//! raft leader are judged from them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use super::{QdrantEndpoints, QdrantPeer};
use crate::component::http_client;

/// One peer's GET /cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    /// The answering peer's own id.
    pub peer_id: u64,
    /// Every peer it knows: id -> p2p URI.
    pub peers: BTreeMap<u64, String>,
    pub leader: Option<u64>,
    pub term: u64,
    /// `Leader`, `Follower`, `Candidate`, ...
    pub role: Option<String>,
    /// Failed sends to other peers, by their p2p URI.
    pub send_failures: BTreeMap<String, SendFailure>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendFailure {
    pub count: u64,
    pub latest_error: Option<String>,
    pub latest_error_timestamp: Option<String>,
}

/// One replica of one shard, as one peer sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Replica {
    pub shard_id: u32,
    pub peer_id: u64,
    /// `Active`, `Dead`, `Partial`, `Initializing`, `Listener`, `Recovery`, ...
    pub state: String,
}

impl Replica {
    pub fn is_active(&self) -> bool {
        self.state == "Active"
    }
}

/// One peer's GET /collections/{c}/cluster: its local replicas and the remote ones it knows of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectionClusterView {
    pub peer_id: u64,
    pub shard_count: u32,
    pub replicas: Vec<Replica>,
    /// Shard transfers in progress (a replica being rebuilt).
    pub transfers: usize,
}

fn result(v: &Value) -> Result<&Value, String> {
    let r = &v["result"];
    if r.is_object() {
        Ok(r)
    } else {
        Err(format!("no `result` object in {}", abbreviated(v)))
    }
}

fn abbreviated(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 200 {
        format!("{}...", s.chars().take(200).collect::<String>())
    } else {
        s
    }
}

/// Parses GET /cluster. Peer ids are u64 and exceed 2^53: they are read as integers, never as floats.
pub fn parse_cluster(v: &Value) -> Result<ClusterView, String> {
    let r = result(v)?;
    if let Some(status) = r["status"].as_str() {
        if status != "enabled" {
            return Err(format!("cluster mode is `{status}`, not enabled"));
        }
    }
    let peer_id = r["peer_id"]
        .as_u64()
        .ok_or_else(|| format!("no peer_id in {}", abbreviated(v)))?;
    let peers = r["peers"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(id, p)| Some((id.parse().ok()?, p["uri"].as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let raft = &r["raft_info"];
    let send_failures = r["message_send_failures"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(uri, f)| {
                    (
                        uri.clone(),
                        SendFailure {
                            count: f["count"].as_u64().unwrap_or(0),
                            latest_error: f["latest_error"].as_str().map(str::to_string),
                            latest_error_timestamp: f["latest_error_timestamp"]
                                .as_str()
                                .map(str::to_string),
                        },
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ClusterView {
        peer_id,
        peers,
        leader: raft["leader"].as_u64(),
        term: raft["term"].as_u64().unwrap_or(0),
        role: raft["role"].as_str().map(str::to_string),
        send_failures,
    })
}

/// Parses GET /collections/{c}/cluster; local shards are replicas on the answering peer.
pub fn parse_collection_cluster(v: &Value) -> Result<CollectionClusterView, String> {
    let r = result(v)?;
    let peer_id = r["peer_id"]
        .as_u64()
        .ok_or_else(|| format!("no peer_id in {}", abbreviated(v)))?;
    let mut replicas = Vec::new();
    for (key, on_peer) in [("local_shards", Some(peer_id)), ("remote_shards", None)] {
        for s in r[key].as_array().map(Vec::as_slice).unwrap_or_default() {
            let shard_id = s["shard_id"]
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| format!("a replica without shard_id in {key}"))?;
            let peer = on_peer
                .or_else(|| s["peer_id"].as_u64())
                .ok_or_else(|| format!("a remote replica of shard {shard_id} without peer_id"))?;
            replicas.push(Replica {
                shard_id,
                peer_id: peer,
                state: s["state"].as_str().unwrap_or("unknown").to_string(),
            });
        }
    }
    replicas.sort();
    Ok(CollectionClusterView {
        peer_id,
        shard_count: r["shard_count"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        replicas,
        transfers: r["shard_transfers"].as_array().map_or(0, Vec::len),
    })
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Option<Value>, String> {
    let r = http.get(url).send().await.map_err(|e| e.to_string())?;
    if r.status().as_u16() == 404 {
        return Ok(None);
    }
    if !r.status().is_success() {
        return Err(format!("HTTP {}", r.status()));
    }
    r.json::<Value>()
        .await
        .map(Some)
        .map_err(|e| format!("bad JSON: {e}"))
}

pub async fn cluster_view(
    http: &reqwest::Client,
    peer: &QdrantPeer,
) -> Result<ClusterView, String> {
    match get_json(http, &peer.rest_url("/cluster")).await {
        Ok(Some(v)) => {
            parse_cluster(&v).map_err(|e| format!("qdrant on {}: /cluster: {e}", peer.node))
        }
        Ok(None) => Err(format!("qdrant on {}: /cluster: HTTP 404", peer.node)),
        Err(e) => Err(format!("qdrant on {}: {e}", peer.node)),
    }
}

/// Ok(None) when the collection does not exist (yet).
pub async fn collection_view(
    http: &reqwest::Client,
    peer: &QdrantPeer,
    collection: &str,
) -> Result<Option<CollectionClusterView>, String> {
    match get_json(
        http,
        &peer.rest_url(&format!("/collections/{collection}/cluster")),
    )
    .await
    {
        Ok(Some(v)) => parse_collection_cluster(&v).map(Some).map_err(|e| {
            format!(
                "qdrant on {}: /collections/{collection}/cluster: {e}",
                peer.node
            )
        }),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("qdrant on {}: {e}", peer.node)),
    }
}

/// Node names for peer ids, from the peers' own lists of p2p URIs.
pub fn peer_nodes(ep: &QdrantEndpoints, views: &[&ClusterView]) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    for v in views {
        for (id, uri) in &v.peers {
            if let Some(node) = ep.node_of_uri(uri) {
                out.insert(*id, node.to_string());
            }
        }
    }
    out
}

/// The raft leader most peers report, if a majority of the configured peers agree on it.
pub fn agreed_leader(ep: &QdrantEndpoints, views: &[ClusterView]) -> Option<String> {
    let refs: Vec<&ClusterView> = views.iter().collect();
    let nodes = peer_nodes(ep, &refs);
    let majority = ep.peers.len() / 2 + 1;
    let leaders: Vec<u64> = views.iter().filter_map(|v| v.leader).collect();
    leaders
        .iter()
        .find(|l| leaders.iter().filter(|m| m == l).count() >= majority)
        .and_then(|l| nodes.get(l).cloned())
}

/// The node of the raft leader a majority of peers agree on (Qdrant's "primary" for role selectors).
pub async fn raft_leader(ep: &QdrantEndpoints) -> Option<String> {
    let http = http_client(Duration::from_millis(500));
    let views: Vec<ClusterView> =
        futures_util::future::join_all(ep.peers.iter().map(|p| cluster_view(&http, p)))
            .await
            .into_iter()
            .filter_map(Result::ok)
            .collect();
    agreed_leader(ep, &views)
}

/// Each peer's GET /cluster, by node.
pub type PeerClusters = Vec<(String, ClusterView)>;
/// Each peer's GET /collections/{c}/cluster by node (None: the collection does not exist there).
pub type PeerCollections = Vec<(String, Option<CollectionClusterView>)>;

/// Judges the collected views. Healthy = every configured peer answers, knows every other peer and names the
/// same raft leader; and, once the collection exists, every peer sees every shard with its full set of replicas,
/// all Active, and no transfer running. Returns the leader's node.
pub fn judge_health(
    ep: &QdrantEndpoints,
    clusters: &[(String, ClusterView)],
    collections: &[(String, Option<CollectionClusterView>)],
) -> Result<String, String> {
    let views: Vec<&ClusterView> = clusters.iter().map(|(_, v)| v).collect();
    let nodes = peer_nodes(ep, &views);
    let node = |id: &u64| {
        nodes
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("peer {id}"))
    };
    let mut leader: Option<u64> = None;
    for (n, v) in clusters {
        if v.peers.len() != ep.peers.len() {
            return Err(format!(
                "qdrant on {n} knows {} peers of {}",
                v.peers.len(),
                ep.peers.len()
            ));
        }
        let Some(l) = v.leader else {
            return Err(format!("qdrant on {n} knows no raft leader"));
        };
        match leader {
            None => leader = Some(l),
            Some(other) if other != l => {
                return Err(format!(
                    "qdrant peers disagree on the raft leader ({} vs {})",
                    node(&other),
                    node(&l)
                ))
            }
            _ => {}
        }
    }
    let leader = leader.ok_or("no qdrant peer answered")?;
    if !nodes.contains_key(&leader) {
        return Err(format!(
            "the raft leader {leader} is not a peer of the stack"
        ));
    }
    let existing: Vec<&(String, Option<CollectionClusterView>)> =
        collections.iter().filter(|(_, c)| c.is_some()).collect();
    if !existing.is_empty() && existing.len() != collections.len() {
        let missing: Vec<&str> = collections
            .iter()
            .filter(|(_, c)| c.is_none())
            .map(|(n, _)| n.as_str())
            .collect();
        return Err(format!(
            "collection `{}` is not yet known on {}",
            ep.collection.name,
            missing.join(", ")
        ));
    }
    let want = ep.expected_replicas();
    for (n, c) in existing {
        let c = c.as_ref().expect("filtered on Some");
        if let Some(r) = c.replicas.iter().find(|r| !r.is_active()) {
            return Err(format!(
                "qdrant on {n} sees shard {} on {} {}",
                r.shard_id,
                node(&r.peer_id),
                r.state
            ));
        }
        if c.transfers > 0 {
            return Err(format!(
                "qdrant on {n} has {} shard transfers running",
                c.transfers
            ));
        }
        for shard in 0..c.shard_count {
            let holders: BTreeSet<u64> = c
                .replicas
                .iter()
                .filter(|r| r.shard_id == shard)
                .map(|r| r.peer_id)
                .collect();
            if holders.len() < want {
                return Err(format!(
                    "qdrant on {n} sees {} replicas of shard {shard}, expected {want}",
                    holders.len()
                ));
            }
        }
    }
    Ok(node(&leader))
}

/// One health check of the Qdrant cluster; see [`judge_health`].
pub async fn health(ep: &QdrantEndpoints) -> Result<String, String> {
    let http = http_client(Duration::from_millis(800));
    let mut clusters: PeerClusters = Vec::new();
    let mut collections: PeerCollections = Vec::new();
    for p in &ep.peers {
        clusters.push((p.node.clone(), cluster_view(&http, p).await?));
        collections.push((
            p.node.clone(),
            collection_view(&http, p, &ep.collection.name).await?,
        ));
    }
    judge_health(ep, &clusters, &collections)
}

/// The Qdrant corruption of a drill: every point of the collection deleted (`filter: {}` matches every point),
/// through the first peer that takes it; `wait=true`, so it is applied when this returns. Returns that peer's
/// node.
pub async fn delete_all_points(ep: &QdrantEndpoints) -> Result<String, String> {
    let http = http_client(Duration::from_secs(10));
    let mut last = String::from("no Qdrant peer");
    for p in &ep.peers {
        let url = p.rest_url(&format!(
            "/collections/{}/points/delete?wait=true",
            ep.collection.name
        ));
        match http
            .post(url)
            .json(&serde_json::json!({"filter": {}}))
            .send()
            .await
            .and_then(|r| r.error_for_status())
        {
            Ok(_) => return Ok(p.node.clone()),
            Err(e) => last = format!("qdrant {}: delete every point: {e}", p.node),
        }
    }
    Err(last)
}

/// A known-vector search: one point of the collection, searched for with its own (seeded) vector, must come back
/// as the nearest neighbour. Proves a restored collection's vectors and index, not only its ids. Returns the id.
pub async fn known_vector_search(ep: &QdrantEndpoints) -> Result<u64, String> {
    let http = http_client(Duration::from_secs(5));
    let c = &ep.collection.name;
    let mut last = String::from("no Qdrant peer");
    for p in &ep.peers {
        let scrolled: Value = match http
            .post(p.rest_url(&format!("/collections/{c}/points/scroll")))
            .json(&serde_json::json!({"limit": 1, "with_payload": false, "with_vector": false}))
            .send()
            .await
            .and_then(|r| r.error_for_status())
        {
            Ok(r) => r.json().await.map_err(|e| e.to_string())?,
            Err(e) => {
                last = format!("qdrant {}: scroll: {e}", p.node);
                continue;
            }
        };
        let id = scrolled["result"]["points"][0]["id"]
            .as_u64()
            .ok_or_else(|| format!("qdrant {}: the collection holds no point", p.node))?;
        let vector = super::point_vector(ep.seed, id, ep.collection.vector_size as usize);
        let found: Value = http
            .post(p.rest_url(&format!("/collections/{c}/points/search")))
            .json(&serde_json::json!({"vector": vector, "limit": 1}))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("qdrant {}: search: {e}", p.node))?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        return match found["result"][0]["id"].as_u64() {
            Some(top) if top == id => Ok(id),
            other => Err(format!(
                "point {id} searched with its own vector: nearest is {other:?}, not itself"
            )),
        };
    }
    Err(last)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::Ipv4Addr;

    use serde_json::json;

    use super::*;
    use crate::component::qdrant::test_endpoints;

    pub(crate) const ID1: u64 = 11532566549086892001;
    pub(crate) const ID2: u64 = 8312478612369132002;
    pub(crate) const ID3: u64 = 4234234234234234003;

    pub(crate) fn ep3() -> QdrantEndpoints {
        test_endpoints(vec![
            QdrantPeer::standard("n1", Ipv4Addr::new(10, 201, 0, 11)),
            QdrantPeer::standard("n2", Ipv4Addr::new(10, 201, 0, 12)),
            QdrantPeer::standard("n3", Ipv4Addr::new(10, 201, 0, 13)),
        ])
    }

    /// GET /cluster as Qdrant answers it (peer ids above 2^53 on purpose).
    pub(crate) fn cluster_json(me: u64, leader: u64, term: u64) -> Value {
        json!({
            "result": {
                "status": "enabled",
                "peer_id": me,
                "peers": {
                    ID1.to_string(): {"uri": "http://10.201.0.11:6335/"},
                    ID2.to_string(): {"uri": "http://10.201.0.12:6335/"},
                    ID3.to_string(): {"uri": "http://10.201.0.13:6335/"},
                },
                "raft_info": {"term": term, "commit": 42, "pending_operations": 0, "leader": leader,
                              "role": if me == leader {"Leader"} else {"Follower"}, "is_voter": true},
                "consensus_thread_status": {"consensus_thread_status": "working", "last_update": "2026-01-01T00:00:00Z"},
                "message_send_failures": {}
            },
            "status": "ok",
            "time": 0.000005
        })
    }

    /// GET /collections/{c}/cluster: 6 shards, RF 2, shard s on peers [s % 3, (s + 1) % 3]; `dead` peer's
    /// replicas reported in `state`.
    pub(crate) fn collection_json(me: u64, dead: Option<u64>, state: &str) -> Value {
        let ids = [ID1, ID2, ID3];
        let mut local = Vec::new();
        let mut remote = Vec::new();
        for s in 0..6u64 {
            for holder in [ids[(s % 3) as usize], ids[((s + 1) % 3) as usize]] {
                let st = if Some(holder) == dead {
                    state
                } else {
                    "Active"
                };
                if holder == me {
                    local.push(json!({"shard_id": s, "points_count": 10, "state": st}));
                } else {
                    remote.push(json!({"shard_id": s, "peer_id": holder, "state": st}));
                }
            }
        }
        json!({"result": {"peer_id": me, "shard_count": 6, "local_shards": local, "remote_shards": remote,
                          "shard_transfers": []}, "status": "ok", "time": 0.0001})
    }

    #[test]
    fn parses_cluster_with_large_peer_ids_and_send_failures() {
        let mut v = cluster_json(ID2, ID1, 3);
        v["result"]["message_send_failures"] = json!({
            "http://10.201.0.13:6335/": {"count": 4, "latest_error": "transport error",
                                         "latest_error_timestamp": "2026-01-01T00:00:01.5Z"}
        });
        let c = parse_cluster(&v).unwrap();
        assert_eq!(c.peer_id, ID2);
        assert_eq!(c.leader, Some(ID1));
        assert_eq!(c.term, 3);
        assert_eq!(c.role.as_deref(), Some("Follower"));
        assert_eq!(c.peers.len(), 3);
        assert_eq!(c.peers[&ID1], "http://10.201.0.11:6335/");
        let f = &c.send_failures["http://10.201.0.13:6335/"];
        assert_eq!(f.count, 4);
        assert_eq!(f.latest_error.as_deref(), Some("transport error"));
        let nodes = peer_nodes(&ep3(), &[&c]);
        assert_eq!(nodes[&ID3], "n3");

        let mut disabled = v.clone();
        disabled["result"]["status"] = json!("disabled");
        assert!(parse_cluster(&disabled)
            .unwrap_err()
            .contains("not enabled"));
        assert!(parse_cluster(&json!({"status": "ok"})).is_err());
        let mut no_leader = cluster_json(ID2, ID1, 3);
        no_leader["result"]["raft_info"]["leader"] = Value::Null;
        assert_eq!(parse_cluster(&no_leader).unwrap().leader, None);
    }

    #[test]
    fn parses_collection_cluster_local_and_remote_replicas() {
        let c = parse_collection_cluster(&collection_json(ID1, Some(ID3), "Dead")).unwrap();
        assert_eq!(c.peer_id, ID1);
        assert_eq!(c.shard_count, 6);
        assert_eq!(c.replicas.len(), 12);
        assert_eq!(c.replicas.iter().filter(|r| r.peer_id == ID1).count(), 4);
        let dead: Vec<&Replica> = c.replicas.iter().filter(|r| !r.is_active()).collect();
        assert_eq!(dead.len(), 4);
        assert!(dead.iter().all(|r| r.peer_id == ID3 && r.state == "Dead"));
        let mut bad = collection_json(ID1, None, "Active");
        bad["result"]["remote_shards"][0]
            .as_object_mut()
            .unwrap()
            .remove("peer_id");
        assert!(parse_collection_cluster(&bad)
            .unwrap_err()
            .contains("without peer_id"));
    }

    fn healthy_views(leader: u64) -> (PeerClusters, PeerCollections) {
        let ids = [("n1", ID1), ("n2", ID2), ("n3", ID3)];
        let clusters = ids
            .iter()
            .map(|(n, id)| {
                (
                    n.to_string(),
                    parse_cluster(&cluster_json(*id, leader, 2)).unwrap(),
                )
            })
            .collect();
        let collections = ids
            .iter()
            .map(|(n, id)| {
                (
                    n.to_string(),
                    Some(parse_collection_cluster(&collection_json(*id, None, "Active")).unwrap()),
                )
            })
            .collect();
        (clusters, collections)
    }

    #[test]
    fn health_needs_one_leader_and_every_replica_active_everywhere() {
        let ep = ep3();
        let (clusters, mut collections) = healthy_views(ID2);
        assert_eq!(judge_health(&ep, &clusters, &collections).unwrap(), "n2");

        // Without the collection (before the first run) the cluster alone decides.
        let none: Vec<_> = collections.iter().map(|(n, _)| (n.clone(), None)).collect();
        assert_eq!(judge_health(&ep, &clusters, &none).unwrap(), "n2");

        // One peer sees a replica on n3 Partial (being rebuilt): not healthy.
        collections[1].1 =
            Some(parse_collection_cluster(&collection_json(ID2, Some(ID3), "Partial")).unwrap());
        let e = judge_health(&ep, &clusters, &collections).unwrap_err();
        assert!(
            e.contains("qdrant on n2 sees shard") && e.contains("on n3 Partial"),
            "{e}"
        );

        let (mut clusters, collections) = healthy_views(ID2);
        clusters[2].1.leader = Some(ID1);
        let e = judge_health(&ep, &clusters, &collections).unwrap_err();
        assert!(e.contains("disagree on the raft leader (n2 vs n1)"), "{e}");

        let (mut clusters, mut collections) = healthy_views(ID2);
        clusters[0].1.peers.remove(&ID3);
        assert!(judge_health(&ep, &clusters, &collections)
            .unwrap_err()
            .contains("knows 2 peers of 3"));
        clusters = healthy_views(ID2).0;
        collections[0]
            .1
            .as_mut()
            .unwrap()
            .replicas
            .retain(|r| r.shard_id != 4 || r.peer_id != ID2);
        let e = judge_health(&ep, &clusters, &collections).unwrap_err();
        assert!(e.contains("sees 1 replicas of shard 4, expected 2"), "{e}");
        collections = healthy_views(ID2).1;
        collections[2].1 = None;
        let e = judge_health(&ep, &clusters, &collections).unwrap_err();
        assert!(e.contains("not yet known on n3"), "{e}");
    }

    #[test]
    fn the_leader_needs_a_majority() {
        let ep = ep3();
        let views: Vec<ClusterView> = [ID1, ID2]
            .iter()
            .map(|id| parse_cluster(&cluster_json(*id, ID3, 5)).unwrap())
            .collect();
        assert_eq!(agreed_leader(&ep, &views).as_deref(), Some("n3"));
        assert_eq!(
            agreed_leader(&ep, &views[..1]),
            None,
            "one peer of three is no majority"
        );
    }
}
