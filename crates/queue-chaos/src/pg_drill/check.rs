//! The Postgres drill's checks, read from the rows themselves: accepted jobs the database
//! does not hold (lost), jobs still unfinished after the drain (stranded), executions of
//! one job that overlapped (double runs, from the histories), and `stats` (sums of the
//! maintained tallies) against counts of the rows.

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use queue_core::{JobId, JobStatus, Priority};
use queue_postgres::{PostgresBackend, sqlx};

use super::{PgReport, SCHEMA};
use crate::history;

/// How many jobs are not finished yet, counted from the rows.
async fn unfinished(b: &PostgresBackend) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{SCHEMA}\".jobs WHERE finished_ms IS NULL"
    ))
    .fetch_one(b.pool())
    .await?)
}

/// Waits until every job finished, or until `quiet` passes without one finishing.
pub(super) async fn drain(b: &PostgresBackend, quiet: Duration) -> anyhow::Result<()> {
    let mut last = i64::MAX;
    let mut moved = Instant::now();
    loop {
        let left = match unfinished(b).await {
            Ok(n) => n,
            // The server may still be recovering from the last crash.
            Err(_) => last,
        };
        if left == 0 {
            return Ok(());
        }
        if left < last {
            last = left;
            moved = Instant::now();
        } else if moved.elapsed() > quiet {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The report's findings (the caller fills in the run's facts).
pub(super) async fn report(
    b: &PostgresBackend,
    enqueued: &[JobId],
    histories: Vec<(PathBuf, Option<u64>)>,
) -> anyhow::Result<PgReport> {
    let rows: Vec<(uuid::Uuid, String, Option<i64>)> = sqlx::query_as(&format!(
        "SELECT id, status, finished_ms FROM \"{SCHEMA}\".jobs"
    ))
    .fetch_all(b.pool())
    .await?;
    let held: HashSet<uuid::Uuid> = rows.iter().map(|(id, _, _)| *id).collect();
    let lost: Vec<String> = enqueued
        .iter()
        .filter(|id| !held.contains(id.as_uuid()))
        .map(|id| id.to_string())
        .collect();
    let stranded: Vec<String> = rows
        .iter()
        .filter(|(_, _, finished)| finished.is_none())
        .map(|(id, status, _)| format!("{id} ({status})"))
        .collect();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for (_, status, _) in &rows {
        *statuses.entry(status.clone()).or_default() += 1;
    }

    let mut runs = Vec::new();
    for (path, killed) in &histories {
        runs.extend(history::read(path, *killed)?);
    }
    let double_runs: Vec<String> = history::overlaps(&runs)
        .into_iter()
        .map(|(a, b)| {
            format!(
                "{}: {} ran {}..{} and {} from {}",
                a.job, a.token, a.start, a.end, b.token, b.start
            )
        })
        .collect();
    let mut per_job: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &runs {
        *per_job.entry(r.job.as_str()).or_default() += 1;
    }

    Ok(PgReport {
        seed: 0,
        dir: String::new(),
        seconds: 0,
        enqueued: enqueued.len(),
        enqueues_sent_again: 0,
        faults: BTreeMap::new(),
        executions: runs.len(),
        rerun_jobs: per_job.values().filter(|n| **n > 1).count(),
        killed_executions: runs.iter().filter(|r| !r.finished).count(),
        double_runs,
        lost,
        stranded,
        tallies_off: tallies_off(b).await?,
        statuses,
        drain_seconds: 0.0,
    })
}

/// `stats` against the rows: every status, the ready jobs per priority, the delayed ones
/// and those waiting on children.
async fn tallies_off(b: &PostgresBackend) -> anyhow::Result<Vec<String>> {
    let stats = b.stats().await?;
    let mut rows: BTreeMap<String, u64> = BTreeMap::new();
    let counted: Vec<(String, i64)> = sqlx::query_as(&format!(
        "SELECT status, count(*) FROM \"{SCHEMA}\".jobs GROUP BY status \
         UNION ALL SELECT 'ready:' || band, count(*) FROM \"{SCHEMA}\".jobs WHERE ready GROUP BY band \
         UNION ALL SELECT 'scheduled', count(*) FROM \"{SCHEMA}\".jobs WHERE due_ms IS NOT NULL \
         UNION ALL SELECT 'waiting', count(*) FROM \"{SCHEMA}\".jobs WHERE waiting"
    ))
    .fetch_all(b.pool())
    .await?;
    for (name, n) in counted {
        rows.insert(name, n as u64);
    }
    let row = |name: &str| rows.get(name).copied().unwrap_or(0);
    let mut figures: Vec<(String, u64)> = [
        (JobStatus::Queued, stats.queued),
        (JobStatus::Processing, stats.processing),
        (JobStatus::Completed, stats.completed),
        (JobStatus::Failed, stats.failed),
        (JobStatus::Partial, stats.partial),
        (JobStatus::Cancelled, stats.cancelled),
    ]
    .into_iter()
    .map(|(s, n)| (s.as_str().to_owned(), n))
    .collect();
    for p in Priority::ALL {
        let depth = stats.depth.get(&p).copied().unwrap_or(0);
        figures.push((format!("ready:{}", p.band()), depth));
    }
    figures.push(("scheduled".into(), stats.scheduled));
    figures.push(("waiting".into(), stats.waiting_on_children));
    Ok(figures
        .into_iter()
        .filter(|(name, n)| *n != row(name))
        .map(|(name, n)| format!("{name}: stats {n}, rows {}", row(&name)))
        .collect())
}
