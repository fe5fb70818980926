//! In-process fakes for the unit tests: a gRPC server built on qdrant-client's generated `Points` and
//! `Collections` server traits (points kept in memory; it can be told to fail every call with a status or to
//! hang), and a tiny HTTP server answering canned JSON per path for the REST views. Both listen on 127.0.0.1.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ::qdrant_client::qdrant::collections_server::{Collections, CollectionsServer};
use ::qdrant_client::qdrant::condition::ConditionOneOf;
use ::qdrant_client::qdrant::points_server::{Points, PointsServer};
use ::qdrant_client::qdrant::r#match::MatchValue;
use ::qdrant_client::qdrant::value::Kind;
use ::qdrant_client::qdrant::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Request, Response, Status};

/// How the fake answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    Normal,
    /// Every call fails with this code and message.
    Fail(tonic::Code, String),
    /// Every call waits forever (a black-holed or paused server).
    Hang,
}

#[derive(Default)]
pub struct FakeState {
    /// id -> run (the payload's run key).
    pub points: BTreeMap<u64, String>,
    pub collections: BTreeMap<String, CreateCollection>,
    /// Ids the scroll lists twice (to test duplicate detection).
    pub duplicated: Vec<u64>,
    /// Added to the exact count (to test count consistency).
    pub count_skew: i64,
}

pub struct FakeQdrant {
    pub state: Mutex<FakeState>,
    pub mode: Mutex<Mode>,
    pub calls: AtomicUsize,
    /// Every upsert takes this long before it answers (as upserts touching a dead peer's replicas stall on a
    /// real cluster), while queries answer at once.
    pub upsert_delay: Mutex<std::time::Duration>,
}

impl FakeQdrant {
    pub fn new() -> Arc<Self> {
        Arc::new(FakeQdrant {
            state: Mutex::new(FakeState::default()),
            mode: Mutex::new(Mode::Normal),
            calls: AtomicUsize::new(0),
            upsert_delay: Mutex::new(std::time::Duration::ZERO),
        })
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    async fn gate(&self) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mode = self.mode.lock().unwrap().clone();
        match mode {
            Mode::Normal => Ok(()),
            Mode::Fail(code, msg) => Err(Status::new(code, msg)),
            Mode::Hang => std::future::pending().await,
        }
    }
}

fn run_of_filter(f: &Option<Filter>) -> Option<String> {
    f.as_ref()?
        .must
        .iter()
        .find_map(|c| match c.condition_one_of.as_ref()? {
            ConditionOneOf::Field(fc) => match fc.r#match.as_ref()?.match_value.as_ref()? {
                MatchValue::Keyword(k) => Some(k.clone()),
                _ => None,
            },
            _ => None,
        })
}

fn num(id: u64) -> PointId {
    PointId::from(id)
}

fn retrieved(id: u64) -> RetrievedPoint {
    RetrievedPoint {
        id: Some(num(id)),
        ..Default::default()
    }
}

#[derive(Clone)]
pub struct FakeService(pub Arc<FakeQdrant>);

/// Methods the harness never calls, answering Unimplemented. Spelled as `#[async_trait]` expands an `async fn`
/// (the attribute runs before this macro, so it cannot rewrite what the macro produces).
macro_rules! unimplemented_calls {
    ($($name:ident($req:ty) -> $resp:ty;)*) => {
        $(
            fn $name<'life0, 'async_trait>(
                &'life0 self,
                _r: Request<$req>,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<Response<$resp>, Status>> + Send + 'async_trait>,
            >
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move { Err(Status::unimplemented(stringify!($name))) })
            }
        )*
    };
}

#[tonic::async_trait]
impl Points for FakeService {
    async fn upsert(
        &self,
        r: Request<UpsertPoints>,
    ) -> Result<Response<PointsOperationResponse>, Status> {
        self.0.gate().await?;
        let delay = *self.0.upsert_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        let r = r.into_inner();
        if !self
            .0
            .state
            .lock()
            .unwrap()
            .collections
            .contains_key(&r.collection_name)
        {
            return Err(Status::not_found(format!(
                "Collection `{}` doesn't exist!",
                r.collection_name
            )));
        }
        let mut st = self.0.state.lock().unwrap();
        for p in r.points {
            let id = match p.id.and_then(|i| i.point_id_options) {
                Some(point_id::PointIdOptions::Num(n)) => n,
                _ => return Err(Status::invalid_argument("numeric ids only")),
            };
            let run = match p.payload.get(super::RUN_KEY).and_then(|v| v.kind.clone()) {
                Some(Kind::StringValue(s)) => s,
                _ => String::new(),
            };
            st.points.insert(id, run);
        }
        Ok(Response::new(PointsOperationResponse {
            result: Some(UpdateResult {
                operation_id: Some(1),
                status: if r.wait == Some(true) {
                    UpdateStatus::Completed as i32
                } else {
                    UpdateStatus::Acknowledged as i32
                },
            }),
            ..Default::default()
        }))
    }

    async fn get(&self, r: Request<GetPoints>) -> Result<Response<GetResponse>, Status> {
        self.0.gate().await?;
        let st = self.0.state.lock().unwrap();
        let result = r
            .into_inner()
            .ids
            .iter()
            .filter_map(|i| match i.point_id_options {
                Some(point_id::PointIdOptions::Num(n)) if st.points.contains_key(&n) => {
                    Some(retrieved(n))
                }
                _ => None,
            })
            .collect();
        Ok(Response::new(GetResponse {
            result,
            ..Default::default()
        }))
    }

    async fn query(&self, _r: Request<QueryPoints>) -> Result<Response<QueryResponse>, Status> {
        self.0.gate().await?;
        Ok(Response::new(QueryResponse::default()))
    }

    async fn scroll(&self, r: Request<ScrollPoints>) -> Result<Response<ScrollResponse>, Status> {
        self.0.gate().await?;
        let r = r.into_inner();
        let run = run_of_filter(&r.filter);
        let st = self.0.state.lock().unwrap();
        let from = match r.offset.and_then(|o| o.point_id_options) {
            Some(point_id::PointIdOptions::Num(n)) => n,
            _ => 0,
        };
        let limit = r.limit.unwrap_or(10) as usize;
        let mut ids: Vec<u64> = st
            .points
            .iter()
            .filter(|(id, rr)| **id >= from && run.as_ref().is_none_or(|run| run == *rr))
            .map(|(id, _)| *id)
            .take(limit + 1)
            .collect();
        let next = (ids.len() > limit).then(|| num(ids.pop().expect("len > limit")));
        let mut result: Vec<RetrievedPoint> = ids.iter().map(|i| retrieved(*i)).collect();
        for d in &st.duplicated {
            if ids.contains(d) {
                result.push(retrieved(*d));
            }
        }
        Ok(Response::new(ScrollResponse {
            next_page_offset: next,
            result,
            ..Default::default()
        }))
    }

    async fn count(&self, r: Request<CountPoints>) -> Result<Response<CountResponse>, Status> {
        self.0.gate().await?;
        let run = run_of_filter(&r.into_inner().filter);
        let st = self.0.state.lock().unwrap();
        let n = st
            .points
            .values()
            .filter(|rr| run.as_ref().is_none_or(|run| run == *rr))
            .count() as i64
            + st.count_skew;
        Ok(Response::new(CountResponse {
            result: Some(CountResult {
                count: n.max(0) as u64,
            }),
            ..Default::default()
        }))
    }

    unimplemented_calls! {
        delete(DeletePoints) -> PointsOperationResponse;
        update_vectors(UpdatePointVectors) -> PointsOperationResponse;
        delete_vectors(DeletePointVectors) -> PointsOperationResponse;
        set_payload(SetPayloadPoints) -> PointsOperationResponse;
        overwrite_payload(SetPayloadPoints) -> PointsOperationResponse;
        delete_payload(DeletePayloadPoints) -> PointsOperationResponse;
        clear_payload(ClearPayloadPoints) -> PointsOperationResponse;
        create_field_index(CreateFieldIndexCollection) -> PointsOperationResponse;
        delete_field_index(DeleteFieldIndexCollection) -> PointsOperationResponse;
        create_vector_name(CreateVectorNameRequest) -> PointsOperationResponse;
        delete_vector_name(DeleteVectorNameRequest) -> PointsOperationResponse;
        search(SearchPoints) -> SearchResponse;
        search_batch(SearchBatchPoints) -> SearchBatchResponse;
        search_groups(SearchPointGroups) -> SearchGroupsResponse;
        recommend(RecommendPoints) -> RecommendResponse;
        recommend_batch(RecommendBatchPoints) -> RecommendBatchResponse;
        recommend_groups(RecommendPointGroups) -> RecommendGroupsResponse;
        discover(DiscoverPoints) -> DiscoverResponse;
        discover_batch(DiscoverBatchPoints) -> DiscoverBatchResponse;
        update_batch(UpdateBatchPoints) -> UpdateBatchResponse;
        query_batch(QueryBatchPoints) -> QueryBatchResponse;
        query_groups(QueryPointGroups) -> QueryGroupsResponse;
        facet(FacetCounts) -> FacetResponse;
        search_matrix_pairs(SearchMatrixPoints) -> SearchMatrixPairsResponse;
        search_matrix_offsets(SearchMatrixPoints) -> SearchMatrixOffsetsResponse;
    }
}

#[tonic::async_trait]
impl Collections for FakeService {
    async fn collection_exists(
        &self,
        r: Request<CollectionExistsRequest>,
    ) -> Result<Response<CollectionExistsResponse>, Status> {
        self.0.gate().await?;
        let exists = self
            .0
            .state
            .lock()
            .unwrap()
            .collections
            .contains_key(&r.into_inner().collection_name);
        Ok(Response::new(CollectionExistsResponse {
            result: Some(CollectionExists { exists }),
            time: 0.0,
        }))
    }

    async fn create(
        &self,
        r: Request<CreateCollection>,
    ) -> Result<Response<CollectionOperationResponse>, Status> {
        self.0.gate().await?;
        let c = r.into_inner();
        let mut st = self.0.state.lock().unwrap();
        if st.collections.contains_key(&c.collection_name) {
            return Err(Status::invalid_argument(format!(
                "Wrong input: Collection `{}` already exists!",
                c.collection_name
            )));
        }
        st.collections.insert(c.collection_name.clone(), c);
        Ok(Response::new(CollectionOperationResponse {
            result: true,
            time: 0.0,
        }))
    }

    unimplemented_calls! {
        get(GetCollectionInfoRequest) -> GetCollectionInfoResponse;
        list(ListCollectionsRequest) -> ListCollectionsResponse;
        update(UpdateCollection) -> CollectionOperationResponse;
        delete(DeleteCollection) -> CollectionOperationResponse;
        update_aliases(ChangeAliases) -> CollectionOperationResponse;
        list_collection_aliases(ListCollectionAliasesRequest) -> ListAliasesResponse;
        list_aliases(ListAliasesRequest) -> ListAliasesResponse;
        collection_cluster_info(CollectionClusterInfoRequest) -> CollectionClusterInfoResponse;
        update_collection_cluster_setup(UpdateCollectionClusterSetupRequest) -> UpdateCollectionClusterSetupResponse;
        create_shard_key(CreateShardKeyRequest) -> CreateShardKeyResponse;
        delete_shard_key(DeleteShardKeyRequest) -> DeleteShardKeyResponse;
        list_shard_keys(ListShardKeysRequest) -> ListShardKeysResponse;
    }
}

/// Serves the fake's gRPC on 127.0.0.1 (an ephemeral port); the task ends when aborted.
pub async fn serve_grpc(fake: Arc<FakeQdrant>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
        .expect("bind 127.0.0.1");
    let addr = incoming.local_addr().expect("bound address");
    let svc = FakeService(fake);
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(PointsServer::new(svc.clone()))
            .add_service(CollectionsServer::new(svc))
            .serve_with_incoming(incoming)
            .await;
    });
    (addr, task)
}

/// What the fake HTTP server answers per path: (status, body); `None` = never answer (a hung peer).
pub type Routes = Arc<Mutex<BTreeMap<String, Option<(u16, String)>>>>;

/// A minimal HTTP/1.1 server on 127.0.0.1: one request per connection, canned JSON by exact path, 404 otherwise.
pub async fn serve_http(routes: Routes) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("bound address");
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let routes = routes.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let answer = routes.lock().unwrap().get(&path).cloned();
                let (status, body) = match answer {
                    Some(Some(a)) => a,
                    Some(None) => {
                        std::future::pending::<()>().await;
                        return;
                    }
                    None => (404, r#"{"status":{"error":"Not found"}}"#.to_string()),
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (addr, task)
}

/// A fake cluster of `n` peers on 127.0.0.1: each has a gRPC server (all sharing one point store unless built
/// otherwise) and a REST server answering /cluster (peer ids 1..=n, leader `leader`),
/// /collections/{c}/cluster (every replica Active) and /collections/{c} (the parameters of `ep.collection`).
pub struct FakeCluster {
    pub stores: Vec<Arc<FakeQdrant>>,
    pub routes: Vec<Routes>,
    pub ep: super::QdrantEndpoints,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The identity port a fake peer lists as its p2p URI (nothing listens there).
fn fake_p2p_port(i: usize) -> u16 {
    40000 + i as u16
}

pub fn fake_cluster_json(
    n: usize,
    me: usize,
    leader: Option<usize>,
    term: u64,
) -> serde_json::Value {
    let peers: serde_json::Map<String, serde_json::Value> = (1..=n)
        .map(|i| {
            (
                i.to_string(),
                serde_json::json!({"uri": format!("http://127.0.0.1:{}/", fake_p2p_port(i))}),
            )
        })
        .collect();
    serde_json::json!({"result": {"status": "enabled", "peer_id": me, "peers": peers,
        "raft_info": {"term": term, "commit": 1, "pending_operations": 0, "leader": leader,
                      "role": if leader == Some(me) {"Leader"} else {"Follower"}, "is_voter": true},
        "message_send_failures": {}}, "status": "ok"})
}

/// Shard s on peers s % n + 1 and (s + 1) % n + 1; `states` overrides the state of replicas on a peer.
pub fn fake_collection_json(
    n: usize,
    me: usize,
    shards: u32,
    states: &[(usize, &str)],
) -> serde_json::Value {
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for s in 0..shards as usize {
        for holder in [s % n + 1, (s + 1) % n + 1] {
            let st = states
                .iter()
                .find(|(p, _)| *p == holder)
                .map_or("Active", |(_, st)| st);
            if holder == me {
                local.push(serde_json::json!({"shard_id": s, "points_count": 1, "state": st}));
            } else {
                remote.push(serde_json::json!({"shard_id": s, "peer_id": holder, "state": st}));
            }
        }
    }
    serde_json::json!({"result": {"peer_id": me, "shard_count": shards, "local_shards": local,
        "remote_shards": remote, "shard_transfers": []}, "status": "ok"})
}

impl FakeCluster {
    /// `n` peers sharing one store; leader peer 1.
    pub async fn start(n: usize) -> FakeCluster {
        let store = FakeQdrant::new();
        FakeCluster::with_stores(vec![store; n]).await
    }

    /// One peer per store (stores may be shared or not).
    pub async fn with_stores(stores: Vec<Arc<FakeQdrant>>) -> FakeCluster {
        let n = stores.len();
        let mut peers = Vec::new();
        let mut routes = Vec::new();
        let mut tasks = Vec::new();
        for (i, store) in stores.iter().enumerate() {
            let (grpc, t1) = serve_grpc(store.clone()).await;
            let r: Routes = Arc::default();
            let (rest, t2) = serve_http(r.clone()).await;
            tasks.extend([t1, t2]);
            routes.push(r);
            peers.push(super::QdrantPeer {
                node: format!("n{}", i + 1),
                addr: std::net::Ipv4Addr::LOCALHOST,
                rest_port: rest.port(),
                grpc_port: grpc.port(),
                p2p_port: fake_p2p_port(i + 1),
                announced: vec!["127.0.0.1".into()],
            });
        }
        let mut ep = super::test_endpoints(peers);
        ep.collection.replication_factor = 2.min(n as u32);
        let cluster = FakeCluster {
            stores,
            routes,
            ep,
            tasks,
        };
        for i in 1..=n {
            cluster.set_cluster(i, Some(1), 1);
            cluster.set_collection(i, &[]);
            let c = &cluster.ep.collection;
            cluster.route(
                i,
                &format!("/collections/{}", c.name),
                Some((
                    200,
                    serde_json::json!({"result": {"status": "green", "config": {"params": {
                        "vectors": {"size": c.vector_size, "distance": "Cosine"},
                        "shard_number": c.shard_number, "replication_factor": c.replication_factor,
                        "write_consistency_factor": c.write_consistency_factor}}}, "status": "ok"})
                    .to_string(),
                )),
            );
        }
        cluster
    }

    /// Peer `i` (1-based) answers `path` so (None: never answers).
    pub fn route(&self, i: usize, path: &str, answer: Option<(u16, String)>) {
        self.routes[i - 1]
            .lock()
            .unwrap()
            .insert(path.to_string(), answer);
    }

    pub fn set_cluster(&self, i: usize, leader: Option<usize>, term: u64) {
        let n = self.routes.len();
        self.route(
            i,
            "/cluster",
            Some((200, fake_cluster_json(n, i, leader, term).to_string())),
        );
    }

    pub fn set_collection(&self, i: usize, states: &[(usize, &str)]) {
        let n = self.routes.len();
        let path = format!("/collections/{}/cluster", self.ep.collection.name);
        let shards = self.ep.collection.shard_number;
        self.route(
            i,
            &path,
            Some((200, fake_collection_json(n, i, shards, states).to_string())),
        );
    }

    /// Peer `i`'s REST answers nothing at all (404 everywhere).
    pub fn clear_routes(&self, i: usize) {
        self.routes[i - 1].lock().unwrap().clear();
    }

    /// Stops peer `i`'s gRPC server (connections are refused from then on).
    pub fn stop_grpc(&mut self, i: usize) {
        self.tasks[2 * (i - 1)].abort();
    }
}
