//! HAProxy as the routing layer in front of PostgreSQL, seen from outside: which members its read-write proxy
//! sends connections to (its stats page, polled), and when its own log says it switched. The probe puts every
//! change on the run's timeline (`RouterRouted`); `router_switch_s` is the fault to the first router sending
//! read-write connections to exactly one member again, and log agreement pairs that stamp with HAProxy's own
//! "Server postgres_rw/<member> is UP" line.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::http_client;
use crate::events::{EventKind, EventLog};

/// The proxies of faultline's haproxy.cfg whose servers are the PostgreSQL members.
pub const RW_PROXY: &str = "postgres_rw";
pub const RO_PROXY: &str = "postgres_ro";

/// The log-agreement needle: HAProxy's line when a member of the read-write proxy is marked up.
pub const SWITCH_NEEDLE: &str = "Server postgres_rw/";

/// How often the probe reads every router's stats page.
const POLL: Duration = Duration::from_millis(100);

/// The servers of `proxy` that HAProxy's stats CSV (`/;csv`) shows UP.
pub fn servers_up(csv: &str, proxy: &str) -> Vec<String> {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let cols: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(px), Some(sv), Some(st)) = (col("pxname"), col("svname"), col("status")) else {
        return Vec::new();
    };
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| {
            f.get(px) == Some(&proxy)
                && !matches!(f.get(sv), Some(&"FRONTEND") | Some(&"BACKEND") | None)
                && f.get(st).is_some_and(|s| s.starts_with("UP"))
        })
        .filter_map(|f| f.get(sv).map(|s| s.to_string()))
        .collect()
}

/// Watches the routers' read-write proxies (`routers`: node name and stats address) until `stop`; every change of
/// the members a router sends read-write connections to becomes a `RouterRouted` event. The state found at the
/// start is not an event; a router whose stats page does not answer is skipped for that round.
pub fn spawn_probe(
    routers: Vec<(String, SocketAddrV4)>,
    events: EventLog,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = http_client(Duration::from_millis(500));
        let mut last: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // Per router, the member it last sent read-write connections to alone.
        let mut last_single: BTreeMap<String, String> = BTreeMap::new();
        loop {
            for (router, addr) in &routers {
                let csv = match http.get(format!("http://{addr}/;csv")).send().await {
                    Ok(r) => match r.text().await {
                        Ok(t) => t,
                        Err(_) => continue,
                    },
                    Err(_) => continue,
                };
                let up = servers_up(&csv, RW_PROXY);
                let single = match up.as_slice() {
                    [one] => Some(one.clone()),
                    _ => None,
                };
                let switched = single.is_some() && single.as_ref() != last_single.get(router);
                match last.get(router) {
                    Some(prev) if *prev == up => {}
                    Some(_) => {
                        events.emit(EventKind::RouterRouted {
                            router: router.clone(),
                            to: up.clone(),
                            switched,
                        });
                        last.insert(router.clone(), up);
                    }
                    None => {
                        last.insert(router.clone(), up);
                    }
                }
                if let Some(s) = single {
                    last_single.insert(router.clone(), s);
                }
            }
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(POLL) => {}
            }
            if *stop.borrow() {
                break;
            }
        }
    })
}

/// HAProxy's log lines saying a member of the read-write proxy is up, with their RFC 5424 time (the lines faultline's
/// haproxy.cfg sends to its log file: `<133>1 2026-11-30T14:37:28.192041+00:00 - haproxy 18438 - - Server
/// postgres_rw/n1 is UP, ...`). The plain `[WARNING]` copies on stderr carry no time and are skipped.
pub fn switch_log_lines(log: &str) -> Vec<(SystemTime, String)> {
    log.lines()
        .filter(|l| l.starts_with('<') && l.contains(SWITCH_NEEDLE) && l.contains(" is UP"))
        .filter_map(|l| {
            let ts = l.split(' ').nth(1)?;
            Some((parse_rfc5424_time(ts)?, l.to_string()))
        })
        .collect()
}

/// An RFC 3339 time with a numeric offset or Z, to the microsecond.
fn parse_rfc5424_time(ts: &str) -> Option<SystemTime> {
    if ts.ends_with('Z') {
        return humantime::parse_rfc3339(ts).ok();
    }
    let t = ts.find('T')?;
    let sign_at = ts[t..].rfind(['+', '-'])? + t;
    let (base, offset) = ts.split_at(sign_at);
    let utc = humantime::parse_rfc3339(&format!("{base}Z")).ok()?;
    let (h, m) = offset[1..].split_once(':')?;
    let secs = h.parse::<u64>().ok()? * 3600 + m.parse::<u64>().ok()? * 60;
    let d = Duration::from_secs(secs);
    // Local time = UTC + offset, so UTC = local - offset.
    if offset.starts_with('+') {
        utc.checked_sub(d)
    } else {
        utc.checked_add(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_up_are_read_from_the_stats_csv() {
        let csv = "# pxname,svname,qcur,status,weight\n\
                   postgres_rw,FRONTEND,,OPEN,\n\
                   postgres_rw,n1,0,DOWN,1\n\
                   postgres_rw,n2,0,UP,1\n\
                   postgres_rw,n3,0,UP 1/2,1\n\
                   postgres_rw,BACKEND,0,UP,1\n\
                   postgres_ro,n1,0,UP,1\n";
        assert_eq!(servers_up(csv, RW_PROXY), ["n2", "n3"]);
        assert_eq!(servers_up(csv, RO_PROXY), ["n1"]);
        assert!(servers_up("", RW_PROXY).is_empty());
    }

    #[test]
    fn haproxy_switch_lines_carry_their_rfc5424_time_with_its_offset() {
        let log = "[WARNING]  (18438) : Server postgres_rw/n1 is UP, reason: Layer7 check passed\n\
                   <133>1 2026-11-30T14:37:28.192041+00:00 - haproxy 18438 - - Server postgres_rw/n1 is UP, reason: x\n\
                   <129>1 2026-11-30T14:37:19.799681+00:00 - haproxy 18438 - - Server postgres_rw/n3 is DOWN\n\
                   <133>1 2026-11-30T15:37:28.500000+01:00 - haproxy 9 - - Server postgres_rw/n2 is UP\n\
                   <133>1 2026-11-30T14:37:29.000000+00:00 - haproxy 9 - - Server postgres_ro/n2 is UP\n";
        let lines = switch_log_lines(log);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(
            lines[0].0,
            humantime::parse_rfc3339("2026-11-30T14:37:28.192041Z").unwrap()
        );
        assert_eq!(
            lines[1].0,
            humantime::parse_rfc3339("2026-11-30T14:37:28.500Z").unwrap(),
            "+01:00 is an hour ahead of UTC"
        );
    }
}
