//! Backups on the local stack: pgBackRest's TLS servers, the repository on the backup node, the PKI they share,
//! continuous WAL archiving, backups on demand, Redis RDB copies into the backup node's store, and the health
//! figures `faultline status` prints. What the configuration says lives in `crate::backup`; this file decides where
//! each piece runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{chown, io_err, lookup_user, process, state, LocalStack, ProcessKind};
use crate::backup::health::BackupHealth;
use crate::backup::pgbackrest::{self, NodeFiles, PgHost, RepoSecrets, StanzaInfo};
use crate::backup::qdrant_snapshots::{self, QdrantSnapshot};
use crate::backup::redis_rdb::{self, RdbBackup};
use crate::backup::{pki, BackupType};
use crate::component::postgres;
use crate::component::POSTGRES_PORT;
use crate::targets::TargetError;

/// How long a backup may take before it is stopped (a full backup of the test database takes seconds).
pub const BACKUP_TIMEOUT: Duration = Duration::from_secs(600);
const SHORT_COMMAND: Duration = Duration::from_secs(60);

/// What `faultline backup` made.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BackupsTaken {
    /// The pgBackRest backup's label.
    pub postgres: String,
    pub postgres_seconds: f64,
    #[serde(skip)]
    pub postgres_done: Option<std::time::Instant>,
    pub redis: RdbBackup,
    #[serde(skip)]
    pub redis_done: Option<std::time::Instant>,
    /// One snapshot per Qdrant peer (empty when the stack runs no Qdrant or the collection does not exist yet).
    pub qdrant: Vec<QdrantSnapshot>,
    #[serde(skip)]
    pub qdrant_done: Option<std::time::Instant>,
}

impl LocalStack {
    /// The backup node, when the stack has one (state files from before backups have none).
    pub fn backup_node(&self) -> Option<&str> {
        Some(self.topology().placement.backup.as_str()).filter(|n| !n.is_empty())
    }

    /// Nodes running `pgbackrest server`: every PostgreSQL node, then the backup node.
    pub fn pgbackrest_nodes(&self) -> Vec<String> {
        let Some(b) = self.backup_node() else {
            return Vec::new();
        };
        let mut v = self.topology().placement.postgres.clone();
        if !v.iter().any(|n| n == b) {
            v.push(b.to_string());
        }
        v
    }

    fn pgbackrest_dir(&self, node: &str) -> PathBuf {
        self.dir.member_dir(node, ProcessKind::Pgbackrest)
    }

    pub fn client_conf(&self, node: &str) -> PathBuf {
        self.pgbackrest_dir(node).join("client.conf")
    }

    pub fn repo_conf(&self) -> Option<PathBuf> {
        self.backup_node()
            .map(|b| self.pgbackrest_dir(b).join("repo.conf"))
    }

    fn server_conf(&self, node: &str) -> PathBuf {
        self.pgbackrest_dir(node).join("server.conf")
    }

    /// The repository directory on the backup node (unused when the repository is in S3).
    pub fn repo_path(&self) -> Option<PathBuf> {
        self.backup_node()
            .map(|b| self.pgbackrest_dir(b).join("repo"))
    }

    /// pgBackRest's own log files of a node (`<command>` logs per stanza).
    pub fn pgbackrest_log_dir(&self, node: &str) -> PathBuf {
        self.pgbackrest_dir(node).join("logs")
    }

    /// Where the repository is, for people: `n3:/path` or `s3://bucket/path`.
    pub fn repository_label(&self) -> String {
        match &self.settings().backup.s3 {
            Some(s3) => format!("s3://{}{}", s3.bucket, s3.path),
            None => format!(
                "{}:{}",
                self.backup_node().unwrap_or("-"),
                self.repo_path().unwrap_or_default().display()
            ),
        }
    }

    fn node_files(&self, node: &str) -> NodeFiles {
        let d = self.pgbackrest_dir(node);
        let s = |p: PathBuf| p.display().to_string();
        NodeFiles {
            log_path: s(d.join("logs")),
            lock_path: s(d.join("lock")),
            spool_path: s(d.join("spool")),
            ca_file: s(d.join("tls/ca.crt")),
            server_cert: s(d.join("tls/server.crt")),
            server_key: s(d.join("tls/server.key")),
            client_cert: s(d.join("tls/client.crt")),
            client_key: s(d.join("tls/client.key")),
        }
    }

    fn pg_host(&self, node: &str) -> PgHost {
        let d = self.dir.member_dir(node, ProcessKind::Patroni);
        PgHost {
            addr: self.addr(node),
            data_dir: d.join("data").display().to_string(),
            socket_dir: d.join("run").display().to_string(),
            port: POSTGRES_PORT,
        }
    }

    /// Patroni's archive parameters for a PostgreSQL node; None without a backup node.
    pub fn archive_settings(&self, node: &str) -> Option<Vec<(&'static str, String)>> {
        self.backup_node()?;
        let bin = self.settings().backup.pgbackrest_bin.display().to_string();
        let conf = self.client_conf(node).display().to_string();
        Some(pgbackrest::archive_parameters(
            &bin,
            &conf,
            &self.settings().backup,
        ))
    }

    fn repo_secrets(&self) -> Result<(String, Option<(String, String)>), TargetError> {
        let pass = self
            .secrets
            .backup_cipher
            .as_ref()
            .map(|s| s.expose().to_string())
            .unwrap_or_default();
        let s3 = match &self.settings().backup.s3 {
            None => None,
            Some(_) => {
                let key = std::env::var("FAULTLINE_S3_KEY").unwrap_or_default();
                let secret = std::env::var("FAULTLINE_S3_KEY_SECRET").unwrap_or_default();
                if key.is_empty() || secret.is_empty() {
                    return Err(super::env_err(
                        "settings put the backup repository in S3, but FAULTLINE_S3_KEY and FAULTLINE_S3_KEY_SECRET \
                         are not both set",
                    ));
                }
                Some((key, secret))
            }
        };
        Ok((pass, s3))
    }

    /// Generates the stack's CA and certificates into every pgBackRest node's `tls/` (keys 0600, owned by the
    /// PostgreSQL OS user), once at `up`.
    pub(super) fn write_backup_pki(&self) -> Result<(), TargetError> {
        let nodes = self.pgbackrest_nodes();
        if nodes.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = nodes.iter().map(|n| self.addr(n).to_string()).collect();
        let pki = pki::generate(&names).map_err(|e| io_err("cannot generate certificates", e))?;
        let (uid, gid) =
            lookup_user(&self.settings().postgres_os_user).expect("checked in preflight");
        for (node, (_, server)) in nodes.iter().zip(&pki.servers) {
            let d = self.pgbackrest_dir(node);
            for sub in ["tls", "logs", "lock", "spool"] {
                fs::create_dir_all(d.join(sub)).map_err(|e| io_err("mkdir", e))?;
            }
            let tls = d.join("tls");
            for (name, text, mode) in [
                ("ca.crt", &pki.ca_cert, 0o644),
                ("server.crt", &server.cert, 0o644),
                ("server.key", &server.key, 0o600),
                ("client.crt", &pki.client.cert, 0o644),
                ("client.key", &pki.client.key, 0o600),
            ] {
                state::write_atomic(&tls.join(name), text.as_bytes(), mode)
                    .map_err(|e| io_err("cannot write a certificate", e))?;
            }
            chown_tree(&d, uid, gid).map_err(|e| io_err("chown", e))?;
        }
        Ok(())
    }

    /// Writes a node's pgBackRest configuration files (fresh at every start, like every member's).
    pub(super) fn write_pgbackrest_confs(&self, node: &str) -> Result<(), TargetError> {
        let s = &self.settings().backup;
        let f = self.node_files(node);
        let (pass, s3) = self.repo_secrets()?;
        let secrets = RepoSecrets {
            cipher_pass: &pass,
            s3: s3.as_ref().map(|(k, v)| (k.as_str(), v.as_str())),
        };
        let repo_node = self.backup_node().expect("only called with a backup node");
        let repo_path = self.repo_path().expect("backup node").display().to_string();
        let (uid, gid) =
            lookup_user(&self.settings().postgres_os_user).expect("checked in preflight");
        let mut files = vec![(
            self.server_conf(node),
            pgbackrest::server_conf(&f, self.addr(node), &s.stanza),
        )];
        if self.topology().placement.postgres.iter().any(|n| n == node) {
            files.push((
                self.client_conf(node),
                pgbackrest::client_conf(
                    &f,
                    s,
                    self.addr(repo_node),
                    &repo_path,
                    &secrets,
                    &self.pg_host(node),
                ),
            ));
        }
        if node == repo_node {
            let pgs: Vec<PgHost> = self
                .topology()
                .placement
                .postgres
                .iter()
                .map(|n| self.pg_host(n))
                .collect();
            files.push((
                self.repo_conf().expect("backup node"),
                pgbackrest::repo_conf(&f, s, &repo_path, &secrets, &pgs),
            ));
            if s.s3.is_none() {
                fs::create_dir_all(&repo_path).map_err(|e| io_err("mkdir", e))?;
                chown(Path::new(&repo_path), uid, gid).map_err(|e| io_err("chown", e))?;
            }
        }
        for (path, text) in files {
            state::write_atomic(&path, text.as_bytes(), 0o600)
                .map_err(|e| io_err("cannot write a pgbackrest config", e))?;
            chown(&path, uid, gid).map_err(|e| io_err("chown", e))?;
        }
        Ok(())
    }

    /// The command line that starts a node's `pgbackrest server`.
    pub(super) fn pgbackrest_server_args(&self, node: &str) -> Vec<String> {
        vec![
            format!("--config={}", self.server_conf(node).display()),
            "server".into(),
        ]
    }

    /// The cgroup operator commands (backups, restores) of a node run in.
    pub fn ops_cgroup(&self, node: &str) -> PathBuf {
        self.state.cgroup_root.join(node).join("ops")
    }

    /// Runs pgBackRest on a node as the PostgreSQL OS user with the given configuration file.
    pub async fn pgbackrest(
        &self,
        node: &str,
        conf: &Path,
        args: &[&str],
        timeout: Duration,
    ) -> Result<String, String> {
        let mut all = vec![
            format!("--config={}", conf.display()),
            format!("--stanza={}", self.settings().backup.stanza),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let out = process::run_operator_command(
            &self.topology().namespace(node),
            &self.ops_cgroup(node),
            Some(&self.settings().postgres_os_user),
            &self.settings().backup.pgbackrest_bin,
            &all,
            timeout,
        )
        .await;
        let redact = |t: String| match &self.secrets.backup_cipher {
            Some(s) => s.redact(&t),
            None => t,
        };
        out.map(redact).map_err(redact)
    }

    /// On the repository host, with the repository configuration.
    async fn on_repository(&self, args: &[&str], timeout: Duration) -> Result<String, String> {
        let (Some(node), Some(conf)) = (self.backup_node(), self.repo_conf()) else {
            return Err("this stack has no backup node (it was brought up before backups were part of the stack; \
                        run `faultline down` and `faultline up`)"
                .into());
        };
        self.pgbackrest(node, &conf, args, timeout).await
    }

    /// Creates the stanza and proves WAL reaches the repository (`check` forces a segment switch and waits for
    /// it to be archived). Part of `up`; harmless to repeat.
    pub async fn init_backups(&self) -> Result<(), String> {
        if self.backup_node().is_none() {
            return Ok(());
        }
        self.on_repository(&["stanza-create"], SHORT_COMMAND)
            .await
            .map_err(|e| format!("pgbackrest stanza-create: {e}"))?;
        self.on_repository(&["check"], SHORT_COMMAND)
            .await
            .map_err(|e| format!("pgbackrest check (is WAL archiving working?): {e}"))?;
        // archive-push failed until the stanza existed; the archive is proven working now, so the archiver's
        // failure count starts from here and counts only failures that matter.
        postgres::reset_archiver_stats(&self.postgres_endpoints()).await?;
        Ok(())
    }

    /// Takes a pgBackRest backup of the cluster (from the primary) and returns its label.
    pub async fn backup_postgres(&self, kind: BackupType) -> Result<String, String> {
        let before = self.repo_info().await.ok();
        self.on_repository(
            &[&format!("--type={}", kind.name()), "backup"],
            BACKUP_TIMEOUT,
        )
        .await
        .map_err(|e| format!("pgbackrest backup: {e}"))?;
        let info = self.repo_info().await?;
        let newest = info
            .newest_backup()
            .ok_or("pgbackrest backup finished, yet the repository lists no complete backup")?;
        let was = before
            .as_ref()
            .and_then(|b| b.newest_backup())
            .map(|b| b.label.clone());
        if was.as_deref() == Some(newest.label.as_str()) {
            return Err(format!(
                "pgbackrest backup finished, yet the newest backup is still {}",
                newest.label
            ));
        }
        Ok(newest.label.clone())
    }

    /// The primary's `pg_stat_archiver`, within `bound`.
    pub async fn archiver_status(
        &self,
        bound: Duration,
    ) -> Result<postgres::ArchiverStatus, String> {
        tokio::time::timeout(bound, postgres::archiver_status(&self.postgres_endpoints()))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "the primary did not answer within {} s",
                    bound.as_secs()
                ))
            })
    }

    pub async fn repo_info(&self) -> Result<StanzaInfo, String> {
        let json = self
            .on_repository(&["--output=json", "info"], SHORT_COMMAND)
            .await?;
        pgbackrest::parse_info(&json, &self.settings().backup.stanza)
    }

    /// BGSAVE on the Redis master, copied into the backup node's store.
    pub async fn backup_redis(&self) -> Result<RdbBackup, String> {
        let store_node = self.backup_node().ok_or("this stack has no backup node")?;
        let ep = self.redis_endpoints();
        let master = crate::component::redis::discover_master(&ep, Duration::from_secs(5)).await?;
        let (taken_at, keys) = redis_rdb::bgsave(&master, SHORT_COMMAND).await?;
        let dump = self
            .dir
            .member_dir(&master.node, ProcessKind::Redis)
            .join("data/dump.rdb");
        redis_rdb::store(
            &dump,
            &self.dir.backup_store(store_node).join("redis"),
            &master.node,
            taken_at,
            keys,
        )
        .map_err(|e| format!("cannot copy {} into the backup store: {e}", dump.display()))
    }

    /// Every Redis RDB copy in the backup node's store, oldest first.
    pub fn redis_backups(&self) -> Vec<(PathBuf, RdbBackup)> {
        match self.backup_node() {
            Some(n) => redis_rdb::list(&self.dir.backup_store(n).join("redis")),
            None => Vec::new(),
        }
    }

    /// A snapshot of the harness's collection on every live Qdrant peer, copied into the backup store as one
    /// set. Nothing (and no error) when the stack runs no Qdrant or the collection does not exist yet.
    pub async fn backup_qdrant(&self) -> Result<Vec<QdrantSnapshot>, String> {
        let Some(store_node) = self.backup_node() else {
            return Ok(Vec::new());
        };
        if !self.state.qdrant.is_present() {
            return Ok(Vec::new());
        }
        let ep = self.qdrant_endpoints();
        let collection = &ep.collection.name;
        let Some(first) = ep.peers.first() else {
            return Ok(Vec::new());
        };
        let exists = crate::component::http_client(Duration::from_secs(5))
            .get(first.rest_url(&format!("/collections/{collection}")))
            .send()
            .await
            .map_err(|e| format!("qdrant {}: {e}", first.node))?;
        if exists.status().as_u16() == 404 {
            return Ok(Vec::new());
        }
        let stamp = crate::clock::rfc3339_millis(SystemTime::now());
        let set: String = stamp
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        let store = self.qdrant_store(store_node);
        let mut taken = Vec::new();
        for peer in &ep.peers {
            taken.push(
                qdrant_snapshots::take(peer, collection, None, &store, &set, SHORT_COMMAND).await?,
            );
        }
        // Every shard once more, from a peer holding it Active: what a cluster formed anew is restored from.
        for (shard, node) in self.qdrant_shard_holders().await? {
            let peer = ep.peer(&node).expect("a holder is a live peer");
            taken.push(
                qdrant_snapshots::take(peer, collection, Some(shard), &store, &set, SHORT_COMMAND)
                    .await?,
            );
        }
        Ok(taken)
    }

    /// For every shard of the collection, a live peer holding an Active replica of it (by its own view).
    pub(super) async fn qdrant_shard_holders(&self) -> Result<Vec<(u32, String)>, String> {
        let ep = self.qdrant_endpoints();
        let http = crate::component::http_client(Duration::from_secs(5));
        let mut holders: std::collections::BTreeMap<u32, String> = Default::default();
        let mut count = 0;
        for peer in &ep.peers {
            let Ok(Some(view)) =
                crate::component::qdrant::collection_view(&http, peer, &ep.collection.name).await
            else {
                continue;
            };
            count = count.max(view.shard_count);
            for r in view
                .replicas
                .iter()
                .filter(|r| r.peer_id == view.peer_id && r.is_active())
            {
                holders
                    .entry(r.shard_id)
                    .or_insert_with(|| peer.node.clone());
            }
        }
        match (0..count).find(|s| !holders.contains_key(s)) {
            Some(s) => Err(format!(
                "qdrant: no live peer holds an Active replica of shard {s}: the shard cannot be backed up"
            )),
            None if count == 0 => Err("qdrant: no live peer describes the collection's shards".into()),
            None => Ok(holders.into_iter().collect()),
        }
    }

    pub(super) fn qdrant_store(&self, backup_node: &str) -> PathBuf {
        self.dir.backup_store(backup_node).join("qdrant")
    }

    /// The newest complete set of Qdrant snapshots in the backup node's store.
    pub fn qdrant_backups(&self) -> Vec<(PathBuf, QdrantSnapshot)> {
        match self.backup_node() {
            Some(n) => qdrant_snapshots::newest_set(&self.qdrant_store(n)),
            None => Vec::new(),
        }
    }

    /// `faultline backup`: a pgBackRest backup of the given type, a Redis RDB copy and (when Qdrant runs) a
    /// snapshot of every Qdrant peer.
    pub async fn backup(&self, kind: BackupType) -> Result<BackupsTaken, String> {
        let t = std::time::Instant::now();
        let postgres = self.backup_postgres(kind).await?;
        let postgres_seconds = t.elapsed().as_secs_f64();
        let postgres_done = Some(std::time::Instant::now());
        let redis = self.backup_redis().await?;
        let redis_done = Some(std::time::Instant::now());
        let qdrant = self.backup_qdrant().await?;
        Ok(BackupsTaken {
            postgres,
            postgres_seconds,
            postgres_done,
            redis,
            redis_done,
            qdrant_done: (!qdrant.is_empty()).then(std::time::Instant::now),
            qdrant,
        })
    }

    /// Backup health, each source bounded (a frozen or cut-off node must not hang `faultline status`).
    pub async fn backup_health(&self) -> Option<BackupHealth> {
        self.backup_node()?;
        let bound = Duration::from_secs(5);
        let info = tokio::time::timeout(bound, self.repo_info())
            .await
            .unwrap_or_else(|_| Err("pgbackrest info did not answer within 5 s".into()));
        let archiver = self.archiver_status(bound).await;
        let rdb = self.redis_backups().pop().map(|(_, b)| b);
        let now = crate::drill::target_time::unix(SystemTime::now());
        let mut h = BackupHealth::assemble(self.repository_label(), info, archiver, rdb, now);
        if self.state.qdrant.is_present() {
            let set: Vec<QdrantSnapshot> =
                self.qdrant_backups().into_iter().map(|(_, s)| s).collect();
            h.qdrant = Some(crate::backup::health::QdrantSetHealth::of(&set, now));
        }
        Some(h)
    }
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    chown(dir, uid, gid)?;
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            chown_tree(&e.path(), uid, gid)?;
        } else {
            chown(&e.path(), uid, gid)?;
        }
    }
    Ok(())
}
