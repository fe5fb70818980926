//! The ledger of every operation the load driver attempted, writes with their ids. Lost/recovered/unexpected writes
//! are computed from it against what the servers return on read-back.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::clock::Stamp;
use crate::scenario::ComponentKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Write,
    Read,
    /// A query that is not a point read (e.g. a vector search).
    Search,
}

/// What the client knows about an operation. `Unknown` = it may or may not have taken effect (deadline passed,
/// connection lost after send, a commit WARNING, WAIT confirming too few replicas).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Failed,
    Unknown,
}

/// Whose operation an entry is: a component's load, or an HTTP probe of the user's own service (by its name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Component(ComponentKind),
    Http(Arc<str>),
}

impl Source {
    /// `postgres`, or `http.<name>`: the prefix of this source's figures in a report.
    pub fn name(&self) -> String {
        match self {
            Source::Component(c) => c.name().to_string(),
            Source::Http(n) => format!("http.{n}"),
        }
    }
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LedgerEntry {
    /// Write ids are unique over the run across sources (one counter), so read-backs of several components join.
    pub id: u64,
    pub source: Source,
    pub op: OpKind,
    pub trial: u32,
    pub scheduled: Stamp,
    /// When the operation got one of the component's in-flight slots (None: it never did). `slot - scheduled` is
    /// time spent waiting in the harness, `done - sent` the server's (and the network's) time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<Stamp>,
    pub sent: Option<Stamp>,
    pub done: Stamp,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl LedgerEntry {
    /// Latency measured from the scheduled send time (no coordinated omission).
    pub fn latency(&self) -> std::time::Duration {
        self.done.0.saturating_sub(self.scheduled.0)
    }
}

/// Shared, append-only; optionally mirrored line by line to a JSONL file so a crash loses no evidence.
#[derive(Clone, Default)]
pub struct Ledger {
    inner: Arc<Mutex<LedgerInner>>,
    /// Whether entries are mirrored to a file (fixed at creation).
    mirrored: bool,
}

#[derive(Default)]
struct LedgerInner {
    entries: Vec<LedgerEntry>,
    sink: Option<BufWriter<File>>,
    unflushed: usize,
    /// Operations recorded so far by outcome: ok, failed, unknown.
    outcomes: [u64; 3],
}

impl Ledger {
    pub fn with_file(path: &Path) -> std::io::Result<Self> {
        let file = File::create(path)?;
        let ledger = Ledger {
            mirrored: true,
            ..Ledger::default()
        };
        ledger.inner.lock().unwrap().sink = Some(BufWriter::new(file));
        Ok(ledger)
    }

    pub fn record(&self, entry: LedgerEntry) {
        // Serialised before taking the lock: operations finishing at once do not queue behind each other's JSON.
        let line = self
            .mirrored
            .then(|| serde_json::to_string(&entry).ok())
            .flatten();
        let mut g = self.inner.lock().unwrap();
        if let (Some(sink), Some(line)) = (g.sink.as_mut(), line) {
            let _ = writeln!(sink, "{line}");
        }
        g.unflushed += 1;
        if g.unflushed >= 256 {
            g.unflushed = 0;
            if let Some(sink) = g.sink.as_mut() {
                let _ = sink.flush();
            }
        }
        g.outcomes[match entry.outcome {
            Outcome::Ok => 0,
            Outcome::Failed => 1,
            Outcome::Unknown => 2,
        }] += 1;
        g.entries.push(entry);
    }

    /// Operations recorded so far: ok, failed, unknown (cheap: for live progress).
    pub fn outcome_counts(&self) -> [u64; 3] {
        self.inner.lock().unwrap().outcomes
    }

    pub fn flush(&self) {
        let mut g = self.inner.lock().unwrap();
        if let Some(sink) = g.sink.as_mut() {
            let _ = sink.flush();
        }
        g.unflushed = 0;
    }

    pub fn entries(&self) -> Vec<LedgerEntry> {
        self.inner.lock().unwrap().entries.clone()
    }
}

/// What the read-back from the current primary/master found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReadBack {
    /// Ids present on the server for this run.
    #[serde(skip)]
    pub present: BTreeSet<u64>,
    /// Which member answered the read-back.
    pub from_member: String,
    pub at: Stamp,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_entry_is_mirrored_to_the_file_as_one_json_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let ledger = Ledger::with_file(&path).unwrap();
        for id in 1..=3 {
            ledger.record(LedgerEntry {
                id,
                source: crate::ledger::Source::Component(crate::scenario::ComponentKind::Postgres),
                op: OpKind::Write,
                trial: 1,
                scheduled: Stamp(Duration::from_millis(id * 10)),
                slot: None,
                sent: None,
                done: Stamp(Duration::from_millis(id * 10 + 500)),
                outcome: Outcome::Failed,
                error: Some("not sent".into()),
            });
        }
        ledger.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["id"], 3);
        assert_eq!(lines[2]["outcome"], "failed");
        assert_eq!(lines[2]["done"], 0.53);
        assert!(lines[2].get("slot").is_none(), "an unset slot is left out");
        assert_eq!(ledger.entries().len(), 3);
    }
}
