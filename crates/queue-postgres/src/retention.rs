//! Retention: deleting a finished record, and the sweep of records older than the
//! retention period (which also folds the counters' deltas).

use queue_core::backend::{DeleteDecision, duration_ms, on_delete, retention_cutoff};
use queue_core::{Error, JobId, JobRecord, Result};

use crate::PostgresBackend;

impl PostgresBackend {
    /// Deletes a finished record, as `on_delete` decides.
    pub async fn delete(&self, id: JobId) -> Result<JobRecord> {
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let row = self
            .row_locked(&mut tx, id)
            .await?
            .ok_or(Error::NotFound { id })?;
        let decision: DeleteDecision = on_delete(row.record.status, None);
        if let Some(reason) = decision.refusal() {
            return Err(Error::NotDeletable {
                id,
                reason: reason.into(),
            });
        }
        sqlx::query(&format!(
            "DELETE FROM {}.jobs WHERE id = $1",
            self.inner.schema
        ))
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(row.record)
    }

    /// Deletes up to `limit` finished records older than the retention period, oldest
    /// first; returns how many. Folds the counters' deltas into one row per counter.
    pub async fn sweep(&self, limit: usize) -> Result<usize> {
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let now = self.now(&mut tx).await?;
        let cutoff = retention_cutoff(now, duration_ms(self.inner.queue.retention));
        let s = &self.inner.schema;
        let gone = sqlx::query(&format!(
            "DELETE FROM {s}.jobs WHERE id IN (SELECT id FROM {s}.jobs WHERE queue = $1 \
             AND finished_ms <= $2 ORDER BY finished_ms, id LIMIT $3 FOR UPDATE SKIP LOCKED)"
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(cutoff)
        .bind(limit as i64)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.db(e))?
        .rows_affected();
        sqlx::query(&format!(
            "WITH folded AS (DELETE FROM {s}.counts WHERE queue = $1 RETURNING name, n) \
             INSERT INTO {s}.counts (queue, name, n) \
             SELECT $1, name, sum(n) FROM folded GROUP BY name"
        ))
        .bind(&self.inner.queue.queue_name)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(gone as usize)
    }
}
