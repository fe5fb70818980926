//! Scenario and suite files -> validated [`Scenario`] and [`Suite`].
//!
//! serde reads the file into the `Raw*` types below (every field optional, unknown keys rejected); the checks
//! that follow collect every problem they find, each placed at its line and column through the source map.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::document::{
    check_name, read_document, read_input, read_input_file, Diagnostics, ReadFailure,
};
use super::duration::{format_duration, parse_duration};
use super::model::{
    Arrivals, ClientPath, ComponentKind, HealSpec, LoadProfile, Metric, RedisWait, Role, Scenario,
    Suite, Threshold,
};
use super::parse_fault::{fault_list, FaultContext, RawFault};
use super::parse_http_probe::{http_probe_list, RawHttpProbe};
use super::parse_step::{step_list, RawStep, StepContext};
use super::threshold::parse_threshold;
use super::HttpProbe;
use crate::input_error::InputErrors;
use crate::ledger::Source;
use crate::topology::{parse_topology, Topology};

const SCENARIO_EXPECTED: &str =
    "a scenario (a mapping with name, component, baseline, faults, observe, thresholds)";
const SUITE_EXPECTED: &str = "a suite (a mapping with name and scenarios)";

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
pub(super) const HOUR: Duration = Duration::from_secs(3600);

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    /// The scenario's name (reports, history).
    name: Option<String>,
    description: Option<String>,
    /// The component whose load, probes and ledger the run measures.
    #[schemars(extend("enum" = ["postgres", "redis", "qdrant"]))]
    component: Option<String>,
    /// Several components measured in one run (instead of `component`), lead first: each gets its own load,
    /// probes and figures (`postgres.promotion_s`); `availability_pct` counts every operation of every component.
    components: Option<Vec<String>>,
    /// Topology file, relative to this file.
    topology: Option<String>,
    /// How the load's PostgreSQL clients reach the primary: `direct` (multi-host connection to the members, the
    /// default), `haproxy` (HAProxy's read-write port) or `pgbouncer` (PgBouncer in front of HAProxy).
    #[schemars(extend("enum" = ["direct", "haproxy", "pgbouncer"]))]
    client_path: Option<String>,
    /// How many baseline-fault-heal cycles the run makes.
    trials: Option<i64>,
    load: Option<RawLoad>,
    /// Steady-state window before the first fault, e.g. `5s`.
    baseline: Option<String>,
    faults: Option<Vec<RawFault>>,
    /// The fault window (in a drill: until the recovery steps start), e.g. `30s`.
    observe: Option<String>,
    /// Drill steps before the baseline (e.g. a backup).
    prepare: Option<Vec<RawStep>>,
    /// Drill steps after the observation (restores, waits).
    recovery: Option<Vec<RawStep>>,
    heal: Option<RawHeal>,
    /// `metric op limit`, e.g. `detection_s <= 10`, `p95(rto_s) < 30`, `regressions == 0`.
    thresholds: Option<Vec<String>>,
    /// The user's own HTTP endpoints, requested at a fixed rate through every trial (figures `http.<name>.*`).
    http_probes: Option<Vec<RawHttpProbe>>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    write_rate: Option<i64>,
    read_rate: Option<i64>,
    search_rate: Option<i64>,
    connections: Option<i64>,
    max_in_flight: Option<i64>,
    deadline: Option<String>,
    rto_consecutive: Option<i64>,
    redis_wait: Option<RawRedisWait>,
    arrivals: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawRedisWait {
    replicas: Option<i64>,
    timeout: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawHeal {
    timeout: Option<String>,
    settle: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    name: Option<String>,
    /// Scenario files, relative to this file, run in order.
    scenarios: Option<Vec<String>>,
}

/// JSON Schema of a scenario file, generated from the type it is read into (`faultline schema scenario`).
pub fn scenario_schema() -> serde_json::Value {
    let mut v =
        serde_json::to_value(schemars::schema_for!(RawScenario)).expect("a schema serialises");
    v["title"] = "faultline scenario".into();
    v
}

/// JSON Schema of a suite file (`faultline schema suite`).
pub fn suite_schema() -> serde_json::Value {
    let mut v = serde_json::to_value(schemars::schema_for!(RawSuite)).expect("a schema serialises");
    v["title"] = "faultline suite".into();
    v
}

/// Parses a scenario. `path` names the file in errors and anchors a relative `topology:`, which is loaded and
/// used to check node and zone names; without one, `default_topology` (if any) is used for those checks.
pub fn parse_scenario(
    text: &str,
    path: &Path,
    default_topology: Option<&Topology>,
) -> Result<Scenario, InputErrors> {
    let (raw, map) = read_document::<RawScenario>(text, path, SCENARIO_EXPECTED)?;
    let mut d = Diagnostics::new(path, &map);
    let scenario = build_scenario(&mut d, raw, path, default_topology);
    d.finish(scenario)
}

/// Reads and parses a scenario file; see [`parse_scenario`].
pub fn load_scenario(
    path: &Path,
    default_topology: Option<&Topology>,
) -> Result<Scenario, InputErrors> {
    let text = read_input_file(path)?;
    parse_scenario(&text, path, default_topology)
}

/// Parses a suite and every scenario it lists (paths relative to the suite file). Problems inside a scenario are
/// reported against that scenario's file; a scenario file that cannot be read, against the suite's entry.
pub fn parse_suite(
    text: &str,
    path: &Path,
    default_topology: Option<&Topology>,
) -> Result<Suite, InputErrors> {
    let (raw, map) = read_document::<RawSuite>(text, path, SUITE_EXPECTED)?;
    let mut d = Diagnostics::new(path, &map);
    let suite = build_suite(&mut d, raw, path, default_topology);
    d.finish(suite)
}

/// Reads and parses a suite file; see [`parse_suite`].
pub fn load_suite(path: &Path, default_topology: Option<&Topology>) -> Result<Suite, InputErrors> {
    let text = read_input_file(path)?;
    parse_suite(&text, path, default_topology)
}

/// `reference` as written in `file`, relative to the directory of `file`.
fn resolve(file: &Path, reference: &str) -> PathBuf {
    file.parent().unwrap_or(Path::new("")).join(reference)
}

fn build_suite(
    d: &mut Diagnostics<'_>,
    raw: RawSuite,
    file: &Path,
    default_topology: Option<&Topology>,
) -> Option<Suite> {
    let name = d
        .require(raw.name, "name", "e.g. `name: nightly`")
        .filter(|n| check_name(d, n, "name", "suite"));
    let entries = d.require(
        raw.scenarios,
        "scenarios",
        "list the scenario files to run, relative to this file",
    )?;
    if entries.is_empty() {
        d.at(
            "scenarios",
            "`scenarios` is empty; list at least one scenario file, relative to this file",
        );
    }
    let mut scenarios: Vec<Scenario> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("scenarios[{i}]");
        if entry.trim().is_empty() {
            d.at(&path, "the scenario path is empty");
            continue;
        }
        let resolved = resolve(file, entry);
        let text = match read_input(&resolved) {
            Ok(text) => text,
            Err(ReadFailure::Io(e)) => {
                d.at(
                    &path,
                    format!(
                        "scenario file `{entry}` cannot be read ({}): {e}",
                        resolved.display()
                    ),
                );
                continue;
            }
            Err(ReadFailure::Invalid(e)) => {
                d.extend(e.into());
                continue;
            }
        };
        match parse_scenario(&text, &resolved, default_topology) {
            Ok(s) => {
                if scenarios.iter().any(|other| other.name == s.name) {
                    d.at(
                        &path,
                        format!(
                            "the suite lists scenario `{}` twice; reports are keyed by scenario name (use `trials` \
                             to repeat a scenario)",
                            s.name
                        ),
                    );
                }
                scenarios.push(s);
            }
            Err(e) => d.extend(e),
        }
    }
    Some(Suite {
        name: name?,
        source: file.to_path_buf(),
        scenarios,
    })
}

fn build_scenario(
    d: &mut Diagnostics<'_>,
    raw: RawScenario,
    file: &Path,
    default_topology: Option<&Topology>,
) -> Option<Scenario> {
    let name = d
        .require(raw.name, "name", "e.g. `name: postgres-primary-kill`")
        .filter(|n| check_name(d, n, "name", "scenario"));
    let components = scenario_components(d, raw.component, raw.components);
    let component = components.as_ref().and_then(|c| c.first().copied());

    let client_path = client_path(d, raw.client_path.as_deref(), components.as_deref());
    let topology_path = raw.topology.as_deref().map(|t| resolve(file, t));
    let own_topology = match (raw.topology.as_deref(), &topology_path) {
        (Some(reference), Some(resolved)) => referenced_topology(d, reference, resolved),
        _ => None,
    };
    // A topology that failed to load has reported its own errors; references are then left unchecked.
    let topology = if raw.topology.is_some() {
        own_topology.as_ref()
    } else {
        default_topology
    };

    let trials = match raw.trials {
        None => Some(1),
        Some(t) => d.int_in_range(t, "trials", "trials", 1, 1000),
    };
    let load = load_profile(d, raw.load, components.as_deref());
    let baseline = d
        .require(
            raw.baseline,
            "baseline",
            "set the steady-load window before the first fault, e.g. `baseline: 5s`",
        )
        .and_then(|b| duration_in(d, &b, "baseline", "baseline", SECOND, 24 * HOUR));
    let observe = d
        .require(
            raw.observe,
            "observe",
            "set the fault window measured after the baseline, e.g. `observe: 30s`",
        )
        .and_then(|o| duration_in(d, &o, "observe", "observe", SECOND, 24 * HOUR));
    let heal = heal_spec(d, raw.heal);

    let has_faults = raw.faults.as_ref().is_some_and(|f| !f.is_empty());
    let faults = d
        .require(
            raw.faults,
            "faults",
            "list at least one fault, e.g. `- kind: process-kill` with `target: {role: primary}`",
        )
        .and_then(|faults| {
            let ctx = FaultContext {
                component: component.unwrap_or(ComponentKind::Postgres),
                topology,
                observe,
            };
            fault_list(d, &faults, &ctx)
        });
    let step_ctx = StepContext {
        has_faults,
        topology,
    };
    let prepare = match &raw.prepare {
        None => Some(Vec::new()),
        Some(steps) => step_list(d, "prepare", steps, &step_ctx),
    };
    let recovery = match &raw.recovery {
        None => Some(Vec::new()),
        Some(steps) => step_list(d, "recovery", steps, &step_ctx),
    };
    let http_probes = match &raw.http_probes {
        None => Some(Vec::new()),
        Some(p) => http_probe_list(d, p, &|var| std::env::var(var)),
    };
    let thresholds = d
        .require(
            raw.thresholds,
            "thresholds",
            "add at least one, e.g. `- detection_s <= 10`",
        )
        .and_then(|t| threshold_list(d, &t, components.as_deref(), http_probes.as_deref()));

    let client_path = client_path?;
    let components = components?;
    match (
        name, component, trials, load, baseline, observe, heal, faults, thresholds,
    ) {
        (
            Some(name),
            Some(component),
            Some(trials),
            Some(load),
            Some(baseline),
            Some(observe),
            Some(heal),
            Some(faults),
            Some(thresholds),
        ) => Some(Scenario {
            prepare: prepare?,
            recovery: recovery?,
            http_probes: http_probes?,
            name,
            description: raw.description.unwrap_or_default(),
            source: file.to_path_buf(),
            component,
            components,
            client_path,
            topology: topology_path,
            load,
            baseline,
            faults,
            observe,
            heal,
            thresholds,
            trials,
        }),
        _ => None,
    }
}

/// `component: x` or `components: [x, y]` (exactly one of them), lead first, each component once.
fn scenario_components(
    d: &mut Diagnostics<'_>,
    one: Option<String>,
    several: Option<Vec<String>>,
) -> Option<Vec<ComponentKind>> {
    match (one, several) {
        (Some(_), Some(_)) => {
            d.at(
                "components",
                "set either `component` (one) or `components` (a list), not both",
            );
            None
        }
        (None, None) => {
            d.require::<String>(
                None,
                "component",
                "set the component whose failover is measured: postgres, redis or qdrant (or several: \
                 `components: [postgres, redis]`)",
            );
            None
        }
        (Some(c), None) => component(d, &c, "component").map(|c| vec![c]),
        (None, Some(list)) => {
            if list.is_empty() {
                d.at(
                    "components",
                    "`components` is empty; list the components measured, e.g. `components: [postgres, redis]`",
                );
                return None;
            }
            let mut out: Vec<ComponentKind> = Vec::new();
            let mut ok = true;
            for (i, text) in list.iter().enumerate() {
                let path = format!("components[{i}]");
                match component(d, text, &path) {
                    Some(c) if out.contains(&c) => {
                        d.at(&path, format!("component {c} is listed twice"));
                        ok = false;
                    }
                    Some(c) => out.push(c),
                    None => ok = false,
                }
            }
            ok.then_some(out)
        }
    }
}

/// How the scenario's components read in a message: "component is postgres" / "components are postgres, redis".
fn components_phrase(components: &[ComponentKind]) -> String {
    match components {
        [one] => format!("this scenario's component is {one}"),
        many => format!(
            "this scenario's components are {}",
            many.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// `client_path:`: direct unless set; the routing layer carries PostgreSQL clients only.
fn client_path(
    d: &mut Diagnostics<'_>,
    raw: Option<&str>,
    components: Option<&[ComponentKind]>,
) -> Option<ClientPath> {
    let path = match raw {
        None | Some("direct") => return Some(ClientPath::Direct),
        Some("haproxy") => ClientPath::Haproxy,
        Some("pgbouncer") => ClientPath::Pgbouncer,
        Some(other) => {
            d.at(
                "client_path",
                format!("unknown client path `{other}`: expected direct, haproxy or pgbouncer"),
            );
            return None;
        }
    };
    match components {
        None => Some(path),
        Some(cs) if cs.contains(&ComponentKind::Postgres) => Some(path),
        Some(cs) => {
            d.at(
                "client_path",
                format!(
                    "client_path {} routes PostgreSQL clients, but {}; Redis clients find the master through \
                     Sentinel",
                    path.name(),
                    components_phrase(cs)
                ),
            );
            None
        }
    }
}

/// Loads the scenario's own `topology:`; a file that cannot be read is blamed on the `topology:` line.
fn referenced_topology(
    d: &mut Diagnostics<'_>,
    reference: &str,
    resolved: &Path,
) -> Option<Topology> {
    let text = match read_input(resolved) {
        Ok(text) => text,
        Err(ReadFailure::Io(e)) => {
            d.at(
                "topology",
                format!(
                    "topology file `{reference}` cannot be read ({}): {e}",
                    resolved.display()
                ),
            );
            return None;
        }
        Err(ReadFailure::Invalid(e)) => {
            d.extend(e.into());
            return None;
        }
    };
    parse_topology(&text, resolved)
        .map_err(|e| d.extend(e))
        .ok()
}

pub(super) fn component(d: &mut Diagnostics<'_>, text: &str, path: &str) -> Option<ComponentKind> {
    let found = ComponentKind::ALL.into_iter().find(|c| c.name() == text);
    if found.is_none() {
        let known: Vec<&str> = ComponentKind::ALL.iter().map(|c| c.name()).collect();
        d.at(
            path,
            format!(
                "unknown component `{text}`; known components: {}",
                known.join(", ")
            ),
        );
    }
    found
}

pub(super) fn role(d: &mut Diagnostics<'_>, text: &str, path: &str) -> Option<Role> {
    match text {
        "primary" => Some(Role::Primary),
        "replica" => Some(Role::Replica),
        "sync-replica" | "sync_replica" => Some(Role::SyncReplica),
        _ => {
            let hint = match text {
                "master" | "leader" => {
                    " (the Redis master and the Patroni leader are both `primary`)"
                }
                "slave" | "standby" | "follower" => " (use `replica`)",
                _ => "",
            };
            d.at(
                path,
                format!("unknown role `{text}`{hint}; use primary, replica or sync-replica"),
            );
            None
        }
    }
}

/// A duration within an inclusive range; the error names the field, the value and the range.
pub(super) fn duration_in(
    d: &mut Diagnostics<'_>,
    text: &str,
    path: &str,
    label: &str,
    min: Duration,
    max: Duration,
) -> Option<Duration> {
    match parse_duration(text) {
        Err(e) => {
            d.at(path, e);
            None
        }
        Ok(v) if v < min || v > max => {
            d.at(
                path,
                format!(
                    "{label} `{text}` is out of range: allowed {} to {}",
                    format_duration(min),
                    format_duration(max)
                ),
            );
            None
        }
        Ok(v) => Some(v),
    }
}

fn int_or_default(
    d: &mut Diagnostics<'_>,
    value: Option<i64>,
    path: &str,
    min: i64,
    max: i64,
    default: u32,
) -> Option<u32> {
    match value {
        None => Some(default),
        Some(v) => d.int_in_range(v, path, path, min, max),
    }
}

/// The highest rate per stream a scenario may ask for: above what the load driver sustains here (benches/load_driver.rs
/// prints it) a schedule would be kept by the pacer but not by the clients.
const MAX_RATE: i64 = 100_000;

fn load_profile(
    d: &mut Diagnostics<'_>,
    raw: Option<RawLoad>,
    components: Option<&[ComponentKind]>,
) -> Option<LoadProfile> {
    let defaults = LoadProfile::default();
    let Some(raw) = raw else {
        return Some(defaults);
    };
    let write_rate = int_or_default(
        d,
        raw.write_rate,
        "load.write_rate",
        1,
        MAX_RATE,
        defaults.write_rate,
    );
    let read_rate = int_or_default(
        d,
        raw.read_rate,
        "load.read_rate",
        0,
        MAX_RATE,
        defaults.read_rate,
    );
    let search_rate = int_or_default(
        d,
        raw.search_rate,
        "load.search_rate",
        0,
        MAX_RATE,
        defaults.search_rate,
    );
    if let (Some(rate), Some(cs)) = (search_rate, components) {
        if rate > 0 && !cs.contains(&ComponentKind::Qdrant) {
            d.at(
                "load.search_rate",
                format!(
                    "load.search_rate is only allowed when component is qdrant ({})",
                    components_phrase(cs)
                ),
            );
        }
    }
    let connections = int_or_default(
        d,
        raw.connections,
        "load.connections",
        1,
        256,
        defaults.connections,
    );
    let max_in_flight = int_or_default(
        d,
        raw.max_in_flight,
        "load.max_in_flight",
        1,
        4096,
        defaults.max_in_flight,
    );
    let arrivals = match raw.arrivals.as_deref() {
        None | Some("uniform") => Some(Arrivals::Uniform),
        Some("poisson") => Some(Arrivals::Poisson),
        Some(other) => {
            d.at(
                "load.arrivals",
                format!("unknown load.arrivals `{other}`; use uniform or poisson"),
            );
            None
        }
    };
    if let (Some(c), Some(m)) = (connections, max_in_flight) {
        if c > m {
            d.at(
                "load.connections",
                format!("load.connections {c} is more than load.max_in_flight {m}: a connection serves one operation at a time"),
            );
        }
    }
    let rto_consecutive = int_or_default(
        d,
        raw.rto_consecutive,
        "load.rto_consecutive",
        1,
        1000,
        defaults.rto_consecutive,
    );
    let deadline = match raw.deadline {
        None => Some(defaults.deadline),
        Some(t) => duration_in(
            d,
            &t,
            "load.deadline",
            "load.deadline",
            Duration::from_millis(10),
            10 * MINUTE,
        ),
    };
    let redis_wait = match raw.redis_wait {
        None => Some(None),
        Some(wait) => {
            if let Some(cs) = components.filter(|cs| !cs.contains(&ComponentKind::Redis)) {
                d.at(
                    "load.redis_wait",
                    format!(
                        "load.redis_wait is only allowed when component is redis ({})",
                        components_phrase(cs)
                    ),
                );
            }
            redis_wait(d, wait).map(Some)
        }
    };
    Some(LoadProfile {
        write_rate: write_rate?,
        read_rate: read_rate?,
        search_rate: search_rate?,
        connections: connections?,
        max_in_flight: max_in_flight?,
        deadline: deadline?,
        arrivals: arrivals?,
        redis_wait: redis_wait?,
        rto_consecutive: rto_consecutive?,
    })
}

fn redis_wait(d: &mut Diagnostics<'_>, raw: RawRedisWait) -> Option<RedisWait> {
    let replicas = d
        .require(
            raw.replicas,
            "load.redis_wait.replicas",
            "set how many replicas must acknowledge each write, e.g. `replicas: 1`",
        )
        .and_then(|r| {
            d.int_in_range(
                r,
                "load.redis_wait.replicas",
                "load.redis_wait.replicas",
                1,
                16,
            )
        });
    let timeout = d
        .require(
            raw.timeout,
            "load.redis_wait.timeout",
            "set how long WAIT blocks for those acknowledgements, e.g. `timeout: 100ms`",
        )
        .and_then(|t| {
            duration_in(
                d,
                &t,
                "load.redis_wait.timeout",
                "load.redis_wait.timeout",
                Duration::from_millis(1),
                MINUTE,
            )
        });
    Some(RedisWait {
        replicas: replicas?,
        timeout: timeout?,
    })
}

fn heal_spec(d: &mut Diagnostics<'_>, raw: Option<RawHeal>) -> Option<HealSpec> {
    let defaults = HealSpec::default();
    let Some(raw) = raw else {
        return Some(defaults);
    };
    let timeout = match raw.timeout {
        None => Some(defaults.timeout),
        Some(t) => duration_in(d, &t, "heal.timeout", "heal.timeout", SECOND, HOUR),
    };
    let settle = match raw.settle {
        None => Some(defaults.settle),
        Some(t) => duration_in(
            d,
            &t,
            "heal.settle",
            "heal.settle",
            Duration::ZERO,
            10 * MINUTE,
        ),
    };
    Some(HealSpec {
        timeout: timeout?,
        settle: settle?,
    })
}

fn threshold_list(
    d: &mut Diagnostics<'_>,
    raw: &[String],
    components: Option<&[ComponentKind]>,
    probes: Option<&[HttpProbe]>,
) -> Option<Vec<Threshold>> {
    if raw.is_empty() {
        d.at(
            "thresholds",
            "`thresholds` is empty; add at least one, e.g. `- detection_s <= 10`",
        );
        return None;
    }
    let parsed: Vec<Option<Threshold>> = raw
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let path = format!("thresholds[{i}]");
            let t = parse_threshold(text).map_err(|e| d.at(&path, e)).ok()?;
            match (components, &t.source) {
                (_, Some(Source::Http(name))) => {
                    let known = probes.is_none_or(|ps| ps.iter().any(|p| p.name == **name));
                    if !known {
                        let names: Vec<&str> = probes
                            .unwrap_or_default()
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect();
                        d.at(
                            &path,
                            format!(
                                "threshold `{text}` names HTTP probe `{name}`, which this scenario does not define \
                                 (its probes: {})",
                                if names.is_empty() { "none".to_string() } else { names.join(", ") }
                            ),
                        );
                    }
                    known.then_some(t)
                }
                (_, Some(s))
                    if matches!(t.metric, Metric::LogAgreementMaxS | Metric::Regressions) =>
                {
                    d.at(
                        &path,
                        format!(
                            "threshold `{text}`: {} is the run's own figure, not {}'s; write `{}`",
                            t.metric,
                            s.name(),
                            t.metric
                        ),
                    );
                    None
                }
                (Some(cs), Some(Source::Component(c))) if !cs.contains(c) => {
                    d.at(
                        &path,
                        format!(
                            "threshold `{text}` names component {c}, which this scenario does not measure ({})",
                            components_phrase(cs)
                        ),
                    );
                    None
                }
                (Some(cs), None) if cs.len() > 1 && t.metric.is_per_component() => {
                    let named: Vec<String> = cs.iter().map(|c| format!("`{c}.{}`", t.metric)).collect();
                    d.at(
                        &path,
                        format!(
                            "threshold `{text}`: {} is a figure of each component in a scenario that measures \
                             several; name the component: {}",
                            t.metric,
                            named.join(" or ")
                        ),
                    );
                    None
                }
                _ => Some(t),
            }
        })
        .collect();
    parsed.into_iter().collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::scenario::{
        Action, CorruptionKind, FaultKind, FaultSpec, Metric, NodeLossMethod, NodeSelector, Op,
        PartitionDirection, RecoveryTarget, Statistic, Step,
    };
    use crate::topology::{parse_topology, Topology};

    const VALID: &str = "\
name: pg-kill
component: postgres
baseline: 5s
faults:
  - kind: process-kill
    target: {role: primary}
observe: 30s
thresholds:
  - detection_s <= 10
";

    pub(crate) fn path() -> &'static Path {
        Path::new("s.yaml")
    }

    pub(crate) fn topo() -> Topology {
        let text = "name: three-node\nnodes:\n  - {name: n1, zone: z1, region: r1}\n  - {name: n2, zone: z2, region: r1}\n  - {name: n3, zone: z3, region: r1}\n";
        parse_topology(text, Path::new("t.yaml")).unwrap()
    }

    pub(crate) fn err(text: &str) -> String {
        err_with(text, None)
    }

    pub(crate) fn err_with(text: &str, topology: Option<&Topology>) -> String {
        parse_scenario(text, path(), topology)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn several_components_are_measured_with_their_figures_named() {
        let text = VALID.replace("component: postgres", "components: [postgres, redis]").replace(
            "  - detection_s <= 10\n",
            "  - postgres.detection_s <= 10\n  - p95(redis.promotion_s) <= 10\n  - availability_pct >= 99.9\n",
        );
        let s = parse_scenario(&text, path(), None).unwrap();
        assert_eq!(s.component, ComponentKind::Postgres);
        assert_eq!(
            s.components,
            [ComponentKind::Postgres, ComponentKind::Redis]
        );
        assert_eq!(
            s.thresholds[0].source,
            Some(Source::Component(ComponentKind::Postgres))
        );
        assert_eq!(
            s.thresholds[1].source,
            Some(Source::Component(ComponentKind::Redis))
        );
        assert_eq!(s.thresholds[1].to_string(), "p95(redis.promotion_s) <= 10");
        assert_eq!(s.thresholds[2].source, None, "the system's figure");
        // One component: `component: x`, and its figures may be named or not.
        let one = parse_scenario(
            &VALID.replace("detection_s", "postgres.detection_s"),
            path(),
            None,
        )
        .unwrap();
        assert_eq!(one.components, [ComponentKind::Postgres]);
        assert_eq!(
            one.thresholds[0].source,
            Some(Source::Component(ComponentKind::Postgres))
        );
    }

    #[test]
    fn a_figure_of_each_component_must_name_its_component() {
        let text = VALID.replace("component: postgres", "components: [postgres, redis]");
        let e = err(&text);
        assert!(
            e.contains("s.yaml:9:5: threshold `detection_s <= 10`: detection_s is a figure of each component in a \
                        scenario that measures several; name the component: `postgres.detection_s` or \
                        `redis.detection_s`"),
            "{e}"
        );
        let e = err(&VALID.replace("detection_s", "redis.detection_s"));
        assert!(
            e.contains("s.yaml:9:5: threshold `redis.detection_s <= 10` names component redis, which this \
                        scenario does not measure (this scenario's component is postgres)"),
            "{e}"
        );
        let e = err(&VALID.replace("detection_s <= 10", "redis.log_agreement_max_s <= 0.5"));
        assert!(
            e.contains("log_agreement_max_s is the run's own figure, not redis's"),
            "{e}"
        );
        let e = err(&VALID.replace("detection_s", "mysql.detection_s"));
        assert!(
            e.contains("`mysql` in threshold `mysql.detection_s <= 10` is not a component"),
            "{e}"
        );
        let e = err(&VALID.replace("component: postgres", "components: [postgres, postgres]"));
        assert!(
            e.contains("s.yaml:2:24: component postgres is listed twice"),
            "{e}"
        );
        let e = err(&VALID.replace(
            "component: postgres",
            "component: postgres\ncomponents: [redis]",
        ));
        assert!(
            e.contains("set either `component` (one) or `components` (a list), not both"),
            "{e}"
        );
        let e = err(&VALID.replace("component: postgres", "components: []"));
        assert!(e.contains("s.yaml:2:13: `components` is empty"), "{e}");
    }

    /// VALID with its fault list replaced.
    pub(crate) fn with_faults(faults: &str) -> String {
        VALID.replace(
            "  - kind: process-kill\n    target: {role: primary}\n",
            faults,
        )
    }

    #[test]
    fn parses_a_drill_s_steps_and_faults() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/valid/drill-every-step.yaml");
        let s = super::load_scenario(&path, None).unwrap();
        assert!(s.is_drill());
        use crate::backup::BackupType;
        assert_eq!(
            s.prepare,
            vec![
                Step::Action {
                    action: Action::Backup {
                        kind: BackupType::Full
                    },
                    deadline: Duration::from_secs(600),
                },
                Step::Action {
                    action: Action::Backup {
                        kind: BackupType::Incr
                    },
                    deadline: Duration::from_secs(120),
                },
                Step::Wait(Duration::from_secs(2)),
            ]
        );
        assert_eq!(
            s.recovery,
            vec![
                Step::Action {
                    action: Action::RestorePostgres {
                        target: RecoveryTarget::BeforeFault
                    },
                    deadline: Duration::from_secs(1200),
                },
                Step::Wait(Duration::from_secs(1)),
                Step::Action {
                    action: Action::RestorePostgres {
                        target: RecoveryTarget::Latest
                    },
                    deadline: Duration::from_secs(1800),
                },
                Step::Action {
                    action: Action::RestorePostgres {
                        target: RecoveryTarget::Time {
                            text: "2026-11-30T01:02:03.456+01:00".into(),
                            at: crate::drill::target_time::parse("2026-11-30T00:02:03.456Z")
                                .unwrap(),
                        }
                    },
                    deadline: Duration::from_secs(1800),
                },
            ]
        );
        assert_eq!(s.faults[0].kind, FaultKind::RepositoryOutage);
        assert_eq!(
            s.faults[1].kind,
            FaultKind::Corruption {
                component: ComponentKind::Postgres,
                how: CorruptionKind::DropTable
            }
        );
        // A plain fault scenario is not a drill.
        assert!(!parse_scenario(VALID, Path::new("s.yaml"), None)
            .unwrap()
            .is_drill());
    }

    #[test]
    fn parses_a_minimal_scenario_with_defaults() {
        let s = parse_scenario(VALID, path(), None).unwrap();
        assert_eq!(s.name, "pg-kill");
        assert_eq!(s.description, "");
        assert_eq!(s.component, ComponentKind::Postgres);
        assert_eq!(s.trials, 1);
        assert_eq!(s.load, LoadProfile::default());
        assert_eq!(s.heal, HealSpec::default());
        assert_eq!(s.baseline, Duration::from_secs(5));
        assert_eq!(s.observe, Duration::from_secs(30));
        assert_eq!(s.topology, None);
        assert_eq!(
            s.faults,
            vec![FaultSpec {
                kind: FaultKind::ProcessKill {
                    component: ComponentKind::Postgres,
                    target: NodeSelector::Role {
                        component: ComponentKind::Postgres,
                        role: Role::Primary
                    },
                },
                at: Duration::ZERO,
                duration: None,
            }]
        );
        assert_eq!(
            s.thresholds,
            vec![Threshold {
                source: None,
                metric: Metric::DetectionS,
                op: Op::Le,
                limit: 10.0,
                statistic: Statistic::Every,
            }]
        );
    }

    #[test]
    fn parses_every_optional_section() {
        let text = "\
name: redis-full
description: all of it
component: redis
trials: 3
load: {write_rate: 500, read_rate: 0, connections: 8, deadline: 500ms, rto_consecutive: 5, redis_wait: {replicas: 1, timeout: 100ms}}
baseline: 1.5s
faults:
  - kind: process-pause
    component: postgres
    target: {node: n2}
    at: 2s
    duration: 10s
  - kind: partition
    side_a: [{role: primary}, {zone: z3}]
    side_b: [{zone_of: {role: replica, component: postgres}}]
    direction: a-to-b
  - kind: zone-loss
    target: {zone_of: {role: primary}}
  - kind: node-drain
    target: {role: replica, component: postgres}
  - kind: node-loss
    target: {node: n1}
observe: 1m
heal: {timeout: 2m, settle: 0s}
thresholds: [rto_s < 2.5, error_rate <= 0.01, acked_writes > -1]
";
        let s = parse_scenario(text, path(), Some(&topo())).unwrap();
        assert_eq!(s.trials, 3);
        assert_eq!(
            s.load.redis_wait,
            Some(RedisWait {
                replicas: 1,
                timeout: Duration::from_millis(100)
            })
        );
        assert_eq!(s.load.read_rate, 0);
        assert_eq!(s.baseline, Duration::from_millis(1500));
        assert_eq!(s.heal.settle, Duration::ZERO);
        assert_eq!(s.faults.len(), 5);
        assert_eq!(
            s.faults[0].kind,
            FaultKind::ProcessPause {
                component: ComponentKind::Postgres,
                target: NodeSelector::Node("n2".into())
            }
        );
        assert_eq!(s.faults[0].duration, Some(Duration::from_secs(10)));
        assert_eq!(
            s.faults[1].kind,
            FaultKind::Partition {
                side_a: vec![
                    NodeSelector::Role {
                        component: ComponentKind::Redis,
                        role: Role::Primary
                    },
                    NodeSelector::Zone("z3".into())
                ],
                side_b: vec![NodeSelector::ZoneOf {
                    component: ComponentKind::Postgres,
                    role: Role::Replica
                }],
                direction: PartitionDirection::AToB,
                loss_pct: 100,
            }
        );
        assert_eq!(
            s.faults[2].kind,
            FaultKind::ZoneLoss {
                target: NodeSelector::ZoneOf {
                    component: ComponentKind::Redis,
                    role: Role::Primary
                },
                method: NodeLossMethod::Stop,
            }
        );
        assert_eq!(s.thresholds[2].limit, -1.0);
    }

    #[test]
    fn collects_several_semantic_errors_at_once() {
        let text = "\
name: Bad Name
component: mysql
trials: 0
baseline: 30
faults:
  - kind: process-kill
    target: {role: leader}
observe: 30s
thresholds:
  - detecton_s <= 10
";
        let e = err(text);
        for want in [
            "s.yaml:1:7: scenario name `Bad Name` is not valid",
            "s.yaml:2:12: unknown component `mysql`",
            "s.yaml:3:9: trials 0 is out of range: allowed 1 to 1000",
            "s.yaml:4:11: `30` is not a duration: add a unit (ms, s, m or h), e.g. `30s`",
            "s.yaml:7:20: unknown role `leader`",
            "s.yaml:10:5: unknown metric `detecton_s` (did you mean `detection_s`?)",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }

    #[test]
    fn reports_missing_required_keys_together() {
        let e = err("name: x\ncomponent: postgres\n");
        for key in ["baseline", "observe", "faults", "thresholds"] {
            assert!(
                e.contains(&format!("s.yaml:1:1: missing required key `{key}`")),
                "{e}"
            );
        }
    }

    #[test]
    fn empty_lists_are_errors() {
        let e = err(&VALID.replace("thresholds:\n  - detection_s <= 10\n", "thresholds: []\n"));
        assert!(e.contains("s.yaml:8:13: `thresholds` is empty"), "{e}");
        let e = err(&with_faults("  []\n").replace("faults:\n  []", "faults: []"));
        assert!(e.contains("`faults` is empty"), "{e}");
    }

    #[test]
    fn range_checks_name_field_value_and_range() {
        let e = err(&VALID.replace("baseline: 5s", "baseline: 100h"));
        assert!(
            e.contains("s.yaml:3:11: baseline `100h` is out of range: allowed 1s to 24h"),
            "{e}"
        );
        let e = err(&format!("{VALID}load: {{write_rate: 0, connections: 300, deadline: 5ms}}\nheal: {{timeout: 2h, settle: 11m}}\n"));
        for want in [
            "load.write_rate 0 is out of range: allowed 1 to 100000",
            "load.connections 300 is out of range: allowed 1 to 256",
            "load.deadline `5ms` is out of range: allowed 10ms to 10m",
            "heal.timeout `2h` is out of range: allowed 1s to 1h",
            "heal.settle `11m` is out of range: allowed 0s to 10m",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }

    #[test]
    fn redis_wait_only_for_redis() {
        let text = format!("{VALID}load:\n  redis_wait: {{replicas: 1, timeout: 100ms}}\n");
        let e = err(&text);
        assert!(e.contains("s.yaml:11:15: load.redis_wait is only allowed when component is redis (this scenario's component is postgres)"), "{e}");
        let redis = text.replace("component: postgres", "component: redis");
        assert!(parse_scenario(&redis, path(), None).is_ok());
        let e = err(&redis.replace("replicas: 1", "replicas: 17"));
        assert!(
            e.contains("load.redis_wait.replicas 17 is out of range"),
            "{e}"
        );
    }

    #[test]
    fn search_rate_only_for_qdrant() {
        let text = format!("{VALID}load:\n  search_rate: 50\n");
        let e = err(&text);
        assert!(e.contains("s.yaml:11:16: load.search_rate is only allowed when component is qdrant (this scenario's component is postgres)"), "{e}");
        assert!(parse_scenario(&format!("{VALID}load:\n  search_rate: 0\n"), path(), None).is_ok());
        let qdrant = text
            .replace("component: postgres", "component: qdrant")
            .replace("{role: primary}", "{role: replica, component: qdrant}");
        let s = parse_scenario(&qdrant, path(), Some(&topo())).unwrap();
        assert_eq!(s.component, ComponentKind::Qdrant);
        assert_eq!(s.load.search_rate, 50);
        assert_eq!(
            s.faults[0].kind,
            FaultKind::ProcessKill {
                component: ComponentKind::Qdrant,
                target: NodeSelector::Role {
                    component: ComponentKind::Qdrant,
                    role: Role::Replica
                },
            }
        );
        let e = err(&VALID.replace("component: postgres", "component: mysql"));
        assert!(
            e.contains("known components: postgres, redis, qdrant"),
            "{e}"
        );
    }

    #[test]
    fn serde_errors_keep_their_position() {
        let e = err(&VALID.replace("observe: 30s", "observe: 30s\ntrials: three"));
        assert!(
            e.contains(
                "s.yaml:8:9: trials: invalid type: string \"three\", expected a whole number"
            ),
            "{e}"
        );
        let e = err(&VALID.replace("observe: 30s", "obsrve: 30s"));
        assert!(
            e.contains(
                "s.yaml:7:1: unknown key `obsrve` (did you mean `observe`?); allowed keys: name,"
            ),
            "{e}"
        );
        let e = err(&with_faults(
            "  - kind: process-kill\n    tagret: {role: primary}\n",
        ));
        assert!(
            e.contains("s.yaml:6:5: faults[0]: unknown key `tagret` (did you mean `target`?)"),
            "{e}"
        );
    }

    #[test]
    fn whole_file_problems() {
        let e = err("");
        assert_eq!(
            e,
            "s.yaml: the file is empty; expected a scenario (a mapping with name, component, baseline, faults, observe, thresholds)"
        );
        assert!(err("# nothing\n").contains("the file is empty"));
        assert!(err("- a\n- b\n").contains("s.yaml:1:1: expected a scenario (a mapping with name, component, baseline, faults, observe, thresholds), found a list"));
        let big = format!("{VALID}#{}\n", "x".repeat(1024 * 1024));
        assert!(err(&big).contains("over the limit of 1048576 bytes (1 MiB)"));
    }

    #[test]
    fn topology_reference_that_cannot_be_read_points_at_the_reference() {
        let e = err(&format!("{VALID}topology: does-not-exist.yaml\n"));
        assert!(
            e.contains("s.yaml:10:11: topology file `does-not-exist.yaml` cannot be read"),
            "{e}"
        );
    }

    #[test]
    fn suite_without_scenarios() {
        let e = parse_suite(
            "name: nightly\nscenarios: []\n",
            Path::new("suite.yaml"),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("suite.yaml:2:12: `scenarios` is empty"), "{e}");
        let e = parse_suite(
            "name: nightly\nscenarios:\n  - nope.yaml\n",
            Path::new("suite.yaml"),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("suite.yaml:3:5: scenario file `nope.yaml` cannot be read"),
            "{e}"
        );
        let e = parse_suite("", Path::new("suite.yaml"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expected a suite (a mapping with name and scenarios)"),
            "{e}"
        );
    }
}
