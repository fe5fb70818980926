//! Run history: every run's measurements in a SQLite database in the reports directory (`history.sqlite`), so
//! a run can be compared with its scenario's recent runs and `faultline history` can print each metric's trend.
//!
//! A regression: a metric of this run worse than the median of the scenario's last `WINDOW` completed runs by
//! more than those runs' own spread (max - min), with at least `MIN_RUNS` of them. "Worse" is higher for times,
//! counts, rates and latencies, lower for availability, the recoverable window and throughput under the fault.
//! Metrics that describe the load rather than its outcome are not judged (acknowledged, discarded and recovered
//! writes, baseline throughput).

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, Connection};
use serde::Serialize;

use crate::report::RunReport;

/// The database's file name in the reports directory.
pub const FILE: &str = "history.sqlite";
/// How many earlier runs a run is compared with.
pub const WINDOW: usize = 10;
/// Fewer earlier runs than this: no comparison (their spread says nothing yet).
pub const MIN_RUNS: usize = 3;

/// One metric of this run flagged against its history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Regression {
    pub metric: String,
    pub value: f64,
    /// Median and spread (max - min) of the earlier runs compared with.
    pub median: f64,
    pub spread: f64,
    pub runs: usize,
}

/// Whether a larger value of `metric` is better; None = not judged (it describes the load, not the outcome).
pub fn higher_is_better(metric: &str) -> Option<bool> {
    if matches!(
        metric,
        "acked_writes" | "discarded_writes" | "recovered_writes" | "regressions"
    ) || (metric.contains("throughput") && metric.ends_with("_baseline_per_s"))
    {
        return None;
    }
    Some(
        metric == "availability_pct"
            || metric == "recoverable_window_s"
            || (metric.contains("throughput") && metric.ends_with("_fault_per_s")),
    )
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The metrics of `values` worse than their history (`earlier(metric)`: the metric's values in the earlier runs,
/// newest first) by more than its spread.
pub fn regressions(
    values: &BTreeMap<String, Option<f64>>,
    earlier: impl Fn(&str) -> Vec<f64>,
) -> Vec<Regression> {
    let mut out = Vec::new();
    for (metric, value) in values {
        let (Some(value), Some(higher_better)) = (value, higher_is_better(metric)) else {
            continue;
        };
        let mut past: Vec<f64> = earlier(metric).into_iter().take(WINDOW).collect();
        if past.len() < MIN_RUNS {
            continue;
        }
        past.sort_by(f64::total_cmp);
        let med = median(&past);
        let spread = past[past.len() - 1] - past[0];
        let worse_by = if higher_better {
            med - value
        } else {
            value - med
        };
        if worse_by > spread {
            out.push(Regression {
                metric: metric.clone(),
                value: *value,
                median: med,
                spread,
                runs: past.len(),
            });
        }
    }
    out
}

/// This run next to the scenario's previous completed run: every judged metric both have.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    pub run_id: String,
    pub started_at: String,
    pub verdict: String,
    pub metrics: Vec<Compared>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Compared {
    pub metric: String,
    pub previous: f64,
    pub now: f64,
}

/// `values` next to `previous`'s (judged metrics present in both, by name).
pub fn compare(values: &BTreeMap<String, Option<f64>>, previous: &PastRun) -> Comparison {
    Comparison {
        run_id: previous.run_id.clone(),
        started_at: previous.started_at.clone(),
        verdict: previous.verdict.clone(),
        metrics: values
            .iter()
            .filter(|(m, _)| higher_is_better(m).is_some())
            .filter_map(|(m, v)| {
                Some(Compared {
                    metric: m.clone(),
                    previous: *previous.values.get(m)?,
                    now: (*v)?,
                })
            })
            .collect(),
    }
}

/// The history database.
pub struct History {
    conn: Connection,
}

/// One earlier run as `faultline history` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct PastRun {
    pub run_id: String,
    pub started_at: String,
    pub verdict: String,
    pub values: BTreeMap<String, f64>,
}

impl History {
    /// Opens (creating when missing) the history in `reports_dir`.
    pub fn open(reports_dir: &Path) -> Result<History, String> {
        std::fs::create_dir_all(reports_dir)
            .map_err(|e| format!("{}: {e}", reports_dir.display()))?;
        let path = reports_dir.join(FILE);
        let conn = Connection::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS runs (
                 run_id TEXT PRIMARY KEY,
                 scenario TEXT NOT NULL,
                 started_at TEXT NOT NULL,
                 verdict TEXT NOT NULL,
                 faultline_version TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS measurements (
                 run_id TEXT NOT NULL REFERENCES runs(run_id),
                 metric TEXT NOT NULL,
                 value REAL NOT NULL,
                 PRIMARY KEY (run_id, metric)
             );
             CREATE INDEX IF NOT EXISTS runs_by_scenario ON runs(scenario, started_at);",
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(History { conn })
    }

    /// Records a run's headline measurements (the trial its report shows). Recording the same run again
    /// replaces it.
    pub fn record(&mut self, r: &RunReport) -> Result<(), String> {
        let tx = self.conn.transaction().map_err(|e| e.to_string())?;
        tx.execute(
            "DELETE FROM measurements WHERE run_id = ?1",
            params![r.run_id],
        )
        .map_err(|e| e.to_string())?;
        tx.execute(
            "INSERT OR REPLACE INTO runs (run_id, scenario, started_at, verdict, faultline_version)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                r.run_id,
                r.scenario,
                r.started_at,
                format!("{:?}", r.verdict).to_lowercase(),
                env!("CARGO_PKG_VERSION")
            ],
        )
        .map_err(|e| e.to_string())?;
        for (metric, value) in &r.measurements {
            if let Some(v) = value.filter(|v| v.is_finite()) {
                tx.execute(
                    "INSERT INTO measurements (run_id, metric, value) VALUES (?1, ?2, ?3)",
                    params![r.run_id, metric, v],
                )
                .map_err(|e| e.to_string())?;
            }
        }
        tx.commit().map_err(|e| e.to_string())
    }

    /// A metric's values in the scenario's completed runs (verdict pass or fail), newest first, at most `limit`,
    /// leaving out `except` (the run being judged).
    pub fn values(&self, scenario: &str, metric: &str, except: &str, limit: usize) -> Vec<f64> {
        let q = "SELECT m.value FROM runs r JOIN measurements m ON m.run_id = r.run_id
                 WHERE r.scenario = ?1 AND m.metric = ?2 AND r.run_id <> ?3 AND r.verdict <> 'incomplete'
                 ORDER BY r.started_at DESC, r.run_id DESC LIMIT ?4";
        let Ok(mut st) = self.conn.prepare_cached(q) else {
            return Vec::new();
        };
        st.query_map(params![scenario, metric, except, limit as i64], |row| {
            row.get::<_, f64>(0)
        })
        .map(|rows| rows.flatten().collect())
        .unwrap_or_default()
    }

    /// How many completed runs of the scenario the history holds (besides `except`).
    pub fn count(&self, scenario: &str, except: &str) -> usize {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM runs WHERE scenario = ?1 AND run_id <> ?2 AND verdict <> 'incomplete'",
                params![scenario, except],
                |row| row.get::<_, i64>(0),
            )
            .map_or(0, |n| n as usize)
    }

    /// The scenario's newest completed run other than `except`, with its measurements.
    pub fn previous(&self, scenario: &str, except: &str) -> Option<PastRun> {
        self.runs(scenario, WINDOW + 1)
            .into_iter()
            .rev()
            .find(|r| r.run_id != except && r.verdict != "incomplete")
    }

    /// The scenarios with runs, by name.
    pub fn scenarios(&self) -> Vec<String> {
        let Ok(mut st) = self
            .conn
            .prepare("SELECT DISTINCT scenario FROM runs ORDER BY scenario")
        else {
            return Vec::new();
        };
        st.query_map([], |row| row.get::<_, String>(0))
            .map(|rows| rows.flatten().collect())
            .unwrap_or_default()
    }

    /// The scenario's last `limit` runs, oldest first, with their measurements.
    pub fn runs(&self, scenario: &str, limit: usize) -> Vec<PastRun> {
        let Ok(mut st) = self.conn.prepare(
            "SELECT run_id, started_at, verdict FROM runs WHERE scenario = ?1
             ORDER BY started_at DESC, run_id DESC LIMIT ?2",
        ) else {
            return Vec::new();
        };
        let mut runs: Vec<PastRun> = st
            .query_map(params![scenario, limit as i64], |row| {
                Ok(PastRun {
                    run_id: row.get(0)?,
                    started_at: row.get(1)?,
                    verdict: row.get(2)?,
                    values: BTreeMap::new(),
                })
            })
            .map(|rows| rows.flatten().collect())
            .unwrap_or_default();
        runs.reverse();
        for r in &mut runs {
            if let Ok(mut st) = self
                .conn
                .prepare_cached("SELECT metric, value FROM measurements WHERE run_id = ?1")
            {
                if let Ok(rows) = st.query_map(params![r.run_id], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, f64>(1)?))
                }) {
                    r.values = rows.flatten().collect();
                }
            }
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;
    use crate::verdict::Verdict;

    #[test]
    fn worse_than_the_median_by_more_than_the_spread_is_a_regression() {
        let values: BTreeMap<String, Option<f64>> = [
            ("detection_s".to_string(), Some(9.0)),
            ("promotion_s".to_string(), Some(10.5)),
            ("availability_pct".to_string(), Some(97.0)),
            ("lost_acked_writes".to_string(), Some(1.0)),
            ("acked_writes".to_string(), Some(1.0)),
            ("rto_s".to_string(), None),
        ]
        .into_iter()
        .collect();
        let earlier = |m: &str| match m {
            // median 8, spread 1: 9 is worse by 1, not more than the spread.
            "detection_s" => vec![8.0, 7.5, 8.5],
            // median 10, spread 0.2: 10.5 is worse by 0.5.
            "promotion_s" => vec![10.0, 9.9, 10.1],
            // higher is better: 97 is 2.5 below the median 99.5, spread 0.2.
            "availability_pct" => vec![99.5, 99.4, 99.6],
            // always 0 before: any lost write is a regression.
            "lost_acked_writes" => vec![0.0, 0.0, 0.0, 0.0],
            // not judged.
            "acked_writes" => vec![100.0, 100.0, 100.0],
            _ => vec![],
        };
        let r = regressions(&values, earlier);
        let names: Vec<&str> = r.iter().map(|r| r.metric.as_str()).collect();
        assert_eq!(
            names,
            ["availability_pct", "lost_acked_writes", "promotion_s"]
        );
        let p = r.iter().find(|r| r.metric == "promotion_s").unwrap();
        assert_eq!((p.median, p.runs), (10.0, 3));
        assert!((p.spread - 0.2).abs() < 1e-9);
        // Two earlier runs are not enough to say anything.
        assert!(regressions(&values, |_| vec![0.0, 0.0]).is_empty());
    }

    #[test]
    fn the_database_keeps_runs_per_scenario_newest_first_and_leaves_out_incomplete_runs() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(dir.path()).unwrap();
        for (i, (verdict, detection)) in [
            (Verdict::Pass, 8.0),
            (Verdict::Fail, 9.0),
            (Verdict::Incomplete, 99.0),
            (Verdict::Pass, 7.0),
        ]
        .into_iter()
        .enumerate()
        {
            let mut r = fixtures::run_report(verdict, vec![]);
            r.run_id = format!("run-{i}");
            r.started_at = format!("2026-11-30T10:0{i}:00.000Z");
            r.measurements.insert("detection_s".into(), Some(detection));
            h.record(&r).unwrap();
        }
        // Recording again replaces, never duplicates.
        let mut again = fixtures::run_report(Verdict::Pass, vec![]);
        again.run_id = "run-3".into();
        again.started_at = "2026-11-30T10:03:00.000Z".into();
        again.measurements.insert("detection_s".into(), Some(7.0));
        h.record(&again).unwrap();
        let scenario = &again.scenario;
        assert_eq!(
            h.values(scenario, "detection_s", "none", 10),
            [7.0, 9.0, 8.0]
        );
        assert_eq!(h.values(scenario, "detection_s", "run-3", 10), [9.0, 8.0]);
        assert_eq!(h.count(scenario, "none"), 3);
        let runs = h.runs(scenario, 10);
        assert_eq!(runs.len(), 4, "the list shows incomplete runs too");
        assert_eq!(runs[0].run_id, "run-0");
        assert_eq!(runs[3].values["detection_s"], 7.0);
        // The previous completed run: run-3 itself left out, the incomplete run-2 skipped.
        assert_eq!(h.previous(scenario, "run-3").unwrap().run_id, "run-1");
        let now: BTreeMap<String, Option<f64>> = [
            ("detection_s".to_string(), Some(6.5)),
            ("acked_writes".to_string(), Some(1.0)),
        ]
        .into();
        let c = compare(&now, &h.previous(scenario, "run-3").unwrap());
        assert_eq!(
            c.metrics,
            [Compared {
                metric: "detection_s".into(),
                previous: 9.0,
                now: 6.5
            }]
        );
        // Reopening finds the same data.
        drop(h);
        let h = History::open(dir.path()).unwrap();
        assert_eq!(h.scenarios(), std::slice::from_ref(scenario));
    }
}
