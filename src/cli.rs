//! The command line: a thin layer over the engine, the targets and the reporters. Every command returns an
//! exit code from `exit`. The Kubernetes side (`--target kind|kube`) lives in `cli/kube.rs`.

mod kube;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::sync::watch;

use crate::component::{postgres, qdrant as qdrant_component, redis as redis_component};
use crate::engine::{self, RunOptions};
use crate::exit;
use crate::fault::journal::Journal;
use crate::input_error::{InputError, InputErrors};
use crate::report::{self, SuiteEntry};
use crate::scenario::{self, Scenario};
use crate::settings::StackSettings;
use crate::targets::local::{
    delay_agent, lock, netns, process, LocalStack, QdrantPresence, StateDir,
};
use crate::targets::{components_needed, Target, TargetError};
use crate::topology::{self, Topology};
use kube::TargetArgs;

/// The topology used when neither the command line nor the scenario names one.
const DEFAULT_TOPOLOGY: &str = include_str!("../fixtures/topologies/three-node.yaml");

#[derive(Parser, Debug)]
#[command(
    name = "faultline",
    version,
    about = "Chaos and failover test harness for an HA Postgres/Redis stack"
)]
pub struct Cli {
    /// State directory of the local stack [env: FAULTLINE_STATE_DIR, default /var/tmp/faultline]
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    /// No live progress on stderr during runs (the summary and reports are unchanged).
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Live progress with the servers' own messages and every drill phase.
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

/// The live progress the command line asked for (set once in `main`).
static PROGRESS: std::sync::OnceLock<crate::progress::Verbosity> = std::sync::OnceLock::new();

#[derive(Subcommand, Debug)]
enum Command {
    /// Bring the stack up: locally (etcd, Patroni/PostgreSQL, Redis, Sentinel on network-namespace nodes), on
    /// faultline's kind cluster (created unless it exists), or on an existing cluster (only with --deploy).
    Up {
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Stack settings (executables, DCS API, HA timing); see fixtures/settings/default.yaml.
        #[arg(long)]
        settings: Option<PathBuf>,
        #[command(flatten)]
        on: TargetArgs,
        /// --target kube: apply the manifests of kind/manifests/ to the namespace (never without it)
        #[arg(long)]
        deploy: bool,
    },
    /// Tear the stack down: the local stack (works after a crash of faultline too) or the kind cluster.
    Down {
        #[command(flatten)]
        on: TargetArgs,
    },
    /// Show nodes, members, roles, health and open fault journal entries.
    Status {
        #[command(flatten)]
        on: TargetArgs,
    },
    /// Validate scenario, suite or topology files without starting anything.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run one scenario (bringing the stack up if needed).
    Run {
        scenario: PathBuf,
        #[arg(long)]
        settings: Option<PathBuf>,
        /// Where run directories are written [env: FAULTLINE_REPORTS_DIR, default ./reports]
        #[arg(long)]
        reports_dir: Option<PathBuf>,
        /// Print which members and nodes each fault would hit right now, and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        on: TargetArgs,
    },
    /// Run every scenario of a suite in order, with one summary and one exit code.
    Suite {
        suite: PathBuf,
        #[arg(long)]
        settings: Option<PathBuf>,
        #[arg(long)]
        reports_dir: Option<PathBuf>,
        #[command(flatten)]
        on: TargetArgs,
    },
    /// Take a backup now: a pgBackRest backup of PostgreSQL into the repository on the backup node, and a Redis
    /// RDB snapshot copied into the backup node's store.
    Backup {
        /// pgBackRest backup type.
        #[arg(long = "type", value_enum, default_value = "full")]
        kind: crate::backup::BackupType,
        #[command(flatten)]
        on: TargetArgs,
    },
    /// Revert every fault still open in the journal, clean up residue, and bring every member back.
    Recover {
        #[command(flatten)]
        on: TargetArgs,
    },
    /// Re-check a run directory's evidence: every file against its SHA256SUMS (exit 0 intact, 1 changed, 2 no or
    /// malformed manifest).
    Verify {
        /// A run directory (reports/<run>).
        dir: PathBuf,
    },
    /// Print the JSON Schema of a file kind (also shipped in schemas/), for editors and CI checks.
    Schema {
        #[arg(value_enum)]
        kind: SchemaKind,
    },
    /// Each metric's trend over a scenario's last runs, from the run history in the reports directory.
    History {
        /// A scenario name (as in its file's `name:`); every scenario with runs when omitted.
        scenario: Option<String>,
        /// How many runs to show.
        #[arg(long, default_value_t = 10)]
        last: usize,
        /// The reports directory [env: FAULTLINE_REPORTS_DIR, default ./reports]
        #[arg(long)]
        reports_dir: Option<PathBuf>,
    },
    /// The latency fault's packet delayer, which faultline starts inside a node's namespace (not for users).
    #[command(hide = true)]
    DelayAgent {
        #[arg(long)]
        queue: u16,
        #[arg(long)]
        delay_us: u64,
        #[arg(long, default_value_t = 0)]
        jitter_us: u64,
    },
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    if let Command::DelayAgent {
        queue,
        delay_us,
        jitter_us,
    } = cli.command
    {
        return crate::targets::local::delay_agent::run(
            queue,
            Duration::from_micros(delay_us),
            Duration::from_micros(jitter_us),
        );
    }
    let _ = PROGRESS.set(match (cli.quiet, cli.verbose) {
        (true, _) => crate::progress::Verbosity::Quiet,
        (_, true) => crate::progress::Verbosity::Verbose,
        _ => crate::progress::Verbosity::Normal,
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::ENVIRONMENT;
        }
    };
    rt.block_on(dispatch(cli))
}

/// `faultline history [SCENARIO]`: per scenario, each judged metric's values over the last runs (oldest first),
/// the latest run's comparison with the runs before it.
fn history(scenario: Option<String>, last: usize, reports_dir: Option<PathBuf>) -> i32 {
    use crate::history::{higher_is_better, regressions, History, MIN_RUNS};
    let reports_dir = reports_dir.unwrap_or_else(engine::default_reports_dir);
    if !reports_dir.join(crate::history::FILE).exists() {
        return report_env(format!(
            "no run history in {} (it is written by every run)",
            reports_dir.display()
        ));
    }
    let h = match History::open(&reports_dir) {
        Ok(h) => h,
        Err(e) => return report_env(e),
    };
    let scenarios = match scenario {
        Some(s) if h.scenarios().contains(&s) => vec![s],
        Some(s) => {
            eprintln!(
                "error: no run of scenario `{s}` in the history (scenarios with runs: {})",
                h.scenarios().join(", ")
            );
            return exit::INVALID_INPUT;
        }
        None => h.scenarios(),
    };
    for sc in scenarios {
        let runs = h.runs(&sc, last.max(1));
        let Some(latest) = runs.last() else { continue };
        println!(
            "{sc}: {} run(s), {} to {}",
            runs.len(),
            runs[0].started_at,
            latest.started_at
        );
        let verdicts: Vec<&str> = runs.iter().map(|r| r.verdict.as_str()).collect();
        println!("  verdicts (oldest first): {}", verdicts.join(" "));
        let values: std::collections::BTreeMap<String, Option<f64>> = latest
            .values
            .iter()
            .map(|(k, v)| (k.clone(), Some(*v)))
            .collect();
        let flagged = regressions(&values, |m| {
            h.values(&sc, m, &latest.run_id, crate::history::WINDOW)
        });
        let mut b = tabled::builder::Builder::default();
        b.push_record(["metric", "values, oldest first", "latest vs earlier"]);
        let metrics: std::collections::BTreeSet<&String> =
            runs.iter().flat_map(|r| r.values.keys()).collect();
        for m in metrics {
            if higher_is_better(m).is_none() {
                continue;
            }
            let trend: Vec<String> = runs
                .iter()
                .map(|r| r.values.get(m).map_or("-".into(), |v| format!("{v:.3}")))
                .collect();
            let earlier = h.values(&sc, m, &latest.run_id, crate::history::WINDOW);
            let verdict = match flagged.iter().find(|r| &r.metric == m) {
                Some(r) => format!(
                    "REGRESSION (median {:.3}, spread {:.3})",
                    r.median, r.spread
                ),
                None if earlier.len() < MIN_RUNS => "too few earlier runs".into(),
                None => "ok".into(),
            };
            b.push_record([m.clone(), trend.join(" "), verdict]);
        }
        println!("{}\n", b.build().with(tabled::settings::Style::sharp()));
    }
    exit::PASS
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum SchemaKind {
    Scenario,
    Suite,
    Topology,
    Settings,
}

/// The JSON Schema of a kind of input file, pretty-printed (what schemas/<kind>.schema.json holds).
pub fn schema_text(kind: SchemaKind) -> String {
    let v = match kind {
        SchemaKind::Scenario => scenario::scenario_schema(),
        SchemaKind::Suite => scenario::suite_schema(),
        SchemaKind::Topology => topology::topology_schema(),
        SchemaKind::Settings => StackSettings::json_schema(),
    };
    serde_json::to_string_pretty(&v).expect("a schema serialises")
}

/// `faultline verify DIR`: the manifest re-checked, every difference named.
fn verify(dir: &Path) -> i32 {
    match report::evidence::verify(dir) {
        Err(e) => {
            eprintln!("error: {e}");
            exit::INVALID_INPUT
        }
        Ok(v) if v.intact() => {
            println!(
                "{}: intact ({} files match {})",
                dir.display(),
                v.checked,
                report::evidence::MANIFEST
            );
            exit::PASS
        }
        Ok(v) => {
            for p in &v.changed {
                println!("CHANGED  {p}");
            }
            for p in &v.missing {
                println!("MISSING  {p}");
            }
            for p in &v.unlisted {
                println!("ADDED    {p} (not in the manifest)");
            }
            println!(
                "{}: NOT intact: {} changed, {} missing, {} added of {} listed",
                dir.display(),
                v.changed.len(),
                v.missing.len(),
                v.unlisted.len(),
                v.checked
            );
            exit::THRESHOLD_FAILED
        }
    }
}

fn default_topology() -> Topology {
    topology::parse_topology(
        DEFAULT_TOPOLOGY,
        Path::new("fixtures/topologies/three-node.yaml"),
    )
    .expect("the built-in default topology is valid")
}

/// A scenario validated against the built-in default topology; invalid input is reported (exit 2).
fn load_scenario(path: &Path) -> Result<Scenario, i32> {
    scenario::load_scenario(path, Some(&default_topology())).map_err(|e| report_input(&e))
}

/// A suite validated against the built-in default topology; invalid input is reported (exit 2).
fn load_suite(path: &Path) -> Result<scenario::Suite, i32> {
    scenario::load_suite(path, Some(&default_topology())).map_err(|e| report_input(&e))
}

fn report_input(e: &InputErrors) -> i32 {
    let mut sorted = e.clone();
    sorted
        .0
        .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    eprintln!("{sorted}");
    let n = e.0.len();
    eprintln!(
        "{n} error{} found; nothing was started",
        if n == 1 { "" } else { "s" }
    );
    exit::INVALID_INPUT
}

fn report_env(e: impl std::fmt::Display) -> i32 {
    eprintln!("error: {e}");
    exit::ENVIRONMENT
}

/// The commands that read or write files only, whatever the target: None for the others.
fn files_only(command: &Command) -> Option<i32> {
    Some(match command {
        Command::Validate { files } => validate(files),
        Command::Verify { dir } => verify(dir),
        Command::Schema { kind } => {
            println!("{}", schema_text(*kind));
            exit::PASS
        }
        Command::History {
            scenario,
            last,
            reports_dir,
        } => history(scenario.clone(), *last, reports_dir.clone()),
        _ => return None,
    })
}

async fn dispatch(cli: Cli) -> i32 {
    if let Some(code) = files_only(&cli.command) {
        return code;
    }
    let dir = StateDir::new(cli.state_dir.clone().unwrap_or_else(StateDir::default_path));
    let on = match &cli.command {
        Command::Up { on, .. }
        | Command::Down { on }
        | Command::Status { on }
        | Command::Run { on, .. }
        | Command::Suite { on, .. }
        | Command::Backup { on, .. }
        | Command::Recover { on } => Some(on.clone()),
        Command::Validate { .. }
        | Command::Verify { .. }
        | Command::History { .. }
        | Command::Schema { .. }
        | Command::DelayAgent { .. } => None,
    };
    if let Some(on) = &on {
        if let Err(e) = on.check() {
            eprintln!("error: {e}");
            return exit::INVALID_INPUT;
        }
        if let Command::Up { deploy: true, .. } = cli.command {
            if on.target != kube::TargetKind::Kube {
                eprintln!("error: --deploy applies to --target kube only (kind always deploys)");
                return exit::INVALID_INPUT;
            }
        }
        if !on.is_local() {
            return dispatch_kube(dir, cli.command, on).await;
        }
    }
    match cli.command {
        Command::Up {
            topology, settings, ..
        } => {
            let topo = match topology {
                Some(p) => match topology::load_topology(&p) {
                    Ok(t) => t,
                    Err(e) => return report_input(&e),
                },
                None => default_topology(),
            };
            let settings = match StackSettings::load(settings.as_deref()) {
                Ok(s) => s,
                Err(e) => return report_input(&e),
            };
            let started = std::time::Instant::now();
            let _lock = match take_lock(&dir) {
                Ok(l) => l,
                Err(code) => return code,
            };
            match LocalStack::up(dir, topo, settings).await {
                Ok(stack) => {
                    say_if_qdrant_absent(&stack);
                    println!(
                        "stack `{}` is up and healthy ({:.1} s); state in {}",
                        stack.topology().name,
                        started.elapsed().as_secs_f64(),
                        stack.dir.root.display()
                    );
                    exit::PASS
                }
                Err(e) => report_env(e),
            }
        }
        Command::Down { .. } => match take_lock(&dir) {
            Err(code) => code,
            Ok(_lock) => down(dir).await,
        },
        Command::Status { .. } => status(dir).await,
        Command::Validate { .. }
        | Command::Verify { .. }
        | Command::Schema { .. }
        | Command::History { .. }
        | Command::DelayAgent { .. } => {
            unreachable!("files-only commands are run before a target is chosen")
        }
        Command::Run {
            scenario,
            settings,
            reports_dir,
            dry_run,
            ..
        } => {
            let sc = match load_scenario(&scenario) {
                Ok(s) => s,
                Err(code) => return code,
            };
            if dry_run {
                return dry_run_plan(dir, &sc).await;
            }
            run_many(dir, vec![sc], None, settings, reports_dir, None).await
        }
        Command::Suite {
            suite,
            settings,
            reports_dir,
            ..
        } => {
            let s = match load_suite(&suite) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let name = s.name.clone();
            run_many(dir, s.scenarios, Some(name), settings, reports_dir, None).await
        }
        Command::Recover { .. } => recover(dir).await,
        Command::Backup { kind, .. } => match take_lock(&dir) {
            Err(code) => code,
            Ok(_lock) => backup(dir, kind).await,
        },
    }
}

async fn backup(dir: StateDir, kind: crate::backup::BackupType) -> i32 {
    let stack = match LocalStack::open(dir.clone()) {
        Ok(Some(s)) => s,
        Ok(None) => {
            eprintln!(
                "error: no stack is recorded in {}; run `faultline up` first",
                dir.root.display()
            );
            return exit::ENVIRONMENT;
        }
        Err(e) => return report_env(e),
    };
    match stack.backup(kind).await {
        Ok(b) => {
            println!(
                "postgres: {} backup {} in {} ({:.1} s)",
                kind.name(),
                b.postgres,
                stack.repository_label(),
                b.postgres_seconds
            );
            let r = &b.redis;
            println!(
                "redis: {} from {} ({} keys, {} bytes)",
                r.file, r.source, r.keys, r.bytes
            );
            for s in &b.qdrant {
                println!(
                    "qdrant: {} from {} ({} bytes, sha256 {})",
                    s.file, s.peer, s.bytes, s.sha256
                );
            }
            exit::PASS
        }
        Err(e) => {
            eprintln!("error: backup failed: {e}");
            exit::ENVIRONMENT
        }
    }
}

/// The commands with `--target kind|kube`. Runs and recoveries take the same run lock and use the same fault
/// journal (in the state directory) as on the local stack.
async fn dispatch_kube(dir: StateDir, command: Command, on: &TargetArgs) -> i32 {
    match command {
        Command::Up { deploy, .. } => match take_lock(&dir) {
            Err(code) => code,
            Ok(_lock) => kube::up(on, deploy).await,
        },
        Command::Down { .. } => match take_lock(&dir) {
            Err(code) => code,
            Ok(_lock) => kube::down(on).await,
        },
        Command::Status { .. } => kube::status(on, &Journal::new(dir.journal_dir())).await,
        Command::Run {
            scenario,
            settings,
            reports_dir,
            dry_run,
            ..
        } => {
            let sc = match load_scenario(&scenario) {
                Ok(s) => s,
                Err(code) => return code,
            };
            if dry_run {
                print_schedule(&sc);
                return kube::dry_run(on, &sc).await;
            }
            run_many(dir, vec![sc], None, settings, reports_dir, Some(on)).await
        }
        Command::Suite {
            suite,
            settings,
            reports_dir,
            ..
        } => {
            let s = match load_suite(&suite) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let name = s.name.clone();
            run_many(
                dir,
                s.scenarios,
                Some(name),
                settings,
                reports_dir,
                Some(on),
            )
            .await
        }
        Command::Recover { .. } => match take_lock(&dir) {
            Err(code) => code,
            Ok(lock) => {
                let code = kube::recover(on, &Journal::new(dir.journal_dir())).await;
                lock::release(lock);
                code
            }
        },
        Command::Validate { .. }
        | Command::Verify { .. }
        | Command::Schema { .. }
        | Command::History { .. }
        | Command::DelayAgent { .. } => {
            unreachable!("files-only commands are run before a target is chosen")
        }
        Command::Backup { .. } => {
            eprintln!(
                "error: `faultline backup` runs on the local stack only: on Kubernetes, backups belong to the \
                 cluster's operator (pgBackRest or WAL-G sidecars, Redis and Qdrant snapshots to object storage), \
                 which faultline does not deploy"
            );
            exit::ENVIRONMENT
        }
    }
}

/// `run --dry-run`: the scenario's timeline and, against the live stack, the members and nodes each fault would
/// hit now. Changes nothing (no lock, no journal entry, no stack start).
async fn dry_run_plan(dir: StateDir, sc: &Scenario) -> i32 {
    print_schedule(sc);
    let stack = match LocalStack::open(dir.clone()) {
        Ok(Some(s)) if s.any_process_running() => s,
        Ok(_) => {
            println!("target local: no running stack in {}; role selectors are resolved when the run starts", dir.root.display());
            for f in &sc.faults {
                println!("  at +{}: {:?}", humantime::format_duration(f.at), f.kind);
            }
            return exit::PASS;
        }
        Err(e) => return report_env(e),
    };
    if let Some(wanted) = sc
        .topology
        .as_deref()
        .and_then(|p| topology::load_topology(p).ok())
    {
        if wanted.name != stack.topology().name {
            return report_env(format!(
                "the stack in {} runs topology `{}` but the scenario needs `{}`; a run would refuse it \
                 (run `faultline down` first, or use another --state-dir)",
                dir.root.display(),
                stack.topology().name,
                wanted.name
            ));
        }
    }
    match crate::fault::plan::plan(&stack, &sc.faults).await {
        Ok(lines) => {
            println!(
                "target local (stack `{}`), resolved against the servers now:",
                stack.topology().name
            );
            for l in lines {
                println!("  {l}");
            }
            exit::PASS
        }
        Err(e) => report_env(e),
    }
}

/// The component whose clients `client_path` routes: PostgreSQL's whenever the path is not direct.
fn routed_component(sc: &Scenario) -> crate::scenario::ComponentKind {
    match sc.client_path {
        crate::scenario::ClientPath::Direct => sc.component,
        _ => crate::scenario::ComponentKind::Postgres,
    }
}

/// The first line of a dry run: the scenario's schedule.
fn print_schedule(sc: &Scenario) {
    println!(
        "scenario `{}` ({}): {} trial(s); baseline {}, observe {}, heal within {}",
        sc.name,
        sc.components
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", "),
        sc.trials,
        humantime::format_duration(sc.baseline),
        humantime::format_duration(sc.observe),
        humantime::format_duration(sc.heal.timeout)
    );
}

/// Holds the run lock for a command that changes the stack (`up`, `down`); a live run makes it refuse.
fn take_lock(dir: &StateDir) -> Result<lock::RunLock, i32> {
    if let Err(e) = dir.check_ownership() {
        return Err(report_env(e));
    }
    match lock::acquire(&dir.root) {
        Ok((l, lock::LockOutcome::Acquired)) => Ok(l),
        Ok((l, lock::LockOutcome::TookOverStale(holder))) => {
            eprintln!("warning: took over a stale run lock ({holder} is gone)");
            Ok(l)
        }
        Err(e) => Err(report_env(e)),
    }
}

async fn down(dir: StateDir) -> i32 {
    match LocalStack::down(dir).await {
        Ok(notes) => {
            for n in notes {
                println!("{n}");
            }
            println!("stack is down");
            exit::PASS
        }
        Err(e) => report_env(e),
    }
}

/// `up` without a Qdrant executable still succeeds; it says why Qdrant was left out.
fn say_if_qdrant_absent(stack: &LocalStack) {
    if let QdrantPresence::Absent { reason } = &stack.state.qdrant {
        eprintln!("qdrant: {reason}");
    }
}

/// Validates each file as a suite, topology or scenario depending on its top-level keys.
fn validate(files: &[PathBuf]) -> i32 {
    let mut errors: Vec<InputError> = Vec::new();
    let default = default_topology();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let has_key = |k: &str| text.lines().any(|l| l.starts_with(&format!("{k}:")));
        let result = if has_key("scenarios") {
            scenario::load_suite(f, Some(&default))
                .map(|s| format!("suite `{}` ({} scenarios)", s.name, s.scenarios.len()))
        } else if has_key("nodes") {
            topology::load_topology(f)
                .map(|t| format!("topology `{}` ({} nodes)", t.name, t.nodes.len()))
        } else {
            scenario::load_scenario(f, Some(&default)).map(|s| {
                format!(
                    "scenario `{}`: {} fault(s), {} threshold(s), {} trial(s)",
                    s.name,
                    s.faults.len(),
                    s.thresholds.len(),
                    s.trials
                )
            })
        };
        match result {
            Ok(summary) => println!("{}: ok, {summary}", f.display()),
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        exit::PASS
    } else {
        report_input(&InputErrors(errors))
    }
}

/// SIGINT/SIGTERM counter: the engine stops injecting at the first signal and always reverts.
fn install_signal_handlers() -> watch::Receiver<u32> {
    let (tx, rx) = watch::channel(0u32);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            let n = *tx.borrow() + 1;
            eprintln!(
                "faultline: signal received ({n}); stopping the run and reverting every applied fault{}",
                if n > 1 { " (already in progress)" } else { "" }
            );
            let _ = tx.send(n);
        }
    });
    rx
}

/// The local stack a scenario runs on. A stack of another topology is an error for `run`; a suite (whose
/// scenarios may need different topologies, like the monthly drills) replaces it, saying so, when nothing of it
/// is left to revert.
async fn ensure_stack(
    dir: &StateDir,
    topo: Topology,
    settings: Option<PathBuf>,
    replace_other_topology: bool,
) -> Result<LocalStack, i32> {
    let settings = match StackSettings::load(settings.as_deref()) {
        Ok(s) => s,
        Err(e) => return Err(report_input(&e)),
    };
    match LocalStack::open(dir.clone()) {
        Ok(Some(stack)) if stack.topology().name != topo.name => {
            let open = Journal::new(dir.journal_dir()).open_entries();
            if !replace_other_topology || !open.is_empty() {
                return Err(report_env(format!(
                    "the stack in {} runs topology `{}` but the scenario needs `{}`; run `faultline down` first{}",
                    dir.root.display(),
                    stack.topology().name,
                    topo.name,
                    if open.is_empty() {
                        ""
                    } else {
                        " (after `faultline recover`: its fault journal has open entries)"
                    }
                )));
            }
            eprintln!(
                "the suite's next scenario needs topology `{}`: taking the `{}` stack down (its data and backups \
                 with it) and bringing `{}` up",
                topo.name,
                stack.topology().name,
                topo.name
            );
            LocalStack::down(dir.clone()).await.map_err(report_env)?;
            let stack = LocalStack::up(dir.clone(), topo, settings)
                .await
                .map_err(report_env)?;
            say_if_qdrant_absent(&stack);
            Ok(stack)
        }
        Ok(Some(stack)) if stack.any_process_running() => Ok(stack),
        Ok(_) => {
            eprintln!("bringing the local stack `{}` up...", topo.name);
            let stack = LocalStack::up(dir.clone(), topo, settings)
                .await
                .map_err(report_env)?;
            say_if_qdrant_absent(&stack);
            Ok(stack)
        }
        Err(e) => Err(report_env(e)),
    }
}

async fn run_many(
    dir: StateDir,
    scenarios: Vec<Scenario>,
    suite: Option<String>,
    settings: Option<PathBuf>,
    reports_dir: Option<PathBuf>,
    on: Option<&TargetArgs>,
) -> i32 {
    let reports_dir = reports_dir.unwrap_or_else(engine::default_reports_dir);
    if on.is_some() {
        // Refused before anything is touched: a drill half-run on a cluster faultline cannot restore would leave
        // it broken.
        if let Some(sc) = scenarios.iter().find(|s| s.is_drill()) {
            eprintln!(
                "error: {}: scenario `{}` is a disaster-recovery drill, and drills run on the local stack only. On \
                 Kubernetes faultline has no backup repository it provisions (pgBackRest repository host, WAL \
                 archive, RDB and snapshot stores), no restore procedure for the operator's manifests (Patroni \
                 bootstrap from a backup, replica re-creation) and no corruption fault; run it with --target local",
                sc.source.display(),
                sc.name
            );
            return exit::ENVIRONMENT;
        }
    }
    if let Err(e) = dir.check_ownership() {
        return report_env(e);
    }
    let lock = match lock::acquire(&dir.root) {
        Ok((l, lock::LockOutcome::Acquired)) => l,
        Ok((l, lock::LockOutcome::TookOverStale(holder))) => {
            eprintln!("warning: took over a stale run lock ({holder} is gone)");
            l
        }
        Err(e) => return report_env(e),
    };
    let kube_target = match on {
        // On Kubernetes the settings give the Qdrant collection and synchronous mode; the HA timing and the
        // executables are the manifests'.
        Some(on) => match (
            StackSettings::load(settings.as_deref()),
            kube::connect(on).await,
        ) {
            (Ok(s), Ok(mut t)) => {
                t.settings = s;
                Some(t)
            }
            (Err(e), _) => {
                lock::release(lock);
                return report_input(&e);
            }
            (_, Err(e)) => {
                lock::release(lock);
                return report_env(e);
            }
        },
        None => None,
    };
    let code = run_locked(
        dir,
        scenarios,
        suite,
        settings,
        reports_dir,
        kube_target.as_ref(),
    )
    .await;
    lock::release(lock);
    code
}

async fn run_locked(
    dir: StateDir,
    scenarios: Vec<Scenario>,
    suite: Option<String>,
    settings: Option<PathBuf>,
    reports_dir: PathBuf,
    kube_target: Option<&crate::targets::kube::KubeTarget>,
) -> i32 {
    let intr = install_signal_handlers();
    let mut entries: Vec<SuiteEntry> = Vec::new();
    let mut worst = exit::PASS;
    for sc in &scenarios {
        if *intr.borrow() > 0 {
            break;
        }
        let opts = RunOptions {
            reports_dir: reports_dir.clone(),
            journal: Journal::new(dir.journal_dir()),
            settings_file: settings.clone(),
            progress: crate::progress::Progress {
                verbosity: PROGRESS.get().copied().unwrap_or_default(),
                sink: None,
            },
        };
        let outcome = if let Some(target) = kube_target {
            // Before anything is applied: the pods now, the namespace's opt-in, the components needed.
            if let Err(e) = kube::prepare_scenario(target, sc).await {
                return report_env(format!("scenario `{}`: {e}", sc.name));
            }
            if let Err(e) = target.client_component(routed_component(sc), sc.client_path) {
                return report_env(format!("scenario `{}`: {e}", sc.name));
            }
            eprintln!("running scenario `{}` ({})", sc.name, sc.source.display());
            engine::run_scenario(target, sc, &opts, intr.clone()).await
        } else {
            let topo = match &sc.topology {
                Some(p) => match topology::load_topology(p) {
                    Ok(t) => t,
                    Err(e) => return report_input(&e),
                },
                None => default_topology(),
            };
            let stack = match ensure_stack(&dir, topo, settings.clone(), suite.is_some()).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            // A stack with destroyed nodes is not the layout any scenario was written for: its health would count
            // only the survivors.
            let lost = stack.lost_nodes();
            if !lost.is_empty() {
                return report_env(format!(
                    "nodes {} of the stack are lost (destroyed by a run that did not finish); run `faultline \
                     recover` to rebuild them first",
                    lost.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
            // Before anything is applied: a scenario that needs a component the stack does not run.
            if let Err(e) = stack.check_components(&components_needed(sc)) {
                return report_env(format!("scenario `{}`: {e}", sc.name));
            }
            if let Err(e) = stack.client_component(routed_component(sc), sc.client_path) {
                return report_env(format!("scenario `{}`: {e}", sc.name));
            }
            eprintln!("running scenario `{}` ({})", sc.name, sc.source.display());
            engine::run_scenario(&stack, sc, &opts, intr.clone()).await
        };
        match outcome {
            Ok(outcome) => {
                println!("{}", report::terminal_summary(&outcome.report));
                println!("report: {}", outcome.run_dir.join("report.json").display());
                report::markdown::append_step_summary(&report::markdown::run_markdown(
                    &outcome.report,
                    &outcome.run_dir,
                ));
                worst = worse(worst, outcome.report.exit_code);
                entries.push(SuiteEntry {
                    run_dir: outcome.run_dir,
                    report: outcome.report,
                });
                if worst == exit::INTERRUPTED || worst == exit::ENVIRONMENT {
                    break;
                }
            }
            Err(e) => return report_env(format!("cannot write the report: {e}")),
        }
    }
    if let Some(name) = suite {
        let suite_dir = reports_dir.join(engine::new_run_id(&name));
        if let Err(e) = report::write_suite(&suite_dir, &name, &entries) {
            return report_env(format!("cannot write the suite report: {e}"));
        }
        let reports: Vec<_> = entries.iter().map(|e| e.report.clone()).collect();
        println!("{}", report::terminal_suite_summary(&reports));
        let refs: Vec<&report::RunReport> = reports.iter().collect();
        report::markdown::append_step_summary(&format!(
            "## faultline suite `{name}`: **{:?}** ({} scenario(s); suite report `{}`)\n\n",
            report::suite_verdict(&refs),
            reports.len(),
            suite_dir.join("suite-report.html").display()
        ));
        println!(
            "suite report: {}",
            suite_dir.join("suite-report.json").display()
        );
        if entries.len() < scenarios.len() && worst == exit::PASS {
            worst = exit::INTERRUPTED;
        }
    }
    worst
}

/// Interrupted beats environment beats threshold failure beats pass.
fn worse(a: i32, b: i32) -> i32 {
    let rank = |c: i32| match c {
        exit::INTERRUPTED => 4,
        exit::ENVIRONMENT => 3,
        exit::INVALID_INPUT => 2,
        exit::THRESHOLD_FAILED => 1,
        _ => 0,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// Residue of faults on the stack's own namespaces and cgroups: rules, stopped processes, links down,
/// members not running.
fn residue(stack: &LocalStack) -> Vec<String> {
    let t = stack.topology();
    let mut found = Vec::new();
    let existing = netns::existing_namespaces();
    for n in &t.nodes {
        let ns = t.namespace(&n.name);
        if !existing.contains(&ns) {
            found.push(format!("namespace {ns} is missing"));
            continue;
        }
        if netns::has_rules(&ns) {
            found.push(format!("nft table inet {} in {ns}", netns::NFT_TABLE));
        }
        if netns::has_shaping(&ns) {
            found.push(format!("bandwidth shaping (htb) on eth0 in {ns}"));
        }
        found.extend(delay_agent::residue(&ns));
        if !netns::link_is_up(t, &n.name) {
            found.push(format!("link of {} is down", n.name));
        }
    }
    if !netns::link_exists(&t.network.bridge) {
        found.push(format!("bridge {} is missing", t.network.bridge));
    }
    for ns in existing {
        if ns.starts_with(&t.network.namespace_prefix)
            && !t.nodes.iter().any(|n| t.namespace(&n.name) == ns)
        {
            // Same prefix, not one of this stack's nodes: reported, never touched (it is not recorded as ours).
            found.push(format!(
                "namespace {ns} has this stack's prefix but is not one of its nodes; not touching it"
            ));
        }
    }
    for (n, k) in stack.members() {
        let cg = stack.cgroup(&n, k);
        if !process::stopped_pids(&cg).is_empty() {
            found.push(format!("{} on {n} is stopped", k.name()));
        }
        if process::cgroup_pids(&cg).is_empty() {
            found.push(format!("{} on {n} is not running", k.name()));
        }
    }
    found
}

async fn status(dir: StateDir) -> i32 {
    let stack = match LocalStack::open(dir.clone()) {
        Ok(Some(s)) => s,
        Ok(None) => {
            println!("no stack is recorded in {}", dir.root.display());
            let orphans: Vec<String> = netns::existing_namespaces()
                .into_iter()
                .filter(|n| n.starts_with("fl-") || n.starts_with("fl2-"))
                .collect();
            if !orphans.is_empty() {
                println!(
                    "residue: namespaces that look like faultline's but belong to no recorded stack (not touched; \
                     remove with `ip netns delete NAME` if they are yours): {}",
                    orphans.join(", ")
                );
            }
            return exit::PASS;
        }
        Err(e) => return report_env(e),
    };
    let t = stack.topology();
    println!("stack `{}` (state in {})", t.name, dir.root.display());
    for n in &t.nodes {
        let procs: Vec<String> = stack
            .members_on(&n.name)
            .into_iter()
            .map(|k| {
                let pids = stack.pids(&n.name, k).len();
                let stopped = process::stopped_pids(&stack.cgroup(&n.name, k)).len();
                match (pids, stopped) {
                    (0, _) => format!("{}: DOWN", k.name()),
                    (p, 0) => format!("{}: {p} proc", k.name()),
                    (p, s) => format!("{}: {p} proc, {s} STOPPED", k.name()),
                }
            })
            .collect();
        println!(
            "  {:<4} {:<6} {:<4} {:<15} link {:<4} {}",
            n.name,
            n.zone,
            n.region,
            n.addr,
            if netns::link_is_up(t, &n.name) {
                "up"
            } else {
                "DOWN"
            },
            procs.join(", ")
        );
    }
    let lost = stack.lost_nodes();
    if !lost.is_empty() {
        println!(
            "lost nodes (destroyed; the stack runs in its surviving layout until `faultline recover` rebuilds \
             them): {}",
            lost.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    let open = Journal::new(dir.journal_dir()).open_entries();
    if open.is_empty() {
        println!("fault journal: no open entry");
    } else {
        for e in &open {
            println!(
                "fault journal: OPEN {} ({}, pid {}, since {})",
                e.id, e.description, e.pid, e.opened_at
            );
        }
    }
    let res = residue(&stack);
    for r in &res {
        println!("residue: {r}");
    }
    if let QdrantPresence::Absent { reason } = &stack.state.qdrant {
        println!("qdrant: absent ({reason})");
    }
    if let Some(b) = stack.backup_health().await {
        for line in b.lines() {
            println!("backups: {line}");
        }
    }
    match stack.health_once().await {
        Ok(h) => {
            println!("health: ok ({})", h.summary());
            exit::PASS
        }
        Err(e) => {
            println!("health: NOT healthy: {e}");
            exit::ENVIRONMENT
        }
    }
}

async fn recover(dir: StateDir) -> i32 {
    let stack = match LocalStack::open(dir.clone()) {
        Ok(Some(s)) => s,
        Ok(None) => {
            println!(
                "no stack is recorded in {}; nothing to recover",
                dir.root.display()
            );
            return exit::PASS;
        }
        Err(e) => return report_env(e),
    };
    // A live run owns its faults; recovering under it would fight it.
    let lock = match lock::acquire(&dir.root) {
        Ok((l, lock::LockOutcome::TookOverStale(holder))) => {
            println!("the run that held the stack ({holder}) is gone; recovering what it left");
            l
        }
        Ok((l, _)) => l,
        Err(e) => return report_env(e),
    };
    let code = recover_locked(&stack).await;
    lock::release(lock);
    code
}

async fn recover_locked(stack: &LocalStack) -> i32 {
    let dir = &stack.dir;
    let journal = Journal::new(dir.journal_dir());
    for e in journal.open_entries() {
        match Target::revert(stack, &e.steps).await {
            Ok(()) => {
                let _ = journal.close(&e.id, "reverted by `faultline recover`");
                println!("reverted {} ({})", e.id, e.description);
            }
            Err(err) => println!("could not fully revert {}: {err}", e.id),
        }
    }
    // Residue without a journal entry (e.g. a crash between applying and journaling is impossible by design,
    // but a user may have interfered): fix what belongs to this stack.
    let t = stack.topology();
    for r in residue(stack) {
        println!("found residue: {r}");
    }
    for n in &t.nodes {
        let ns = t.namespace(&n.name);
        if netns::has_rules(&ns) {
            let _ = netns::delete_rules(&ns);
        }
        let _ = netns::delete_shaping(&ns);
        delay_agent::clear(&ns);
        // A restore's closed client port (its journal entry, run above, reopens it; this covers a lost entry).
        let _ = netns::open_ports(&ns);
        if !netns::link_is_up(t, &n.name) {
            let _ = netns::set_link(t, &n.name, true);
        }
    }
    for (n, k) in stack.members() {
        stack.signal(&n, k, libc::SIGCONT);
        if stack.pids(&n, k).is_empty() {
            if let Err(e) = stack.restart(&n, k).await {
                println!("cannot restart {} on {n}: {e}", k.name());
            }
        }
    }
    let left = residue(stack);
    match stack.wait_healthy(Duration::from_secs(90)).await {
        Ok(h) if left.is_empty() => {
            let pg =
                postgres::write_probe(&stack.postgres_endpoints(), Duration::from_secs(10)).await;
            let rd =
                redis_component::write_probe(&stack.redis_endpoints(), Duration::from_secs(10))
                    .await;
            let qd = if stack.state.qdrant.is_present() {
                let ep = stack.qdrant_endpoints();
                match qdrant_component::prepare(&ep, Duration::from_secs(30)).await {
                    Ok(()) => qdrant_component::write_probe(&ep, Duration::from_secs(10))
                        .await
                        .map(|n| format!(" and qdrant (through {n})")),
                    Err(e) => Err(e),
                }
            } else {
                Ok(String::new())
            };
            match (pg, rd, qd) {
                (Ok(pg), Ok(rd), Ok(qd)) => {
                    println!(
                        "recovered: no residue; every member back; postgres primary {pg} and redis master {rd}{qd} accept writes (leaders by health check: {})",
                        h.summary()
                    );
                    exit::PASS
                }
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => report_env(e),
            }
        }
        Ok(_) => {
            for r in left {
                println!("residue left: {r}");
            }
            exit::ENVIRONMENT
        }
        Err(e) => report_env(TargetError::Environment(format!(
            "the stack is not healthy after recovery: {e}"
        ))),
    }
}
