//! Chains: a job waiting for another to end before it is placed
//! (`queue_core::backend::released_due` says where it goes then). A waiting row is queued,
//! not ready, not delayed and not waiting on children, so claims never see it; its record
//! names the job it waits for (`after`, found by the partial index `jobs_after`).

use queue_core::backend::{Millis, released_due, to_millis};
use queue_core::{JobId, Result};
use sqlx::PgConnection;

use crate::PostgresBackend;
use crate::rows::{COLUMNS, Row};

impl PostgresBackend {
    /// `rows` just ended (in the caller's transaction, already written): the jobs waiting
    /// for them are placed, among the delayed jobs while their `run_at` is ahead, else
    /// ready at the back of their priority.
    pub(crate) async fn unchain(
        &self,
        conn: &mut PgConnection,
        now: Millis,
        rows: &[&Row],
    ) -> Result<()> {
        // Only a job with a unique key has a job waiting for it (keep-latest): others cost
        // no statement.
        let ended: Vec<String> = rows
            .iter()
            .filter(|r| r.record.status.is_terminal() && r.record.unique_key.is_some())
            .map(|r| r.record.job_id.to_string())
            .collect();
        if ended.is_empty() {
            return Ok(());
        }
        let found = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {}.jobs WHERE queue = $1 AND state ? 'after' \
             AND state->>'after' = ANY($2) AND finished_ms IS NULL ORDER BY id FOR UPDATE",
            self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(&ended)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        if found.is_empty() {
            return Ok(());
        }
        let mut waiters = found.iter().map(Row::decode).collect::<Result<Vec<_>>>()?;
        let grouped = waiters.iter().any(|w| w.record.group.is_some());
        if grouped {
            // Their groups' lanes change with them: decided in turn with the claims.
            self.gate(conn, true).await?;
        }
        for w in &mut waiters {
            w.record.after = None;
            match released_due(w.record.run_at.map(to_millis), now) {
                Some(due) => w.due_ms = Some(due),
                None => {
                    w.ready = true;
                    w.place = -1;
                }
            }
        }
        self.place_at_back(conn, &mut waiters).await?;
        self.write_rows(conn, &waiters).await?;
        self.wake(conn, None).await?;
        let mut groups: Vec<String> = waiters
            .iter()
            .filter_map(|w| w.record.group.clone())
            .collect();
        groups.sort();
        groups.dedup();
        for g in &groups {
            self.refresh_lanes(conn, g).await?;
        }
        Ok(())
    }

    /// A job of unique key `key` ended while it waited for `ahead`: the key goes back to
    /// `ahead` while that one is unfinished and no other job holds the key.
    pub(crate) async fn key_back(
        &self,
        conn: &mut PgConnection,
        ahead: JobId,
        key: &str,
    ) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE {s}.jobs SET key_held = true WHERE id = $1 AND unique_key = $2 \
             AND finished_ms IS NULL AND NOT key_held AND NOT EXISTS (SELECT 1 FROM {s}.jobs \
             WHERE queue = $3 AND unique_key = $2 AND finished_ms IS NULL AND key_held)",
            s = self.inner.schema
        ))
        .bind(ahead.as_uuid())
        .bind(key)
        .bind(&self.inner.queue.queue_name)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }
}
