//! Patroni's DCS on Kubernetes is the API server: the leader renews its lock by patching the annotations of its
//! Endpoints, and it demotes only when that update fails (patroni/ha.py: "failed to update leader lock"). A
//! partition that leaves the leader's side able to reach the API server therefore never fails over, whatever it cuts
//! between the pods. So when one side of a partition holds the Patroni leader without the majority of the
//! PostgreSQL members, that side is cut off from the API server too (`partition.rs`, `chaos_mesh.rs`); the API
//! server stays with the majority, as an etcd quorum does on the local stack (where a partitioned-off primary's
//! etcd loses its quorum). The plan and the fault's description say which case it was.
//!
//! Pods reach the API server through the `kubernetes` Service in `default` (the ClusterIP in
//! KUBERNETES_SERVICE_HOST), which kube-proxy translates to the API server's own addresses (its Endpoints: on kind,
//! the control plane's address, port 6443). Where a cut is made decides which address it must name: a NetworkPolicy
//! is enforced after that translation (the endpoint address; the ClusterIP is named too), Chaos Mesh's rules inside
//! the pod's network namespace before it (the ClusterIP only: its rules drop regardless of connection state, and on
//! kind the control plane's address is also where NodePort traffic comes from, so naming it would drop the side's
//! replies to faultline's own clients). faultline's Postgres manifest turns Spilo's `bypass_api_service` off, so
//! Patroni dials the Service rather than the endpoints.

use std::net::{Ipv4Addr, SocketAddrV4};

use serde_json::Value;

use super::{pod_name, status_code, KubeTarget};
use crate::scenario::ComponentKind;
use crate::targets::TargetError;

/// Which side of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn label(self) -> &'static str {
        match self {
            Side::A => "a",
            Side::B => "b",
        }
    }
}

/// Where pods reach the API server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiServer {
    /// The `kubernetes` Service's ClusterIP and port: what a pod dials.
    pub service: Option<SocketAddrV4>,
    /// Where the API server itself listens (the Service's Endpoints), or the control-plane nodes' addresses with
    /// port 6443 when those cannot be read.
    pub endpoints: Vec<SocketAddrV4>,
    /// Why the endpoints are the control plane's addresses rather than read from the Service.
    pub note: Option<String>,
}

impl ApiServer {
    /// Every address a cut must name, once each.
    pub fn ips(&self) -> Vec<Ipv4Addr> {
        let mut out: Vec<Ipv4Addr> = Vec::new();
        for a in self.service.iter().chain(&self.endpoints) {
            if !out.contains(a.ip()) {
                out.push(*a.ip());
            }
        }
        out
    }

    /// What a Chaos Mesh cut names: the ClusterIP, or the endpoints when the Service could not be read.
    pub fn chaos_targets(&self) -> Vec<Ipv4Addr> {
        match self.service {
            Some(s) => vec![*s.ip()],
            None => self.ips(),
        }
    }

    fn describe(&self) -> String {
        let mut parts: Vec<String> = self.service.iter().map(|s| s.to_string()).collect();
        parts.extend(self.endpoints.iter().map(|e| e.to_string()));
        let mut out = parts.join(", ");
        if let Some(n) = &self.note {
            out.push_str(&format!("; {n}"));
        }
        out
    }
}

/// A partition side that holds Patroni's leader and is cut from the API server too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DcsCut {
    pub side: Side,
    pub leader_pod: String,
    pub api: ApiServer,
}

/// What a partition does to Patroni's DCS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dcs {
    /// No PostgreSQL pods in the namespace: nothing to say.
    NoPatroni,
    /// Patroni's leader cannot be told now (mid-failover, or no agreed record): no side is cut.
    LeaderUnknown {
        reason: String,
    },
    /// Both sides keep the API server: the leader is on neither side (`side` None), or on a side holding the
    /// majority of the `members` PostgreSQL pods (`on_side` of them).
    Untouched {
        leader_pod: String,
        side: Option<Side>,
        on_side: usize,
        members: usize,
    },
    Cut(DcsCut),
}

impl Dcs {
    pub fn cut(&self) -> Option<&DcsCut> {
        match self {
            Dcs::Cut(c) => Some(c),
            _ => None,
        }
    }

    /// The words for the plan and the fault's description; `enforced_by_cni` (the NetworkPolicy backend) adds its
    /// caveat and names every address, Chaos Mesh's cut only the ClusterIP (`ApiServer::chaos_targets`).
    pub fn describe(&self, enforced_by_cni: bool) -> Option<String> {
        match self {
            Dcs::NoPatroni => None,
            Dcs::LeaderUnknown { reason } => Some(format!(
                "Patroni's leader cannot be told now ({reason}): no side is cut from the API server (Patroni's DCS)"
            )),
            Dcs::Untouched {
                leader_pod,
                side: None,
                ..
            } => Some(format!(
                "the Patroni leader {leader_pod} is on neither side: both keep the API server (Patroni's DCS)"
            )),
            Dcs::Untouched {
                leader_pod,
                side: Some(side),
                on_side,
                members,
            } => Some(format!(
                "the Patroni leader {leader_pod} is on side {} with {on_side} of the {members} PostgreSQL members: \
                 the API server (Patroni's DCS) stays with that side, as a DCS quorum would",
                side.label().to_uppercase()
            )),
            Dcs::Cut(c) => {
                let addrs = if enforced_by_cni {
                    c.api.describe()
                } else {
                    c.api
                        .chaos_targets()
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let mut s = format!(
                    "side {} holds the Patroni leader {} and is cut from the API server (Patroni's DCS) too: {addrs}",
                    c.side.label().to_uppercase(),
                    c.leader_pod,
                );
                if enforced_by_cni {
                    s.push_str(
                        " (an egress NetworkPolicy: on a CNI that does not enforce egress ipBlocks the leader keeps \
                         its lock, and the partition will not reach the DCS)",
                    );
                }
                Some(s)
            }
        }
    }
}

/// The `kubernetes` Service as a pod sees it: ClusterIP and port.
fn service_addr(v: &Value) -> Option<SocketAddrV4> {
    let ip: Ipv4Addr = v["spec"]["clusterIP"].as_str()?.parse().ok()?;
    let port = v["spec"]["ports"][0]["port"].as_u64()?;
    Some(SocketAddrV4::new(ip, u16::try_from(port).ok()?))
}

/// Every (address, port) of an Endpoints object's subsets.
pub fn endpoint_addrs(v: &Value) -> Vec<SocketAddrV4> {
    let mut out = Vec::new();
    for subset in v["subsets"].as_array().into_iter().flatten() {
        let ports: Vec<u16> = subset["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["port"].as_u64().and_then(|p| u16::try_from(p).ok()))
            .collect();
        for a in subset["addresses"].as_array().into_iter().flatten() {
            if let Some(ip) = a["ip"].as_str().and_then(|s| s.parse::<Ipv4Addr>().ok()) {
                out.extend(ports.iter().map(|p| SocketAddrV4::new(ip, *p)));
            }
        }
    }
    out
}

impl KubeTarget {
    /// The API server's addresses as pods reach it. When the `kubernetes` Service or its Endpoints cannot be read
    /// (RBAC), the control-plane nodes' addresses with port 6443 stand in, and the note says so.
    pub async fn api_server(&self) -> ApiServer {
        let service = self
            .get_json("/api/v1/namespaces/default/services/kubernetes")
            .await
            .ok()
            .as_ref()
            .and_then(service_addr);
        let read = self
            .get_json("/api/v1/namespaces/default/endpoints/kubernetes")
            .await;
        let (endpoints, note) = match read.as_ref().map(endpoint_addrs) {
            Ok(e) if !e.is_empty() => (e, None),
            other => {
                let why = match other {
                    Ok(_) => "the kubernetes Endpoints list no address".to_string(),
                    Err(e) => format!(
                        "the kubernetes Endpoints could not be read ({})",
                        status_code(e).map_or_else(|| e.to_string(), |c| format!("HTTP {c}"))
                    ),
                };
                (
                    self.control_plane_addrs
                        .iter()
                        .map(|a| SocketAddrV4::new(*a, 6443))
                        .collect(),
                    Some(format!(
                        "{why}: the control-plane nodes' addresses stand in"
                    )),
                )
            }
        };
        ApiServer {
            service,
            endpoints,
            note,
        }
    }

    /// Which side of a partition between the pods `a` and `b` holds Patroni's leader (read now), and whether that
    /// side loses the API server: it does unless it holds the majority of the PostgreSQL members. An `isolation`
    /// (a zone or node lost on a cluster faultline cannot stop nodes of) is side A gone: it loses the API server
    /// whenever it holds the leader.
    pub async fn dcs_for_partition(
        &self,
        a: &[String],
        b: &[String],
        isolation: bool,
    ) -> Result<Dcs, TargetError> {
        let pods = self.component_pods(ComponentKind::Postgres).await?;
        if pods.is_empty() {
            return Ok(Dcs::NoPatroni);
        }
        let leader = match self.patroni_leader_among(&pods).await {
            Ok(p) => pod_name(&p).to_string(),
            Err(e) => {
                return Ok(Dcs::LeaderUnknown {
                    reason: e.to_string(),
                })
            }
        };
        let (side, side_pods) = if a.contains(&leader) {
            (Side::A, a)
        } else if b.contains(&leader) {
            (Side::B, b)
        } else {
            return Ok(Dcs::Untouched {
                leader_pod: leader,
                side: None,
                on_side: 0,
                members: pods.len(),
            });
        };
        let on_side = pods
            .iter()
            .filter(|p| side_pods.iter().any(|s| s == pod_name(p)))
            .count();
        if 2 * on_side > pods.len() && !(isolation && side == Side::A) {
            return Ok(Dcs::Untouched {
                leader_pod: leader,
                side: Some(side),
                on_side,
                members: pods.len(),
            });
        }
        Ok(Dcs::Cut(DcsCut {
            side,
            leader_pod: leader,
            api: self.api_server().await,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn endpoint_addresses_pair_every_address_with_every_port() {
        let v = json!({"subsets": [{"addresses": [{"ip": "172.18.0.2"}, {"ip": "172.18.0.9"}],
                                    "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]});
        assert_eq!(
            endpoint_addrs(&v),
            [
                "172.18.0.2:6443".parse::<SocketAddrV4>().unwrap(),
                "172.18.0.9:6443".parse().unwrap()
            ]
        );
        assert!(endpoint_addrs(&json!({"metadata": {}})).is_empty());
    }

    #[test]
    fn the_cut_names_every_address_once_and_the_cni_caveat_only_for_policies() {
        let api = ApiServer {
            service: Some("10.96.0.1:443".parse().unwrap()),
            endpoints: vec!["172.18.0.2:6443".parse().unwrap()],
            note: None,
        };
        assert_eq!(
            api.ips(),
            [Ipv4Addr::new(10, 96, 0, 1), Ipv4Addr::new(172, 18, 0, 2)]
        );
        let cut = Dcs::Cut(DcsCut {
            side: Side::B,
            leader_pod: "postgres-2".into(),
            api,
        });
        let policy = cut.describe(true).unwrap();
        assert!(
            policy.starts_with("side B holds the Patroni leader postgres-2")
                && policy.contains("10.96.0.1:443, 172.18.0.2:6443")
                && policy.contains("will not reach the DCS"),
            "{policy}"
        );
        assert!(!cut.describe(false).unwrap().contains("CNI"));
        assert_eq!(Dcs::NoPatroni.describe(true), None);
    }
}
