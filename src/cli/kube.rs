//! The commands against a Kubernetes target: `--target kind` (faultline's kind cluster, created and deleted by
//! faultline) and `--target kube` (an existing cluster: deploys only with `--deploy`, injects only into a namespace
//! labelled `faultline.dev/chaos=allowed`).

use std::time::Duration;

use ::kube::config::KubeConfigOptions;
use ::kube::{Client, Config};

use super::report_env;
use crate::component::{postgres, redis as redis_component};
use crate::exit;
use crate::fault::journal::Journal;
use crate::scenario::{ComponentKind, Scenario};
use crate::targets::kube::{
    deploy, kind_cluster, pod_name, pod_node, pod_ready, Cluster, DockerApi, KubeTarget,
    KubeTiming, PartitionBackend, StackSelectors,
};
use crate::targets::{components_needed, Target, TargetError};

/// Which cluster a command talks to.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// Network namespaces on this machine.
    Local,
    /// faultline's kind cluster (`kind/cluster.yaml`, context kind-faultline).
    Kind,
    /// An existing cluster, by kubeconfig context.
    Kube,
}

#[derive(clap::Args, Debug, Clone)]
pub struct TargetArgs {
    /// Where the stack runs: local, kind or kube
    #[arg(long, value_enum, default_value_t = TargetKind::Local)]
    pub target: TargetKind,
    /// kubeconfig context (kind: default kind-faultline; kube: default the current context)
    #[arg(long)]
    pub context: Option<String>,
    /// Namespace of the stack on Kubernetes
    #[arg(long, default_value = "faultline")]
    pub namespace: String,
    /// How partitions are made on Kubernetes: auto (Chaos Mesh when its NetworkChaos CRD is installed, else a
    /// NetworkPolicy pair), network-policy or chaos-mesh
    #[arg(long, default_value_t = PartitionBackend::Auto)]
    pub partition_backend: PartitionBackend,
}

impl TargetArgs {
    pub fn is_local(&self) -> bool {
        self.target == TargetKind::Local
    }

    /// `--context`/`--namespace`/`--partition-backend` only mean something on Kubernetes.
    pub fn check(&self) -> Result<(), String> {
        if self.is_local()
            && (self.context.is_some()
                || self.namespace != "faultline"
                || self.partition_backend != PartitionBackend::Auto)
        {
            return Err(
                "--context, --namespace and --partition-backend apply to --target kind|kube only"
                    .into(),
            );
        }
        Ok(())
    }

    fn context(&self) -> Option<String> {
        match self.target {
            TargetKind::Kind => Some(
                self.context
                    .clone()
                    .unwrap_or_else(|| kind_cluster::CONTEXT.to_string()),
            ),
            _ => self.context.clone(),
        }
    }
}

/// A client for the context, proven to reach the API server.
async fn client(args: &TargetArgs) -> Result<Client, TargetError> {
    let context = args.context();
    let shown = context.clone().unwrap_or_else(|| "(current)".into());
    let env = |m: String| TargetError::Environment(m);
    let options = KubeConfigOptions {
        context: context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = Config::from_kubeconfig(&options)
        .await
        .map_err(|e| env(format!("no usable kubeconfig context {shown}: {e}")))?;
    let client = Client::try_from(config)
        .map_err(|e| env(format!("cannot build a client for context {shown}: {e}")))?;
    client.apiserver_version().await.map_err(|e| {
        env(format!(
            "cannot reach the Kubernetes API of context {shown}: {e}"
        ))
    })?;
    Ok(client)
}

/// The stack's target in the namespace, with its pods read.
pub async fn connect(args: &TargetArgs) -> Result<KubeTarget, TargetError> {
    let client = client(args).await?;
    let cluster = match args.target {
        TargetKind::Kind => Cluster::Kind {
            docker: DockerApi::default(),
        },
        _ => Cluster::Existing,
    };
    let mut target = KubeTarget::connect(
        client,
        &args.namespace,
        cluster,
        StackSelectors::default(),
        KubeTiming::default(),
    )
    .await?;
    target.context = args.context();
    target.partition_backend = args.partition_backend;
    target.refresh().await?;
    Ok(target)
}

/// `up --target kind|kube`.
pub async fn up(args: &TargetArgs, deploy: bool) -> i32 {
    const STATEFUL_SETS_DEADLINE: Duration = Duration::from_secs(600);
    const HEALTHY_DEADLINE: Duration = Duration::from_secs(180);
    let started = std::time::Instant::now();
    let opt_in = match args.target {
        TargetKind::Kind => {
            match kind_cluster::create_unless_exists().await {
                Ok(Some(subnet)) => {
                    if let Some(subnet) = subnet {
                        println!("created Docker network kind with IPv4 subnet {subnet}");
                    }
                    println!("created kind cluster `{}`", kind_cluster::CLUSTER_NAME)
                }
                Ok(None) => println!("reusing kind cluster `{}`", kind_cluster::CLUSTER_NAME),
                Err(e) => return report_env(e),
            }
            for note in kind_cluster::preload_images().await {
                println!("{note}");
            }
            true
        }
        _ => false,
    };
    let client = match client(args).await {
        Ok(c) => c,
        Err(e) => return report_env(e),
    };
    if args.target == TargetKind::Kind || deploy {
        match deploy::apply_manifests(&client, &args.namespace, opt_in).await {
            Ok(n) => println!(
                "applied {n} objects to namespace {} (server-side apply, field manager {})",
                args.namespace,
                deploy::FIELD_MANAGER
            ),
            Err(e) => return report_env(e),
        }
        if let Err(e) = deploy::wait_stateful_sets_ready(
            &client,
            &args.namespace,
            STATEFUL_SETS_DEADLINE,
            Duration::from_secs(2),
        )
        .await
        {
            return report_env(e);
        }
    } else {
        println!(
            "not deploying into context {} (pass --deploy to apply the manifests)",
            args.context().unwrap_or_else(|| "(current)".into())
        );
    }
    drop(client);
    let target = match connect(args).await {
        Ok(t) => t,
        Err(e) => return report_env(e),
    };
    match target.wait_healthy(HEALTHY_DEADLINE).await {
        Ok(h) => {
            println!(
                "stack in namespace {} is up and healthy ({:.1} s): {h}",
                args.namespace,
                started.elapsed().as_secs_f64()
            );
            exit::PASS
        }
        Err(e) => report_env(e),
    }
}

/// `down --target kind` deletes the cluster; an existing cluster is never torn down by faultline.
pub async fn down(args: &TargetArgs) -> i32 {
    match args.target {
        TargetKind::Kind => match kind_cluster::delete().await {
            Ok(network) => {
                println!("kind cluster `{}` deleted", kind_cluster::CLUSTER_NAME);
                println!("{network}");
                exit::PASS
            }
            Err(e) => report_env(e),
        },
        _ => report_env(format!(
            "faultline does not tear down a stack on a cluster it did not create; remove it with \
             `kubectl delete namespace {}` if it is yours",
            args.namespace
        )),
    }
}

/// Before a scenario: the pods as they are now, the opt-in label, and the components it needs.
pub async fn prepare_scenario(target: &KubeTarget, sc: &Scenario) -> Result<(), String> {
    target.refresh().await.map_err(|e| e.to_string())?;
    target
        .ensure_chaos_allowed()
        .await
        .map_err(|e| e.to_string())?;
    let needs_qdrant = components_needed(sc).contains(&ComponentKind::Qdrant);
    if needs_qdrant && target.qdrant_endpoints().peers.is_empty() {
        return Err(format!(
            "scenario `{}` needs Qdrant, and namespace {} has no qdrant pod",
            sc.name, target.namespace
        ));
    }
    Ok(())
}

/// `run --dry-run --target kind|kube`: what each fault would hit now.
pub async fn dry_run(args: &TargetArgs, sc: &Scenario) -> i32 {
    let target = match connect(args).await {
        Ok(t) => t,
        Err(e) => return report_env(e),
    };
    match target.plan(&sc.faults).await {
        Ok(lines) => {
            println!(
                "target {:?} (namespace {}), resolved against the cluster now:",
                args.target, args.namespace
            );
            for l in lines {
                println!("  {l}");
            }
            exit::PASS
        }
        Err(e) => report_env(e),
    }
}

/// `status --target kind|kube`.
pub async fn status(args: &TargetArgs, journal: &Journal) -> i32 {
    let target = match connect(args).await {
        Ok(t) => t,
        Err(e) => return report_env(e),
    };
    let t = Target::topology(&target);
    println!("stack in namespace {} ({})", args.namespace, t.name);
    for n in &t.nodes {
        println!("  {:<28} {:<6} {:<10} {}", n.name, n.zone, n.region, n.addr);
    }
    match target.refresh().await {
        Ok(pods) => {
            for p in &pods {
                println!(
                    "  pod {:<20} on {:<28} {}",
                    pod_name(p),
                    pod_node(p).unwrap_or("(unscheduled)"),
                    if pod_ready(p) { "Ready" } else { "NOT Ready" }
                );
            }
        }
        Err(e) => return report_env(e),
    }
    for c in [
        ComponentKind::Postgres,
        ComponentKind::Redis,
        ComponentKind::Qdrant,
    ] {
        if let Some(n) = target.role_holder(c).await {
            println!("  {c} primary on {n}");
        }
    }
    print_open_entries(journal);
    match target.wait_healthy(Duration::ZERO).await {
        Ok(h) => {
            println!("health: ok ({h})");
            exit::PASS
        }
        Err(e) => {
            println!("health: NOT healthy: {e}");
            exit::ENVIRONMENT
        }
    }
}

fn print_open_entries(journal: &Journal) {
    let open: Vec<_> = journal
        .open_entries()
        .into_iter()
        .filter(|e| e.steps.iter().any(|s| s.is_kube()))
        .collect();
    if open.is_empty() {
        println!("fault journal: no open Kubernetes entry");
    }
    for e in open {
        println!(
            "fault journal: OPEN {} ({}, pid {}, since {})",
            e.id, e.description, e.pid, e.opened_at
        );
    }
}

/// `recover --target kind|kube`: reverts every open journal entry with Kubernetes steps, waits for the stack to
/// be healthy and proves the primary and the master accept a write.
pub async fn recover(args: &TargetArgs, journal: &Journal) -> i32 {
    let target = match connect(args).await {
        Ok(t) => t,
        Err(e) => return report_env(e),
    };
    let mut failed = false;
    for e in journal.open_entries() {
        if !e.steps.iter().any(|s| s.is_kube()) {
            continue;
        }
        match Target::revert(&target, &e.steps).await {
            Ok(()) => {
                let _ = journal.close(&e.id, "reverted by `faultline recover`");
                println!("reverted {} ({})", e.id, e.description);
            }
            Err(err) => {
                failed = true;
                println!("could not fully revert {}: {err}", e.id);
            }
        }
    }
    match target.wait_healthy(Duration::from_secs(180)).await {
        Ok(h) if !failed => {
            let pg =
                postgres::write_probe(&target.postgres_endpoints(), Duration::from_secs(10)).await;
            let rd =
                redis_component::write_probe(&target.redis_endpoints(), Duration::from_secs(10))
                    .await;
            match (pg, rd) {
                (Ok(pg), Ok(rd)) => {
                    println!("recovered: postgres primary {pg} and redis master {rd} accept writes ({h})");
                    exit::PASS
                }
                (Err(e), _) | (_, Err(e)) => report_env(e),
            }
        }
        Ok(_) => exit::ENVIRONMENT,
        Err(e) => report_env(format!("the stack is not healthy after recovery: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        on: TargetArgs,
    }

    fn parse(args: &[&str]) -> Result<TargetArgs, String> {
        Args::try_parse_from(std::iter::once("faultline").chain(args.iter().copied()))
            .map(|a| a.on)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_partition_backend_is_a_kubernetes_flag() {
        assert_eq!(
            parse(&[]).unwrap().partition_backend,
            PartitionBackend::Auto
        );
        let on = parse(&["--target", "kube", "--partition-backend", "chaos-mesh"]).unwrap();
        assert_eq!(on.partition_backend, PartitionBackend::ChaosMesh);
        assert!(on.check().is_ok());
        let local = parse(&["--partition-backend", "network-policy"]).unwrap();
        let err = local.check().unwrap_err();
        assert!(err.contains("--partition-backend"), "{err}");
        let err = parse(&["--target", "kind", "--partition-backend", "mesh"]).unwrap_err();
        assert!(err.contains("unknown partition backend `mesh`"), "{err}");
    }
}
