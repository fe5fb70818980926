//! The fault journal: before a fault is applied, an entry saying exactly how to revert it is written and synced;
//! after the revert the entry is closed. `faultline recover` reverts whatever is still open.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::RevertStep;
use crate::targets::local::state::write_atomic;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JournalEntry {
    pub id: String,
    pub fault: String,
    pub description: String,
    pub pid: u32,
    pub opened_at: String,
    pub steps: Vec<RevertStep>,
    pub closed_at: Option<String>,
    pub close_note: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Journal {
    dir: PathBuf,
}

fn now() -> String {
    crate::clock::rfc3339_millis(std::time::SystemTime::now())
}

impl Journal {
    pub fn new(dir: PathBuf) -> Self {
        Journal { dir }
    }

    /// A drill step that replaces a cluster: journaled before `work` starts, the entry closed when it succeeds.
    /// On failure the entry stays open, so the engine's revert (or `faultline recover`) completes it with `steps`.
    pub async fn around<F>(
        &self,
        kind: &str,
        description: &str,
        steps: Vec<RevertStep>,
        work: F,
    ) -> Result<(), String>
    where
        F: std::future::Future<Output = Result<(), String>>,
    {
        let entry = self
            .open(kind, description, steps)
            .map_err(|e| format!("cannot journal the {kind}: {e}"))?;
        let result = work.await;
        if result.is_ok() {
            let _ = self.close(&entry.id, &format!("{kind} completed"));
        }
        result
    }

    /// Writes and fsyncs an open entry; the fault may be applied once this returns.
    pub fn open(
        &self,
        fault: &str,
        description: &str,
        steps: Vec<RevertStep>,
    ) -> std::io::Result<JournalEntry> {
        fs::create_dir_all(&self.dir)?;
        let seq = fs::read_dir(&self.dir)?.count();
        let id = format!("{:06}-{}-{}", seq, std::process::id(), fault);
        let entry = JournalEntry {
            id: id.clone(),
            fault: fault.to_string(),
            description: description.to_string(),
            pid: std::process::id(),
            opened_at: now(),
            steps,
            closed_at: None,
            close_note: None,
        };
        self.write(&entry)?;
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(entry)
    }

    fn write(&self, entry: &JournalEntry) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(entry)?;
        write_atomic(&self.dir.join(format!("{}.json", entry.id)), &bytes, 0o644)
    }

    pub fn close(&self, id: &str, note: &str) -> std::io::Result<()> {
        let path = self.dir.join(format!("{id}.json"));
        let mut entry: JournalEntry = serde_json::from_slice(&fs::read(&path)?)?;
        entry.closed_at = Some(now());
        entry.close_note = Some(note.to_string());
        self.write(&entry)
    }

    pub fn entries(&self) -> Vec<JournalEntry> {
        let mut v: Vec<JournalEntry> = fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .filter_map(|e| serde_json::from_slice(&fs::read(e.path()).ok()?).ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    pub fn open_entries(&self) -> Vec<JournalEntry> {
        self.entries()
            .into_iter()
            .filter(|e| e.closed_at.is_none())
            .collect()
    }

    pub fn close_all(&self, note: &str) {
        for e in self.open_entries() {
            let _ = self.close(&e.id, note);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_stay_open_until_closed() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path().join("journal"));
        let e = j
            .open(
                "partition",
                "n1 | n2 n3",
                vec![RevertStep::DeleteRules { node: "n1".into() }],
            )
            .unwrap();
        assert_eq!(j.open_entries().len(), 1);
        assert_eq!(j.open_entries()[0].steps, e.steps);
        j.close(&e.id, "reverted").unwrap();
        assert!(j.open_entries().is_empty());
        assert_eq!(j.entries()[0].close_note.as_deref(), Some("reverted"));
    }
}
