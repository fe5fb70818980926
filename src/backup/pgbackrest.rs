//! pgBackRest's configuration for the stack's three roles, and its `info` output read into what the reports need.
//!
//! - Every PostgreSQL node and the backup node run `pgbackrest server` (TLS): the repository host reaches the
//!   PostgreSQL hosts through it for backups, and the PostgreSQL hosts push WAL through the repository host's.
//! - A PostgreSQL node's *client* configuration names the repository host (`repo1-host`) and its own data
//!   directory; Patroni's `archive_command` and a restore use it. The client sends the repository options to the
//!   server, so it carries the same `repo1-path` and cipher (HA-FACTS).
//! - The backup node's *repository* configuration owns the repository (path or S3 bucket, cipher, retention) and
//!   lists every PostgreSQL host; `stanza-create`, `check`, `backup`, `expire` and `info` run there
//!   ("backup command must be run on the repository host").

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use serde::Deserialize;

use crate::settings::{BackupSettings, Cipher};

/// pgBackRest's default TLS server port.
pub const TLS_PORT: u16 = 8432;

/// Where one node's pgBackRest files live.
#[derive(Clone, Debug)]
pub struct NodeFiles {
    pub log_path: String,
    pub lock_path: String,
    pub spool_path: String,
    pub ca_file: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

/// One PostgreSQL member as pgBackRest addresses it.
#[derive(Clone, Debug)]
pub struct PgHost {
    pub addr: Ipv4Addr,
    pub data_dir: String,
    pub socket_dir: String,
    pub port: u16,
}

/// The repository's secrets, kept out of every struct that is serialised.
pub struct RepoSecrets<'a> {
    pub cipher_pass: &'a str,
    /// (key, secret key) when the repository is in S3.
    pub s3: Option<(&'a str, &'a str)>,
}

fn global(f: &NodeFiles) -> String {
    format!(
        "[global]\nlog-path={}\nlock-path={}\nspool-path={}\nlog-level-console=warn\nlog-level-stderr=error\n\
         log-level-file=detail\nlog-timestamp=y\n",
        f.log_path, f.lock_path, f.spool_path
    )
}

/// The repository options, identical on the repository host and every client.
fn repo_options(s: &BackupSettings, repo_path: &str, secrets: &RepoSecrets) -> String {
    let mut o = String::new();
    match &s.s3 {
        None => {
            let _ = writeln!(o, "repo1-path={repo_path}");
        }
        Some(s3) => {
            let (key, secret) = secrets.s3.unwrap_or(("", ""));
            let _ = write!(
                o,
                "repo1-type=s3\nrepo1-path={}\nrepo1-s3-bucket={}\nrepo1-s3-endpoint={}\nrepo1-s3-region={}\n\
                 repo1-s3-uri-style={}\nrepo1-storage-verify-tls={}\nrepo1-s3-key={key}\nrepo1-s3-key-secret={secret}\n",
                s3.path,
                s3.bucket,
                s3.endpoint,
                s3.region,
                s3.uri_style,
                if s3.verify_tls { "y" } else { "n" },
            );
        }
    }
    if s.cipher == Cipher::Aes256Cbc {
        let _ = write!(
            o,
            "repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={}\n",
            secrets.cipher_pass
        );
    }
    o
}

/// `pgbackrest server` on a node: listens on the node's address, accepts the stack's client certificate for
/// the stanza.
pub fn server_conf(f: &NodeFiles, me: Ipv4Addr, stanza: &str) -> String {
    format!(
        "{}tls-server-address={me}\ntls-server-port={TLS_PORT}\ntls-server-cert-file={}\ntls-server-key-file={}\n\
         tls-server-ca-file={}\ntls-server-auth={}={stanza}\n",
        global(f),
        f.server_cert,
        f.server_key,
        f.ca_file,
        super::pki::CLIENT_CN,
    )
}

/// A PostgreSQL node's client configuration: archive-push, archive-get and restore go to the repository host.
pub fn client_conf(
    f: &NodeFiles,
    s: &BackupSettings,
    repo_host: Ipv4Addr,
    repo_path: &str,
    secrets: &RepoSecrets,
    pg: &PgHost,
) -> String {
    format!(
        "{}repo1-host={repo_host}\nrepo1-host-type=tls\nrepo1-host-port={TLS_PORT}\nrepo1-host-cert-file={}\n\
         repo1-host-key-file={}\nrepo1-host-ca-file={}\n{}process-max=2\n\n[{}]\npg1-path={}\npg1-socket-path={}\npg1-port={}\n",
        global(f),
        f.client_cert,
        f.client_key,
        f.ca_file,
        repo_options(s, repo_path, secrets),
        s.stanza,
        pg.data_dir,
        pg.socket_dir,
        pg.port,
    )
}

/// The repository host's configuration: the repository, retention, and every PostgreSQL host it backs up.
pub fn repo_conf(
    f: &NodeFiles,
    s: &BackupSettings,
    repo_path: &str,
    secrets: &RepoSecrets,
    pgs: &[PgHost],
) -> String {
    let mut c = format!(
        "{}{}repo1-retention-full-type=time\nrepo1-retention-full={}\nstart-fast=y\nprocess-max=2\n\
         archive-check=y\n\n[{}]\n",
        global(f),
        repo_options(s, repo_path, secrets),
        s.retention_full_days,
        s.stanza,
    );
    for (i, pg) in pgs.iter().enumerate() {
        let n = i + 1;
        let _ = write!(
            c,
            "pg{n}-host={}\npg{n}-host-type=tls\npg{n}-host-port={TLS_PORT}\npg{n}-host-cert-file={}\n\
             pg{n}-host-key-file={}\npg{n}-host-ca-file={}\npg{n}-path={}\npg{n}-socket-path={}\npg{n}-port={}\n",
            pg.addr, f.client_cert, f.client_key, f.ca_file, pg.data_dir, pg.socket_dir, pg.port,
        );
    }
    c
}

/// Patroni's `postgresql.parameters` for continuous archiving through the node's client configuration.
/// `archive_mode: on` (never `always`: replicas would archive too), so whichever member is primary archives,
/// a newly promoted one at once.
pub fn archive_parameters(
    pgbackrest_bin: &str,
    client_conf: &str,
    s: &BackupSettings,
) -> Vec<(&'static str, String)> {
    vec![
        ("archive_mode", "'on'".into()),
        (
            "archive_command",
            format!(
                "'{pgbackrest_bin} --config={client_conf} --stanza={} archive-push %p'",
                s.stanza
            ),
        ),
        ("archive_timeout", s.archive_timeout.clone()),
    ]
}

// ---- `pgbackrest info --output=json` ----

#[derive(Clone, Debug, Deserialize)]
pub struct StanzaInfo {
    pub name: String,
    #[serde(default)]
    pub cipher: String,
    pub status: Status,
    #[serde(default)]
    pub backup: Vec<BackupSet>,
    #[serde(default)]
    pub archive: Vec<ArchiveRange>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Status {
    pub code: i64,
    pub message: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct BackupSet {
    pub label: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: Span,
    #[serde(default)]
    pub error: bool,
    pub info: BackupSize,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Span {
    /// Unix seconds.
    pub start: i64,
    pub stop: i64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct BackupSize {
    pub size: u64,
    pub repository: RepoSize,
}

#[derive(Clone, Debug, Deserialize)]
pub struct RepoSize {
    pub size: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ArchiveRange {
    pub id: String,
    pub min: Option<String>,
    pub max: Option<String>,
}

/// Parses `info --output=json` and returns the stanza's entry.
pub fn parse_info(json: &str, stanza: &str) -> Result<StanzaInfo, String> {
    let all: Vec<StanzaInfo> = serde_json::from_str(json)
        .map_err(|e| format!("pgbackrest info printed something that is not its JSON: {e}"))?;
    all.into_iter()
        .find(|s| s.name == stanza)
        .ok_or_else(|| format!("the repository has no stanza `{stanza}`"))
}

impl StanzaInfo {
    /// Backups that completed, oldest first.
    pub fn good_backups(&self) -> Vec<&BackupSet> {
        let mut v: Vec<&BackupSet> = self.backup.iter().filter(|b| !b.error).collect();
        v.sort_by_key(|b| b.timestamp.stop);
        v
    }

    pub fn newest_backup(&self) -> Option<&BackupSet> {
        self.good_backups().last().copied()
    }

    /// The oldest point a restore can reach: the end of the oldest complete backup (a backup is consistent only
    /// from its stop point on).
    pub fn oldest_recoverable(&self) -> Option<i64> {
        self.good_backups().first().map(|b| b.timestamp.stop)
    }

    /// The newest WAL segment in the archive (the last archive id's max).
    pub fn newest_wal(&self) -> Option<&str> {
        self.archive.last().and_then(|a| a.max.as_deref())
    }

    /// The timeline of the newest archived WAL segment (its name's first 8 hex digits): the timeline the cluster
    /// the archive came from was on, readable when every member of it is gone.
    pub fn newest_timeline(&self) -> Option<i64> {
        self.newest_wal()
            .and_then(|w| w.get(..8))
            .and_then(|t| i64::from_str_radix(t, 16).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::S3Repository;

    fn files() -> NodeFiles {
        NodeFiles {
            log_path: "/s/log".into(),
            lock_path: "/s/lock".into(),
            spool_path: "/s/spool".into(),
            ca_file: "/s/tls/ca.crt".into(),
            server_cert: "/s/tls/server.crt".into(),
            server_key: "/s/tls/server.key".into(),
            client_cert: "/s/tls/client.crt".into(),
            client_key: "/s/tls/client.key".into(),
        }
    }

    fn pg(last: u8) -> PgHost {
        PgHost {
            addr: Ipv4Addr::new(10, 201, 0, last),
            data_dir: format!("/s/n{last}/data"),
            socket_dir: format!("/s/n{last}/run"),
            port: 5432,
        }
    }

    const SECRETS: RepoSecrets = RepoSecrets {
        cipher_pass: "p4ss",
        s3: None,
    };

    #[test]
    fn client_and_repository_agree_on_the_repository_and_its_cipher() {
        let s = BackupSettings::default();
        let client = client_conf(
            &files(),
            &s,
            Ipv4Addr::new(10, 201, 0, 13),
            "/s/repo",
            &SECRETS,
            &pg(11),
        );
        let repo = repo_conf(&files(), &s, "/s/repo", &SECRETS, &[pg(11), pg(12)]);
        for c in [&client, &repo] {
            assert!(c.contains("repo1-path=/s/repo\n"), "{c}");
            assert!(c.contains("repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=p4ss\n"));
        }
        assert!(client.contains("repo1-host=10.201.0.13\nrepo1-host-type=tls\n"));
        assert!(client.contains("[faultline]\npg1-path=/s/n11/data\n"));
        assert!(repo.contains("pg2-host=10.201.0.12\npg2-host-type=tls\n"));
        assert!(repo.contains("repo1-retention-full-type=time\nrepo1-retention-full=7\n"));
        assert!(!repo.contains("repo1-host="));
    }

    #[test]
    fn cipher_none_writes_no_cipher_options() {
        let s = BackupSettings {
            cipher: Cipher::None,
            ..BackupSettings::default()
        };
        let repo = repo_conf(&files(), &s, "/s/repo", &SECRETS, &[pg(11)]);
        assert!(!repo.contains("cipher"), "{repo}");
    }

    #[test]
    fn an_s3_repository_is_configured_from_the_settings_and_the_environment_credentials() {
        let s = BackupSettings {
            s3: Some(S3Repository {
                bucket: "dr".into(),
                endpoint: "minio.example:9000".into(),
                region: "eu-1".into(),
                path: "/pg".into(),
                uri_style: "path".into(),
                verify_tls: false,
            }),
            ..BackupSettings::default()
        };
        let secrets = RepoSecrets {
            cipher_pass: "p",
            s3: Some(("AK", "SK")),
        };
        let repo = repo_conf(&files(), &s, "/unused", &secrets, &[pg(11)]);
        for want in [
            "repo1-type=s3\n",
            "repo1-path=/pg\n",
            "repo1-s3-bucket=dr\n",
            "repo1-s3-endpoint=minio.example:9000\n",
            "repo1-s3-region=eu-1\n",
            "repo1-s3-uri-style=path\n",
            "repo1-storage-verify-tls=n\n",
            "repo1-s3-key=AK\n",
            "repo1-s3-key-secret=SK\n",
        ] {
            assert!(repo.contains(want), "{want} missing in {repo}");
        }
        assert!(!repo.contains("/unused"));
    }

    #[test]
    fn the_server_authorises_the_client_certificate_for_the_stanza() {
        let c = server_conf(&files(), Ipv4Addr::new(10, 201, 0, 11), "faultline");
        assert!(c.contains("tls-server-address=10.201.0.11\n"));
        assert!(c.contains("tls-server-auth=faultline=faultline\n"));
    }

    /// Output of pgBackRest 2.45 `info --output=json` on this stack (trimmed to the fields read).
    const INFO: &str = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000010000000000000006","min":"000000010000000000000004"}],
      "backup":[{"archive":{"start":"000000010000000000000005","stop":"000000010000000000000006"},"error":false,
        "info":{"delta":23021086,"repository":{"delta":3091936,"size":3091936},"size":23021086},"label":"20261130-042358F",
        "timestamp":{"start":1796012638,"stop":1796012641},"type":"full"},
        {"error":true,"info":{"size":1,"repository":{"size":1}},"label":"20261130-050000F_20261130-050100I",
        "timestamp":{"start":1796016000,"stop":1796016060},"type":"incr"}],
      "cipher":"aes-256-cbc","name":"faultline","status":{"code":0,"message":"ok"}}]"#;

    #[test]
    fn info_gives_the_newest_complete_backup_and_the_window_start() {
        let i = parse_info(INFO, "faultline").unwrap();
        assert_eq!(i.cipher, "aes-256-cbc");
        // The errored incremental is not a backup anyone can restore from.
        assert_eq!(i.newest_backup().unwrap().label, "20261130-042358F");
        assert_eq!(i.oldest_recoverable(), Some(1796012641));
        assert_eq!(i.newest_wal(), Some("000000010000000000000006"));
        assert_eq!(i.newest_timeline(), Some(1));
        assert!(parse_info(INFO, "other")
            .unwrap_err()
            .contains("no stanza `other`"));
    }
}
