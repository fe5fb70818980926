//! Topology files -> validated [`Topology`]: names short enough for interface names, addresses inside one /24,
//! and a placement every component can fail over in.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::Deserialize;

use super::model::{Network, Node, Placement, Topology};
use crate::input_error::InputErrors;
use crate::scenario::document::{check_name, read_document, read_input_file, Diagnostics};

const TOPOLOGY_EXPECTED: &str = "a topology (a mapping with name and nodes)";
const MAX_NODES: usize = 32;
const DEFAULT_BRIDGE: &str = "flbr0";
const DEFAULT_NAMESPACE_PREFIX: &str = "fl-";
const DEFAULT_SUBNET: [u8; 3] = [10, 201, 0];
/// Nodes without an `addr` get `.11`, `.12`, ... in file order.
const FIRST_NODE_HOST: u8 = 11;
/// Components placed on the first nodes when `placement` leaves them out.
const DEFAULT_MEMBERS: usize = 3;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    name: Option<String>,
    network: Option<RawNetwork>,
    nodes: Option<Vec<RawNode>>,
    placement: Option<RawPlacement>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    bridge: Option<String>,
    namespace_prefix: Option<String>,
    subnet: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Option<String>,
    zone: Option<String>,
    region: Option<String>,
    addr: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawPlacement {
    etcd: Option<Vec<String>>,
    postgres: Option<Vec<String>>,
    redis: Option<Vec<String>>,
    sentinel: Option<Vec<String>>,
    qdrant: Option<Vec<String>>,
    backup: Option<String>,
    /// Nodes running the routing layer (HAProxy and PgBouncer); default: beside the PostgreSQL members.
    router: Option<Vec<String>>,
}

/// JSON Schema of a topology file, generated from the type it is read into (`faultline schema topology`).
pub fn topology_schema() -> serde_json::Value {
    let mut v =
        serde_json::to_value(schemars::schema_for!(RawTopology)).expect("a schema serialises");
    v["title"] = "faultline topology".into();
    v
}

/// Parses a topology; `path` names the file in errors and becomes [`Topology::source`].
pub fn parse_topology(text: &str, path: &Path) -> Result<Topology, InputErrors> {
    let (raw, map) = read_document::<RawTopology>(text, path, TOPOLOGY_EXPECTED)?;
    let mut d = Diagnostics::new(path, &map);
    let topology = build_topology(&mut d, raw, path);
    d.finish(topology)
}

/// Reads and parses a topology file; see [`parse_topology`].
pub fn load_topology(path: &Path) -> Result<Topology, InputErrors> {
    let text = read_input_file(path)?;
    parse_topology(&text, path)
}

fn build_topology(d: &mut Diagnostics<'_>, raw: RawTopology, file: &Path) -> Option<Topology> {
    let name = d
        .require(raw.name, "name", "e.g. `name: three-node`")
        .filter(|n| check_name(d, n, "name", "topology"));
    let (network, subnet) = network(d, raw.network);
    let raw_nodes = d.require(
        raw.nodes,
        "nodes",
        "list the nodes, e.g. `- {name: n1, zone: z1, region: r1}`",
    )?;
    let nodes = nodes(d, &raw_nodes, subnet);
    let names: Vec<&str> = raw_nodes.iter().filter_map(|n| n.name.as_deref()).collect();
    let placement = placement(d, raw.placement, &names);
    Some(Topology {
        name: name?,
        source: file.to_path_buf(),
        network: network?,
        nodes: nodes?,
        placement: placement?,
    })
}

/// Linux interface names are at most 15 bytes; namespace names are the prefix plus a node name of up to 8.
fn interface_like(d: &mut Diagnostics<'_>, value: &str, path: &str, max: usize) -> bool {
    let valid = (1..=max).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        d.at(
            path,
            format!(
                "{path} `{value}` is not valid: use 1 to {max} characters from a-z, 0-9 and `-`"
            ),
        );
    }
    valid
}

/// The network, and the first three octets of the subnet when it is valid (node addresses are checked against it).
fn network(d: &mut Diagnostics<'_>, raw: Option<RawNetwork>) -> (Option<Network>, Option<[u8; 3]>) {
    let raw = raw.unwrap_or(RawNetwork {
        bridge: None,
        namespace_prefix: None,
        subnet: None,
    });
    let bridge = raw.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
    let bridge_ok = interface_like(d, &bridge, "network.bridge", 15);
    let prefix = raw
        .namespace_prefix
        .unwrap_or_else(|| DEFAULT_NAMESPACE_PREFIX.to_string());
    let prefix_ok = interface_like(d, &prefix, "network.namespace_prefix", 6);
    let subnet = match raw.subnet {
        None => Some(DEFAULT_SUBNET),
        Some(text) => {
            let parsed = parse_subnet(&text);
            if let Err(e) = &parsed {
                d.at("network.subnet", e.clone());
            }
            parsed.ok()
        }
    };
    let network = subnet
        .filter(|_| bridge_ok && prefix_ok)
        .map(|[a, b, c]| Network {
            bridge,
            namespace_prefix: prefix,
            host_addr: Ipv4Addr::new(a, b, c, 1),
            prefix_len: 24,
        });
    (network, subnet)
}

/// `10.201.0.0/24` -> `[10, 201, 0]`.
fn parse_subnet(text: &str) -> Result<[u8; 3], String> {
    let example = "e.g. `10.201.0.0/24`";
    let Some((addr, len)) = text.split_once('/') else {
        return Err(format!(
            "network.subnet `{text}` needs a prefix length: it must be an IPv4 /24, {example}"
        ));
    };
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("network.subnet `{text}` is not an IPv4 subnet; {example}"))?;
    if len != "24" {
        return Err(format!(
            "network.subnet `{text}` must be a /24 (one bridge, at most 32 nodes), {example}"
        ));
    }
    let [a, b, c, host] = addr.octets();
    if host != 0 {
        return Err(format!(
            "network.subnet `{text}` has host bits set; write `{a}.{b}.{c}.0/24`"
        ));
    }
    Ok([a, b, c])
}

fn nodes(d: &mut Diagnostics<'_>, raw: &[RawNode], subnet: Option<[u8; 3]>) -> Option<Vec<Node>> {
    if raw.is_empty() {
        d.at(
            "nodes",
            "`nodes` is empty; a topology needs at least one node",
        );
        return None;
    }
    if raw.len() > MAX_NODES {
        d.at(
            &format!("nodes[{MAX_NODES}]"),
            format!(
                "a topology has at most {MAX_NODES} nodes; this one has {}",
                raw.len()
            ),
        );
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addrs: HashMap<Ipv4Addr, usize> = HashMap::new();
    let mut zone_regions: HashMap<&str, (&str, usize)> = HashMap::new();
    let mut nodes = Vec::with_capacity(raw.len());
    for (i, n) in raw.iter().enumerate() {
        let path = format!("nodes[{i}]");
        let name = d
            .require(
                n.name.as_deref(),
                &format!("{path}.name"),
                "e.g. `name: n1`",
            )
            .filter(|name| node_name(d, name, &format!("{path}.name")));
        if let Some(name) = name {
            if let Some(first) = names.insert(name, i) {
                d.at(
                    &format!("{path}.name"),
                    format!(
                        "node name `{name}` is used twice (nodes {} and {})",
                        first + 1,
                        i + 1
                    ),
                );
            }
        }
        let zone = d
            .require(
                n.zone.as_deref(),
                &format!("{path}.zone"),
                "e.g. `zone: z1`",
            )
            .filter(|z| non_empty(d, z, &format!("{path}.zone")));
        let region = d
            .require(
                n.region.as_deref(),
                &format!("{path}.region"),
                "e.g. `region: r1`",
            )
            .filter(|r| non_empty(d, r, &format!("{path}.region")));
        if let (Some(zone), Some(region)) = (zone, region) {
            match zone_regions.get(zone) {
                Some(&(other, first)) if other != region => d.at(
                    &format!("{path}.region"),
                    format!(
                        "zone `{zone}` is in region `{other}` (node {}) but in region `{region}` here; a zone belongs \
                         to one region",
                        first + 1
                    ),
                ),
                Some(_) => {}
                None => {
                    zone_regions.insert(zone, (region, i));
                }
            }
        }
        let addr = subnet.and_then(|s| node_addr(d, n, i, &path, name.unwrap_or("?"), s));
        if let Some(addr) = addr {
            if let Some(first) = addrs.insert(addr, i) {
                let why = if n.addr.is_none() {
                    " (its default: .11 + its position)"
                } else {
                    ""
                };
                d.at(
                    &format!("{path}.addr"),
                    format!(
                        "address {addr}{why} is already used by node {}; addresses must be unique",
                        first + 1
                    ),
                );
            }
        }
        if let (Some(name), Some(zone), Some(region), Some(addr)) = (name, zone, region, addr) {
            nodes.push(Node {
                name: name.to_string(),
                zone: zone.to_string(),
                region: region.to_string(),
                addr,
            });
        }
    }
    (nodes.len() == raw.len()).then_some(nodes)
}

/// Node names go into namespace and veth names, which Linux caps at 15 bytes.
fn node_name(d: &mut Diagnostics<'_>, name: &str, path: &str) -> bool {
    let valid = (1..=8).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !valid {
        d.at(
            path,
            format!(
                "node name `{name}` is not valid: use a lowercase letter followed by up to 7 lowercase letters or \
                 digits (it goes into interface names)"
            ),
        );
    }
    valid
}

fn non_empty(d: &mut Diagnostics<'_>, value: &str, path: &str) -> bool {
    if value.trim().is_empty() {
        d.at(path, format!("`{path}` is empty"));
        false
    } else {
        true
    }
}

fn node_addr(
    d: &mut Diagnostics<'_>,
    raw: &RawNode,
    index: usize,
    path: &str,
    name: &str,
    [a, b, c]: [u8; 3],
) -> Option<Ipv4Addr> {
    let addr_path = format!("{path}.addr");
    let Some(text) = &raw.addr else {
        let host = u8::try_from(index)
            .ok()
            .and_then(|i| FIRST_NODE_HOST.checked_add(i))
            .filter(|h| *h < 255)?;
        return Some(Ipv4Addr::new(a, b, c, host));
    };
    let Ok(addr) = text.parse::<Ipv4Addr>() else {
        d.at(
            &addr_path,
            format!("node `{name}` address `{text}` is not an IPv4 address, e.g. `{a}.{b}.{c}.11`"),
        );
        return None;
    };
    let [x, y, z, host] = addr.octets();
    if [x, y, z] != [a, b, c] {
        d.at(
            &addr_path,
            format!("node `{name}` address {addr} is outside the subnet {a}.{b}.{c}.0/24"),
        );
        return None;
    }
    if matches!(host, 0 | 1 | 255) {
        d.at(
            &addr_path,
            format!(
                "node `{name}` address {addr} is reserved (.0 is the network, .1 the bridge, .255 broadcast); use \
                 .2 to .254"
            ),
        );
        return None;
    }
    Some(addr)
}

fn placement(
    d: &mut Diagnostics<'_>,
    raw: Option<RawPlacement>,
    names: &[&str],
) -> Option<Placement> {
    let (etcd, postgres, redis, sentinel, qdrant, backup, router) = match raw {
        Some(p) => (
            p.etcd, p.postgres, p.redis, p.sentinel, p.qdrant, p.backup, p.router,
        ),
        None => (None, None, None, None, None, None, None),
    };
    let etcd = members(d, etcd, "etcd", names, |n| {
        (n % 2 == 1).then_some(()).ok_or_else(|| {
            format!(
                "etcd needs an odd number of members (1, 3, 5, ...) to keep a quorum; it has {n}"
            )
        })
    });
    let postgres = members(d, postgres, "postgres", names, |n| {
        at_least(n, 2, "postgres needs at least 2 members to fail over")
    });
    let redis = members(d, redis, "redis", names, |n| {
        at_least(n, 2, "redis needs at least 2 members to fail over")
    });
    let sentinel = members(d, sentinel, "sentinel", names, |n| {
        at_least(
            n,
            1,
            "redis sentinel needs at least 1 member to promote a replica",
        )
    });
    let qdrant = members(d, qdrant, "qdrant", names, |n| {
        at_least(
            n,
            2,
            "qdrant needs at least 2 peers to hold replication factor 2",
        )
    });
    let router = match router {
        // Beside the members, unless the topology places the routers elsewhere (a node of their own).
        None => postgres.clone(),
        Some(r) => members(d, Some(r), "router", names, |n| {
            at_least(n, 1, "the routing layer needs at least 1 node")
        }),
    };
    let backup = match backup {
        None => names.last().map(|n| n.to_string()),
        Some(n) if names.contains(&n.as_str()) => Some(n),
        Some(n) => {
            d.at(
                "placement.backup",
                format!(
                    "placement.backup names node `{n}`, which is not in this topology (nodes: {})",
                    names.join(", ")
                ),
            );
            None
        }
    };
    Some(Placement {
        backup: backup?,
        etcd: etcd?,
        postgres: postgres?,
        redis: redis?,
        sentinel: sentinel?,
        qdrant: qdrant?,
        router: router?,
    })
}

fn at_least(count: usize, min: usize, why: &str) -> Result<(), String> {
    if count >= min {
        Ok(())
    } else {
        Err(format!("{why}; it has {count}"))
    }
}

/// One placement list: given names must be nodes and unique; a missing list defaults to the first nodes.
fn members(
    d: &mut Diagnostics<'_>,
    raw: Option<Vec<String>>,
    component: &str,
    names: &[&str],
    count_ok: impl Fn(usize) -> Result<(), String>,
) -> Option<Vec<String>> {
    let path = format!("placement.{component}");
    let Some(list) = raw else {
        let defaults: Vec<String> = names
            .iter()
            .take(DEFAULT_MEMBERS)
            .map(|s| s.to_string())
            .collect();
        if let Err(e) = count_ok(defaults.len()) {
            let at = if d.map().contains("placement") {
                "placement"
            } else {
                "nodes"
            };
            d.at(
                at,
                format!(
                    "{path} is not given and defaults to the first {DEFAULT_MEMBERS} nodes ({}), but {e}; set \
                     {path} or add nodes",
                    defaults.join(", ")
                ),
            );
            return None;
        }
        return Some(defaults);
    };
    let mut ok = true;
    for (i, name) in list.iter().enumerate() {
        let entry = format!("{path}[{i}]");
        if !names.contains(&name.as_str()) {
            d.at(
                &entry,
                format!(
                    "{path} names node `{name}`, which is not in this topology (nodes: {})",
                    names.join(", ")
                ),
            );
            ok = false;
        } else if list[..i].contains(name) {
            d.at(&entry, format!("{path} lists node `{name}` twice"));
            ok = false;
        }
    }
    if let Err(e) = count_ok(list.len()) {
        d.at(&path, format!("{path}: {e}"));
        ok = false;
    }
    ok.then_some(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: &str = "\
name: three-node
nodes:
  - {name: n1, zone: z1, region: r1}
  - {name: n2, zone: z2, region: r1}
  - {name: n3, zone: z3, region: r1}
";

    fn err(text: &str) -> String {
        parse_topology(text, Path::new("t.yaml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_fill_network_addresses_and_placement() {
        let t = parse_topology(THREE, Path::new("t.yaml")).unwrap();
        assert_eq!(t.name, "three-node");
        assert_eq!(t.network.bridge, "flbr0");
        assert_eq!(t.network.namespace_prefix, "fl-");
        assert_eq!(t.network.host_addr, Ipv4Addr::new(10, 201, 0, 1));
        assert_eq!(t.network.prefix_len, 24);
        let addrs: Vec<Ipv4Addr> = t.nodes.iter().map(|n| n.addr).collect();
        assert_eq!(
            addrs,
            [11, 12, 13].map(|h| Ipv4Addr::new(10, 201, 0, h)).to_vec()
        );
        let three = vec!["n1".to_string(), "n2".into(), "n3".into()];
        assert_eq!(t.placement.etcd, three);
        assert_eq!(t.placement.postgres, three);
        assert_eq!(t.placement.redis, three);
        assert_eq!(t.placement.sentinel, three);
        assert_eq!(t.placement.qdrant, three);
    }

    #[test]
    fn explicit_network_and_placement() {
        let text = "\
name: two
network: {bridge: flbr1, namespace_prefix: fl2-, subnet: 10.202.0.0/24}
nodes:
  - {name: n1, zone: a, region: r, addr: 10.202.0.50}
  - {name: n2, zone: b, region: r}
placement: {etcd: [n1], postgres: [n2, n1], redis: [n1, n2], sentinel: [n2]}
";
        let t = parse_topology(text, Path::new("t.yaml")).unwrap();
        assert_eq!(t.network.host_addr, Ipv4Addr::new(10, 202, 0, 1));
        assert_eq!(t.nodes[0].addr, Ipv4Addr::new(10, 202, 0, 50));
        assert_eq!(t.nodes[1].addr, Ipv4Addr::new(10, 202, 0, 12));
        assert_eq!(t.placement.postgres, vec!["n2".to_string(), "n1".into()]);
    }

    #[test]
    fn node_rules() {
        let e = err(&THREE.replace("name: n3", "name: n1"));
        assert!(
            e.contains("t.yaml:5:12: node name `n1` is used twice (nodes 1 and 3)"),
            "{e}"
        );
        let e = err(&THREE.replace("name: n3", "name: Node-3"));
        assert!(e.contains("node name `Node-3` is not valid"), "{e}");
        let e = err(&THREE.replace("zone: z3, ", ""));
        assert!(e.contains("t.yaml:5:5: missing required key `zone`"), "{e}");
        let e = err(&THREE.replace("zone: z2, region: r1", "zone: z1, region: r2"));
        assert!(
            e.contains("zone `z1` is in region `r1` (node 1) but in region `r2` here"),
            "{e}"
        );
        let e = err("name: t\nnodes: []\n");
        assert!(e.contains("t.yaml:2:8: `nodes` is empty"), "{e}");
        let many: String = (0..33)
            .map(|i| format!("  - {{name: n{i}, zone: z, region: r}}\n"))
            .collect();
        let e = err(&format!("name: t\nnodes:\n{many}"));
        assert!(e.contains("at most 32 nodes; this one has 33"), "{e}");
    }

    #[test]
    fn address_rules() {
        let e = err(&THREE.replace(
            "region: r1}\n  - {name: n2",
            "region: r1, addr: 10.9.0.5}\n  - {name: n2",
        ));
        assert!(
            e.contains(
                "t.yaml:3:44: node `n1` address 10.9.0.5 is outside the subnet 10.201.0.0/24"
            ),
            "{e}"
        );
        let e = err(&THREE.replace(
            "region: r1}\n  - {name: n2",
            "region: r1, addr: 10.201.0.255}\n  - {name: n2",
        ));
        assert!(e.contains("is reserved"), "{e}");
        let e = err(&THREE.replace(
            "region: r1}\n  - {name: n2",
            "region: r1, addr: 10.201.0.12}\n  - {name: n2",
        ));
        assert!(e.contains("t.yaml:4:5: address 10.201.0.12 (its default: .11 + its position) is already used by node 1"), "{e}");
        let e = err(&THREE.replace(
            "region: r1}\n  - {name: n2",
            "region: r1, addr: banana}\n  - {name: n2",
        ));
        assert!(e.contains("is not an IPv4 address"), "{e}");
    }

    #[test]
    fn network_rules() {
        for (subnet, want) in [
            ("10.1.0.0/16", "must be a /24"),
            ("10.1.0.5/24", "has host bits set; write `10.1.0.0/24`"),
            ("10.1.0.0", "needs a prefix length"),
            ("ten/24", "is not an IPv4 subnet"),
        ] {
            let e = err(&format!("{THREE}network: {{subnet: {subnet}}}\n"));
            assert!(e.contains(want), "{subnet}: {e}");
        }
        let e = err(&format!(
            "{THREE}network: {{bridge: a-very-long-bridge-name, namespace_prefix: FL}}\n"
        ));
        assert!(
            e.contains(
                "network.bridge `a-very-long-bridge-name` is not valid: use 1 to 15 characters"
            ),
            "{e}"
        );
        assert!(
            e.contains("network.namespace_prefix `FL` is not valid: use 1 to 6 characters"),
            "{e}"
        );
    }

    #[test]
    fn placement_rules() {
        let e = err(&format!("{THREE}placement:\n  etcd: [n1, n2]\n  postgres: [n1]\n  redis: [n1, n9]\n  sentinel: [n2, n2]\n"));
        for want in [
            "t.yaml:7:9: placement.etcd: etcd needs an odd number of members (1, 3, 5, ...) to keep a quorum; it has 2",
            "t.yaml:8:13: placement.postgres: postgres needs at least 2 members to fail over; it has 1",
            "t.yaml:9:15: placement.redis names node `n9`, which is not in this topology (nodes: n1, n2, n3)",
            "t.yaml:10:18: placement.sentinel lists node `n2` twice",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }

    #[test]
    fn qdrant_needs_two_peers_for_replication_factor_two() {
        let e = err(&format!("{THREE}placement:\n  qdrant: [n2]\n"));
        assert!(
            e.contains("t.yaml:7:11: placement.qdrant: qdrant needs at least 2 peers to hold replication factor 2; it has 1"),
            "{e}"
        );
        let t = parse_topology(
            &format!("{THREE}placement:\n  qdrant: [n3, n1]\n"),
            Path::new("t.yaml"),
        )
        .unwrap();
        assert_eq!(t.placement.qdrant, vec!["n3".to_string(), "n1".into()]);
    }

    #[test]
    fn default_placement_must_also_work() {
        let e = err("name: one\nnodes:\n  - {name: n1, zone: z1, region: r1}\n");
        assert!(
            e.contains("t.yaml:3:3: placement.postgres is not given and defaults to the first 3 nodes (n1), but postgres needs at least 2 members"),
            "{e}"
        );
        let e = err("name: two\nnodes:\n  - {name: n1, zone: z1, region: r1}\n  - {name: n2, zone: z1, region: r1}\n");
        assert!(e.contains("placement.etcd is not given"), "{e}");
    }

    #[test]
    fn empty_and_wrong_root() {
        assert_eq!(
            err(""),
            "t.yaml: the file is empty; expected a topology (a mapping with name and nodes)"
        );
        assert!(err("nodes: 3\nname: x\n")
            .contains("t.yaml:1:8: nodes: invalid type: integer `3`, expected a list"));
    }
}
