//! Every fixture and shipped scenario against the parsers: valid files load, each invalid file reports the error
//! its `# expect:` line names, and mangled input never panics.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use faultline::input_error::InputErrors;
use faultline::scenario::{
    load_scenario, load_suite, parse_scenario, parse_suite, ComponentKind, FaultKind, NodeSelector,
};
use faultline::topology::{load_topology, parse_topology, Topology};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
}

/// The invalid fixtures whose name starts with `prefix`, each with its expected error text.
fn invalid_fixtures(prefix: &str) -> Vec<(PathBuf, String)> {
    let files: Vec<(PathBuf, String)> = yaml_files(&root().join("fixtures/invalid"))
        .into_iter()
        .filter(|p| file_name(p).starts_with(prefix))
        .map(|p| {
            let text = fs::read_to_string(&p).unwrap();
            let expect = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# expect: "))
                .unwrap_or_else(|| panic!("{} does not start with `# expect: `", p.display()))
                .to_string();
            (p, expect)
        })
        .collect();
    assert!(!files.is_empty(), "no fixtures/invalid/{prefix}*.yaml");
    files
}

fn check_invalid<T: std::fmt::Debug>(prefix: &str, load: impl Fn(&Path) -> Result<T, InputErrors>) {
    let mut failures = Vec::new();
    for (path, expect) in invalid_fixtures(prefix) {
        match load(&path) {
            Ok(v) => failures.push(format!(
                "{} loaded but should not have: {v:?}",
                path.display()
            )),
            Err(e) => {
                let rendered = e.to_string();
                if !rendered.contains(&expect) {
                    failures.push(format!(
                        "{}\n  expected: {expect}\n  got:      {}",
                        path.display(),
                        rendered.replace('\n', "\n            ")
                    ));
                }
                for err in &e.0 {
                    assert!(!err.message.is_empty(), "{}: empty message", path.display());
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn every_invalid_fixture_names_its_kind() {
    for path in yaml_files(&root().join("fixtures/invalid")) {
        let name = file_name(&path);
        assert!(
            ["scenario-", "suite-", "topology-"]
                .iter()
                .any(|p| name.starts_with(p)),
            "{name}: invalid fixtures start with scenario-, suite- or topology-"
        );
    }
    assert!(yaml_files(&root().join("fixtures/invalid")).len() >= 15);
}

#[test]
fn invalid_scenarios_report_the_expected_error() {
    check_invalid("scenario-", |p| load_scenario(p, None));
}

#[test]
fn invalid_suites_report_the_expected_error() {
    check_invalid("suite-", |p| load_suite(p, None));
}

#[test]
fn invalid_topologies_report_the_expected_error() {
    check_invalid("topology-", load_topology);
}

#[test]
fn several_problems_are_reported_together() {
    let path = root().join("fixtures/invalid/scenario-several-problems.yaml");
    let errors = load_scenario(&path, None).unwrap_err();
    let rendered = errors.to_string();
    assert_eq!(errors.0.len(), 3, "{rendered}");
    assert!(
        rendered.contains(":10:20: unknown role `leader`"),
        "{rendered}"
    );
    assert!(
        rendered.contains(":12:5: unknown metric `detecton_s`"),
        "{rendered}"
    );
}

#[test]
fn fixture_topologies_load() {
    let three = load_topology(&root().join("fixtures/topologies/three-node.yaml")).unwrap();
    assert_eq!(three.name, "three-node");
    assert_eq!(three.zones(), ["z1", "z2", "z3"]);
    assert!(three.nodes.iter().all(|n| n.region == "r1"));
    assert_eq!(three.network.bridge, "flbr0");

    let two = load_topology(&root().join("fixtures/topologies/two-region.yaml")).unwrap();
    assert_eq!(two.name, "two-region");
    assert_eq!(two.nodes.len(), 6);
    assert_eq!(two.zones(), ["ra-1", "ra-2", "rb-1"]);
    let in_zone = |z: &str| -> Vec<&str> {
        two.nodes_in_zone(z)
            .iter()
            .map(|n| n.name.as_str())
            .collect()
    };
    assert_eq!(in_zone("ra-1"), ["n1", "n2"]);
    assert_eq!(in_zone("ra-2"), ["n3", "n4"]);
    assert_eq!(in_zone("rb-1"), ["n5", "n6"]);
    assert_eq!(two.placement.redis, ["n2", "n4", "n6"]);
    assert_eq!(two.network.bridge, "flbr1");
    assert_eq!(two.network.namespace_prefix, "fl2-");
    assert_eq!(two.network.host_addr.to_string(), "10.202.0.1");
    assert_ne!(three.network.host_addr, two.network.host_addr);
}

#[test]
fn valid_fixtures_load() {
    let dir = root().join("fixtures/valid");
    let files = yaml_files(&dir);
    assert!(!files.is_empty());
    for path in files {
        let result = if file_name(&path).starts_with("suite-") {
            load_suite(&path, None).map(|_| ())
        } else {
            load_scenario(&path, None).map(|_| ())
        };
        if let Err(e) = result {
            panic!("{} should load:\n{e}", path.display());
        }
    }
}

#[test]
fn a_default_topology_is_used_when_the_scenario_names_none() {
    let two = load_topology(&root().join("fixtures/topologies/two-region.yaml")).unwrap();
    let text = "name: t\ncomponent: postgres\nbaseline: 1s\nfaults:\n  - {kind: node-loss, target: {node: n6}}\nobserve: 5s\nthresholds: [rto_s <= 1]\n";
    let path = root().join("fixtures/valid/inline.yaml");
    assert!(parse_scenario(text, &path, Some(&two)).is_ok());
    let three = load_topology(&root().join("fixtures/topologies/three-node.yaml")).unwrap();
    let e = parse_scenario(text, &path, Some(&three))
        .unwrap_err()
        .to_string();
    assert!(e.contains("inline.yaml:5:38: fault 1 (node-loss) targets node `n6`, which is not in topology `three-node`"), "{e}");
}

#[test]
fn shipped_scenarios_load() {
    let dir = root().join("scenarios");
    let files = yaml_files(&dir);
    assert!(files.len() >= 8, "{files:?}");
    let qdrant: Vec<&PathBuf> = files
        .iter()
        .filter(|p| file_name(p).starts_with("qdrant-"))
        .collect();
    assert_eq!(
        qdrant.len(),
        3,
        "qdrant-node-kill, qdrant-node-partition and qdrant-snapshot-restore"
    );
    for path in qdrant {
        let s = load_scenario(path, None).unwrap();
        assert_eq!(s.component, ComponentKind::Qdrant);
        assert!(
            s.load.search_rate > 0,
            "{}: searches are measured",
            path.display()
        );
    }
    for path in files {
        let scenario = load_scenario(&path, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            Some(scenario.name.as_str()),
            path.file_stem().and_then(|s| s.to_str())
        );
        let topology: &Path = scenario
            .topology
            .as_deref()
            .expect("shipped scenarios name their topology");
        assert!(
            topology.ends_with("fixtures/topologies/three-node.yaml")
                || topology.ends_with("fixtures/topologies/two-region.yaml"),
            "{}: {}",
            path.display(),
            topology.display()
        );
    }
}

#[test]
fn shipped_suites_load() {
    for path in yaml_files(&root().join("scenarios/suites")) {
        load_suite(&path, None).unwrap_or_else(|e| panic!("{e}"));
    }
    let nightly = load_suite(&root().join("scenarios/suites/nightly.yaml"), None).unwrap();
    let names: Vec<&str> = nightly.scenarios.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "postgres-primary-kill",
            "postgres-primary-partition",
            "postgres-replica-restart",
            "redis-master-kill",
            "redis-master-partition",
            "redis-master-partition-wait",
            "zone-loss"
        ]
    );
    let redis_partition = &nightly.scenarios[4];
    assert_eq!(redis_partition.component, ComponentKind::Redis);
    assert_eq!(redis_partition.load.redis_wait, None);
    let FaultKind::Partition { side_a, side_b, .. } = &redis_partition.faults[0].kind else {
        panic!("redis-master-partition should partition");
    };
    assert!(matches!(
        side_a[0],
        NodeSelector::Role {
            component: ComponentKind::Redis,
            ..
        }
    ));
    assert!(side_b.is_empty());
}

#[test]
fn a_default_topology_also_checks_suite_scenarios() {
    let topology: Topology =
        load_topology(&root().join("fixtures/topologies/two-region.yaml")).unwrap();
    let suite = load_suite(
        &root().join("fixtures/valid/suite-small.yaml"),
        Some(&topology),
    )
    .unwrap();
    assert_eq!(suite.scenarios.len(), 2);
}

#[test]
fn unreadable_and_oversized_files_are_whole_file_errors() {
    let missing = root().join("fixtures/invalid/no-such-file.yaml");
    let e = load_scenario(&missing, None).unwrap_err();
    assert_eq!((e.0[0].line, e.0[0].column), (0, 0));
    assert!(e.to_string().contains("cannot read the file"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    let mut f = fs::File::create(&big).unwrap();
    f.write_all(b"name: big\n").unwrap();
    f.write_all(&vec![b'#'; 1024 * 1024 + 1]).unwrap();
    drop(f);
    let e = load_topology(&big).unwrap_err().to_string();
    assert!(
        e.contains("bytes, over the limit of 1048576 bytes (1 MiB)"),
        "{e}"
    );

    let suite = dir.path().join("suite.yaml");
    fs::write(&suite, "name: s\nscenarios: [big.yaml]\n").unwrap();
    let e = load_suite(&suite, None).unwrap_err().to_string();
    assert!(e.contains("big.yaml: the file is"), "{e}");
}

/// The defect this guards against: /dev/zero passed the size check (a device reports size 0) and was read until
/// memory ran out. Devices, FIFOs and directories are refused by their type, before anything is read.
#[test]
fn paths_that_are_not_regular_files_are_refused_without_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.yaml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for (path, kind) in [
        (Path::new("/dev/zero").to_path_buf(), "a character device"),
        (fifo, "a FIFO"),
        (dir.path().to_path_buf(), "a directory"),
    ] {
        let e = load_scenario(&path, None).unwrap_err().to_string();
        assert!(e.contains(&format!("not a regular file ({kind})")), "{e}");
        let e = load_topology(&path).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = load_suite(&path, None).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}

/// Deterministic pseudo-random numbers for the mutation test (xorshift64).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Characters that matter to YAML, durations, thresholds and selectors, plus a few awkward ones.
const ALPHABET: &[char] = &[
    ':', '-', ' ', '\n', '\t', '[', ']', '{', '}', ',', '#', '&', '*', '!', '|', '>', '<', '=',
    '\'', '"', '?', '%', '@', '`', '~', '.', '0', '1', '9', 's', 'm', 'h', 'n', 'z', 'é', '\u{0}',
    '\u{feff}',
];

fn mutate(rng: &mut XorShift, base: &[char]) -> String {
    let mut text = base.to_vec();
    for _ in 0..=rng.below(4) {
        let len = text.len();
        match rng.below(7) {
            0 => {
                let at = rng.below(len + 1);
                text.insert(at, ALPHABET[rng.below(ALPHABET.len())]);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(12)).min(len);
                text.drain(at..end);
            }
            2 if len > 0 => {
                let at = rng.below(len);
                text[at] = ALPHABET[rng.below(ALPHABET.len())];
            }
            3 => text.truncate(rng.below(len + 1)),
            4 if len > 0 => {
                // Copy a chunk elsewhere: duplicated keys, lines and nesting.
                let from = rng.below(len);
                let end = (from + 1 + rng.below(40)).min(len);
                let chunk: Vec<char> = text[from..end].to_vec();
                let at = rng.below(len + 1);
                text.splice(at..at, chunk);
            }
            5 => {
                // Swap two digits for extreme numbers.
                let big = ["0", "-1", "99999999999999999999", "1e309", "1.5", "-0"][rng.below(6)];
                let at = rng.below(len + 1);
                text.splice(at..at, big.chars());
            }
            _ => {
                let at = rng.below(len + 1);
                text.splice(at..at, "  ".chars());
            }
        }
    }
    text.into_iter().collect()
}

#[test]
fn mutated_scenarios_never_panic() {
    let path = root().join("fixtures/valid/scenario-every-field.yaml");
    let base: Vec<char> = fs::read_to_string(&path).unwrap().chars().collect();
    let topology = load_topology(&root().join("fixtures/topologies/three-node.yaml")).unwrap();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut rejected = 0;
    for i in 0..3000 {
        let text = mutate(&mut rng, &base);
        let default = (i % 2 == 0).then_some(&topology);
        let outcome = std::panic::catch_unwind(|| parse_scenario(&text, &path, default));
        match outcome {
            Err(_) => panic!("parse_scenario panicked on mutation {i}:\n{text}"),
            Ok(Err(errors)) => {
                rejected += 1;
                for e in &errors.0 {
                    assert!(
                        !e.message.is_empty(),
                        "mutation {i} gave an empty message:\n{text}"
                    );
                }
            }
            Ok(Ok(_)) => {}
        }
    }
    // Sanity check that the mutations actually reach the error paths.
    assert!(
        rejected > 1000,
        "only {rejected} of 3000 mutations were rejected"
    );
}

#[test]
fn mutated_topologies_and_suites_never_panic() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let topology_path = root().join("fixtures/topologies/two-region.yaml");
    let suite_path = root().join("fixtures/valid/suite-small.yaml");
    for (path, rounds) in [(topology_path, 1500), (suite_path, 500)] {
        let base: Vec<char> = fs::read_to_string(&path).unwrap().chars().collect();
        for i in 0..rounds {
            let text = mutate(&mut rng, &base);
            let outcome = std::panic::catch_unwind(|| {
                if file_name(&path).starts_with("suite-") {
                    parse_suite(&text, &path, None).map(|_| ())
                } else {
                    parse_topology(&text, &path).map(|_| ())
                }
            });
            assert!(
                outcome.is_ok(),
                "{} mutation {i} panicked:\n{text}",
                path.display()
            );
        }
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let path = root().join("fixtures/invalid/deep.yaml");
    for text in [
        "[".repeat(100_000),
        "{a: ".repeat(50_000),
        format!("faults:\n{}", "- ".repeat(50_000)),
    ] {
        assert!(parse_scenario(&text, &path, None).is_err());
    }
}
