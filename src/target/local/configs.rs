//! Configuration generated for every member start (Redis and Sentinel rewrite theirs at run time: pitfall 8).

use std::net::Ipv4Addr;

use crate::settings::{DcsApi, StackSettings};
use crate::topology::Topology;

pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;
pub const PATRONI_PORT: u16 = 8008;
pub const POSTGRES_PORT: u16 = 5432;
pub const REDIS_PORT: u16 = 6379;
pub const SENTINEL_PORT: u16 = 26379;

fn addr(topology: &Topology, node: &str) -> Ipv4Addr {
    topology
        .node(node)
        .map(|n| n.addr)
        .expect("placement names only topology nodes (validated)")
}

/// etcd command line. An existing data dir makes etcd ignore the initial-cluster flags, so restarts reuse them.
pub fn etcd_args(
    topology: &Topology,
    settings: &StackSettings,
    node: &str,
    data_dir: &str,
) -> Vec<String> {
    let me = addr(topology, node);
    let cluster = topology
        .placement
        .etcd
        .iter()
        .map(|n| format!("{n}=http://{}:{ETCD_PEER_PORT}", addr(topology, n)))
        .collect::<Vec<_>>()
        .join(",");
    let mut args = vec![
        format!("--name={node}"),
        format!("--data-dir={data_dir}"),
        format!("--listen-client-urls=http://{me}:{ETCD_CLIENT_PORT},http://127.0.0.1:{ETCD_CLIENT_PORT}"),
        format!("--advertise-client-urls=http://{me}:{ETCD_CLIENT_PORT}"),
        format!("--listen-peer-urls=http://{me}:{ETCD_PEER_PORT}"),
        format!("--initial-advertise-peer-urls=http://{me}:{ETCD_PEER_PORT}"),
        format!("--initial-cluster={cluster}"),
        "--initial-cluster-state=new".into(),
        format!("--initial-cluster-token=faultline-{}", topology.name),
        "--heartbeat-interval=100".into(),
        "--election-timeout=1000".into(),
        "--logger=zap".into(),
    ];
    if settings.dcs_api == DcsApi::Etcd2 {
        args.push("--enable-v2=true".into());
    }
    args
}

pub struct PatroniPaths<'a> {
    pub data_dir: &'a str,
    pub socket_dir: &'a str,
    pub pgpass: &'a str,
}

/// Patroni's YAML. Passwords are written only here (file mode 0600, owned by the postgres user).
pub fn patroni_yaml(
    topology: &Topology,
    settings: &StackSettings,
    node: &str,
    paths: &PatroniPaths,
    superuser_password: &str,
    replication_password: &str,
) -> String {
    let me = addr(topology, node);
    let hosts = topology
        .placement
        .etcd
        .iter()
        .map(|n| format!("{}:{ETCD_CLIENT_PORT}", addr(topology, n)))
        .collect::<Vec<_>>()
        .join(",");
    let dcs_section = match settings.dcs_api {
        DcsApi::Etcd2 => "etcd",
        DcsApi::Etcd3 => "etcd3",
    };
    let net = format!(
        "{}/{}",
        topology.network.host_addr, topology.network.prefix_len
    );
    let s = settings;
    format!(
        r#"scope: {scope}
namespace: /service/
name: {node}
log:
  level: INFO
  format: '%(asctime)s %(levelname)s: %(message)s'
restapi:
  listen: {me}:{PATRONI_PORT}
  connect_address: {me}:{PATRONI_PORT}
{dcs_section}:
  hosts: {hosts}
bootstrap:
  dcs:
    ttl: {ttl}
    loop_wait: {loop_wait}
    retry_timeout: {retry_timeout}
    maximum_lag_on_failover: 1048576
    primary_stop_timeout: {stop}
    synchronous_mode: {sync}
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: 'on'
        wal_log_hints: 'on'
        max_wal_senders: 10
        max_replication_slots: 10
        wal_sender_timeout: {wal_sender_timeout}
        wal_keep_size: 128MB
  initdb:
    - encoding: UTF8
    - data-checksums
postgresql:
  listen: {me}:{POSTGRES_PORT}
  connect_address: {me}:{POSTGRES_PORT}
  data_dir: {data_dir}
  bin_dir: {bin_dir}
  pgpass: {pgpass}
  authentication:
    superuser:
      username: postgres
      password: '{superuser_password}'
    replication:
      username: replicator
      password: '{replication_password}'
  parameters:
    unix_socket_directories: '{socket_dir}'
  pg_hba:
    - local all all trust
    - host replication replicator {net} scram-sha-256
    - host all all {net} scram-sha-256
tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
"#,
        scope = s.patroni_scope,
        ttl = s.ttl,
        loop_wait = s.loop_wait,
        retry_timeout = s.retry_timeout,
        stop = s.primary_stop_timeout,
        sync = s.synchronous_mode,
        wal_sender_timeout = s.wal_sender_timeout,
        data_dir = paths.data_dir,
        bin_dir = s.pg_bin_dir.display(),
        pgpass = paths.pgpass,
        socket_dir = paths.socket_dir,
    )
}

/// redis.conf for one member; `replica_of` = the current master (None for the first master at stack start).
pub fn redis_conf(me: Ipv4Addr, data_dir: &str, replica_of: Option<Ipv4Addr>) -> String {
    let mut c = format!(
        "bind {me} 127.0.0.1\nport {REDIS_PORT}\nprotected-mode no\ndaemonize no\ndir {data_dir}\nsave \"\"\nappendonly no\nlogfile \"\"\nrepl-diskless-sync yes\nrepl-diskless-sync-delay 0\nreplica-announce-ip {me}\n"
    );
    if let Some(m) = replica_of {
        c += &format!("replicaof {m} {REDIS_PORT}\n");
    }
    c
}

pub fn sentinel_conf(
    settings: &StackSettings,
    me: Ipv4Addr,
    data_dir: &str,
    master: Ipv4Addr,
) -> String {
    let name = &settings.sentinel_master_name;
    format!(
        "bind {me} 127.0.0.1\nport {SENTINEL_PORT}\nprotected-mode no\ndaemonize no\ndir {data_dir}\nlogfile \"\"\nsentinel announce-ip {me}\nsentinel monitor {name} {master} {REDIS_PORT} {quorum}\nsentinel down-after-milliseconds {name} {down}\nsentinel failover-timeout {name} {fto}\nsentinel parallel-syncs {name} 1\n",
        quorum = settings.sentinel_quorum,
        down = settings.sentinel_down_after_ms,
        fto = settings.sentinel_failover_timeout_ms,
    )
}
