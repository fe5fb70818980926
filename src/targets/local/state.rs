//! The local stack's state directory: everything `down`, `status` and `recover` need after faultline itself
//! crashed — the topology and settings in force, the cgroups and namespaces it created, configs, data, logs.
//!
//! Layout: `<dir>/state.json`, `<dir>/secrets.json` (0600), `<dir>/nodes/<node>/<process>/{config,data,log}`,
//! `<dir>/journal/` (fault journal).

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::scenario::ComponentKind;
use crate::secret::Secret;
use crate::settings::StackSettings;
use crate::topology::Topology;

/// Marker proving a state directory is faultline's (it refuses to touch one that is not).
pub const OWNER: &str = "faultline-local-stack";

/// The processes of a node, each in its own cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum ProcessKind {
    Etcd,
    Patroni,
    Redis,
    Sentinel,
    Qdrant,
    /// `pgbackrest server` (TLS) on every PostgreSQL node and on the backup node.
    Pgbackrest,
    /// HAProxy routing to the PostgreSQL primary (and replicas) by Patroni's REST health check.
    Haproxy,
    /// PgBouncer in front of the HAProxy on its node.
    Pgbouncer,
}

impl ProcessKind {
    pub const ALL: [ProcessKind; 8] = [
        ProcessKind::Etcd,
        ProcessKind::Patroni,
        ProcessKind::Redis,
        ProcessKind::Sentinel,
        ProcessKind::Qdrant,
        ProcessKind::Pgbackrest,
        ProcessKind::Haproxy,
        ProcessKind::Pgbouncer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ProcessKind::Etcd => "etcd",
            ProcessKind::Patroni => "patroni",
            ProcessKind::Redis => "redis",
            ProcessKind::Sentinel => "sentinel",
            ProcessKind::Qdrant => "qdrant",
            ProcessKind::Pgbackrest => "pgbackrest",
            ProcessKind::Haproxy => "haproxy",
            ProcessKind::Pgbouncer => "pgbouncer",
        }
    }

    /// The routing layer's process a router fault hits.
    pub fn of_router(process: crate::scenario::RouterProcess) -> ProcessKind {
        match process {
            crate::scenario::RouterProcess::Haproxy => ProcessKind::Haproxy,
            crate::scenario::RouterProcess::Pgbouncer => ProcessKind::Pgbouncer,
        }
    }

    /// The process that is "the member" of a component (Patroni's cgroup holds its PostgreSQL too).
    pub fn of(component: ComponentKind) -> ProcessKind {
        match component {
            ComponentKind::Postgres => ProcessKind::Patroni,
            ComponentKind::Redis => ProcessKind::Redis,
            ComponentKind::Qdrant => ProcessKind::Qdrant,
        }
    }
}

/// Whether the stack runs Qdrant. Its peers start only where an executable was found or could be downloaded;
/// without one the rest of the stack runs and Qdrant is absent (not broken): health, status, recover and down
/// leave it out, and a scenario that needs it is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum QdrantPresence {
    Present { bin: PathBuf, version: String },
    Absent { reason: String },
}

impl Default for QdrantPresence {
    /// State files written before Qdrant support.
    fn default() -> Self {
        QdrantPresence::Absent {
            reason: "this stack was brought up before faultline supported Qdrant; run `faultline down` and \
                     `faultline up` to add it"
                .into(),
        }
    }
}

impl QdrantPresence {
    pub fn is_present(&self) -> bool {
        matches!(self, QdrantPresence::Present { .. })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StackState {
    pub owner: String,
    pub created_at: String,
    pub topology: Topology,
    pub settings: StackSettings,
    /// The cgroup directory faultline created for this stack; every member's cgroup is below it.
    pub cgroup_root: PathBuf,
    #[serde(default)]
    pub qdrant: QdrantPresence,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Secrets {
    pub postgres_superuser: Secret,
    pub postgres_replication: Secret,
    /// The pgBackRest repository's passphrase (`repo1-cipher-pass`). Absent in secrets files written before
    /// backups were part of the stack; generated then.
    #[serde(default)]
    pub backup_cipher: Option<Secret>,
}

/// Paths inside the state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    pub root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// `FAULTLINE_STATE_DIR`, else /var/tmp/faultline (survives a crash; not wiped by a reboot of the tool).
    pub fn default_path() -> PathBuf {
        std::env::var_os("FAULTLINE_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp/faultline"))
    }

    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }

    pub fn secrets_file(&self) -> PathBuf {
        self.root.join("secrets.json")
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.root.join("journal")
    }

    /// The nodes a `destroy` fault removed and that have not been rebuilt yet (one name per line).
    pub fn lost_nodes_file(&self) -> PathBuf {
        self.root.join("lost-nodes")
    }

    pub fn lost_nodes(&self) -> BTreeSet<String> {
        fs::read_to_string(self.lost_nodes_file())
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    pub fn save_lost_nodes(&self, nodes: &BTreeSet<String>) -> io::Result<()> {
        if nodes.is_empty() {
            return match fs::remove_file(self.lost_nodes_file()) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let text: String = nodes.iter().map(|n| format!("{n}\n")).collect();
        write_atomic(&self.lost_nodes_file(), text.as_bytes(), 0o644)
    }

    pub fn member_dir(&self, node: &str, kind: ProcessKind) -> PathBuf {
        self.root.join("nodes").join(node).join(kind.name())
    }

    pub fn log_file(&self, node: &str, kind: ProcessKind) -> PathBuf {
        self.member_dir(node, kind).join("log")
    }

    /// Downloaded release executables (kept across `down`, reused by the next `up`).
    /// Where a node keeps backups of Redis and Qdrant (on the backup node: the store drills restore from).
    pub fn backup_store(&self, node: &str) -> PathBuf {
        self.root.join("nodes").join(node).join("backups")
    }

    pub fn downloads_dir(&self) -> PathBuf {
        self.root.join("downloads")
    }

    /// Refuses a directory that has content but no faultline state marker.
    pub fn check_ownership(&self) -> Result<(), String> {
        if !self.root.exists() {
            return Ok(());
        }
        let state = self.state_file();
        if state.exists() {
            let text = fs::read_to_string(&state)
                .map_err(|e| format!("cannot read {}: {e}", state.display()))?;
            if !text.contains(OWNER) {
                return Err(format!(
                    "{} is not a faultline state file; refusing to use {}",
                    state.display(),
                    self.root.display()
                ));
            }
            return Ok(());
        }
        let mut entries = fs::read_dir(&self.root)
            .map_err(|e| format!("cannot read {}: {e}", self.root.display()))?;
        let foreign = entries.any(|e| {
            e.map(|e| {
                let n = e.file_name();
                n != "journal"
                    && n != "nodes"
                    && n != "lock"
                    && n != "secrets.json"
                    && n != "downloads"
                    && n != "lost-nodes"
                    && n != "lost-nodes.tmp"
                    // Left by a crash between writing and renaming (write_atomic).
                    && n != "state.tmp"
                    && n != "secrets.tmp"
            })
            .unwrap_or(true)
        });
        if foreign {
            return Err(format!(
                "{} holds files faultline did not create; refusing to use it as a state directory",
                self.root.display()
            ));
        }
        Ok(())
    }

    pub fn load(&self) -> Result<Option<StackState>, String> {
        let path = self.state_file();
        if !path.exists() {
            return Ok(None);
        }
        let text = fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let state: StackState = serde_json::from_str(&text)
            .map_err(|e| format!("{} is damaged: {e}", path.display()))?;
        if state.owner != OWNER {
            return Err(format!("{} is not a faultline state file", path.display()));
        }
        Ok(Some(state))
    }

    pub fn save(&self, state: &StackState) -> io::Result<()> {
        fs::create_dir_all(&self.root)?;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o755))?;
        write_atomic(
            &self.state_file(),
            serde_json::to_string_pretty(state)?.as_bytes(),
            0o644,
        )
    }

    pub fn remove_state(&self) -> io::Result<()> {
        match fs::remove_file(self.state_file()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub fn load_or_create_secrets(&self) -> io::Result<Secrets> {
        let path = self.secrets_file();
        if let Ok(text) = fs::read_to_string(&path) {
            if let Ok(mut s) = serde_json::from_str::<Secrets>(&text) {
                if s.backup_cipher.is_none() {
                    s.backup_cipher = Some(Secret::generate_bytes(32)?);
                    write_atomic(&path, serde_json::to_string(&s)?.as_bytes(), 0o600)?;
                }
                return Ok(s);
            }
        }
        let s = Secrets {
            postgres_superuser: match std::env::var("FAULTLINE_PG_PASSWORD") {
                Ok(p) if !p.is_empty() => Secret::new(p),
                _ => Secret::generate()?,
            },
            postgres_replication: Secret::generate()?,
            backup_cipher: Some(Secret::generate_bytes(32)?),
        };
        fs::create_dir_all(&self.root)?;
        write_atomic(&path, serde_json::to_string(&s)?.as_bytes(), 0o600)?;
        Ok(s)
    }
}

/// Write to a temporary file in the same directory, fsync, rename: readers see the old or the new file, never half.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_directory_it_does_not_own() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        assert!(sd.check_ownership().is_ok(), "empty dir is fine");
        fs::write(dir.path().join("state.tmp"), "{").unwrap();
        assert!(
            sd.check_ownership().is_ok(),
            "a crash-left temporary state file is faultline's own"
        );
        fs::write(dir.path().join("precious.txt"), "x").unwrap();
        assert!(sd.check_ownership().unwrap_err().contains("did not create"));
        fs::write(sd.state_file(), "{\"owner\":\"someone-else\"}").unwrap();
        assert!(sd
            .check_ownership()
            .unwrap_err()
            .contains("not a faultline state file"));
    }

    #[test]
    fn secrets_are_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        let a = sd.load_or_create_secrets().unwrap();
        let b = sd.load_or_create_secrets().unwrap();
        assert_eq!(a.postgres_superuser.expose(), b.postgres_superuser.expose());
        let mode = fs::metadata(sd.secrets_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
