//! The Qdrant failover probe: every peer is polled on its own every 100 ms (a peer that hangs delays no other),
//! GET /cluster and GET /collections/{c}/cluster. A replica seen leaving `Active` on any peer is the server-side
//! sign of the failure (`FailureDetected`); a new raft leader is `NewPrimaryServing`; every replica state change,
//! raft leader/term change, growing count of failed peer-to-peer sends and peer that stops answering goes on the
//! timeline as a `ServerObservation`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::rest::{cluster_view, collection_view, peer_nodes, ClusterView, CollectionClusterView};
use super::QdrantEndpoints;
use crate::clock::Stamp;
use crate::component::http_client;
use crate::events::{EventKind, EventLog};
use crate::scenario::ComponentKind;

const PERIOD: Duration = Duration::from_millis(100);
/// A peer-to-peer send failure count that keeps growing is reported at most this often per pair of peers.
const SEND_FAILURE_REPORT_EVERY: Duration = Duration::from_secs(1);

/// What the probe has seen so far; turns each new view into timeline events. Pure: no I/O, stamps come in.
pub struct ProbeState {
    ep: QdrantEndpoints,
    nodes: BTreeMap<u64, String>,
    /// (viewer, shard, replica peer) -> state.
    replicas: BTreeMap<(String, u32, u64), String>,
    /// viewer -> (leader, term) as it last reported.
    raft: BTreeMap<String, (Option<u64>, u64)>,
    /// The leader the cluster last had, by any peer's report: (leader, term).
    leader: Option<(u64, u64)>,
    unreachable: BTreeSet<String>,
    /// (viewer, target URI) -> (count, when last reported).
    send_failures: BTreeMap<(String, String), (u64, Option<Stamp>)>,
}

fn obs(source: String, message: String) -> EventKind {
    EventKind::ServerObservation {
        component: ComponentKind::Qdrant,
        source,
        message,
    }
}

impl ProbeState {
    pub fn new(ep: QdrantEndpoints) -> Self {
        ProbeState {
            ep,
            nodes: BTreeMap::new(),
            replicas: BTreeMap::new(),
            raft: BTreeMap::new(),
            leader: None,
            unreachable: BTreeSet::new(),
            send_failures: BTreeMap::new(),
        }
    }

    fn node(&self, id: u64) -> String {
        self.nodes
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("peer {id}"))
    }

    /// A peer's GET /cluster answered.
    pub fn on_cluster(&mut self, viewer: &str, v: &ClusterView, at: Stamp) -> Vec<EventKind> {
        let mut out = Vec::new();
        let source = format!("qdrant {viewer}");
        if self.unreachable.remove(viewer) {
            out.push(obs(
                source.clone(),
                format!("qdrant on {viewer} answers again"),
            ));
        }
        self.nodes.extend(peer_nodes(&self.ep, &[v]));
        let now = (v.leader, v.term);
        let before = self.raft.insert(viewer.to_string(), now);
        if before.is_some_and(|b| b != now) {
            let leader = v.leader.map_or("none".to_string(), |l| self.node(l));
            out.push(obs(
                source.clone(),
                format!(
                    "raft leader {leader}, term {} (role {})",
                    v.term,
                    v.role.as_deref().unwrap_or("?")
                ),
            ));
        }
        if let Some(l) = v.leader {
            match self.leader {
                None => self.leader = Some((l, v.term)),
                Some((prev, term)) if prev != l && v.term > term => {
                    self.leader = Some((l, v.term));
                    out.push(EventKind::NewPrimaryServing {
                        component: ComponentKind::Qdrant,
                        member: self.node(l),
                        evidence: format!(
                            "qdrant on {viewer} reports raft leader {} in term {} (was {} in term {term})",
                            self.node(l),
                            v.term,
                            self.node(prev)
                        ),
                    });
                }
                Some((prev, term)) if prev == l && v.term > term => self.leader = Some((l, v.term)),
                _ => {}
            }
        }
        for (uri, f) in &v.send_failures {
            let key = (viewer.to_string(), uri.clone());
            let entry = self.send_failures.entry(key).or_insert((f.count, None));
            let grew = f.count > entry.0;
            let due = entry
                .1
                .is_none_or(|last| at.0.saturating_sub(last.0) >= SEND_FAILURE_REPORT_EVERY);
            if grew && due {
                let target = self.ep.node_of_uri(uri).map_or(uri.clone(), str::to_string);
                out.push(obs(
                    source.clone(),
                    format!(
                        "{} failed sends to {target} (latest: {}{})",
                        f.count,
                        f.latest_error.as_deref().unwrap_or("?"),
                        f.latest_error_timestamp
                            .as_deref()
                            .map(|t| format!(" at {t}"))
                            .unwrap_or_default()
                    ),
                ));
                *entry = (f.count, Some(at));
            }
        }
        out
    }

    /// A peer's GET /collections/{c}/cluster answered.
    pub fn on_collection(&mut self, viewer: &str, v: &CollectionClusterView) -> Vec<EventKind> {
        let mut out = Vec::new();
        let source = format!("qdrant {viewer}");
        let mut seen = BTreeSet::new();
        for r in &v.replicas {
            let key = (viewer.to_string(), r.shard_id, r.peer_id);
            seen.insert(key.clone());
            let before = self.replicas.insert(key, r.state.clone());
            if before.as_deref() == Some(r.state.as_str()) {
                continue;
            }
            let holder = self.node(r.peer_id);
            let was = before
                .as_deref()
                .map(|b| format!(" (was {b})"))
                .unwrap_or_default();
            if before.is_some() || !r.is_active() {
                out.push(obs(
                    source.clone(),
                    format!("shard {} replica on {holder}: {}{was}", r.shard_id, r.state),
                ));
            }
            if !r.is_active() {
                out.push(EventKind::FailureDetected {
                    component: ComponentKind::Qdrant,
                    evidence: format!(
                        "qdrant on {viewer} sees shard {} replica on {holder} {}{was}",
                        r.shard_id, r.state
                    ),
                });
            }
        }
        let gone: Vec<(String, u32, u64)> = self
            .replicas
            .keys()
            .filter(|k| k.0 == viewer && !seen.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            self.replicas.remove(&k);
            out.push(obs(
                source.clone(),
                format!(
                    "shard {} replica on {} is no longer listed",
                    k.1,
                    self.node(k.2)
                ),
            ));
        }
        out
    }

    /// A peer did not answer (killed, paused, cut off).
    pub fn on_unreachable(&mut self, viewer: &str, error: &str) -> Vec<EventKind> {
        if self.unreachable.insert(viewer.to_string()) {
            vec![obs(
                format!("qdrant {viewer}"),
                format!("qdrant on {viewer} does not answer: {error}"),
            )]
        } else {
            Vec::new()
        }
    }
}

/// Polls every peer on its own task until `stop`; events are stamped when the answer arrived.
pub fn spawn_probe(
    ep: QdrantEndpoints,
    events: EventLog,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let state = Arc::new(Mutex::new(ProbeState::new(ep.clone())));
    tokio::spawn(async move {
        let tasks: Vec<_> = ep
            .peers
            .clone()
            .into_iter()
            .map(|peer| {
                let ep = ep.clone();
                let events = events.clone();
                let state = state.clone();
                let mut stop = stop.clone();
                tokio::spawn(async move {
                    // Below the period of a healthy answer's worst case; a peer that does not answer within it is
                    // reported unreachable, and the next poll starts right away.
                    let http = http_client(Duration::from_millis(300));
                    let mut tick = tokio::time::interval(PERIOD);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            _ = tick.tick() => {}
                            _ = stop.changed() => return,
                        }
                        if *stop.borrow() {
                            return;
                        }
                        let poll = async {
                            let c = cluster_view(&http, &peer).await;
                            let c_at = events.clock().now();
                            let col = collection_view(&http, &peer, &ep.collection.name).await;
                            (c, c_at, col, events.clock().now())
                        };
                        let (cluster, c_at, col, col_at) = tokio::select! {
                            r = poll => r,
                            _ = stop.changed() => return,
                        };
                        let mut emitted: Vec<(Stamp, EventKind)> = Vec::new();
                        {
                            let mut s = state.lock().unwrap();
                            match &cluster {
                                Ok(v) => emitted.extend(
                                    s.on_cluster(&peer.node, v, c_at)
                                        .into_iter()
                                        .map(|e| (c_at, e)),
                                ),
                                Err(e) => emitted.extend(
                                    s.on_unreachable(&peer.node, e)
                                        .into_iter()
                                        .map(|e| (c_at, e)),
                                ),
                            }
                            if let Ok(Some(v)) = &col {
                                emitted.extend(
                                    s.on_collection(&peer.node, v)
                                        .into_iter()
                                        .map(|e| (col_at, e)),
                                );
                            }
                        }
                        for (at, e) in emitted {
                            events.emit_at(at, e);
                        }
                    }
                })
            })
            .collect();
        futures_util::future::join_all(tasks).await;
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::component::qdrant::rest::tests::{
        cluster_json, collection_json, ep3, ID1, ID2, ID3,
    };
    use crate::component::qdrant::rest::{parse_cluster, parse_collection_cluster};

    fn at(ms: u64) -> Stamp {
        Stamp(Duration::from_millis(ms))
    }

    fn detections(events: &[EventKind]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                EventKind::FailureDetected { evidence, .. } => Some(evidence.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_replica_leaving_active_is_the_detection() {
        let mut s = ProbeState::new(ep3());
        for (n, id) in [("n1", ID1), ("n2", ID2)] {
            assert!(s
                .on_cluster(n, &parse_cluster(&cluster_json(id, ID1, 2)).unwrap(), at(0))
                .is_empty());
            let healthy = parse_collection_cluster(&collection_json(id, None, "Active")).unwrap();
            assert!(
                s.on_collection(n, &healthy).is_empty(),
                "steady state is not news"
            );
        }
        // n3 is killed: n1 marks its replicas Dead.
        let dead = parse_collection_cluster(&collection_json(ID1, Some(ID3), "Dead")).unwrap();
        let ev = s.on_collection("n1", &dead);
        let det = detections(&ev);
        assert_eq!(det.len(), 4, "one per replica of n3: {ev:?}");
        assert!(det[0].starts_with("qdrant on n1 sees shard "), "{}", det[0]);
        assert!(
            det[0].ends_with("replica on n3 Dead (was Active)"),
            "{}",
            det[0]
        );
        assert_eq!(
            ev.len(),
            8,
            "each change also goes on the timeline as an observation"
        );
        assert!(
            s.on_collection("n1", &dead).is_empty(),
            "no repeat while nothing changes"
        );
        // Rebuilt: Partial is still not Active, then Active again (observation only).
        let partial =
            parse_collection_cluster(&collection_json(ID1, Some(ID3), "Partial")).unwrap();
        assert_eq!(detections(&s.on_collection("n1", &partial)).len(), 4);
        let healed = parse_collection_cluster(&collection_json(ID1, None, "Active")).unwrap();
        let ev = s.on_collection("n1", &healed);
        assert!(detections(&ev).is_empty());
        assert_eq!(ev.len(), 4);
    }

    #[test]
    fn a_replica_first_seen_not_active_is_reported() {
        let mut s = ProbeState::new(ep3());
        s.on_cluster(
            "n2",
            &parse_cluster(&cluster_json(ID2, ID1, 2)).unwrap(),
            at(0),
        );
        let v = parse_collection_cluster(&collection_json(ID2, Some(ID1), "Dead")).unwrap();
        assert_eq!(detections(&s.on_collection("n2", &v)).len(), 4);
    }

    #[test]
    fn leader_changes_and_unreachable_peers() {
        let mut s = ProbeState::new(ep3());
        assert!(s
            .on_cluster(
                "n2",
                &parse_cluster(&cluster_json(ID2, ID1, 2)).unwrap(),
                at(0)
            )
            .is_empty());
        let ev = s.on_unreachable("n1", "connection refused");
        assert_eq!(ev.len(), 1);
        assert!(
            s.on_unreachable("n1", "connection refused").is_empty(),
            "reported once"
        );
        let ev = s.on_cluster(
            "n2",
            &parse_cluster(&cluster_json(ID2, ID3, 3)).unwrap(),
            at(900),
        );
        let promoted: Vec<&EventKind> = ev
            .iter()
            .filter(|e| matches!(e, EventKind::NewPrimaryServing { member, .. } if member == "n3"))
            .collect();
        assert_eq!(promoted.len(), 1, "{ev:?}");
        // A stale report of the old leader in the old term is no new leader.
        let ev = s.on_cluster(
            "n3",
            &parse_cluster(&cluster_json(ID3, ID1, 2)).unwrap(),
            at(950),
        );
        assert!(ev
            .iter()
            .all(|e| !matches!(e, EventKind::NewPrimaryServing { .. })));
        let ev = s.on_cluster(
            "n1",
            &parse_cluster(&cluster_json(ID1, ID3, 3)).unwrap(),
            at(1000),
        );
        assert!(
            matches!(&ev[0], EventKind::ServerObservation { message, .. } if message == "qdrant on n1 answers again")
        );
    }

    #[tokio::test]
    async fn the_probe_polls_every_peer_and_stamps_the_first_dead_replica() {
        use crate::clock::Clock;
        use crate::component::qdrant::fake::FakeCluster;

        let c = FakeCluster::start(3).await;
        let events = EventLog::new(Clock::start());
        let (stop_tx, stop_rx) = watch::channel(false);
        let probe = spawn_probe(c.ep.clone(), events.clone(), stop_rx);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            events
                .snapshot()
                .iter()
                .all(|e| !matches!(e.kind, EventKind::FailureDetected { .. })),
            "a healthy cluster shows no failure: {:?}",
            events.snapshot()
        );
        // n3 is gone: it stops answering; n1 and n2 mark its replicas Dead.
        let changed = events.clock().now();
        c.clear_routes(3);
        c.set_collection(1, &[(3, "Dead")]);
        c.set_collection(2, &[(3, "Dead")]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = stop_tx.send(true);
        tokio::time::timeout(Duration::from_secs(2), probe)
            .await
            .unwrap()
            .unwrap();
        let all = events.snapshot();
        let first = all
            .iter()
            .find(|e| matches!(e.kind, EventKind::FailureDetected { .. }))
            .expect("detection observed");
        let after = first.at.secs_since(changed);
        assert!(
            (0.0..0.35).contains(&after),
            "detected {after} s after the change (polled every 100 ms)"
        );
        match &first.kind {
            EventKind::FailureDetected { evidence, .. } => {
                assert!(
                    evidence.contains("replica on n3 Dead (was Active)"),
                    "{evidence}"
                )
            }
            _ => unreachable!(),
        }
        assert!(all.iter().any(|e| matches!(&e.kind,
            EventKind::ServerObservation { message, .. } if message.starts_with("qdrant on n3 does not answer"))));
    }

    #[test]
    fn growing_send_failures_are_reported_at_most_once_a_second() {
        let mut s = ProbeState::new(ep3());
        let with_failures = |count: u64| {
            let mut v = cluster_json(ID1, ID1, 2);
            v["result"]["message_send_failures"] = json!({
                "http://10.201.0.13:6335/": {"count": count, "latest_error": "Connection refused",
                                             "latest_error_timestamp": "2026-01-01T00:00:01Z"}
            });
            parse_cluster(&v).unwrap()
        };
        assert!(s.on_cluster("n1", &with_failures(0), at(0)).is_empty());
        let ev = s.on_cluster("n1", &with_failures(2), at(100));
        assert_eq!(ev.len(), 1);
        assert!(
            matches!(&ev[0], EventKind::ServerObservation { message, .. } if message.starts_with("2 failed sends to n3 (latest: Connection refused")),
            "{ev:?}"
        );
        assert!(
            s.on_cluster("n1", &with_failures(5), at(600)).is_empty(),
            "throttled"
        );
        assert_eq!(s.on_cluster("n1", &with_failures(9), at(1200)).len(), 1);
        assert!(
            s.on_cluster("n1", &with_failures(9), at(2500)).is_empty(),
            "not growing"
        );
    }
}
