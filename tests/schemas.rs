//! The shipped JSON Schemas (schemas/*.schema.json) are what `faultline schema` generates from the types the files
//! are read into, and every shipped scenario, suite, topology and settings file (and every valid fixture) passes
//! them; a file with an unknown key or an unknown fault kind does not.

use std::path::{Path, PathBuf};

use faultline::cli::{schema_text, SchemaKind};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped(kind: &str) -> Value {
    let path = root().join(format!("schemas/{kind}.schema.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn yaml(path: &Path) -> Value {
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

fn check(kind: &str, paths: &[PathBuf]) {
    let validator = jsonschema::validator_for(&shipped(kind)).unwrap();
    assert!(!paths.is_empty(), "no {kind} files");
    for p in paths {
        let doc = yaml(p);
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", p.display());
    }
}

#[test]
fn the_shipped_schemas_are_the_generated_ones() {
    for (kind, name) in [
        (SchemaKind::Scenario, "scenario"),
        (SchemaKind::Suite, "suite"),
        (SchemaKind::Topology, "topology"),
        (SchemaKind::Settings, "settings"),
    ] {
        let text =
            std::fs::read_to_string(root().join(format!("schemas/{name}.schema.json"))).unwrap();
        assert_eq!(
            text.trim_end(),
            schema_text(kind),
            "schemas/{name}.schema.json is stale: regenerate it with `faultline schema {name} > schemas/{name}.schema.json`"
        );
    }
}

#[test]
fn every_shipped_and_fixture_file_passes_its_schema() {
    let mut scenarios = files("scenarios");
    let mut suites = files("scenarios/suites");
    for p in files("fixtures/valid") {
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("suite-")
        {
            suites.push(p);
        } else {
            scenarios.push(p);
        }
    }
    check("scenario", &scenarios);
    check("suite", &suites);
    check("topology", &files("fixtures/topologies"));
    check("settings", &files("fixtures/settings"));
}

#[test]
fn a_wrong_key_or_fault_kind_fails_the_schema() {
    let validator = jsonschema::validator_for(&shipped("scenario")).unwrap();
    let ok = yaml(&root().join("scenarios/postgres-primary-kill.yaml"));
    assert!(validator.is_valid(&ok));
    let mut unknown_key = ok.clone();
    unknown_key["faultz"] = Value::Array(vec![]);
    assert!(!validator.is_valid(&unknown_key));
    let mut unknown_kind = ok.clone();
    unknown_kind["faults"][0]["kind"] = "process-explode".into();
    assert!(!validator.is_valid(&unknown_kind));
    let mut wrong_type = ok;
    wrong_type["trials"] = "three".into();
    assert!(!validator.is_valid(&wrong_type));
}
