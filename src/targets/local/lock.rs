//! One run at a time per stack: an flock on `<state dir>/lock`, holding the owner's PID and start time. The
//! kernel releases it when the holder dies, so a stale lock (dead PID) is simply taken over, with a warning.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Held for as long as the value lives.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

#[derive(Debug, PartialEq)]
pub enum LockOutcome {
    Acquired,
    /// Acquired from a holder that died without releasing it (its description).
    TookOverStale(String),
}

pub fn acquire(state_dir: &Path) -> Result<(RunLock, LockOutcome), String> {
    std::fs::create_dir_all(state_dir)
        .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
    let path = state_dir.join("lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut previous = String::new();
    let _ = file.read_to_string(&mut previous);
    let previous = previous.trim().to_string();
    // SAFETY: flock on a valid descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!(
            "another faultline run holds the stack in {} ({}); wait for it or stop it",
            state_dir.display(),
            if previous.is_empty() {
                "holder unknown".into()
            } else {
                previous
            }
        ));
    }
    let me = format!(
        "pid {} started {}",
        std::process::id(),
        crate::clock::rfc3339_millis(std::time::SystemTime::now())
    );
    file.set_len(0).map_err(|e| e.to_string())?;
    file.rewind().map_err(|e| e.to_string())?;
    file.write_all(me.as_bytes()).map_err(|e| e.to_string())?;
    let _ = file.sync_all();
    let outcome = if previous.is_empty() || !holder_alive(&previous) {
        if previous.is_empty() {
            LockOutcome::Acquired
        } else {
            LockOutcome::TookOverStale(previous)
        }
    } else {
        LockOutcome::Acquired
    };
    Ok((RunLock { _file: file }, outcome))
}

/// Released cleanly (dropped) = content cleared, so leftover content with a dead PID means the holder crashed.
impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = self._file.set_len(0);
    }
}

/// Releases the lock now (the same as dropping it).
pub fn release(lock: RunLock) {
    drop(lock);
}

fn holder_alive(desc: &str) -> bool {
    desc.split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<i32>().ok())
        // SAFETY: signal 0 only checks for existence.
        .map(|pid| unsafe { libc::kill(pid, 0) } == 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let (first, outcome) = acquire(dir.path()).unwrap();
        assert_eq!(outcome, LockOutcome::Acquired);
        // flock locks belong to the open file description: a second open in this process conflicts too.
        let err = acquire(dir.path()).unwrap_err();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        release(first);
        let (_again, outcome) = acquire(dir.path()).unwrap();
        assert_eq!(
            outcome,
            LockOutcome::Acquired,
            "a released lock is not reported as stale"
        );
    }

    #[test]
    fn a_dead_holders_lock_is_taken_over_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("lock"),
            "pid 999999999 started 2026-01-01T00:00:00.000Z",
        )
        .unwrap();
        let (_l, outcome) = acquire(dir.path()).unwrap();
        assert!(matches!(outcome, LockOutcome::TookOverStale(ref d) if d.contains("999999999")));
    }
}
