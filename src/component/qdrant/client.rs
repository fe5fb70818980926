//! Clients of the Qdrant cluster over gRPC, through qdrant-client's generated `PointsClient`/`CollectionsClient`
//! on a channel this module owns. Not the high-level `Qdrant` client: it silently retries a request once on
//! Unavailable/Internal, and a harness must see every attempt (each operation is attempted exactly once).
//!
//! Clients enter the cluster through the raft leader's gRPC port (any peer serves any request; the leader is the
//! one a `{role: replica}` fault never hits), and after any error they reconnect, to the leader again or, when
//! it does not answer, to the next peer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use qdrant_client::qdrant::collections_client::CollectionsClient;
use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::points_client::PointsClient;
use qdrant_client::qdrant::{
    CollectionExistsRequest, Condition, CountPointsBuilder, CreateCollectionBuilder, Distance,
    Filter, GetPointsBuilder, PointId, PointStruct, Query, QueryPointsBuilder, ScrollPointsBuilder,
    UpdateStatus, UpsertPointsBuilder, VectorParamsBuilder,
};
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use super::rest::{cluster_view, health};
use super::{point_vector, query_vector, QdrantEndpoints, QdrantPeer, RUN_KEY};
use crate::clock::Clock;
use crate::component::{http_client, READ_BACK_ATTEMPT};
use crate::ledger::{Outcome, ReadBack};
use crate::load::pool::Idle;
use crate::load::{Attempt, BoxFuture, LoadClient, CONNECTION_AT_DEADLINE};

/// Connects a gRPC channel to one peer within `timeout` (the request has not been sent if this fails).
async fn connect(peer: &QdrantPeer, timeout: Duration) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(peer.grpc_uri())
        .map_err(|e| format!("qdrant on {}: {e}", peer.node))?
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("qdrant on {}: cannot connect: {e}", peer.node)),
        Err(_) => Err(format!(
            "qdrant on {}: no gRPC connection within {} ms",
            peer.node,
            timeout.as_millis()
        )),
    }
}

/// Peer indexes to try, in order: the raft leader as the first peer (from `start`) that answers names it, then
/// every other peer from `start` on.
async fn entry_order(ep: &QdrantEndpoints, http: &reqwest::Client, start: usize) -> Vec<usize> {
    let n = ep.peers.len();
    let rotation: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
    let mut leader: Option<usize> = None;
    for &i in &rotation {
        if let Ok(v) = cluster_view(http, &ep.peers[i]).await {
            leader = v
                .leader
                .and_then(|l| v.peers.get(&l))
                .and_then(|uri| ep.node_of_uri(uri))
                .and_then(|node| ep.peers.iter().position(|p| p.node == node));
            break;
        }
    }
    leader
        .into_iter()
        .chain(rotation.into_iter().filter(|i| Some(*i) != leader))
        .collect()
}

/// A write that the server rejected before applying it, or that never left the client, failed; anything else
/// (internal errors, lost connections, timeouts) may have been applied on some replica and is unknown.
pub fn classify_write_status(status: &tonic::Status) -> Outcome {
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::ResourceExhausted => Outcome::Failed,
        // tonic reports a connection that could not be (re)established as Unavailable: nothing was sent.
        Code::Unavailable if status.message().contains("error trying to connect") => {
            Outcome::Failed
        }
        _ => Outcome::Unknown,
    }
}

fn status_text(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

fn run_filter(run_id: &str) -> Filter {
    Filter::must([Condition::matches(RUN_KEY, run_id.to_string())])
}

fn numeric_id(id: &Option<PointId>) -> Option<u64> {
    match id.as_ref()?.point_id_options.as_ref()? {
        PointIdOptions::Num(n) => Some(*n),
        PointIdOptions::Uuid(_) => None,
    }
}

/// The load client: upserts (wait=true, point id = ledger id), point reads of the newest acknowledged id, and
/// searches with seeded query vectors. Each operation takes a gRPC channel of its own from the pool, so a stalled
/// upsert never holds up a search; a channel that saw an error is dropped and the next one enters the cluster one
/// peer further on.
pub struct QdrantLoadClient {
    ep: QdrantEndpoints,
    run_id: String,
    http: reqwest::Client,
    idle: Idle<PointsClient<Channel>>,
    /// Where the next re-resolution starts: moves on after every error.
    rotation: AtomicUsize,
    /// The newest id seen acknowledged (0: none yet).
    last_acked: AtomicU64,
    searches: AtomicU64,
}

impl QdrantLoadClient {
    pub fn new(ep: QdrantEndpoints, run_id: &str) -> Self {
        QdrantLoadClient {
            ep,
            run_id: run_id.to_string(),
            http: http_client(Duration::from_millis(300)),
            idle: Idle::default(),
            rotation: AtomicUsize::new(0),
            last_acked: AtomicU64::new(0),
            searches: AtomicU64::new(0),
        }
    }

    /// An idle channel, or a new one to the first peer that answers before `deadline`.
    async fn checkout(&self, deadline: Instant) -> Result<PointsClient<Channel>, String> {
        let channel = self.channel(deadline).await?;
        if Instant::now() >= deadline {
            self.idle.put(channel);
            return Err(CONNECTION_AT_DEADLINE.into());
        }
        Ok(channel)
    }

    async fn channel(&self, deadline: Instant) -> Result<PointsClient<Channel>, String> {
        if let Some(c) = self.idle.take() {
            return Ok(c);
        }
        if self.ep.peers.is_empty() {
            return Err("no qdrant peer is configured".into());
        }
        let mut last = String::from("not sent: no qdrant peer answered before the deadline");
        let start = self.rotation.load(Ordering::Relaxed);
        let order = match tokio::time::timeout_at(
            deadline.into(),
            entry_order(&self.ep, &self.http, start),
        )
        .await
        {
            Ok(o) => o,
            Err(_) => return Err(last),
        };
        for i in order {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match connect(&self.ep.peers[i], left.min(Duration::from_millis(500))).await {
                Ok(c) => return Ok(PointsClient::new(c)),
                Err(e) => last = e,
            }
        }
        self.move_on();
        Err(last)
    }

    /// After an error: the next channel enters the cluster one peer further on.
    fn move_on(&self) {
        let n = self.ep.peers.len().max(1);
        let _ = self
            .rotation
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| Some((r + 1) % n));
    }

    /// Gives a channel back after success; after an error it is dropped.
    fn check_in(&self, conn: PointsClient<Channel>, outcome: Outcome) {
        if outcome == Outcome::Ok {
            self.idle.put(conn);
        } else {
            self.move_on();
        }
    }

    fn vector_size(&self) -> usize {
        self.ep.collection.vector_size as usize
    }
}

/// A query (read or search): past the deadline it is unknown, any error failed.
fn query_outcome<T>(
    r: Result<Result<T, tonic::Status>, tokio::time::error::Elapsed>,
) -> (Outcome, Option<String>) {
    match r {
        Err(_) => (Outcome::Unknown, Some("client deadline passed".to_string())),
        Ok(Ok(_)) => (Outcome::Ok, None),
        Ok(Err(s)) => (Outcome::Failed, Some(status_text(&s))),
    }
}

impl LoadClient for QdrantLoadClient {
    fn write(&self, id: u64, deadline: Instant) -> BoxFuture<'_, Attempt> {
        Box::pin(async move {
            let mut client = match self.checkout(deadline).await {
                Ok(c) => c,
                Err(e) => return Attempt::failed_unsent(e),
            };
            let point = PointStruct::new(
                id,
                point_vector(self.ep.seed, id, self.vector_size()),
                [(RUN_KEY, self.run_id.clone().into())],
            );
            let request = UpsertPointsBuilder::new(self.ep.collection.name.clone(), vec![point])
                .wait(true)
                .build();
            let sent = Instant::now();
            let r = tokio::time::timeout_at(deadline.into(), client.upsert(request)).await;
            let (outcome, error) = match r {
                Err(_) => (Outcome::Unknown, Some("client deadline passed".to_string())),
                Ok(Ok(resp)) => {
                    let status = resp.into_inner().result.map(|r| r.status);
                    if status == Some(UpdateStatus::Completed as i32) {
                        (Outcome::Ok, None)
                    } else {
                        let name = status
                            .and_then(|s| UpdateStatus::try_from(s).ok())
                            .map_or("none".to_string(), |s| s.as_str_name().to_string());
                        (
                            Outcome::Unknown,
                            Some(format!("upsert answered with status {name}, not Completed")),
                        )
                    }
                }
                Ok(Err(s)) => (classify_write_status(&s), Some(status_text(&s))),
            };
            if outcome == Outcome::Ok {
                self.last_acked.fetch_max(id, Ordering::Relaxed);
            }
            self.check_in(client, outcome);
            Attempt::sent_at(sent, (outcome, error))
        })
    }

    fn read(&self, deadline: Instant) -> BoxFuture<'_, Attempt> {
        Box::pin(async move {
            let mut client = match self.checkout(deadline).await {
                Ok(c) => c,
                Err(e) => return Attempt::failed_unsent(e),
            };
            // The newest id seen acknowledged (or one that does not exist yet): a point read by id.
            let id = self.last_acked.load(Ordering::Relaxed);
            let request =
                GetPointsBuilder::new(self.ep.collection.name.clone(), vec![PointId::from(id)])
                    .with_payload(false)
                    .with_vectors(false)
                    .build();
            let sent = Instant::now();
            let (outcome, error) =
                query_outcome(tokio::time::timeout_at(deadline.into(), client.get(request)).await);
            self.check_in(client, outcome);
            Attempt::sent_at(sent, (outcome, error))
        })
    }

    fn search(&self, deadline: Instant) -> BoxFuture<'_, Attempt> {
        Box::pin(async move {
            let mut client = match self.checkout(deadline).await {
                Ok(c) => c,
                Err(e) => return Attempt::failed_unsent(e),
            };
            let n = self.searches.fetch_add(1, Ordering::Relaxed) + 1;
            let vector = query_vector(self.ep.seed, n, self.vector_size());
            let request = QueryPointsBuilder::new(self.ep.collection.name.clone())
                .query(Query::new_nearest(vector))
                .limit(10)
                .with_payload(false)
                .build();
            let sent = Instant::now();
            let (outcome, error) = query_outcome(
                tokio::time::timeout_at(deadline.into(), client.query(request)).await,
            );
            self.check_in(client, outcome);
            Attempt::sent_at(sent, (outcome, error))
        })
    }

    fn warm_up(&self, connections: usize, deadline: Instant) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let opened =
                futures_util::future::join_all((0..connections).map(|_| self.checkout(deadline)))
                    .await;
            for c in opened.into_iter().flatten() {
                self.idle.put(c);
            }
        })
    }
}

/// The collection's parameters as GET /collections/{c} reports them, compared with what the harness wants.
pub fn collection_mismatch(ep: &QdrantEndpoints, info: &Value) -> Option<String> {
    let params = &info["result"]["config"]["params"];
    let want = &ep.collection;
    let mut diffs = Vec::new();
    let mut check = |what: &str, found: Option<u64>, expected: u64| {
        if let Some(f) = found.filter(|f| *f != expected) {
            diffs.push(format!("{what} {f} (settings: {expected})"));
        }
    };
    check(
        "vector size",
        params["vectors"]["size"].as_u64(),
        want.vector_size,
    );
    check(
        "shard_number",
        params["shard_number"].as_u64(),
        want.shard_number as u64,
    );
    check(
        "replication_factor",
        params["replication_factor"].as_u64(),
        want.replication_factor as u64,
    );
    check(
        "write_consistency_factor",
        params["write_consistency_factor"].as_u64(),
        want.write_consistency_factor as u64,
    );
    if params["vectors"]["distance"]
        .as_str()
        .is_some_and(|d| d != "Cosine")
    {
        diffs.push(format!(
            "distance {} (the harness uses Cosine)",
            params["vectors"]["distance"].as_str().unwrap_or("?")
        ));
    }
    (!diffs.is_empty()).then(|| {
        format!(
            "collection `{}` exists with {}; delete it (DELETE /collections/{}) or change the qdrant_* settings",
            want.name,
            diffs.join(", "),
            want.name
        )
    })
}

enum PrepareError {
    Retry(String),
    Fatal(String),
}

async fn prepare_once(ep: &QdrantEndpoints) -> Result<(), PrepareError> {
    let want = &ep.collection;
    let mut last = String::from("no qdrant peer is configured");
    let mut channel = None;
    for p in &ep.peers {
        match connect(p, Duration::from_millis(800)).await {
            Ok(c) => {
                channel = Some((p, c));
                break;
            }
            Err(e) => last = e,
        }
    }
    let (peer, channel) = channel.ok_or(PrepareError::Retry(last))?;
    let mut collections = CollectionsClient::new(channel);
    let exists = collections
        .collection_exists(CollectionExistsRequest {
            collection_name: want.name.clone(),
        })
        .await
        .map_err(|s| PrepareError::Retry(format!("collection_exists: {}", status_text(&s))))?
        .into_inner()
        .result
        .is_some_and(|r| r.exists);
    if !exists {
        let create = CreateCollectionBuilder::new(want.name.clone())
            .vectors_config(VectorParamsBuilder::new(want.vector_size, Distance::Cosine))
            .shard_number(want.shard_number)
            .replication_factor(want.replication_factor)
            .write_consistency_factor(want.write_consistency_factor)
            .build();
        match collections.create(create).await {
            Ok(_) => {}
            // Created meanwhile by a concurrent prepare: the parameter check below decides.
            Err(s) if s.message().contains("already exists") => {}
            Err(s) => {
                return Err(PrepareError::Retry(format!(
                    "create collection: {}",
                    status_text(&s)
                )))
            }
        }
    }
    let http = http_client(Duration::from_secs(2));
    let info: Value = http
        .get(peer.rest_url(&format!("/collections/{}", want.name)))
        .send()
        .await
        .map_err(|e| PrepareError::Retry(format!("qdrant on {}: {e}", peer.node)))?
        .json()
        .await
        .map_err(|e| {
            PrepareError::Retry(format!("qdrant on {}: bad collection info: {e}", peer.node))
        })?;
    if let Some(m) = collection_mismatch(ep, &info) {
        return Err(PrepareError::Fatal(m));
    }
    // Every replica Active on every peer before the load starts: the baseline measures a whole cluster.
    health(ep).await.map(|_| ()).map_err(PrepareError::Retry)
}

/// Creates the collection when missing (shard_number, replication_factor, write_consistency_factor and vector
/// size from the settings, cosine distance), refuses one with other parameters, and waits until every replica is
/// Active on every peer. Retries until `deadline`.
pub async fn prepare(ep: &QdrantEndpoints, deadline: Duration) -> Result<(), String> {
    let until = Instant::now() + deadline;
    loop {
        match prepare_once(ep).await {
            Ok(()) => return Ok(()),
            Err(PrepareError::Fatal(e)) => return Err(e),
            Err(PrepareError::Retry(e)) if Instant::now() >= until => {
                return Err(format!(
                    "the qdrant collection `{}` is not ready: {e}",
                    ep.collection.name
                ))
            }
            Err(PrepareError::Retry(_)) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// What one peer returned for the run's points: every id the scroll listed (duplicates kept) and the exact count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerPoints {
    pub node: String,
    pub ids: Vec<u64>,
    pub count: u64,
}

/// The read-back across peers: which peers answered and what they returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadBackReport {
    pub answered: Vec<PeerPoints>,
    /// (node, error) of the peers that did not answer.
    pub unanswered: Vec<(String, String)>,
}

impl ReadBackReport {
    /// Points retrievable from every peer that answered: a point one survivor cannot return is not counted
    /// as kept.
    pub fn present(&self) -> BTreeSet<u64> {
        let mut sets = self
            .answered
            .iter()
            .map(|p| p.ids.iter().copied().collect::<BTreeSet<u64>>());
        let Some(first) = sets.next() else {
            return BTreeSet::new();
        };
        sets.fold(first, |acc, s| acc.intersection(&s).copied().collect())
    }

    /// Duplicates in a peer's listing, a count that disagrees with the listing, and points some peers return
    /// and others do not.
    pub fn inconsistencies(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.answered {
            let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
            for id in &p.ids {
                *seen.entry(*id).or_default() += 1;
            }
            let dups: Vec<u64> = seen
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(id, _)| *id)
                .collect();
            if !dups.is_empty() {
                out.push(format!(
                    "qdrant on {} lists {} point ids more than once (e.g. {})",
                    p.node,
                    dups.len(),
                    sample(&dups)
                ));
            }
            if p.count != seen.len() as u64 {
                out.push(format!(
                    "qdrant on {} counts {} points of this run but lists {}",
                    p.node,
                    p.count,
                    seen.len()
                ));
            }
        }
        let common = self.present();
        for p in &self.answered {
            let extra: Vec<u64> = p
                .ids
                .iter()
                .copied()
                .collect::<BTreeSet<u64>>()
                .difference(&common)
                .copied()
                .collect();
            if !extra.is_empty() {
                out.push(format!(
                    "qdrant on {} returns {} points that another peer does not (e.g. {})",
                    p.node,
                    extra.len(),
                    sample(&extra)
                ));
            }
        }
        out
    }
}

fn sample(ids: &[u64]) -> String {
    let shown: Vec<String> = ids.iter().take(5).map(u64::to_string).collect();
    shown.join(", ")
}

async fn peer_points(
    peer: &QdrantPeer,
    collection: &str,
    run_id: &str,
) -> Result<PeerPoints, String> {
    let channel = connect(peer, Duration::from_secs(1)).await?;
    let mut points = PointsClient::new(channel);
    let mut ids = Vec::new();
    let mut offset: Option<PointId> = None;
    loop {
        let mut b = ScrollPointsBuilder::new(collection)
            .filter(run_filter(run_id))
            .limit(1000)
            .with_payload(false)
            .with_vectors(false);
        if let Some(o) = offset.take() {
            b = b.offset(o);
        }
        let page = tokio::time::timeout(Duration::from_secs(10), points.scroll(b.build()))
            .await
            .map_err(|_| format!("qdrant on {}: scroll timed out", peer.node))?
            .map_err(|s| format!("qdrant on {}: scroll: {}", peer.node, status_text(&s)))?
            .into_inner();
        ids.extend(page.result.iter().filter_map(|p| numeric_id(&p.id)));
        match page.next_page_offset {
            Some(o) if !page.result.is_empty() => offset = Some(o),
            _ => break,
        }
    }
    let count = tokio::time::timeout(
        Duration::from_secs(10),
        points.count(
            CountPointsBuilder::new(collection)
                .filter(run_filter(run_id))
                .exact(true)
                .build(),
        ),
    )
    .await
    .map_err(|_| format!("qdrant on {}: count timed out", peer.node))?
    .map_err(|s| format!("qdrant on {}: count: {}", peer.node, status_text(&s)))?
    .into_inner()
    .result
    .map_or(0, |r| r.count);
    Ok(PeerPoints {
        node: peer.node.clone(),
        ids,
        count,
    })
}

/// Lists the run's points from every peer (retrying until every peer answers or `deadline`; then the peers that
/// did answer are used). `present` = points every answering peer returned.
pub async fn read_back_ledger(
    ep: &QdrantEndpoints,
    run_id: &str,
    deadline: Duration,
    clock: Clock,
) -> Result<(ReadBack, ReadBackReport), String> {
    let until = Instant::now() + deadline;
    loop {
        // Every attempt on a peer has its own bound, so a peer that hangs cannot hold the whole deadline.
        let bound = until
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(100), 3 * READ_BACK_ATTEMPT);
        let results = futures_util::future::join_all(ep.peers.iter().map(|p| async move {
            tokio::time::timeout(bound, peer_points(p, &ep.collection.name, run_id))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "qdrant on {}: read-back gave no answer within {} ms",
                        p.node,
                        bound.as_millis()
                    ))
                })
        }))
        .await;
        let mut report = ReadBackReport::default();
        for (p, r) in ep.peers.iter().zip(results) {
            match r {
                Ok(points) => report.answered.push(points),
                Err(e) => report.unanswered.push((p.node.clone(), e)),
            }
        }
        let done = report.unanswered.is_empty() || Instant::now() >= until;
        if done && !report.answered.is_empty() {
            let nodes: Vec<&str> = report.answered.iter().map(|p| p.node.as_str()).collect();
            let read_back = ReadBack {
                present: report.present(),
                from_member: nodes.join("+"),
                at: clock.now(),
            };
            return Ok((read_back, report));
        }
        if done {
            let errors: Vec<String> = report.unanswered.iter().map(|(_, e)| e.clone()).collect();
            return Err(format!("read-back failed: {}", errors.join("; ")));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Proves the cluster accepts a write: one upsert (wait=true) of a probe point, through the first peer that
/// takes it. Returns the peer's node.
pub async fn write_probe(ep: &QdrantEndpoints, deadline: Duration) -> Result<String, String> {
    let until = Instant::now() + deadline;
    loop {
        let mut last = String::from("no qdrant peer is configured");
        for p in &ep.peers {
            let attempt = async {
                let mut points = PointsClient::new(connect(p, Duration::from_secs(1)).await?);
                let point = PointStruct::new(
                    u64::MAX,
                    point_vector(ep.seed, u64::MAX, ep.collection.vector_size as usize),
                    [(RUN_KEY, "faultline-write-probe".to_string().into())],
                );
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    points.upsert(
                        UpsertPointsBuilder::new(ep.collection.name.clone(), vec![point])
                            .wait(true)
                            .build(),
                    ),
                )
                .await
                .map_err(|_| format!("qdrant on {}: upsert timed out", p.node))?
                .map_err(|s| format!("qdrant on {}: upsert: {}", p.node, status_text(&s)))?;
                match r.into_inner().result.map(|r| r.status) {
                    Some(s) if s == UpdateStatus::Completed as i32 => Ok(p.node.clone()),
                    other => Err(format!("qdrant on {}: upsert status {other:?}", p.node)),
                }
            };
            match attempt.await {
                Ok(node) => return Ok(node),
                Err(e) => last = e,
            }
        }
        if Instant::now() >= until {
            return Err(format!("qdrant does not accept writes: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::component::qdrant::fake::{FakeCluster, FakeQdrant, Mode};

    const DEADLINE: Duration = Duration::from_millis(400);

    fn dl() -> Instant {
        Instant::now() + DEADLINE
    }

    #[tokio::test]
    async fn writes_reads_and_searches_go_through_and_read_back_finds_the_acked_points() {
        let c = FakeCluster::start(3).await;
        prepare(&c.ep, Duration::from_secs(5)).await.unwrap();
        let created = c.stores[0].state.lock().unwrap().collections["faultline"].clone();
        assert_eq!(created.shard_number, Some(6));
        assert_eq!(created.replication_factor, Some(2));
        assert_eq!(created.write_consistency_factor, Some(1));
        prepare(&c.ep, Duration::from_secs(5))
            .await
            .expect("an existing collection is fine");

        let client = QdrantLoadClient::new(c.ep.clone(), "run-a");
        for id in 1..=5 {
            let a = client.write(id, dl()).await;
            assert_eq!(a.outcome, Outcome::Ok, "{a:?}");
            assert!(a.sent.is_some());
        }
        assert_eq!(client.last_acked.load(Ordering::SeqCst), 5);
        assert_eq!(client.read(dl()).await.outcome, Outcome::Ok);
        assert_eq!(client.search(dl()).await.outcome, Outcome::Ok);
        // Another run's points (same ids) do not count for this run.
        let other = QdrantLoadClient::new(c.ep.clone(), "run-b");
        assert_eq!(other.write(100, dl()).await.outcome, Outcome::Ok);

        let (rb, report) = read_back_ledger(&c.ep, "run-a", Duration::from_secs(5), Clock::start())
            .await
            .unwrap();
        assert_eq!(rb.present, (1..=5).collect());
        assert_eq!(rb.from_member, "n1+n2+n3");
        assert!(
            report.inconsistencies().is_empty(),
            "{:?}",
            report.inconsistencies()
        );
        assert_eq!(
            write_probe(&c.ep, Duration::from_secs(2)).await.unwrap(),
            "n1"
        );
    }

    #[tokio::test]
    async fn a_failing_server_makes_failed_or_unknown_attempts_by_status() {
        let c = FakeCluster::start(1).await;
        prepare(&c.ep, Duration::from_secs(5)).await.unwrap();
        let client = QdrantLoadClient::new(c.ep.clone(), "run");
        // Rejected before applying: failed.
        c.stores[0].set_mode(Mode::Fail(Code::InvalidArgument, "Wrong input".into()));
        let a = client.write(1, dl()).await;
        assert_eq!(a.outcome, Outcome::Failed, "{a:?}");
        assert!(a.error.unwrap().contains("InvalidArgument"));
        // An internal error after the request arrived may have been applied on some replica: unknown.
        c.stores[0].set_mode(Mode::Fail(Code::Internal, "Service internal error".into()));
        assert_eq!(client.write(2, dl()).await.outcome, Outcome::Unknown);
        // Queries that fail are failed.
        assert_eq!(client.read(dl()).await.outcome, Outcome::Failed);
        assert_eq!(client.search(dl()).await.outcome, Outcome::Failed);
        c.stores[0].set_mode(Mode::Normal);
        assert_eq!(
            client.write(3, dl()).await.outcome,
            Outcome::Ok,
            "recovers after errors"
        );
    }

    /// The defect this guards against (seen with a real Qdrant 1.18.3): upserts stalled ~0.5 s at the server and
    /// searches queued behind them in the harness's one queue, so search p99 read 481 ms while Qdrant answered
    /// each in a few ms.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn searches_are_never_held_up_by_stalled_upserts() {
        use crate::clock::Clock;
        use crate::events::EventLog;
        use crate::ledger::{Ledger, OpKind};
        use crate::scenario::LoadProfile;

        let c = FakeCluster::start(1).await;
        prepare(&c.ep, Duration::from_secs(5)).await.unwrap();
        *c.stores[0].upsert_delay.lock().unwrap() = Duration::from_millis(500);
        let profile = LoadProfile {
            write_rate: 50,
            read_rate: 0,
            search_rate: 200,
            connections: 8,
            deadline: Duration::from_secs(2),
            ..LoadProfile::default()
        };
        let client = std::sync::Arc::new(QdrantLoadClient::new(c.ep.clone(), "run"));
        client.warm_up(8, dl() + Duration::from_secs(2)).await;
        let ledger = Ledger::default();
        let load = crate::load::start(
            &profile,
            client,
            crate::ledger::Source::Component(crate::scenario::ComponentKind::Qdrant),
            ledger.clone(),
            EventLog::new(Clock::start()),
            std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1)),
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        load.stop(Duration::from_secs(3)).await;
        let entries = ledger.entries();
        let mut searches: Vec<Duration> = entries
            .iter()
            .filter(|e| e.op == OpKind::Search)
            .map(|e| e.latency())
            .collect();
        searches.sort();
        assert!(searches.len() >= 250, "{} searches", searches.len());
        let p99 = searches[searches.len() * 99 / 100];
        assert!(
            p99 < Duration::from_millis(50),
            "search p99 {p99:?}: held up by upserts"
        );
        let upserts: Vec<_> = entries.iter().filter(|e| e.op == OpKind::Write).collect();
        assert!(upserts.len() >= 60);
        assert!(upserts
            .iter()
            .all(|e| e.outcome == Outcome::Ok && e.latency() >= Duration::from_millis(500)));
    }

    #[tokio::test]
    async fn a_hanging_server_makes_unknown_attempts_at_the_client_deadline() {
        let c = FakeCluster::start(1).await;
        prepare(&c.ep, Duration::from_secs(5)).await.unwrap();
        let client = QdrantLoadClient::new(c.ep.clone(), "run");
        assert_eq!(client.write(1, dl()).await.outcome, Outcome::Ok);
        c.stores[0].set_mode(Mode::Hang);
        for op in 0..3 {
            let started = Instant::now();
            let a = match op {
                0 => client.write(2, dl()).await,
                1 => client.read(dl()).await,
                _ => client.search(dl()).await,
            };
            let took = started.elapsed();
            assert_eq!(a.outcome, Outcome::Unknown, "op {op}: {a:?}");
            assert_eq!(a.error.as_deref(), Some("client deadline passed"));
            assert!(
                took >= DEADLINE && took < DEADLINE * 3,
                "op {op} took {took:?}"
            );
        }
    }

    #[tokio::test]
    async fn clients_enter_through_the_leader_and_move_on_when_it_is_gone() {
        let mut c = FakeCluster::start(2).await;
        prepare(&c.ep, Duration::from_secs(5)).await.unwrap();
        let client = QdrantLoadClient::new(c.ep.clone(), "run");
        c.set_cluster(1, Some(2), 2);
        c.set_cluster(2, Some(2), 2);
        assert_eq!(entry_order(&c.ep, &client.http, 0).await, vec![1, 0]);
        // The leader (peer 1) no longer takes connections: the first write goes to peer 2, unsent attempts
        // never happen while a peer can take it.
        c.set_cluster(1, Some(1), 3);
        c.set_cluster(2, Some(1), 3);
        c.stop_grpc(1);
        let before = c.stores[0].calls.load(Ordering::SeqCst);
        let a = client.write(1, dl()).await;
        assert_eq!(a.outcome, Outcome::Ok, "{a:?}");
        assert!(c.stores[0].calls.load(Ordering::SeqCst) > before);
    }

    #[tokio::test]
    async fn no_reachable_peer_is_a_failed_unsent_attempt() {
        let mut c = FakeCluster::start(1).await;
        c.stop_grpc(1);
        c.clear_routes(1);
        let client = QdrantLoadClient::new(c.ep.clone(), "run");
        let a = client.write(1, dl()).await;
        assert_eq!(a.outcome, Outcome::Failed);
        assert!(a.sent.is_none(), "nothing left the client");
        let e = prepare(&c.ep, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(e.contains("is not ready"), "{e}");
    }

    #[tokio::test]
    async fn prepare_refuses_a_collection_with_other_parameters_and_waits_for_active_replicas() {
        let c = FakeCluster::start(2).await;
        let mut ep = c.ep.clone();
        ep.collection.vector_size = 32;
        let e = prepare(&ep, Duration::from_secs(5)).await.unwrap_err();
        assert!(
            e.contains("exists with vector size 8 (settings: 32)"),
            "{e}"
        );
        c.set_collection(2, &[(1, "Partial")]);
        let e = prepare(&c.ep, Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(e.contains("sees shard") && e.contains("Partial"), "{e}");
        c.set_collection(2, &[]);
        prepare(&c.ep, Duration::from_secs(2)).await.unwrap();
    }

    #[tokio::test]
    async fn read_back_keeps_only_points_every_peer_returns_and_reports_inconsistencies() {
        let (a, b) = (FakeQdrant::new(), FakeQdrant::new());
        for (store, ids) in [(&a, 1..=4u64), (&b, 2..=5u64)] {
            let mut st = store.state.lock().unwrap();
            for id in ids {
                st.points.insert(id, "run".into());
            }
        }
        a.state.lock().unwrap().duplicated = vec![3];
        b.state.lock().unwrap().count_skew = 1;
        let c = FakeCluster::with_stores(vec![a, b]).await;
        let (rb, report) = read_back_ledger(&c.ep, "run", Duration::from_secs(5), Clock::start())
            .await
            .unwrap();
        assert_eq!(rb.present, [2, 3, 4].into_iter().collect());
        let found = report.inconsistencies().join("\n");
        for want in [
            "qdrant on n1 lists 1 point ids more than once (e.g. 3)",
            "qdrant on n2 counts 5 points of this run but lists 4",
            "qdrant on n1 returns 1 points that another peer does not (e.g. 1)",
            "qdrant on n2 returns 1 points that another peer does not (e.g. 5)",
        ] {
            assert!(found.contains(want), "missing {want:?} in:\n{found}");
        }
    }

    #[test]
    fn write_errors_are_classified_by_what_the_server_can_have_done() {
        use tonic::Status;
        assert_eq!(
            classify_write_status(&Status::invalid_argument("x")),
            Outcome::Failed
        );
        assert_eq!(
            classify_write_status(&Status::not_found("no collection")),
            Outcome::Failed
        );
        assert_eq!(
            classify_write_status(&Status::internal("x")),
            Outcome::Unknown
        );
        assert_eq!(
            classify_write_status(&Status::deadline_exceeded("x")),
            Outcome::Unknown
        );
        assert_eq!(
            classify_write_status(&Status::unavailable("connection reset")),
            Outcome::Unknown
        );
        assert_eq!(
            classify_write_status(&Status::unavailable(
                "error trying to connect: tcp connect error"
            )),
            Outcome::Failed
        );
    }
}
