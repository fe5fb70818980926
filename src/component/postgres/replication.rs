//! PostgreSQL's replication lag as the primary itself measures it: `pg_stat_replication` read once a second while
//! a trial runs, each reading a `ReplicationSample` on the run's clock. The lag is PostgreSQL's `replay_lag` (WAL
//! flushed on the primary to the standby reporting it applied); the readings also carry the primary's flush
//! position and each standby's replay position, from which the analysis bounds a lag that `replay_lag` no longer
//! shows (a stream that stopped: see `analysis::replication_lag`).

use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::NoTls;

use super::{pg_config_to, PostgresEndpoints};
use crate::events::{EventKind, EventLog, StandbyLag};
use crate::scenario::ComponentKind;

/// How often the primary is asked.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// A reading that takes longer than this is dropped with its connection (the primary is gone or stuck).
const READ_BOUND: Duration = Duration::from_millis(900);
/// Each member gets this long to accept the connection; the last primary is asked first.
const CONNECT_BOUND: Duration = Duration::from_millis(700);

/// Reads the primary's `pg_stat_replication` every `SAMPLE_EVERY` until `stop`. A connection that fails, times
/// out or lands on a member that is no longer the primary is dropped and made anew at the next tick (the member
/// that was primary first, then the others, each with its own short bound, so one dead member does not starve
/// the rest); while no primary answers there is no reading, and the analysis sees the gap.
pub async fn watch_replication(
    ep: PostgresEndpoints,
    events: EventLog,
    mut stop: watch::Receiver<bool>,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut last_primary: Option<usize> = None;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = None;
            let mut order: Vec<usize> = (0..ep.members.len()).collect();
            if let Some(i) = last_primary {
                order.retain(|j| *j != i);
                order.insert(0, i);
            }
            for i in order {
                if let Some(c) = connect(&ep, i).await {
                    last_primary = Some(i);
                    client = Some(c);
                    break;
                }
            }
        }
        let Some(c) = &client else { continue };
        match tokio::time::timeout(READ_BOUND, read(c, &ep)).await {
            Ok(Ok(Some((primary, flush_lsn, standbys)))) => events.emit_at(
                events.clock().now(),
                EventKind::ReplicationSample {
                    component: ComponentKind::Postgres,
                    primary,
                    flush_lsn,
                    standbys,
                },
            ),
            _ => client = None,
        }
    }
}

/// A read-write connection to member `i`, or None within `CONNECT_BOUND`.
async fn connect(ep: &PostgresEndpoints, i: usize) -> Option<tokio_postgres::Client> {
    let m = &ep.members[i];
    let cfg = pg_config_to(ep, &[(m.addr.to_string(), m.ports.postgres)]);
    let (client, connection) = tokio::time::timeout(CONNECT_BOUND, cfg.connect(NoTls))
        .await
        .ok()?
        .ok()?;
    tokio::spawn(connection);
    Some(client)
}

type Reading = (String, Option<f64>, Vec<StandbyLag>);

/// The primary's name, flush position and standbys; None when the member answering is in recovery (no longer
/// the primary).
async fn read(
    c: &tokio_postgres::Client,
    ep: &PostgresEndpoints,
) -> Result<Option<Reading>, tokio_postgres::Error> {
    let me = c
        .query_one(
            "SELECT host(inet_server_addr()), pg_is_in_recovery(), \
             CASE WHEN pg_is_in_recovery() THEN NULL \
             ELSE pg_wal_lsn_diff(pg_current_wal_flush_lsn(), '0/0')::float8 END",
            &[],
        )
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
    // Without pg_read_all_stats every column but pid reads NULL: such a row is a standby of unknown name and
    // state, never a panic.
    let rows = c
        .query(
            "SELECT coalesce(application_name, '?'), coalesce(state, ''), coalesce(sync_state, ''), \
             (extract(epoch FROM replay_lag) * 1000)::float8, \
             pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8, \
             pg_wal_lsn_diff(replay_lsn, '0/0')::float8 \
             FROM pg_stat_replication ORDER BY 1",
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
                replay_lsn: r.get(5),
            }
        })
        .collect();
    Ok(Some((primary, me.get(2), standbys)))
}
