//! The client of an HTTP probe (`http_probes:` in a scenario): one request per scheduled read, judged by its
//! status. Run through [`crate::load::start`] with [`HttpProbe::load_profile`], so a probe's requests are scheduled
//! open loop, bounded in flight and recorded in a ledger exactly as the component's operations are.
//!
//! Every outcome is Ok or Failed, never Unknown. Unknown exists for writes whose effect a later read-back must
//! settle; a probe's request changes nothing the analysis checks, and the question it answers is whether the
//! service answered as expected within the deadline a client gives it. An answer that comes later was, for that
//! client, no answer: the service was not available.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::{Attempt, BoxFuture, LoadClient};
use crate::ledger::Outcome;
use crate::scenario::{format_duration, ExpectStatus, HttpMethod, HttpProbe};

/// One probe's client: a connection pool to its service (no proxy, redirects not followed: a redirect is a status
/// like any other, judged against `expect_status`).
pub struct HttpProbeClient {
    http: reqwest::Client,
    method: reqwest::Method,
    url: reqwest::Url,
    headers: HeaderMap,
    body: Option<String>,
    expect: ExpectStatus,
    /// The probe's deadline as written, for the error of a request that passed it.
    deadline: Duration,
    /// Whether warming up may send the probe's own request (GET and HEAD only: the others may change something).
    warm_up_safe: bool,
}

impl HttpProbeClient {
    /// The client of a validated probe. Header values from the environment are marked sensitive, so that the
    /// HTTP stack never shows them either.
    pub fn new(probe: &HttpProbe) -> Result<Self, String> {
        let mut headers = HeaderMap::new();
        for (name, value) in &probe.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("http probe {}: invalid header name `{name}`", probe.name))?;
            let mut v = HeaderValue::from_str(value.expose()).map_err(|_| {
                format!(
                    "http probe {}: invalid value of header `{name}`",
                    probe.name
                )
            })?;
            v.set_sensitive(value.is_secret());
            headers.append(name, v);
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(probe.load_profile().max_in_flight as usize)
            .user_agent(concat!("faultline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("http probe {}: cannot build the client: {e}", probe.name))?;
        Ok(HttpProbeClient {
            http,
            method: match probe.method {
                HttpMethod::Get => reqwest::Method::GET,
                HttpMethod::Head => reqwest::Method::HEAD,
                HttpMethod::Post => reqwest::Method::POST,
                HttpMethod::Put => reqwest::Method::PUT,
                HttpMethod::Delete => reqwest::Method::DELETE,
            },
            url: probe.url.clone(),
            headers,
            body: probe.body.clone(),
            expect: probe.expect.clone(),
            deadline: probe.deadline,
            warm_up_safe: probe.method.is_safe(),
        })
    }

    /// Sends the request and reads the whole answer (so the connection can be used again) by `deadline`.
    async fn request(&self, deadline: Instant) -> Attempt {
        let mut request = self
            .http
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone());
        if let Some(body) = &self.body {
            request = request.body(body.clone());
        }
        let sent = Instant::now();
        let exchange = async {
            let mut response = request.send().await?;
            let status = response.status().as_u16();
            while response.chunk().await?.is_some() {}
            Ok::<u16, reqwest::Error>(status)
        };
        let result = match tokio::time::timeout_at(deadline.into(), exchange).await {
            Err(_) => Err(format!(
                "timed out: no answer within the {} deadline",
                format_duration(self.deadline)
            )),
            Ok(Ok(status)) if self.expect.matches(status) => Ok(()),
            Ok(Ok(status)) => Err(format!("status {status}")),
            Ok(Err(e)) if e.is_connect() => {
                // No connection: the request never left the client (as a component client's failed checkout).
                return Attempt::failed_unsent(connect_error(&e));
            }
            Ok(Err(e)) => Err(innermost(&e)),
        };
        match result {
            Ok(()) => Attempt::sent_at(sent, (Outcome::Ok, None)),
            Err(e) => Attempt::sent_at(sent, (Outcome::Failed, Some(e))),
        }
    }
}

/// `connection refused`, or the lowest-level reason the connection could not be made.
fn connect_error(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return "connection refused".into();
            }
        }
        source = s.source();
    }
    format!("cannot connect: {}", innermost(e))
}

/// The lowest-level message of an error chain: short, and without the URL reqwest puts in its own.
fn innermost(e: &reqwest::Error) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(s) = last.source() {
        last = s;
    }
    last.to_string()
}

impl LoadClient for HttpProbeClient {
    /// A probe's load profile schedules no writes; this only guards against a wiring mistake.
    fn write(&self, _id: u64, _deadline: Instant) -> BoxFuture<'_, Attempt> {
        Box::pin(async { Attempt::failed_unsent("an HTTP probe has no write operation") })
    }

    fn read(&self, deadline: Instant) -> BoxFuture<'_, Attempt> {
        Box::pin(self.request(deadline))
    }

    /// Opens connections by sending the probe's request on each, at once; only for GET and HEAD probes (a POST
    /// sent to warm up would be a request the service counts). Answers are not recorded.
    fn warm_up(&self, connections: usize, deadline: Instant) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if !self.warm_up_safe {
                return;
            }
            let requests = (0..connections).map(|_| self.request(deadline));
            futures_util::future::join_all(requests).await;
        })
    }
}

#[cfg(test)]
mod tests;
