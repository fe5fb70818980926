//! Configuration generated for every member start (Redis and Sentinel rewrite theirs at run time: pitfall 8).

use std::net::Ipv4Addr;

use crate::settings::{DcsApi, StackSettings};
use crate::topology::Topology;

pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;
pub use crate::component::qdrant::{
    GRPC_PORT as QDRANT_GRPC_PORT, P2P_PORT as QDRANT_P2P_PORT, REST_PORT as QDRANT_REST_PORT,
};
/// The local stack serves every member on the standard ports, the ones `Member::local` gives clients.
pub use crate::component::{PATRONI_PORT, POSTGRES_PORT, REDIS_PORT, SENTINEL_PORT};

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
    join_existing: bool,
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
        format!(
            "--initial-cluster-state={}",
            if join_existing { "existing" } else { "new" }
        ),
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
    /// Continuous archiving: `postgresql.parameters` entries (None = no archive). No `restore_command` for the
    /// members: replicas stream. A standby that also read the archive was seen here stuck re-reading one archived
    /// segment after repeated failovers and rewinds; restores get theirs from pgBackRest.
    pub archive: Option<&'a [(&'static str, String)]>,
    /// Bootstrap a new cluster from a backup with this command (pgBackRest restore) instead of initdb.
    pub bootstrap_from_backup: Option<&'a str>,
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
    let mut archive = String::new();
    for (k, v) in paths.archive.unwrap_or_default() {
        archive += &format!("    {k}: {v}\n");
    }
    // A custom bootstrap (Patroni docs, "Building replicas" / "Bootstrap"): the command creates the data directory;
    // keep_existing_recovery_conf keeps pgBackRest's recovery target (Patroni would erase it otherwise);
    // no_params because pgBackRest takes no --scope/--datadir.
    let bootstrap_method = match paths.bootstrap_from_backup {
        Some(cmd) => format!(
            "  method: pgbackrest\n  pgbackrest:\n    command: '{}'\n    keep_existing_recovery_conf: true\n    no_params: true\n",
            cmd.replace('\'', "''")
        ),
        None => String::new(),
    };
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
{bootstrap_method}  dcs:
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
{archive}  pg_hba:
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
    quorum: u32,
) -> String {
    let name = &settings.sentinel_master_name;
    format!(
        "bind {me} 127.0.0.1\nport {SENTINEL_PORT}\nprotected-mode no\ndaemonize no\ndir {data_dir}\nlogfile \"\"\nsentinel announce-ip {me}\nsentinel monitor {name} {master} {REDIS_PORT} {quorum}\nsentinel down-after-milliseconds {name} {down}\nsentinel failover-timeout {name} {fto}\nsentinel parallel-syncs {name} 1\n",
        down = settings.sentinel_down_after_ms,
        fto = settings.sentinel_failover_timeout_ms,
    )
}

/// The name of a Qdrant peer's config file: config-rs (Qdrant's settings loader, src/settings.rs) picks the
/// format from the extension, so it must be one it knows.
pub const QDRANT_CONFIG_FILE: &str = "config.yaml";

/// Qdrant's config file for one peer: cluster mode, the three ports, storage under the member's directory,
/// consensus tick 100 ms (HA-FACTS), telemetry off (it would go to an outside host).
pub fn qdrant_config(data_dir: &str) -> String {
    format!(
        "log_level: INFO\nstorage:\n  storage_path: {data_dir}/storage\n  snapshots_path: {data_dir}/snapshots\n\
         service:\n  host: 0.0.0.0\n  http_port: {QDRANT_REST_PORT}\n  grpc_port: {QDRANT_GRPC_PORT}\n  enable_tls: false\n\
         cluster:\n  enabled: true\n  p2p:\n    port: {QDRANT_P2P_PORT}\n  consensus:\n    tick_period_ms: 100\n\
         telemetry_disabled: true\n"
    )
}

/// Qdrant's command line. The first peer of a new cluster gets only its own `--uri`; every other peer (and any
/// peer restarted into a running cluster) also `--bootstrap`s from a peer that is up.
pub fn qdrant_args(config: &str, me: Ipv4Addr, bootstrap: Option<Ipv4Addr>) -> Vec<String> {
    let mut args = vec![
        "--config-path".to_string(),
        config.to_string(),
        "--uri".to_string(),
        format!("http://{me}:{QDRANT_P2P_PORT}"),
        "--disable-telemetry".to_string(),
    ];
    if let Some(b) = bootstrap.filter(|b| *b != me) {
        args.push("--bootstrap".into());
        args.push(format!("http://{b}:{QDRANT_P2P_PORT}"));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defect this guards against: the config was written to a file named `config`; Qdrant 1.18.3 answered
    /// "Config file via --config-path is not found" and started with cluster mode disabled. config-rs resolves a
    /// name by its extension (yaml, yml, json, toml, ini, ron, json5).
    #[test]
    fn qdrant_gets_a_config_path_whose_extension_its_loader_reads() {
        let name = super::super::config_file_name(crate::targets::local::ProcessKind::Qdrant);
        let ext = std::path::Path::new(name)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        assert!(
            ["yaml", "yml"].contains(&ext),
            "qdrant's config file `{name}` needs a YAML extension"
        );
        let args = qdrant_args(&format!("/s/{name}"), Ipv4Addr::new(10, 201, 0, 11), None);
        assert_eq!(
            args[..2],
            ["--config-path".to_string(), format!("/s/{name}")]
        );
        // The content is YAML that turns cluster mode on.
        let c = qdrant_config("/s/data");
        assert!(c.contains("cluster:\n  enabled: true"), "{c}");
    }

    #[test]
    fn qdrant_peers_form_one_cluster() {
        let me = Ipv4Addr::new(10, 201, 0, 12);
        let first = Ipv4Addr::new(10, 201, 0, 11);
        let args = qdrant_args("/s/config.yaml", me, Some(first));
        assert_eq!(
            args,
            [
                "--config-path",
                "/s/config.yaml",
                "--uri",
                "http://10.201.0.12:6335",
                "--disable-telemetry",
                "--bootstrap",
                "http://10.201.0.11:6335"
            ]
        );
        assert!(!qdrant_args("c", first, Some(first)).contains(&"--bootstrap".to_string()));
        let c = qdrant_config("/s/data");
        for want in [
            "storage_path: /s/data/storage",
            "http_port: 6333",
            "grpc_port: 6334",
            "  enabled: true",
            "    port: 6335",
            "tick_period_ms: 100",
            "telemetry_disabled: true",
        ] {
            assert!(c.contains(want), "{want} missing in:\n{c}");
        }
    }
}
