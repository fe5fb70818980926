//! The probe client against a real HTTP server on 127.0.0.1 (hyper), which can be switched between statuses and
//! made slow while requests run.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use hyper::body::Bytes;
use hyper::service::service_fn;

use super::*;
use crate::clock::Clock;
use crate::events::EventLog;
use crate::ledger::{Ledger, LedgerEntry, OpKind};
use crate::scenario::{HttpMethod, ProbeHeaderValue, StatusMatch};
use crate::secret::Secret;

/// What the server saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: http::HeaderMap,
    body: String,
}

/// The status the server answers with and how long it waits first, changeable while it runs.
#[derive(Default)]
struct Behaviour {
    status: AtomicU16,
    delay_ms: AtomicU64,
    seen: Mutex<Vec<Seen>>,
}

struct TestServer {
    addr: SocketAddr,
    behaviour: Arc<Behaviour>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    async fn start() -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let behaviour = Arc::new(Behaviour::default());
        behaviour.status.store(200, Ordering::SeqCst);
        let b = behaviour.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let b = b.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let b = b.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            b.seen.lock().unwrap().push(Seen {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_string(),
                                headers: parts.headers,
                                body: String::from_utf8_lossy(&body).into_owned(),
                            });
                            let delay = b.delay_ms.load(Ordering::SeqCst);
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            let status = b.status.load(Ordering::SeqCst);
                            let body = if status == 204 { "" } else { "answer" };
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(status)
                                    .body(http_body_util::Full::new(Bytes::from(body)))
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
        TestServer {
            addr,
            behaviour,
            task,
        }
    }

    fn set_status(&self, status: u16) {
        self.behaviour.status.store(status, Ordering::SeqCst);
    }

    fn set_delay(&self, delay: Duration) {
        self.behaviour
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    fn seen(&self) -> Vec<Seen> {
        self.behaviour.seen.lock().unwrap().clone()
    }

    fn url(&self, path: &str) -> reqwest::Url {
        format!("http://{}{path}", self.addr).parse().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn probe(url: reqwest::Url) -> HttpProbe {
    HttpProbe {
        name: "api-ready".into(),
        url,
        method: HttpMethod::Get,
        expect: ExpectStatus::default(),
        rate: 10,
        deadline: Duration::from_secs(1),
        body: None,
        headers: Vec::new(),
    }
}

async fn one_request(p: &HttpProbe) -> (Attempt, Duration) {
    let client = HttpProbeClient::new(p).unwrap();
    let start = Instant::now();
    let attempt = client.read(start + p.deadline).await;
    (attempt, start.elapsed())
}

#[tokio::test]
async fn the_expected_status_is_ok_and_another_fails_with_its_code() {
    let server = TestServer::start().await;
    let p = probe(server.url("/health/ready"));
    let (a, _) = one_request(&p).await;
    assert_eq!((a.outcome, a.error.as_deref()), (Outcome::Ok, None));
    assert!(a.sent.is_some());
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/health/ready")
    );

    server.set_status(503);
    let (a, _) = one_request(&p).await;
    assert_eq!(a.outcome, Outcome::Failed);
    assert_eq!(a.error.as_deref(), Some("status 503"));
    assert!(a.sent.is_some());

    // Redirects are not followed: a 302 is judged as it is.
    server.set_status(302);
    let (a, _) = one_request(&p).await;
    assert_eq!(a.error.as_deref(), Some("status 302"));
}

#[tokio::test]
async fn a_status_class_accepts_every_code_in_it() {
    let server = TestServer::start().await;
    server.set_status(204);
    let mut p = probe(server.url("/"));
    let (a, _) = one_request(&p).await;
    assert_eq!(a.error.as_deref(), Some("status 204"));
    p.expect = ExpectStatus(vec![StatusMatch::Class(2)]);
    let (a, _) = one_request(&p).await;
    assert_eq!((a.outcome, a.error), (Outcome::Ok, None));
    server.set_status(500);
    let (a, _) = one_request(&p).await;
    assert_eq!(a.error.as_deref(), Some("status 500"));
}

#[tokio::test]
async fn a_slow_answer_fails_at_the_deadline() {
    let server = TestServer::start().await;
    server.set_delay(Duration::from_secs(3));
    let mut p = probe(server.url("/slow"));
    p.deadline = Duration::from_millis(300);
    let (a, took) = one_request(&p).await;
    assert_eq!(a.outcome, Outcome::Failed);
    assert_eq!(
        a.error.as_deref(),
        Some("timed out: no answer within the 300ms deadline")
    );
    assert!(a.sent.is_some());
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(500),
        "returned after {took:?}"
    );
}

#[tokio::test]
async fn connection_refused_fails_unsent() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p = probe(format!("http://127.0.0.1:{port}/").parse().unwrap());
    let (a, took) = one_request(&p).await;
    assert_eq!(a.outcome, Outcome::Failed);
    assert_eq!(a.error.as_deref(), Some("connection refused"));
    assert!(a.sent.is_none());
    assert!(took < Duration::from_millis(500), "{took:?}");
}

#[tokio::test]
async fn post_sends_its_body_and_headers_and_keeps_secrets_out_of_debug() {
    let server = TestServer::start().await;
    server.set_status(201);
    let mut p = probe(server.url("/api/ping"));
    p.method = HttpMethod::Post;
    p.expect = ExpectStatus(vec![StatusMatch::Code(200), StatusMatch::Code(201)]);
    p.body = Some(r#"{"ping": 1}"#.into());
    p.headers = vec![
        (
            "Authorization".into(),
            ProbeHeaderValue::FromEnv {
                template: "Bearer ${API_TOKEN}".into(),
                value: Secret::new("Bearer tok-9f8e7d"),
                parts: vec![Secret::new("tok-9f8e7d")],
            },
        ),
        (
            "Content-Type".into(),
            ProbeHeaderValue::Plain("application/json".into()),
        ),
    ];
    let client = HttpProbeClient::new(&p).unwrap();
    let a = client.read(Instant::now() + p.deadline).await;
    assert_eq!((a.outcome, a.error), (Outcome::Ok, None));
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!((s.method.as_str(), s.path.as_str()), ("POST", "/api/ping"));
    assert_eq!(s.body, r#"{"ping": 1}"#);
    assert_eq!(s.headers["authorization"], "Bearer tok-9f8e7d");
    assert_eq!(s.headers["content-type"], "application/json");
    assert!(s.headers["user-agent"]
        .to_str()
        .unwrap()
        .starts_with("faultline/"));
    // The client's own header map marks the secret sensitive: hyper and reqwest never print it.
    assert!(client.headers["authorization"].is_sensitive());
    assert!(!format!("{:?}", client.headers).contains("tok-9f8e7d"));
}

#[tokio::test]
async fn warm_up_opens_connections_with_safe_methods_only() {
    let server = TestServer::start().await;
    let mut p = probe(server.url("/"));
    let client = HttpProbeClient::new(&p).unwrap();
    client
        .warm_up(2, Instant::now() + Duration::from_secs(1))
        .await;
    assert_eq!(server.seen().len(), 2);
    p.method = HttpMethod::Put;
    let client = HttpProbeClient::new(&p).unwrap();
    client
        .warm_up(2, Instant::now() + Duration::from_secs(1))
        .await;
    assert_eq!(server.seen().len(), 2, "a PUT was sent to warm up");
    let a = client
        .write(1, Instant::now() + Duration::from_secs(1))
        .await;
    assert_eq!((a.outcome, a.sent), (Outcome::Failed, None));
}

/// What the analysis relies on: an outage of the service shows in the ledger as the failed probes scheduled
/// during it, and only those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_shows_in_the_ledger_as_the_requests_scheduled_during_it() {
    let server = TestServer::start().await;
    let mut p = probe(server.url("/health/ready"));
    p.rate = 50;
    p.deadline = Duration::from_millis(500);
    let client = Arc::new(HttpProbeClient::new(&p).unwrap());
    let profile = p.load_profile();
    client
        .warm_up(profile.connections as usize, Instant::now() + p.deadline)
        .await;
    let clock = Clock::start();
    let events = EventLog::new(clock);
    let ledger = Ledger::default();
    let load = crate::load::start(
        &profile,
        client,
        crate::ledger::Source::Http("api".into()),
        ledger.clone(),
        events,
        std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1)),
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let down_from = clock.now();
    server.set_status(503);
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.set_status(200);
    let down_until = clock.now();
    tokio::time::sleep(Duration::from_millis(800)).await;
    load.stop(Duration::from_secs(2)).await;

    let entries = ledger.entries();
    assert!(
        (95..=105).contains(&entries.len()),
        "50/s for 2 s scheduled {} requests",
        entries.len()
    );
    assert!(entries.iter().all(|e| e.op == OpKind::Read));
    let failed: Vec<&LedgerEntry> = entries
        .iter()
        .filter(|e| e.outcome != Outcome::Ok)
        .collect();
    assert!(
        (22..=28).contains(&failed.len()),
        "{} failed during a 500 ms outage at 50/s: {failed:?}",
        failed.len()
    );
    // A request that reached the server just around a switch may fall either side of it.
    let slack = Duration::from_millis(30);
    for f in &failed {
        assert_eq!(f.outcome, Outcome::Failed, "{f:?}");
        assert_eq!(f.error.as_deref(), Some("status 503"), "{f:?}");
        let sent = f.sent.expect("sent").0;
        assert!(
            sent + slack >= down_from.0 && sent <= down_until.0,
            "failed request sent at {sent:?} outside the outage {down_from:?}..{down_until:?}"
        );
    }
    for e in entries.iter().filter(|e| e.outcome == Outcome::Ok) {
        let sent = e.sent.expect("sent").0;
        assert!(
            sent <= down_from.0 + slack || sent + slack >= down_until.0,
            "an ok request sent at {sent:?} inside the outage {down_from:?}..{down_until:?}"
        );
    }
}
