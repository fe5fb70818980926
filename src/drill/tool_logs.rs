//! The tools' own account of a restore, read from their logs: pgBackRest's restore begin/end, PostgreSQL's
//! recovery target, the recovery point it reached, the end of WAL replay, the new timeline, and when it accepted
//! connections. Each line goes onto the timeline at its own time; the one with a harness stamp for the same moment
//! (the restored primary accepting writes) becomes a log-agreement pair, and the recovery point PostgreSQL reports
//! is checked against the target.

use std::time::{Duration, SystemTime};

/// A restore-related log line: which tool said it, when, what.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolLine {
    pub source: String,
    pub at: SystemTime,
    pub line: String,
}

/// The phrases read, as pgBackRest 2.45 and PostgreSQL 15 write them (HA-FACTS).
pub const PGBACKREST_NEEDLES: [&str; 3] = [
    "restore command begin",
    "restore backup set",
    "restore command end",
];
pub const POSTGRES_NEEDLES: [&str; 6] = [
    "starting point-in-time recovery to",
    "recovery stopping before",
    "last completed transaction was at log time",
    "selected new timeline ID",
    "archive recovery complete",
    "database system is ready to accept connections",
];

/// Redis's account of loading an RDB (Redis 7): the data's own age, the keys, the moment it serves.
pub const REDIS_NEEDLES: [&str; 3] = ["RDB age", "Done loading RDB", "DB loaded from disk"];

/// Like `matching`, for Redis's log format.
pub fn matching_redis(source: &str, text: &str, since: SystemTime) -> Vec<ToolLine> {
    matching_with(
        source,
        text,
        &REDIS_NEEDLES,
        since,
        crate::component::parse_redis_time,
    )
}

/// `YYYY-MM-DD HH:MM:SS.mmm` at the start of a pgBackRest or PostgreSQL log line (UTC: faultline runs both with
/// TZ=UTC and PostgreSQL's `log_timezone` defaults to it there).
pub fn line_time(line: &str) -> Option<SystemTime> {
    let ts = line.get(..23)?;
    humantime::parse_rfc3339_weak(ts).ok()
}

/// The lines of `text` containing one of `needles`, dated, at or after `since` (pgBackRest and PostgreSQL).
pub fn matching(source: &str, text: &str, needles: &[&str], since: SystemTime) -> Vec<ToolLine> {
    matching_with(source, text, needles, since, line_time)
}

fn matching_with(
    source: &str,
    text: &str,
    needles: &[&str],
    since: SystemTime,
    time_of: fn(&str) -> Option<SystemTime>,
) -> Vec<ToolLine> {
    text.lines()
        .filter(|l| needles.iter().any(|n| l.contains(n)))
        .filter_map(|l| {
            let at = time_of(l)?;
            (at >= since).then(|| ToolLine {
                source: source.to_string(),
                at,
                line: l.trim().to_string(),
            })
        })
        .collect()
}

/// The recovery point PostgreSQL reports ("last completed transaction was at log time 2026-11-30
/// 04:40:15.299783+00").
pub fn recovery_point(lines: &[ToolLine]) -> Option<SystemTime> {
    lines.iter().find_map(|l| {
        let rest = l
            .line
            .split("last completed transaction was at log time ")
            .nth(1)?;
        let ts = rest.trim().trim_end_matches("+00");
        let (whole, frac) = ts.split_once('.').unwrap_or((ts, "0"));
        let base = humantime::parse_rfc3339_weak(whole).ok()?;
        let micros: u64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
        Some(base + Duration::from_micros(micros))
    })
}

/// The "ready to accept connections" line of the server start that served: the last one at or before the
/// harness saw writes accepted (0.5 s of slack for the log's rounding), else the first. After a custom bootstrap
/// Patroni restarts PostgreSQL: its first start, at the end of recovery, served no client (seen here: ready at
/// +8.9 s, restarted, ready again at +11.6 s, the first client write acknowledged 14 ms later).
pub fn ready(lines: &[ToolLine], served: Option<SystemTime>) -> Option<&ToolLine> {
    serving_line(
        lines,
        "database system is ready to accept connections",
        served,
    )
}

/// The line with `needle` of the start that served (see `ready`).
pub fn serving_line<'a>(
    lines: &'a [ToolLine],
    needle: &str,
    served: Option<SystemTime>,
) -> Option<&'a ToolLine> {
    let ready = || lines.iter().filter(|l| l.line.contains(needle));
    served
        .and_then(|h| {
            ready()
                .filter(|l| l.at <= h + Duration::from_millis(500))
                .max_by_key(|l| l.at)
        })
        .or_else(|| ready().min_by_key(|l| l.at))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: &str = "\
2026-11-30 04:40:32.828 UTC [29097] LOG:  starting point-in-time recovery to 2026-11-30 04:40:25.646802+00
2026-11-30 04:40:32.980 UTC [29097] LOG:  last completed transaction was at log time 2026-11-30 04:40:15.299783+00
2026-11-30 04:40:33.010 UTC [29093] LOG:  database system is ready to accept connections
2026-11-30 04:40:31,616 INFO: Lock owner: None; I am n1
";

    #[test]
    fn reads_redis_s_account_of_loading_an_rdb() {
        let log = "11285:M 30 Nov 2026 06:00:25.700 * RDB age 5 seconds\n\
                   11285:M 30 Nov 2026 06:00:25.701 * Done loading RDB, keys loaded: 515, keys expired: 0.\n\
                   11285:M 30 Nov 2026 06:00:25.702 * DB loaded from disk: 0.002 seconds\n\
                   11285:M 30 Nov 2026 06:00:25.703 * Ready to accept connections tcp\n";
        let since = humantime::parse_rfc3339_weak("2026-11-30 06:00:00").unwrap();
        let lines = matching_redis("redis n1", log, since);
        assert_eq!(lines.len(), 3);
        let loaded = serving_line(&lines, "DB loaded from disk", None).unwrap();
        assert_eq!(
            humantime::format_rfc3339_millis(loaded.at).to_string(),
            "2026-11-30T06:00:25.702Z"
        );
    }

    #[test]
    fn reads_the_recovery_point_and_the_moment_of_serving() {
        let since = humantime::parse_rfc3339_weak("2026-11-30 04:40:30").unwrap();
        let lines = matching("postgresql n1", PG, &POSTGRES_NEEDLES, since);
        assert_eq!(lines.len(), 3);
        let rp = recovery_point(&lines).unwrap();
        assert_eq!(
            humantime::format_rfc3339_micros(rp).to_string(),
            "2026-11-30T04:40:15.299783Z"
        );
        let r = ready(&lines, None).unwrap();
        assert_eq!(
            humantime::format_rfc3339_millis(r.at).to_string(),
            "2026-11-30T04:40:33.010Z"
        );
        // Restarted by Patroni after the bootstrap: the start that served is the one before the harness saw it.
        let mut restarted = lines.clone();
        let again = humantime::parse_rfc3339_weak("2026-11-30 04:40:36.000").unwrap();
        restarted.push(ToolLine {
            source: "postgresql n1".into(),
            at: again,
            line: "2026-11-30 04:40:36.000 UTC [1] LOG:  database system is ready to accept connections".into(),
        });
        let served = humantime::parse_rfc3339_weak("2026-11-30 04:40:36.150").unwrap();
        assert_eq!(ready(&restarted, Some(served)).unwrap().at, again);
        // A harness stamp before any ready line pairs with the first one (and shows the disagreement).
        let early = humantime::parse_rfc3339_weak("2026-11-30 04:40:20").unwrap();
        assert_eq!(ready(&restarted, Some(early)).unwrap().at, r.at);
        // Lines before the restore began are not its account.
        let later = humantime::parse_rfc3339_weak("2026-11-30 04:40:33").unwrap();
        assert_eq!(
            matching("postgresql n1", PG, &POSTGRES_NEEDLES, later).len(),
            1
        );
    }
}
