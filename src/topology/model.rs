//! Where the local stack's nodes live: names, zones, regions, addresses, and which components run on which node.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::scenario::ComponentKind;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    pub name: String,
    pub source: PathBuf,
    pub network: Network,
    /// In file order; "first replica" and member numbering follow this order.
    pub nodes: Vec<Node>,
    pub placement: Placement,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// Linux bridge in the host namespace that every node's veth is attached to.
    pub bridge: String,
    /// Prefix for namespace names: node `n1` lives in namespace `<prefix>n1`.
    pub namespace_prefix: String,
    /// The bridge's own address (the harness talks to the nodes from it); /24.
    pub host_addr: Ipv4Addr,
    pub prefix_len: u8,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub zone: String,
    pub region: String,
    pub addr: Ipv4Addr,
}

/// Node names per component; etcd members are the DCS for Patroni, sentinels watch Redis, Qdrant peers form one
/// raft cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub etcd: Vec<String>,
    pub postgres: Vec<String>,
    pub redis: Vec<String>,
    pub sentinel: Vec<String>,
    /// Empty in state files written before Qdrant support.
    #[serde(default)]
    pub qdrant: Vec<String>,
    /// The backup repository's node: pgBackRest's repository host and the store for Redis RDB and Qdrant
    /// snapshots. Defaults to the topology's last node; put it in another region than the primaries so a region
    /// loss leaves the backups reachable. Empty in state files written before backups were part of the stack.
    #[serde(default)]
    pub backup: String,
    /// Nodes running HAProxy and PgBouncer (each PgBouncer forwards to the HAProxy beside it). Empty in state files
    /// written before the routing layer was part of the stack.
    #[serde(default)]
    pub router: Vec<String>,
}

impl Node {
    /// The node's zone, or its region.
    pub fn area(&self, region: bool) -> &str {
        if region {
            &self.region
        } else {
            &self.zone
        }
    }
}

impl Topology {
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn namespace(&self, node: &str) -> String {
        format!("{}{}", self.network.namespace_prefix, node)
    }

    pub fn zones(&self) -> Vec<String> {
        self.areas(false)
    }

    pub fn nodes_in_zone(&self, zone: &str) -> Vec<&Node> {
        self.nodes.iter().filter(|n| n.zone == zone).collect()
    }

    pub fn regions(&self) -> Vec<String> {
        self.areas(true)
    }

    /// The distinct zones (or regions) in node order.
    fn areas(&self, region: bool) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for n in &self.nodes {
            let a = n.area(region);
            if !out.iter().any(|x| x == a) {
                out.push(a.to_string());
            }
        }
        out
    }

    /// Node names of a zone (`region = false`) or region, in topology order.
    pub fn names_in(&self, area: &str, region: bool) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.area(region) == area)
            .map(|n| n.name.clone())
            .collect()
    }

    /// Nodes that run a member of the component, in topology order.
    pub fn members(&self, component: ComponentKind) -> &[String] {
        match component {
            ComponentKind::Postgres => &self.placement.postgres,
            ComponentKind::Redis => &self.placement.redis,
            ComponentKind::Qdrant => &self.placement.qdrant,
        }
    }
}
