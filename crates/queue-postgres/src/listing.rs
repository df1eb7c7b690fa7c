//! Listings and counts: `stats` (counts by status, depth per priority, lifetime totals).

use std::collections::BTreeMap;

use queue_core::{LifetimeTotals, Priority, QueueStats, Result};

use crate::PostgresBackend;

impl PostgresBackend {
    /// The queue's counts, as [`JobStore::stats`](queue_core::JobStore::stats).
    pub async fn stats(&self) -> Result<QueueStats> {
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let now = self.now(&mut tx).await?;
        let s = &self.inner.schema;
        let q = &self.inner.queue.queue_name;
        let by_status: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT status, count(*) FROM {s}.jobs WHERE queue = $1 GROUP BY status"
        ))
        .bind(q)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.db(e))?;
        let depth: Vec<(i16, i64)> = sqlx::query_as(&format!(
            "SELECT band, count(*) FROM {s}.jobs WHERE queue = $1 AND ready GROUP BY band"
        ))
        .bind(q)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.db(e))?;
        let scheduled: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {s}.jobs WHERE queue = $1 AND due_ms IS NOT NULL"
        ))
        .bind(q)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| self.db(e))?;
        let counts: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT name, sum(n)::int8 FROM {s}.counts WHERE queue = $1 GROUP BY name"
        ))
        .bind(q)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.db(e))?;
        let active_workers = self.live_workers(&mut tx, now).await?;
        tx.commit().await.map_err(|e| self.db(e))?;
        let status = |name: &str| {
            by_status
                .iter()
                .find(|(s, _)| s == name)
                .map_or(0, |(_, n)| *n as u64)
        };
        let counter = |name: &str| {
            counts
                .iter()
                .find(|(s, _)| s == name)
                .map_or(0, |(_, n)| *n as u64)
        };
        let totals = LifetimeTotals {
            enqueued: counter("enqueued"),
            completed: counter("completed"),
            failed: counter("failed"),
            partial: counter("partial"),
            cancelled: counter("cancelled"),
            retried: counter("retried"),
            recovered: counter("recovered"),
        };
        let stats = QueueStats {
            total: by_status.iter().map(|(_, n)| *n as u64).sum(),
            queued: status("queued"),
            processing: status("processing"),
            completed: status("completed"),
            failed: status("failed"),
            partial: status("partial"),
            cancelled: status("cancelled"),
            scheduled: scheduled as u64,
            active_workers,
            depth: Priority::ALL
                .into_iter()
                .map(|p| {
                    let n = depth
                        .iter()
                        .find(|(b, _)| *b == i16::from(p.band()))
                        .map_or(0, |(_, n)| *n as u64);
                    (p, n)
                })
                .collect::<BTreeMap<_, _>>(),
            totals,
            ..QueueStats::default()
        };
        Ok(stats)
    }
}
