//! The Kubernetes target against an in-process fake API server (tower-test) and the Docker-side node faults
//! against a fake Docker Engine on a unix socket: every request's method, path and body is asserted.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline::clock::Clock;
use faultline::events::{EventKind, EventLog};
use faultline::fault::journal::Journal;
use faultline::fault::RevertStep;
use faultline::scenario::{
    ComponentKind, FaultKind, FaultSpec, NodeLossMethod, NodeSelector, PartitionDirection, Role,
};
use faultline::targets::kube::dcs::{ApiServer, DcsCut, Side};
use faultline::targets::kube::{
    chaos_mesh, deploy, partition, Cluster, DockerApi, KubeTarget, KubeTiming, NodePorts,
    PartitionBackend, StackSelectors,
};
use faultline::targets::Target;
use http::{Request, Response};
use kube::client::Body;
use serde_json::{json, Value};

const NS: &str = "faultline";

/// One scripted exchange: the request expected next and the fake's answer. A `repeat` exchange answers every
/// request that matches it until one that does not arrives. A `hold` exchange is never answered while the client
/// lives, as a watch with nothing more to report stays open.
struct Exchange {
    method: &'static str,
    path: String,
    status: u16,
    reply: Value,
    repeat: bool,
    hold: bool,
    /// Answer 409 Conflict with this message unless the request's query holds `force=true` (a server-side apply
    /// over fields another manager owns).
    conflict_unless_forced: Option<&'static str>,
}

fn ex(method: &'static str, path: &str, status: u16, reply: Value) -> Exchange {
    Exchange {
        method,
        path: path.to_string(),
        status,
        reply,
        repeat: false,
        hold: false,
        conflict_unless_forced: None,
    }
}

/// How requests are matched against the script.
#[derive(Clone, Copy, PartialEq)]
enum Order {
    /// Every request is the next exchange of the script.
    Strict,
    /// Requests to different paths may interleave (concurrent watches); those to one path follow the script.
    PerPath,
}

/// What the fake received: method, path with query, content type, JSON body (Null when empty).
#[derive(Debug)]
struct Seen {
    method: String,
    uri: String,
    content_type: Option<String>,
    body: Value,
}

/// A kube Client whose every request is answered by the script, in order; the returned handle yields what was
/// received once the client (and every clone) is dropped.
fn fake(script: Vec<Exchange>) -> (kube::Client, tokio::task::JoinHandle<Vec<Seen>>) {
    fake_with(script, Order::Strict)
}

fn fake_with(
    script: Vec<Exchange>,
    order: Order,
) -> (kube::Client, tokio::task::JoinHandle<Vec<Seen>>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut i = 0;
        let mut used = vec![false; script.len()];
        let mut held = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().to_string();
            let uri = req.uri().to_string();
            let path = req.uri().path().to_string();
            let content_type = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            let matches = |e: &Exchange| {
                e.method == method
                    && match e.path.strip_suffix('*') {
                        Some(prefix) => path.starts_with(prefix),
                        None => e.path == path,
                    }
            };
            let index = match order {
                Order::Strict => {
                    while i < script.len() && script[i].repeat && !matches(&script[i]) {
                        i += 1;
                    }
                    let step = script.get(i).unwrap_or_else(|| {
                        panic!("unexpected request {method} {uri} past the script")
                    });
                    assert!(
                        matches(step),
                        "request #{} was {method} {uri}, expected {} {}",
                        seen.len(),
                        step.method,
                        step.path
                    );
                    i
                }
                Order::PerPath => (0..script.len())
                    .find(|&j| !used[j] && matches(&script[j]))
                    .unwrap_or_else(|| {
                        panic!("unexpected request {method} {uri}: no exchange left for it")
                    }),
            };
            let step = &script[index];
            let conflict = step
                .conflict_unless_forced
                .filter(|_| !uri.contains("force=true"))
                .map(|m| status(409, "Conflict", m));
            let (code, reply) = match &conflict {
                Some(c) => (409, c),
                None => (step.status, &step.reply),
            };
            // A string reply is sent as plain text (pod logs); everything else as JSON.
            let (content, bytes) = match reply {
                Value::String(text) => ("text/plain", text.clone().into_bytes()),
                v => ("application/json", serde_json::to_vec(v).unwrap()),
            };
            let response = Response::builder()
                .status(code)
                .header("content-type", content)
                .body(Body::from(bytes))
                .unwrap();
            if step.hold {
                held.push(send);
            } else {
                send.send_response(response);
            }
            if !step.repeat {
                used[index] = true;
                i = index + 1;
            }
            seen.push(Seen {
                method,
                uri,
                content_type,
                body,
            });
        }
        let left: Vec<String> = script
            .iter()
            .zip(&used)
            .filter(|(e, used)| !e.repeat && !**used)
            .map(|(e, _)| format!("{} {}", e.method, e.path))
            .collect();
        assert!(left.is_empty(), "requests never made: {left:?}");
        seen
    });
    (kube::Client::new(svc, "default"), server)
}

fn node(name: &str, zone: &str, region: &str, ip: &str, control_plane: bool) -> Value {
    let mut labels = json!({
        "topology.kubernetes.io/zone": zone,
        "topology.kubernetes.io/region": region,
        "kubernetes.io/hostname": name,
    });
    if control_plane {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
    }
    json!({
        "metadata": {"name": name, "labels": labels},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]}
    })
}

fn pod(name: &str, app: &str, node: &str, role: Option<&str>, ready: bool) -> Value {
    let mut labels = json!({"app.kubernetes.io/name": app});
    if let Some(r) = role {
        labels["role"] = json!(r);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c"}]},
        "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    })
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items})
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Status", "metadata": {},
        "status": if code < 300 { "Success" } else { "Failure" },
        "code": code, "reason": reason, "message": message
    })
}

fn nodes() -> Value {
    list(
        "NodeList",
        vec![
            node("faultline-control-plane", "a1", "a", "172.18.0.2", true),
            node("faultline-worker", "a1", "a", "172.18.0.3", false),
            node("faultline-worker2", "a2", "a", "172.18.0.4", false),
            node("faultline-worker3", "b1", "b", "172.18.0.5", false),
        ],
    )
}

fn stack_pods(pg_roles: [Option<&str>; 3]) -> Vec<Value> {
    vec![
        pod(
            "postgres-0",
            "postgres",
            "faultline-worker",
            pg_roles[0],
            true,
        ),
        pod(
            "postgres-1",
            "postgres",
            "faultline-worker2",
            pg_roles[1],
            true,
        ),
        pod(
            "postgres-2",
            "postgres",
            "faultline-worker3",
            pg_roles[2],
            true,
        ),
        pod("redis-0", "redis", "faultline-worker", None, true),
        pod("redis-1", "redis", "faultline-worker2", None, true),
        pod(
            "sentinel-0",
            "redis-sentinel",
            "faultline-worker3",
            None,
            true,
        ),
    ]
}

/// The two requests `KubeTarget::connect` makes.
fn connect_script(pods: Vec<Value>) -> Vec<Exchange> {
    vec![
        ex("GET", "/api/v1/nodes", 200, nodes()),
        ex(
            "GET",
            &format!("/api/v1/namespaces/{NS}/pods"),
            200,
            list("PodList", pods),
        ),
    ]
}

fn pg_pods_path() -> String {
    format!("/api/v1/namespaces/{NS}/pods")
}

fn leader_endpoints(leader: Option<&str>) -> Exchange {
    let path = format!("/api/v1/namespaces/{NS}/endpoints/postgres");
    match leader {
        Some(l) => ex(
            "GET",
            &path,
            200,
            json!({"apiVersion": "v1", "kind": "Endpoints",
                   "metadata": {"name": "postgres", "annotations": {"leader": l, "ttl": "20"}}}),
        ),
        None => ex(
            "GET",
            &path,
            404,
            status(404, "NotFound", "endpoints \"postgres\" not found"),
        ),
    }
}

/// Where the API server listens, as the `kubernetes` Service in `default` and its Endpoints say on kind: the
/// ClusterIP pods dial, and the control plane's address with port 6443.
fn api_server_reads() -> Vec<Exchange> {
    vec![
        ex(
            "GET",
            "/api/v1/namespaces/default/services/kubernetes",
            200,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes"},
                   "spec": {"clusterIP": "10.96.0.1",
                            "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}}),
        ),
        ex(
            "GET",
            "/api/v1/namespaces/default/endpoints/kubernetes",
            200,
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "kubernetes"},
                   "subsets": [{"addresses": [{"ip": "172.18.0.2"}],
                                "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]}),
        ),
    ]
}

/// The reads that tell which side of a partition holds Patroni's leader: the PostgreSQL pods, the leader
/// Endpoints and, when a side holds `leader` (`cut`), where the API server listens.
fn dcs_reads(leader: &str, cut: bool) -> Vec<Exchange> {
    let mut script = vec![
        ex(
            "GET",
            &pg_pods_path(),
            200,
            list("PodList", stack_pods([None, None, None])[..3].to_vec()),
        ),
        leader_endpoints(Some(leader)),
    ];
    if cut {
        script.extend(api_server_reads());
    }
    script
}

/// Side A (worker3's pods, Patroni's leader postgres-2 among them) cut from the API server of `api_server_reads`.
fn worker3_dcs_cut() -> DcsCut {
    DcsCut {
        side: Side::A,
        leader_pod: "postgres-2".into(),
        api: ApiServer {
            service: Some("10.96.0.1:443".parse().unwrap()),
            endpoints: vec!["172.18.0.2:6443".parse().unwrap()],
            note: None,
        },
    }
}

fn timing() -> KubeTiming {
    KubeTiming {
        eviction_deadline: Duration::from_secs(5),
        eviction_retry: Duration::from_millis(10),
        pod_ready_deadline: Duration::from_secs(5),
        chaos_injected_deadline: Duration::from_secs(5),
        chaos_removed_deadline: Duration::from_secs(5),
        poll: Duration::from_millis(10),
    }
}

async fn target(client: kube::Client, cluster: Cluster, timing: KubeTiming) -> KubeTarget {
    KubeTarget::connect(client, NS, cluster, StackSelectors::default(), timing)
        .await
        .unwrap()
}

fn kind() -> Cluster {
    Cluster::Kind {
        docker: DockerApi::default(),
    }
}

fn journal(dir: &Path) -> Journal {
    Journal::new(dir.join("journal"))
}

#[tokio::test]
async fn topology_comes_from_worker_nodes_and_their_zone_labels() {
    let (client, server) = fake(connect_script(stack_pods([Some("primary"), None, None])));
    let t = target(client, kind(), timing()).await;
    let topo = t.topology().clone();
    drop(t);
    let seen = server.await.unwrap();
    assert_eq!(seen.len(), 2);
    let names: Vec<&str> = topo.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        ["faultline-worker", "faultline-worker2", "faultline-worker3"]
    );
    assert_eq!(topo.zones(), ["a1", "a2", "b1"]);
    assert_eq!(topo.node("faultline-worker3").unwrap().region, "b");
    assert_eq!(
        topo.node("faultline-worker").unwrap().addr,
        Ipv4Addr::new(172, 18, 0, 3)
    );
    assert_eq!(topo.members(ComponentKind::Postgres).len(), 3);
    assert_eq!(
        topo.members(ComponentKind::Redis),
        ["faultline-worker", "faultline-worker2"]
    );
    assert_eq!(topo.placement.sentinel, ["faultline-worker3"]);
}

#[tokio::test]
async fn patroni_leader_is_the_endpoints_annotation_and_labels_only_without_one() {
    for label in ["master", "primary"] {
        let mut script = connect_script(stack_pods([None, Some(label), None]));
        script.push(ex(
            "GET",
            &pg_pods_path(),
            200,
            list(
                "PodList",
                stack_pods([None, Some(label), None])[..3].to_vec(),
            ),
        ));
        // No leader annotation: the one labelled pod (either label value) is the leader.
        script.push(leader_endpoints(None));
        let (client, server) = fake(script);
        let t = target(client, kind(), timing()).await;
        let node = t
            .role_node(ComponentKind::Postgres, Role::Primary)
            .await
            .unwrap();
        assert_eq!(node, "faultline-worker2", "label role={label}");
        drop(t);
        let seen = server.await.unwrap();
        assert!(
            seen[2]
                .uri
                .contains("labelSelector=app.kubernetes.io%2Fname%3Dpostgres"),
            "{}",
            seen[2].uri
        );
    }

    // A dead leader's pod keeps its label (Patroni patches only its own pod): after a failover two pods carry
    // role=primary. The leader annotation, the DCS record, names the new leader and decides.
    let mut script = connect_script(stack_pods([Some("primary"), None, Some("primary")]));
    script.push(ex(
        "GET",
        &pg_pods_path(),
        200,
        list(
            "PodList",
            stack_pods([Some("primary"), None, Some("primary")])[..3].to_vec(),
        ),
    ));
    script.push(leader_endpoints(Some("postgres-2")));
    let (client, server) = fake(script);
    let t = target(client, kind(), timing()).await;
    let node = t
        .role_node(ComponentKind::Postgres, Role::Primary)
        .await
        .unwrap();
    assert_eq!(
        node, "faultline-worker3",
        "the annotation, not the stale label"
    );
    drop(t);
    server.await.unwrap();

    // No annotation and two labelled pods: no answer, naming both.
    let mut script = connect_script(stack_pods([Some("primary"), None, Some("master")]));
    script.push(ex(
        "GET",
        &pg_pods_path(),
        200,
        list(
            "PodList",
            stack_pods([Some("primary"), None, Some("master")])[..3].to_vec(),
        ),
    ));
    script.push(leader_endpoints(None));
    let (client, server) = fake(script);
    let t = target(client, kind(), timing()).await;
    let err = t
        .role_node(ComponentKind::Postgres, Role::Primary)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no leader annotation") && err.contains("postgres-0, postgres-2"),
        "{err}"
    );
    drop(t);
    server.await.unwrap();

    // Only the annotation (labels not written yet): the annotation decides; a replica is another member node.
    let mut script = connect_script(stack_pods([None, None, None]));
    script.push(ex(
        "GET",
        &pg_pods_path(),
        200,
        list("PodList", stack_pods([None, None, None])[..3].to_vec()),
    ));
    script.push(leader_endpoints(Some("postgres-0")));
    let (client, server) = fake(script);
    let t = target(client, kind(), timing()).await;
    let node = t
        .role_node(ComponentKind::Postgres, Role::Replica)
        .await
        .unwrap();
    assert_eq!(node, "faultline-worker2");
    drop(t);
    server.await.unwrap();
}

fn chaos_allowed_namespace() -> Exchange {
    ex(
        "GET",
        &format!("/api/v1/namespaces/{NS}"),
        200,
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": NS, "labels": {"faultline.dev/chaos": "allowed"}}}),
    )
}

fn primary_kill() -> FaultKind {
    FaultKind::ProcessKill {
        component: ComponentKind::Postgres,
        target: NodeSelector::Role {
            component: ComponentKind::Postgres,
            role: Role::Primary,
        },
    }
}

#[tokio::test]
async fn pod_kill_on_an_existing_cluster_is_a_sigterm_delete_that_says_so_and_revert_waits_until_ready(
) {
    let pods = stack_pods([Some("primary"), None, None]);
    let mut script = connect_script(pods.clone());
    script.push(chaos_allowed_namespace());
    script.push(ex(
        "GET",
        &pg_pods_path(),
        200,
        list("PodList", pods[..3].to_vec()),
    ));
    script.push(leader_endpoints(Some("postgres-0")));
    let pod_path = format!("/api/v1/namespaces/{NS}/pods/postgres-0");
    script.push(ex("DELETE", &pod_path, 200, pods[0].clone()));
    // Revert: gone, recreated but not Ready, Ready.
    script.push(ex(
        "GET",
        &pod_path,
        404,
        status(404, "NotFound", "pods \"postgres-0\" not found"),
    ));
    script.push(ex(
        "GET",
        &pod_path,
        200,
        pod("postgres-0", "postgres", "faultline-worker", None, false),
    ));
    script.push(ex(
        "GET",
        &pod_path,
        200,
        pod("postgres-0", "postgres", "faultline-worker", None, true),
    ));
    let (client, server) = fake(script);
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path());
    let t = target(client, Cluster::Existing, timing()).await;
    let active = t.apply_fault(&j, &primary_kill()).await.unwrap();
    assert_eq!(active.victims, ["postgres-0"]);
    assert!(
        active
            .description
            .starts_with("delete with grace period 0, which is a SIGTERM delete")
            && active.description.contains("a switchover, not a crash"),
        "{}",
        active.description
    );
    let step = RevertStep::KubePodReady {
        namespace: NS.into(),
        pod: "postgres-0".into(),
    };
    assert_eq!(active.steps, std::slice::from_ref(&step));
    assert_eq!(j.open_entries()[0].steps, [step]);
    t.revert(&active.steps).await.unwrap();
    drop(t);
    let seen = server.await.unwrap();
    let delete = &seen[5];
    assert_eq!(delete.method, "DELETE");
    assert_eq!(delete.body["gracePeriodSeconds"], json!(0));
}

/// A Spilo pod as the kubelet reports it: its container `postgres` running as `id`.
fn pod_running(id: &str, ready: bool) -> Value {
    let mut p = pod(
        "postgres-0",
        "postgres",
        "faultline-worker",
        Some("primary"),
        ready,
    );
    p["status"]["containerStatuses"] = json!([{
        "name": "postgres", "image": "spilo", "imageID": "", "ready": ready, "restartCount": 0,
        "containerID": format!("containerd://{id}"),
        "state": {"running": {"startedAt": "2026-11-30T12:00:00Z"}}
    }]);
    p
}

#[tokio::test]
async fn pod_kill_on_kind_sigkills_the_containers_in_the_node_and_revert_waits_for_their_replacements(
) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    // crictl's output, multiplexed as the engine streams an exec without a TTY (stdout frame).
    let mut framed = String::from("\u{1}\0\0\0\0\0\0\u{4}");
    framed.push_str("abc\n");
    let (docker_seen, docker) = fake_docker_replies(
        &socket,
        vec![
            (201, r#"{"Id":"e1"}"#.into()),
            (200, framed),
            (200, r#"{"ID":"e1","Running":false,"ExitCode":0}"#.into()),
            // The second kill: crictl fails (the container is already gone).
            (201, r#"{"Id":"e2"}"#.into()),
            (200, String::new()),
            (200, r#"{"ID":"e2","Running":false,"ExitCode":1}"#.into()),
        ],
    )
    .await;
    let pods = stack_pods([Some("primary"), None, None]);
    let mut script = connect_script(pods.clone());
    let pod_path = format!("/api/v1/namespaces/{NS}/pods/postgres-0");
    for _ in 0..2 {
        script.push(ex(
            "GET",
            &pg_pods_path(),
            200,
            list("PodList", pods[..3].to_vec()),
        ));
        script.push(leader_endpoints(Some("postgres-0")));
        script.push(ex("GET", &pod_path, 200, pod_running("abc", true)));
        if script.len() < 7 {
            // Revert of the first kill: the kubelet has not noticed yet (the killed container still shows as
            // running and the pod Ready), then the replacement starts, then it is Ready.
            script.push(ex("GET", &pod_path, 200, pod_running("abc", true)));
            script.push(ex("GET", &pod_path, 200, pod_running("def", false)));
            script.push(ex("GET", &pod_path, 200, pod_running("def", true)));
        }
    }
    let (client, server) = fake(script);
    let j = journal(dir.path());
    let cluster = Cluster::Kind {
        docker: DockerApi {
            socket: socket.clone(),
        },
    };
    let t = target(client, cluster, timing()).await;
    let active = t.apply_fault(&j, &primary_kill()).await.unwrap();
    assert_eq!(active.victims, ["postgres-0"]);
    assert!(
        active
            .description
            .starts_with("SIGKILL of the pod's containers in their kind node")
            && active
                .description
                .ends_with(": postgres-0 on faultline-worker"),
        "{}",
        active.description
    );
    let step = RevertStep::KubeContainersRestarted {
        namespace: NS.into(),
        pod: "postgres-0".into(),
        killed: vec!["abc".into()],
    };
    assert_eq!(active.steps, std::slice::from_ref(&step));
    // Journaled before the kill, so `faultline recover` waits for the replacement too.
    assert_eq!(j.open_entries()[0].steps, [step]);
    t.revert(&active.steps).await.unwrap();
    let err = t
        .apply_fault(&j, &primary_kill())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "`crictl stop --timeout 0 abc` in node faultline-worker (pod postgres-0) exited 1"
        ),
        "{err}"
    );
    // Nothing was killed: the failed kill's entry is closed (its step would wait for a container never stopped);
    // the first kill's entry is the only one open.
    assert_eq!(j.entries().len(), 2);
    assert_eq!(j.open_entries().len(), 1);
    assert_eq!(j.open_entries()[0].id, j.entries()[0].id);
    drop(t);
    let seen = server.await.unwrap();
    assert!(seen.iter().all(|s| s.method == "GET"), "no pod deleted");
    let calls = docker_seen.lock().unwrap().clone();
    let exec: Value = serde_json::from_str(
        calls[0]
            .strip_prefix("POST /containers/faultline-worker/exec ")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        exec["Cmd"],
        json!(["crictl", "stop", "--timeout", "0", "abc"])
    );
    assert_eq!(exec["Tty"], json!(false));
    assert_eq!(
        calls[1],
        r#"POST /exec/e1/start {"Detach":false,"Tty":false}"#
    );
    assert_eq!(calls[2], "GET /exec/e1/json");
    docker.abort();
}

#[tokio::test]
async fn pod_ready_revert_reports_the_deadline() {
    let pods = stack_pods([None, None, None]);
    let mut script = connect_script(pods);
    let pod_path = format!("/api/v1/namespaces/{NS}/pods/postgres-0");
    let mut waiting = ex(
        "GET",
        &pod_path,
        200,
        pod("postgres-0", "postgres", "faultline-worker", None, false),
    );
    waiting.repeat = true;
    script.push(waiting);
    let (client, server) = fake(script);
    let t = target(
        client,
        kind(),
        KubeTiming {
            pod_ready_deadline: Duration::from_millis(50),
            ..timing()
        },
    )
    .await;
    let err = t
        .revert(&[RevertStep::KubePodReady {
            namespace: NS.into(),
            pod: "postgres-0".into(),
        }])
        .await
        .unwrap_err();
    assert!(
        err.contains("faultline/postgres-0 was not Ready within") && err.contains("not Ready"),
        "{err}"
    );
    drop(t);
    server.await.unwrap();
}

fn drain_script(evictions: Vec<Exchange>) -> Vec<Exchange> {
    let pods = stack_pods([Some("primary"), None, None]);
    let mut script = connect_script(pods.clone());
    script.push(ex(
        "GET",
        &format!("/api/v1/namespaces/{NS}/pods"),
        200,
        list("PodList", pods.clone()),
    ));
    script.push(ex(
        "PATCH",
        "/api/v1/nodes/faultline-worker",
        200,
        node("faultline-worker", "a1", "a", "172.18.0.3", false),
    ));
    script.extend(evictions);
    script
}

fn eviction(pod: &str, status_code: u16) -> Exchange {
    let path = format!("/api/v1/namespaces/{NS}/pods/{pod}/eviction");
    if status_code == 429 {
        ex(
            "POST",
            &path,
            429,
            status(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
            ),
        )
    } else {
        ex("POST", &path, status_code, status(status_code, "", ""))
    }
}

fn drain_fault() -> FaultKind {
    FaultKind::NodeDrain {
        target: NodeSelector::Node("faultline-worker".into()),
    }
}

#[tokio::test]
async fn drain_cordons_retries_evictions_refused_by_a_budget_and_uncordons_on_revert() {
    let mut script = drain_script(vec![
        eviction("postgres-0", 429),
        eviction("postgres-0", 429),
        eviction("postgres-0", 201),
        eviction("redis-0", 201),
    ]);
    script.push(ex(
        "PATCH",
        "/api/v1/nodes/faultline-worker",
        200,
        node("faultline-worker", "a1", "a", "172.18.0.3", false),
    ));
    for p in ["postgres-0", "redis-0"] {
        script.push(ex(
            "GET",
            &format!("/api/v1/namespaces/{NS}/pods/{p}"),
            200,
            pod(p, "x", "faultline-worker", None, true),
        ));
    }
    let (client, server) = fake(script);
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path());
    let t = target(client, kind(), timing()).await;
    let active = t.apply_fault(&j, &drain_fault()).await.unwrap();
    assert_eq!(active.victims, ["postgres-0", "redis-0"]);
    assert_eq!(
        active.steps,
        [
            RevertStep::KubeUncordon {
                node: "faultline-worker".into()
            },
            RevertStep::KubePodReady {
                namespace: NS.into(),
                pod: "postgres-0".into()
            },
            RevertStep::KubePodReady {
                namespace: NS.into(),
                pod: "redis-0".into()
            },
        ]
    );
    t.revert(&active.steps).await.unwrap();
    drop(t);
    let seen = server.await.unwrap();
    assert_eq!(seen[3].body, json!({"spec": {"unschedulable": true}}));
    // kube's evict() sends the Eviction without apiVersion/kind; the API server defaults them for the
    // eviction subresource.
    for s in &seen[4..8] {
        assert_eq!(s.method, "POST");
    }
    assert_eq!(seen[4].body["metadata"]["name"], "postgres-0");
    assert_eq!(seen[7].body["metadata"]["name"], "redis-0");
    assert_eq!(seen[8].body, json!({"spec": {"unschedulable": false}}));
}

#[tokio::test]
async fn drain_names_the_budget_when_the_eviction_deadline_passes() {
    let mut refused = eviction("postgres-0", 429);
    refused.repeat = true;
    let mut script = drain_script(vec![refused]);
    let pdb = |name: &str, app: &str| {
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": {"name": name},
               "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": app}}}})
    };
    script.push(ex(
        "GET",
        &format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets"),
        200,
        list(
            "PodDisruptionBudgetList",
            vec![pdb("redis", "redis"), pdb("postgres", "postgres")],
        ),
    ));
    let (client, server) = fake(script);
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path());
    let t = target(
        client,
        kind(),
        KubeTiming {
            eviction_deadline: Duration::from_millis(60),
            ..timing()
        },
    )
    .await;
    let err = t
        .apply_fault(&j, &drain_fault())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("PodDisruptionBudget postgres:"), "{err}");
    assert!(
        err.contains("eviction of pod postgres-0 still refused"),
        "{err}"
    );
    // The fault stays journaled (the node is cordoned): recover uncordons it.
    assert_eq!(
        j.open_entries()[0].steps[0],
        RevertStep::KubeUncordon {
            node: "faultline-worker".into()
        }
    );
    drop(t);
    let seen = server.await.unwrap();
    let evictions = seen.iter().filter(|s| s.uri.contains("/eviction")).count();
    assert!(evictions >= 2, "retried {evictions} times");
}

#[test]
fn the_partition_policy_pair_is_exactly_this_json() {
    let pair = partition::policies(
        "p1",
        PartitionDirection::Both,
        &[Ipv4Addr::new(172, 18, 0, 3)],
        None,
    )
    .unwrap();
    let peers = |other: &str| {
        json!([
            {"namespaceSelector": {}, "podSelector": {"matchExpressions": [
                {"key": "faultline.dev/partition", "operator": "NotIn", "values": [other]}]}},
            {"ipBlock": {"cidr": "172.18.0.3/32"}}
        ])
    };
    let expected = |me: &str, other: &str| {
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": format!("faultline-partition-{me}"), "labels": {"faultline.dev/owner": "faultline"}},
            "spec": {
                "podSelector": {"matchLabels": {"faultline.dev/partition": me}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": peers(other)}],
                "egress": [{"to": peers(other)}]
            }
        })
    };
    assert_eq!(
        serde_json::to_value(&pair[0]).unwrap(),
        expected("p1-a", "p1-b")
    );
    assert_eq!(
        serde_json::to_value(&pair[1]).unwrap(),
        expected("p1-b", "p1-a")
    );

    // One way: A cannot send to B (A's egress, B's ingress); B to A flows.
    let one_way = partition::policies("p2", PartitionDirection::AToB, &[], None).unwrap();
    let a = serde_json::to_value(&one_way[0]).unwrap();
    let b = serde_json::to_value(&one_way[1]).unwrap();
    assert_eq!(a["spec"]["policyTypes"], json!(["Egress"]));
    assert!(a["spec"].get("ingress").is_none());
    assert_eq!(b["spec"]["policyTypes"], json!(["Ingress"]));
    assert!(b["spec"].get("egress").is_none());

    // B cannot send to A, and A holds Patroni's leader: A's egress, open to B, is closed to the API server alone.
    let cut = worker3_dcs_cut();
    let pair = partition::policies("p3", PartitionDirection::BToA, &[], Some(&cut)).unwrap();
    let a = serde_json::to_value(&pair[0]).unwrap();
    assert_eq!(a["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        a["spec"]["egress"],
        json!([{"to": [
            {"namespaceSelector": {}},
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.96.0.1/32", "172.18.0.2/32"]}}
        ]}])
    );
    let b = serde_json::to_value(&pair[1]).unwrap();
    assert_eq!(
        b["spec"]["policyTypes"],
        json!(["Egress"]),
        "B keeps the API server"
    );
}

fn crd_path() -> String {
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/networkchaos.chaos-mesh.org".into()
}

/// The read of Chaos Mesh's NetworkChaos CRD: 200 installed, 404 absent, 403 not allowed to tell.
fn crd(code: u16) -> Exchange {
    let reply = match code {
        200 => json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                      "metadata": {"name": "networkchaos.chaos-mesh.org"}}),
        403 => status(403, "Forbidden", "customresourcedefinitions is forbidden"),
        _ => status(
            code,
            "NotFound",
            "customresourcedefinitions \"networkchaos.chaos-mesh.org\" not found",
        ),
    };
    ex("GET", &crd_path(), code, reply)
}

fn policy_path() -> String {
    format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies")
}

#[tokio::test]
async fn partition_without_chaos_mesh_labels_both_sides_creates_the_policy_pair_and_revert_removes_them(
) {
    let ips = [
        "10.244.1.2",
        "10.244.2.2",
        "10.244.3.2",
        "10.244.1.3",
        "10.244.2.3",
        "10.244.3.3",
    ];
    let pods: Vec<Value> = stack_pods([None, None, None])
        .into_iter()
        .zip(ips)
        .map(|(p, ip)| with_ip(p, ip))
        .collect();
    let mut script = connect_script(pods.clone());
    // side A = worker3's pods; side B (empty in the scenario) = every other node's pods.
    script.push(ex(
        "GET",
        &format!("/api/v1/namespaces/{NS}/pods"),
        200,
        list("PodList", pods.clone()),
    ));
    // Patroni's leader postgres-2 is on side A: that side loses the API server (its DCS) too.
    script.extend(dcs_reads("postgres-2", true));
    // The default backend (auto) asks for Chaos Mesh's CRD first: absent, so NetworkPolicies.
    script.push(crd(404));
    let a = ["postgres-2", "sentinel-0"];
    let b = ["postgres-0", "postgres-1", "redis-0", "redis-1"];
    for p in a.iter().chain(&b) {
        script.push(ex(
            "PATCH",
            &format!("/api/v1/namespaces/{NS}/pods/{p}"),
            200,
            pod(p, "x", "n", None, true),
        ));
    }
    script.push(ex("POST", &policy_path(), 201, json!({})));
    script.push(ex("POST", &policy_path(), 201, json!({})));
    // Revert: one policy already gone (404) is fine; a pod that is gone is fine. The policy names carry a
    // generated id (checked against the revert steps below).
    script.push(ex(
        "DELETE",
        &format!("{}/faultline-partition-*", policy_path()),
        200,
        status(200, "", ""),
    ));
    script.push(ex(
        "DELETE",
        &format!("{}/faultline-partition-*", policy_path()),
        404,
        status(404, "NotFound", "gone"),
    ));
    for p in a.iter().chain(&b) {
        let code = if *p == "redis-1" { 404 } else { 200 };
        script.push(ex(
            "PATCH",
            &format!("/api/v1/namespaces/{NS}/pods/{p}"),
            code,
            pod(p, "x", "n", None, true),
        ));
    }
    let (client, server) = fake(script);
    let dir = tempfile::tempdir().unwrap();
    // kindnet judges only new connections: on each of the 4 kind nodes the connections open before the partition
    // are deleted from connection tracking (the engine runs the script; conntrack reports one entry each).
    let socket = dir.path().join("docker.sock");
    // The control plane's container is paused (another fault): the engine refuses an exec there, and the node is
    // skipped and named.
    let mut replies = vec![(
        409,
        r#"{"message":"container 5f2a is paused, unpause the container before exec"}"#.to_string(),
    )];
    for n in 1..4 {
        replies.push((201, format!(r#"{{"Id":"e{n}"}}"#)));
        replies.push((
            200,
            "conntrack v1.4.7 (conntrack-tools): 1 flow entries have been deleted.\n".to_string(),
        ));
        replies.push((200, r#"{"Running":false,"ExitCode":0}"#.to_string()));
    }
    let (docker_seen, docker) = fake_docker_replies(&socket, replies).await;
    let j = journal(dir.path());
    let t = target(
        client,
        Cluster::Kind {
            docker: DockerApi { socket },
        },
        timing(),
    )
    .await;
    let fault = FaultKind::Partition {
        side_a: vec![NodeSelector::Node("faultline-worker3".into())],
        side_b: vec![],
        direction: PartitionDirection::Both,
        loss_pct: 100,
    };
    let active = t.apply_fault(&j, &fault).await.unwrap();
    assert!(
        active.description.ends_with(
            "connections open before the partition cut in the running kind nodes (3 conntrack entries deleted; \
             not in faultline-control-plane, stopped or paused: their pods' connections there were left as they are)"
        ),
        "{}",
        active.description
    );
    let calls = docker_seen.lock().unwrap().clone();
    let execs: Vec<&String> = calls.iter().filter(|c| c.contains("/exec ")).collect();
    let nodes: Vec<&str> = execs.iter().map(|c| c.split('/').nth(2).unwrap()).collect();
    assert_eq!(
        nodes,
        [
            "faultline-control-plane",
            "faultline-worker",
            "faultline-worker2",
            "faultline-worker3"
        ]
    );
    let body = &execs[0][execs[0].find('{').unwrap()..];
    let exec: Value = serde_json::from_str(body).unwrap();
    assert!(
        !calls.iter().any(|c| c.contains("/exec/e0/")),
        "nothing started in the paused node"
    );
    let script_text = exec["Cmd"][2].as_str().unwrap();
    assert_eq!(
        (&exec["Cmd"][0], &exec["Cmd"][1]),
        (&json!("sh"), &json!("-c"))
    );
    let deletions: Vec<&str> = script_text.lines().skip(1).collect();
    // Both ways between worker3's 2 pods and the other 4, and from side A (the leader's) to the API server.
    assert_eq!(deletions.len(), 2 * 4 * 2 + 2 * 2, "{script_text}");
    for line in [
        "conntrack -D -s 10.244.3.2 -d 10.244.1.2 2>&1 || true",
        "conntrack -D -s 10.244.1.2 -d 10.244.3.2 2>&1 || true",
        "conntrack -D -s 10.244.3.2 -d 10.96.0.1 2>&1 || true",
        "conntrack -D -s 10.244.3.3 -d 172.18.0.2 2>&1 || true",
    ] {
        assert!(deletions.contains(&line), "{line} in {script_text}");
    }
    assert!(
        !script_text.contains("-s 10.244.1.2 -d 10.96.0.1"),
        "side B keeps the API server"
    );
    docker.abort();
    let policy_names: Vec<String> = active
        .steps
        .iter()
        .filter_map(|s| match s {
            RevertStep::KubeDeleteNetworkPolicy { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(policy_names.len(), 2);
    let id = policy_names[0]
        .strip_prefix("faultline-partition-")
        .and_then(|s| s.strip_suffix("-a"))
        .unwrap()
        .to_string();
    assert!(
        active.description.contains("by NetworkPolicy pair (Both)")
            && active.description.contains(
                "side A holds the Patroni leader postgres-2 and is cut from the API server (Patroni's DCS) too: \
                 10.96.0.1:443, 172.18.0.2:6443"
            ),
        "{}",
        active.description
    );
    assert!(!active
        .steps
        .iter()
        .any(|s| matches!(s, RevertStep::KubeDeleteNetworkChaos { .. })));
    t.revert(&active.steps).await.unwrap();
    drop(t);
    let seen = server.await.unwrap();
    assert_eq!(seen[7].uri, crd_path());
    assert_eq!(
        seen[16].uri.trim_end_matches('?'),
        format!("{}/faultline-partition-{id}-a", policy_path())
    );
    assert_eq!(
        seen[17].uri.trim_end_matches('?'),
        format!("{}/faultline-partition-{id}-b", policy_path())
    );
    let label = |s: &Seen| s.body["metadata"]["labels"]["faultline.dev/partition"].clone();
    for (s, p) in seen[8..14].iter().zip(a.iter().chain(&b)) {
        let side = if a.contains(p) { "a" } else { "b" };
        assert_eq!(label(s), json!(format!("{id}-{side}")), "{p}");
    }
    let addrs = [
        Ipv4Addr::new(172, 18, 0, 2),
        Ipv4Addr::new(172, 18, 0, 3),
        Ipv4Addr::new(172, 18, 0, 4),
        Ipv4Addr::new(172, 18, 0, 5),
    ];
    let cut = worker3_dcs_cut();
    let pair = partition::policies(&id, PartitionDirection::Both, &addrs, Some(&cut)).unwrap();
    assert_eq!(seen[14].body, serde_json::to_value(&pair[0]).unwrap());
    assert_eq!(seen[15].body, serde_json::to_value(&pair[1]).unwrap());
    // Side A (the leader's) may not send to the control plane, where the API server listens; side B may.
    let egress_blocks = |policy: &Value| -> Vec<String> {
        policy["spec"]["egress"][0]["to"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["ipBlock"]["cidr"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(
        egress_blocks(&seen[14].body),
        ["172.18.0.3/32", "172.18.0.4/32", "172.18.0.5/32"]
    );
    assert!(egress_blocks(&seen[15].body).contains(&"172.18.0.2/32".to_string()));
    for s in &seen[18..] {
        assert_eq!(s.method, "PATCH");
        assert_eq!(label(s), Value::Null);
        assert!(s.body["metadata"]["labels"]
            .as_object()
            .unwrap()
            .contains_key("faultline.dev/partition"));
    }
}

#[tokio::test]
async fn an_existing_cluster_namespace_without_the_chaos_label_is_refused() {
    let mut script = connect_script(stack_pods([None, None, None]));
    script.push(ex(
        "GET",
        &format!("/api/v1/namespaces/{NS}"),
        200,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"team": "db"}}}),
    ));
    let (client, server) = fake(script);
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path());
    let t = target(client, Cluster::Existing, timing()).await;
    let err = t
        .apply_fault(&j, &drain_fault())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refusing to inject faults into namespace faultline")
            && err.contains("faultline.dev/chaos=allowed"),
        "{err}"
    );
    assert!(j.entries().is_empty(), "nothing journaled, nothing applied");
    drop(t);
    server.await.unwrap();
}

#[tokio::test]
async fn zone_loss_on_an_existing_cluster_cordons_and_isolates_the_zone_pods() {
    let pods = stack_pods([None, None, None]);
    let mut script = connect_script(pods.clone());
    script.push(chaos_allowed_namespace());
    script.push(ex(
        "GET",
        &format!("/api/v1/namespaces/{NS}/pods"),
        200,
        list("PodList", pods),
    ));
    // Patroni's leader postgres-0 is outside the zone, with 2 of the 3 members: both sides keep the API server.
    script.extend(dcs_reads("postgres-0", false));
    script.push(crd(404));
    script.push(ex(
        "PATCH",
        "/api/v1/nodes/faultline-worker3",
        200,
        node("faultline-worker3", "b1", "b", "172.18.0.5", false),
    ));
    for p in [
        "postgres-2",
        "sentinel-0",
        "postgres-0",
        "postgres-1",
        "redis-0",
        "redis-1",
    ] {
        script.push(ex(
            "PATCH",
            &format!("/api/v1/namespaces/{NS}/pods/{p}"),
            200,
            pod(p, "x", "n", None, true),
        ));
    }
    script.push(ex("POST", &policy_path(), 201, json!({})));
    script.push(ex("POST", &policy_path(), 201, json!({})));
    let (client, server) = fake(script);
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path());
    let t = target(client, Cluster::Existing, timing()).await;
    let fault = FaultKind::ZoneLoss {
        target: NodeSelector::Zone("b1".into()),
        method: NodeLossMethod::Stop,
    };
    let active = t.apply_fault(&j, &fault).await.unwrap();
    assert_eq!(active.name, "zone-loss");
    assert!(
        active
            .description
            .ends_with("(method stop cannot stop or freeze nodes of an existing cluster; the pods are isolated and \
                        keep running)"),
        "{}",
        active.description
    );
    assert!(
        active.description.contains(
            "; the Patroni leader postgres-0 is on side B with 2 of the 3 PostgreSQL members: the API server \
             (Patroni's DCS) stays with that side, as a DCS quorum would"
        ),
        "{}",
        active.description
    );
    assert_eq!(
        active.steps[0],
        RevertStep::KubeUncordon {
            node: "faultline-worker3".into()
        }
    );
    assert!(matches!(
        active.steps[1],
        RevertStep::KubeDeleteNetworkPolicy { .. }
    ));
    drop(t);
    let seen = server.await.unwrap();
    assert_eq!(seen[7].body, json!({"spec": {"unschedulable": true}}));
}

#[test]
fn the_network_chaos_is_exactly_this_json() {
    let side =
        |s: &str| json!({"namespaces": [NS], "labelSelectors": {"faultline.dev/partition": s}});
    let expected = |direction: &str| {
        json!({
            "apiVersion": "chaos-mesh.org/v1alpha1",
            "kind": "NetworkChaos",
            "metadata": {"name": "faultline-partition-p1", "labels": {"faultline.dev/owner": "faultline"}},
            "spec": {
                "action": "partition",
                "mode": "all",
                "selector": side("p1-a"),
                "direction": direction,
                "target": {"mode": "all", "selector": side("p1-b")}
            }
        })
    };
    // Side A is the selector: Chaos Mesh's `to` drops selector -> target, `from` target -> selector.
    for (d, word) in [
        (PartitionDirection::Both, "both"),
        (PartitionDirection::AToB, "to"),
        (PartitionDirection::BToA, "from"),
    ] {
        let object = chaos_mesh::network_chaos("p1", NS, d).unwrap();
        assert_eq!(
            serde_json::to_value(&object).unwrap(),
            expected(word),
            "{d:?}"
        );
    }
}

fn chaos_path() -> String {
    format!("/apis/chaos-mesh.org/v1alpha1/namespaces/{NS}/networkchaos")
}

/// Any NetworkChaos of faultline's (the name carries a generated id, checked against the revert steps).
fn chaos_object_path() -> String {
    format!("{}/faultline-partition-*", chaos_path())
}

/// A NetworkChaos as the API server returns it, with Chaos Mesh's status conditions.
fn network_chaos_reply(conditions: &[(&str, &str)]) -> Value {
    let conditions: Vec<Value> = conditions
        .iter()
        .map(|(t, s)| json!({"type": t, "status": s}))
        .collect();
    json!({
        "apiVersion": "chaos-mesh.org/v1alpha1", "kind": "NetworkChaos",
        "metadata": {"name": "faultline-partition-x", "namespace": NS},
        "spec": {"action": "partition"},
        "status": {"conditions": conditions, "experiment": {"desiredPhase": "Run"}}
    })
}

/// A read of faultline's NetworkChaos that finds it with these conditions.
fn chaos_get(conditions: &[(&str, &str)]) -> Exchange {
    ex(
        "GET",
        &chaos_object_path(),
        200,
        network_chaos_reply(conditions),
    )
}

/// The revert of a Chaos Mesh partition: the DELETE, `held` reads that still find the object (Chaos Mesh's
/// finalizer holds it while it restores the network), the read that finds it gone, and the six unlabel PATCHes.
/// `dcs`: the API server cut's NetworkChaos is deleted next, answering the DELETE with this status (404: it was
/// never created).
fn chaos_revert_script(held: usize, dcs: Option<u16>) -> Vec<Exchange> {
    let gone = || {
        ex(
            "GET",
            &chaos_object_path(),
            404,
            status(404, "NotFound", "networkchaos not found"),
        )
    };
    let mut script = vec![ex(
        "DELETE",
        &chaos_object_path(),
        200,
        network_chaos_reply(&[]),
    )];
    script.extend((0..held).map(|_| chaos_get(&[])));
    script.push(gone());
    match dcs {
        Some(404) => script.push(ex(
            "DELETE",
            &chaos_object_path(),
            404,
            status(404, "NotFound", "networkchaos not found"),
        )),
        Some(code) => {
            script.push(ex(
                "DELETE",
                &chaos_object_path(),
                code,
                network_chaos_reply(&[]),
            ));
            script.push(gone());
        }
        None => {}
    }
    script.extend(unlabel_script());
    script
}

const SIDE_A: [&str; 2] = ["postgres-2", "sentinel-0"];
const SIDE_B: [&str; 4] = ["postgres-0", "postgres-1", "redis-0", "redis-1"];

/// A partition of worker3's pods from every other pod, up to the pods labelled: connect, the pod list, the reads
/// `dcs` of Patroni's leader, the CRD read (answered with `crd_reply`) and the six label PATCHes.
fn labelled_partition_script(crd_reply: Exchange, dcs: Vec<Exchange>) -> Vec<Exchange> {
    let pods = stack_pods([None, None, None]);
    let mut script = connect_script(pods.clone());
    script.push(ex("GET", &pg_pods_path(), 200, list("PodList", pods)));
    script.extend(dcs);
    script.push(crd_reply);
    script.extend(SIDE_A.iter().chain(&SIDE_B).map(|p| {
        ex(
            "PATCH",
            &format!("/api/v1/namespaces/{NS}/pods/{p}"),
            200,
            pod(p, "x", "n", None, true),
        )
    }));
    script
}

fn unlabel_script() -> Vec<Exchange> {
    SIDE_A
        .iter()
        .chain(&SIDE_B)
        .map(|p| {
            ex(
                "PATCH",
                &format!("/api/v1/namespaces/{NS}/pods/{p}"),
                200,
                pod(p, "x", "n", None, true),
            )
        })
        .collect()
}

fn worker3_partition(direction: PartitionDirection) -> FaultKind {
    FaultKind::Partition {
        side_a: vec![NodeSelector::Node("faultline-worker3".into())],
        side_b: vec![],
        direction,
        loss_pct: 100,
    }
}

fn path_of(s: &Seen) -> &str {
    s.uri.split('?').next().unwrap_or_default()
}

fn assert_unlabelled(seen: &[Seen]) {
    let pods: Vec<&str> = seen
        .iter()
        .map(|s| path_of(s).rsplit('/').next().unwrap())
        .collect();
    let expected: Vec<&str> = SIDE_A.iter().chain(&SIDE_B).copied().collect();
    assert_eq!(pods, expected);
    for s in seen {
        assert_eq!(s.method, "PATCH");
        assert_eq!(
            s.body,
            json!({"metadata": {"labels": {"faultline.dev/partition": null}}})
        );
    }
}

#[tokio::test]
async fn partition_with_chaos_mesh_waits_for_injection_and_revert_waits_until_the_object_is_gone() {
    // Patroni's leader postgres-2 is on side A: a second NetworkChaos cuts that side from the API server.
    let mut script = labelled_partition_script(crd(200), dcs_reads("postgres-2", true));
    script.push(ex("POST", &chaos_path(), 201, network_chaos_reply(&[])));
    // Not injected yet: no status, then selected but not all injected (AllInjected alone would be vacuous).
    script.push(chaos_get(&[]));
    script.push(chaos_get(&[("Selected", "True"), ("AllInjected", "False")]));
    script.push(chaos_get(&[("Selected", "True"), ("AllInjected", "True")]));
    script.push(ex("POST", &chaos_path(), 201, network_chaos_reply(&[])));
    script.push(chaos_get(&[("Selected", "True"), ("AllInjected", "True")]));
    script.extend(chaos_revert_script(1, Some(200)));
    let (client, server) = fake(script);
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path());
    let t = target(client, kind(), timing()).await;
    assert_eq!(t.partition_backend, PartitionBackend::Auto);
    let active = t
        .apply_fault(&j, &worker3_partition(PartitionDirection::AToB))
        .await
        .unwrap();
    let returned = std::time::Instant::now();
    // Requested before the creation; effective only when Chaos Mesh reported AllInjected, after the two polls
    // that did not see it injected.
    assert!(
        active.effective_at.duration_since(active.requested_at) >= 2 * timing().poll,
        "effective {:?} after requested",
        active.effective_at.duration_since(active.requested_at)
    );
    assert!(active.effective_at <= returned);
    let name = match &active.steps[0] {
        RevertStep::KubeDeleteNetworkChaos { namespace, name } => {
            assert_eq!(namespace, NS);
            name.clone()
        }
        other => panic!("the first revert step deletes the NetworkChaos, got {other:?}"),
    };
    let id = name
        .strip_prefix("faultline-partition-")
        .unwrap()
        .to_string();
    assert_eq!(active.steps.len(), 8);
    assert_eq!(
        active.steps[1],
        RevertStep::KubeDeleteNetworkChaos {
            namespace: NS.into(),
            name: chaos_mesh::dcs_name(&id)
        }
    );
    assert!(active.steps[2..]
        .iter()
        .all(|s| matches!(s, RevertStep::KubeUnlabelPod { label, .. } if label == "faultline.dev/partition")));
    assert!(
        active.description.contains(&format!(
            "by Chaos Mesh NetworkChaos {name} (direction to), injected after "
        )) && active
            .description
            .contains("side A holds the Patroni leader postgres-2")
            && !active.description.contains("CNI"),
        "{}",
        active.description
    );
    // Journaled before anything was applied, with the same steps.
    assert_eq!(j.open_entries()[0].steps, active.steps);
    t.revert(&active.steps).await.unwrap();
    drop(t);
    let seen = server.await.unwrap();
    assert_eq!(seen[7].uri, crd_path());
    for (s, p) in seen[8..14].iter().zip(SIDE_A.iter().chain(&SIDE_B)) {
        let side = if SIDE_A.contains(p) { "a" } else { "b" };
        assert_eq!(path_of(s), format!("/api/v1/namespaces/{NS}/pods/{p}"));
        assert_eq!(
            s.body["metadata"]["labels"]["faultline.dev/partition"],
            json!(format!("{id}-{side}"))
        );
    }
    assert_eq!(
        (seen[14].method.as_str(), path_of(&seen[14])),
        ("POST", chaos_path().as_str())
    );
    let expected = chaos_mesh::network_chaos(&id, NS, PartitionDirection::AToB).unwrap();
    assert_eq!(seen[14].body, serde_json::to_value(&expected).unwrap());
    let object = format!("{}/{name}", chaos_path());
    for s in &seen[15..18] {
        assert_eq!((s.method.as_str(), path_of(s)), ("GET", object.as_str()));
    }
    // The API server cut: side A's pods may not send to the Service's ClusterIP (Chaos Mesh drops inside the
    // pod, before kube-proxy's translation) nor to the control plane's address.
    assert_eq!(
        (seen[18].method.as_str(), path_of(&seen[18])),
        ("POST", chaos_path().as_str())
    );
    assert_eq!(
        seen[18].body,
        json!({
            "apiVersion": "chaos-mesh.org/v1alpha1", "kind": "NetworkChaos",
            "metadata": {"name": format!("faultline-partition-{id}-dcs"),
                         "labels": {"faultline.dev/owner": "faultline"}},
            "spec": {
                "action": "partition", "mode": "all", "direction": "to",
                "selector": {"namespaces": [NS],
                             "labelSelectors": {"faultline.dev/partition": format!("{id}-a")}},
                "externalTargets": ["10.96.0.1"]
            }
        })
    );
    let dcs_object = format!("{}/{}", chaos_path(), chaos_mesh::dcs_name(&id));
    assert_eq!(path_of(&seen[19]), dcs_object);
    for (s, (method, path)) in seen[20..25].iter().zip([
        ("DELETE", &object),
        ("GET", &object),
        ("GET", &object),
        ("DELETE", &dcs_object),
        ("GET", &dcs_object),
    ]) {
        assert_eq!((s.method.as_str(), path_of(s)), (method, path.as_str()));
    }
    assert_unlabelled(&seen[25..]);
}

#[tokio::test]
async fn chaos_mesh_asked_for_without_its_crd_is_refused_before_anything_is_applied() {
    let pods = stack_pods([None, None, None]);
    let mut script = connect_script(pods.clone());
    script.push(ex("GET", &pg_pods_path(), 200, list("PodList", pods)));
    script.extend(dcs_reads("postgres-2", true));
    script.push(crd(404));
    let (client, server) = fake(script);
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path());
    let mut t = target(client, kind(), timing()).await;
    t.partition_backend = PartitionBackend::ChaosMesh;
    let err = t
        .apply_fault(&j, &worker3_partition(PartitionDirection::Both))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no CRD networkchaos.chaos-mesh.org") && err.contains("--partition-backend"),
        "{err}"
    );
    assert!(j.entries().is_empty(), "nothing journaled");
    drop(t);
    let seen = server.await.unwrap();
    assert_eq!(seen.len(), 8, "no pod labelled, nothing created");
    assert_eq!(seen[7].uri, crd_path());
}

#[tokio::test]
async fn chaos_mesh_not_injecting_in_time_is_an_error_and_leaves_nothing_behind() {
    // Patroni's leader postgres-2 is on side A, alone: its API server cut is never created.
    let mut script = labelled_partition_script(crd(200), dcs_reads("postgres-2", true));
    script.push(ex("POST", &chaos_path(), 201, network_chaos_reply(&[])));
    let mut waiting = chaos_get(&[("Selected", "True"), ("AllInjected", "False")]);
    waiting.repeat = true;
    script.push(waiting);
    script.extend(chaos_revert_script(0, Some(404)));
    let (client, server) = fake(script);
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path());
    let t = target(
        client,
        kind(),
        KubeTiming {
            chaos_injected_deadline: Duration::from_millis(50),
            ..timing()
        },
    )
    .await;
    let err = t
        .apply_fault(&j, &worker3_partition(PartitionDirection::Both))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Chaos Mesh did not inject NetworkChaos faultline/faultline-partition-")
            && err.contains("within 50ms")
            && err.contains("Selected=True, AllInjected=False"),
        "{err}"
    );
    // Reverted at once: the entry is closed, not left for `recover`.
    assert_eq!(j.entries().len(), 1);
    assert!(j.open_entries().is_empty());
    drop(t);
    let seen = server.await.unwrap();
    let delete = seen.iter().position(|s| s.method == "DELETE").unwrap();
    assert!(path_of(&seen[delete]).starts_with(&format!("{}/faultline-partition-", chaos_path())));
    assert_eq!(seen[delete + 1].method, "GET");
    assert_eq!(seen[delete + 2].method, "DELETE");
    assert!(path_of(&seen[delete + 2]).ends_with("-dcs"));
    assert_unlabelled(&seen[delete + 3..]);
}

#[tokio::test]
async fn the_plan_names_the_partition_backend() {
    let pods = stack_pods([None, None, None]);
    let mut script = connect_script(pods.clone());
    for code in [200, 403, 404] {
        script.push(ex(
            "GET",
            &pg_pods_path(),
            200,
            list("PodList", pods.clone()),
        ));
        script.extend(dcs_reads("postgres-2", true));
        script.push(crd(code));
    }
    let (client, server) = fake(script);
    let t = target(client, Cluster::Existing, timing()).await;
    let at = |s: u64, kind: FaultKind| FaultSpec {
        kind,
        at: Duration::from_secs(s),
        duration: None,
    };
    let faults = [
        at(10, worker3_partition(PartitionDirection::AToB)),
        at(20, worker3_partition(PartitionDirection::Both)),
        at(
            30,
            FaultKind::ZoneLoss {
                target: NodeSelector::Zone("b1".into()),
                method: NodeLossMethod::Pause,
            },
        ),
    ];
    let lines = t.plan(&faults).await.unwrap();
    let sides =
        "between pods [postgres-2, sentinel-0] and [postgres-0, postgres-1, redis-0, redis-1]";
    let dcs = "side A holds the Patroni leader postgres-2 and is cut from the API server (Patroni's DCS) too: \
               10.96.0.1:443, 172.18.0.2:6443";
    let cni = " (an egress NetworkPolicy: on a CNI that does not enforce egress ipBlocks the leader keeps its \
               lock, and the partition will not reach the DCS)";
    assert_eq!(
        lines,
        [
            // Chaos Mesh drops before kube-proxy's translation: the ClusterIP alone.
            format!(
                "at +10s: partition: Chaos Mesh NetworkChaos (direction to) {sides}; side A holds the Patroni \
                 leader postgres-2 and is cut from the API server (Patroni's DCS) too: 10.96.0.1"
            ),
            format!(
                "at +20s: partition: NetworkPolicy pair (Both; not Chaos Mesh: reading CRD \
                 networkchaos.chaos-mesh.org is forbidden, so whether it is installed is unknown) {sides}; \
                 {dcs}{cni}"
            ),
            format!(
                "at +30s: zone-loss: cordon faultline-worker3 and isolate their pods [postgres-2, sentinel-0] \
                 with a NetworkPolicy pair (Both) (method pause cannot stop or freeze nodes of an existing \
                 cluster; the pods are isolated and keep running); {dcs}{cni}"
            ),
        ]
    );
    drop(t);
    server.await.unwrap();
}

#[tokio::test]
async fn a_lost_region_holding_the_leader_loses_the_api_server_even_with_the_majority_and_an_unknown_leader_cuts_nothing(
) {
    let pods = stack_pods([None, None, None]);
    let mut script = connect_script(pods.clone());
    // Region a (worker, worker2) holds postgres-0 (the leader) and postgres-1: 2 of 3 members, but it is the part
    // that is lost, so it loses the API server.
    script.push(ex(
        "GET",
        &pg_pods_path(),
        200,
        list("PodList", pods.clone()),
    ));
    script.extend(dcs_reads("postgres-0", true));
    script.push(crd(404));
    // A partition while Patroni names no leader (no annotation, no labelled pod): described, not refused.
    script.push(ex(
        "GET",
        &pg_pods_path(),
        200,
        list("PodList", pods.clone()),
    ));
    script.push(ex(
        "GET",
        &pg_pods_path(),
        200,
        list("PodList", pods[..3].to_vec()),
    ));
    script.push(leader_endpoints(None));
    script.push(crd(404));
    let (client, server) = fake(script);
    let t = target(client, Cluster::Existing, timing()).await;
    let at = |kind: FaultKind| FaultSpec {
        kind,
        at: Duration::from_secs(10),
        duration: None,
    };
    let lines = t
        .plan(&[
            at(FaultKind::RegionLoss {
                target: NodeSelector::Region("a".into()),
                method: NodeLossMethod::Disconnect,
            }),
            at(worker3_partition(PartitionDirection::Both)),
        ])
        .await
        .unwrap();
    assert!(
        lines[0]
            .contains("side A holds the Patroni leader postgres-0 and is cut from the API server"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("Patroni's leader cannot be told now (no Patroni leader: Endpoints postgres has no leader \
             annotation")
            && lines[1].contains("no side is cut from the API server"),
        "{}",
        lines[1]
    );
    drop(t);
    server.await.unwrap();
}

#[tokio::test]
async fn the_kube_target_refuses_local_steps() {
    let (client, server) = fake(connect_script(vec![]));
    let t = target(client, kind(), timing()).await;
    let err = t
        .revert(&[RevertStep::LinkUp { node: "n1".into() }])
        .await
        .unwrap_err();
    assert!(err.contains("belongs to the local stack"), "{err}");
    drop(t);
    server.await.unwrap();
}

#[tokio::test]
async fn the_plan_names_the_pods_and_nodes_each_fault_hits() {
    let pods = stack_pods([Some("master"), None, None]);
    let mut script = connect_script(pods.clone());
    script.push(ex(
        "GET",
        &pg_pods_path(),
        200,
        list("PodList", pods[..3].to_vec()),
    ));
    script.push(leader_endpoints(None));
    script.push(ex(
        "GET",
        &format!("/api/v1/namespaces/{NS}/pods"),
        200,
        list("PodList", pods.clone()),
    ));
    let (client, server) = fake(script);
    let t = target(client, kind(), timing()).await;
    let faults = [
        FaultSpec {
            kind: FaultKind::ProcessKill {
                component: ComponentKind::Postgres,
                target: NodeSelector::Role {
                    component: ComponentKind::Postgres,
                    role: Role::Primary,
                },
            },
            at: Duration::from_secs(5),
            duration: None,
        },
        FaultSpec {
            kind: FaultKind::ZoneLoss {
                target: NodeSelector::Zone("a2".into()),
                method: NodeLossMethod::Stop,
            },
            at: Duration::from_secs(30),
            duration: None,
        },
        FaultSpec {
            kind: FaultKind::NodeDrain {
                target: NodeSelector::Node("faultline-worker".into()),
            },
            at: Duration::from_secs(60),
            duration: None,
        },
        FaultSpec {
            kind: FaultKind::RegionLoss {
                target: NodeSelector::Region("a".into()),
                method: NodeLossMethod::Pause,
            },
            at: Duration::from_secs(90),
            duration: None,
        },
        FaultSpec {
            kind: FaultKind::NodeLoss {
                target: NodeSelector::Node("faultline-worker3".into()),
                method: NodeLossMethod::Disconnect,
            },
            at: Duration::from_secs(120),
            duration: None,
        },
    ];
    let lines = t.plan(&faults).await.unwrap();
    assert_eq!(
        lines,
        [
            "at +5s: process-kill: SIGKILL of the pod's containers in their kind node (crictl stop --timeout 0; \
             the kubelet restarts them): pod(s) postgres-0",
            "at +30s: zone-loss: docker stop -t 0 node container(s) faultline-worker2",
            "at +1m: node-drain: cordon faultline-worker and evict pods [postgres-0, redis-0]",
            "at +1m 30s: region-loss: docker pause node container(s) faultline-worker, faultline-worker2",
            "at +2m: node-loss: docker network disconnect --force kind node container(s) faultline-worker3",
        ]
    );
    drop(t);
    server.await.unwrap();
}

/// A fake Docker Engine on a unix socket: answers each request with the next scripted status, records
/// method and path.
async fn fake_docker(
    socket: &Path,
    statuses: Vec<u16>,
) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let replies = statuses
        .into_iter()
        .map(|code| {
            let body = if code == 404 {
                r#"{"message":"No such container: x"}"#
            } else {
                ""
            };
            (code, body.to_string())
        })
        .collect();
    fake_docker_replies(socket, replies).await
}

/// The fake Docker Engine with scripted (status, body) replies; records "METHOD URI" plus " BODY" when the request
/// has one.
async fn fake_docker_replies(
    socket: &Path,
    replies: Vec<(u16, String)>,
) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let replies = Arc::new(Mutex::new(replies.into_iter()));
    let log = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let log = log.clone();
            let replies = replies.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    let replies = replies.clone();
                    async move {
                        let line = format!("{} {}", req.method(), req.uri());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        log.lock().unwrap().push(if body.is_empty() {
                            line
                        } else {
                            format!("{line} {}", String::from_utf8_lossy(&body))
                        });
                        let (code, body) = replies
                            .lock()
                            .unwrap()
                            .next()
                            .unwrap_or((500, String::new()));
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(code)
                                .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (seen, task)
}

/// A kind target whose Docker engine is the fake at `socket`; the script holds only the connect requests.
async fn kind_target_with_docker(
    socket: &Path,
) -> (KubeTarget, tokio::task::JoinHandle<Vec<Seen>>) {
    let (client, server) = fake(connect_script(stack_pods([Some("primary"), None, None])));
    let cluster = Cluster::Kind {
        docker: DockerApi {
            socket: socket.to_path_buf(),
        },
    };
    (target(client, cluster, timing()).await, server)
}

#[tokio::test]
async fn region_loss_by_pause_freezes_every_node_container_of_the_region_and_revert_unpauses() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    // pause a1's two workers, unpause both, unpause again: "not paused" is already reverted. The engine answers
    // an unpause of a running container with HTTP 500 (moby's daemon returns an untyped error for it).
    let not_paused = r#"{"message":"Container faultline-worker is not paused"}"#.to_string();
    let (docker_seen, docker) = fake_docker_replies(
        &socket,
        vec![
            (204, String::new()),
            (204, String::new()),
            (204, String::new()),
            (204, String::new()),
            (500, not_paused.clone()),
            (500, not_paused),
        ],
    )
    .await;
    let (t, server) = kind_target_with_docker(&socket).await;
    let j = journal(dir.path());
    let fault = FaultKind::RegionLoss {
        target: NodeSelector::Region("a".into()),
        method: NodeLossMethod::Pause,
    };
    let active = t.apply_fault(&j, &fault).await.unwrap();
    assert_eq!(active.name, "region-loss");
    assert_eq!(active.victims, ["faultline-worker", "faultline-worker2"]);
    assert_eq!(
        active.steps,
        [
            RevertStep::DockerUnpause {
                container: "faultline-worker".into()
            },
            RevertStep::DockerUnpause {
                container: "faultline-worker2".into()
            },
        ]
    );
    assert_eq!(j.open_entries()[0].steps, active.steps);
    t.revert(&active.steps).await.unwrap();
    t.revert(&active.steps).await.unwrap();
    assert_eq!(
        *docker_seen.lock().unwrap(),
        [
            "POST /containers/faultline-worker/pause",
            "POST /containers/faultline-worker2/pause",
            "POST /containers/faultline-worker/unpause",
            "POST /containers/faultline-worker2/unpause",
            "POST /containers/faultline-worker/unpause",
            "POST /containers/faultline-worker2/unpause",
        ]
    );
    let err = t
        .apply_fault(
            &j,
            &FaultKind::RegionLoss {
                target: NodeSelector::Region("c".into()),
                method: NodeLossMethod::Pause,
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("region `c` has no worker node")
            && err.contains("topology.kubernetes.io/region"),
        "{err}"
    );
    drop(t);
    server.await.unwrap();
    docker.abort();
}

#[tokio::test]
async fn disconnect_remembers_the_node_addresses_and_revert_reconnects_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let inspect = json!({
        "Name": "/faultline-worker3",
        "NetworkSettings": {"Networks": {"kind": {
            "IPAddress": "172.18.0.5", "GlobalIPv6Address": "fc00:f853:ccd:e793::5"
        }}}
    })
    .to_string();
    let already =
        r#"{"message":"endpoint with name faultline-worker3 already exists in network kind"}"#;
    let (docker_seen, docker) = fake_docker_replies(
        &socket,
        vec![
            (200, engine_version("29.1.0")),
            (200, inspect),
            (200, String::new()),
            (200, String::new()),
            (403, already.to_string()),
        ],
    )
    .await;
    let (t, server) = kind_target_with_docker(&socket).await;
    let j = journal(dir.path());
    let fault = FaultKind::ZoneLoss {
        target: NodeSelector::Zone("b1".into()),
        method: NodeLossMethod::Disconnect,
    };
    let active = t.apply_fault(&j, &fault).await.unwrap();
    let step = RevertStep::DockerConnect {
        container: "faultline-worker3".into(),
        network: "kind".into(),
        ipv4: Some("172.18.0.5".into()),
        ipv6: Some("fc00:f853:ccd:e793::5".into()),
    };
    assert_eq!(active.steps, std::slice::from_ref(&step));
    // Journaled before the disconnect, so `faultline recover` can give the node its addresses back.
    assert_eq!(j.open_entries()[0].steps, [step]);
    t.revert(&active.steps).await.unwrap();
    t.revert(&active.steps).await.unwrap();
    let seen = docker_seen.lock().unwrap().clone();
    assert_eq!(seen[0], "GET /version");
    assert_eq!(seen[1], "GET /containers/faultline-worker3/json");
    assert_eq!(
        seen[2],
        r#"POST /networks/kind/disconnect {"Container":"faultline-worker3","Force":true}"#
    );
    let connect: Value = serde_json::from_str(
        seen[3]
            .strip_prefix("POST /networks/kind/connect ")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        connect,
        json!({"Container": "faultline-worker3", "EndpointConfig": {"IPAMConfig": {
            "IPv4Address": "172.18.0.5", "IPv6Address": "fc00:f853:ccd:e793::5"
        }}})
    );
    assert_eq!(seen.len(), 5);
    drop(t);
    server.await.unwrap();
    docker.abort();
}

fn engine_version(v: &str) -> String {
    json!({"Version": v, "ApiVersion": "1.52", "MinAPIVersion": "1.24", "Os": "linux"}).to_string()
}

fn zone_b1_disconnect() -> FaultKind {
    FaultKind::ZoneLoss {
        target: NodeSelector::Zone("b1".into()),
        method: NodeLossMethod::Disconnect,
    }
}

#[tokio::test]
async fn disconnect_is_refused_up_front_where_the_engine_could_not_give_the_address_back() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    // kind's own network: IPv4 subnet chosen by the engine, no faultline label. Engine 29.0.2 refuses a fixed IPv4
    // address there (moby#51569), so the revert could not work: nothing may happen.
    let kinds_network = json!({"Name": "kind", "Labels": {}, "EnableIPv6": true,
        "IPAM": {"Config": [{"Subnet": "fc00:f853:ccd:e793::/64"}, {"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}]}})
    .to_string();
    // The same engine with a network faultline created (its own IPv4 subnet, labelled): allowed.
    let faultlines_network = json!({"Name": "kind",
        "Labels": {"dev.faultline.ipv4-subnet": "user-configured"}})
    .to_string();
    let inspect =
        json!({"NetworkSettings": {"Networks": {"kind": {"IPAddress": "172.19.0.5"}}}}).to_string();
    let (docker_seen, docker) = fake_docker_replies(
        &socket,
        vec![
            (200, engine_version("29.0.2")),
            (200, kinds_network),
            (200, engine_version("29.0.2")),
            (200, faultlines_network),
            (200, inspect),
            (200, String::new()),
        ],
    )
    .await;
    let (t, server) = kind_target_with_docker(&socket).await;
    let j = journal(dir.path());
    let err = t
        .apply_fault(&j, &zone_b1_disconnect())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refusing to disconnect a node: Docker Engine 29.0.2 cannot reconnect it")
            && err.contains("29.0.4"),
        "{err}"
    );
    assert!(j.entries().is_empty(), "nothing journaled");
    assert_eq!(
        *docker_seen.lock().unwrap(),
        ["GET /version", "GET /networks/kind"]
    );
    let active = t.apply_fault(&j, &zone_b1_disconnect()).await.unwrap();
    assert_eq!(active.victims, ["faultline-worker3"]);
    assert_eq!(docker_seen.lock().unwrap().len(), 6);
    drop(t);
    server.await.unwrap();
    docker.abort();
}

#[tokio::test]
async fn a_refused_fixed_address_still_reconnects_the_node_and_says_its_address_changed() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let refused = json!({"message": "invalid endpoint settings:\nuser specified IP address is supported only when \
        connecting to networks with user configured subnets"})
    .to_string();
    let inspect =
        json!({"NetworkSettings": {"Networks": {"kind": {"IPAddress": "172.18.0.9"}}}}).to_string();
    let (docker_seen, docker) = fake_docker_replies(
        &socket,
        vec![(400, refused), (200, String::new()), (200, inspect)],
    )
    .await;
    let (t, server) = kind_target_with_docker(&socket).await;
    let err = t
        .revert(&[RevertStep::DockerConnect {
            container: "faultline-worker3".into(),
            network: "kind".into(),
            ipv4: Some("172.18.0.5".into()),
            ipv6: None,
        }])
        .await
        .unwrap_err();
    assert!(
        err.contains("node container faultline-worker3 is connected to kind again")
            && err.contains("address 172.18.0.9 instead of 172.18.0.5"),
        "{err}"
    );
    let seen = docker_seen.lock().unwrap().clone();
    assert_eq!(
        seen[1],
        r#"POST /networks/kind/connect {"Container":"faultline-worker3","EndpointConfig":{"IPAMConfig":{}}}"#
    );
    drop(t);
    server.await.unwrap();
    docker.abort();
}

#[tokio::test]
async fn disconnect_refuses_a_node_that_is_not_on_the_kind_network_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let inspect = json!({"NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.2"}}}})
        .to_string();
    let (docker_seen, docker) = fake_docker_replies(
        &socket,
        vec![(200, engine_version("28.5.2")), (200, inspect)],
    )
    .await;
    let (t, server) = kind_target_with_docker(&socket).await;
    let j = journal(dir.path());
    let fault = FaultKind::NodeLoss {
        target: NodeSelector::Node("faultline-worker2".into()),
        method: NodeLossMethod::Disconnect,
    };
    let err = t.apply_fault(&j, &fault).await.unwrap_err().to_string();
    assert!(
        err.contains("faultline-worker2 is not attached to the Docker network kind"),
        "{err}"
    );
    assert!(j.open_entries().is_empty());
    assert_eq!(
        *docker_seen.lock().unwrap(),
        ["GET /version", "GET /containers/faultline-worker2/json"]
    );
    drop(t);
    server.await.unwrap();
    docker.abort();
}

#[tokio::test]
async fn node_loss_on_kind_stops_the_node_container_and_revert_starts_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    // stop 204, start 204, start again 304 (already running: idempotent).
    let (docker_seen, docker) = fake_docker(&socket, vec![204, 204, 304]).await;
    let mut script = connect_script(stack_pods([Some("primary"), None, None]));
    script.push(ex(
        "GET",
        &pg_pods_path(),
        200,
        list(
            "PodList",
            stack_pods([Some("primary"), None, None])[..3].to_vec(),
        ),
    ));
    script.push(leader_endpoints(Some("postgres-0")));
    let (client, server) = fake(script);
    let j = journal(dir.path());
    let cluster = Cluster::Kind {
        docker: DockerApi {
            socket: socket.clone(),
        },
    };
    let t = target(client, cluster, timing()).await;
    let fault = FaultKind::NodeLoss {
        target: NodeSelector::Role {
            component: ComponentKind::Postgres,
            role: Role::Primary,
        },
        method: NodeLossMethod::Stop,
    };
    let active = t.apply_fault(&j, &fault).await.unwrap();
    assert_eq!(active.victims, ["faultline-worker"]);
    assert_eq!(
        active.steps,
        [RevertStep::DockerStart {
            container: "faultline-worker".into()
        }]
    );
    assert_eq!(j.open_entries()[0].steps, active.steps);
    t.revert(&active.steps).await.unwrap();
    t.revert(&active.steps).await.unwrap();
    assert_eq!(
        *docker_seen.lock().unwrap(),
        [
            "POST /containers/faultline-worker/stop?t=0",
            "POST /containers/faultline-worker/start",
            "POST /containers/faultline-worker/start",
        ]
    );
    drop(t);
    server.await.unwrap();
    docker.abort();
}

/// A Docker Engine that answers an exec as the real one does: `POST /exec/{id}/start` without an Upgrade header
/// hijacks the connection, writes a status line and headers with neither Content-Length nor chunking, streams the
/// output multiplexed in 8-byte-header frames and closes its side; the inspect says Running until the command ends.
async fn raw_exec_engine(socket: &Path) -> tokio::task::JoinHandle<Vec<String>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut inspections = 0;
        while seen.len() < 4 {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let n = stream.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while buf.len() < head_end + length {
                let n = stream.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            let request = head.lines().next().unwrap().to_string();
            seen.push(request.clone());
            let json = |status: &str, body: &str| {
                format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            };
            let reply = if request.starts_with("POST /containers/faultline-worker/exec") {
                json("201 Created", r#"{"Id":"x1"}"#)
            } else if request.starts_with("POST /exec/x1/start") {
                let mut r =
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n"
                        .to_vec();
                r.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 4]);
                r.extend_from_slice(b"abc\n");
                r.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 3]);
                r.extend_from_slice(b"err");
                r
            } else if request.starts_with("GET /exec/x1/json") {
                inspections += 1;
                if inspections == 1 {
                    json("200 OK", r#"{"ID":"x1","Running":true,"ExitCode":null}"#)
                } else {
                    json("200 OK", r#"{"ID":"x1","Running":false,"ExitCode":0}"#)
                }
            } else {
                json("404 Not Found", r#"{"message":"unexpected"}"#)
            };
            stream.write_all(&reply).await.unwrap();
            // The engine half-closes once the stream is done; the client reads until then.
            stream.shutdown().await.unwrap();
        }
        seen
    })
}

#[tokio::test]
async fn exec_reads_the_engines_hijacked_stream_until_it_closes_and_waits_for_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let engine = raw_exec_engine(&socket).await;
    let api = DockerApi { socket };
    let (code, output) = api
        .exec(
            "faultline-worker",
            &["crictl", "stop", "--timeout", "0", "abc"],
        )
        .await
        .unwrap();
    assert_eq!((code, output.as_str()), (0, "abc\nerr"));
    let seen = engine.await.unwrap();
    assert_eq!(
        seen,
        [
            "POST /containers/faultline-worker/exec HTTP/1.1",
            "POST /exec/x1/start HTTP/1.1",
            "GET /exec/x1/json HTTP/1.1",
            "GET /exec/x1/json HTTP/1.1",
        ]
    );
}

#[tokio::test]
async fn docker_errors_name_the_container_and_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let (_, docker) = fake_docker(&socket, vec![404, 500]).await;
    let api = DockerApi {
        socket: socket.clone(),
    };
    let err = api.stop("kind-worker9").await.unwrap_err();
    assert!(
        err.contains("no Docker container or network for kind-worker9"),
        "{err}"
    );
    let err = api.start("kind-worker").await.unwrap_err();
    assert!(
        err.contains("/containers/kind-worker/start answered 500"),
        "{err}"
    );
    docker.abort();
    let missing = DockerApi {
        socket: dir.path().join("absent.sock"),
    };
    let err = missing.start("kind-worker").await.unwrap_err();
    assert!(
        err.contains("cannot reach the Docker engine at") && err.contains("absent.sock"),
        "{err}"
    );
}

/// Parses one RESP command (an array of bulk strings) from the front of `buf`: (args, bytes used).
fn resp_command(buf: &[u8]) -> Option<(Vec<String>, usize)> {
    fn line(buf: &[u8], at: usize) -> Option<(&str, usize)> {
        let end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
        Some((std::str::from_utf8(&buf[at..end]).ok()?, end + 2))
    }
    let (head, mut at) = line(buf, 0)?;
    let n: usize = head.strip_prefix('*')?.parse().ok()?;
    let mut args = Vec::new();
    for _ in 0..n {
        let (len, next) = line(buf, at)?;
        let len: usize = len.strip_prefix('$')?.parse().ok()?;
        if buf.len() < next + len + 2 {
            return None;
        }
        args.push(String::from_utf8_lossy(&buf[next..next + len]).into_owned());
        at = next + len + 2;
    }
    Some((args, at))
}

/// A fake Sentinel on 127.0.0.1: answers get-master-addr-by-name with `master_ip`, anything else with +OK;
/// records the SENTINEL commands.
async fn fake_sentinel(
    master_ip: &'static str,
) -> (std::net::SocketAddrV4, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = match listener.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        other => panic!("{other}"),
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some((args, used)) = resp_command(&buf) {
                        buf.drain(..used);
                        let reply = if args[0].eq_ignore_ascii_case("SENTINEL") {
                            log.lock().unwrap().push(args.join(" "));
                            format!(
                                "*2\r\n${}\r\n{master_ip}\r\n$4\r\n6379\r\n",
                                master_ip.len()
                            )
                        } else {
                            "+OK\r\n".to_string()
                        };
                        s.write_all(reply.as_bytes()).await.unwrap();
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn with_ip(mut pod: Value, ip: &str) -> Value {
    pod["status"]["podIP"] = json!(ip);
    pod
}

fn redis_pods() -> Vec<Value> {
    vec![
        with_ip(
            pod("redis-0", "redis", "faultline-worker", None, true),
            "10.244.1.7",
        ),
        with_ip(
            pod("redis-1", "redis", "faultline-worker2", None, true),
            "10.244.2.9",
        ),
    ]
}

#[tokio::test]
async fn the_redis_master_is_the_pod_sentinel_names_by_its_ip() {
    let (sentinel, asked) = fake_sentinel("10.244.2.9").await;
    let mut script = connect_script(stack_pods([None, None, None]));
    script.push(ex(
        "GET",
        &pg_pods_path(),
        200,
        list("PodList", redis_pods()),
    ));
    let (client, server) = fake(script);
    let selectors = StackSelectors {
        sentinel_addr: sentinel,
        ..StackSelectors::default()
    };
    let t = KubeTarget::connect(client, NS, kind(), selectors, timing())
        .await
        .unwrap();
    let node = t
        .role_node(ComponentKind::Redis, Role::Primary)
        .await
        .unwrap();
    assert_eq!(node, "faultline-worker2");
    assert_eq!(
        *asked.lock().unwrap(),
        ["SENTINEL get-master-addr-by-name faultline"]
    );
    drop(t);
    let seen = server.await.unwrap();
    assert!(
        seen[2]
            .uri
            .contains("labelSelector=app.kubernetes.io%2Fname%3Dredis"),
        "{}",
        seen[2].uri
    );
}

/// A fake Qdrant REST API answering GET /cluster with `body`.
async fn fake_qdrant(body: Value) -> std::net::SocketAddrV4 {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = match listener.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        other => panic!("{other}"),
    };
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let body = body.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/cluster");
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(hyper::body::Bytes::from(
                                    body.to_string(),
                                )))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_qdrant_leader_is_the_pod_named_by_the_leader_peer_uri() {
    let rest = fake_qdrant(json!({"result": {
        "status": "enabled",
        "peer_id": 11,
        "peers": {
            "11": {"uri": "http://qdrant-0.qdrant-headless.faultline.svc.cluster.local:6335/"},
            "12": {"uri": "http://qdrant-1.qdrant-headless.faultline.svc.cluster.local:6335/"},
            "13": {"uri": "http://qdrant-2.qdrant-headless.faultline.svc.cluster.local:6335/"}
        },
        "raft_info": {"term": 3, "commit": 40, "pending_operations": 0, "leader": 13, "role": "Follower"},
        "message_send_failures": {}
    }}))
    .await;
    let qdrant_pods: Vec<Value> = ["faultline-worker", "faultline-worker2", "faultline-worker3"]
        .iter()
        .enumerate()
        .map(|(i, n)| pod(&format!("qdrant-{i}"), "qdrant", n, None, true))
        .collect();
    let mut script = connect_script(qdrant_pods.clone());
    script.push(ex(
        "GET",
        &pg_pods_path(),
        200,
        list("PodList", qdrant_pods),
    ));
    let (client, server) = fake(script);
    let selectors = StackSelectors {
        qdrant_rest: rest,
        ..StackSelectors::default()
    };
    let t = KubeTarget::connect(client, NS, kind(), selectors, timing())
        .await
        .unwrap();
    let node = t
        .role_node(ComponentKind::Qdrant, Role::Primary)
        .await
        .unwrap();
    assert_eq!(node, "faultline-worker3");
    drop(t);
    server.await.unwrap();
}

// ---- KubeTarget as a `Target`: components from the NodePorts, health, logs, delegation; deployment ----

const SPILO: &str = "ghcr.io/zalando/spilo-16:3.3-p2";

fn ip_pod(name: &str, app: &str, node: &str, ip: &str, image: &str, ready: bool) -> Value {
    let mut v = with_ip(pod(name, app, node, None, ready), ip);
    v["spec"]["containers"][0]["image"] = json!(image);
    v
}

/// Pods with IPs and images, listed out of ordinal order.
fn ip_pods(redis_1_ready: bool) -> Vec<Value> {
    vec![
        ip_pod(
            "postgres-1",
            "postgres",
            "faultline-worker2",
            "10.244.2.3",
            SPILO,
            true,
        ),
        ip_pod(
            "postgres-0",
            "postgres",
            "faultline-worker",
            "10.244.1.3",
            SPILO,
            true,
        ),
        ip_pod(
            "redis-1",
            "redis",
            "faultline-worker2",
            "10.244.2.9",
            "redis:7.4.2",
            redis_1_ready,
        ),
        ip_pod(
            "redis-0",
            "redis",
            "faultline-worker",
            "10.244.1.7",
            "redis:7.4.2",
            true,
        ),
        ip_pod(
            "redis-sentinel-0",
            "redis-sentinel",
            "faultline-worker3",
            "10.244.3.4",
            "redis:7.4.2",
            true,
        ),
        ip_pod(
            "qdrant-0",
            "qdrant",
            "faultline-worker3",
            "10.244.3.5",
            "qdrant/qdrant:v1.18.3",
            true,
        ),
    ]
}

/// The two requests `KubeTarget::refresh` makes: the namespace's pods and the Postgres credentials.
fn refresh_script(pods: Vec<Value>) -> Vec<Exchange> {
    vec![
        ex("GET", &pg_pods_path(), 200, list("PodList", pods)),
        ex(
            "GET",
            &format!("/api/v1/namespaces/{NS}/secrets/postgres-credentials"),
            200,
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "postgres-credentials", "namespace": NS},
                   "data": {"superuser-password": "czNjcmV0"}}),
        ),
        // The ttl in effect, from the lock Patroni's leader writes.
        leader_endpoints(Some("postgres-0")),
    ]
}

#[tokio::test]
async fn components_reach_pods_through_their_nodeports_and_map_pod_ips_back() {
    let mut script = connect_script(ip_pods(true));
    script.extend(refresh_script(ip_pods(true)));
    let (client, server) = fake(script);
    let t = target(client, kind(), timing()).await;
    assert_eq!(t.ports, NodePorts::kind());
    let pods = t.refresh().await.unwrap();
    assert_eq!(pods.len(), 6);

    let pg = t.postgres_endpoints();
    let got: Vec<(&str, &str, u16, u16, String)> = pg
        .members
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.node.as_str(),
                m.ports.postgres,
                m.ports.patroni,
                m.announced.to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "postgres-0",
                "faultline-worker",
                30432,
                30800,
                "10.244.1.3".into()
            ),
            (
                "postgres-1",
                "faultline-worker2",
                30432,
                30801,
                "10.244.2.3".into()
            ),
        ]
    );
    assert!(pg.members.iter().all(|m| m.addr == Ipv4Addr::LOCALHOST));
    assert!(
        pg.etcd.is_empty(),
        "Patroni's DCS is the Kubernetes API here"
    );
    assert_eq!(pg.password.expose(), "s3cret");

    let redis = t.redis_endpoints();
    let ports: Vec<u16> = redis.members.iter().map(|m| m.ports.redis).collect();
    assert_eq!(ports, [31379, 31380]);
    assert_eq!(redis.sentinels[0].ports.sentinel, 32380);
    assert_eq!(redis.node_of("10.244.2.9"), Some("faultline-worker2"));

    let qdrant = t.qdrant_endpoints();
    assert_eq!(
        (qdrant.peers[0].rest_port, qdrant.peers[0].grpc_port),
        (31330, 31340)
    );
    assert_eq!(
        qdrant.node_of_uri("http://qdrant-0.qdrant-headless.faultline.svc.cluster.local:6335/"),
        Some("faultline-worker3")
    );
    assert_eq!(
        Target::component(&t, ComponentKind::Redis).kind(),
        ComponentKind::Redis
    );

    let fp = t.fingerprint();
    assert_eq!(fp["target"], "kind");
    assert_eq!(fp["settings"]["patroni_ttl_in_effect"], 20);
    assert_eq!(fp["namespace"], NS);
    assert_eq!(fp["node_versions"].as_array().unwrap().len(), 4);
    let images: Vec<&str> = fp["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(images, [SPILO, "qdrant/qdrant:v1.18.3", "redis:7.4.2"]);
    drop(t);
    server.await.unwrap();
}

#[tokio::test]
async fn the_stack_is_not_healthy_while_a_pod_is_not_ready() {
    let mut script = connect_script(ip_pods(false));
    script.extend(refresh_script(ip_pods(false)));
    let (client, server) = fake(script);
    let t = target(client, kind(), timing()).await;
    let err = t.wait_healthy(Duration::ZERO).await.unwrap_err();
    assert!(err.contains("pods not Ready: redis-1"), "{err}");
    drop(t);
    server.await.unwrap();
}

#[tokio::test]
async fn the_role_holder_is_the_node_of_the_patroni_leader_pod() {
    let mut script = connect_script(stack_pods([None, Some("primary"), None]));
    script.push(ex(
        "GET",
        &pg_pods_path(),
        200,
        list(
            "PodList",
            stack_pods([None, Some("primary"), None])[..3].to_vec(),
        ),
    ));
    script.push(leader_endpoints(Some("postgres-1")));
    let (client, server) = fake(script);
    let t = target(client, kind(), timing()).await;
    assert_eq!(
        Target::role_holder(&t, ComponentKind::Postgres)
            .await
            .as_deref(),
        Some("faultline-worker2")
    );
    drop(t);
    server.await.unwrap();
}

#[tokio::test]
async fn server_log_lines_come_from_the_pods_logs() {
    let pg_log = "2026-11-23 06:30:05,001 INFO: no action. I am (postgres-1), a secondary\n\
                  2026-11-23 06:30:09,456 INFO: promoted self to leader by acquiring session lock\n";
    let sentinel_log = "1:X 23 Nov 2026 06:30:01.123 # +sdown master faultline 10.244.1.7 6379\n\
                        1:X 23 Nov 2026 06:30:04.500 # +switch-master faultline 10.244.1.7 6379 10.244.2.9 6379\n";
    let script = {
        let mut s = connect_script(ip_pods(true));
        s.push(ex(
            "GET",
            &pg_pods_path(),
            200,
            list("PodList", ip_pods(true)[..2].to_vec()),
        ));
        s.push(ex(
            "GET",
            &format!("{}/postgres-1/log", pg_pods_path()),
            200,
            json!(""),
        ));
        s.push(ex(
            "GET",
            &format!("{}/postgres-0/log", pg_pods_path()),
            200,
            json!(pg_log),
        ));
        s.push(ex(
            "GET",
            &pg_pods_path(),
            200,
            list("PodList", ip_pods(true)[4..5].to_vec()),
        ));
        s.push(ex(
            "GET",
            &format!("{}/redis-sentinel-0/log", pg_pods_path()),
            200,
            json!(sentinel_log),
        ));
        s
    };
    let (client, server) = fake(script);
    let t = target(client, kind(), timing()).await;
    let pg = t
        .server_log_lines(ComponentKind::Postgres, "promoted self to leader")
        .await;
    assert_eq!(pg.len(), 1);
    assert!(
        pg[0].1.starts_with("postgres-0: 2026-11-23 06:30:09,456"),
        "{}",
        pg[0].1
    );
    assert_eq!(
        faultline::clock::rfc3339_millis(pg[0].0),
        "2026-11-23T06:30:09.456Z"
    );
    let sw = t
        .server_log_lines(ComponentKind::Redis, "+switch-master")
        .await;
    assert_eq!(sw.len(), 1);
    assert_eq!(
        faultline::clock::rfc3339_millis(sw[0].0),
        "2026-11-23T06:30:04.500Z"
    );
    assert!(t
        .server_log_lines(ComponentKind::Qdrant, "x")
        .await
        .is_empty());
    drop(t);
    let seen = server.await.unwrap();
    assert!(
        seen[2]
            .uri
            .contains("labelSelector=app.kubernetes.io%2Fname%3Dpostgres"),
        "{}",
        seen[2].uri
    );
    assert!(seen[3].uri.contains("tailLines=5000"), "{}", seen[3].uri);
    assert!(
        seen[5]
            .uri
            .contains("labelSelector=app.kubernetes.io%2Fname%3Dredis-sentinel"),
        "{}",
        seen[5].uri
    );
}

#[tokio::test]
async fn target_faults_and_reverts_go_to_the_kubernetes_code() {
    let (client, server) = fake(connect_script(stack_pods([None, None, None])));
    let t = target(client, kind(), timing()).await;
    let dir = tempfile::tempdir().unwrap();
    let pause = FaultKind::ProcessPause {
        component: ComponentKind::Redis,
        target: NodeSelector::Role {
            component: ComponentKind::Redis,
            role: Role::Primary,
        },
    };
    let err = Target::apply_fault(&t, &journal(dir.path()), &pause)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("not available on the Kubernetes target"),
        "{err}"
    );
    let err = Target::revert(&t, &[RevertStep::LinkUp { node: "n1".into() }])
        .await
        .unwrap_err();
    assert!(err.contains("belongs to the local stack"), "{err}");
    drop(t);
    server.await.unwrap();
}

fn manifest_object_count() -> usize {
    deploy::MANIFESTS
        .iter()
        .map(|(f, t)| deploy::parse_manifest(f, t, NS, true).unwrap().len())
        .sum()
}

#[tokio::test]
async fn manifests_are_applied_server_side_by_the_faultline_field_manager() {
    for (namespace, opt_in) in [(NS, true), ("chaos", false)] {
        let mut patch = ex(
            "PATCH",
            "/*",
            200,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
        );
        patch.repeat = true;
        // `kubectl scale` made kubectl a manager of spec.replicas: the API server answers an apply that does not
        // force ownership with 409 Conflict, so `up` after a scale must force (faultline's manifests are the truth).
        patch.conflict_unless_forced = Some(
            "Apply failed with 1 conflict: conflict with \"kubectl\" using apps/v1: .spec.replicas",
        );
        let (client, server) = fake(vec![patch]);
        let n = deploy::apply_manifests(&client, namespace, opt_in)
            .await
            .unwrap();
        drop(client);
        let seen = server.await.unwrap();
        assert_eq!(n, manifest_object_count());
        assert_eq!(seen.len(), n);
        for s in &seen {
            assert_eq!(s.method, "PATCH");
            assert!(s.uri.contains("fieldManager=faultline"), "{}", s.uri);
            assert_eq!(
                s.content_type.as_deref(),
                Some("application/apply-patch+yaml"),
                "{}",
                s.uri
            );
        }
        assert!(
            seen[0]
                .uri
                .starts_with(&format!("/api/v1/namespaces/{namespace}?")),
            "the namespace first: {}",
            seen[0].uri
        );
        let label = &seen[0].body["metadata"]["labels"]["faultline.dev/chaos"];
        if opt_in {
            assert_eq!(label, "allowed");
        } else {
            assert!(
                label.is_null(),
                "an existing cluster's owner opts in, not faultline"
            );
        }
        assert!(seen.iter().any(|s| s.uri.starts_with(&format!(
            "/apis/apps/v1/namespaces/{namespace}/statefulsets/postgres?"
        ))));
        assert!(seen[1..]
            .iter()
            .all(|s| s.uri.contains(&format!("/namespaces/{namespace}/"))));
    }
}

fn stateful_set(name: &str, ready: i32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": name, "namespace": NS},
           "spec": {"replicas": 3, "serviceName": name, "selector": {}, "template": {}},
           "status": {"replicas": 3, "readyReplicas": ready}})
}

#[tokio::test]
async fn deployment_waits_for_every_stateful_set_with_a_deadline() {
    let path = format!("/apis/apps/v1/namespaces/{NS}/statefulsets");
    let (client, server) = fake(vec![
        ex(
            "GET",
            &path,
            200,
            list(
                "StatefulSetList",
                vec![stateful_set("postgres", 2), stateful_set("redis", 3)],
            ),
        ),
        ex(
            "GET",
            &path,
            200,
            list(
                "StatefulSetList",
                vec![stateful_set("postgres", 3), stateful_set("redis", 3)],
            ),
        ),
    ]);
    deploy::wait_stateful_sets_ready(
        &client,
        NS,
        Duration::from_secs(5),
        Duration::from_millis(10),
    )
    .await
    .unwrap();
    drop(client);
    assert_eq!(server.await.unwrap().len(), 2);

    let mut not_ready = ex(
        "GET",
        &path,
        200,
        list("StatefulSetList", vec![stateful_set("postgres", 2)]),
    );
    not_ready.repeat = true;
    let (client, server) = fake(vec![not_ready]);
    let err = deploy::wait_stateful_sets_ready(
        &client,
        NS,
        Duration::from_millis(50),
        Duration::from_millis(10),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("postgres 2/3 Ready"), "{err}");
    drop(client);
    server.await.unwrap();
}

/// A pod as a watch or list reports it: with its resourceVersion and the Ready condition's transition time.
fn pod_at(name: &str, ready: bool, version: &str, since: &str) -> Value {
    let mut p = pod(name, "postgres", "faultline-worker", None, ready);
    p["metadata"]["resourceVersion"] = json!(version);
    p["status"]["conditions"][0]["lastTransitionTime"] = json!(since);
    p
}

fn kube_event(uid: &str, version: &str, reason: &str, last: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("postgres-0.{uid}"), "namespace": NS, "uid": uid, "resourceVersion": version},
        "involvedObject": {"kind": "Pod", "name": "postgres-0", "namespace": NS},
        "reason": reason, "message": format!("{reason} on postgres-0"), "type": "Warning",
        "firstTimestamp": last, "lastTimestamp": last, "count": 1
    })
}

/// A list as of a resourceVersion, which the watch that follows starts from.
fn listed(path: &str, kind: &str, version: &str, items: Vec<Value>) -> Exchange {
    let mut reply = list(kind, items);
    reply["metadata"]["resourceVersion"] = json!(version);
    ex("GET", path, 200, reply)
}

/// A watch response: one JSON object a line, as the API server streams it (kube-rs reads the lines whatever the
/// content type, so the fake's plain-text reply serves).
fn watched(path: &str, changes: &[(&str, Value)]) -> Exchange {
    let lines = changes
        .iter()
        .map(|(kind, object)| format!("{}\n", json!({"type": kind, "object": object})))
        .collect();
    ex("GET", path, 200, Value::String(lines))
}

fn held_watch(path: &str) -> Exchange {
    Exchange {
        hold: true,
        ..ex("GET", path, 200, Value::Null)
    }
}

fn events_path() -> String {
    format!("/api/v1/namespaces/{NS}/events")
}

/// Runs the target's observer until `want` timeline entries arrived (5 s at most), stops it and checks that it
/// ends; returns the entries and what the fake API server received.
async fn observe(script: Vec<Exchange>, want: usize) -> (Vec<EventKind>, Vec<Seen>) {
    let (client, server) = fake_with(script, Order::PerPath);
    let t = target(client, kind(), timing()).await;
    let log = EventLog::new(Clock::start());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let observer = t
        .spawn_observer(log.clone(), stop_rx)
        .expect("kube has an observer");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while log.snapshot().len() < want && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Room for anything that should not come.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(1), observer)
        .await
        .expect("the observer stops when told, its watches still open")
        .unwrap();
    drop(t);
    let seen = server.await.unwrap();
    (log.snapshot().into_iter().map(|e| e.kind).collect(), seen)
}

fn readiness_changes(kinds: &[EventKind]) -> Vec<(String, bool, Option<String>)> {
    kinds
        .iter()
        .filter_map(|k| match k {
            EventKind::PodReadiness {
                pod,
                ready,
                server_time,
                ..
            } => Some((pod.clone(), *ready, server_time.clone())),
            _ => None,
        })
        .collect()
}

fn kubernetes_events(kinds: &[EventKind]) -> Vec<&EventKind> {
    kinds
        .iter()
        .filter(|k| matches!(k, EventKind::KubernetesEvent { .. }))
        .collect()
}

fn watch_uris<'a>(seen: &'a [Seen], path: &str) -> Vec<&'a str> {
    seen.iter()
        .map(|s| s.uri.as_str())
        .filter(|u| u.starts_with(path) && u.contains("watch=true"))
        .collect()
}

#[tokio::test]
async fn the_observer_reports_readiness_transitions_and_new_events_but_not_the_state_it_started_from(
) {
    let (pods, events) = (pg_pods_path(), events_path());
    let long_ago = "2001-01-01T00:00:00Z";
    let mut script = connect_script(stack_pods([Some("primary"), None, None]));
    script.extend([
        listed(&pods, "PodList", "10", vec![
            pod_at("postgres-0", true, "8", long_ago),
            pod_at("postgres-1", false, "9", long_ago),
        ]),
        listed(&events, "EventList", "20", vec![kube_event("old", "19", "BackOff", long_ago)]),
        watched(&pods, &[
            ("MODIFIED", pod_at("postgres-0", false, "11", "2099-01-01T00:00:01Z")),
            // Still not Ready: no transition.
            ("MODIFIED", pod_at("postgres-1", false, "12", long_ago)),
            ("MODIFIED", pod_at("postgres-0", true, "13", "2099-01-01T00:00:07.250Z")),
            ("BOOKMARK", json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "15"}})),
        ]),
        held_watch(&pods),
        watched(&events, &[("ADDED", kube_event("new", "21", "Unhealthy", "2099-01-01T00:00:02Z"))]),
        held_watch(&events),
    ]);
    let (kinds, seen) = observe(script, 3).await;
    assert_eq!(
        readiness_changes(&kinds),
        vec![
            (
                "postgres-0".into(),
                false,
                Some("2099-01-01T00:00:01.000Z".into())
            ),
            (
                "postgres-0".into(),
                true,
                Some("2099-01-01T00:00:07.250Z".into())
            ),
        ]
    );
    assert_eq!(
        kubernetes_events(&kinds),
        vec![&EventKind::KubernetesEvent {
            object: "Pod/postgres-0".into(),
            reason: "Unhealthy".into(),
            message: "Unhealthy on postgres-0".into(),
            event_type: "Warning".into(),
            server_time: Some("2099-01-01T00:00:02.000Z".into()),
        }]
    );
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    // Each watch resumes from the last version seen: the list's, then the bookmark's or the last object's.
    let versions = |path: &str| -> Vec<String> {
        watch_uris(&seen, path)
            .iter()
            .map(|u| u.split("resourceVersion=").nth(1).unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(versions(&pods), ["10", "15"]);
    assert_eq!(versions(&events), ["20", "21"]);
}

#[tokio::test]
async fn the_observer_reports_a_deleted_pod_and_relists_after_410_gone_without_replaying_history() {
    let (pods, events) = (pg_pods_path(), events_path());
    let gone = || status(410, "Expired", "too old resource version");
    let mut script = connect_script(stack_pods([Some("primary"), None, None]));
    script.extend([
        listed(
            &pods,
            "PodList",
            "10",
            vec![pod_at("postgres-0", true, "8", "2001-01-01T00:00:00Z")],
        ),
        listed(&events, "EventList", "20", Vec::new()),
        watched(
            &pods,
            &[
                (
                    "DELETED",
                    pod_at("postgres-0", true, "11", "2001-01-01T00:00:00Z"),
                ),
                // Recreated under the same name, not Ready yet: still the "not Ready" already reported.
                (
                    "ADDED",
                    pod_at("postgres-0", false, "12", "2099-01-01T00:00:03Z"),
                ),
                ("ERROR", gone()),
            ],
        ),
        listed(
            &pods,
            "PodList",
            "30",
            vec![pod_at("postgres-0", true, "29", "2099-01-01T00:00:09Z")],
        ),
        held_watch(&pods),
        ex("GET", &events, 410, gone()),
        listed(
            &events,
            "EventList",
            "40",
            vec![
                kube_event("before-the-trial", "38", "BackOff", "2001-01-01T00:00:00Z"),
                kube_event("missed", "39", "Killing", "2099-01-01T00:00:01Z"),
            ],
        ),
        held_watch(&events),
    ]);
    let (kinds, seen) = observe(script, 3).await;
    assert_eq!(
        readiness_changes(&kinds),
        vec![
            ("postgres-0".into(), false, None),
            (
                "postgres-0".into(),
                true,
                Some("2099-01-01T00:00:09.000Z".into())
            ),
        ]
    );
    let found = kubernetes_events(&kinds);
    assert!(
        matches!(found[..], [EventKind::KubernetesEvent { reason, .. }] if reason == "Killing"),
        "{found:?}"
    );
    assert!(watch_uris(&seen, &pods)[1].ends_with("resourceVersion=30"));
    assert!(watch_uris(&seen, &events)[1].ends_with("resourceVersion=40"));
}

fn worker3_latency() -> FaultKind {
    FaultKind::Latency {
        side_a: vec![NodeSelector::Node("faultline-worker3".into())],
        side_b: vec![],
        direction: PartitionDirection::Both,
        delay: Duration::from_millis(100),
        jitter: Duration::from_millis(20),
    }
}

/// Any NetworkChaos of faultline's with this action (the name carries a generated id).
fn traffic_object_path(action: &str) -> String {
    format!("{}/faultline-{action}-*", chaos_path())
}

/// latency on Kubernetes: worker3's pods against every other pod, labelled like a partition's sides, one
/// NetworkChaos `delay` (netem in each sending pod, both directions), effective when Chaos Mesh reports it
/// injected; the revert deletes it, waits until it is gone and unlabels the pods. No API server cut.
#[tokio::test]
async fn latency_with_chaos_mesh_is_one_delay_network_chaos_and_revert_removes_it() {
    let pods = stack_pods([None, None, None]);
    let mut script = connect_script(pods.clone());
    script.push(ex("GET", &pg_pods_path(), 200, list("PodList", pods)));
    script.push(crd(200));
    script.extend(SIDE_A.iter().chain(&SIDE_B).map(|p| {
        ex(
            "PATCH",
            &format!("/api/v1/namespaces/{NS}/pods/{p}"),
            200,
            pod(p, "x", "n", None, true),
        )
    }));
    let object = traffic_object_path("delay");
    let reply = |conditions: &[(&str, &str)]| {
        let mut v = network_chaos_reply(conditions);
        v["spec"]["action"] = json!("delay");
        v
    };
    script.push(ex("POST", &chaos_path(), 201, reply(&[])));
    script.push(ex(
        "GET",
        &object,
        200,
        reply(&[("Selected", "False"), ("AllInjected", "True")]),
    ));
    script.push(ex(
        "GET",
        &object,
        200,
        reply(&[("Selected", "True"), ("AllInjected", "True")]),
    ));
    // revert: DELETE, held once by Chaos Mesh's finalizer, then gone; the labels come off
    script.push(ex("DELETE", &object, 200, reply(&[])));
    script.push(ex("GET", &object, 200, reply(&[])));
    script.push(ex(
        "GET",
        &object,
        404,
        status(404, "NotFound", "networkchaos not found"),
    ));
    script.extend(unlabel_script());
    let (client, server) = fake(script);
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path());
    let t = target(client, kind(), timing()).await;
    let active = t.apply_fault(&j, &worker3_latency()).await.unwrap();
    // effective only once Selected and AllInjected were both True (one poll did not see it)
    assert!(active.effective_at.duration_since(active.requested_at) >= timing().poll);
    let name = match &active.steps[0] {
        RevertStep::KubeDeleteNetworkChaos { namespace, name } => {
            assert_eq!(namespace, NS);
            name.clone()
        }
        other => panic!("the first revert step deletes the NetworkChaos, got {other:?}"),
    };
    let id = name.strip_prefix("faultline-delay-").unwrap().to_string();
    assert_eq!(
        active.steps.len(),
        7,
        "no API server cut: {:?}",
        active.steps
    );
    assert!(active.steps[1..]
        .iter()
        .all(|s| matches!(s, RevertStep::KubeUnlabelPod { label, .. } if label == "faultline.dev/partition")));
    assert!(
        active.description.starts_with(&format!(
            "latency 100 ms ± 20 ms by Chaos Mesh NetworkChaos {name} (action delay: netem in each sending pod, \
             direction both), injected after "
        )),
        "{}",
        active.description
    );
    assert_eq!(j.open_entries()[0].steps, active.steps);
    assert_eq!(j.open_entries()[0].fault, "latency");
    t.revert(&active.steps).await.unwrap();
    drop(t);
    let seen = server.await.unwrap();
    assert_eq!(seen[3].uri, crd_path());
    for (s, p) in seen[4..10].iter().zip(SIDE_A.iter().chain(&SIDE_B)) {
        let side = if SIDE_A.contains(p) { "a" } else { "b" };
        assert_eq!(
            s.body["metadata"]["labels"]["faultline.dev/partition"],
            json!(format!("{id}-{side}"))
        );
    }
    assert_eq!(
        seen[10].body,
        json!({
            "apiVersion": "chaos-mesh.org/v1alpha1", "kind": "NetworkChaos",
            "metadata": {"name": name, "labels": {"faultline.dev/owner": "faultline"}},
            "spec": {
                "action": "delay", "mode": "all", "direction": "both",
                "selector": {"namespaces": [NS],
                             "labelSelectors": {"faultline.dev/partition": format!("{id}-a")}},
                "target": {"mode": "all", "selector": {"namespaces": [NS],
                           "labelSelectors": {"faultline.dev/partition": format!("{id}-b")}}},
                "delay": {"latency": "100ms", "jitter": "20ms", "correlation": "0"}
            }
        })
    );
    assert_eq!(seen[13].method, "DELETE");
    assert_unlabelled(&seen[16..]);
    assert!(j.open_entries().len() == 1, "closing is the engine's job");
}

/// Without Chaos Mesh nothing can slow or drop a share of the packets: loss is refused before anything is
/// labelled or journaled, naming what it needs.
#[tokio::test]
async fn loss_without_chaos_mesh_is_refused_before_anything_is_applied() {
    let pods = stack_pods([None, None, None]);
    let mut script = connect_script(pods.clone());
    script.push(ex("GET", &pg_pods_path(), 200, list("PodList", pods)));
    script.push(crd(404));
    let (client, server) = fake(script);
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path());
    let t = target(client, kind(), timing()).await;
    let loss = FaultKind::Partition {
        side_a: vec![NodeSelector::Node("faultline-worker3".into())],
        side_b: vec![],
        direction: PartitionDirection::Both,
        loss_pct: 5,
    };
    let err = t.apply_fault(&j, &loss).await.unwrap_err().to_string();
    assert!(
        err.contains("loss on Kubernetes needs Chaos Mesh")
            && err.contains("no CRD networkchaos.chaos-mesh.org"),
        "{err}"
    );
    assert!(j.entries().is_empty(), "nothing journaled");
    drop(t);
    let seen = server.await.unwrap();
    assert_eq!(seen.len(), 4, "no pod labelled, nothing created");
    assert_eq!(seen[3].uri, crd_path());
}
