//! Qdrant in cluster mode (peers in one raft cluster, a collection sharded and replicated across them): what the
//! servers say (REST views of the cluster and of the collection's replicas), health and roles, the failover probe,
//! the load client (upserts, point reads and searches over gRPC through qdrant-client's generated client), the
//! collection the harness creates, and the ledger read-back.

pub mod admin;
mod client;
#[cfg(test)]
mod fake;
mod probe;
mod rest;
mod vectors;

use std::net::Ipv4Addr;

pub use client::{prepare, read_back_ledger, write_probe, QdrantLoadClient, ReadBackReport};
pub use probe::{spawn_probe, ProbeState};
pub use rest::{
    cluster_view, collection_view, delete_all_points, health, known_vector_search, parse_cluster,
    parse_collection_cluster, raft_leader, ClusterView, CollectionClusterView, Replica,
    SendFailure,
};
pub use vectors::{point_vector, query_vector};

pub const REST_PORT: u16 = 6333;
pub const GRPC_PORT: u16 = 6334;
pub const P2P_PORT: u16 = 6335;

/// One Qdrant peer: the node it runs on, its three ports (REST for operators and probes, gRPC for clients,
/// p2p for the other peers), and the hosts the cluster names it by in peer URIs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QdrantPeer {
    pub node: String,
    pub addr: Ipv4Addr,
    pub rest_port: u16,
    pub grpc_port: u16,
    pub p2p_port: u16,
    /// Hosts of this peer's p2p URI as /cluster lists it: `addr` on the local stack; on Kubernetes the pod IP
    /// and the pod name (a URI `http://qdrant-0.qdrant-headless...:6335` names pod `qdrant-0`).
    pub announced: Vec<String>,
}

impl QdrantPeer {
    /// A peer on the standard ports.
    pub fn standard(node: impl Into<String>, addr: Ipv4Addr) -> Self {
        QdrantPeer {
            node: node.into(),
            addr,
            rest_port: REST_PORT,
            grpc_port: GRPC_PORT,
            p2p_port: P2P_PORT,
            announced: vec![addr.to_string()],
        }
    }

    /// Whether a peer URI's host names this peer: one of its announced hosts, or a DNS name whose first label is.
    pub fn is_announced_as(&self, host: &str) -> bool {
        let first = host.split('.').next().unwrap_or(host);
        self.announced.iter().any(|a| a == host || a == first)
    }

    pub fn rest_url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.addr, self.rest_port)
    }

    pub fn grpc_uri(&self) -> String {
        format!("http://{}:{}", self.addr, self.grpc_port)
    }

    /// The URI the other peers reach this one by (`--uri` / `--bootstrap`).
    pub fn p2p_uri(&self) -> String {
        format!("http://{}:{}", self.addr, self.p2p_port)
    }
}

/// The collection the harness writes to, created by `prepare` when missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectionSpec {
    pub name: String,
    pub vector_size: u64,
    pub shard_number: u32,
    pub replication_factor: u32,
    pub write_consistency_factor: u32,
}

/// How to reach the Qdrant cluster, and what the harness's points look like.
#[derive(Clone, Debug)]
pub struct QdrantEndpoints {
    /// In topology order: the first is the peer the cluster was bootstrapped from.
    pub peers: Vec<QdrantPeer>,
    pub collection: CollectionSpec,
    /// Seed of the point and query vectors: the same seed gives the same vectors in every run.
    pub seed: u64,
}

impl QdrantEndpoints {
    /// The node whose p2p URI is `uri` (as Qdrant's /cluster lists peers: `http://10.201.0.12:6335/`).
    pub fn node_of_uri(&self, uri: &str) -> Option<&str> {
        let rest = uri
            .strip_prefix("http://")
            .or_else(|| uri.strip_prefix("https://"))
            .unwrap_or(uri);
        let authority = rest.split('/').next().unwrap_or("");
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().ok()),
            None => (authority, None),
        };
        self.peers
            .iter()
            .find(|p| p.is_announced_as(host) && port.is_none_or(|port| port == p.p2p_port))
            .map(|p| p.node.as_str())
    }

    pub fn peer(&self, node: &str) -> Option<&QdrantPeer> {
        self.peers.iter().find(|p| p.node == node)
    }

    /// Replicas every shard must have: the replication factor, capped by the number of peers.
    pub fn expected_replicas(&self) -> usize {
        (self.collection.replication_factor as usize).min(self.peers.len())
    }
}

/// Point payload key holding the run id: the collection outlives runs and point ids restart at 1 in every run,
/// so reads and the read-back only count points written by this run.
pub const RUN_KEY: &str = "faultline_run";

#[cfg(test)]
pub(crate) fn test_endpoints(peers: Vec<QdrantPeer>) -> QdrantEndpoints {
    QdrantEndpoints {
        peers,
        collection: CollectionSpec {
            name: "faultline".into(),
            vector_size: 8,
            shard_number: 6,
            replication_factor: 2,
            write_consistency_factor: 1,
        },
        seed: 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_p2p_uris_to_nodes() {
        let ep = test_endpoints(vec![
            QdrantPeer::standard("n1", Ipv4Addr::new(10, 201, 0, 11)),
            QdrantPeer::standard("n2", Ipv4Addr::new(10, 201, 0, 12)),
        ]);
        assert_eq!(ep.node_of_uri("http://10.201.0.12:6335/"), Some("n2"));
        assert_eq!(ep.node_of_uri("http://10.201.0.11:6335"), Some("n1"));
        assert_eq!(ep.node_of_uri("http://10.201.0.11/"), Some("n1"));
        assert_eq!(ep.node_of_uri("http://10.201.0.11:7000/"), None);
        assert_eq!(ep.node_of_uri("http://10.201.0.99:6335/"), None);
        assert_eq!(ep.expected_replicas(), 2);
    }
}
