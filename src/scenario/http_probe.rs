//! An HTTP probe of the user's own service (`http_probes:` in a scenario): one endpoint requested at a fixed rate
//! through the whole trial, so the service's availability, error rate, latency and RTO are measured beside the
//! component's. Read from the YAML form in `parse_http_probe.rs`; the client is `load::http`.

use std::fmt;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::model::{Arrivals, LoadProfile};
use crate::secret::Secret;

/// One probed endpoint, validated: the URL parses with an http or https scheme, the header names and values are
/// valid HTTP, and every `${VAR}` of a header value was found in the environment when the scenario was read.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HttpProbe {
    /// `[a-z0-9-]+`, unique in the scenario: the probe's figures are named `http.<name>.<metric>`.
    pub name: String,
    #[serde(serialize_with = "url_as_str")]
    pub url: reqwest::Url,
    pub method: HttpMethod,
    pub expect: ExpectStatus,
    /// Requests per second, open loop.
    pub rate: u32,
    /// Client-side deadline per request, counted from its scheduled time.
    pub deadline: Duration,
    /// Only with POST or PUT.
    pub body: Option<String>,
    /// Sorted by name; names are unique (case-insensitively).
    pub headers: Vec<(String, ProbeHeaderValue)>,
}

impl HttpProbe {
    /// The open-loop schedule of the probe: `rate` reads per second and nothing else (a probe has no writes and
    /// no searches), with room in flight for every request of one deadline plus a few, so that a slow service
    /// shows as slow answers, not as requests the harness held back.
    pub fn load_profile(&self) -> LoadProfile {
        let per_deadline = (f64::from(self.rate) * self.deadline.as_secs_f64()).ceil() as u32;
        LoadProfile {
            write_rate: 0,
            read_rate: self.rate,
            search_rate: 0,
            connections: 2,
            max_in_flight: per_deadline.saturating_add(4),
            deadline: self.deadline,
            arrivals: Arrivals::Uniform,
            redis_wait: None,
            ..LoadProfile::default()
        }
    }

    /// The metric name of one of the probe's figures, e.g. `http.api-ready.availability_pct`.
    pub fn metric_name(&self, metric: &str) -> String {
        format!("http.{}.{metric}", self.name)
    }

    /// The values taken from the environment (each variable's value and each whole header value built from
    /// them), for the run's list of secrets that no report, log or evidence file may carry.
    pub fn secrets(&self) -> Vec<Secret> {
        self.headers
            .iter()
            .flat_map(|(_, v)| match v {
                ProbeHeaderValue::Plain(_) => Vec::new(),
                ProbeHeaderValue::FromEnv { value, parts, .. } => {
                    let mut s = parts.clone();
                    s.push(value.clone());
                    s
                }
            })
            .collect()
    }
}

fn url_as_str<S: Serializer>(url: &reqwest::Url, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(url.as_str())
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Delete,
}

impl HttpMethod {
    pub const NAMES: [&'static str; 5] = ["GET", "HEAD", "POST", "PUT", "DELETE"];

    pub fn name(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Delete => "DELETE",
        }
    }

    /// Case-insensitive: `get` and `GET` are the same method in a scenario file.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "GET" => Some(HttpMethod::Get),
            "HEAD" => Some(HttpMethod::Head),
            "POST" => Some(HttpMethod::Post),
            "PUT" => Some(HttpMethod::Put),
            "DELETE" => Some(HttpMethod::Delete),
            _ => None,
        }
    }

    /// Whether a request body belongs with the method.
    pub fn takes_body(self) -> bool {
        matches!(self, HttpMethod::Post | HttpMethod::Put)
    }

    /// Whether sending the request again changes nothing on the server: only those are sent to warm the
    /// connections up.
    pub fn is_safe(self) -> bool {
        matches!(self, HttpMethod::Get | HttpMethod::Head)
    }
}

/// One accepted status: a code (`200`) or a class (`2xx`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusMatch {
    Code(u16),
    /// The hundreds digit: 2 for `2xx`.
    Class(u8),
}

impl StatusMatch {
    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusMatch::Code(c) => c == status,
            StatusMatch::Class(c) => status / 100 == u16::from(c),
        }
    }
}

impl fmt::Display for StatusMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusMatch::Code(c) => write!(f, "{c}"),
            StatusMatch::Class(c) => write!(f, "{c}xx"),
        }
    }
}

/// The statuses that count as available (any of them); never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectStatus(pub Vec<StatusMatch>);

impl ExpectStatus {
    pub fn matches(&self, status: u16) -> bool {
        self.0.iter().any(|m| m.matches(status))
    }
}

impl Default for ExpectStatus {
    fn default() -> Self {
        ExpectStatus(vec![StatusMatch::Code(200)])
    }
}

impl fmt::Display for ExpectStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|m| m.to_string()).collect();
        f.write_str(&parts.join(", "))
    }
}

impl Serialize for ExpectStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|m| m.to_string()))
    }
}

/// A header value as written, or built from environment variables. One built from the environment is a secret:
/// its Debug and Serialize show the template (`Bearer ${API_TOKEN}`), never the value.
#[derive(Clone, PartialEq)]
pub enum ProbeHeaderValue {
    Plain(String),
    FromEnv {
        /// As written in the scenario file, `${VAR}` references unexpanded.
        template: String,
        /// The template with every reference replaced.
        value: Secret,
        /// The value of each variable referenced.
        parts: Vec<Secret>,
    },
}

impl ProbeHeaderValue {
    /// What goes on the wire.
    pub fn expose(&self) -> &str {
        match self {
            ProbeHeaderValue::Plain(v) => v,
            ProbeHeaderValue::FromEnv { value, .. } => value.expose(),
        }
    }

    /// What may be shown: the value itself, or the template it was built from.
    pub fn shown(&self) -> &str {
        match self {
            ProbeHeaderValue::Plain(v) => v,
            ProbeHeaderValue::FromEnv { template, .. } => template,
        }
    }

    pub fn is_secret(&self) -> bool {
        matches!(self, ProbeHeaderValue::FromEnv { .. })
    }
}

impl fmt::Debug for ProbeHeaderValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeHeaderValue::Plain(v) => f.debug_tuple("Plain").field(v).finish(),
            ProbeHeaderValue::FromEnv { template, .. } => {
                f.debug_tuple("FromEnv").field(template).finish()
            }
        }
    }
}

impl Serialize for ProbeHeaderValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.shown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(headers: Vec<(String, ProbeHeaderValue)>) -> HttpProbe {
        HttpProbe {
            name: "api-ready".into(),
            url: "http://127.0.0.1:8080/health/ready".parse().unwrap(),
            method: HttpMethod::Get,
            expect: ExpectStatus::default(),
            rate: 10,
            deadline: Duration::from_secs(1),
            body: None,
            headers,
        }
    }

    #[test]
    fn a_header_from_the_environment_never_shows_its_value() {
        let p = probe(vec![
            (
                "Authorization".into(),
                ProbeHeaderValue::FromEnv {
                    template: "Bearer ${API_TOKEN}".into(),
                    value: Secret::new("Bearer s3cr3t-t0ken"),
                    parts: vec![Secret::new("s3cr3t-t0ken")],
                },
            ),
            ("X-Team".into(), ProbeHeaderValue::Plain("payments".into())),
        ]);
        let debug = format!("{p:?}");
        let json = serde_json::to_string(&p).unwrap();
        for shown in [&debug, &json] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(shown.contains("Bearer ${API_TOKEN}"), "{shown}");
            assert!(shown.contains("payments"), "{shown}");
        }
        assert!(json.contains("\"url\":\"http://127.0.0.1:8080/health/ready\""));
        assert_eq!(p.headers[0].1.expose(), "Bearer s3cr3t-t0ken");
        let secrets: Vec<String> = p.secrets().iter().map(|s| s.expose().to_string()).collect();
        assert_eq!(secrets, ["s3cr3t-t0ken", "Bearer s3cr3t-t0ken"]);
    }

    #[test]
    fn statuses_match_codes_and_classes() {
        let e = ExpectStatus(vec![StatusMatch::Code(200), StatusMatch::Class(3)]);
        assert!(e.matches(200) && e.matches(301) && e.matches(399));
        assert!(!e.matches(204) && !e.matches(503));
        assert_eq!(e.to_string(), "200, 3xx");
        assert!(ExpectStatus::default().matches(200));
    }

    #[test]
    fn the_load_profile_is_reads_at_the_rate() {
        let mut p = probe(Vec::new());
        p.rate = 50;
        p.deadline = Duration::from_millis(250);
        let l = p.load_profile();
        assert_eq!((l.write_rate, l.read_rate, l.search_rate), (0, 50, 0));
        assert_eq!(l.deadline, Duration::from_millis(250));
        assert_eq!(l.max_in_flight, 13 + 4);
        assert!(l.connections <= l.max_in_flight);
        assert_eq!(p.metric_name("rto_s"), "http.api-ready.rto_s");
    }
}
