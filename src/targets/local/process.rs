//! Stack processes: each member runs in its own cgroup (v2) inside its node's network namespace, so "every process
//! of this member" is exactly the cgroup's pid list — postmaster children and re-parented backends included
//! (HA-FACTS pitfall 1) — and faultline never signals anything it did not start.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The mount point of the cgroup v2 hierarchy (pure v2 at /sys/fs/cgroup, or the hybrid layout's unified mount).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (_src, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}

pub fn create_cgroup(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path)
}

/// Pids currently in the cgroup (exited processes leave it at exit, zombies included).
pub fn cgroup_pids(path: &Path) -> Vec<i32> {
    fs::read_to_string(path.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// SIGKILL every process of the cgroup at once (cgroup.kill), falling back to signalling each pid.
pub fn kill_cgroup(path: &Path) {
    if fs::write(path.join("cgroup.kill"), "1").is_err() {
        signal_cgroup(path, libc::SIGKILL);
    }
}

pub fn signal_cgroup(path: &Path, signal: i32) -> usize {
    let pids = cgroup_pids(path);
    for pid in &pids {
        // SAFETY: plain kill(2) on pids read from a cgroup that only holds processes faultline started.
        unsafe {
            libc::kill(*pid, signal);
        }
    }
    pids.len()
}

/// Waits until the cgroup holds no process (SIGKILLed processes take up to ~1 s to go: pitfall 2).
pub fn wait_cgroup_empty(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cgroup_pids(path).is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Freezes (`cgroup.freeze` = 1, as `docker pause` does) or thaws the cgroup; a freeze waits, up to `timeout`,
/// until the kernel reports every process frozen.
pub fn freeze_cgroup(path: &Path, frozen: bool, timeout: Duration) -> io::Result<()> {
    fs::write(path.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
    let deadline = Instant::now() + timeout;
    while frozen && !is_frozen(path) {
        if Instant::now() >= deadline {
            return Err(io::Error::other(format!(
                "{} not frozen within {} ms",
                path.display(),
                timeout.as_millis()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Whether the cgroup is frozen (`frozen 1` in cgroup.events).
pub fn is_frozen(path: &Path) -> bool {
    fs::read_to_string(path.join("cgroup.events"))
        .is_ok_and(|s| s.lines().any(|l| l.trim() == "frozen 1"))
}

/// Pids of the cgroup that are stopped (state T) or frozen, i.e. a pause that was not resumed.
pub fn stopped_pids(path: &Path) -> Vec<i32> {
    if is_frozen(path) {
        return cgroup_pids(path);
    }
    cgroup_pids(path)
        .into_iter()
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st == "T"))
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Removes a cgroup directory tree bottom-up (only empty cgroups can be removed).
pub fn remove_cgroup_tree(path: &Path) {
    if let Ok(entries) = fs::read_dir(path) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(path);
}

/// `ip netns exec NS [setpriv --reuid=U --regid=U --init-groups --]`: what runs a member or an operator command
/// inside a node, as `user` when given.
fn in_node(namespace: &str, user: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = vec!["netns".into(), "exec".into(), namespace.into()];
    if let Some(user) = user {
        args.extend([
            "setpriv".into(),
            format!("--reuid={user}"),
            format!("--regid={user}"),
            "--init-groups".into(),
            "--".into(),
        ]);
    }
    args
}

/// The path of a cgroup's `cgroup.procs`, ready for `join_cgroup` in a child between fork and exec.
fn procs_file(cgroup: &Path) -> io::Result<CString> {
    CString::new(cgroup.join("cgroup.procs").as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Moves the calling process into the cgroup ("0" = the writer itself). Only async-signal-safe calls (open,
/// write, close): it runs between fork and exec.
fn join_cgroup(procs: &CString) -> io::Result<()> {
    // SAFETY: open/write/close on a valid C string path; no allocation.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
        libc::close(fd);
        if !ok {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What to run for one member.
pub struct Launch<'a> {
    pub namespace: &'a str,
    pub cgroup: &'a Path,
    /// Run as this OS user (PostgreSQL refuses root).
    pub user: Option<&'a str>,
    pub program: &'a Path,
    pub args: Vec<String>,
    pub log: &'a Path,
    pub workdir: &'a Path,
    /// Extra environment variables.
    pub env: &'a [(&'a str, &'a str)],
}

/// Starts the member detached (own session, so a Ctrl-C to faultline does not reach it) inside its namespace and
/// cgroup, stdout/stderr appended to its log. Returns the pid; a thread reaps it when it exits.
pub fn launch(l: &Launch) -> io::Result<u32> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(l.log)?;
    let mut cmd = Command::new("ip");
    cmd.args(in_node(l.namespace, l.user));
    cmd.arg(l.program)
        .args(&l.args)
        .current_dir(l.workdir)
        .env("TZ", "UTC")
        .envs(l.env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let procs = procs_file(l.cgroup)?;
    // SAFETY: only async-signal-safe calls (setsid, then join_cgroup's open/write/close) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            join_cgroup(&procs)
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(pid)
}

/// A one-off command of the operator's (a backup, a restore): run to completion inside a node's namespace, as
/// `user`, in `cgroup` so `down` and `recover` can find and stop it if faultline dies meanwhile. Past `timeout`
/// every process of the cgroup is killed and the command is an error. Returns stdout; a non-zero exit is an
/// error carrying the last lines of stderr (or stdout).
pub async fn run_operator_command(
    namespace: &str,
    cgroup: &Path,
    user: Option<&str>,
    program: &Path,
    args: &[String],
    timeout: Duration,
) -> Result<String, String> {
    fs::create_dir_all(cgroup).map_err(|e| format!("cannot create {}: {e}", cgroup.display()))?;
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(in_node(namespace, user));
    cmd.arg(program)
        .args(args)
        .env("TZ", "UTC")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let procs = procs_file(cgroup).map_err(|e| e.to_string())?;
    // SAFETY: join_cgroup makes only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || join_cgroup(&procs));
    }
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let what = format!(
        "{name} {}",
        args.iter()
            .filter(|a| !a.starts_with("--config"))
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    );
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{what}`: {e}"))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => {
            kill_cgroup(cgroup);
            wait_cgroup_empty(cgroup, Duration::from_secs(5));
            Err(format!(
                "`{what}` did not finish within {} s and was killed",
                timeout.as_secs()
            ))
        }
        Ok(Err(e)) => Err(format!("`{what}`: {e}")),
        Ok(Ok(out)) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Ok(Ok(out)) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let text = if err.trim().is_empty() {
                String::from_utf8_lossy(&out.stdout).into_owned()
            } else {
                err.into_owned()
            };
            let tail: Vec<&str> = text.lines().rev().take(4).collect();
            Err(format!(
                "`{what}` failed ({}): {}",
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            ))
        }
    }
}

/// Runs a short command to completion; a non-zero exit is an error carrying its stderr.
pub fn run(program: &str, args: &[&str]) -> io::Result<String> {
    let out = Command::new(program).args(args).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`{} {}` failed: {}",
            program,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like `run`, feeding `input` on stdin (for `nft -f -`).
pub fn run_with_input(program: &str, args: &[&str], input: &str) -> io::Result<String> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`{} {}` failed: {}",
            program,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_cgroup2_mount_when_one_is_mounted() {
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
        assert_eq!(cgroup2_mount().is_some(), mounts.contains(" cgroup2 "));
    }
}
