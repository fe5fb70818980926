//! The few Docker Engine API calls kind node faults need, over the engine's unix socket (HTTP/1.1): kind nodes are
//! containers named after the Kubernetes nodes. Stop (`t=0`: the node dies at once, as in a power loss) and
//! start, pause and unpause, disconnect from and reconnect to the kind network (with the node's own addresses).

use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
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

/// The Docker network kind attaches its node containers to.
pub const KIND_NETWORK: &str = "kind";

/// A node container's addresses on a Docker network (restored on reconnect).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkAddrs {
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
}

impl DockerApi {
    /// Kills the node container at once (`POST /containers/{name}/stop?t=0`); already stopped (304) is fine.
    pub async fn stop(&self, container: &str) -> Result<(), String> {
        self.expect_ok(
            "POST",
            &format!("/containers/{container}/stop?t=0"),
            None,
            container,
            &[],
        )
        .await
    }

    /// Starts the node container again; already running (304) is fine.
    pub async fn start(&self, container: &str) -> Result<(), String> {
        self.expect_ok(
            "POST",
            &format!("/containers/{container}/start"),
            None,
            container,
            &[],
        )
        .await
    }

    /// Freezes every process of the node container (the cgroup freezer); already paused is fine.
    pub async fn pause(&self, container: &str) -> Result<(), String> {
        self.expect_ok(
            "POST",
            &format!("/containers/{container}/pause"),
            None,
            container,
            &["already paused"],
        )
        .await
    }

    /// Thaws the node container; not paused is fine.
    pub async fn unpause(&self, container: &str) -> Result<(), String> {
        self.expect_ok(
            "POST",
            &format!("/containers/{container}/unpause"),
            None,
            container,
            &["is not paused"],
        )
        .await
    }

    /// The container's addresses on `network` (`GET /containers/{name}/json`); an error if it is not attached.
    pub async fn addresses(&self, container: &str, network: &str) -> Result<NetworkAddrs, String> {
        let path = format!("/containers/{container}/json");
        let (status, body) = self.call("GET", &path, None).await?;
        if status != 200 {
            return Err(Self::failure(&path, container, status, &body));
        }
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| format!("Docker API {path} answered unreadable JSON: {e}"))?;
        let endpoint = &v["NetworkSettings"]["Networks"][network];
        if endpoint.is_null() {
            return Err(format!(
                "node container {container} is not attached to the Docker network {network}"
            ));
        }
        let addr = |k: &str| {
            endpoint[k]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Ok(NetworkAddrs {
            ipv4: addr("IPAddress"),
            ipv6: addr("GlobalIPv6Address"),
        })
    }

    /// The engine's version (`GET /version`: `Version`, e.g. "29.0.2").
    pub async fn version(&self) -> Result<String, String> {
        let (status, body) = self.call("GET", "/version", None).await?;
        if status != 200 {
            return Err(Self::failure("/version", "the engine", status, &body));
        }
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["Version"].as_str().map(str::to_string))
            .ok_or_else(|| format!("Docker API /version answered no Version: {}", body.trim()))
    }

    /// The labels of a Docker network (`GET /networks/{name}`).
    pub async fn network_labels(&self, network: &str) -> Result<Vec<String>, String> {
        let path = format!("/networks/{network}");
        let (status, body) = self.call("GET", &path, None).await?;
        if status != 200 {
            return Err(Self::failure(&path, network, status, &body));
        }
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| format!("Docker API {path} answered unreadable JSON: {e}"))?;
        Ok(v["Labels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect())
    }

    /// Refuses, before anything changes, a disconnect this engine could not revert: Docker Engine 29.0.0 to 29.0.3
    /// rejects a fixed IPv4 address on a network whose IPv4 subnet the engine chose (kind's own `kind` network), so
    /// the node could not get its address back (moby#51569, fixed in 29.0.4 by moby#51583). A network faultline
    /// created (`kind_cluster::NETWORK_LABEL`) has its own subnet and is fine on every engine.
    pub async fn check_reconnectable(&self, network: &str) -> Result<(), String> {
        let version = self.version().await?;
        if !ipv4_reconnect_needs_configured_subnet(&version) {
            return Ok(());
        }
        let labels = self.network_labels(network).await?;
        if labels
            .iter()
            .any(|l| l == super::kind_cluster::NETWORK_LABEL)
        {
            return Ok(());
        }
        Err(format!(
            "refusing to disconnect a node: Docker Engine {version} cannot reconnect it with its IPv4 address, because \
             the Docker network {network} has no IPv4 subnet of its own (kind lets the engine choose one; engines \
             29.0.0-29.0.3 then reject a fixed address). Upgrade the engine to 29.0.4 or later, or recreate the \
             cluster with `faultline down --target kind && faultline up --target kind`: `down` removes the kind \
             network when no other cluster uses it (else `docker network rm kind` once they are gone), and `up` \
             creates it with an IPv4 subnet first"
        ))
    }

    /// Detaches the container from the network (forced, as for a dead link); not connected is fine.
    pub async fn disconnect(&self, container: &str, network: &str) -> Result<(), String> {
        let body = serde_json::json!({"Container": container, "Force": true});
        self.expect_ok(
            "POST",
            &format!("/networks/{network}/disconnect"),
            Some(body),
            container,
            &["is not connected"],
        )
        .await
    }

    /// Attaches the container to the network again with the given addresses; already connected is fine. Should
    /// the engine refuse the fixed IPv4 address (see `check_reconnectable`), the node is connected anyway with an
    /// address the engine chooses, so that it is never left disconnected, and the error says what changed.
    pub async fn connect(
        &self,
        container: &str,
        network: &str,
        addrs: &NetworkAddrs,
    ) -> Result<(), String> {
        let fixed = self.connect_with(container, network, addrs).await;
        let refused = |e: &String| {
            e.contains("user specified IP address is supported only")
                || e.contains("no configured subnet contains IP address")
        };
        match fixed {
            Err(e) if refused(&e) => {
                let any = NetworkAddrs::default();
                self.connect_with(container, network, &any)
                    .await
                    .map_err(|again| {
                        format!("{e}; connecting without a fixed address failed too: {again}")
                    })?;
                let now = self.addresses(container, network).await.unwrap_or_default();
                Err(format!(
                    "node container {container} is connected to {network} again, but with the engine's choice of \
                     address {} instead of {} (the engine refused the old one: {}); the Kubernetes node keeps its \
                     old address, so recreate the cluster (`faultline down --target kind && faultline up --target \
                     kind`)",
                    now.ipv4.as_deref().unwrap_or("(none)"),
                    addrs.ipv4.as_deref().unwrap_or("(none)"),
                    e.trim()
                ))
            }
            other => other,
        }
    }

    async fn connect_with(
        &self,
        container: &str,
        network: &str,
        addrs: &NetworkAddrs,
    ) -> Result<(), String> {
        let mut ipam = serde_json::Map::new();
        if let Some(a) = &addrs.ipv4 {
            ipam.insert("IPv4Address".into(), a.clone().into());
        }
        if let Some(a) = &addrs.ipv6 {
            ipam.insert("IPv6Address".into(), a.clone().into());
        }
        let body = serde_json::json!({
            "Container": container,
            "EndpointConfig": {"IPAMConfig": ipam}
        });
        self.expect_ok(
            "POST",
            &format!("/networks/{network}/connect"),
            Some(body),
            container,
            &["already exists", "already connected"],
        )
        .await
    }

    /// Runs `cmd` inside the container and waits for it (`POST /containers/{name}/exec`, `POST /exec/{id}/start`
    /// without detaching, `GET /exec/{id}/json`): (exit code, stdout and stderr as the engine streamed them).
    pub async fn exec(&self, container: &str, cmd: &[&str]) -> Result<(i64, String), String> {
        let path = format!("/containers/{container}/exec");
        let body = serde_json::json!({
            "AttachStdout": true, "AttachStderr": true, "Tty": false, "Cmd": cmd
        });
        let (status, text) = self.call("POST", &path, Some(body)).await?;
        if status != 201 && status != 200 {
            return Err(Self::failure(&path, container, status, &text));
        }
        let id = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["Id"].as_str().map(str::to_string))
            .ok_or_else(|| format!("Docker API {path} answered no exec Id: {}", text.trim()))?;
        let start = format!("/exec/{id}/start");
        let body = serde_json::json!({"Detach": false, "Tty": false});
        // The engine streams the output until the command ends, then closes its side.
        let (status, raw) = self.call_bytes("POST", &start, Some(body)).await?;
        let output = demux(&raw);
        if status != 200 {
            return Err(Self::failure(&start, container, status, &output));
        }
        let inspect = format!("/exec/{id}/json");
        for _ in 0..50 {
            let (status, text) = self.call("GET", &inspect, None).await?;
            if status != 200 {
                return Err(Self::failure(&inspect, container, status, &text));
            }
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| format!("Docker API {inspect} answered unreadable JSON: {e}"))?;
            if let (false, Some(code)) = (
                v["Running"].as_bool().unwrap_or(true),
                v["ExitCode"].as_i64(),
            ) {
                return Ok((code, output));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "`{}` in {container} was still running 5 s after its output ended",
            cmd.join(" ")
        ))
    }

    /// One call that succeeds on 2xx/304, or on an error whose message says the state is already the wanted one.
    async fn expect_ok(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        container: &str,
        already: &[&str],
    ) -> Result<(), String> {
        let (status, text) = self.call(method, path, body).await?;
        // The engine answers "already" states with varying codes: 304 for start/stop, 403/409 for a network
        // endpoint, and a plain 500 for "Container ... is not paused" (moby's unpause returns an untyped error).
        let already_done = status >= 400 && already.iter().any(|a| text.contains(a));
        if (200..300).contains(&status) || status == 304 || already_done {
            Ok(())
        } else {
            Err(Self::failure(path, container, status, &text))
        }
    }

    fn failure(path: &str, container: &str, status: u16, body: &str) -> String {
        match status {
            404 => format!(
                "no Docker container or network for {container} ({path}; is this a kind cluster?): {}",
                body.trim()
            ),
            code => format!("Docker API {path} answered {code}: {}", body.trim()),
        }
    }

    /// One HTTP/1.1 exchange over the engine's socket, with a deadline: (status, body as text).
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, String), String> {
        let (status, bytes) = self.call_bytes(method, path, body).await?;
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// One HTTP/1.1 exchange over the engine's socket, with a deadline: (status, body).
    async fn call_bytes(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, Bytes), String> {
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
            let mut req = http::Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, "docker");
            let payload = match body {
                Some(v) => {
                    req = req.header(http::header::CONTENT_TYPE, "application/json");
                    Bytes::from(v.to_string())
                }
                None => Bytes::new(),
            };
            let req = req.body(Full::new(payload)).map_err(|e| e.to_string())?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("Docker API request {path} failed: {e}"))?;
            let status = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            driver.abort();
            Ok((status, bytes))
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

/// Whether this engine version refuses a fixed IPv4 address on a network without a user-configured IPv4 subnet:
/// 29.0.0 to 29.0.3 (moby#51134 made the check fire, moby#51583 relaxed it in 29.0.4). Unparsable: assume it does.
pub fn ipv4_reconnect_needs_configured_subnet(version: &str) -> bool {
    let nums: Vec<u64> = version
        .split(['.', '-', '+'])
        .take(3)
        .map_while(|p| p.parse().ok())
        .collect();
    match nums.as_slice() {
        [major, minor, patch] => (*major, *minor) == (29, 0) && *patch < 4,
        _ => true,
    }
}

/// The text of an exec's output stream. Without a TTY the engine multiplexes stdout and stderr in frames of an
/// 8-byte header (stream 0-2, three zero bytes, big-endian length) and the payload; anything else is taken as is.
pub fn demux(raw: &[u8]) -> String {
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let framed = rest.len() >= 8 && rest[0] <= 2 && rest[1..4] == [0, 0, 0];
        if !framed {
            return String::from_utf8_lossy(raw).into_owned();
        }
        let len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let Some(payload) = rest.get(8..8 + len) else {
            return String::from_utf8_lossy(raw).into_owned();
        };
        out.extend_from_slice(payload);
        rest = &rest[8 + len..];
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_engines_29_0_0_to_29_0_3_refuse_a_fixed_ipv4_address_on_an_engine_chosen_subnet() {
        for v in ["29.0.0", "29.0.3", "29.0.2-rc.1", "nonsense"] {
            assert!(ipv4_reconnect_needs_configured_subnet(v), "{v}");
        }
        for v in ["28.5.2", "29.0.4", "29.1.0", "30.0.1", "27.3.1"] {
            assert!(!ipv4_reconnect_needs_configured_subnet(v), "{v}");
        }
    }

    #[test]
    fn exec_output_is_demultiplexed_and_unframed_text_kept() {
        let mut raw = vec![1, 0, 0, 0, 0, 0, 0, 4];
        raw.extend_from_slice(b"abc\n");
        raw.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 3]);
        raw.extend_from_slice(b"err");
        assert_eq!(demux(&raw), "abc\nerr");
        assert_eq!(demux(b"plain text"), "plain text");
        assert_eq!(
            demux(&[1, 0, 0, 0, 0, 0, 0, 9, b'x']),
            "\u{1}\0\0\0\0\0\0\tx"
        );
        assert_eq!(demux(b""), "");
    }
}
