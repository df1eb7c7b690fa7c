//! Listings and counts: pages of jobs newest first (`list`), and `stats` (counts by status,
//! depth per priority, lifetime totals).

use std::collections::BTreeMap;

use queue_core::backend::encode_cursor;
use queue_core::{JobStatus, LifetimeTotals, ListQuery, Page, Priority, QueueStats, Result};

use crate::rows::{COLUMNS, Row};

use crate::PostgresBackend;

/// A page of `limit` records from `rows` (selected with one more than `limit`), with the
/// cursor after the last one shown when more follow: its place is the row's `at` column
/// when selected, else `at_of(row)`.
pub(crate) fn page_of(
    rows: &[sqlx::postgres::PgRow],
    limit: usize,
    at_of: impl Fn(&Row) -> i64,
) -> Result<Page> {
    let mut jobs = Vec::with_capacity(rows.len().min(limit));
    let mut next_cursor = None;
    let mut last = None;
    for r in rows {
        if jobs.len() == limit {
            let (at, id) = last.expect("limit is at least 1");
            next_cursor = Some(encode_cursor(at, id));
            break;
        }
        let row = Row::decode(r)?;
        let at = sqlx::Row::try_get::<i64, _>(r, "at").unwrap_or_else(|_| at_of(&row));
        last = Some((at, row.record.job_id));
        let mut record = row.record;
        record.show_flow_progress();
        jobs.push(record);
    }
    Ok(Page { jobs, next_cursor })
}

impl PostgresBackend {
    /// A page of jobs, newest first (ties by id), as
    /// [`JobStore::list`](queue_core::JobStore::list): every job or one status by where
    /// it is listed (`listed_at`), one unique key's history by creation.
    pub async fn list(&self, query: &ListQuery) -> Result<Page> {
        let position = query.position()?;
        if let Some(parent) = query.parent {
            return self.children_page(parent, position, query.limit).await;
        }
        let by_created = query.unique_key.is_some() || query.waiting_on_children;
        let at = if by_created {
            "created_ms"
        } else {
            "listed_ms"
        };
        let (after_at, after_id) = match position {
            Some((ms, id)) => (Some(ms), Some(*id.as_uuid())),
            None => (None, None),
        };
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS}, {at} AS at FROM {s}.jobs WHERE queue = $1 \
             AND ($2::text IS NULL OR status = $2) \
             AND ($3::text IS NULL OR unique_key = $3) \
             AND ($4::int8 IS NULL OR ({at}, id) < ($4, $5)) \
             AND (NOT $7 OR waiting) \
             ORDER BY {at} DESC, id DESC LIMIT $6",
            s = self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(query.status.map(|s| s.as_str()))
        .bind(query.unique_key.as_deref())
        .bind(after_at)
        .bind(after_id)
        .bind(query.limit as i64 + 1)
        .bind(query.waiting_on_children)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(|e| self.db(e))?;
        page_of(&rows, query.limit, |_| 0)
    }

    /// The queue's counts, as [`JobStore::stats`](queue_core::JobStore::stats).
    pub async fn stats(&self) -> Result<QueueStats> {
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<_> = async {
            let now = self.now(&mut tx).await?;
            let s = &self.inner.schema;
            let q = &self.inner.queue.queue_name;
            // Every figure is a sum of deltas (lifetime counters, and the `now:` tallies
            // each write of a row adds, `rows::tally_names`): no row of `jobs` is read.
            let counts: Vec<(String, i64)> = sqlx::query_as(&format!(
                "SELECT name, sum(n)::int8 FROM {s}.counts WHERE queue = $1 GROUP BY name"
            ))
            .bind(q)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            let active_workers = self.live_workers(&mut tx, now).await?;
            let gate = self.gate(&mut tx, false).await?;
            let counter = |name: &str| {
                counts
                    .iter()
                    .find(|(s, _)| s == name)
                    .map_or(0, |(_, n)| *n as u64)
            };
            let status = |name: &str| counter(&format!("now:{name}"));
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
                total: JobStatus::ALL.iter().map(|st| status(st.as_str())).sum(),
                queued: status("queued"),
                processing: status("processing"),
                completed: status("completed"),
                failed: status("failed"),
                partial: status("partial"),
                cancelled: status("cancelled"),
                scheduled: counter("now:scheduled"),
                waiting_on_children: counter("now:waiting"),
                active_workers,
                depth: Priority::ALL
                    .into_iter()
                    .map(|p| (p, counter(&format!("now:ready:{}", p.band()))))
                    .collect::<BTreeMap<_, _>>(),
                totals,
                paused: gate.paused,
                rate_limit: gate.rate,
                held_until: (gate.held_until > now)
                    .then(|| queue_core::backend::from_millis(gate.held_until)),
            };
            Ok(stats)
        }
        .await;
        self.close(tx, out).await
    }
}
