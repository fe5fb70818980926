//! The engine end to end against a fake target and a fake component (no root, no stack): a scripted outage goes
//! through load, faults, probes, read-back, log agreement, analysis and verdict, and the figures must come out as
//! scripted. Each test names the defect it guards against.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use faultline::clock::Clock;
use faultline::component::{Component, LogCheck};
use faultline::engine::{run_scenario, RunOptions};
use faultline::events::{EventKind, EventLog};
use faultline::exit;
use faultline::fault::journal::Journal;
use faultline::fault::{journal_before_applying, ActiveFault, RevertStep};
use faultline::ledger::{Outcome, ReadBack};
use faultline::load::{Attempt, BoxFuture, LoadClient};
use faultline::report::RunReport;
use faultline::scenario::{parse_scenario, ComponentKind, FaultKind, LoadProfile};
use faultline::targets::{Target, TargetError};
use faultline::topology::{parse_topology, Topology};
use faultline::verdict::Verdict;
use tokio::sync::watch;

/// How the fake stack behaves around the fault.
#[derive(Clone)]
struct Script {
    /// From the fault request until it takes effect, the servers still answer.
    take_effect: Duration,
    /// How long writes fail once the fault took effect; None = they never come back.
    outage: Option<Duration>,
    /// Acknowledged writes the store forgets (ids).
    forget: BTreeSet<u64>,
    /// The final read-back fails.
    final_read_back_fails: bool,
    /// The server logs its promotion this many ms after the harness sees it (negative: before).
    log_skew_ms: i64,
    /// Applying the fault takes the primary down, then fails before it returns.
    apply_fails: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            take_effect: Duration::from_millis(300),
            outage: Some(Duration::from_millis(1500)),
            forget: BTreeSet::new(),
            final_read_back_fails: false,
            log_skew_ms: 20,
            apply_fails: false,
        }
    }
}

#[derive(Default)]
struct Store {
    down: AtomicBool,
    written: Mutex<BTreeSet<u64>>,
    read_backs: AtomicU64,
    /// Wall time of the server's own "promoted" line.
    promoted_log: Mutex<Option<SystemTime>>,
    /// Revert steps the target executed.
    reverted: Mutex<Vec<RevertStep>>,
}

struct Fake {
    script: Script,
    store: Arc<Store>,
    topology: Topology,
}

impl Fake {
    fn new(script: Script) -> Self {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/topologies/three-node.yaml"),
        )
        .unwrap();
        Fake {
            script,
            store: Arc::default(),
            topology: parse_topology(&text, Path::new("three-node.yaml")).unwrap(),
        }
    }
}

struct FakeComponent {
    script: Script,
    store: Arc<Store>,
}

struct FakeClient(Arc<Store>);

impl LoadClient for FakeClient {
    fn write(&self, id: u64, _deadline: Instant) -> BoxFuture<'_, Attempt> {
        Box::pin(async move {
            let sent = Instant::now();
            tokio::time::sleep(Duration::from_micros(200)).await;
            if self.0.down.load(Ordering::SeqCst) {
                return Attempt::sent_at(
                    sent,
                    (Outcome::Failed, Some("connection refused".into())),
                );
            }
            self.0.written.lock().unwrap().insert(id);
            Attempt::sent_at(sent, (Outcome::Ok, None))
        })
    }
    fn read(&self, _deadline: Instant) -> BoxFuture<'_, Attempt> {
        Box::pin(async move {
            let sent = Instant::now();
            let outcome = if self.0.down.load(Ordering::SeqCst) {
                Outcome::Failed
            } else {
                Outcome::Ok
            };
            Attempt::sent_at(sent, (outcome, None))
        })
    }
}

fn is_promotion(k: &EventKind) -> bool {
    matches!(k, EventKind::NewPrimaryServing { .. })
}

impl Component for FakeComponent {
    fn kind(&self) -> ComponentKind {
        ComponentKind::Postgres
    }
    fn prepare(&self, _: Duration) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    /// Reports the outage's start as detection and its end as promotion, as a server-side probe would.
    fn spawn_probe(
        &self,
        events: EventLog,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let skew = self.script.log_skew_ms;
        tokio::spawn(async move {
            let mut was_down = store.down.load(Ordering::SeqCst);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                    _ = stop.changed() => return,
                }
                let down = store.down.load(Ordering::SeqCst);
                if down && !was_down {
                    events.emit(EventKind::FailureDetected {
                        component: ComponentKind::Postgres,
                        evidence: "fake: primary gone".into(),
                    });
                }
                if !down && was_down {
                    let at = events.emit(EventKind::NewPrimaryServing {
                        component: ComponentKind::Postgres,
                        member: "n2".into(),
                        evidence: "fake: new primary".into(),
                    });
                    let wall = events.clock().wall(at);
                    let skew_by = Duration::from_millis(skew.unsigned_abs());
                    let logged = if skew >= 0 {
                        wall + skew_by
                    } else {
                        wall - skew_by
                    };
                    *store.promoted_log.lock().unwrap() = Some(logged);
                }
                was_down = down;
            }
        })
    }
    fn load_client(&self, _: &str, _: &LoadProfile) -> Arc<dyn LoadClient> {
        Arc::new(FakeClient(self.store.clone()))
    }
    fn read_back(
        &self,
        _: &str,
        _: Duration,
        clock: Clock,
    ) -> BoxFuture<'_, Result<ReadBack, String>> {
        Box::pin(async move {
            let n = self.store.read_backs.fetch_add(1, Ordering::SeqCst);
            // The first read-back follows the trial; the second is the run's final one.
            if n >= 1 && self.script.final_read_back_fails {
                return Err("no primary answered".into());
            }
            let present: BTreeSet<u64> = self
                .store
                .written
                .lock()
                .unwrap()
                .difference(&self.script.forget)
                .copied()
                .collect();
            Ok(ReadBack {
                present,
                from_member: "n2".into(),
                at: clock.now(),
            })
        })
    }
    fn log_checks(&self) -> Vec<LogCheck> {
        vec![LogCheck {
            label: "promotion (fake)",
            needle: "promoted",
            event: is_promotion,
        }]
    }
}

impl Target for Fake {
    fn topology(&self) -> &Topology {
        &self.topology
    }
    fn component(&self, _: ComponentKind) -> Box<dyn Component> {
        Box::new(FakeComponent {
            script: self.script.clone(),
            store: self.store.clone(),
        })
    }
    async fn role_holder(&self, _: ComponentKind) -> Option<String> {
        Some("n1".into())
    }
    async fn sync_replica(&self, _: ComponentKind) -> Option<String> {
        Some("n2".into())
    }
    async fn wait_healthy(&self, timeout: Duration) -> Result<String, String> {
        let until = Instant::now() + timeout;
        while self.store.down.load(Ordering::SeqCst) {
            if Instant::now() >= until {
                return Err("the fake primary is still down".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok("fake healthy".into())
    }
    fn fingerprint(&self) -> serde_json::Value {
        serde_json::json!({"target": "fake"})
    }
    async fn apply_fault(
        &self,
        journal: &Journal,
        fault: &FaultKind,
    ) -> Result<ActiveFault, TargetError> {
        let steps = vec![RevertStep::LinkUp { node: "n1".into() }];
        let entry = journal_before_applying(journal, fault.name(), "fake outage", steps)?;
        let requested_at = Instant::now();
        tokio::time::sleep(self.script.take_effect).await;
        self.store.down.store(true, Ordering::SeqCst);
        if self.script.apply_fails {
            return Err(TargetError::Fault(
                "the second half of the fault failed".into(),
            ));
        }
        let effective_at = Instant::now();
        if let Some(outage) = self.script.outage {
            let store = self.store.clone();
            tokio::spawn(async move {
                tokio::time::sleep(outage).await;
                store.down.store(false, Ordering::SeqCst);
            });
        }
        Ok(ActiveFault::new(
            entry,
            "fake outage".into(),
            vec!["n1".into()],
            requested_at,
            effective_at,
        ))
    }
    /// Records the steps; the scripted outage ends on its own schedule.
    async fn revert(&self, steps: &[RevertStep]) -> Result<(), String> {
        self.store.reverted.lock().unwrap().extend_from_slice(steps);
        Ok(())
    }
    async fn server_log_lines(&self, _: ComponentKind, _: &str) -> Vec<(SystemTime, String)> {
        self.store
            .promoted_log
            .lock()
            .unwrap()
            .map(|t| vec![(t, "fake server: promoted".to_string())])
            .unwrap_or_default()
    }
}

const SCENARIO: &str = "name: fake-outage
component: postgres
load: {write_rate: 200, read_rate: 50, deadline: 500ms, rto_consecutive: 3}
baseline: 1s
faults:
  - kind: process-kill
    target: {role: primary}
observe: 2500ms
heal: {timeout: 3s, settle: 500ms}
thresholds:
  - downtime_s < 30
  - rto_s <= 20
  - lost_acked_writes == 0
  - log_agreement_max_s <= 0.5
";

async fn run(script: Script, scenario: &str) -> (RunReport, Fake) {
    let (report, fake, _dir) = run_in_dir(script, scenario).await;
    (report, fake)
}

/// Runs the scenario with reports and the fault journal in a temporary directory, returned for inspection.
async fn run_in_dir(script: Script, scenario: &str) -> (RunReport, Fake, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (report, fake) = run_with_dir(script, scenario, dir.path()).await;
    (report, fake, dir)
}

/// Runs the scenario with reports (and their history) under `dir/reports`.
async fn run_with_dir(script: Script, scenario: &str, dir: &Path) -> (RunReport, Fake) {
    let fake = Fake::new(script);
    let scenario = parse_scenario(scenario, Path::new("fake.yaml"), Some(&fake.topology)).unwrap();
    let opts = RunOptions {
        reports_dir: dir.join("reports"),
        journal: Journal::new(dir.join("journal")),
        settings_file: None,
        progress: Default::default(),
    };
    let (_tx, intr) = watch::channel(0u32);
    let outcome = run_scenario(&fake, &scenario, &opts, intr).await.unwrap();
    (outcome.report, fake)
}

fn metric(r: &RunReport, name: &str) -> Option<f64> {
    r.trials[0].measurements.get(name).copied().flatten()
}

fn timeline_at(r: &RunReport, kind: &str) -> f64 {
    r.timeline
        .iter()
        .find(|e| e.event["type"] == kind)
        .and_then(|e| e.t_s)
        .unwrap_or_else(|| panic!("no {kind} on the timeline"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_outage_reads_back_as_scripted_and_passes() {
    let (r, fake) = run(Script::default(), SCENARIO).await;
    assert_eq!(r.verdict, Verdict::Pass, "{:#?}", r.thresholds);
    assert_eq!(r.exit_code, exit::PASS);
    // The outage lasted 1.5 s from the effective instant; writes every 5 ms.
    let downtime = metric(&r, "downtime_s").unwrap();
    assert!((1.49..1.60).contains(&downtime), "downtime_s {downtime}");
    let rto = metric(&r, "rto_s").unwrap();
    assert!((1.49..1.60).contains(&rto), "rto_s {rto}");
    assert_eq!(metric(&r, "lost_acked_writes"), Some(0.0));
    // Availability shows the outage: 1.5 s of ~5 s of load failed.
    let availability = r.availability.pct.unwrap();
    assert!(
        (60.0..80.0).contains(&availability),
        "availability {availability}"
    );
    let error_rate = metric(&r, "error_rate").unwrap();
    assert!(error_rate > 0.2, "error_rate {error_rate}");
    // Log agreement: the server's line is 20 ms after the harness's stamp.
    let agreement = metric(&r, "log_agreement_max_s").unwrap();
    assert!((0.015..0.030).contains(&agreement), "{agreement}");
    // Every read-back is reported with who answered.
    assert_eq!(r.read_backs.len(), 2);
    assert!(r
        .read_backs
        .iter()
        .all(|b| b.from_member.as_deref() == Some("n2")));
    assert_eq!(fake.store.read_backs.load(Ordering::SeqCst), 2);
}

/// The defect this guards against: the fault instant was taken when the fault was requested, so writes that
/// succeeded while the fault was still being put in place could satisfy rto_s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_from_when_the_fault_took_effect() {
    let script = Script {
        take_effect: Duration::from_millis(800),
        ..Script::default()
    };
    let (r, _) = run(script, SCENARIO).await;
    let requested = timeline_at(&r, "fault_requested");
    let effective = timeline_at(&r, "fault_applied");
    assert_eq!(
        effective, 0.0,
        "the timeline counts from the effective instant"
    );
    assert!(
        (-0.9..-0.79).contains(&requested),
        "requested at {requested}"
    );
    let rto = metric(&r, "rto_s").unwrap();
    assert!(
        rto >= 1.49,
        "rto_s {rto} counts writes from before the fault took hold"
    );
    let detection = metric(&r, "detection_s").unwrap();
    assert!(detection < 0.1, "detection_s {detection}");
}

/// The defect this guards against: downtime was measured only to the heal, so writes still failing at the end
/// of the trial did not fail `downtime_s < 30`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_still_open_at_the_end_fails_the_downtime_threshold() {
    let script = Script {
        outage: None,
        ..Script::default()
    };
    let (r, _) = run(script, SCENARIO).await;
    assert_eq!(r.verdict, Verdict::Incomplete, "the stack never healed");
    let downtime = r
        .thresholds
        .iter()
        .find(|t| t.metric.name() == "downtime_s")
        .unwrap();
    assert!(!downtime.pass);
    assert!(
        downtime.message.contains("still open when the trial ended"),
        "{}",
        downtime.message
    );
    assert!(r.trials[0]
        .notes
        .iter()
        .any(|n| n.contains("still failing")));
}

/// The defect this guards against: a failed final read-back was ignored and the run passed on the trial's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_final_read_back_makes_the_run_incomplete() {
    let script = Script {
        final_read_back_fails: true,
        ..Script::default()
    };
    let (r, _) = run(script, SCENARIO).await;
    assert_eq!(r.verdict, Verdict::Incomplete);
    assert_eq!(r.exit_code, exit::ENVIRONMENT);
    let reason = r.incomplete_reason.unwrap();
    assert!(
        reason.contains("final read-back") && reason.contains("no primary answered"),
        "{reason}"
    );
    let last = r.read_backs.last().unwrap();
    assert_eq!(last.trial, None);
    assert_eq!(last.error.as_deref(), Some("no primary answered"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_acknowledged_writes_and_a_skewed_log_fail_their_thresholds() {
    let script = Script {
        forget: (100..110).collect(),
        log_skew_ms: -1000,
        ..Script::default()
    };
    let (r, _) = run(script, SCENARIO).await;
    assert_eq!(r.verdict, Verdict::Fail);
    assert_eq!(r.exit_code, exit::THRESHOLD_FAILED);
    assert_eq!(metric(&r, "lost_acked_writes"), Some(10.0));
    let agreement = metric(&r, "log_agreement_max_s").unwrap();
    assert!((0.99..1.01).contains(&agreement), "{agreement}");
    let failed: Vec<&str> = r
        .thresholds
        .iter()
        .filter(|t| !t.pass)
        .map(|t| t.metric.name())
        .collect();
    assert_eq!(failed, ["lost_acked_writes", "log_agreement_max_s"]);
}

/// Found in review: a fault that failed part-way through being applied never became an active fault, so what it
/// had applied stayed applied (and its journal entry open) until someone ran `faultline recover`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_that_fails_while_being_applied_is_reverted_from_its_journal() {
    let script = Script {
        apply_fails: true,
        ..Script::default()
    };
    let (r, fake, dir) = run_in_dir(script, SCENARIO).await;
    let journal = Journal::new(dir.path().join("journal"));
    assert_eq!(r.verdict, Verdict::Incomplete);
    assert_eq!(r.exit_code, exit::ENVIRONMENT);
    assert_eq!(
        *fake.store.reverted.lock().unwrap(),
        vec![RevertStep::LinkUp { node: "n1".into() }]
    );
    assert!(
        journal.open_entries().is_empty(),
        "{:?}",
        journal.open_entries()
    );
    assert!(r
        .timeline
        .iter()
        .any(|e| e.event["type"] == "fault_reverted"));
}

/// The HTML report of a real engine run, opened in Debian's Chromium (headless): the page renders, its screenshot
/// shows the chart's colours, and the page made no network request. Every http(s) request Chromium makes is sent to
/// a proxy this test listens on, so a request for a font, a script or an image from anywhere would be counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_renders_offline_in_a_real_browser() {
    let Some(chromium) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no chromium: scripts/install-deps.sh installs it"
        );
        eprintln!("skipped: no chromium (scripts/install-deps.sh installs it)");
        return;
    };
    let (r, _fake, dir) = run_in_dir(Script::default(), SCENARIO).await;
    let run_dir = dir.path().join("reports").join(&r.run_id);
    let page = run_dir.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<svg") && html.contains("fake-outage"));

    // The trap answers nothing: it records each request's first line and closes the connection, so a request
    // fails at once instead of waiting.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = trap.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let seen = seen.clone();
        std::thread::spawn(move || {
            for c in trap.incoming() {
                let Ok(mut c) = c else { continue };
                use std::io::Read;
                c.set_read_timeout(Some(Duration::from_millis(500))).ok();
                let mut head = [0u8; 200];
                let n = c.read(&mut head).unwrap_or(0);
                let line = String::from_utf8_lossy(&head[..n])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                // A connection that sent nothing is Chromium preconnecting to its proxy: no request.
                if !line.is_empty() {
                    seen.lock().unwrap().push(line);
                }
            }
        });
    }
    let profile = tempfile::tempdir().unwrap();
    let shot = dir.path().join("shot.png");
    let common = |extra: &[String], page: &Path| {
        let mut c = std::process::Command::new(chromium);
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            // Chromium's own background traffic (network time, component and extension updates, sign-in),
            // which would otherwise reach the trap and hide what the page does.
            "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate,AutofillServerCommunication,CertificateTransparencyComponentUpdater",
            "--disable-extensions",
            "--disable-default-apps",
            "--no-pings",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--no-default-browser-check",
            "--allow-browser-signin=false",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--proxy-server=http://127.0.0.1:{port}"))
        .arg("--proxy-bypass-list=<-loopback>")
        .args(extra)
        .arg(format!("file://{}", page.display()));
        c.output().expect("chromium runs")
    };
    let o = common(
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1100,1600".into(),
        ],
        &page,
    );
    assert!(shot.exists(), "no screenshot: {o:?}");
    let dom = common(&["--dump-dom".into()], &page);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("<svg") && dom.contains("Thresholds"), "{dom}");

    // The screenshot is a page, not a blank: the chart's green bars (ok operations) are in it, and many colours.
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
    let colours: BTreeSet<[u8; 3]> = pixels.iter().map(|p| [p[0], p[1], p[2]]).collect();
    assert!(
        colours.len() > 20,
        "{} colours: a blank page?",
        colours.len()
    );
    let green = pixels.iter().filter(|p| p[..3] == [46, 139, 87]).count();
    assert!(green > 100, "{green} pixels of the ok-bars' green");

    // Nothing reached the trap.
    let drain = || std::mem::take(&mut *seen.lock().unwrap());
    let requests = drain();
    // Chromium's own services, which it calls whatever page it shows (seen here: update and sign-in checks that
    // the switches above do not turn off; the others are its hint, safe-browsing and autofill services, listed
    // so that a machine where they are on does not fail the test). A page's font, script or image would come from
    // anywhere else (fonts.googleapis.com and ajax.googleapis.com included).
    const CHROMIUM_ITSELF: [&str; 8] = [
        "update.googleapis.com",
        "accounts.google.com",
        "clients2.google.com",
        "clients1.google.com",
        "optimizationguide-pa.googleapis.com",
        "safebrowsing.googleapis.com",
        "safebrowsingohttpgateway.googleapis.com",
        "content-autofill.googleapis.com",
    ];
    let from_the_page: Vec<&String> = requests
        .iter()
        .filter(|line| {
            let target = line.split_whitespace().nth(1).unwrap_or("");
            let host = target
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .split(['/', ':'])
                .next()
                .unwrap_or("");
            !CHROMIUM_ITSELF.contains(&host)
        })
        .collect();
    assert!(
        from_the_page.is_empty(),
        "network requests: {from_the_page:?} (all: {requests:?})"
    );

    // The trap works: a page (without the report's policy) that loads an image from elsewhere is caught.
    let control = dir.path().join("control.html");
    std::fs::write(
        &control,
        "<html><body><img src=\"http://faultline-control.invalid/x.png\"></body></html>",
    )
    .unwrap();
    common(&["--dump-dom".into()], &control);
    std::thread::sleep(Duration::from_millis(600));
    let caught = drain();
    assert!(
        caught
            .iter()
            .any(|l| l.contains("faultline-control.invalid")),
        "the trap saw no request from the control page: {caught:?}"
    );
}

/// Run history: three runs of the same outage, then one whose outage lasts a second longer. The fourth is
/// compared with the three before it: its downtime is flagged as a regression in report.json, the terminal and
/// the HTML page, and `regressions == 0` fails; `faultline history` prints the trend from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_worse_than_its_history_is_flagged_as_a_regression() {
    let scenario = format!("{SCENARIO}  - regressions == 0\n");
    let dir = tempfile::tempdir().unwrap();
    let mut last_id: Option<String> = None;
    for i in 0..3 {
        let (r, _) = run_with_dir(Script::default(), &scenario, dir.path()).await;
        assert_eq!(r.verdict, Verdict::Pass, "run {i}: {:#?}", r.thresholds);
        assert_eq!(r.history_runs, i);
        assert!(r.regressions.is_empty());
        // From the second run on, each shows the comparison with the one before.
        assert_eq!(r.previous.as_ref().map(|p| p.run_id.clone()), last_id);
        if let Some(p) = &r.previous {
            let d = p.metrics.iter().find(|c| c.metric == "downtime_s").unwrap();
            assert!((d.previous - d.now).abs() < 0.2, "{d:?}");
            let summary = faultline::report::terminal_summary(&r);
            assert!(
                summary.contains(&format!("compared with the previous run {}", p.run_id))
                    && summary.contains(" downtime_s "),
                "{summary}"
            );
        }
        last_id = Some(r.run_id.clone());
    }
    let worse = Script {
        outage: Some(Duration::from_millis(2500)),
        ..Script::default()
    };
    let (r, _) = run_with_dir(worse, &scenario, dir.path()).await;
    assert_eq!(r.history_runs, 3);
    let flagged: Vec<&str> = r.regressions.iter().map(|g| g.metric.as_str()).collect();
    assert!(flagged.contains(&"downtime_s"), "{flagged:?}");
    let d = r
        .regressions
        .iter()
        .find(|g| g.metric == "downtime_s")
        .unwrap();
    assert!((1.45..1.65).contains(&d.median) && d.value > 2.4, "{d:?}");
    assert_eq!(r.verdict, Verdict::Fail);
    let t = r
        .thresholds
        .iter()
        .find(|t| t.label() == "regressions == 0")
        .unwrap();
    assert!(!t.pass && t.measured >= Some(1.0), "{t:?}");
    let summary = faultline::report::terminal_summary(&r);
    assert!(summary.contains("REGRESSION: downtime_s"), "{summary}");
    let page = std::fs::read_to_string(
        dir.path()
            .join("reports")
            .join(&r.run_id)
            .join("report.html"),
    )
    .unwrap();
    assert!(page.contains("<code>downtime_s</code>") && page.contains("regression"));

    let o = std::process::Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["history", "fake-outage", "--reports-dir"])
        .arg(dir.path().join("reports"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("fake-outage: 4 run(s)"), "{out}");
    assert!(
        out.contains("verdicts (oldest first): pass pass pass fail"),
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.contains(" downtime_s "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("REGRESSION"), "{line}");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["history", "no-such-scenario", "--reports-dir"])
        .arg(dir.path().join("reports"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(exit::INVALID_INPUT));
}
