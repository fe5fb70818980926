//! `up --target kind` / `down --target kind` drive the `kind` and `docker` executables. Here both are fakes: shell
//! scripts on PATH that record their arguments and answer as kind v0.33.0 and the docker CLI do (`kind get
//! clusters` prints one name per line, `docker image inspect` fails with "No such image" for an absent image).
//! One test function: PATH is process-wide, so the cases run in sequence.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use faultline::targets::kube::kind_cluster;

const FAKE_KIND: &str = r#"#!/bin/sh
dir=$(dirname "$0")
echo "kind $*" >> "$dir/calls"
if [ -f "$dir/kind-fails" ]; then echo "ERROR: failed to create cluster: node(s) already exist" >&2; exit 1; fi
case "$1 $2" in
  "get clusters")
    if [ -f "$dir/clusters" ]; then cat "$dir/clusters"; else echo "No kind clusters found." >&2; fi ;;
  "create cluster") echo faultline > "$dir/clusters" ;;
  "delete cluster") rm -f "$dir/clusters" ;;
  "load docker-image") ;;
  *) echo "unknown command $*" >&2; exit 1 ;;
esac
"#;

const FAKE_DOCKER: &str = r#"#!/bin/sh
dir=$(dirname "$0")
echo "docker $*" >> "$dir/calls"
if [ "$1 $2" = "image inspect" ]; then
  if grep -qx "$3" "$dir/images"; then echo '[{}]'; exit 0; fi
  echo "Error response from daemon: No such image: $3" >&2; exit 1
fi
if [ "$1 $2" = "network inspect" ]; then
  if [ -f "$dir/network" ]; then echo '[{"Name": "kind"}]'; exit 0; fi
  echo "Error response from daemon: network $3 not found" >&2; exit 1
fi
if [ "$1 $2" = "network rm" ]; then
  if [ -f "$dir/network" ]; then rm "$dir/network"; echo kind; exit 0; fi
  echo "Error: No such network: $3" >&2; exit 1
fi
if [ "$1 $2" = "network create" ]; then
  # The engine refuses a subnet that overlaps one of its networks (listed in used-subnets).
  for a in "$@"; do
    if grep -qx -- "$a" "$dir/used-subnets" 2>/dev/null; then
      echo "Error response from daemon: invalid pool request: Pool overlaps with other one on this address space" >&2
      exit 1
    fi
  done
  touch "$dir/network"; echo 0123abcd; exit 0
fi
exit 1
"#;

fn script(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn calls(dir: &Path) -> Vec<String> {
    let text = fs::read_to_string(dir.join("calls")).unwrap_or_default();
    fs::remove_file(dir.join("calls")).ok();
    text.lines().map(str::to_string).collect()
}

#[tokio::test]
async fn kind_cluster_lifecycle_through_the_kind_and_docker_executables() {
    let bin = tempfile::tempdir().unwrap();
    let dir = bin.path();
    let old_path = std::env::var_os("PATH").unwrap_or_default();

    // No kind on PATH: an environment error that says so.
    std::env::set_var("PATH", dir);
    let err = kind_cluster::create_unless_exists()
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(err, "no kind executable on PATH");

    script(dir, "kind", FAKE_KIND);
    script(dir, "docker", FAKE_DOCKER);
    // The fakes need sh, grep, cat and rm from the system.
    let mut path = std::ffi::OsString::from(dir);
    path.push(":");
    path.push(&old_path);
    std::env::set_var("PATH", &path);

    // Created from the checkout's kind/cluster.yaml when none exists, on a `kind` network faultline creates first
    // with an IPv4 subnet of its own (the first one that overlaps nothing the engine has) ...
    fs::write(dir.join("used-subnets"), "172.18.0.0/16\n").unwrap();
    assert!(!kind_cluster::exists().await.unwrap());
    assert_eq!(
        kind_cluster::create_unless_exists().await.unwrap(),
        Some(Some("172.19.0.0/16".to_string()))
    );
    let create = |subnet: &str, ipv6: bool| {
        format!(
            "docker network create --driver=bridge --opt=com.docker.network.bridge.enable_ip_masquerade=true \
             --label dev.faultline.ipv4-subnet=user-configured --subnet {subnet}{} kind",
            if ipv6 { " --ipv6 --subnet fc00:f853:ccd:e793::/64" } else { "" }
        )
    };
    assert_eq!(
        calls(dir),
        [
            "kind get clusters".to_string(),
            "kind get clusters".into(),
            "docker network inspect kind".into(),
            create("172.18.0.0/16", true),
            create("172.18.0.0/16", false),
            create("172.19.0.0/16", true),
            "kind create cluster --name faultline --config kind/cluster.yaml".into(),
        ]
    );
    // ... and reused when it does.
    assert_eq!(kind_cluster::create_unless_exists().await.unwrap(), None);
    assert_eq!(calls(dir), ["kind get clusters"]);
    // A network that exists (kind's own, or one made before) is left as it is; kind reuses it.
    fs::remove_file(dir.join("clusters")).unwrap();
    assert_eq!(
        kind_cluster::create_unless_exists().await.unwrap(),
        Some(None)
    );
    assert_eq!(
        calls(dir),
        [
            "kind get clusters",
            "docker network inspect kind",
            "kind create cluster --name faultline --config kind/cluster.yaml",
        ]
    );

    // Only the images the local engine has are loaded; the nodes pull the others.
    let images = kind_cluster::manifest_images();
    fs::write(dir.join("images"), "redis:7.4.2\n").unwrap();
    let notes = kind_cluster::preload_images().await;
    assert_eq!(notes.len(), images.len(), "{notes:?}");
    assert!(
        notes.contains(&"preloaded redis:7.4.2".to_string()),
        "{notes:?}"
    );
    let pulled: Vec<&String> = notes
        .iter()
        .filter(|n| n.ends_with("is not in the local Docker engine; the nodes pull it"))
        .collect();
    assert_eq!(pulled.len(), images.len() - 1, "{notes:?}");
    let seen = calls(dir);
    assert!(
        seen.contains(&"kind load docker-image redis:7.4.2 --name faultline".to_string()),
        "{seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|c| c.starts_with("kind load")).count(),
        1,
        "{seen:?}"
    );

    // A failing kind names the command and passes its message on.
    // Deleting removes the kind network too (kind leaves it behind), so the next `up` creates it afresh; an
    // absent network (older CLIs say "No such network") is not an error.
    assert_eq!(
        kind_cluster::delete().await.unwrap(),
        "Docker network kind removed"
    );
    assert_eq!(
        calls(dir),
        [
            "kind delete cluster --name faultline",
            "docker network rm kind"
        ]
    );
    assert_eq!(
        kind_cluster::delete().await.unwrap(),
        "no Docker network kind to remove"
    );
    calls(dir);
    fs::write(dir.join("kind-fails"), "").unwrap();
    let err = kind_cluster::delete().await.unwrap_err().to_string();
    assert!(
        err.starts_with("`kind delete cluster --name faultline` failed (exit status: 1)")
            && err.contains("node(s) already exist"),
        "{err}"
    );
    let err = kind_cluster::exists().await.unwrap_err().to_string();
    assert!(err.contains("`kind get clusters` failed"), "{err}");

    std::env::set_var("PATH", old_path);
}

/// A drill on Kubernetes is refused before any cluster is contacted, naming what is missing there.
#[test]
fn drills_are_refused_on_kubernetes_before_anything_happens() {
    let state = tempfile::tempdir().unwrap();
    for target in ["kind", "kube"] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_faultline"))
            .args(["--state-dir", state.path().to_str().unwrap()])
            .args(["run", "--target", target, "scenarios/pitr.yaml"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{err}");
        assert!(
            err.contains("scenario `pitr` is a disaster-recovery drill"),
            "{err}"
        );
        assert!(err.contains("backup repository"), "{err}");
        assert!(
            !state.path().join("lock").exists(),
            "refused before taking the run lock"
        );
    }
}
