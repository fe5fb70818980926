//! How clients outside the cluster reach each member: the per-member NodePorts of kind/cluster.yaml's table on one
//! address, mapped from the pods the API lists. The servers name members by pod name (Patroni) and pod IP
//! (Sentinel, Redis, `inet_server_addr()`) or by a pod DNS name (Qdrant peer URIs); each `Member`/`QdrantPeer`
//! carries both, so what the servers say maps back to the endpoint a client can use.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;

use super::{pod_name, pod_node};
use crate::component::qdrant::{QdrantPeer, P2P_PORT};
use crate::component::{Member, MemberPorts};

/// The NodePorts of the stack's client endpoints (kind/cluster.yaml's table): a member with ordinal `i` (pod
/// `postgres-1` has ordinal 1) is reached on `<base> + i`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePorts {
    /// Where the NodePorts answer: 127.0.0.1 on kind (extraPortMappings); a node's address on another cluster.
    pub addr: Ipv4Addr,
    /// The read-write Service that follows the Patroni leader (no per-member PostgreSQL port is exposed).
    pub postgres: u16,
    pub patroni_base: u16,
    pub redis_base: u16,
    pub sentinel_base: u16,
    pub qdrant_rest_base: u16,
    pub qdrant_grpc_base: u16,
}

impl NodePorts {
    /// The kind cluster's NodePorts, mapped to the same ports on 127.0.0.1.
    pub fn kind() -> Self {
        NodePorts {
            addr: Ipv4Addr::LOCALHOST,
            postgres: 30432,
            patroni_base: 30800,
            redis_base: 31379,
            sentinel_base: 32380,
            qdrant_rest_base: 31330,
            qdrant_grpc_base: 31340,
        }
    }
}

/// What the harness needs of one pod: its name, node and IP (no IP before it is scheduled and started).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodAddr {
    pub name: String,
    pub node: String,
    pub ip: Option<Ipv4Addr>,
}

impl PodAddr {
    pub fn of(p: &Pod) -> Option<PodAddr> {
        Some(PodAddr {
            name: pod_name(p).to_string(),
            node: pod_node(p)?.to_string(),
            ip: p
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
        })
    }
}

/// The StatefulSet ordinal of a pod (`redis-2` -> 2).
pub fn pod_ordinal(name: &str) -> Option<u16> {
    name.rsplit_once('-')?.1.parse().ok()
}

/// Which per-member NodePort a member list is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberService {
    /// Patroni REST per member, PostgreSQL through the leader Service.
    Postgres,
    Redis,
    Sentinel,
}

/// The members of one StatefulSet, in ordinal order, as clients reach them through the NodePorts. Pods without
/// an ordinal are left out (they have no NodePort); a pod without an IP yet announces 0.0.0.0, which no server
/// names.
pub fn members(ports: &NodePorts, pods: &[PodAddr], service: MemberService) -> Vec<Member> {
    let mut out: Vec<(u16, Member)> = pods
        .iter()
        .filter_map(|p| {
            let i = pod_ordinal(&p.name)?;
            let mut m = MemberPorts::STANDARD;
            match service {
                MemberService::Postgres => {
                    m.postgres = ports.postgres;
                    m.patroni = ports.patroni_base + i;
                }
                MemberService::Redis => m.redis = ports.redis_base + i,
                MemberService::Sentinel => m.sentinel = ports.sentinel_base + i,
            }
            Some((
                i,
                Member {
                    node: p.node.clone(),
                    addr: ports.addr,
                    ports: m,
                    name: p.name.clone(),
                    announced: p.ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                },
            ))
        })
        .collect();
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, m)| m).collect()
}

/// The Qdrant peers in ordinal order (qdrant-0 first: the peer the cluster was bootstrapped from). Peers name each
/// other by pod DNS name (`http://qdrant-0.qdrant-headless...:6335`) or IP.
pub fn qdrant_peers(ports: &NodePorts, pods: &[PodAddr]) -> Vec<QdrantPeer> {
    let mut out: Vec<(u16, QdrantPeer)> = pods
        .iter()
        .filter_map(|p| {
            let i = pod_ordinal(&p.name)?;
            let mut announced = vec![p.name.clone()];
            announced.extend(p.ip.map(|ip| ip.to_string()));
            Some((
                i,
                QdrantPeer {
                    node: p.node.clone(),
                    addr: ports.addr,
                    rest_port: ports.qdrant_rest_base + i,
                    grpc_port: ports.qdrant_grpc_base + i,
                    p2p_port: P2P_PORT,
                    announced,
                },
            ))
        })
        .collect();
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::qdrant::{test_endpoints, QdrantEndpoints};
    use crate::component::redis::RedisEndpoints;

    fn pod(name: &str, node: &str, ip: &str) -> PodAddr {
        PodAddr {
            name: name.into(),
            node: node.into(),
            ip: ip.parse().ok(),
        }
    }

    #[test]
    fn members_get_their_nodeports_in_ordinal_order() {
        let pods = [
            pod("redis-2", "w3", "10.244.3.7"),
            pod("redis-0", "w1", "10.244.1.5"),
            pod("redis-1", "w2", "10.244.2.6"),
        ];
        let ms = members(&NodePorts::kind(), &pods, MemberService::Redis);
        let got: Vec<(&str, u16, String)> = ms
            .iter()
            .map(|m| (m.node.as_str(), m.ports.redis, m.announced.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("w1", 31379, "10.244.1.5".to_string()),
                ("w2", 31380, "10.244.2.6".to_string()),
                ("w3", 31381, "10.244.3.7".to_string()),
            ]
        );
        assert!(ms.iter().all(|m| m.addr == Ipv4Addr::LOCALHOST));
        // The other services keep their standard ports: a Redis member has no Sentinel NodePort.
        assert_eq!(ms[0].ports.sentinel, 26379);
    }

    #[test]
    fn postgres_members_share_the_leader_service_and_have_their_own_patroni_port() {
        let pods = [
            pod("postgres-1", "w2", "10.244.2.3"),
            pod("postgres-0", "w1", ""),
        ];
        let ms = members(&NodePorts::kind(), &pods, MemberService::Postgres);
        assert_eq!(ms[0].name, "postgres-0");
        assert_eq!((ms[0].ports.postgres, ms[0].ports.patroni), (30432, 30800));
        assert_eq!((ms[1].ports.postgres, ms[1].ports.patroni), (30432, 30801));
        assert_eq!(ms[0].announced, Ipv4Addr::UNSPECIFIED, "no pod IP yet");
        let sentinels = members(
            &NodePorts::kind(),
            &[pod("redis-sentinel-2", "w3", "10.244.3.9")],
            MemberService::Sentinel,
        );
        assert_eq!(sentinels[0].ports.sentinel, 32382);
    }

    #[test]
    fn pod_ips_sentinel_announces_map_back_to_nodes() {
        let pods = [
            pod("redis-0", "w1", "10.244.1.5"),
            pod("redis-1", "w2", "10.244.2.6"),
        ];
        let ep = RedisEndpoints {
            members: members(&NodePorts::kind(), &pods, MemberService::Redis),
            sentinels: Vec::new(),
            master_name: "faultline".into(),
        };
        assert_eq!(ep.node_of("10.244.2.6"), Some("w2"));
        assert_eq!(
            ep.member_announced_as("10.244.2.6").map(|m| m.ports.redis),
            Some(31380)
        );
        assert_eq!(
            ep.node_of("127.0.0.1"),
            None,
            "the client address names no member"
        );
    }

    #[test]
    fn qdrant_peer_uris_map_back_to_nodes_by_pod_name_or_ip() {
        let pods = [
            pod("qdrant-1", "w2", "10.244.2.8"),
            pod("qdrant-0", "w1", "10.244.1.8"),
        ];
        let peers = qdrant_peers(&NodePorts::kind(), &pods);
        assert_eq!((peers[0].rest_port, peers[0].grpc_port), (31330, 31340));
        assert_eq!(peers[1].rest_port, 31331);
        let ep: QdrantEndpoints = test_endpoints(peers);
        assert_eq!(
            ep.node_of_uri("http://qdrant-1.qdrant-headless.faultline.svc.cluster.local:6335/"),
            Some("w2")
        );
        assert_eq!(ep.node_of_uri("http://10.244.1.8:6335"), Some("w1"));
        assert_eq!(ep.node_of_uri("http://qdrant-7.qdrant-headless:6335"), None);
    }

    #[test]
    fn ordinals_come_from_the_pod_name() {
        assert_eq!(pod_ordinal("redis-sentinel-2"), Some(2));
        assert_eq!(pod_ordinal("postgres"), None);
        assert_eq!(pod_ordinal("redis-x"), None);
    }
}
