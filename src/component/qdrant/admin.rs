//! Changing a Qdrant cluster's membership and replicas over REST, the way an operator does after losing peers:
//! removing a peer that is gone for good (`DELETE /cluster/peer/{id}?force=true`) and bringing every shard back to
//! its replication factor on the peers that run (`POST /collections/{c}/cluster` with `replicate_shard`; Qdrant
//! does not add replicas on its own when a peer joins). Peer ids exceed 2^53 and travel as JSON integers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;

use super::rest::{cluster_view, collection_view, peer_nodes, CollectionClusterView};
use super::{QdrantEndpoints, QdrantPeer};
use crate::component::{http_client, success_or_body};

/// Node -> peer id, from the views of the peers that answer.
pub async fn peer_ids(ep: &QdrantEndpoints) -> BTreeMap<String, u64> {
    let http = http_client(Duration::from_secs(2));
    let mut views = Vec::new();
    for p in &ep.peers {
        if let Ok(v) = cluster_view(&http, p).await {
            views.push(v);
        }
    }
    let refs: Vec<_> = views.iter().collect();
    peer_nodes(ep, &refs)
        .into_iter()
        .map(|(id, node)| (node, id))
        .collect()
}

/// Removes the peers `via` knows whose p2p URI is `node`'s but whose id is not `keep` (a destroyed peer's old
/// identity, before a peer with the same address joins). Forced: the old peer may still be listed as holding
/// replicas, which are gone with it.
pub async fn remove_stale_peers(
    via: &QdrantPeer,
    ep: &QdrantEndpoints,
    node: &str,
    keep: Option<u64>,
) -> Result<Vec<u64>, String> {
    let http = http_client(Duration::from_secs(10));
    let view = cluster_view(&http, via).await?;
    let mut removed = Vec::new();
    for (id, uri) in &view.peers {
        if ep.node_of_uri(uri) != Some(node) || Some(*id) == keep {
            continue;
        }
        let what = format!(
            "qdrant on {}: remove peer {id} ({node}'s old identity)",
            via.node
        );
        let r = http
            .delete(via.rest_url(&format!("/cluster/peer/{id}?force=true")))
            .send()
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        success_or_body(r, what).await?;
        removed.push(*id);
    }
    Ok(removed)
}

/// Creates the harness's collection with the settings' parameters (as `prepare` does), over REST: a restore
/// creates it while clients' gRPC port is closed.
pub async fn create_collection(via: &QdrantPeer, ep: &QdrantEndpoints) -> Result<(), String> {
    let c = &ep.collection;
    let body = json!({
        "vectors": {"size": c.vector_size, "distance": "Cosine"},
        "shard_number": c.shard_number,
        "replication_factor": c.replication_factor,
        "write_consistency_factor": c.write_consistency_factor,
    });
    let what = format!("qdrant on {}: create collection `{}`", via.node, c.name);
    let r = http_client(Duration::from_secs(30))
        .put(via.rest_url(&format!("/collections/{}?wait=true", c.name)))
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    success_or_body(r, what).await.map(|_| ())
}

/// Replica additions that bring every shard to `want` holders: (shard, from, to), each shard copied from a peer
/// holding an Active replica to the peer holding the fewest replicas so far (ties: the lower id). Shards without
/// an Active replica are left out (nothing to copy from).
pub fn missing_replicas(
    view: &CollectionClusterView,
    peers: &BTreeSet<u64>,
    want: usize,
) -> Vec<(u32, u64, u64)> {
    let mut load: BTreeMap<u64, usize> = peers.iter().map(|p| (*p, 0)).collect();
    for r in &view.replicas {
        if let Some(n) = load.get_mut(&r.peer_id) {
            *n += 1;
        }
    }
    let mut out = Vec::new();
    for shard in 0..view.shard_count {
        let holders: BTreeSet<u64> = view
            .replicas
            .iter()
            .filter(|r| r.shard_id == shard)
            .map(|r| r.peer_id)
            .collect();
        let Some(from) = view
            .replicas
            .iter()
            .find(|r| r.shard_id == shard && r.is_active() && peers.contains(&r.peer_id))
            .map(|r| r.peer_id)
        else {
            continue;
        };
        let mut have = holders.len();
        let mut taken = holders;
        while have < want {
            let Some(to) = load
                .iter()
                .filter(|(p, _)| !taken.contains(p))
                .min_by_key(|(p, n)| (**n, **p))
                .map(|(p, _)| *p)
            else {
                break;
            };
            out.push((shard, from, to));
            *load.get_mut(&to).expect("a known peer") += 1;
            taken.insert(to);
            have += 1;
        }
    }
    out
}

/// Asks the cluster (through `via`) to add the replicas every shard lacks; returns what was asked.
pub async fn restore_replication(
    via: &QdrantPeer,
    ep: &QdrantEndpoints,
) -> Result<Vec<(u32, u64, u64)>, String> {
    let http = http_client(Duration::from_secs(10));
    let collection = &ep.collection.name;
    let view = collection_view(&http, via, collection)
        .await?
        .ok_or_else(|| format!("qdrant on {}: no collection `{collection}`", via.node))?;
    let peers: BTreeSet<u64> = peer_ids(ep).await.into_values().collect();
    let adds = missing_replicas(&view, &peers, ep.expected_replicas());
    for (shard, from, to) in &adds {
        let body =
            json!({"replicate_shard": {"shard_id": shard, "from_peer_id": from, "to_peer_id": to}});
        let what = format!(
            "qdrant on {}: replicate shard {shard} from peer {from} to {to}",
            via.node
        );
        let r = http
            .post(via.rest_url(&format!("/collections/{collection}/cluster")))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        success_or_body(r, what).await?;
    }
    Ok(adds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::qdrant::Replica;

    fn view(replicas: &[(u32, u64, &str)], shards: u32) -> CollectionClusterView {
        CollectionClusterView {
            peer_id: 1,
            shard_count: shards,
            replicas: replicas
                .iter()
                .map(|(s, p, st)| Replica {
                    shard_id: *s,
                    peer_id: *p,
                    state: st.to_string(),
                })
                .collect(),
            transfers: 0,
        }
    }

    #[test]
    fn a_single_survivor_s_shards_are_spread_over_the_joined_peers() {
        // One peer (1) restored every shard; peers 2 and 3 joined empty. RF 2: each shard gets one more
        // replica, spread evenly.
        let v = view(
            &[
                (0, 1, "Active"),
                (1, 1, "Active"),
                (2, 1, "Active"),
                (3, 1, "Active"),
            ],
            4,
        );
        let adds = missing_replicas(&v, &[1, 2, 3].into(), 2);
        assert_eq!(adds, [(0, 1, 2), (1, 1, 3), (2, 1, 2), (3, 1, 3)]);
    }

    #[test]
    fn full_shards_and_shards_without_an_active_replica_are_left_alone() {
        let v = view(
            &[
                (0, 1, "Active"),
                (0, 2, "Active"),
                (1, 1, "Dead"),
                (2, 2, "Active"),
            ],
            3,
        );
        // Shard 0 has its two replicas; shard 1 has nothing to copy from; shard 2 goes to the least loaded
        // peer that lacks it (3 holds nothing).
        let adds = missing_replicas(&v, &[1, 2, 3].into(), 2);
        assert_eq!(adds, [(2, 2, 3)]);
        // A replica on a peer that is gone is no source.
        let v = view(&[(0, 9, "Active")], 1);
        assert!(missing_replicas(&v, &[1, 2].into(), 2).is_empty());
    }
}
