//! faultline's kind cluster through the `kind` and `docker` executables: create it from kind/cluster.yaml unless it
//! exists, preload the manifests' images that exist locally, delete it.

use std::path::{Path, PathBuf};
use std::process::Output;

use tokio::process::Command;

use super::deploy::MANIFESTS;
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

/// Creates the cluster unless it exists. Returns whether it was created.
pub async fn create_unless_exists() -> Result<bool, TargetError> {
    if exists().await? {
        return Ok(false);
    }
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
    Ok(true)
}

pub async fn delete() -> Result<(), TargetError> {
    let args = ["delete", "cluster", "--name", CLUSTER_NAME];
    let out = run("kind", &args).await?;
    if !out.status.success() {
        return Err(failed("kind", &args, &out));
    }
    Ok(())
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
