//! Finding a Qdrant executable for the local stack: the `qdrant_bin` setting (or QDRANT_BIN), else `qdrant` on
//! PATH, else the official release for x86_64-unknown-linux-gnu (the version pinned in the settings), downloaded
//! once into the state directory. Where none can be had, Qdrant is absent and the reason says exactly why.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::process;
use super::state::{QdrantPresence, StateDir};
use crate::settings::StackSettings;
use crate::targets::TargetError;

const NOT_FOUND: &str =
    "no qdrant executable found (setting qdrant_bin, env QDRANT_BIN, `qdrant` on PATH)";

/// The official release tarball of a version.
pub fn release_url(version: &str) -> String {
    format!(
        "https://github.com/qdrant/qdrant/releases/download/v{version}/qdrant-x86_64-unknown-linux-gnu.tar.gz"
    )
}

/// Where a downloaded release's executable lives.
pub fn downloaded_bin(dir: &StateDir, version: &str) -> PathBuf {
    dir.downloads_dir()
        .join(format!("qdrant-{version}"))
        .join("qdrant")
}

/// "qdrant 1.18.3" -> "1.18.3"; "unknown" when the executable does not say.
pub fn version_of(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into())
}

fn on_path() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("qdrant"))
            .find(|p| p.is_file())
    })
}

/// Decides whether the stack gets Qdrant. An executable named explicitly (setting or QDRANT_BIN) that does not
/// exist is an error, not an absence: the user asked for it.
pub async fn locate(
    settings: &StackSettings,
    dir: &StateDir,
) -> Result<QdrantPresence, TargetError> {
    let present = |bin: PathBuf| QdrantPresence::Present {
        version: version_of(&bin),
        bin,
    };
    if let Some(bin) = &settings.qdrant_bin {
        if !bin.is_file() {
            return Err(TargetError::Environment(format!(
                "qdrant_bin (setting or QDRANT_BIN) names {}, which does not exist",
                bin.display()
            )));
        }
        return Ok(present(bin.clone()));
    }
    if let Some(bin) = on_path() {
        return Ok(present(bin));
    }
    let cached = downloaded_bin(dir, &settings.qdrant_version);
    if cached.is_file() {
        return Ok(present(cached));
    }
    if !settings.qdrant_download {
        return Ok(QdrantPresence::Absent {
            reason: format!(
                "{NOT_FOUND}, and the official release download is off (opt in with `qdrant_download: true` or \
                 FAULTLINE_QDRANT_DOWNLOAD=1); Qdrant members are skipped"
            ),
        });
    }
    let url = release_url(&settings.qdrant_version);
    match download(&url, &cached).await {
        Ok(()) => Ok(present(cached)),
        Err(e) => Ok(QdrantPresence::Absent {
            reason: format!(
                "{NOT_FOUND} and the download of {url} failed: {e}; Qdrant members are skipped (provide the \
                 executable through QDRANT_BIN or the qdrant_bin setting to test Qdrant)"
            ),
        }),
    }
}

/// The error and its causes on one line (reqwest's own message alone hides "dns error", "connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// Downloads and unpacks the release into a temporary directory next to `bin`'s, then moves it in place: an
/// interrupted download never leaves a half executable behind.
async fn download(url: &str, bin: &Path) -> Result<(), String> {
    let final_dir = bin.parent().expect("a file under the downloads directory");
    let parent = final_dir.parent().expect("the downloads directory");
    fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let tmp = parent.join(format!(".partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let result = async {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| chain(&e))?;
        // The URL is already in the message faultline prints.
        let resp = http
            .get(url)
            .send()
            .await
            .map_err(|e| chain(&e.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let bytes = resp.bytes().await.map_err(|e| chain(&e.without_url()))?;
        let tarball = tmp.join("qdrant.tar.gz");
        fs::write(&tarball, &bytes)
            .map_err(|e| format!("cannot write {}: {e}", tarball.display()))?;
        let tmp_s = tmp.display().to_string();
        process::run(
            "tar",
            &["-xzf", &tarball.display().to_string(), "-C", &tmp_s],
        )
        .map_err(|e| e.to_string())?;
        let exe = tmp.join("qdrant");
        if !exe.is_file() {
            return Err("the release archive holds no `qdrant` executable".into());
        }
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        let _ = fs::remove_file(&tarball);
        let _ = fs::remove_dir_all(final_dir);
        fs::rename(&tmp, final_dir).map_err(|e| format!("cannot move the download in place: {e}"))
    }
    .await;
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_url_names_the_pinned_linux_build() {
        assert_eq!(
            release_url("1.18.3"),
            "https://github.com/qdrant/qdrant/releases/download/v1.18.3/qdrant-x86_64-unknown-linux-gnu.tar.gz"
        );
    }

    #[tokio::test]
    async fn an_explicit_executable_that_does_not_exist_is_an_error_and_none_is_an_absence() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        let s = StackSettings {
            qdrant_bin: Some(dir.path().join("nope")),
            ..StackSettings::default()
        };
        let e = locate(&s, &sd).await.unwrap_err().to_string();
        assert!(e.contains("which does not exist"), "{e}");
        if on_path().is_none() {
            let s = StackSettings {
                qdrant_download: false,
                ..StackSettings::default()
            };
            match locate(&s, &sd).await.unwrap() {
                QdrantPresence::Absent { reason } => {
                    assert!(reason.contains("no qdrant executable found"), "{reason}");
                    assert!(reason.contains("download is off"), "{reason}");
                }
                p => panic!("{p:?}"),
            }
        }
        // A previous download is reused without asking the network.
        let cached = downloaded_bin(&sd, "9.9.9");
        fs::create_dir_all(cached.parent().unwrap()).unwrap();
        fs::write(&cached, "#!/bin/sh\necho qdrant 9.9.9\n").unwrap();
        fs::set_permissions(&cached, fs::Permissions::from_mode(0o755)).unwrap();
        if on_path().is_none() {
            let s = StackSettings {
                qdrant_version: "9.9.9".into(),
                ..StackSettings::default()
            };
            assert_eq!(
                locate(&s, &sd).await.unwrap(),
                QdrantPresence::Present {
                    bin: cached.clone(),
                    version: "9.9.9".into()
                }
            );
        }
    }
}
