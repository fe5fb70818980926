//! Redis and Qdrant roles on Kubernetes, asked of the servers the way clients reach them (the NodePorts kind maps
//! to 127.0.0.1): Sentinel names the master by its announced pod IP; Qdrant's /cluster names the raft leader's
//! peer URI, whose host is the pod's stable name (`qdrant-0.qdrant-headless...`) or its IP.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use super::{pod_name, KubeTarget};
use crate::component::qdrant::{cluster_view, QdrantPeer};
use crate::component::{http_client, redis as redis_component};
use crate::scenario::ComponentKind;
use crate::targets::TargetError;

const ASK_DEADLINE: Duration = Duration::from_secs(3);

fn pod_ip(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.pod_ip.as_deref())
}

/// The pod a server-side address names: its IP, or a host whose first label is the pod's name.
fn pod_by_host(pods: &[Pod], host: &str) -> Option<Pod> {
    let first = host.split('.').next().unwrap_or(host);
    pods.iter()
        .find(|p| pod_ip(p) == Some(host) || pod_name(p) == first)
        .cloned()
}

impl KubeTarget {
    /// The Redis master pod, as Sentinel (through its Service) reports it.
    pub(super) async fn sentinel_master_pod(&self) -> Result<Pod, TargetError> {
        let addr = self.selectors.sentinel_addr;
        let name = &self.selectors.redis_master_name;
        let fail = |e: String| TargetError::Fault(format!("Sentinel at {addr}: {e}"));
        let mut c = redis_component::connect(*addr.ip(), addr.port(), ASK_DEADLINE)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let master: Option<(String, String)> = tokio::time::timeout(
            ASK_DEADLINE,
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(name)
                .query_async(&mut c),
        )
        .await
        .map_err(|_| fail(format!("no answer within {} s", ASK_DEADLINE.as_secs())))?
        .map_err(|e| fail(e.to_string()))?;
        let (host, _) = master.ok_or_else(|| fail(format!("no master named `{name}`")))?;
        let pods = self.component_pods(ComponentKind::Redis).await?;
        pod_by_host(&pods, &host).ok_or_else(|| {
            fail(format!(
                "the master `{host}` is none of the redis pods (by pod IP or name)"
            ))
        })
    }

    /// The Qdrant raft leader's pod, from one peer's /cluster (through the REST Service).
    pub(super) async fn qdrant_leader_pod(&self) -> Result<Pod, TargetError> {
        let addr = self.selectors.qdrant_rest;
        let peer = QdrantPeer {
            rest_port: addr.port(),
            ..QdrantPeer::standard("service", *addr.ip())
        };
        let view = cluster_view(&http_client(ASK_DEADLINE), &peer)
            .await
            .map_err(|e| TargetError::Fault(format!("Qdrant at {addr}: {e}")))?;
        let leader = view
            .leader
            .ok_or_else(|| TargetError::Fault(format!("Qdrant at {addr} knows no raft leader")))?;
        let uri = view.peers.get(&leader).ok_or_else(|| {
            TargetError::Fault(format!("Qdrant's leader {leader} is not among its peers"))
        })?;
        let host = uri
            .split("://")
            .nth(1)
            .unwrap_or(uri)
            .split([':', '/'])
            .next()
            .unwrap_or_default();
        let pods = self.component_pods(ComponentKind::Qdrant).await?;
        pod_by_host(&pods, host).ok_or_else(|| {
            TargetError::Fault(format!(
                "Qdrant's leader URI {uri} is none of the qdrant pods"
            ))
        })
    }
}
