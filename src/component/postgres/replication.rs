//! PostgreSQL's replication lag as the primary itself measures it: `pg_stat_replication` read once a second while
//! a trial runs, each reading a `ReplicationSample` on the run's clock. The harness computes nothing here: the lag
//! is PostgreSQL's `replay_lag` (WAL flushed on the primary to the standby reporting it applied).

use std::time::Duration;

use tokio::sync::watch;

use super::{connect_primary_raw, PostgresEndpoints};
use crate::events::{EventKind, EventLog, StandbyLag};
use crate::scenario::ComponentKind;

/// How often the primary is asked.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// A reading that takes longer than this is dropped with its connection (the primary is gone or stuck).
const READ_BOUND: Duration = Duration::from_millis(900);

/// Reads the primary's `pg_stat_replication` every `SAMPLE_EVERY` until `stop`. A connection that fails, times
/// out or lands on a member that is no longer the primary is dropped and made anew at the next tick; while no
/// primary answers there is no sample, and the analysis sees the gap.
pub async fn watch_replication(
    ep: PostgresEndpoints,
    events: EventLog,
    mut stop: watch::Receiver<bool>,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = tokio::time::timeout(READ_BOUND, connect_primary_raw(&ep))
                .await
                .ok()
                .and_then(Result::ok);
        }
        let Some(c) = &client else { continue };
        match tokio::time::timeout(READ_BOUND, read(c, &ep)).await {
            Ok(Ok(Some((primary, standbys)))) => events.emit_at(
                events.clock().now(),
                EventKind::ReplicationSample {
                    component: ComponentKind::Postgres,
                    primary,
                    standbys,
                },
            ),
            _ => client = None,
        }
    }
}

/// The primary's name and its standbys; None when the member answering is in recovery (no longer the primary).
async fn read(
    c: &tokio_postgres::Client,
    ep: &PostgresEndpoints,
) -> Result<Option<(String, Vec<StandbyLag>)>, tokio_postgres::Error> {
    let me = c
        .query_one("SELECT host(inet_server_addr()), pg_is_in_recovery()", &[])
        .await?;
    if me.get::<_, bool>(1) {
        return Ok(None);
    }
    let addr: Option<String> = me.get(0);
    let primary = addr
        .as_deref()
        .map(|a| {
            ep.member_by_addr(a)
                .map_or_else(|| a.to_string(), |m| m.node.clone())
        })
        .unwrap_or_else(|| "?".into());
    let rows = c
        .query(
            "SELECT application_name, coalesce(state, ''), coalesce(sync_state, ''), \
             (extract(epoch FROM replay_lag) * 1000)::float8, \
             pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 \
             FROM pg_stat_replication ORDER BY application_name",
            &[],
        )
        .await?;
    let standbys = rows
        .iter()
        .map(|r| {
            let name: String = r.get(0);
            StandbyLag {
                name: ep
                    .member_named(&name)
                    .map_or(name.clone(), |m| m.node.clone()),
                state: r.get(1),
                sync_state: r.get(2),
                replay_lag_ms: r.get(3),
                behind_bytes: r.get(4),
            }
        })
        .collect();
    Ok(Some((primary, standbys)))
}
