//! Nodes as network namespaces on a Linux bridge, and the network faults applied inside them with nft.

use std::io;
use std::net::Ipv4Addr;

use super::process::{run, run_with_input};
use crate::topology::Topology;

/// nft table faultline owns inside a node's namespace; deleting it reverts every network fault on that node.
pub const NFT_TABLE: &str = "faultline";

pub fn host_veth(topology: &Topology, node: &str) -> String {
    format!("{}{}h", topology.network.namespace_prefix, node)
}

pub fn existing_namespaces() -> Vec<String> {
    run("ip", &["netns", "list"])
        .map(|out| {
            out.lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn link_exists(dev: &str) -> bool {
    run("ip", &["link", "show", "dev", dev]).is_ok()
}

/// Creates the bridge (with the host's address) and one namespace + veth per node, lo up in each.
pub fn create_network(topology: &Topology) -> io::Result<()> {
    let net = &topology.network;
    if !link_exists(&net.bridge) {
        run("ip", &["link", "add", &net.bridge, "type", "bridge"])?;
    }
    let host_cidr = format!("{}/{}", net.host_addr, net.prefix_len);
    let addrs = run("ip", &["-4", "addr", "show", "dev", &net.bridge])?;
    if !addrs.contains(&format!("inet {host_cidr}")) {
        run("ip", &["addr", "add", &host_cidr, "dev", &net.bridge])?;
    }
    run("ip", &["link", "set", &net.bridge, "up"])?;
    let existing = existing_namespaces();
    for node in &topology.nodes {
        let ns = topology.namespace(&node.name);
        let veth = host_veth(topology, &node.name);
        if !existing.contains(&ns) {
            run("ip", &["netns", "add", &ns])?;
        }
        if !link_exists(&veth) {
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
        }
        run("ip", &["link", "set", &veth, "master", &net.bridge, "up"])?;
        let cidr = format!("{}/{}", node.addr, net.prefix_len);
        let ns_addrs = run("ip", &["-n", &ns, "-4", "addr", "show", "dev", "eth0"])?;
        if !ns_addrs.contains(&format!("inet {cidr}")) {
            run("ip", &["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
        }
        run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
    }
    Ok(())
}

/// Deletes the namespaces and the bridge of this topology (veths go with their namespace).
pub fn delete_network(topology: &Topology) -> Vec<String> {
    let mut problems = Vec::new();
    let existing = existing_namespaces();
    for node in &topology.nodes {
        let ns = topology.namespace(&node.name);
        if existing.contains(&ns) {
            if let Err(e) = run("ip", &["netns", "delete", &ns]) {
                problems.push(e.to_string());
            }
        }
        let veth = host_veth(topology, &node.name);
        if link_exists(&veth) {
            let _ = run("ip", &["link", "delete", &veth]);
        }
    }
    if link_exists(&topology.network.bridge) {
        if let Err(e) = run("ip", &["link", "delete", &topology.network.bridge]) {
            problems.push(e.to_string());
        }
    }
    problems
}

pub fn set_link(topology: &Topology, node: &str, up: bool) -> io::Result<()> {
    let veth = host_veth(topology, node);
    run(
        "ip",
        &["link", "set", &veth, if up { "up" } else { "down" }],
    )?;
    Ok(())
}

pub fn link_is_up(topology: &Topology, node: &str) -> bool {
    run(
        "ip",
        &["-o", "link", "show", "dev", &host_veth(topology, node)],
    )
    .map(|s| !s.contains("state DOWN") && s.contains(",UP"))
    .unwrap_or(false)
}

/// Drop rules in one namespace: packets to `drop_out` and from `drop_in` are discarded. Added to faultline's
/// own table so the revert is one `delete table`.
pub fn add_drop_rules(
    ns: &str,
    drop_out: &[Ipv4Addr],
    drop_in: &[Ipv4Addr],
    loss_pct: u8,
) -> io::Result<()> {
    // Below 100 %, each packet is dropped with that probability.
    let chance = if loss_pct >= 100 {
        String::new()
    } else {
        format!("numgen random mod 100 < {loss_pct} ")
    };
    let set = |a: &[Ipv4Addr]| {
        a.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut script = format!(
        "table inet {NFT_TABLE} {{\n  chain output {{ type filter hook output priority -10; policy accept; }}\n  chain input {{ type filter hook input priority -10; policy accept; }}\n}}\n"
    );
    if !drop_out.is_empty() {
        script += &format!(
            "add rule inet {NFT_TABLE} output ip daddr {{ {} }} {chance}drop\n",
            set(drop_out)
        );
    }
    if !drop_in.is_empty() {
        script += &format!(
            "add rule inet {NFT_TABLE} input ip saddr {{ {} }} {chance}drop\n",
            set(drop_in)
        );
    }
    run_with_input("ip", &["netns", "exec", ns, "nft", "-f", "-"], &script)?;
    Ok(())
}

/// Limits what the namespace sends to `dsts` to `rate_kbit` (an htb class that only packets to those addresses
/// enter; everything else goes through an unlimited default class), on the node's interface `eth0`. This kernel has
/// htb and tbf but no netem: a bandwidth fault is htb's shaping, nothing else.
pub fn shape_egress(ns: &str, dsts: &[Ipv4Addr], rate_kbit: u32) -> io::Result<()> {
    let tc = |args: &[&str]| -> io::Result<String> {
        let mut full = vec!["netns", "exec", ns, "tc"];
        full.extend_from_slice(args);
        run("ip", &full)
    };
    let rate = format!("{rate_kbit}kbit");
    tc(&[
        "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "1",
    ])?;
    tc(&[
        "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:1", "htb", "rate", "10gbit",
    ])?;
    tc(&[
        "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:2", "htb", "rate", &rate,
        "ceil", &rate,
    ])?;
    for d in dsts {
        let dst = format!("{d}/32");
        tc(&[
            "filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
            "match", "ip", "dst", &dst, "flowid", "1:2",
        ])?;
    }
    Ok(())
}

/// Whether this kernel has netem: a netem qdisc put on a scratch veth pair made in the namespace for the purpose
/// and deleted at once (faultline's namespace; none of its interfaces is touched). Asked once per process.
pub fn kernel_has_netem(ns: &str) -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        let ip = |args: &[&str]| {
            let mut full = vec!["netns", "exec", ns];
            full.extend_from_slice(args);
            run("ip", &full)
        };
        if ip(&[
            "ip", "link", "add", "flnetem0", "type", "veth", "peer", "name", "flnetem1",
        ])
        .is_err()
        {
            return false;
        }
        let has = ip(&[
            "tc", "qdisc", "add", "dev", "flnetem0", "root", "netem", "delay", "1ms",
        ])
        .is_ok();
        let _ = ip(&["ip", "link", "del", "flnetem0"]);
        has
    })
}

/// Whether faultline's shaping (an htb root qdisc) is on the namespace's `eth0`.
pub fn has_shaping(ns: &str) -> bool {
    run(
        "ip",
        &["netns", "exec", ns, "tc", "qdisc", "show", "dev", "eth0"],
    )
    .map(|o| o.contains("qdisc htb 1:"))
    .unwrap_or(false)
}

/// Removes the shaping from the namespace's `eth0`; none = nothing to do.
pub fn delete_shaping(ns: &str) -> io::Result<bool> {
    if !has_shaping(ns) {
        return Ok(false);
    }
    run(
        "ip",
        &[
            "netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "root",
        ],
    )?;
    Ok(true)
}

/// The comment on every latency rule, by which `recover` and `status` find them.
pub const DELAY_COMMENT: &str = "faultline-latency";

fn iptables_mangle(ns: &str, args: &[&str]) -> io::Result<String> {
    let mut full = vec!["netns", "exec", ns, "iptables", "-w", "-t", "mangle"];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Sends what the namespace receives from `srcs` through NFQUEUE `queue` (mangle PREROUTING, on arrival), where
/// a delay agent holds it. On arrival, not on the way out: a packet held in the sender's own stack still counts
/// against its socket's bytes in flight, and TCP's small-queue limit and autocorking then hold the sender's next
/// segments back as well (measured: 100 ms each way added 260 ms to a synchronous commit instead of 200 ms).
/// `--queue-bypass`: with no agent bound to the queue, the packets pass undelayed instead of being dropped. nft
/// has no `queue` expression on this kernel, so these are iptables(-nft) rules with the xt NFQUEUE target.
pub fn add_delay_rules(ns: &str, queue: u16, srcs: &[Ipv4Addr]) -> io::Result<()> {
    let srcs = srcs
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let queue = queue.to_string();
    iptables_mangle(
        ns,
        &[
            "-A",
            "PREROUTING",
            "-s",
            &srcs,
            "-m",
            "comment",
            "--comment",
            DELAY_COMMENT,
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue,
            "--queue-bypass",
        ],
    )?;
    Ok(())
}

/// The latency rules of the namespace as `iptables -S` prints them, with their queue numbers.
fn delay_rules(ns: &str) -> io::Result<Vec<(String, Option<u16>)>> {
    Ok(iptables_mangle(ns, &["-S", "PREROUTING"])?
        .lines()
        .filter(|l| l.starts_with("-A ") && l.contains(DELAY_COMMENT))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let queue = words
                .iter()
                .position(|w| *w == "--queue-num")
                .and_then(|i| words.get(i + 1)?.parse().ok());
            (l.to_string(), queue)
        })
        .collect())
}

/// Queue numbers that latency rules of the namespace use (a rule without a readable queue is not counted; rules
/// that cannot be listed are an error).
pub fn delay_rule_queues(ns: &str) -> io::Result<Vec<u16>> {
    Ok(delay_rules(ns)?
        .into_iter()
        .filter_map(|(_, q)| q)
        .collect())
}

/// Deletes the namespace's latency rules (those of `queue` only, when given); returns how many there were. Rules
/// that cannot be listed are an error, never "none".
pub fn delete_delay_rules(ns: &str, queue: Option<u16>) -> io::Result<usize> {
    let mut deleted = 0;
    for (rule, q) in delay_rules(ns)? {
        if queue.is_some() && q != queue {
            continue;
        }
        let spec: Vec<&str> = rule.split_whitespace().skip(1).collect();
        let mut args = vec!["-D"];
        args.extend(spec);
        iptables_mangle(ns, &args)?;
        deleted += 1;
    }
    Ok(deleted)
}

/// nft table that keeps clients out of a member while a restore rebuilds it (apart from the faults' table, so a
/// fault's revert never opens it early).
pub const NFT_CLOSED_TABLE: &str = "faultline_closed";

/// Rejects new and existing TCP connections to `port` in the namespace (a reset: clients fail at once, they are
/// never acknowledged by a member that is being rebuilt).
pub fn close_port(ns: &str, port: u16) -> io::Result<()> {
    let script = format!(
        "table inet {NFT_CLOSED_TABLE} {{\n  chain input {{ type filter hook input priority -20; policy accept; \
         tcp dport {port} reject with tcp reset; }}\n}}\n"
    );
    run_with_input("ip", &["netns", "exec", ns, "nft", "-f", "-"], &script)?;
    Ok(())
}

/// Removes what `close_port` added; nothing to do when it is absent.
pub fn open_ports(ns: &str) -> io::Result<()> {
    let listed = run("ip", &["netns", "exec", ns, "nft", "list", "tables"])?;
    if listed
        .lines()
        .any(|l| l.trim() == format!("table inet {NFT_CLOSED_TABLE}"))
    {
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "nft",
                "delete",
                "table",
                "inet",
                NFT_CLOSED_TABLE,
            ],
        )?;
    }
    Ok(())
}

/// Removes faultline's nft table from the namespace; absent table = nothing to do.
pub fn delete_rules(ns: &str) -> io::Result<bool> {
    if !has_rules(ns) {
        return Ok(false);
    }
    run(
        "ip",
        &[
            "netns", "exec", ns, "nft", "delete", "table", "inet", NFT_TABLE,
        ],
    )?;
    Ok(true)
}

pub fn has_rules(ns: &str) -> bool {
    run("ip", &["netns", "exec", ns, "nft", "list", "tables"])
        .map(|s| {
            s.lines()
                .any(|l| l.trim() == format!("table inet {NFT_TABLE}"))
        })
        .unwrap_or(false)
}
