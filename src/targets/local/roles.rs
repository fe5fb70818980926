//! The `move-roles` drill action: the PostgreSQL primary and the Redis master onto nodes of one region or zone,
//! the graceful way a node drain moves them (Patroni switchover, SENTINEL FAILOVER). A drill written for "the
//! region that holds the primary" starts from that layout whatever earlier runs left.

use std::time::{Duration, Instant};

use super::LocalStack;
use crate::component::redis as redis_component;
use crate::drill::ActionOutcome;
use crate::fault::drain::{failover_redis, switchover_postgres};
use crate::scenario::ComponentKind;
use crate::targets::local::configs::REDIS_PORT;

/// A failover may pick a replica outside the area again; this many attempts per component.
const ATTEMPTS: usize = 3;

impl LocalStack {
    pub async fn move_roles(&self, area: &str) -> Result<ActionOutcome, String> {
        let t = self.topology();
        let outside: Vec<String> = t
            .nodes
            .iter()
            .filter(|n| n.region != area && n.zone != area)
            .map(|n| n.name.clone())
            .collect();
        if outside.len() == t.nodes.len() {
            return Err(format!(
                "no node of the topology is in a region or zone named `{area}`"
            ));
        }
        let mut out = ActionOutcome::default();
        for component in [ComponentKind::Postgres, ComponentKind::Redis] {
            let mut holder = String::new();
            for attempt in 0..=ATTEMPTS {
                holder = self
                    .role_holder(component)
                    .await
                    .ok_or_else(|| format!("no {component} role holder to move"))?;
                if !outside.contains(&holder) || attempt == ATTEMPTS {
                    break;
                }
                match component {
                    ComponentKind::Postgres => switchover_postgres(self, &holder, &outside).await,
                    _ => self.redis_failover_without_loss(&holder).await,
                }
                .map_err(|e| e.to_string())?;
            }
            if outside.contains(&holder) {
                return Err(format!(
                    "the {component} role stayed outside {area} (on {holder}) after {ATTEMPTS} attempts"
                ));
            }
            if component == ComponentKind::Postgres {
                self.wait_synchronous_standby(Duration::from_secs(60))
                    .await?;
            }
            out.phases
                .push((format!("{component} role on {holder}"), Instant::now()));
        }
        Ok(out)
    }

    /// Until PostgreSQL is healthy as a trial start requires it (every member running and close behind, one
    /// leader answering /primary, a synchronous standby named), twice in a row a second apart: right after a
    /// switchover Patroni is still assigning the standby (the old leader rejoining), and a failure in that window
    /// finds no member it may promote. A drill's next step starts from a settled cluster, as an operator's would.
    async fn wait_synchronous_standby(&self, deadline: Duration) -> Result<(), String> {
        let until = Instant::now() + deadline;
        let mut settled = 0;
        let mut last = String::new();
        while Instant::now() < until {
            match crate::component::postgres::health(
                &self.postgres_endpoints(),
                self.settings().synchronous_mode,
            )
            .await
            {
                Ok(_) => settled += 1,
                Err(e) => {
                    settled = 0;
                    last = e;
                }
            }
            if settled >= 2 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Err(format!(
            "PostgreSQL did not settle within {} s after the switchover: {last}",
            deadline.as_secs()
        ))
    }

    /// SENTINEL FAILOVER promotes a replica but leaves the old master accepting (and acknowledging) writes until
    /// Sentinel converts it, seconds later: those writes are lost. An operator moving the master on purpose
    /// pauses writes on it first (`CLIENT PAUSE WRITE`: clients wait, nothing is acknowledged), lets the replicas
    /// catch up, fails over, makes the old master a replica of the new one, and only then lets the clients go
    /// (they get READONLY and find the new master through Sentinel).
    async fn redis_failover_without_loss(
        &self,
        master: &str,
    ) -> Result<(), crate::targets::TargetError> {
        let fault = |e: String| crate::targets::TargetError::Fault(e);
        let old = self.addr(master);
        let mut c = redis_component::connect(old, REDIS_PORT, Duration::from_secs(2))
            .await
            .map_err(|e| fault(format!("redis on {master}: {e}")))?;
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(15_000)
            .arg("WRITE")
            .query_async::<()>(&mut c)
            .await
            .map_err(|e| fault(format!("CLIENT PAUSE on {master}: {e}")))?;
        let result = async {
            // Every replica at the master's offset, so the one promoted holds every acknowledged write.
            let end = Instant::now() + Duration::from_secs(5);
            loop {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut c)
                    .await
                    .map_err(|e| fault(format!("INFO on {master}: {e}")))?;
                if replicas_caught_up(&info) || Instant::now() >= end {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            failover_redis(self, master).await?;
            let new = self
                .role_holder(ComponentKind::Redis)
                .await
                .ok_or_else(|| {
                    fault("the sentinels agree on no master after the failover".into())
                })?;
            redis::cmd("REPLICAOF")
                .arg(self.addr(&new).to_string())
                .arg(REDIS_PORT)
                .query_async::<()>(&mut c)
                .await
                .map_err(|e| fault(format!("REPLICAOF on {master}: {e}")))
        }
        .await;
        let _ = redis::cmd("CLIENT")
            .arg("UNPAUSE")
            .query_async::<()>(&mut c)
            .await;
        result
    }
}

/// Whether every replica in `INFO replication` has acknowledged the master's offset.
fn replicas_caught_up(info: &str) -> bool {
    let field = |line: &str, key: &str| {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let Some(master) = info
        .lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
    else {
        return false;
    };
    info.lines()
        .filter(|l| l.starts_with("slave") && l.contains(':'))
        .all(|l| field(l.split_once(':').map_or("", |(_, r)| r), "offset=") >= Some(master))
}

#[cfg(test)]
mod tests {
    use super::replicas_caught_up;

    #[test]
    fn replicas_are_caught_up_only_at_the_masters_offset() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
                    slave0:ip=10.0.0.2,port=6379,state=online,offset=500,lag=0\r\n\
                    slave1:ip=10.0.0.4,port=6379,state=online,offset=480,lag=1\r\n\
                    master_repl_offset:500\r\n";
        assert!(!replicas_caught_up(info));
        assert!(replicas_caught_up(
            &info.replace("offset=480", "offset=500")
        ));
        assert!(!replicas_caught_up("role:master\r\n"));
    }
}
