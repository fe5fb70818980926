//! End-to-end tests of the Kubernetes target against a real kind cluster with the stack deployed from kind/.
//! They cannot run without one (and never ran on the machines this was written on). Run them with:
//!
//! ```sh
//! faultline up --target kind      # or: kind create cluster --name faultline --config kind/cluster.yaml
//!                                 #     kubectl apply -f kind/manifests/ && kubectl -n faultline wait ...
//! cargo test --test kube_e2e -- --ignored --test-threads=1
//! ```
//!
//! The current kubeconfig context must point at that cluster; node faults use /var/run/docker.sock.
//!
//! The tests break one shared cluster: run them one at a time (`--test-threads=1`), and every applied fault is held
//! by a `Reverting` guard, so a test that panics half-way still reverts its fault before the next test starts.

use std::time::{Duration, Instant};

use faultline::fault::journal::Journal;
use faultline::fault::{ActiveFault, RevertStep};
use faultline::scenario::{ComponentKind, FaultKind, NodeLossMethod, NodeSelector, Role};
use faultline::targets::kube::{Cluster, DockerApi, KubeTarget, KubeTiming, StackSelectors};

const NS: &str = "faultline";

async fn kind_target() -> KubeTarget {
    let client = kube::Client::try_default()
        .await
        .expect("a kubeconfig pointing at the kind cluster");
    KubeTarget::connect(
        client,
        NS,
        Cluster::Kind {
            docker: DockerApi::default(),
        },
        StackSelectors::default(),
        KubeTiming::default(),
    )
    .await
    .unwrap()
}

/// Reverts a fault's steps when dropped, unless `revert` already did: a failed assertion or a panic between the
/// apply and the revert does not leave the cluster broken for the next test. Dropping blocks on the revert, so the
/// tests run on the multi-threaded runtime.
struct Reverting<'a> {
    target: &'a KubeTarget,
    steps: Vec<RevertStep>,
    done: bool,
}

impl<'a> Reverting<'a> {
    fn new(target: &'a KubeTarget, active: &ActiveFault) -> Self {
        Reverting {
            target,
            steps: active.steps.clone(),
            done: false,
        }
    }

    /// The test's own revert: asserted, and the guard disarmed.
    async fn revert(mut self) {
        self.done = true;
        self.target.revert(&self.steps).await.unwrap();
    }
}

impl Drop for Reverting<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (target, steps) = (self.target, &self.steps);
        let result = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(target.revert(steps))
        });
        if let Err(e) = result {
            eprintln!("reverting after a failed test: {e}");
        }
    }
}

/// Waits, with a deadline, until Patroni agrees on a leader other than `old`.
async fn wait_new_leader(t: &KubeTarget, old: &str, deadline: Duration) -> String {
    wait_leader_outside(t, &[old.to_string()], deadline).await
}

/// Waits, with a deadline, until Patroni agrees on a leader on none of `lost`.
async fn wait_leader_outside(t: &KubeTarget, lost: &[String], deadline: Duration) -> String {
    let end = Instant::now() + deadline;
    loop {
        if let Ok(n) = t.role_node(ComponentKind::Postgres, Role::Primary).await {
            if !lost.contains(&n) {
                return n;
            }
        }
        assert!(
            Instant::now() < end,
            "no Patroni leader outside {lost:?} within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kind cluster"]
async fn kind_nodes_carry_zones_and_the_stack_is_spread() {
    let t = kind_target().await;
    let topo = t.topology();
    assert_eq!(topo.nodes.len(), 6, "{:?}", topo.nodes);
    assert_eq!(topo.zones().len(), 3);
    assert_eq!(topo.members(ComponentKind::Postgres).len(), 3);
    t.role_node(ComponentKind::Postgres, Role::Primary)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kind cluster"]
async fn killing_the_patroni_leader_sigkills_its_containers_and_the_kubelet_restarts_them() {
    let t = kind_target().await;
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::new(dir.path().join("journal"));
    let fault = FaultKind::ProcessKill {
        component: ComponentKind::Postgres,
        target: NodeSelector::Role {
            component: ComponentKind::Postgres,
            role: Role::Primary,
        },
    };
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(t.client.clone(), NS);
    let restarts = |p: &k8s_openapi::api::core::v1::Pod| -> i32 {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
    };
    let leader = t.primary_pod(ComponentKind::Postgres).await.unwrap();
    let before = restarts(&leader);
    let active = t.apply_fault(&j, &fault).await.unwrap();
    let guard = Reverting::new(&t, &active);
    assert!(
        matches!(&active.steps[..], [RevertStep::KubeContainersRestarted { killed, .. }] if !killed.is_empty()),
        "{:?}",
        active.steps
    );
    let victim = &active.victims[0];
    assert_eq!(Some(victim.as_str()), leader.metadata.name.as_deref());
    // The revert returns once the kubelet has replaced the killed containers and the pod is Ready. Whether Patroni
    // failed over or the restarted member kept its lock (it returns within the ttl of 20 s) is Patroni's call: a
    // leader must exist either way.
    guard.revert().await;
    let after = restarts(&pods.get(victim).await.unwrap());
    assert!(
        after > before,
        "the kubelet restarted the killed containers: restarts {before} -> {after}"
    );
    wait_leader_outside(&t, &[], Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kind cluster"]
async fn draining_a_node_evicts_its_pods_and_revert_uncordons_it() {
    let t = kind_target().await;
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::new(dir.path().join("journal"));
    let replica = t
        .role_node(ComponentKind::Postgres, Role::Replica)
        .await
        .unwrap();
    let fault = FaultKind::NodeDrain {
        target: NodeSelector::Node(replica),
    };
    let active = t.apply_fault(&j, &fault).await.unwrap();
    Reverting::new(&t, &active).revert().await;
}

/// Reverts the fault and waits, with a deadline, until the stack is healthy again.
async fn revert_and_wait_healthy(t: &KubeTarget, guard: Reverting<'_>) {
    guard.revert().await;
    t.refresh().await.unwrap();
    faultline::targets::Target::wait_healthy(t, Duration::from_secs(300))
        .await
        .unwrap();
}

/// Loses the Patroni leader's node container by `method`, waits for a new leader, reverts, waits for health.
async fn lose_the_leader_node(method: NodeLossMethod) {
    let t = kind_target().await;
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::new(dir.path().join("journal"));
    let old = t
        .role_node(ComponentKind::Postgres, Role::Primary)
        .await
        .unwrap();
    let fault = FaultKind::NodeLoss {
        target: NodeSelector::Node(old.clone()),
        method,
    };
    let active = t.apply_fault(&j, &fault).await.unwrap();
    let guard = Reverting::new(&t, &active);
    wait_new_leader(&t, &old, Duration::from_secs(90)).await;
    revert_and_wait_healthy(&t, guard).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kind cluster"]
async fn losing_the_leader_node_container_moves_the_leader_and_revert_restarts_it() {
    lose_the_leader_node(NodeLossMethod::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kind cluster"]
async fn pausing_the_leader_node_container_moves_the_leader_and_revert_unpauses_it() {
    lose_the_leader_node(NodeLossMethod::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kind cluster"]
async fn disconnecting_the_leader_node_moves_the_leader_and_revert_reconnects_it() {
    lose_the_leader_node(NodeLossMethod::Disconnect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kind cluster"]
async fn losing_region_b_keeps_a_patroni_leader_and_revert_brings_its_nodes_back() {
    let t = kind_target().await;
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::new(dir.path().join("journal"));
    let fault = FaultKind::RegionLoss {
        target: NodeSelector::Region("region-b".into()),
        method: NodeLossMethod::Stop,
    };
    let active = t.apply_fault(&j, &fault).await.unwrap();
    let guard = Reverting::new(&t, &active);
    assert_eq!(active.victims.len(), 2, "{:?}", active.victims);
    wait_leader_outside(&t, &active.victims, Duration::from_secs(90)).await;
    revert_and_wait_healthy(&t, guard).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kind cluster"]
async fn the_stack_is_healthy_through_the_nodeports() {
    let t = kind_target().await;
    t.refresh().await.unwrap();
    let summary = faultline::targets::Target::wait_healthy(&t, Duration::from_secs(180))
        .await
        .unwrap();
    assert!(summary.contains("postgres leader on"), "{summary}");
    let pg = t.postgres_endpoints();
    assert_eq!(pg.members.len(), 3);
    assert!(pg.members.iter().all(|m| !m.announced.is_unspecified()));
}
