//! Workers: liveness by heartbeat, their listing and deregistration.

use queue_core::backend::{
    LOST_WORKER_KEPT, Millis, WorkerBeat, duration_ms, from_millis, worker_listing,
};
use queue_core::{JobId, Result, WorkerId, WorkerInfo};
use sqlx::PgConnection;

use crate::PostgresBackend;

impl PostgresBackend {
    /// Records `beat` as the worker's last sign of life, and forgets workers lost for
    /// longer than [`LOST_WORKER_KEPT`].
    pub(crate) async fn seen(
        &self,
        conn: &mut PgConnection,
        beat: &WorkerBeat,
        now: Millis,
    ) -> Result<()> {
        let info = WorkerInfo {
            worker_id: beat.worker.as_str().to_owned(),
            host: beat.host.clone(),
            pid: beat.pid,
            concurrency: beat.concurrency,
            started_at: beat.started_at,
            last_seen: from_millis(now),
            jobs: Vec::new(),
            version: beat.version.clone(),
            tasks: beat.tasks.clone(),
            schemas: beat.schemas.clone(),
            lost: false,
        };
        let info = serde_json::to_value(&info).map_err(|e| queue_core::Error::Codec {
            context: format!(
                "worker {}: encoding its heartbeat: {e}",
                beat.worker.as_str()
            ),
            source: None,
        })?;
        // A worker is alive for three of its intervals after a beat (as every backend).
        let alive_ms = 3 * duration_ms(beat.interval);
        // Workers silent for three of their intervals are lost: their request history goes
        // (a request they send again claims anew), once, at the first beat after their
        // liveness ended (those that ended since the queue's last beat, `lost_seen`), as on
        // every backend: a lost worker that claims again keeps that claim's history.
        sqlx::query(&format!(
            "WITH beat AS (UPDATE {s}.queues q SET lost_seen = greatest(q.lost_seen, $2) \
             FROM (SELECT lost_seen FROM {s}.queues WHERE queue = $1 FOR UPDATE) prev \
             WHERE q.queue = $1 RETURNING prev.lost_seen AS since) \
             DELETE FROM {s}.claims WHERE queue = $1 AND worker IN (SELECT worker \
             FROM {s}.workers, beat WHERE queue = $1 AND seen_ms + alive_ms < $2 \
             AND seen_ms + alive_ms >= beat.since)",
            s = self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        sqlx::query(&format!(
            "WITH gone AS (DELETE FROM {s}.workers WHERE queue = $1 \
             AND seen_ms + alive_ms + $6 < $4) \
             INSERT INTO {s}.workers (queue, worker, seen_ms, alive_ms, info) \
             VALUES ($1, $2, $4, $5, $3) \
             ON CONFLICT (queue, worker) DO UPDATE SET seen_ms = $4, alive_ms = $5, info = $3",
            s = self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(beat.worker.as_str())
        .bind(info)
        .bind(now)
        .bind(alive_ms)
        .bind(duration_ms(LOST_WORKER_KEPT))
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// Workers alive or lost recently (`worker_listing`), with the jobs each holds, by id.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let mut conn = self.inner.pool.acquire().await.map_err(|e| self.db(e))?;
        let now = self.now(&mut conn).await?;
        let rows: Vec<(i64, i64, serde_json::Value)> = sqlx::query_as(&format!(
            "SELECT seen_ms, alive_ms, info FROM {}.workers WHERE queue = $1 ORDER BY worker",
            self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        let held: Vec<(String, uuid::Uuid)> = sqlx::query_as(&format!(
            "SELECT claim_worker, id FROM {}.jobs WHERE queue = $1 AND lease_token IS NOT NULL \
             ORDER BY id",
            self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for (seen, alive, info) in rows {
            let Some(lost) = worker_listing(seen + alive, now) else {
                continue;
            };
            let mut info: WorkerInfo = serde_json::from_value(info).map_err(|e| {
                queue_core::Error::corrupt(format!("a worker's stored heartbeat: {e}"))
            })?;
            info.lost = lost;
            info.jobs = held
                .iter()
                .filter(|(w, _)| *w == info.worker_id)
                .map(|(_, id)| JobId::from_uuid(*id))
                .collect();
            out.push(info);
        }
        Ok(out)
    }

    /// Workers alive now (for `stats`).
    pub(crate) async fn live_workers(&self, conn: &mut PgConnection, now: Millis) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {}.workers WHERE queue = $1 AND seen_ms + alive_ms >= $2",
            self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(now)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(n as u64)
    }

    /// Forgets a stopping worker, and its request history (a request it sends again
    /// claims anew).
    pub async fn deregister(&self, worker: &WorkerId) -> Result<()> {
        sqlx::query(&format!(
            "WITH forgotten AS (DELETE FROM {s}.claims WHERE queue = $1 AND worker = $2) \
             DELETE FROM {s}.workers WHERE queue = $1 AND worker = $2",
            s = self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(worker.as_str())
        .execute(&self.inner.pool)
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }
}
