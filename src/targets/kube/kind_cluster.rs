//! faultline's kind cluster through the `kind` and `docker` executables: create it from kind/cluster.yaml unless it
//! exists, preload the manifests' images that exist locally, delete it.

use std::path::{Path, PathBuf};
use std::process::Output;

use tokio::process::Command;

use super::deploy::MANIFESTS;
use super::docker::KIND_NETWORK;
use crate::targets::TargetError;

/// The cluster's name in kind/cluster.yaml; its kubeconfig context is `kind-faultline`.
pub const CLUSTER_NAME: &str = "faultline";
pub const CONTEXT: &str = "kind-faultline";
const CLUSTER_CONFIG: &str = include_str!("../../../kind/cluster.yaml");

async fn run(program: &str, args: &[&str]) -> Result<Output, TargetError> {
    Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                TargetError::Environment(format!("no {program} executable on PATH"))
            }
            _ => TargetError::Environment(format!("cannot run {program}: {e}")),
        })
}

fn failed(program: &str, args: &[&str], out: &Output) -> TargetError {
    TargetError::Environment(format!(
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// Whether kind knows a cluster named `faultline`.
pub async fn exists() -> Result<bool, TargetError> {
    let args = ["get", "clusters"];
    let out = run("kind", &args).await?;
    if !out.status.success() {
        return Err(failed("kind", &args, &out));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == CLUSTER_NAME))
}

/// kind/cluster.yaml: the repository's copy when run from a checkout, else the copy built into faultline.
fn cluster_config() -> Result<PathBuf, TargetError> {
    let in_checkout = Path::new("kind/cluster.yaml");
    if in_checkout.is_file() {
        return Ok(in_checkout.to_path_buf());
    }
    let path = std::env::temp_dir().join(format!(
        "faultline-kind-cluster-{}.yaml",
        std::process::id()
    ));
    std::fs::write(&path, CLUSTER_CONFIG)
        .map_err(|e| TargetError::Environment(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

/// The label on a `kind` network faultline created: its IPv4 subnet is user-configured (see `ensure_network`).
pub const NETWORK_LABEL: &str = "dev.faultline.ipv4-subnet=user-configured";

/// The IPv6 subnet kind gives its network `kind` (a ULA derived from the name).
const KIND_IPV6_SUBNET: &str = "fc00:f853:ccd:e793::/64";

/// IPv4 subnets tried in turn for the `kind` network; the engine refuses one that overlaps a network it has.
fn ipv4_candidates() -> impl Iterator<Item = String> {
    (18..=31).map(|b| format!("172.{b}.0.0/16"))
}

/// Creates kind's Docker network `kind` unless it exists, as kind would (bridge, IP masquerade, kind's IPv6 ULA
/// subnet) but with an IPv4 subnet of its own. kind reuses a network of that name. Why: kind leaves the IPv4 subnet
/// to the engine, and Docker Engine 29.0.0-29.0.3 refuses to connect a container with a fixed IPv4 address to such a
/// network ("user specified IP address is supported only when connecting to networks with user configured
/// subnets"), so a disconnected node could not get its address back. Returns the subnet when it created the network.
pub async fn ensure_network() -> Result<Option<String>, TargetError> {
    let inspect = ["network", "inspect", KIND_NETWORK];
    let out = run("docker", &inspect).await?;
    if out.status.success() {
        return Ok(None);
    }
    if !is_absent_network(&String::from_utf8_lossy(&out.stderr)) {
        return Err(failed("docker", &inspect, &out));
    }
    let mut overlapping = Vec::new();
    for subnet in ipv4_candidates() {
        let mut last = None;
        // With kind's IPv6 subnet first; without IPv6 when the engine cannot do it (as kind falls back).
        for ipv6 in [true, false] {
            let mut args = vec![
                "network",
                "create",
                "--driver=bridge",
                "--opt=com.docker.network.bridge.enable_ip_masquerade=true",
                "--label",
                NETWORK_LABEL,
                "--subnet",
                &subnet,
            ];
            if ipv6 {
                args.extend(["--ipv6", "--subnet", KIND_IPV6_SUBNET]);
            }
            args.push(KIND_NETWORK);
            let out = run("docker", &args).await?;
            if out.status.success() {
                return Ok(Some(subnet));
            }
            // The engine's overlap error does not say which subnet overlapped: the IPv4-only attempt tells.
            let overlap = String::from_utf8_lossy(&out.stderr).contains("overlaps");
            last = Some((failed("docker", &args, &out), overlap));
        }
        match last {
            Some((_, true)) => overlapping.push(subnet),
            Some((e, false)) => return Err(e),
            None => {}
        }
    }
    Err(TargetError::Environment(format!(
        "cannot create the Docker network {KIND_NETWORK}: every IPv4 subnet tried overlaps a network the engine has \
         ({}); create it yourself with an IPv4 --subnet and the label {NETWORK_LABEL}",
        overlapping.join(", ")
    )))
}

/// Creates the cluster unless it exists, on a `kind` network with an IPv4 subnet of its own (`ensure_network`).
/// Returns whether it was created, and the network's subnet when it was created too.
pub async fn create_unless_exists() -> Result<Option<Option<String>>, TargetError> {
    if exists().await? {
        return Ok(None);
    }
    let subnet = ensure_network().await?;
    let config = cluster_config()?;
    let config = config.to_string_lossy();
    let args = [
        "create",
        "cluster",
        "--name",
        CLUSTER_NAME,
        "--config",
        &config,
    ];
    let out = run("kind", &args).await?;
    if !out.status.success() {
        return Err(failed("kind", &args, &out));
    }
    Ok(Some(subnet))
}

/// Deletes the cluster, then the `kind` Docker network unless another cluster still uses it (kind leaves the
/// network behind; removed, the next `up` creates it with an IPv4 subnet of its own). Returns what became of the
/// network.
pub async fn delete() -> Result<String, TargetError> {
    let args = ["delete", "cluster", "--name", CLUSTER_NAME];
    let out = run("kind", &args).await?;
    if !out.status.success() {
        return Err(failed("kind", &args, &out));
    }
    let rm = ["network", "rm", KIND_NETWORK];
    Ok(match run("docker", &rm).await {
        Ok(o) if o.status.success() => format!("Docker network {KIND_NETWORK} removed"),
        Ok(o) if is_absent_network(&String::from_utf8_lossy(&o.stderr)) => {
            format!("no Docker network {KIND_NETWORK} to remove")
        }
        Ok(o) => format!(
            "Docker network {KIND_NETWORK} kept: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("Docker network {KIND_NETWORK} kept: {e}"),
    })
}

/// Whether the docker CLI's error says the network does not exist (wording differs between versions).
fn is_absent_network(stderr: &str) -> bool {
    stderr.contains("not found") || stderr.contains("No such network")
}

/// Every image the manifests name (`image:` fields), in order, once.
pub fn manifest_images() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, text) in MANIFESTS {
        for line in text.lines() {
            let l = line.trim_start().trim_start_matches("- ");
            if let Some(img) = l.strip_prefix("image:") {
                let img = img.split('#').next().unwrap_or("").trim().trim_matches('"');
                if !img.is_empty() && !out.iter().any(|i| i == img) {
                    out.push(img.to_string());
                }
            }
        }
    }
    out
}

/// Loads into the cluster's nodes every manifest image the local Docker engine already has (`docker image
/// inspect`, then `kind load docker-image`); the others the nodes pull themselves. Returns one note per image.
pub async fn preload_images() -> Vec<String> {
    let mut notes = Vec::new();
    for img in manifest_images() {
        match run("docker", &["image", "inspect", &img]).await {
            Ok(o) if o.status.success() => {
                let args = ["load", "docker-image", img.as_str(), "--name", CLUSTER_NAME];
                match run("kind", &args).await {
                    Ok(o) if o.status.success() => notes.push(format!("preloaded {img}")),
                    Ok(o) => notes.push(failed("kind", &args, &o).to_string()),
                    Err(e) => notes.push(e.to_string()),
                }
            }
            Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No such image") => notes.push(
                format!("{img} is not in the local Docker engine; the nodes pull it"),
            ),
            Ok(o) => notes.push(format!(
                "not preloading {img}: `docker image inspect` failed: {}; the nodes pull it",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => notes.push(format!("{e}; the nodes pull {img}")),
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_manifest_images() {
        let images = manifest_images();
        assert!(images.contains(&"redis:7.4.2".to_string()), "{images:?}");
        assert!(images
            .iter()
            .any(|i| i.starts_with("ghcr.io/zalando/spilo")));
        assert!(images.iter().any(|i| i.starts_with("qdrant/qdrant:")));
        assert!(images.iter().all(|i| !i.contains(' ')), "{images:?}");
    }
}
