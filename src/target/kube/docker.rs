//! The few Docker Engine API calls kind node faults need, over the engine's unix socket (HTTP/1.1): kind nodes are
//! containers named after the Kubernetes nodes. Stop (`t=0`: the node dies at once, as in a power loss) and start.

use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Deadline for one Docker API call (a stop with t=0 or a start takes a second or two).
const CALL_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct DockerApi {
    pub socket: PathBuf,
}

impl Default for DockerApi {
    fn default() -> Self {
        DockerApi {
            socket: PathBuf::from("/var/run/docker.sock"),
        }
    }
}

impl DockerApi {
    /// Kills the node container at once (`POST /containers/{name}/stop?t=0`); already stopped (304) is fine.
    pub async fn stop(&self, container: &str) -> Result<(), String> {
        self.post(&format!("/containers/{container}/stop?t=0"), container)
            .await
    }

    /// Starts the node container again; already running (304) is fine.
    pub async fn start(&self, container: &str) -> Result<(), String> {
        self.post(&format!("/containers/{container}/start"), container)
            .await
    }

    async fn post(&self, path: &str, container: &str) -> Result<(), String> {
        let call = async {
            let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
                format!(
                    "cannot reach the Docker engine at {}: {e}",
                    self.socket.display()
                )
            })?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("Docker API handshake failed: {e}"))?;
            let driver = tokio::spawn(conn);
            let req = http::Request::post(path)
                .header(http::header::HOST, "docker")
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("Docker API request {path} failed: {e}"))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default();
            driver.abort();
            match status.as_u16() {
                204 | 304 => Ok(()),
                404 => Err(format!(
                    "no Docker container named {container} (is this a kind cluster?)"
                )),
                code => Err(format!(
                    "Docker API {path} answered {code}: {}",
                    body.trim()
                )),
            }
        };
        tokio::time::timeout(CALL_DEADLINE, call)
            .await
            .map_err(|_| {
                format!(
                    "Docker API {path} did not answer within {} s",
                    CALL_DEADLINE.as_secs()
                )
            })?
    }
}
