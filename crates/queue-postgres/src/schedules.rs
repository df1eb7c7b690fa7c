//! Schedules: their stored forms and next runs, read and written (compare-and-set, with
//! the jobs of their ticks created in the same transaction) by the scheduler.

use queue_core::Result;
use queue_core::backend::{
    MAX_SCHEDULES, ScheduleRead, ScheduleWrite, ScheduleWritten, StoredSchedules,
};

use crate::PostgresBackend;

impl PostgresBackend {
    /// The stored schedules a read asks for, with the earliest next run of all.
    pub async fn read_schedules(&self, read: &ScheduleRead) -> Result<StoredSchedules> {
        let s = &self.inner.schema;
        let q = &self.inner.queue.queue_name;
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<_> = async {
            let now = self.now(&mut tx).await?;
            let (sql, name, limit) = match read {
                ScheduleRead::All => (
                    format!(
                        "SELECT name, stored FROM {s}.schedules WHERE queue = $1 ORDER BY name"
                    ),
                    None,
                    None,
                ),
                ScheduleRead::One(name) => (
                    format!(
                        "SELECT name, stored FROM {s}.schedules WHERE queue = $1 AND name = $2"
                    ),
                    Some(name.clone()),
                    None,
                ),
                ScheduleRead::Due { limit } => (
                    format!(
                        "SELECT name, stored FROM {s}.schedules WHERE queue = $1 AND next_ms <= $3 \
                         ORDER BY next_ms, name LIMIT $4"
                    ),
                    None,
                    Some(*limit as i64),
                ),
            };
            let schedules: Vec<(String, String)> = sqlx::query_as(&sql)
                .bind(q)
                .bind(name)
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
            let next_due_ms: Option<i64> = sqlx::query_scalar(&format!(
                "SELECT min(next_ms) FROM {s}.schedules WHERE queue = $1"
            ))
            .bind(q)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            Ok(StoredSchedules {
                now_ms: now,
                schedules,
                next_due_ms,
            })
        }
        .await;
        self.close(tx, out).await
    }

    /// One compare-and-set of a schedule with its jobs: nothing happens when the stored
    /// form is not `write.expected`.
    pub async fn write_schedule(&self, write: ScheduleWrite) -> Result<ScheduleWritten> {
        let s = &self.inner.schema;
        let q = &self.inner.queue.queue_name;
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<_> = async {
            // Writes of schedules take turns on the queue's row (the count is checked alone).
            self.gate(&mut tx, true).await?;
            let held: Option<String> = sqlx::query_scalar(&format!(
                "SELECT stored FROM {s}.schedules WHERE queue = $1 AND name = $2 FOR UPDATE"
            ))
            .bind(q)
            .bind(&write.name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            if held != write.expected {
                return Ok(ScheduleWritten::Conflict);
            }
            if held.is_none() && write.new.is_some() {
                let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {s}.schedules WHERE queue = $1"))
                    .bind(q)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                if n as usize >= MAX_SCHEDULES {
                    return Err(queue_core::backend::too_many("schedules", MAX_SCHEDULES));
                }
            }
            let written = match &write.new {
                Some((stored, next)) => {
                    let sql = format!(
                        "INSERT INTO {s}.schedules (queue, name, stored, next_ms) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (queue, name) DO UPDATE SET stored = $3, next_ms = $4"
                    );
                    sqlx::query(&sql)
                        .bind(q)
                        .bind(&write.name)
                        .bind(stored)
                        .bind(*next)
                        .execute(&mut *tx)
                        .await
                }
                None => {
                    let sql = format!("DELETE FROM {s}.schedules WHERE queue = $1 AND name = $2");
                    sqlx::query(&sql).bind(q).bind(&write.name).execute(&mut *tx).await
                }
            };
            written.map_err(|e| self.db(e))?;
            let jobs = self.enqueue_many_in(&mut tx, write.jobs).await?;
            Ok(ScheduleWritten::Applied(
                jobs.into_iter().map(|r| r.map(|r| r.job_id)).collect(),
            ))
        }
        .await;
        self.close(tx, out).await
    }
}
