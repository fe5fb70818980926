//! The local stack as a `Target`: fault kinds mapped onto namespaces, cgroups and nft.

use std::time::{Duration, SystemTime};

use super::{delay_agent, netns, process, LocalStack, ProcessKind};
use crate::component::postgres;
use crate::component::redis as redis_component;
use crate::component::{Component, PostgresComponent, QdrantComponent, RedisComponent};
use crate::drill::integrity::PostgresAfter;
use crate::drill::tool_logs::{self, ToolLine};
use crate::drill::{ActionOutcome, ActionRequest};
use crate::fault::journal::Journal;
use crate::fault::{self, ActiveFault, RevertStep};
use crate::scenario::{ClientPath, ComponentKind, CorruptionKind, FaultKind, NodeSelector};
use crate::targets::{Target, TargetError};
use crate::topology::Topology;

impl Target for LocalStack {
    fn topology(&self) -> &Topology {
        &self.state.topology
    }

    fn component(&self, kind: ComponentKind) -> Box<dyn Component> {
        match kind {
            ComponentKind::Postgres => Box::new(PostgresComponent(self.postgres_endpoints())),
            ComponentKind::Redis => Box::new(RedisComponent(self.redis_endpoints())),
            ComponentKind::Qdrant => Box::new(QdrantComponent::new(self.qdrant_endpoints())),
        }
    }

    fn client_component(
        &self,
        kind: ComponentKind,
        path: ClientPath,
    ) -> Result<Box<dyn Component>, TargetError> {
        let Some(via) = super::router::client_addrs(self.topology(), path) else {
            return Ok(self.component(kind));
        };
        if kind != ComponentKind::Postgres {
            return Err(TargetError::Environment(format!(
                "client_path {} routes PostgreSQL clients only",
                path.name()
            )));
        }
        if via.is_empty() {
            return Err(TargetError::Environment(format!(
                "client_path {} needs the routing layer, but this stack runs none (it was started before faultline \
                 ran HAProxy and PgBouncer: `faultline down` and `faultline up`)",
                path.name()
            )));
        }
        let mut ep = self.postgres_endpoints();
        ep.client_via = Some(via);
        ep.routers = self
            .topology()
            .placement
            .router
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    std::net::SocketAddrV4::new(self.addr(n), super::router::HAPROXY_STATS_PORT),
                )
            })
            .collect();
        Ok(Box::new(PostgresComponent(ep)))
    }

    async fn role_holder(&self, component: ComponentKind) -> Option<String> {
        LocalStack::role_holder(self, component).await
    }

    async fn sync_replica(&self, component: ComponentKind) -> Option<String> {
        match component {
            ComponentKind::Postgres => {
                crate::component::postgres::sync_standby_node(&self.postgres_endpoints()).await
            }
            _ => None,
        }
    }

    async fn wait_healthy(&self, timeout: Duration) -> Result<String, String> {
        LocalStack::wait_healthy(self, timeout)
            .await
            .map(|h| h.summary())
    }

    fn config_files(&self) -> Vec<(String, std::path::PathBuf)> {
        self.member_config_files()
    }

    fn secrets(&self) -> Vec<crate::secret::Secret> {
        self.secret_values()
    }

    fn fingerprint(&self) -> serde_json::Value {
        LocalStack::fingerprint(self)
    }

    async fn apply_fault(
        &self,
        journal: &Journal,
        kind: &FaultKind,
    ) -> Result<ActiveFault, TargetError> {
        let resolve_all = |sels: Vec<NodeSelector>| async move {
            let mut nodes: Vec<String> = Vec::new();
            for s in &sels {
                for n in fault::resolve(self, s).await? {
                    if !nodes.contains(&n) {
                        nodes.push(n);
                    }
                }
            }
            Ok::<_, TargetError>(nodes)
        };
        match kind {
            FaultKind::ProcessKill { component, target } => {
                let nodes = fault::resolve(self, target).await?;
                fault::kill::apply(self, journal, &nodes, ProcessKind::of(*component))
            }
            FaultKind::Bandwidth {
                side_a,
                side_b,
                direction,
                rate_kbit,
            } => {
                let a = resolve_all(side_a.clone()).await?;
                let b = resolve_all(side_b.clone()).await?;
                fault::bandwidth::apply(self, journal, &a, &b, *direction, *rate_kbit)
            }
            FaultKind::Latency {
                side_a,
                side_b,
                direction,
                delay,
                jitter,
            } => {
                let a = resolve_all(side_a.clone()).await?;
                let b = resolve_all(side_b.clone()).await?;
                fault::latency::apply(self, journal, &a, &b, *direction, *delay, *jitter)
            }
            FaultKind::RouterProcess {
                process,
                pause,
                target,
            } => {
                let nodes = fault::resolve(self, target).await?;
                let kind = ProcessKind::of_router(*process);
                if *pause {
                    fault::pause::apply(self, journal, &nodes, kind)
                } else {
                    fault::kill::apply(self, journal, &nodes, kind)
                }
            }
            FaultKind::ProcessPause { component, target } => {
                let nodes = fault::resolve(self, target).await?;
                fault::pause::apply(self, journal, &nodes, ProcessKind::of(*component))
            }
            FaultKind::Partition {
                side_a,
                side_b,
                direction,
                loss_pct,
            } => {
                let a = resolve_all(side_a.clone()).await?;
                let b = resolve_all(side_b.clone()).await?;
                fault::partition::apply(self, journal, &a, &b, *direction, *loss_pct)
            }
            FaultKind::NodeLoss { target, method }
            | FaultKind::ZoneLoss { target, method }
            | FaultKind::RegionLoss { target, method } => {
                let nodes = fault::resolve(self, target).await?;
                fault::node_loss::apply(self, journal, kind.name(), &nodes, *method)
            }
            FaultKind::NodeDrain { target } => {
                let nodes = fault::resolve(self, target).await?;
                fault::drain::apply(self, journal, &nodes).await
            }
            FaultKind::Corruption { how, .. } => {
                fault::corruption::apply(self, journal, *how).await
            }
            FaultKind::RepositoryOutage => {
                let node = self.backup_node().ok_or_else(|| {
                    TargetError::Environment("this stack has no backup node".into())
                })?;
                fault::kill::apply(self, journal, &[node.to_string()], ProcessKind::Pgbackrest)
            }
        }
    }

    async fn revert(&self, steps: &[RevertStep]) -> Result<(), String> {
        let mut errors = Vec::new();
        let t = self.topology();
        for step in steps {
            let r: Result<(), String> = match step {
                RevertStep::DeleteRules { node } => netns::delete_rules(&t.namespace(node))
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                RevertStep::DeleteShaping { node } => netns::delete_shaping(&t.namespace(node))
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                RevertStep::StopDelay { node, queue } => {
                    let ns = t.namespace(node);
                    // Rules first: once they are gone no packet enters the queue, then the agent lets go of
                    // what it holds.
                    let rules = netns::delete_delay_rules(&ns, Some(*queue));
                    delay_agent::stop(&ns, Some(*queue));
                    let left = delay_agent::running(&ns, Some(*queue));
                    match rules {
                        Err(e) => Err(format!("cannot delete the latency rules of queue {queue}: {e}")),
                        Ok(_) if left > 0 => Err(format!(
                            "the delay agent of queue {queue} survived SIGTERM and SIGKILL"
                        )),
                        Ok(_) => Ok(()),
                    }
                }
                RevertStep::Continue { node, process: p } => {
                    self.signal(node, *p, libc::SIGCONT);
                    Ok(())
                }
                RevertStep::LinkUp { node } => {
                    netns::set_link(t, node, true).map_err(|e| e.to_string())
                }
                RevertStep::Thaw { node, process: p } => {
                    process::freeze_cgroup(&self.cgroup(node, *p), false, Duration::ZERO)
                        .map_err(|e| e.to_string())
                }
                RevertStep::CompletePostgresRestore { node, target } => {
                    self.complete_postgres_restore(node, target.as_deref()).await
                }
                RevertStep::RestoreSynchronousNodeCount { count } => {
                    fault::drain::restore_synchronous_node_count(self, *count).await
                }
                RevertStep::RebuildLostNodes { nodes } => self.rebuild_lost_nodes(nodes).await,
                RevertStep::CompleteQdrantRestore { set, new_cluster } => {
                    self.complete_qdrant_restore(set, *new_cluster).await
                }
                RevertStep::CompleteRedisRestore { node, file } => {
                    self.complete_redis_restore(node, file).await
                }
                RevertStep::Restart { node, process: p } => {
                    // A member SIGKILLed moments ago may still be leaving its cgroup (pitfall 2).
                    process::wait_cgroup_empty(&self.cgroup(node, *p), Duration::from_secs(3));
                    self.restart(node, *p).await.map_err(|e| e.to_string())
                }
                kube_step => Err(format!(
                    "{kube_step:?} belongs to a Kubernetes target; the local stack cannot revert it \
                     (run the revert with --target kind or --target kube)"
                )),
            };
            if let Err(e) = r {
                errors.push(format!("{step:?}: {e}"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    async fn run_action(
        &self,
        journal: &Journal,
        action: &ActionRequest,
        deadline: Duration,
    ) -> Result<ActionOutcome, String> {
        match action {
            ActionRequest::Backup { kind } => {
                let b = tokio::time::timeout(deadline, self.backup(*kind))
                    .await
                    .map_err(|_| {
                        format!("the backup did not finish within {} s", deadline.as_secs())
                    })??;
                let phases = [
                    (
                        format!("pgbackrest backup {} complete", b.postgres),
                        b.postgres_done,
                    ),
                    (format!("redis RDB {} stored", b.redis.file), b.redis_done),
                    (
                        format!(
                            "qdrant snapshots of {} peer(s) and {} shard(s) stored ({})",
                            b.qdrant.iter().filter(|s| s.shard.is_none()).count(),
                            b.qdrant.iter().filter(|s| s.shard.is_some()).count(),
                            b.qdrant.first().map_or("", |s| s.set.as_str())
                        ),
                        b.qdrant_done,
                    ),
                ];
                Ok(ActionOutcome {
                    phases: phases
                        .into_iter()
                        .filter_map(|(p, at)| at.map(|at| (p, at)))
                        .collect(),
                    notes: vec![format!(
                        "postgres backup {}; redis {} ({} keys)",
                        b.postgres, b.redis.file, b.redis.keys
                    )],
                    ..ActionOutcome::default()
                })
            }
            ActionRequest::RestorePostgres { target } => {
                self.restore_postgres(journal, *target, deadline).await
            }
            ActionRequest::RestoreRedis => self.restore_redis(journal, deadline).await,
            ActionRequest::RestoreQdrant { before } => {
                self.restore_qdrant(journal, *before, deadline).await
            }
            ActionRequest::MoveRoles { to } => tokio::time::timeout(deadline, self.move_roles(to))
                .await
                .map_err(|_| format!("the roles did not move within {} s", deadline.as_secs()))?,
        }
    }

    async fn postgres_after(
        &self,
        corruption: Option<CorruptionKind>,
        run_id: &str,
    ) -> PostgresAfter {
        let ep = self.postgres_endpoints();
        let expected_replicas = self.topology().placement.postgres.len().saturating_sub(1);
        let (timeline, streaming) = match postgres::timeline_and_streaming(&ep).await {
            Ok(v) => v,
            Err(e) => {
                return PostgresAfter {
                    expected_replicas,
                    error: Some(format!("cannot read the restored primary: {e}")),
                    ..PostgresAfter::default()
                }
            }
        };
        let corruption_present = match corruption {
            None => None,
            Some(how) => match postgres::corruption_present(&ep, how, run_id).await {
                Ok(p) => Some(p),
                Err(e) => {
                    return PostgresAfter {
                        expected_replicas,
                        error: Some(format!("cannot look for the corruption: {e}")),
                        ..PostgresAfter::default()
                    }
                }
            },
        };
        PostgresAfter {
            timeline: Some(timeline),
            streaming_replicas: streaming,
            expected_replicas,
            corruption_present,
            error: None,
        }
    }

    /// The restored component's own tools: pgBackRest and PostgreSQL for a PostgreSQL restore, Redis for a
    /// Redis restore.
    async fn restore_tool_lines(
        &self,
        component: ComponentKind,
        since: SystemTime,
    ) -> Vec<ToolLine> {
        let read = |path: std::path::PathBuf| std::fs::read_to_string(path).unwrap_or_default();
        let mut out = Vec::new();
        match component {
            ComponentKind::Postgres => {
                for n in self.pgbackrest_nodes() {
                    let log = self
                        .pgbackrest_log_dir(&n)
                        .join(format!("{}-restore.log", self.settings().backup.stanza));
                    out.extend(tool_logs::matching(
                        &format!("pgbackrest {n}"),
                        &read(log),
                        &tool_logs::PGBACKREST_NEEDLES,
                        since,
                    ));
                }
                for n in &self.topology().placement.postgres {
                    out.extend(tool_logs::matching(
                        &format!("postgresql {n}"),
                        &read(self.dir.log_file(n, ProcessKind::Patroni)),
                        &tool_logs::POSTGRES_NEEDLES,
                        since,
                    ));
                }
            }
            ComponentKind::Redis => {
                for n in &self.topology().placement.redis {
                    out.extend(tool_logs::matching_redis(
                        &format!("redis {n}"),
                        &read(self.dir.log_file(n, ProcessKind::Redis)),
                        since,
                    ));
                }
            }
            ComponentKind::Qdrant => {}
        }
        out.sort_by_key(|l| l.at);
        out
    }

    async fn log_excerpt(
        &self,
        component: ComponentKind,
        at: SystemTime,
        around: Duration,
    ) -> Vec<(SystemTime, String)> {
        let t = self.topology();
        type LineTime = fn(&str) -> Option<SystemTime>;
        let sources: Vec<(&String, ProcessKind, LineTime)> = match component {
            ComponentKind::Postgres => t
                .placement
                .postgres
                .iter()
                .map(|n| {
                    (
                        n,
                        ProcessKind::Patroni,
                        crate::component::parse_patroni_time as _,
                    )
                })
                .collect(),
            ComponentKind::Redis => t
                .placement
                .sentinel
                .iter()
                .map(|n| {
                    (
                        n,
                        ProcessKind::Sentinel,
                        crate::component::parse_redis_time as _,
                    )
                })
                .chain(t.placement.redis.iter().map(|n| {
                    (
                        n,
                        ProcessKind::Redis,
                        crate::component::parse_redis_time as _,
                    )
                }))
                .collect(),
            ComponentKind::Qdrant => Vec::new(),
        };
        let (from, to) = (at - around, at + around);
        let mut out = Vec::new();
        for (n, kind, parse) in sources {
            let text = std::fs::read_to_string(self.dir.log_file(n, kind)).unwrap_or_default();
            out.extend(
                text.lines()
                    .filter_map(|l| parse(l).map(|t| (t, l)))
                    .filter(|(t, _)| *t >= from && *t <= to)
                    .map(|(t, l)| (t, format!("{n} {}: {l}", kind.name()))),
            );
        }
        out.sort();
        out
    }

    async fn server_log_lines(
        &self,
        component: ComponentKind,
        event: &str,
    ) -> Vec<(SystemTime, String)> {
        if component == ComponentKind::Postgres && event == crate::component::haproxy::SWITCH_NEEDLE
        {
            let mut lines = Vec::new();
            for n in &self.topology().placement.router {
                let text = std::fs::read_to_string(self.dir.log_file(n, ProcessKind::Haproxy))
                    .unwrap_or_default();
                lines.extend(
                    crate::component::haproxy::switch_log_lines(&text)
                        .into_iter()
                        .map(|(t, l)| (t, format!("{n}: {l}"))),
                );
            }
            lines.sort();
            return lines;
        }
        let (nodes, kind) = match component {
            ComponentKind::Postgres => (&self.topology().placement.postgres, ProcessKind::Patroni),
            ComponentKind::Redis => (&self.topology().placement.sentinel, ProcessKind::Sentinel),
            // No Qdrant log check is defined (see QdrantComponent::log_checks).
            ComponentKind::Qdrant => return Vec::new(),
        };
        let mut lines = Vec::new();
        for n in nodes {
            let text = std::fs::read_to_string(self.dir.log_file(n, kind)).unwrap_or_default();
            let found = match component {
                ComponentKind::Postgres => postgres::promotion_log_lines(&text),
                ComponentKind::Redis => redis_component::sentinel_log_lines(&text, event),
                ComponentKind::Qdrant => Vec::new(),
            };
            lines.extend(found.into_iter().map(|(t, l)| (t, format!("{n}: {l}"))));
        }
        lines.sort();
        lines
    }
}
