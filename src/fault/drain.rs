//! node-drain: the graceful path. Roles move away first where the component supports it (Patroni switchover to a
//! synchronous standby, SENTINEL FAILOVER; the drill action `move-roles` moves roles the same way), then every
//! process of the node gets SIGTERM. Reverted by starting the members again.

use std::time::{Duration, Instant};

use super::journal::Journal;
use super::{journal_before_applying, ActiveFault, RevertStep};
use crate::component::postgres::{cluster_view, patroni_url};
use crate::component::{http_client, redis as redis_component};
use crate::scenario::ComponentKind;
use crate::targets::local::LocalStack;
use crate::targets::TargetError;

const ROLE_MOVE_DEADLINE: Duration = Duration::from_secs(30);

pub async fn apply(
    stack: &LocalStack,
    journal: &Journal,
    nodes: &[String],
) -> Result<ActiveFault, TargetError> {
    let mut steps = Vec::new();
    for n in nodes {
        for p in stack.members_on(n) {
            steps.push(RevertStep::Restart {
                node: n.clone(),
                process: p,
            });
        }
    }
    let description = format!(
        "drain {}: switch roles away, then SIGTERM",
        nodes.join(", ")
    );
    let entry = journal_before_applying(journal, "node-drain", &description, steps)?;
    let requested_at = std::time::Instant::now();
    for n in nodes {
        if stack.role_holder(ComponentKind::Postgres).await.as_deref() == Some(n.as_str()) {
            switchover_postgres(stack, n, nodes).await?;
        }
        if stack.role_holder(ComponentKind::Redis).await.as_deref() == Some(n.as_str()) {
            failover_redis(stack, n).await?;
        }
    }
    for n in nodes {
        for p in stack.members_on(n) {
            stack.signal(n, p, libc::SIGTERM);
        }
    }
    for n in nodes {
        for p in stack.members_on(n) {
            if !stack.wait_gone(n, p, Duration::from_secs(30)) {
                stack.kill(n, p);
            }
        }
    }
    // A drain acts from its first step: the switchover it starts is part of what clients live through, so it is
    // effective when requested.
    Ok(ActiveFault::new(
        entry,
        description,
        nodes.to_vec(),
        requested_at,
        requested_at,
    ))
}

pub(crate) async fn switchover_postgres(
    stack: &LocalStack,
    leader: &str,
    draining: &[String],
) -> Result<(), TargetError> {
    let http = http_client(Duration::from_secs(20));
    let ep = stack.postgres_endpoints();
    let leader_member = ep
        .member_named(leader)
        .ok_or_else(|| TargetError::Fault(format!("{leader} is no Patroni member")))?;
    let view = cluster_view(&http, leader_member)
        .await
        .map_err(TargetError::Fault)?;
    let chosen = view
        .iter()
        .filter(|m| !draining.contains(&m.name))
        .find(|m| m.role == "sync_standby")
        .or_else(|| {
            view.iter()
                .find(|m| !draining.contains(&m.name) && m.role != "leader")
        })
        .ok_or_else(|| {
            TargetError::Fault(format!(
                "no switchover candidate outside the drained nodes for {leader}"
            ))
        })?;
    let candidate = chosen.name.clone();
    if chosen.role == "sync_standby" {
        return switchover_to(stack, &http, leader_member, leader, &candidate).await;
    }
    // In synchronous mode Patroni hands the primary over to a synchronous standby only (a switchover elsewhere is
    // refused with 412 "candidate name does not match with sync_standby", and a manual failover finds "no
    // healthy members"): the candidate is made one first, by asking for as many synchronous standbys as there are
    // replicas, and the cluster's own count is put back afterwards, whatever happened.
    let before = synchronous_node_count(&http, leader_member).await?;
    let replicas = view.iter().filter(|m| m.role != "leader").count().max(1);
    // Journaled before the raise: a crash (or a Ctrl-C dropping this future) leaves an open entry that the
    // engine's revert or `faultline recover` carries out.
    let journal = Journal::new(stack.dir.journal_dir());
    let entry = journal
        .open(
            "synchronous-node-count",
            &format!(
                "synchronous_node_count raised to {replicas} (from {}) to switch over to {candidate}",
                before.map_or("unset".to_string(), |c| c.to_string())
            ),
            vec![RevertStep::RestoreSynchronousNodeCount { count: before }],
        )
        .map_err(|e| TargetError::Environment(format!("cannot write the fault journal: {e}")))?;
    set_synchronous_node_count(&http, leader_member, Some(replicas as u64)).await?;
    let moved = async {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let view = cluster_view(&http, leader_member)
                .await
                .map_err(TargetError::Fault)?;
            if view
                .iter()
                .any(|m| m.name == candidate && m.role == "sync_standby")
            {
                break;
            }
            if Instant::now() > until {
                return Err(TargetError::Fault(format!(
                    "{candidate} did not become a synchronous standby within 30 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        switchover_to(stack, &http, leader_member, leader, &candidate).await
    }
    .await;
    // The new leader owns the configuration now; any member's API writes it to the DCS.
    let member = stack
        .postgres_endpoints()
        .member_named(&candidate)
        .filter(|_| moved.is_ok())
        .unwrap_or(leader_member)
        .clone();
    let restored = set_synchronous_node_count(&http, &member, before).await;
    if restored.is_ok() {
        let _ = journal.close(&entry.id, "synchronous_node_count put back");
    }
    moved.and(restored)
}

/// The revert of a raised `synchronous_node_count`: the cluster's own value put back through the first member
/// whose Patroni accepts the change (a PATCH of /config on any member writes the DCS).
pub async fn restore_synchronous_node_count(
    stack: &LocalStack,
    count: Option<u64>,
) -> Result<(), String> {
    let http = http_client(Duration::from_secs(10));
    let mut errors = Vec::new();
    for m in &stack.postgres_endpoints().members {
        match set_synchronous_node_count(&http, m, count).await {
            Ok(()) => return Ok(()),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(format!(
        "no Patroni member took synchronous_node_count {count:?}: {}",
        errors.join("; ")
    ))
}

/// POST /switchover to a synchronous standby, then waits until the role has moved.
async fn switchover_to(
    stack: &LocalStack,
    http: &reqwest::Client,
    leader_member: &crate::component::Member,
    leader: &str,
    candidate: &str,
) -> Result<(), TargetError> {
    let resp = http
        .post(patroni_url(leader_member, "/switchover"))
        .json(&serde_json::json!({ "leader": leader, "candidate": candidate }))
        .send()
        .await
        .map_err(|e| TargetError::Fault(format!("switchover request to {leader} failed: {e}")))?;
    if !resp.status().is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(TargetError::Fault(format!(
            "Patroni refused the switchover to {candidate}: {body}"
        )));
    }
    wait_role_moves(stack, ComponentKind::Postgres, leader).await
}

/// Patroni's dynamic `synchronous_node_count` (None: not set, Patroni's default of 1).
async fn synchronous_node_count(
    http: &reqwest::Client,
    m: &crate::component::Member,
) -> Result<Option<u64>, TargetError> {
    let v: serde_json::Value = http
        .get(patroni_url(m, "/config"))
        .send()
        .await
        .map_err(|e| TargetError::Fault(format!("Patroni /config on {}: {e}", m.node)))?
        .json()
        .await
        .map_err(|e| TargetError::Fault(format!("Patroni /config on {}: {e}", m.node)))?;
    Ok(v["synchronous_node_count"].as_u64())
}

/// PATCH /config: sets `synchronous_node_count`, or removes it (None).
async fn set_synchronous_node_count(
    http: &reqwest::Client,
    m: &crate::component::Member,
    count: Option<u64>,
) -> Result<(), TargetError> {
    let resp = http
        .patch(patroni_url(m, "/config"))
        .json(&serde_json::json!({ "synchronous_node_count": count }))
        .send()
        .await
        .map_err(|e| TargetError::Fault(format!("Patroni /config on {}: {e}", m.node)))?;
    if !resp.status().is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(TargetError::Fault(format!(
            "Patroni refused synchronous_node_count {count:?} on {}: {body}",
            m.node
        )));
    }
    Ok(())
}

pub(crate) async fn failover_redis(stack: &LocalStack, master: &str) -> Result<(), TargetError> {
    let ep = stack.redis_endpoints();
    let mut last = String::new();
    for s in &ep.sentinels {
        match redis_component::connect(s.addr, s.ports.sentinel, Duration::from_secs(2)).await {
            Ok(mut c) => {
                match redis::cmd("SENTINEL")
                    .arg("failover")
                    .arg(&ep.master_name)
                    .query_async::<String>(&mut c)
                    .await
                {
                    Ok(_) => return wait_role_moves(stack, ComponentKind::Redis, master).await,
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(TargetError::Fault(format!(
        "no sentinel accepted SENTINEL FAILOVER: {last}"
    )))
}

async fn wait_role_moves(
    stack: &LocalStack,
    component: ComponentKind,
    from: &str,
) -> Result<(), TargetError> {
    let deadline = Instant::now() + ROLE_MOVE_DEADLINE;
    loop {
        if let Some(now) = stack.role_holder(component).await {
            if now != from {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(TargetError::Fault(format!(
                "the {component} primary did not move away from {from} within {} s",
                ROLE_MOVE_DEADLINE.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
