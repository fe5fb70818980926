//! The delay agent behind the `latency` fault: a faultline process (`faultline delay-agent`, hidden) inside a node's
//! namespace that binds an NFQUEUE queue and gives each packet the kernel hands it its ACCEPT verdict `delay`
//! (± `jitter`, uniform) after it arrived. The node's mangle PREROUTING rules (netns::add_delay_rules) send it the
//! packets arriving from the other side; `--queue-bypass` lets them pass undelayed whenever no agent holds the queue.
//!
//! Why not a TCP proxy: a proxy (nft redirect) catches new connections only, and PostgreSQL's replication streams
//! and the load's pooled connections are long-lived: they would bypass the delay, or have to be cut, which is an
//! outage the fault did not ask for. NFQUEUE delays every packet of every connection, open or new, as netem would
//! (this kernel has no netem). As with netem's jitter, packets of one flow can leave out of order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::nfqueue::Queue;

/// The subcommand a delay agent runs as; with `--queue N` it names the agent in its command line.
pub const SUBCOMMAND: &str = "delay-agent";
/// Packets the kernel holds for one agent before it lets further ones pass undelayed.
const QUEUE_MAX_LEN: u32 = 65536;
/// How long an agent may take to bind its queue.
const READY_DEADLINE: Duration = Duration::from_secs(5);
/// How long a stopped agent may take to release its packets and exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// xorshift64*: jitter needs uniform draws, not a cryptographic generator.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng(t ^ (u64::from(std::process::id()) << 32) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `delay - jitter ..= delay + jitter` (jitter <= delay).
    fn hold_time(&mut self, delay: Duration, jitter: Duration) -> Duration {
        if jitter.is_zero() {
            return delay;
        }
        let span = 2 * jitter.as_nanos() as u64 + 1;
        delay - jitter + Duration::from_nanos(self.next() % span)
    }
}

/// The agent's body: binds `queue`, prints `ready`, then releases each packet after its hold time until SIGTERM or
/// SIGINT, when every held packet is released at once. Returns the process's exit code.
pub fn run(queue: u16, delay: Duration, jitter: Duration) -> i32 {
    // SIGTERM/SIGINT are blocked except while waiting in ppoll, so a signal can never slip in between the check of
    // STOP and the wait.
    // SAFETY: signal mask and handler set up with plain libc calls before any other thread exists.
    let waiting_mask = unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGTERM);
        libc::sigaddset(&mut block, libc::SIGINT);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_BLOCK, &block, &mut old);
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        old
    };
    let q = match Queue::bind(queue, QUEUE_MAX_LEN) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("delay-agent: cannot bind NFQUEUE queue {queue}: {e}");
            return 1;
        }
    };
    println!("ready");
    use std::io::Write;
    let _ = io::stdout().flush();
    eprintln!(
        "delay-agent: queue {queue} bound; holding packets {} ms ± {} ms",
        delay.as_secs_f64() * 1e3,
        jitter.as_secs_f64() * 1e3
    );
    let mut rng = Rng::seeded();
    let mut held: BinaryHeap<Reverse<(Instant, u32)>> = BinaryHeap::new();
    let (mut arrived, mut due) = (Vec::new(), Vec::new());
    let mut released: u64 = 0;
    loop {
        if STOP.load(Ordering::SeqCst) {
            let _ = q.take_packets(&mut arrived);
            due.extend(held.drain().map(|Reverse((_, id))| id));
            due.append(&mut arrived);
            let _ = q.accept(&due);
            eprintln!(
                "delay-agent: stopped; {} packets released early, {} in all",
                due.len(),
                released + due.len() as u64
            );
            return 0;
        }
        let timeout = held.peek().map(|Reverse((at, _))| {
            let left = at.saturating_duration_since(Instant::now());
            libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            }
        });
        let mut pfd = libc::pollfd {
            fd: q.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd; the timeout and mask point to live values (or null = wait without end).
        let n = unsafe {
            libc::ppoll(
                &mut pfd,
                1,
                timeout
                    .as_ref()
                    .map_or(std::ptr::null(), |t| t as *const libc::timespec),
                &waiting_mask,
            )
        };
        if n > 0 {
            if let Err(e) = q.take_packets(&mut arrived) {
                eprintln!("delay-agent: reading the queue failed: {e}");
            }
            let now = Instant::now();
            for id in arrived.drain(..) {
                held.push(Reverse((now + rng.hold_time(delay, jitter), id)));
            }
        }
        let now = Instant::now();
        while let Some(Reverse((at, id))) = held.peek().copied() {
            if at > now {
                break;
            }
            held.pop();
            due.push(id);
        }
        if !due.is_empty() {
            if let Err(e) = q.accept(&due) {
                eprintln!("delay-agent: verdicts failed: {e}");
            }
            released += due.len() as u64;
            due.clear();
        }
    }
}

/// Starts `exe delay-agent` in namespace `ns` on `queue` (its own session, stderr to `log`) and waits until it has
/// bound the queue. Returns its pid.
pub fn start(
    exe: &Path,
    ns: &str,
    queue: u16,
    delay: Duration,
    jitter: Duration,
    log: &Path,
) -> io::Result<u32> {
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir)?;
    }
    let log_file = fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(exe)
        .args([
            SUBCOMMAND,
            "--queue",
            &queue.to_string(),
            "--delay-us",
            &delay.as_micros().to_string(),
            "--jitter-us",
            &jitter.as_micros().to_string(),
        ])
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file);
    // SAFETY: only setsid (async-signal-safe) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let said = rx.recv_timeout(READY_DEADLINE);
    // Reaped by this thread whenever it exits (or by init once faultline is gone).
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    match said {
        Ok(line) if line.trim() == "ready" => Ok(pid),
        Ok(_) => {
            let text = fs::read_to_string(log).unwrap_or_default();
            Err(io::Error::other(format!(
                "the delay agent in {ns} exited before binding queue {queue}: {}",
                text.lines().last().unwrap_or("(no message)")
            )))
        }
        Err(_) => {
            // SAFETY: kill(2) of the child this function started.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            Err(io::Error::other(format!(
                "the delay agent in {ns} did not bind queue {queue} within {} s",
                READY_DEADLINE.as_secs()
            )))
        }
    }
}

/// The network namespace's identity (device, inode), as /proc/PID/ns/net shows it.
fn ns_identity(path: &Path) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// faultline's delay agents running in namespace `ns`: (pid, queue). Only a process whose command line is
/// `.../faultline delay-agent --queue N ...` counts; zombies (empty command line) do not.
pub fn agents_in(ns: &str) -> Vec<(i32, u16)> {
    let Some(want) = ns_identity(&PathBuf::from("/run/netns").join(ns)) else {
        return Vec::new();
    };
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(raw) = fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let Some(queue) = agent_queue(&args) else {
            continue;
        };
        if ns_identity(&p.path().join("ns/net")) == Some(want) {
            found.push((pid, queue));
        }
    }
    found
}

/// The queue of a delay agent's command line; None for any other process.
fn agent_queue(args: &[String]) -> Option<u16> {
    let is_faultline = Path::new(args.first()?)
        .file_name()
        .is_some_and(|n| n == "faultline");
    if !is_faultline || args.get(1).map(String::as_str) != Some(SUBCOMMAND) {
        return None;
    }
    let at = args.iter().position(|a| a == "--queue")?;
    args.get(at + 1)?.parse().ok()
}

/// Stops the delay agents in `ns` (only the one on `queue` when given): SIGTERM, which releases their held packets,
/// then SIGKILL for any still there after a grace period. Returns how many there were.
pub fn stop(ns: &str, queue: Option<u16>) -> usize {
    let pick = || -> Vec<i32> {
        agents_in(ns)
            .into_iter()
            .filter(|(_, q)| queue.is_none_or(|w| w == *q))
            .map(|(pid, _)| pid)
            .collect()
    };
    let first = pick();
    for pid in &first {
        // SAFETY: kill(2) of a process whose command line is faultline's delay agent in this namespace.
        unsafe {
            libc::kill(*pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    while !pick().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in pick() {
        // SAFETY: as above; it ignored SIGTERM past the grace period.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while !pick().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    first.len()
}

/// How many agents (of `queue` only, when given) run in `ns`.
pub fn running(ns: &str, queue: Option<u16>) -> usize {
    agents_in(ns)
        .into_iter()
        .filter(|(_, q)| queue.is_none_or(|w| w == *q))
        .count()
}

/// The lowest queue number no agent or rule uses in `ns` (queues are per network namespace).
pub fn free_queue(ns: &str) -> u16 {
    let mut used: Vec<u16> = agents_in(ns).into_iter().map(|(_, q)| q).collect();
    // Rules that cannot be listed: the queue is picked past the agents' (adding the rules then fails on its own).
    used.extend(super::netns::delay_rule_queues(ns).unwrap_or_default());
    (1..=u16::MAX).find(|q| !used.contains(q)).unwrap_or(1)
}

/// The executable to start agents with: this one when it is faultline, else a `faultline` beside it or one
/// directory up (a test binary in target/debug/deps).
pub fn faultline_exe() -> io::Result<PathBuf> {
    let me = std::env::current_exe()?;
    if me.file_name().is_some_and(|n| n == "faultline") {
        return Ok(me);
    }
    let dir = me.parent().map(Path::to_path_buf).unwrap_or_default();
    [dir.join("faultline"), dir.join("../faultline")]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            io::Error::other(format!(
                "{} is not faultline and no faultline executable is beside it: the delay agent cannot start",
                me.display()
            ))
        })
}

/// Residue of latency faults in `ns`, described; empty when there is none.
pub fn residue(ns: &str) -> Vec<String> {
    let mut found = Vec::new();
    match super::netns::delay_rule_queues(ns) {
        Ok(q) if q.is_empty() => {}
        Ok(_) => found.push(format!(
            "latency NFQUEUE rules (iptables mangle, comment {}) in {ns}",
            super::netns::DELAY_COMMENT
        )),
        Err(e) => found.push(format!(
            "latency rules of {ns} cannot be listed (iptables -t mangle -S): {e}"
        )),
    }
    for (pid, q) in agents_in(ns) {
        found.push(format!("delay agent (pid {pid}, queue {q}) in {ns}"));
    }
    found
}

/// Removes every latency rule, then every delay agent, of `ns` (recover's sweep).
pub fn clear(ns: &str) {
    let _ = super::netns::delete_delay_rules(ns, None);
    stop(ns, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn only_faultlines_delay_agent_is_an_agent() {
        assert_eq!(
            agent_queue(&args(
                "/usr/local/bin/faultline delay-agent --queue 3 --delay-us 100000 --jitter-us 0"
            )),
            Some(3)
        );
        assert_eq!(agent_queue(&args("/bin/sleep delay-agent --queue 3")), None);
        assert_eq!(agent_queue(&args("faultline run --queue 3")), None);
        assert_eq!(agent_queue(&args("faultline delay-agent")), None);
    }

    #[test]
    fn hold_times_stay_within_delay_plus_or_minus_jitter_and_spread_over_it() {
        let mut rng = Rng::seeded();
        let (d, j) = (Duration::from_millis(100), Duration::from_millis(20));
        let samples: Vec<Duration> = (0..10_000).map(|_| rng.hold_time(d, j)).collect();
        assert!(samples.iter().all(|s| *s >= d - j && *s <= d + j));
        let low = samples.iter().filter(|s| **s < d - j / 2).count();
        let high = samples.iter().filter(|s| **s > d + j / 2).count();
        // A quarter of the range each: about 2500 of 10000.
        assert!((2200..2800).contains(&low), "{low}");
        assert!((2200..2800).contains(&high), "{high}");
        assert_eq!(rng.hold_time(d, Duration::ZERO), d);
    }
}
