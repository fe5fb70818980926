//! Live progress of a run on stderr: the scenario, trial and phase, elapsed and (planned) remaining time, operations
//! ok / failed / unknown per second, and each milestone of the timeline as it happens (fault effective, detection,
//! promotion, drill steps, healed). On a terminal a spinner line (indicatif) with the milestones printed above it;
//! in CI or when stderr is piped, plain timestamped lines (a status line every 5 s). `--quiet` prints nothing, `-v`
//! adds the servers' own messages and drill phases. It reads the run's event log and ledger, never writes to the
//! report files.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::events::{EventKind, EventLog};
use crate::ledger::Ledger;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verbosity {
    /// Nothing.
    #[default]
    Quiet,
    Normal,
    Verbose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// A redrawn status line (a terminal).
    Bar,
    /// Plain timestamped lines (CI, pipes, files).
    Lines,
}

impl Style {
    /// A status line only where stderr is a terminal and this is not CI.
    pub fn for_stderr() -> Style {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
        if std::io::stderr().is_terminal() && !ci {
            Style::Bar
        } else {
            Style::Lines
        }
    }
}

/// What the run's progress shows and where.
#[derive(Clone, Default)]
pub struct Progress {
    pub verbosity: Verbosity,
    /// Where plain lines go instead of stderr (tests).
    pub sink: Option<Arc<Mutex<Vec<u8>>>>,
}

/// What the progress knows of the run up front.
pub struct RunPlan {
    pub scenario: String,
    pub trials: u32,
    /// The planned duration of the whole run (baseline, faults, observation, heal settle per trial): the remaining
    /// time counts down from it, and says "over plan" once passed.
    pub planned: Duration,
}

/// A running progress display; `finish` stops it and prints what is still pending.
pub struct ProgressHandle {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ProgressHandle {
    pub async fn finish(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

const TICK: Duration = Duration::from_millis(250);
const STATUS_EVERY: Duration = Duration::from_secs(5);

struct State {
    plan: RunPlan,
    trial: u32,
    phase: String,
    seen: usize,
    started: Instant,
    last_counts: [u64; 3],
    last_at: Instant,
    rate: [f64; 3],
}

impl State {
    fn prefix(&self) -> String {
        format!(
            "[{} trial {}/{}, {}]",
            self.plan.scenario,
            self.trial.max(1),
            self.plan.trials,
            self.phase
        )
    }

    fn status(&self) -> String {
        let elapsed = self.started.elapsed();
        let left = self
            .plan
            .planned
            .checked_sub(elapsed)
            .map_or("over plan".to_string(), |d| {
                format!("~{:.0} s left", d.as_secs_f64())
            });
        format!(
            "{:.1} s elapsed, {left}; ops/s ok {:.0} failed {:.0} unknown {:.0}",
            elapsed.as_secs_f64(),
            self.rate[0],
            self.rate[1],
            self.rate[2]
        )
    }

    /// Reads new events (returns the milestone lines with the events' own wall time: an event derived after the
    /// fact keeps its instant) and the ledger's counts.
    fn update(
        &mut self,
        events: &EventLog,
        ledger: &Ledger,
        verbose: bool,
    ) -> Vec<(SystemTime, String)> {
        let (new, len) = events.since(self.seen);
        self.seen = len;
        let mut lines = Vec::new();
        for e in new {
            self.trial = e.trial;
            match &e.kind {
                EventKind::TrialStarted => self.phase = "waiting for a healthy stack".into(),
                EventKind::BaselineStarted => self.phase = "baseline".into(),
                EventKind::FaultApplied { .. } => self.phase = "fault".into(),
                EventKind::StepStarted { step } => self.phase = format!("step {step}"),
                EventKind::StepFinished { .. } => self.phase = "fault".into(),
                EventKind::HealStarted => self.phase = "heal".into(),
                EventKind::TrialEnded => self.phase = "read-back".into(),
                _ => {}
            }
            let value = serde_json::to_value(&e.kind).unwrap_or_default();
            if let Some(d) = crate::report::describe_event(&value, verbose) {
                lines.push((events.clock().wall(e.at), d));
            }
        }
        let now = Instant::now();
        let counts = ledger.outcome_counts();
        let dt = now.duration_since(self.last_at).as_secs_f64();
        if dt >= 1.0 {
            for ((rate, now), before) in self.rate.iter_mut().zip(counts).zip(self.last_counts) {
                *rate = now.saturating_sub(before) as f64 / dt;
            }
            self.last_counts = counts;
            self.last_at = now;
        }
        lines
    }
}

fn stamp() -> String {
    crate::clock::rfc3339_millis(SystemTime::now())
}

/// Starts the display (nothing at all when quiet).
pub fn spawn(
    progress: &Progress,
    plan: RunPlan,
    events: EventLog,
    ledger: Ledger,
) -> ProgressHandle {
    let (stop, mut stopped) = watch::channel(false);
    if progress.verbosity == Verbosity::Quiet {
        return ProgressHandle { stop, task: None };
    }
    let verbose = progress.verbosity == Verbosity::Verbose;
    let style = if progress.sink.is_some() {
        Style::Lines
    } else {
        Style::for_stderr()
    };
    let sink = progress.sink.clone();
    let now = Instant::now();
    let mut st = State {
        plan,
        trial: 0,
        phase: "starting".into(),
        seen: 0,
        started: now,
        last_counts: [0; 3],
        last_at: now,
        rate: [0.0; 3],
    };
    let task = tokio::spawn(async move {
        let write_line = |line: &str| match &sink {
            Some(buf) => {
                let _ = writeln!(buf.lock().unwrap(), "{line}");
            }
            None => eprintln!("{line}"),
        };
        let bar = (style == Style::Bar).then(|| {
            let pb = indicatif::ProgressBar::new_spinner();
            pb.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            pb
        });
        let mut last_status = Instant::now();
        loop {
            let done = *stopped.borrow();
            for (at, l) in st.update(&events, &ledger, verbose) {
                let line = format!("{} {} {l}", crate::clock::rfc3339_millis(at), st.prefix());
                match &bar {
                    Some(pb) => pb.println(line),
                    None => write_line(&line),
                }
            }
            match &bar {
                Some(pb) => {
                    pb.set_message(format!("{} {}", st.prefix(), st.status()));
                    pb.tick();
                }
                None if last_status.elapsed() >= STATUS_EVERY => {
                    write_line(&format!("{} {} {}", stamp(), st.prefix(), st.status()));
                    last_status = Instant::now();
                }
                None => {}
            }
            if done {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                // The handle was dropped without `finish` (the run ended early): stop too.
                r = stopped.changed() => if r.is_err() { break },
            }
        }
        if let Some(pb) = bar {
            pb.finish_and_clear();
        }
    });
    ProgressHandle {
        stop,
        task: Some(task),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::ledger::{LedgerEntry, OpKind, Outcome};

    fn op(id: u64, outcome: Outcome) -> LedgerEntry {
        let at = crate::clock::Stamp(Duration::from_millis(id));
        LedgerEntry {
            id,
            source: crate::ledger::Source::Component(crate::scenario::ComponentKind::Postgres),
            op: OpKind::Write,
            trial: 1,
            scheduled: at,
            slot: None,
            sent: Some(at),
            done: at,
            outcome,
            error: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plain_lines_show_each_milestone_as_it_happens_and_the_rates() {
        let events = EventLog::new(Clock::start());
        let ledger = Ledger::default();
        let sink: Arc<Mutex<Vec<u8>>> = Arc::default();
        let progress = Progress {
            verbosity: Verbosity::Normal,
            sink: Some(sink.clone()),
        };
        let plan = RunPlan {
            scenario: "kill".into(),
            trials: 1,
            planned: Duration::from_secs(30),
        };
        let h = spawn(&progress, plan, events.clone(), ledger.clone());
        events.set_trial(1);
        events.emit(EventKind::BaselineStarted);
        for i in 0..50 {
            ledger.record(op(i, Outcome::Ok));
        }
        events.emit(EventKind::FaultApplied {
            fault: "SIGKILL patroni@n1".into(),
            victims: vec!["n1".into()],
        });
        tokio::time::sleep(Duration::from_millis(600)).await;
        let so_far = String::from_utf8(sink.lock().unwrap().clone()).unwrap();
        // Printed while the run goes on, not at the end.
        assert!(
            so_far.contains("[kill trial 1/1, fault] fault effective: SIGKILL patroni@n1"),
            "{so_far}"
        );
        ledger.record(op(51, Outcome::Failed));
        events.emit(EventKind::Note {
            message: "a server message".into(),
        });
        events.emit(EventKind::HealStarted);
        tokio::time::sleep(STATUS_EVERY + Duration::from_millis(300)).await;
        h.finish().await;
        let out = String::from_utf8(sink.lock().unwrap().clone()).unwrap();
        let status = out
            .lines()
            .find(|l| l.contains("elapsed"))
            .unwrap_or_else(|| panic!("no status line: {out}"));
        assert!(
            status.contains("[kill trial 1/1, heal]") && status.contains("left"),
            "{status}"
        );
        // Normal verbosity leaves out notes; every line starts with an RFC 3339 stamp.
        assert!(!out.contains("a server message"), "{out}");
        assert!(
            out.lines()
                .all(|l| l.starts_with("20") && l.contains("Z [kill")),
            "{out}"
        );
    }

    #[tokio::test]
    async fn quiet_prints_nothing() {
        let sink: Arc<Mutex<Vec<u8>>> = Arc::default();
        let progress = Progress {
            verbosity: Verbosity::Quiet,
            sink: Some(sink.clone()),
        };
        let events = EventLog::new(Clock::start());
        let h = spawn(
            &progress,
            RunPlan {
                scenario: "x".into(),
                trials: 1,
                planned: Duration::from_secs(1),
            },
            events.clone(),
            Ledger::default(),
        );
        events.emit(EventKind::HealStarted);
        h.finish().await;
        assert!(sink.lock().unwrap().is_empty());
    }
}
