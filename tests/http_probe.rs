//! An HTTP probe of the user's own service, on the real local stack: the test starts a small service whose
//! `/health/ready` answers 200 only while it can reach a writable PostgreSQL primary (libpq's multi-host failover,
//! as an application would), and the scenario kills the Patroni primary. The probe must see the service's outage:
//! it starts with the fault, ends after PostgreSQL's promotion, and its figures come from the probe's own requests.
//! Needs root, like the other stack tests.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The user's service: ready while `SELECT pg_is_in_recovery()` on a read-write connection says false.
fn start_service(password: String) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let dsn = format!(
                "host=10.201.0.11,10.201.0.12,10.201.0.13 port=5432 user=postgres password={password} \
                 dbname=postgres target_session_attrs=read-write connect_timeout=1"
            );
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let dsn = dsn.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
                        let dsn = dsn.clone();
                        async move {
                            let ready = tokio::time::timeout(Duration::from_millis(800), async {
                                let (client, conn) =
                                    tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await.ok()?;
                                tokio::spawn(conn);
                                let row = client.query_one("SELECT pg_is_in_recovery()", &[]).await.ok()?;
                                Some(!row.get::<_, bool>(0))
                            })
                            .await
                            .ok()
                            .flatten()
                                == Some(true);
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(if ready { 200 } else { 503 })
                                    .body(http_body_util::Full::new(hyper::body::Bytes::from("")))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    rx.recv().unwrap()
}

#[test]
fn a_primary_kill_shows_as_an_outage_of_the_service_that_depends_on_it() {
    needs_root!();
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    up();
    let secrets: Value =
        serde_json::from_str(&std::fs::read_to_string("/var/tmp/faultline/secrets.json").unwrap())
            .unwrap();
    let password = secrets["postgres_superuser"].as_str().unwrap().to_string();
    let addr = start_service(password.clone());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("service-probe.yaml");
    std::fs::write(
        &file,
        format!(
            "name: service-probe\n\
             component: postgres\n\
             topology: {}\n\
             baseline: 5s\n\
             http_probes:\n  \
               - name: api\n    \
                 url: http://{addr}/health/ready\n    \
                 rate: 20\n    \
                 deadline: 1s\n\
             faults:\n  - kind: process-kill\n    target: {{role: primary}}\n\
             observe: 25s\n\
             thresholds:\n  - promotion_s <= 20\n  - http.api.rto_s <= 30\n",
            repo("fixtures/topologies/three-node.yaml").display()
        ),
    )
    .unwrap();
    let o = faultline(&["run", file.to_str().unwrap()]);
    assert!(
        matches!(o.status.code(), Some(0) | Some(1)),
        "run failed:\n{}",
        text(&o)
    );
    let (run_dir, r) = report_of(&o);
    assert_eq!(r["http_probes"], serde_json::json!(["api"]));
    let promotion = measured(&r, "promotion_s").expect("promotion observed");
    let rto = measured(&r, "http.api.rto_s")
        .unwrap_or_else(|| panic!("the probe never saw the service ready again:\n{}", text(&o)));
    // The service cannot be ready before PostgreSQL has a primary again, and is ready soon after.
    assert!(
        rto > promotion - 0.5 && rto < promotion + 5.0,
        "http.api.rto_s {rto} vs PostgreSQL's promotion {promotion}"
    );
    let downtime = measured(&r, "http.api.downtime_s").expect("the outage was seen");
    assert!(
        downtime > 2.0,
        "http.api.downtime_s {downtime}: the outage was missed"
    );

    // The probe's figures come from its own requests, and the system's availability excludes them.
    let ledger = std::fs::read_to_string(run_dir.join("ledger.jsonl")).unwrap();
    let (mut probe, mut stack) = ((0u64, 0u64), (0u64, 0u64));
    let mut statuses = 0;
    for line in ledger.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        let ok = (e["outcome"] == "ok") as u64;
        match e["source"].as_str().unwrap() {
            "http.api" => {
                assert_eq!(e["op"], "read", "{e}");
                probe = (probe.0 + ok, probe.1 + 1);
                statuses += (e["error"] == "status 503") as u32;
            }
            "postgres" => stack = (stack.0 + ok, stack.1 + 1),
            other => panic!("unexpected source {other}"),
        }
    }
    let pct = |(ok, all): (u64, u64)| ok as f64 * 100.0 / all as f64;
    let probe_pct = measured(&r, "http.api.availability_pct").unwrap();
    assert!(
        (probe_pct - pct(probe)).abs() < 1e-6,
        "{probe_pct} vs {probe:?}"
    );
    assert!(
        probe_pct < 100.0,
        "the service's outage is not in its availability"
    );
    assert!(statuses > 10, "{statuses} requests answered 503");
    let system = measured(&r, "availability_pct").unwrap();
    assert!(
        (system - pct(stack)).abs() < 1e-6,
        "{system} vs PostgreSQL's {stack:?}"
    );
    let out = text(&o);
    assert!(out.contains("http.api: availability"), "{out}");
    assert!(!out.contains(&password), "the password is in the output");
}
