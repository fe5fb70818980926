//! `http_probes:` of a scenario -> validated [`HttpProbe`]s. Header values may name environment variables
//! (`${API_TOKEN}`); they are looked up here, when the scenario is read, so a missing one stops the run before it
//! starts, and the error names the variable, never a value.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;
use serde_norway::Value;

use super::document::{check_name, Diagnostics};
use super::http_probe::{ExpectStatus, HttpMethod, HttpProbe, ProbeHeaderValue, StatusMatch};
use super::parse::duration_in;
use crate::secret::Secret;

const MAX_PROBES: usize = 16;
const DEFAULT_RATE: i64 = 10;
const MAX_RATE: i64 = 1000;
const DEFAULT_DEADLINE: Duration = Duration::from_secs(1);

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttpProbe {
    /// Lowercase letters, digits and `-`, unique in the scenario; the probe's figures are `http.<name>.<metric>`.
    name: Option<String>,
    /// An http or https URL, e.g. `http://127.0.0.1:8080/health/ready`.
    url: Option<String>,
    /// `GET` (the default), `HEAD`, `POST`, `PUT` or `DELETE`.
    #[schemars(extend("enum" = ["GET", "HEAD", "POST", "PUT", "DELETE"]))]
    method: Option<String>,
    /// The status that counts as available: a code (`200`, the default), a class (`"2xx"`) or a list of them.
    #[serde(default)]
    #[schemars(schema_with = "expect_status_schema")]
    expect_status: Option<Value>,
    /// Requests per second, open loop (default 10, at most 1000).
    rate: Option<i64>,
    /// Client-side deadline per request (default `1s`).
    deadline: Option<String>,
    /// Request body; only with POST or PUT.
    body: Option<String>,
    /// Request headers; a value may name environment variables, `Bearer ${API_TOKEN}` (read when the scenario is
    /// read; such values are secrets and never shown).
    headers: Option<BTreeMap<String, String>>,
}

fn expect_status_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let one = serde_json::json!({
        "anyOf": [
            {"type": "integer", "minimum": 100, "maximum": 599},
            {"type": "string", "pattern": "^([1-5][xX][xX]|[1-5][0-9][0-9])$"}
        ]
    });
    schemars::json_schema!({
        "anyOf": [one, {"type": "array", "items": one, "minItems": 1}, {"type": "null"}]
    })
}

/// How a variable of the environment is looked up (the process environment, or a fixed one in tests).
pub(super) type EnvLookup<'e> = &'e dyn Fn(&str) -> Result<String, std::env::VarError>;

/// Parses the whole list; names are unique across it.
pub(super) fn http_probe_list(
    d: &mut Diagnostics<'_>,
    raw: &[RawHttpProbe],
    env: EnvLookup<'_>,
) -> Option<Vec<HttpProbe>> {
    if raw.is_empty() {
        d.at(
            "http_probes",
            "`http_probes` is empty; leave it out or list at least one probe, e.g. `- name: api-ready` with `url: \
             http://127.0.0.1:8080/health/ready`",
        );
        return None;
    }
    if raw.len() > MAX_PROBES {
        d.at(
            &format!("http_probes[{MAX_PROBES}]"),
            format!(
                "`http_probes` has at most {MAX_PROBES} probes; this one has {}",
                raw.len()
            ),
        );
        return None;
    }
    let mut seen = BTreeSet::new();
    let probes: Vec<Option<HttpProbe>> = raw
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let path = format!("http_probes[{i}]");
            if let Some(name) = &p.name {
                if !seen.insert(name.clone()) {
                    d.at(
                        &format!("{path}.name"),
                        format!(
                            "http probe name `{name}` is used twice; each probe's figures are named after it \
                             (`http.{name}.availability_pct`)"
                        ),
                    );
                }
            }
            http_probe(d, &path, p, env)
        })
        .collect();
    probes.into_iter().collect()
}

fn http_probe(
    d: &mut Diagnostics<'_>,
    path: &str,
    raw: &RawHttpProbe,
    env: EnvLookup<'_>,
) -> Option<HttpProbe> {
    let name = d
        .require(
            raw.name.clone(),
            &format!("{path}.name"),
            "e.g. `name: api-ready`",
        )
        .filter(|n| check_name(d, n, &format!("{path}.name"), "http probe"));
    let url = d
        .require(
            raw.url.as_deref(),
            &format!("{path}.url"),
            "e.g. `url: http://127.0.0.1:8080/health/ready`",
        )
        .and_then(|u| url(d, &format!("{path}.url"), u));
    let method = match raw.method.as_deref() {
        None => Some(HttpMethod::Get),
        Some(m) => method(d, &format!("{path}.method"), m),
    };
    let expect = match &raw.expect_status {
        None => Some(ExpectStatus::default()),
        Some(v) => expect_status(d, &format!("{path}.expect_status"), v),
    };
    let rate = match raw.rate {
        None => Some(DEFAULT_RATE as u32),
        Some(r) => d.int_in_range(
            r,
            &format!("{path}.rate"),
            &format!("{path}.rate"),
            1,
            MAX_RATE,
        ),
    };
    let deadline = match &raw.deadline {
        None => Some(DEFAULT_DEADLINE),
        Some(t) => duration_in(
            d,
            t,
            &format!("{path}.deadline"),
            &format!("{path}.deadline"),
            Duration::from_millis(10),
            Duration::from_secs(60),
        ),
    };
    let body = match (method, &raw.body) {
        (Some(m), Some(_)) if !m.takes_body() => {
            d.at_key(
                &format!("{path}.body"),
                format!(
                    "a {} request has no body; `body` is only allowed with POST or PUT",
                    m.name()
                ),
            );
            None
        }
        (_, body) => Some(body.clone()),
    };
    let headers = match &raw.headers {
        None => Some(Vec::new()),
        Some(h) => headers(d, &format!("{path}.headers"), h, env),
    };
    Some(HttpProbe {
        name: name?,
        url: url?,
        method: method?,
        expect: expect?,
        rate: rate?,
        deadline: deadline?,
        body: body?,
        headers: headers?,
    })
}

fn url(d: &mut Diagnostics<'_>, path: &str, text: &str) -> Option<reqwest::Url> {
    let url = match reqwest::Url::parse(text.trim()) {
        Ok(u) => u,
        Err(e) => {
            d.at(
                path,
                format!("`{text}` is not a URL ({e}); write it whole, e.g. `http://127.0.0.1:8080/health/ready`"),
            );
            return None;
        }
    };
    if !matches!(url.scheme(), "http" | "https") {
        d.at(
            path,
            format!(
                "URL `{text}` has the scheme `{}`; an HTTP probe's URL starts with http:// or https://",
                url.scheme()
            ),
        );
        return None;
    }
    if url.host().is_none() {
        d.at(path, format!("URL `{text}` names no host"));
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        // The URL is shown in reports; a credential belongs in a header built from the environment.
        d.at(
            path,
            "the URL carries credentials (`user:password@`); give them in a header instead, e.g. \
             `headers: {Authorization: \"Basic ${API_CREDENTIALS}\"}`",
        );
        return None;
    }
    Some(url)
}

fn method(d: &mut Diagnostics<'_>, path: &str, text: &str) -> Option<HttpMethod> {
    let found = HttpMethod::parse(text);
    if let Some(m) = found.filter(|m| m.name() == text) {
        return Some(m);
    }
    let hint = match found {
        Some(m) => format!(" (methods are written in capitals: `{}`)", m.name()),
        None => String::new(),
    };
    d.at(
        path,
        format!(
            "unknown method `{text}`{hint}; use {}",
            HttpMethod::NAMES.join(", ")
        ),
    );
    None
}

fn expect_status(d: &mut Diagnostics<'_>, path: &str, value: &Value) -> Option<ExpectStatus> {
    let matches: Vec<Option<StatusMatch>> = match value {
        Value::Sequence(items) if items.is_empty() => {
            d.at(
                path,
                "`expect_status` is an empty list; list at least one status, e.g. `[200, 204]`",
            );
            return None;
        }
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| status_match(d, &format!("{path}[{i}]"), v))
            .collect(),
        v => vec![status_match(d, path, v)],
    };
    matches
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .map(ExpectStatus)
}

fn status_match(d: &mut Diagnostics<'_>, path: &str, value: &Value) -> Option<StatusMatch> {
    const WHAT: &str = "use a code (`200`), a class (`2xx`) or a list of them";
    let code = match value {
        Value::Number(n) => n.as_i64().ok_or_else(|| n.to_string()),
        Value::String(s) => {
            let b = s.as_bytes();
            let class = b.len() == 3 && (b'1'..=b'5').contains(&b[0]);
            if class && b[1..].eq_ignore_ascii_case(b"xx") {
                return Some(StatusMatch::Class(b[0] - b'0'));
            }
            s.parse::<i64>().map_err(|_| s.clone())
        }
        _ => Err(String::new()),
    };
    match code {
        Ok(n) if (100..=599).contains(&n) => Some(StatusMatch::Code(n as u16)),
        Ok(n) => {
            d.at(
                path,
                format!("expect_status {n} is out of range: allowed 100 to 599"),
            );
            None
        }
        Err(shown) if shown.is_empty() => {
            d.at(path, format!("expect_status is not a status: {WHAT}"));
            None
        }
        Err(shown) => {
            d.at(
                path,
                format!("expect_status `{shown}` is not a status: {WHAT}"),
            );
            None
        }
    }
}

fn headers(
    d: &mut Diagnostics<'_>,
    path: &str,
    raw: &BTreeMap<String, String>,
    env: EnvLookup<'_>,
) -> Option<Vec<(String, ProbeHeaderValue)>> {
    let mut seen = BTreeSet::new();
    let mut ok = true;
    let mut out = Vec::new();
    for (name, template) in raw {
        let at = format!("{path}.{name}");
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            d.at_key(&at, format!("`{name}` is not a valid HTTP header name"));
            ok = false;
            continue;
        }
        if !seen.insert(name.to_ascii_lowercase()) {
            d.at_key(
                &at,
                format!("header `{name}` is given twice (header names are case-insensitive)"),
            );
            ok = false;
            continue;
        }
        let value = match expand_env(template, env) {
            Err(e) => {
                d.at(&at, format!("header `{name}`: {e}"));
                ok = false;
                continue;
            }
            Ok(None) => ProbeHeaderValue::Plain(template.clone()),
            Ok(Some((value, parts))) => ProbeHeaderValue::FromEnv {
                template: template.clone(),
                value: Secret::new(value),
                parts: parts.into_iter().map(Secret::new).collect(),
            },
        };
        if http::HeaderValue::from_str(value.expose()).is_err() {
            let what = if value.is_secret() {
                "the value built from the environment".to_string()
            } else {
                format!("`{template}`")
            };
            d.at(
                &at,
                format!("header `{name}`: {what} is not a valid HTTP header value (a line break or non-ASCII text?)"),
            );
            ok = false;
            continue;
        }
        out.push((name.clone(), value));
    }
    ok.then_some(out)
}

/// `template` with every `${VAR}` replaced by the variable's value, and those values; None when it names no
/// variable. A `$` not followed by `{` is kept as it is. Errors name the variable, never a value.
fn expand_env(template: &str, env: EnvLookup<'_>) -> Result<Option<(String, Vec<String>)>, String> {
    if !template.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(template.len());
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(
                "`${` without a closing `}`; name an environment variable as `${API_TOKEN}`"
                    .to_string(),
            );
        };
        let var = &after[..end];
        let valid = var.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(format!(
                "`${{{var}}}` is not an environment variable name (letters, digits and `_`, not starting with a digit)"
            ));
        }
        match env(var) {
            Ok(v) => {
                out.push_str(&v);
                parts.push(v);
            }
            Err(std::env::VarError::NotPresent) => {
                return Err(format!("environment variable `{var}` is not set"))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(format!("environment variable `{var}` is not UTF-8 text"))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Some((out, parts)))
}

#[cfg(test)]
mod tests {
    use std::env::VarError;
    use std::path::Path;

    use super::*;
    use crate::scenario::document::read_document;
    use crate::scenario::parse::tests::{err, path, with_faults};
    use crate::scenario::parse_scenario;

    fn fake_env(name: &str) -> Result<String, VarError> {
        match name {
            "API_TOKEN" => Ok("s3cr3t".into()),
            "EMPTY" => Ok(String::new()),
            "MULTILINE" => Ok("a\nb".into()),
            _ => Err(VarError::NotPresent),
        }
    }

    #[derive(Deserialize)]
    struct Doc {
        http_probes: Vec<RawHttpProbe>,
    }

    /// The `http_probes:` list of `text`, read with `fake_env` as the environment.
    fn probes(text: &str) -> Result<Vec<HttpProbe>, String> {
        let file = Path::new("p.yaml");
        let (doc, map) = read_document::<Doc>(text, file, "probes").map_err(|e| e.to_string())?;
        let mut d = Diagnostics::new(file, &map);
        let probes = http_probe_list(&mut d, &doc.http_probes, &fake_env);
        d.finish(probes).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_defaults_and_every_field() {
        let p = probes(
            "\
http_probes:
  - name: api-ready
    url: http://127.0.0.1:8080/health/ready
  - name: orders
    url: https://api.example.com/orders?limit=1
    method: POST
    expect_status: [200, \"3xx\", \"204\"]
    rate: 50
    deadline: 250ms
    body: '{\"ping\": 1}'
    headers: {Authorization: \"Bearer ${API_TOKEN}\", X-Team: payments}
",
        )
        .unwrap();
        assert_eq!(p.len(), 2);
        let ready = &p[0];
        assert_eq!(ready.name, "api-ready");
        assert_eq!(ready.url.as_str(), "http://127.0.0.1:8080/health/ready");
        assert_eq!(ready.method, HttpMethod::Get);
        assert_eq!(ready.expect, ExpectStatus(vec![StatusMatch::Code(200)]));
        assert_eq!((ready.rate, ready.deadline), (10, Duration::from_secs(1)));
        assert_eq!((ready.body.as_deref(), ready.headers.len()), (None, 0));

        let orders = &p[1];
        assert_eq!(orders.url.host_str(), Some("api.example.com"));
        assert_eq!(orders.method, HttpMethod::Post);
        assert_eq!(
            orders.expect,
            ExpectStatus(vec![
                StatusMatch::Code(200),
                StatusMatch::Class(3),
                StatusMatch::Code(204)
            ])
        );
        assert_eq!(
            (orders.rate, orders.deadline),
            (50, Duration::from_millis(250))
        );
        assert_eq!(orders.body.as_deref(), Some("{\"ping\": 1}"));
        let (name, auth) = &orders.headers[0];
        assert_eq!(
            (name.as_str(), auth.expose()),
            ("Authorization", "Bearer s3cr3t")
        );
        assert!(auth.is_secret());
        assert_eq!(
            orders.headers[1].1,
            ProbeHeaderValue::Plain("payments".into())
        );
        let shown = format!("{p:?} {}", serde_json::to_string(&p).unwrap());
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("Bearer ${API_TOKEN}"), "{shown}");
        let secrets: Vec<String> = orders
            .secrets()
            .iter()
            .map(|s| s.expose().to_string())
            .collect();
        assert_eq!(secrets, ["s3cr3t", "Bearer s3cr3t"]);
    }

    #[test]
    fn reports_every_problem_at_its_place() {
        let e = probes(
            "\
http_probes:
  - name: Api_Ready
    url: ftp://127.0.0.1/x
    rate: 0
  - name: dup
    url: not a url
    method: get
    expect_status: 700
    body: x
  - name: dup
    url: http://user:pw@127.0.0.1/
    expect_status: [200, \"6xx\"]
    deadline: 5ms
    headers: {Authorization: \"Bearer ${NOT_SET_ANYWHERE}\", Bad Name: x, X-Multi: \"${MULTILINE}\"}
",
        )
        .unwrap_err();
        for want in [
            "p.yaml:2:11: http probe name `Api_Ready` is not valid",
            "p.yaml:3:10: URL `ftp://127.0.0.1/x` has the scheme `ftp`; an HTTP probe's URL starts with http:// or https://",
            "p.yaml:4:11: http_probes[0].rate 0 is out of range: allowed 1 to 1000",
            "p.yaml:6:10: `not a url` is not a URL (relative URL without a base)",
            "p.yaml:7:13: unknown method `get` (methods are written in capitals: `GET`); use GET, HEAD, POST, PUT, DELETE",
            "p.yaml:8:20: expect_status 700 is out of range: allowed 100 to 599",
            "p.yaml:10:11: http probe name `dup` is used twice",
            "p.yaml:11:10: the URL carries credentials",
            "p.yaml:12:26: expect_status `6xx` is not a status",
            "p.yaml:13:15: http_probes[2].deadline `5ms` is out of range: allowed 10ms to 1m",
            "header `Authorization`: environment variable `NOT_SET_ANYWHERE` is not set",
            "`Bad Name` is not a valid HTTP header name",
            "header `X-Multi`: the value built from the environment is not a valid HTTP header value",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
        // GET has no body, but `method: get` was not understood, so nothing is said about the body.
        assert!(!e.contains("has no body"), "{e}");
        assert!(!e.contains("a\nb"), "{e}");
        let e = probes(
            "http_probes:\n  - name: x\n    url: http://h/\n    method: HEAD\n    body: x\n",
        )
        .unwrap_err();
        assert!(
            e.contains(
                "p.yaml:5:5: a HEAD request has no body; `body` is only allowed with POST or PUT"
            ),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_and_empty_lists() {
        let e = probes("http_probes:\n  - name: x\n    url: http://h/\n    rat: 5\n").unwrap_err();
        assert!(
            e.contains("p.yaml:4:5: http_probes[0]: unknown key `rat` (did you mean `rate`?)"),
            "{e}"
        );
        let e = probes("http_probes: []\n").unwrap_err();
        assert!(e.contains("p.yaml:1:14: `http_probes` is empty"), "{e}");
        let e = probes("http_probes:\n  - name: x\n    url: http://h/\n    expect_status: []\n")
            .unwrap_err();
        assert!(
            e.contains("p.yaml:4:20: `expect_status` is an empty list"),
            "{e}"
        );
        let e = probes("http_probes:\n  - name: x\n").unwrap_err();
        assert!(e.contains("p.yaml:2:5: missing required key `url`"), "{e}");
    }

    #[test]
    fn a_scenario_carries_its_probes() {
        let base = with_faults("  - kind: process-kill\n    target: {role: primary}\n");
        assert!(parse_scenario(&base, path(), None)
            .unwrap()
            .http_probes
            .is_empty());
        let text = format!(
            "{base}http_probes:\n  - name: api-ready\n    url: http://127.0.0.1:8080/health/ready\n    headers: {{X-Token: \"${{FAULTLINE_TEST_UNSET_VARIABLE}}\"}}\n"
        );
        let e = err(&text);
        assert!(
            e.contains("s.yaml:13:24: header `X-Token`: environment variable `FAULTLINE_TEST_UNSET_VARIABLE` is not set"),
            "{e}"
        );
        let text = text.replace(
            "headers: {X-Token: \"${FAULTLINE_TEST_UNSET_VARIABLE}\"}",
            "rate: 5",
        );
        let s = parse_scenario(&text, path(), None).unwrap();
        assert_eq!(s.http_probes.len(), 1);
        assert_eq!(s.http_probes[0].rate, 5);
    }

    #[test]
    fn expands_environment_references() {
        assert_eq!(expand_env("plain $5 value", &fake_env), Ok(None));
        assert_eq!(
            expand_env("Bearer ${API_TOKEN}", &fake_env),
            Ok(Some(("Bearer s3cr3t".into(), vec!["s3cr3t".into()])))
        );
        assert_eq!(
            expand_env("${API_TOKEN}:${EMPTY}$", &fake_env),
            Ok(Some((
                "s3cr3t:$".into(),
                vec!["s3cr3t".into(), String::new()]
            )))
        );
        assert_eq!(
            expand_env("Bearer ${NOPE}", &fake_env),
            Err("environment variable `NOPE` is not set".into())
        );
        assert!(expand_env("${API_TOKEN", &fake_env)
            .unwrap_err()
            .contains("without a closing"));
        assert!(expand_env("${1X}", &fake_env)
            .unwrap_err()
            .contains("`${1X}` is not an environment variable name"));
    }
}
