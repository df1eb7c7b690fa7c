//! Retention: deleting a finished record, and the sweep of records older than the
//! retention period; and the folding of the counters' deltas (by the sweep, and by a folder
//! task whenever many wait).

use queue_core::backend::{DeleteDecision, duration_ms, on_delete, retention_cutoff};
use queue_core::{Error, JobId, JobRecord, Result};

use crate::PostgresBackend;
use crate::rows::{TALLY_COLUMNS, tallied};

impl PostgresBackend {
    /// Deletes a finished record, as `on_delete` decides.
    pub async fn delete(&self, id: JobId) -> Result<JobRecord> {
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<_> = async {
            let row = self
                .row_locked(&mut tx, id)
                .await?
                .ok_or(Error::NotFound { id })?;
            let parent = self.parent_status(&mut tx, &row).await?;
            let decision: DeleteDecision = on_delete(row.record.status, parent);
            if let Some(reason) = decision.refusal() {
                return Err(Error::NotDeletable {
                    id,
                    reason: reason.into(),
                });
            }
            let s = &self.inner.schema;
            sqlx::query(&format!(
                "WITH gone AS (DELETE FROM {s}.jobs WHERE id = $1 RETURNING {TALLY_COLUMNS}) {}",
                tallied(s, &["gone"], &[])
            ))
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            Ok(row.record)
        }
        .await;
        self.close(tx, out).await
    }

    /// Deletes up to `limit` finished records older than the retention period, oldest
    /// first; returns how many. Folds the counters' deltas into one row per counter.
    pub async fn sweep(&self, limit: usize) -> Result<usize> {
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<_> = async {
            let now = self.now(&mut tx).await?;
            let cutoff = retention_cutoff(now, duration_ms(self.inner.queue.retention));
            let s = &self.inner.schema;
            // A finished child whose parent is unfinished is kept, its retention started again,
            // and counts against `limit` too: a sweep's work is bounded by `limit`.
            let (gone, _kept): (i64, i64) = sqlx::query_as(&format!(
                "WITH due AS (SELECT j.id, (p.id IS NOT NULL AND p.finished_ms IS NULL \
                 AND p.created_ms <= j.created_ms) AS keep FROM {s}.jobs j \
                 LEFT JOIN {s}.jobs p ON p.id = j.parent \
                 WHERE j.queue = $1 AND j.finished_ms <= $2 ORDER BY j.finished_ms, j.id LIMIT $3 \
                 FOR UPDATE OF j SKIP LOCKED), \
                 gone AS (DELETE FROM {s}.jobs WHERE id IN (SELECT id FROM due WHERE NOT keep) \
                 RETURNING {TALLY_COLUMNS}), \
                 kept AS (UPDATE {s}.jobs SET finished_ms = $4 WHERE id IN (SELECT id FROM due \
                 WHERE keep) RETURNING 1), \
                 tallies AS ({}) \
                 SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM kept)",
                tallied(s, &["gone"], &[])
            ))
            .bind(&self.inner.queue.queue_name)
            .bind(cutoff)
            .bind(limit as i64)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            self.sweep_parked(&mut tx, cutoff, limit).await?;
            self.fold_series(&mut tx, now).await?;
            self.fold_counts(&mut tx).await?;
            Ok(gone as usize)
        }
        .await;
        let gone = self.close(tx, out).await?;
        // Cascades a crash left unfinished go on.
        self.finish_cascades().await?;
        Ok(gone)
    }

    /// Folds the queue's counter and tally deltas into one row per name.
    async fn fold_counts(&self, conn: &mut sqlx::PgConnection) -> Result<()> {
        let s = &self.inner.schema;
        sqlx::query(&format!(
            "WITH folded AS (DELETE FROM {s}.counts WHERE queue = $1 RETURNING name, n) \
             INSERT INTO {s}.counts (queue, name, n) \
             SELECT $1, name, sum(n) FROM folded GROUP BY name"
        ))
        .bind(&self.inner.queue.queue_name)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// One pass of the folder: when more than [`FOLD_AT`] deltas wait, folds them (one
    /// process at a time), so `stats` sums a bounded number of rows whatever the rate.
    async fn fold_step(&self) -> Result<()> {
        let s = &self.inner.schema;
        let q = &self.inner.queue.queue_name;
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<()> = async {
            let due: bool = sqlx::query_scalar(&format!(
                "SELECT count(*) > {FOLD_AT} FROM (SELECT 1 FROM {s}.counts WHERE queue = $1 \
                 LIMIT {FOLD_AT} + 1) d"
            ))
            .bind(q)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            if !due {
                return Ok(());
            }
            let mine: bool = sqlx::query_scalar(
                "SELECT pg_try_advisory_xact_lock(hashtext('dcs-queue-fold:' || $1 || ':' || $2))",
            )
            .bind(s)
            .bind(q)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            if mine {
                self.fold_counts(&mut tx).await?;
            }
            Ok(())
        }
        .await;
        self.close(tx, out).await
    }

    /// The status of the job `row` names as its parent, when that job is its parent.
    pub(crate) async fn parent_status(
        &self,
        conn: &mut sqlx::PgConnection,
        row: &crate::rows::Row,
    ) -> Result<Option<queue_core::JobStatus>> {
        let Some(parent) = row.record.parent else {
            return Ok(None);
        };
        Ok(self
            .row_in(conn, parent)
            .await?
            .filter(|p| queue_core::backend::is_parent_of(p.created_ms, row.created_ms))
            .map(|p| p.record.status))
    }
}

/// Deltas of one queue's counters past which the folder folds them.
const FOLD_AT: i64 = 256;
/// How often the folder looks.
const FOLD_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The folder task: every [`FOLD_EVERY`], folds the queue's counter deltas when many
/// wait, and deletes the claims' older cursors and requests (`claims::forget_old`).
/// `backend` upgrades a weak handle: the task ends once the backend is dropped.
pub(crate) async fn folder(backend: impl Fn() -> Option<PostgresBackend>) {
    loop {
        tokio::time::sleep(FOLD_EVERY).await;
        let Some(backend) = backend() else {
            return;
        };
        if let Err(e) = backend.fold_step().await {
            tracing::debug!(error = %e, "postgres: folding counters failed; the sweep folds them");
        }
        if let Err(e) = backend.forget_old().await {
            tracing::debug!(error = %e, "postgres: deleting old cursors failed; tried again");
        }
    }
}
