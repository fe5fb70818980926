//! Stack settings: which executables run the stack and the HA timing in force. Users test their own versions, so
//! every value here can be changed in a settings file (`--settings FILE`, YAML) or the environment; the defaults
//! are the measured short-ttl setup from HA-FACTS (Debian's Patroni 3.0.2 with etcd's v2 API).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::input_error::{InputError, InputErrors};

/// Which etcd API Patroni uses as its DCS: the `etcd:` (v2) or `etcd3:` section of its configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DcsApi {
    Etcd2,
    Etcd3,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StackSettings {
    pub patroni_bin: PathBuf,
    /// Python interpreter to run `patroni_bin` with; None = execute it directly (its shebang decides).
    pub patroni_python: Option<PathBuf>,
    pub dcs_api: DcsApi,
    pub pg_bin_dir: PathBuf,
    pub etcd_bin: PathBuf,
    pub redis_server_bin: PathBuf,
    pub redis_sentinel_bin: PathBuf,
    /// Patroni scope = the cluster's name in the DCS.
    pub patroni_scope: String,
    pub ttl: u32,
    pub loop_wait: u32,
    pub retry_timeout: u32,
    pub primary_stop_timeout: u32,
    pub synchronous_mode: bool,
    pub wal_sender_timeout: String,
    pub sentinel_master_name: String,
    pub sentinel_quorum: u32,
    pub sentinel_down_after_ms: u64,
    pub sentinel_failover_timeout_ms: u64,
    /// The OS user PostgreSQL runs as (it refuses to run as root).
    pub postgres_os_user: String,
    /// Qdrant executable; None = `QDRANT_BIN`, else `qdrant` on PATH, else the release download below.
    pub qdrant_bin: Option<PathBuf>,
    /// The release `faultline up` downloads when no executable is found (x86_64-unknown-linux-gnu tarball).
    pub qdrant_version: String,
    /// Whether `faultline up` may try that download at all. Off by default: faultline's traffic stays on this
    /// machine unless the user opts in (here or with FAULTLINE_QDRANT_DOWNLOAD=1).
    pub qdrant_download: bool,
    /// The collection the harness creates and writes to.
    pub qdrant_collection: String,
    pub qdrant_vector_size: u64,
    pub qdrant_shard_number: u32,
    pub qdrant_replication_factor: u32,
    pub qdrant_write_consistency_factor: u32,
    /// Seed of the point and query vectors (same seed, same data in every run).
    pub qdrant_seed: u64,
    /// Backups: pgBackRest's repository, its encryption and retention, the WAL archive's timeout.
    pub backup: BackupSettings,
    /// The routing layer in front of PostgreSQL: HAProxy with Patroni's REST health check, PgBouncer before it.
    pub router: RouterSettings,
}

/// HAProxy's health check of the PostgreSQL members (Patroni's `/primary` and `/replica`) and the two
/// executables. The defaults are the spec's health-check table: a database check every 5 s, timeout 3 s,
/// unhealthy after 2 failures (and healthy again after 2 successes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RouterSettings {
    pub haproxy_bin: PathBuf,
    pub pgbouncer_bin: PathBuf,
    /// HAProxy's `inter`: time between two checks of a member.
    pub check_interval_ms: u64,
    /// HAProxy's `timeout check`: how long a check may take.
    pub check_timeout_ms: u64,
    /// Consecutive failed checks that mark a member down.
    pub fall: u32,
    /// Consecutive successful checks that mark a member up.
    pub rise: u32,
}

impl Default for RouterSettings {
    fn default() -> Self {
        RouterSettings {
            haproxy_bin: "/usr/sbin/haproxy".into(),
            pgbouncer_bin: "/usr/sbin/pgbouncer".into(),
            check_interval_ms: 5000,
            check_timeout_ms: 3000,
            fall: 2,
            rise: 2,
        }
    }
}

/// Encryption of the pgBackRest repository (`repo1-cipher-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Cipher {
    #[serde(rename = "aes-256-cbc")]
    Aes256Cbc,
    #[serde(rename = "none")]
    None,
}

impl Cipher {
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes256Cbc => "aes-256-cbc",
            Cipher::None => "none",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSettings {
    pub pgbackrest_bin: PathBuf,
    /// pgBackRest's stanza: the name of the cluster in the repository.
    pub stanza: String,
    /// The repository's encryption; on by default (the spec asks for AES-256). The passphrase is generated into
    /// the stack's secrets file.
    pub cipher: Cipher,
    /// Full backups kept for this many days (`repo1-retention-full-type=time`); WAL older than the oldest kept
    /// full backup is expired with it. 7 days = the spec's "any point in the last 7 days".
    pub retention_full_days: u32,
    /// PostgreSQL's `archive_timeout`: the longest an idle database's newest transactions wait before their WAL
    /// segment is switched and archived, i.e. the RPO bound of the archive when writes are rare.
    pub archive_timeout: String,
    /// Keep the repository in an S3 bucket instead of on the backup node's disk. The repository host still runs
    /// on the backup node and talks to S3; the credentials come from FAULTLINE_S3_KEY and
    /// FAULTLINE_S3_KEY_SECRET (never from a file that could end up in a report).
    pub s3: Option<S3Repository>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Repository {
    pub bucket: String,
    /// e.g. s3.eu-central-1.amazonaws.com, or a MinIO host.
    pub endpoint: String,
    pub region: String,
    /// The repository's path inside the bucket.
    #[serde(default = "S3Repository::default_path")]
    pub path: String,
    /// `host` (virtual-hosted, AWS) or `path` (MinIO and most other S3 servers).
    #[serde(default = "S3Repository::default_uri_style")]
    pub uri_style: String,
    #[serde(default = "S3Repository::default_verify_tls")]
    pub verify_tls: bool,
}

impl S3Repository {
    fn default_path() -> String {
        "/faultline".into()
    }
    fn default_uri_style() -> String {
        "host".into()
    }
    fn default_verify_tls() -> bool {
        true
    }
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings {
            pgbackrest_bin: "/usr/bin/pgbackrest".into(),
            stanza: "faultline".into(),
            cipher: Cipher::Aes256Cbc,
            retention_full_days: 7,
            archive_timeout: "60s".into(),
            s3: None,
        }
    }
}

impl Default for StackSettings {
    fn default() -> Self {
        StackSettings {
            patroni_bin: "/usr/bin/patroni".into(),
            patroni_python: None,
            dcs_api: DcsApi::Etcd2,
            pg_bin_dir: "/usr/lib/postgresql/15/bin".into(),
            etcd_bin: "/usr/bin/etcd".into(),
            redis_server_bin: "/usr/bin/redis-server".into(),
            redis_sentinel_bin: "/usr/bin/redis-sentinel".into(),
            patroni_scope: "faultline".into(),
            ttl: 10,
            loop_wait: 2,
            retry_timeout: 4,
            primary_stop_timeout: 5,
            synchronous_mode: true,
            wal_sender_timeout: "5s".into(),
            sentinel_master_name: "faultline".into(),
            sentinel_quorum: 2,
            sentinel_down_after_ms: 3000,
            sentinel_failover_timeout_ms: 10000,
            postgres_os_user: "postgres".into(),
            qdrant_bin: None,
            qdrant_version: "1.18.3".into(),
            qdrant_download: false,
            qdrant_collection: "faultline".into(),
            qdrant_vector_size: 64,
            qdrant_shard_number: 6,
            qdrant_replication_factor: 2,
            qdrant_write_consistency_factor: 1,
            qdrant_seed: 42,
            backup: BackupSettings::default(),
            router: RouterSettings::default(),
        }
    }
}

impl StackSettings {
    /// JSON Schema of a settings file, generated from this type (`faultline schema settings`).
    pub fn json_schema() -> serde_json::Value {
        let mut v = serde_json::to_value(schemars::schema_for!(StackSettings))
            .expect("a schema serialises");
        v["title"] = "faultline settings".into();
        v
    }

    /// The Qdrant collection the harness creates and writes to, on every target.
    pub fn qdrant_collection_spec(&self) -> crate::component::qdrant::CollectionSpec {
        crate::component::qdrant::CollectionSpec {
            name: self.qdrant_collection.clone(),
            vector_size: self.qdrant_vector_size,
            shard_number: self.qdrant_shard_number,
            replication_factor: self.qdrant_replication_factor,
            write_consistency_factor: self.qdrant_write_consistency_factor,
        }
    }

    /// Reads a settings file; unset fields keep their defaults. Then applies FAULTLINE_PATRONI_BIN,
    /// FAULTLINE_DCS_API and QDRANT_BIN from the environment.
    pub fn load(path: Option<&Path>) -> Result<StackSettings, InputErrors> {
        let mut settings = match path {
            None => StackSettings::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    InputError::whole_file(p, format!("cannot read the settings file: {e}"))
                })?;
                serde_norway::from_str(&text).map_err(|e| {
                    let (line, col) = e
                        .location()
                        .map(|l| (l.line(), l.column()))
                        .unwrap_or((0, 0));
                    InputError::new(p, line, col, e.to_string())
                })?
            }
        };
        if let Ok(bin) = std::env::var("FAULTLINE_PATRONI_BIN") {
            settings.patroni_bin = bin.into();
        }
        if std::env::var("FAULTLINE_QDRANT_DOWNLOAD").is_ok_and(|v| v == "1" || v == "true") {
            settings.qdrant_download = true;
        }
        if let Some(bin) = std::env::var_os("QDRANT_BIN").filter(|b| !b.is_empty()) {
            settings.qdrant_bin = Some(bin.into());
        }
        if let Ok(api) = std::env::var("FAULTLINE_DCS_API") {
            settings.dcs_api = match api.as_str() {
                "etcd2" => DcsApi::Etcd2,
                "etcd3" => DcsApi::Etcd3,
                other => {
                    return Err(InputError::whole_file(
                        Path::new("FAULTLINE_DCS_API"),
                        format!("`{other}` is not a DCS API; use etcd2 or etcd3"),
                    )
                    .into())
                }
            };
        }
        settings.check().map_err(|m| {
            InputErrors::from(InputError::whole_file(
                path.unwrap_or(Path::new("<settings>")),
                m,
            ))
        })?;
        Ok(settings)
    }

    /// Patroni's own rule: loop_wait + 2 * retry_timeout <= ttl; Qdrant's collection parameters in their ranges
    /// (a write must not wait for more replicas than a shard has).
    pub fn check(&self) -> Result<(), String> {
        if self.loop_wait + 2 * self.retry_timeout > self.ttl {
            return Err(format!(
                "loop_wait ({}) + 2 * retry_timeout ({}) must not exceed ttl ({}), as Patroni requires",
                self.loop_wait, self.retry_timeout, self.ttl
            ));
        }
        if !(1..=65536).contains(&self.qdrant_vector_size) {
            return Err(format!(
                "qdrant_vector_size {} is out of range: allowed 1 to 65536",
                self.qdrant_vector_size
            ));
        }
        if !(1..=1000).contains(&self.qdrant_shard_number) {
            return Err(format!(
                "qdrant_shard_number {} is out of range: allowed 1 to 1000",
                self.qdrant_shard_number
            ));
        }
        if self.qdrant_replication_factor == 0 || self.qdrant_write_consistency_factor == 0 {
            return Err(
                "qdrant_replication_factor and qdrant_write_consistency_factor must be at least 1"
                    .into(),
            );
        }
        if self.qdrant_write_consistency_factor > self.qdrant_replication_factor {
            return Err(format!(
                "qdrant_write_consistency_factor ({}) must not exceed qdrant_replication_factor ({})",
                self.qdrant_write_consistency_factor, self.qdrant_replication_factor
            ));
        }
        let name_ok = !self.qdrant_collection.is_empty()
            && self
                .qdrant_collection
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(format!(
                "qdrant_collection `{}` is not valid: use letters, digits, `_` and `-`",
                self.qdrant_collection
            ));
        }
        let stanza_ok = !self.backup.stanza.is_empty()
            && self
                .backup
                .stanza
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !stanza_ok {
            return Err(format!(
                "backup.stanza `{}` is not valid: use letters, digits, `_` and `-`",
                self.backup.stanza
            ));
        }
        if self.backup.retention_full_days == 0 {
            return Err("backup.retention_full_days must be at least 1".into());
        }
        if humantime::parse_duration(&self.backup.archive_timeout).is_err() {
            return Err(format!(
                "backup.archive_timeout `{}` is not a duration (e.g. 60s)",
                self.backup.archive_timeout
            ));
        }
        if let Some(s3) = &self.backup.s3 {
            if !["host", "path"].contains(&s3.uri_style.as_str()) {
                return Err(format!(
                    "backup.s3.uri_style `{}` is not one of host, path",
                    s3.uri_style
                ));
            }
        }
        if self.qdrant_version.is_empty() || self.qdrant_version.contains(['/', ' ']) {
            return Err(format!(
                "qdrant_version `{}` is not a release version (e.g. 1.18.3)",
                self.qdrant_version
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_satisfy_patronis_timing_rule() {
        assert!(StackSettings::default().check().is_ok());
        let bad = StackSettings {
            ttl: 5,
            ..StackSettings::default()
        };
        assert!(bad.check().unwrap_err().contains("ttl (5)"));
        let bad = StackSettings {
            qdrant_write_consistency_factor: 3,
            ..StackSettings::default()
        };
        assert!(bad.check().unwrap_err().contains(
            "qdrant_write_consistency_factor (3) must not exceed qdrant_replication_factor (2)"
        ));
        let bad = StackSettings {
            qdrant_collection: "a/b".into(),
            ..StackSettings::default()
        };
        assert!(bad.check().unwrap_err().contains("qdrant_collection `a/b`"));
    }

    #[test]
    fn the_documented_defaults_file_matches_the_built_in_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/settings/default.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed: StackSettings = serde_norway::from_str(&text).unwrap();
        assert_eq!(parsed, StackSettings::default());
    }

    #[test]
    fn a_settings_file_overrides_only_what_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.yaml");
        std::fs::write(&p, "dcs_api: etcd3\nttl: 30\n").unwrap();
        let s = StackSettings::load(Some(&p)).unwrap();
        assert_eq!(s.dcs_api, DcsApi::Etcd3);
        assert_eq!(s.ttl, 30);
        assert_eq!(s.loop_wait, 2);
        std::fs::write(&p, "ttl: 30\nbogus: 1\n").unwrap();
        let e = StackSettings::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("s.yaml:2:1"), "{e}");
    }
}
