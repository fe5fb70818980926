//! The local target: nodes are network namespaces on a bridge, each running real etcd, Patroni/PostgreSQL, Redis
//! and Sentinel processes from the distribution's packages, and Qdrant peers where a Qdrant executable is
//! available, each member in its own cgroup.

pub mod backups;
pub mod configs;
pub mod delay_agent;
pub mod lock;
pub mod netns;
pub mod nfqueue;
pub mod process;
pub mod qdrant_install;
pub mod rebuild;
pub mod restore_postgres;
pub mod restore_qdrant;
pub mod restore_redis;
pub mod roles;
pub mod router;
pub mod state;
mod target_impl;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use self::configs::*;
use self::process::Launch;
pub use self::state::{ProcessKind, QdrantPresence, StackState, StateDir};
use crate::component::postgres::{self, PostgresEndpoints};
use crate::component::qdrant::{self as qdrant_component, QdrantEndpoints, QdrantPeer};
use crate::component::redis::{self as redis_component, RedisEndpoints};
use crate::component::{http_client, Member};
use crate::scenario::ComponentKind;
use crate::settings::StackSettings;
use crate::targets::TargetError;
use crate::topology::Topology;

pub struct LocalStack {
    pub dir: StateDir,
    pub state: StackState,
    secrets: state::Secrets,
}

/// How `start_with` starts a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartHow<'a> {
    /// With its configuration generated from the live layout (an etcd member with data rejoins its cluster; one
    /// without data forms a new cluster with the live etcd nodes).
    Normal,
    /// Patroni bootstraps a new cluster with this command (a pgBackRest restore) when it wins the DCS
    /// `initialize` key.
    BootstrapFromBackup(&'a str),
    /// etcd joins the running cluster it was just added to (`--initial-cluster-state=existing`).
    JoinEtcd,
}

/// What `wait_healthy` found: the current primary/master of each component.
#[derive(Clone, Debug, Default)]
pub struct Health {
    pub postgres_leader: String,
    pub redis_master: String,
    /// The raft leader; None when the stack has no Qdrant.
    pub qdrant_leader: Option<String>,
}

impl Health {
    /// "postgres leader n1, redis master n2[, qdrant raft leader n3]".
    pub fn summary(&self) -> String {
        let mut s = format!(
            "postgres leader {}, redis master {}",
            self.postgres_leader, self.redis_master
        );
        if let Some(q) = &self.qdrant_leader {
            s += &format!(", qdrant raft leader {q}");
        }
        s
    }
}

fn env_err(msg: impl Into<String>) -> TargetError {
    TargetError::Environment(msg.into())
}

fn io_err(context: &str, e: impl std::fmt::Display) -> TargetError {
    TargetError::Environment(format!("{context}: {e}"))
}

/// Root (or CAP_NET_ADMIN + CAP_SYS_ADMIN), iproute2, nft, setpriv, a writable cgroup v2 hierarchy and the
/// stack's executables. Checked before anything is created.
pub fn preflight(settings: &StackSettings) -> Result<PathBuf, TargetError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(env_err(
            "the local stack needs root (network namespaces, bridges, nft rules and cgroups): run faultline with sudo",
        ));
    }
    let mut missing = Vec::new();
    for tool in ["ip", "nft", "setpriv"] {
        if which(tool).is_none() {
            missing.push(tool.to_string());
        }
    }
    for bin in [
        settings.etcd_bin.clone(),
        settings.patroni_bin.clone(),
        settings.redis_server_bin.clone(),
        settings.redis_sentinel_bin.clone(),
        settings.router.haproxy_bin.clone(),
        settings.router.pgbouncer_bin.clone(),
        settings.pg_bin_dir.join("pg_ctl"),
        settings.pg_bin_dir.join("initdb"),
    ] {
        if !bin.exists() {
            missing.push(bin.display().to_string());
        }
    }
    if !missing.is_empty() {
        return Err(env_err(format!(
            "missing: {}. Install the stack's packages with `sudo scripts/install-deps.sh` (or point the settings at your own binaries)",
            missing.join(", ")
        )));
    }
    if lookup_user(&settings.postgres_os_user).is_none() {
        return Err(env_err(format!(
            "OS user `{}` (PostgreSQL refuses to run as root) does not exist; install the postgresql package",
            settings.postgres_os_user
        )));
    }
    let cg =
        process::cgroup2_mount().ok_or_else(|| env_err("no cgroup v2 hierarchy is mounted"))?;
    let probe = cg.join("faultline");
    fs::create_dir_all(&probe)
        .map_err(|e| io_err(&format!("cannot create cgroup {}", probe.display()), e))?;
    if process::run("ip", &["netns", "list"]).is_err() {
        return Err(env_err(
            "`ip netns` does not work here (network namespaces unavailable)",
        ));
    }
    Ok(probe)
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .chain(
                ["/usr/sbin", "/sbin", "/usr/bin"]
                    .iter()
                    .map(|d| Path::new(d).join(tool)),
            )
            .find(|p| p.exists())
    })
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let c = CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer to static storage or null; read immediately.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: non-null pointer from getpwnam.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

fn chown(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: valid C string path.
    if unsafe { libc::chown(c.as_ptr(), uid, gid) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl LocalStack {
    /// The stack recorded in the state directory, if any.
    pub fn open(dir: StateDir) -> Result<Option<LocalStack>, TargetError> {
        dir.check_ownership().map_err(env_err)?;
        let Some(state) = dir.load().map_err(env_err)? else {
            return Ok(None);
        };
        let secrets = dir
            .load_or_create_secrets()
            .map_err(|e| io_err("cannot read the stack's secrets", e))?;
        Ok(Some(LocalStack {
            dir,
            state,
            secrets,
        }))
    }

    pub fn topology(&self) -> &Topology {
        &self.state.topology
    }

    pub fn settings(&self) -> &StackSettings {
        &self.state.settings
    }

    /// The nodes a `destroy` fault removed and that have not been rebuilt yet.
    pub fn lost_nodes(&self) -> BTreeSet<String> {
        self.dir.lost_nodes()
    }

    /// The layout that exists now: the topology's placement without the lost nodes. Health, endpoints, restores
    /// and every new configuration follow it, so after a region is destroyed the stack is the surviving region
    /// (an etcd started now forms its cluster from the surviving etcd nodes).
    pub fn live_topology(&self) -> Topology {
        let lost = self.lost_nodes();
        let mut t = self.topology().clone();
        if lost.is_empty() {
            return t;
        }
        let p = &mut t.placement;
        for list in [
            &mut p.etcd,
            &mut p.postgres,
            &mut p.redis,
            &mut p.sentinel,
            &mut p.qdrant,
        ] {
            list.retain(|n| !lost.contains(n));
        }
        if lost.contains(&p.backup) {
            p.backup.clear();
        }
        t
    }

    /// Brings the stack up from nothing (or finds it already up and healthy). State is recorded before anything
    /// is created so `down` can clean up after a crash at any point.
    pub async fn up(
        dir: StateDir,
        topology: Topology,
        settings: StackSettings,
    ) -> Result<LocalStack, TargetError> {
        let cg_base = preflight(&settings)?;
        dir.check_ownership().map_err(env_err)?;
        if let Some(existing) = LocalStack::open(dir.clone())? {
            if existing.state.topology.name != topology.name {
                return Err(env_err(format!(
                    "a stack with topology `{}` is already recorded in {}; run `faultline down` first",
                    existing.state.topology.name,
                    dir.root.display()
                )));
            }
            let lost = existing.lost_nodes();
            if !lost.is_empty() {
                // Its survivors may pass a health check; the stack is still not the one the topology describes.
                return Err(env_err(format!(
                    "nodes {} of the stack in {} are lost (destroyed by a run that did not finish); run `faultline \
                     recover` to rebuild them (or `faultline down`)",
                    lost.into_iter().collect::<Vec<_>>().join(", "),
                    dir.root.display()
                )));
            }
            if existing.any_process_running() {
                if existing.wait_healthy(Duration::from_secs(5)).await.is_ok() {
                    return Ok(existing);
                }
                return Err(env_err(format!(
                    "the stack in {} is running but not healthy; run `faultline down` (or `faultline recover`) first",
                    dir.root.display()
                )));
            }
            LocalStack::down(dir.clone()).await?;
        }
        let qdrant = qdrant_install::locate(&settings, &dir).await?;
        let state = StackState {
            owner: state::OWNER.into(),
            created_at: crate::clock::rfc3339_millis(std::time::SystemTime::now()),
            cgroup_root: cg_base.join(&topology.name),
            topology,
            settings,
            qdrant,
        };
        dir.save(&state)
            .map_err(|e| io_err("cannot write the stack state", e))?;
        let secrets = dir
            .load_or_create_secrets()
            .map_err(|e| io_err("cannot write the stack's secrets", e))?;
        let stack = LocalStack {
            dir,
            state,
            secrets,
        };
        stack.create().await?;
        Ok(stack)
    }

    async fn create(&self) -> Result<(), TargetError> {
        let t = self.topology();
        netns::create_network(t).map_err(|e| io_err("cannot create the node network", e))?;
        let (uid, gid) =
            lookup_user(&self.settings().postgres_os_user).expect("checked in preflight");
        for (node, kind) in self.members() {
            let d = self.dir.member_dir(&node, kind);
            fs::create_dir_all(&d).map_err(|e| io_err("cannot create member directory", e))?;
            fs::create_dir_all(self.cgroup(&node, kind))
                .map_err(|e| io_err("cannot create cgroup", e))?;
            if kind == ProcessKind::Patroni {
                fs::create_dir_all(d.join("run")).map_err(|e| io_err("mkdir", e))?;
                for p in [d.clone(), d.join("run")] {
                    chown(&p, uid, gid).map_err(|e| io_err("chown", e))?;
                }
            }
        }
        self.write_backup_pki()?;
        let etcd_nodes = t.placement.etcd.clone();
        for n in &etcd_nodes {
            self.start(n, ProcessKind::Etcd, None)?;
        }
        // The repository host listens before any primary tries to archive.
        for n in self.pgbackrest_nodes() {
            self.start(&n, ProcessKind::Pgbackrest, None)?;
        }
        let http = http_client(Duration::from_millis(500));
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &etcd_nodes {
            let addr = self.addr(n);
            loop {
                let ok = match http
                    .get(format!("http://{addr}:{ETCD_CLIENT_PORT}/health"))
                    .send()
                    .await
                {
                    Ok(r) => r.status().is_success(),
                    Err(_) => false,
                };
                if ok {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(env_err(format!(
                        "etcd on {n} did not become healthy within 20 s; see {}",
                        self.dir.log_file(n, ProcessKind::Etcd).display()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        for n in t.placement.postgres.clone() {
            self.start(&n, ProcessKind::Patroni, None)?;
        }
        let first_master = self.addr(&t.placement.redis[0]);
        for (i, n) in t.placement.redis.iter().enumerate() {
            self.start(n, ProcessKind::Redis, (i > 0).then_some(first_master))?;
        }
        for n in &t.placement.sentinel {
            self.start(n, ProcessKind::Sentinel, Some(first_master))?;
        }
        for n in &t.placement.router {
            self.start(n, ProcessKind::Haproxy, None)?;
            self.start(n, ProcessKind::Pgbouncer, None)?;
        }
        if self.state.qdrant.is_present() {
            self.start_qdrant_cluster().await?;
        }
        self.wait_healthy(Duration::from_secs(60))
            .await
            .map_err(|e| {
                env_err(format!(
                    "the stack did not become healthy within 60 s: {e} (logs under {})",
                    self.dir.root.join("nodes").display()
                ))
            })?;
        self.init_backups().await.map_err(|e| {
            env_err(format!(
                "the stack is up but its backups are not working: {e} (pgBackRest logs under {})",
                self.dir.root.join("nodes/*/pgbackrest/logs").display()
            ))
        })?;
        Ok(())
    }

    /// Qdrant peers (HA-FACTS): the first with its own URI, wait until it answers /healthz, then the others
    /// bootstrapping from it, then /readyz on every peer.
    async fn start_qdrant_cluster(&self) -> Result<(), TargetError> {
        let peers = self.topology().placement.qdrant.clone();
        let Some(first) = peers.first() else {
            return Ok(());
        };
        let first_addr = self.addr(first);
        self.start(first, ProcessKind::Qdrant, None)?;
        self.wait_qdrant_endpoint(first, "/healthz", Duration::from_secs(30))
            .await?;
        for n in &peers[1..] {
            self.start(n, ProcessKind::Qdrant, Some(first_addr))?;
        }
        for n in &peers {
            self.wait_qdrant_endpoint(n, "/readyz", Duration::from_secs(60))
                .await?;
        }
        Ok(())
    }

    pub(super) async fn wait_qdrant_endpoint(
        &self,
        node: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<(), TargetError> {
        let http = http_client(Duration::from_millis(500));
        let url = format!("http://{}:{QDRANT_REST_PORT}{path}", self.addr(node));
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(env_err(format!(
                    "qdrant on {node} did not answer {path} within {} s; see {}",
                    timeout.as_secs(),
                    self.dir.log_file(node, ProcessKind::Qdrant).display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Refuses, before anything is applied, a scenario that needs a component this stack does not run.
    pub fn check_components(&self, needed: &[ComponentKind]) -> Result<(), TargetError> {
        if needed.contains(&ComponentKind::Qdrant) {
            if let QdrantPresence::Absent { reason } = &self.state.qdrant {
                return Err(env_err(format!(
                    "this scenario needs Qdrant, which the stack does not run: {reason}"
                )));
            }
            if self.topology().placement.qdrant.is_empty() {
                return Err(env_err(
                    "this scenario needs Qdrant, but the topology places no qdrant peer",
                ));
            }
        }
        Ok(())
    }

    /// (node, process) for every member the topology places, in a stable order. Qdrant peers only when the
    /// stack runs Qdrant.
    pub fn members(&self) -> Vec<(String, ProcessKind)> {
        let p = &self.topology().placement;
        let no_qdrant = Vec::new();
        let qdrant = if self.state.qdrant.is_present() {
            &p.qdrant
        } else {
            &no_qdrant
        };
        let mut v = Vec::new();
        let pgbackrest = self.pgbackrest_nodes();
        for (kind, nodes) in [
            (ProcessKind::Etcd, &p.etcd),
            (ProcessKind::Pgbackrest, &pgbackrest),
            (ProcessKind::Patroni, &p.postgres),
            (ProcessKind::Redis, &p.redis),
            (ProcessKind::Sentinel, &p.sentinel),
            (ProcessKind::Qdrant, qdrant),
            (ProcessKind::Haproxy, &p.router),
            (ProcessKind::Pgbouncer, &p.router),
        ] {
            for n in nodes {
                v.push((n.clone(), kind));
            }
        }
        v
    }

    pub fn members_on(&self, node: &str) -> Vec<ProcessKind> {
        self.members()
            .into_iter()
            .filter(|(n, _)| n == node)
            .map(|(_, k)| k)
            .collect()
    }

    pub fn addr(&self, node: &str) -> Ipv4Addr {
        self.topology()
            .node(node)
            .map(|n| n.addr)
            .expect("node from the topology")
    }

    pub fn cgroup(&self, node: &str, kind: ProcessKind) -> PathBuf {
        self.state.cgroup_root.join(node).join(kind.name())
    }

    pub fn pids(&self, node: &str, kind: ProcessKind) -> Vec<i32> {
        process::cgroup_pids(&self.cgroup(node, kind))
    }

    pub fn any_process_running(&self) -> bool {
        self.members()
            .iter()
            .any(|(n, k)| !self.pids(n, *k).is_empty())
    }

    /// Starts one member with a freshly generated configuration. `master` is the Redis master to replicate
    /// (Redis), the master to monitor (Sentinel), or the peer to bootstrap from (Qdrant; None = the first peer of
    /// a new cluster); ignored for etcd and Patroni.
    pub fn start(
        &self,
        node: &str,
        kind: ProcessKind,
        master: Option<Ipv4Addr>,
    ) -> Result<u32, TargetError> {
        self.start_with(node, kind, master, StartHow::Normal)
    }

    /// `start`, with a way of starting other than the usual one (see `StartHow`).
    pub fn start_with(
        &self,
        node: &str,
        kind: ProcessKind,
        master: Option<Ipv4Addr>,
        how: StartHow,
    ) -> Result<u32, TargetError> {
        let bootstrap_from_backup = match how {
            StartHow::BootstrapFromBackup(cmd) => Some(cmd),
            _ => None,
        };
        let live = self.live_topology();
        let t = &live;
        let s = self.settings();
        let dir = self.dir.member_dir(node, kind);
        let data = dir.join("data");
        let config = dir.join(config_file_name(kind));
        let log = self.dir.log_file(node, kind);
        let cgroup = self.cgroup(node, kind);
        fs::create_dir_all(&cgroup).map_err(|e| io_err("cannot create cgroup", e))?;
        let ns = t.namespace(node);
        let me = self.addr(node);
        let data_s = data.display().to_string();
        let mut env: Vec<(&str, &str)> = Vec::new();
        let (program, args, user): (PathBuf, Vec<String>, Option<&str>) = match kind {
            ProcessKind::Etcd => (
                s.etcd_bin.clone(),
                etcd_args(t, s, node, &data_s, how == StartHow::JoinEtcd),
                None,
            ),
            ProcessKind::Patroni => {
                let run = dir.join("run").display().to_string();
                let pgpass = dir.join("pgpass").display().to_string();
                let archive = self.archive_settings(node);
                let yaml = patroni_yaml(
                    t,
                    s,
                    node,
                    &PatroniPaths {
                        data_dir: &data_s,
                        socket_dir: &run,
                        pgpass: &pgpass,
                        archive: archive.as_deref(),
                        bootstrap_from_backup,
                    },
                    self.secrets.postgres_superuser.expose(),
                    self.secrets.postgres_replication.expose(),
                );
                state::write_atomic(&config, yaml.as_bytes(), 0o600)
                    .map_err(|e| io_err("cannot write patroni config", e))?;
                let (uid, gid) = lookup_user(&s.postgres_os_user).expect("checked in preflight");
                chown(&config, uid, gid).map_err(|e| io_err("chown", e))?;
                let cfg = config.display().to_string();
                match &s.patroni_python {
                    Some(py) => (
                        py.clone(),
                        vec![s.patroni_bin.display().to_string(), cfg],
                        Some(s.postgres_os_user.as_str()),
                    ),
                    None => (
                        s.patroni_bin.clone(),
                        vec![cfg],
                        Some(s.postgres_os_user.as_str()),
                    ),
                }
            }
            ProcessKind::Redis => {
                fs::create_dir_all(&data).map_err(|e| io_err("mkdir", e))?;
                let replica_of = master.filter(|m| *m != me);
                fs::write(&config, redis_conf(me, &data_s, replica_of))
                    .map_err(|e| io_err("cannot write redis config", e))?;
                (
                    s.redis_server_bin.clone(),
                    vec![config.display().to_string()],
                    None,
                )
            }
            ProcessKind::Sentinel => {
                fs::create_dir_all(&data).map_err(|e| io_err("mkdir", e))?;
                let first = t.placement.redis.first();
                let m = master.unwrap_or_else(|| {
                    self.addr(first.unwrap_or(&self.topology().placement.redis[0]))
                });
                // A surviving region may hold fewer sentinels than the quorum: the quorum follows, or they could
                // never agree that the master failed.
                let quorum = s
                    .sentinel_quorum
                    .min(t.placement.sentinel.len().max(1) as u32);
                fs::write(&config, sentinel_conf(s, me, &data_s, m, quorum))
                    .map_err(|e| io_err("cannot write sentinel config", e))?;
                (
                    s.redis_sentinel_bin.clone(),
                    vec![config.display().to_string()],
                    None,
                )
            }
            ProcessKind::Pgbackrest => {
                self.write_pgbackrest_confs(node)?;
                (
                    s.backup.pgbackrest_bin.clone(),
                    self.pgbackrest_server_args(node),
                    Some(s.postgres_os_user.as_str()),
                )
            }
            ProcessKind::Haproxy => {
                fs::write(&config, router::haproxy_cfg(t, &s.router, node))
                    .map_err(|e| io_err("cannot write haproxy config", e))?;
                (
                    s.router.haproxy_bin.clone(),
                    vec![
                        "-W".into(),
                        "-db".into(),
                        "-f".into(),
                        config.display().to_string(),
                    ],
                    None,
                )
            }
            ProcessKind::Pgbouncer => {
                // PgBouncer refuses to run as root: the postgres user, with its auth file readable by it alone.
                let (uid, gid) = lookup_user(&s.postgres_os_user).expect("checked in preflight");
                let userlist = dir.join("userlist.txt");
                state::write_atomic(
                    &userlist,
                    router::pgbouncer_userlist(
                        "postgres",
                        self.secrets.postgres_superuser.expose(),
                    )
                    .as_bytes(),
                    0o600,
                )
                .map_err(|e| io_err("cannot write pgbouncer's auth file", e))?;
                fs::write(
                    &config,
                    router::pgbouncer_ini(t, node, &userlist.display().to_string()),
                )
                .map_err(|e| io_err("cannot write pgbouncer config", e))?;
                for f in [&dir, &userlist, &config] {
                    chown(f, uid, gid).map_err(|e| io_err("chown", e))?;
                }
                (
                    s.router.pgbouncer_bin.clone(),
                    vec![config.display().to_string()],
                    Some(s.postgres_os_user.as_str()),
                )
            }
            ProcessKind::Qdrant => {
                let QdrantPresence::Present { bin, .. } = &self.state.qdrant else {
                    return Err(env_err(format!(
                        "qdrant on {node}: the stack has no Qdrant executable"
                    )));
                };
                fs::create_dir_all(&data).map_err(|e| io_err("mkdir", e))?;
                fs::write(&config, qdrant_config(&data_s))
                    .map_err(|e| io_err("cannot write qdrant config", e))?;
                env.push(("QDRANT__TELEMETRY_DISABLED", "true"));
                (
                    bin.clone(),
                    qdrant_args(&config.display().to_string(), me, master),
                    None,
                )
            }
        };
        process::launch(&Launch {
            namespace: &ns,
            cgroup: &cgroup,
            user,
            program: &program,
            args,
            log: &log,
            workdir: &dir,
            env: &env,
        })
        .map_err(|e| io_err(&format!("cannot start {} on {node}", kind.name()), e))
    }

    /// Restarts a member that is not running, the way an operator would bring it back: Redis as a replica of the
    /// master the sentinels agree on, Sentinel monitoring that master, a Qdrant peer into the running cluster
    /// (bootstrapping from a peer whose process runs; with its existing data it rejoins as the same peer).
    pub async fn restart(&self, node: &str, kind: ProcessKind) -> Result<(), TargetError> {
        if !self.pids(node, kind).is_empty() {
            return Ok(());
        }
        let master = match kind {
            ProcessKind::Redis | ProcessKind::Sentinel => {
                let ep = self.redis_endpoints();
                match redis_component::agreed_master(&ep).await {
                    Some(n) => Some(self.addr(&n)),
                    None => redis_component::discover_master(&ep, Duration::from_millis(500))
                        .await
                        .ok()
                        .map(|m| m.addr),
                }
            }
            ProcessKind::Qdrant => self
                .topology()
                .placement
                .qdrant
                .iter()
                .find(|n| *n != node && !self.pids(n, ProcessKind::Qdrant).is_empty())
                .map(|n| self.addr(n)),
            _ => None,
        };
        self.start(node, kind, master)?;
        Ok(())
    }

    pub fn kill(&self, node: &str, kind: ProcessKind) {
        process::kill_cgroup(&self.cgroup(node, kind));
    }

    pub fn signal(&self, node: &str, kind: ProcessKind, signal: i32) -> usize {
        process::signal_cgroup(&self.cgroup(node, kind), signal)
    }

    pub fn wait_gone(&self, node: &str, kind: ProcessKind, timeout: Duration) -> bool {
        process::wait_cgroup_empty(&self.cgroup(node, kind), timeout)
    }

    pub fn postgres_endpoints(&self) -> PostgresEndpoints {
        let t = &self.live_topology();
        PostgresEndpoints {
            members: t
                .placement
                .postgres
                .iter()
                .map(|n| Member::local(n.clone(), self.addr(n)))
                .collect(),
            etcd: t.placement.etcd.iter().map(|n| self.addr(n)).collect(),
            etcd_port: postgres::ETCD_PORT,
            scope: self.settings().patroni_scope.clone(),
            dcs_api: self.settings().dcs_api,
            user: "postgres".into(),
            password: self.secrets.postgres_superuser.clone(),
            client_via: None,
            routers: Vec::new(),
        }
    }

    pub fn redis_endpoints(&self) -> RedisEndpoints {
        let t = &self.live_topology();
        let m = |nodes: &[String]| {
            nodes
                .iter()
                .map(|n| Member::local(n.clone(), self.addr(n)))
                .collect()
        };
        RedisEndpoints {
            members: m(&t.placement.redis),
            sentinels: m(&t.placement.sentinel),
            master_name: self.settings().sentinel_master_name.clone(),
        }
    }

    /// Every member's configuration files as written (`config`, `config.yaml`, pgBackRest's `*.conf`), named
    /// `<node>/<process>/<file>`.
    pub fn member_config_files(&self) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        let mut members = self.members();
        for n in self.pgbackrest_nodes() {
            if !members.contains(&(n.clone(), ProcessKind::Pgbackrest)) {
                members.push((n, ProcessKind::Pgbackrest));
            }
        }
        for (node, kind) in members {
            let dir = self.dir.member_dir(&node, kind);
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            let name_of = |p: &PathBuf| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            let mut files: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .filter(|p| {
                    let name = name_of(p);
                    name == config_file_name(kind) || name.ends_with(".conf")
                })
                .collect();
            files.sort();
            for p in files {
                out.push((format!("{node}/{}/{}", kind.name(), name_of(&p)), p));
            }
        }
        out
    }

    /// Every credential of the stack (passwords, the repository's passphrase).
    pub fn secret_values(&self) -> Vec<crate::secret::Secret> {
        let s = &self.secrets;
        [
            Some(s.postgres_superuser.clone()),
            Some(s.postgres_replication.clone()),
            s.backup_cipher.clone(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    pub fn qdrant_endpoints(&self) -> QdrantEndpoints {
        let s = self.settings();
        QdrantEndpoints {
            peers: self
                .live_topology()
                .placement
                .qdrant
                .iter()
                .map(|n| QdrantPeer::standard(n.clone(), self.addr(n)))
                .collect(),
            collection: s.qdrant_collection_spec(),
            seed: s.qdrant_seed,
        }
    }

    /// The node currently holding the role, by the servers' own view (DCS leader key; sentinel majority; the
    /// raft leader a majority of Qdrant peers name).
    pub async fn role_holder(&self, component: ComponentKind) -> Option<String> {
        match component {
            ComponentKind::Postgres => postgres::current_leader(&self.postgres_endpoints()).await,
            ComponentKind::Redis => redis_component::agreed_master(&self.redis_endpoints()).await,
            ComponentKind::Qdrant if self.state.qdrant.is_present() => {
                qdrant_component::raft_leader(&self.qdrant_endpoints()).await
            }
            ComponentKind::Qdrant => None,
        }
    }

    pub(super) async fn etcd_health(&self) -> Result<(), String> {
        let http = http_client(Duration::from_millis(800));
        for n in &self.live_topology().placement.etcd {
            let addr = self.addr(n);
            let ok = match http
                .get(format!("http://{addr}:{ETCD_CLIENT_PORT}/health"))
                .send()
                .await
            {
                Ok(r) => r.text().await.map(|t| t.contains("true")).unwrap_or(false),
                Err(_) => false,
            };
            if !ok {
                return Err(format!("etcd on {n} is not healthy"));
            }
        }
        Ok(())
    }

    /// One health check of the whole stack: every process running and not stopped, every link up, etcd healthy,
    /// Patroni and Redis/Sentinel healthy by their own views, and (when the stack runs it) Qdrant: one raft
    /// leader and every replica of every shard Active on every peer.
    pub async fn health_once(&self) -> Result<Health, String> {
        let lost = self.lost_nodes();
        for (n, k) in self
            .members()
            .into_iter()
            .filter(|(n, _)| !lost.contains(n))
        {
            if self.pids(&n, k).is_empty() {
                return Err(format!("{} on {n} is not running", k.name()));
            }
            if !process::stopped_pids(&self.cgroup(&n, k)).is_empty() {
                return Err(format!("{} on {n} is stopped (paused)", k.name()));
            }
        }
        for node in self
            .topology()
            .nodes
            .iter()
            .filter(|n| !lost.contains(&n.name))
        {
            if !netns::link_is_up(self.topology(), &node.name) {
                return Err(format!("the link of {} is down", node.name));
            }
        }
        self.etcd_health().await?;
        let postgres_leader =
            postgres::health(&self.postgres_endpoints(), self.settings().synchronous_mode)
                .await
                .map_err(|e| format!("postgres: {e}"))?;
        self.router_health(&postgres_leader, &lost).await?;
        let redis_master = redis_component::health(&self.redis_endpoints())
            .await
            .map_err(|e| format!("redis: {e}"))?;
        let qdrant_leader = if self.state.qdrant.is_present() {
            Some(
                qdrant_component::health(&self.qdrant_endpoints())
                    .await
                    .map_err(|e| format!("qdrant: {e}"))?,
            )
        } else {
            None
        };
        Ok(Health {
            postgres_leader,
            redis_master,
            qdrant_leader,
        })
    }

    /// Every router's HAProxy sends read-write connections to the PostgreSQL leader and nowhere else (after a
    /// failover that takes `rise` checks: until then clients through the router cannot write).
    async fn router_health(&self, leader: &str, lost: &BTreeSet<String>) -> Result<(), String> {
        let http = http_client(Duration::from_secs(1));
        for n in self
            .topology()
            .placement
            .router
            .iter()
            .filter(|n| !lost.contains(*n))
        {
            let url = format!(
                "http://{}:{}/;csv",
                self.addr(n),
                router::HAPROXY_STATS_PORT
            );
            let csv = match http.get(&url).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(e) => {
                    return Err(format!(
                        "haproxy on {n}: its stats page does not answer: {e}"
                    ))
                }
            };
            let up = router::servers_up(&csv, router::RW_PROXY);
            if up != [leader] {
                return Err(format!(
                    "haproxy on {n} routes read-write connections to [{}], not to the leader {leader} alone",
                    up.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Polls `health_once` until it passes or the deadline; the error is the last reason it was unhealthy.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<Health, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.health_once().await {
                Ok(h) => return Ok(h),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// Tears the stack down: every cgroup killed and removed, namespaces and bridge deleted, data removed.
    /// Works from the state directory alone (after a crash of faultline too).
    pub async fn down(dir: StateDir) -> Result<Vec<String>, TargetError> {
        let Some(stack) = LocalStack::open(dir.clone())? else {
            return Ok(vec!["no stack is recorded in the state directory".into()]);
        };
        let mut notes = Vec::new();
        for (n, k) in stack.members() {
            let cg = stack.cgroup(&n, k);
            // A stopped process cannot die of SIGKILL until continued on some kernels' freezer paths: resume first.
            process::signal_cgroup(&cg, libc::SIGCONT);
            process::kill_cgroup(&cg);
        }
        // Operator commands (a backup or restore in progress when faultline died) go too.
        for node in &stack.topology().nodes {
            process::kill_cgroup(&stack.ops_cgroup(&node.name));
        }
        for (n, k) in stack.members() {
            if !stack.wait_gone(&n, k, Duration::from_secs(5)) {
                notes.push(format!("{} on {n} did not exit within 5 s", k.name()));
            }
        }
        process::remove_cgroup_tree(&stack.state.cgroup_root);
        // A latency fault's delay agents (left by a crash) would outlive their namespace; found by it, so first.
        for node in &stack.topology().nodes {
            delay_agent::stop(&stack.topology().namespace(&node.name), None);
        }
        notes.extend(netns::delete_network(stack.topology()));
        let _ = fs::remove_dir_all(dir.root.join("nodes"));
        let _ = fs::remove_file(dir.lost_nodes_file());
        crate::fault::journal::Journal::new(dir.journal_dir())
            .close_all("stack torn down by `faultline down`");
        dir.remove_state()
            .map_err(|e| io_err("cannot remove the state file", e))?;
        Ok(notes)
    }

    /// Versions and the HA settings in force, for the report's stack fingerprint.
    pub fn fingerprint(&self) -> serde_json::Value {
        let s = self.settings();
        let version = |bin: &Path, arg: &str| {
            std::process::Command::new(bin)
                .arg(arg)
                .output()
                .ok()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_string()
                })
                .unwrap_or_else(|| "unknown".into())
        };
        let mut versions = BTreeMap::new();
        versions.insert("patroni", version(&s.patroni_bin, "--version"));
        versions.insert(
            "postgres",
            version(&s.pg_bin_dir.join("postgres"), "--version"),
        );
        versions.insert("etcd", version(&s.etcd_bin, "--version"));
        versions.insert("redis", version(&s.redis_server_bin, "--version"));
        versions.insert("pgbackrest", version(&s.backup.pgbackrest_bin, "version"));
        let qdrant = match &self.state.qdrant {
            QdrantPresence::Present { bin, version } => {
                versions.insert("qdrant", version.clone());
                json!({"present": true, "bin": bin})
            }
            QdrantPresence::Absent { reason } => json!({"present": false, "reason": reason}),
        };
        json!({
            "target": "local",
            "topology": self.topology().name,
            "nodes": self.topology().nodes.iter().map(|n| json!({"name": n.name, "zone": n.zone, "region": n.region, "addr": n.addr.to_string()})).collect::<Vec<_>>(),
            "versions": versions,
            "settings": {
                "dcs_api": s.dcs_api,
                "patroni_bin": s.patroni_bin,
                "ttl": s.ttl,
                "loop_wait": s.loop_wait,
                "retry_timeout": s.retry_timeout,
                "primary_stop_timeout": s.primary_stop_timeout,
                "synchronous_mode": s.synchronous_mode,
                "wal_sender_timeout": s.wal_sender_timeout,
                "sentinel_quorum": s.sentinel_quorum,
                "sentinel_down_after_ms": s.sentinel_down_after_ms,
                "sentinel_failover_timeout_ms": s.sentinel_failover_timeout_ms,
                "qdrant_collection": s.qdrant_collection,
                "qdrant_vector_size": s.qdrant_vector_size,
                "qdrant_shard_number": s.qdrant_shard_number,
                "qdrant_replication_factor": s.qdrant_replication_factor,
                "qdrant_write_consistency_factor": s.qdrant_write_consistency_factor,
                "qdrant_seed": s.qdrant_seed,
                "backup": {
                    "node": self.backup_node(),
                    "repository": self.repository_label(),
                    "cipher": s.backup.cipher.name(),
                    "retention_full_days": s.backup.retention_full_days,
                    "archive_timeout": s.backup.archive_timeout,
                },
            },
            "qdrant": qdrant,
        })
    }
}

/// The file a member's generated configuration is written to. Qdrant reads `--config-path` through config-rs,
/// which takes the format from the extension and reports a file without one as "not found" (then starts with
/// cluster mode disabled); the others read any name.
pub fn config_file_name(kind: ProcessKind) -> &'static str {
    match kind {
        ProcessKind::Qdrant => QDRANT_CONFIG_FILE,
        _ => "config",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn stack(qdrant: QdrantPresence) -> LocalStack {
        let topology = crate::topology::parse_topology(
            "name: t\nnodes:\n  - {name: n1, zone: z1, region: r1}\n  - {name: n2, zone: z2, region: r1}\n  - {name: n3, zone: z3, region: r1}\n",
            Path::new("t.yaml"),
        )
        .unwrap();
        LocalStack {
            dir: StateDir::new("/nonexistent"),
            state: StackState {
                owner: state::OWNER.into(),
                created_at: String::new(),
                topology,
                settings: StackSettings::default(),
                cgroup_root: PathBuf::from("/nonexistent"),
                qdrant,
            },
            secrets: state::Secrets {
                postgres_superuser: Secret::new("x"),
                postgres_replication: Secret::new("y"),
                backup_cipher: None,
            },
        }
    }

    #[test]
    fn an_absent_qdrant_is_left_out_not_broken() {
        let s = stack(QdrantPresence::Absent {
            reason: "no executable".into(),
        });
        assert!(s.members().iter().all(|(_, k)| *k != ProcessKind::Qdrant));
        assert!(s
            .check_components(&[ComponentKind::Postgres, ComponentKind::Redis])
            .is_ok());
        let e = s
            .check_components(&[ComponentKind::Qdrant])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "this scenario needs Qdrant, which the stack does not run: no executable"
        );
        assert!(s.fingerprint()["qdrant"]["present"] == false);

        let s = stack(QdrantPresence::Present {
            bin: "/opt/qdrant".into(),
            version: "1.18.3".into(),
        });
        let peers: Vec<String> = s
            .members()
            .into_iter()
            .filter(|(_, k)| *k == ProcessKind::Qdrant)
            .map(|(n, _)| n)
            .collect();
        assert_eq!(peers, ["n1", "n2", "n3"]);
        assert!(s.check_components(&[ComponentKind::Qdrant]).is_ok());
        let ep = s.qdrant_endpoints();
        assert_eq!(ep.peers[1].p2p_uri(), "http://10.201.0.12:6335");
        assert_eq!(ep.collection.replication_factor, 2);
        assert_eq!(ep.collection.shard_number, 6);
    }

    #[test]
    fn a_state_file_from_before_qdrant_support_still_loads() {
        let mut v = serde_json::to_value(stack(QdrantPresence::default()).state).unwrap();
        v.as_object_mut().unwrap().remove("qdrant");
        v["topology"]["placement"]
            .as_object_mut()
            .unwrap()
            .remove("qdrant");
        for key in ["qdrant_bin", "qdrant_version", "qdrant_seed"] {
            v["settings"].as_object_mut().unwrap().remove(key);
        }
        let old: StackState = serde_json::from_value(v).unwrap();
        assert!(!old.qdrant.is_present());
        assert!(old.topology.placement.qdrant.is_empty());
    }

    #[tokio::test]
    async fn the_local_stack_refuses_kubernetes_revert_steps() {
        use crate::fault::RevertStep;
        use crate::targets::Target;
        let s = stack(QdrantPresence::Absent {
            reason: "not needed".into(),
        });
        for step in [
            RevertStep::KubeUncordon {
                node: "kind-worker".into(),
            },
            RevertStep::KubeDeleteNetworkChaos {
                namespace: "faultline".into(),
                name: "faultline-partition-p1".into(),
            },
        ] {
            assert!(step.is_kube());
            let err = Target::revert(&s, &[step]).await.unwrap_err();
            assert!(err.contains("belongs to a Kubernetes target"), "{err}");
        }
    }
}
