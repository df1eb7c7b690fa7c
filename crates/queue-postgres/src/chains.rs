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
        // Only a job with a unique key (keep-latest) or a sequence has a job waiting for
        // it: others cost no statement.
        let ended: Vec<&Row> = rows
            .iter()
            .copied()
            .filter(|r| {
                r.record.status.is_terminal()
                    && (r.record.unique_key.is_some() || r.record.sequence.is_some())
            })
            .collect();
        if ended.is_empty() {
            return Ok(());
        }
        let tails: Vec<JobId> = ended
            .iter()
            .filter(|r| r.record.sequence.is_some())
            .map(|r| r.record.job_id)
            .collect();
        if !tails.is_empty() {
            self.tails_ended(conn, &tails, None).await?;
        }
        let mut waiters = self.waiting_for(conn, &ended).await?;
        if waiters.is_empty() {
            return Ok(());
        }
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

    /// The unfinished jobs waiting for `ended`, locked.
    async fn waiting_for(&self, conn: &mut PgConnection, ended: &[&Row]) -> Result<Vec<Row>> {
        let ids: Vec<String> = ended.iter().map(|r| r.record.job_id.to_string()).collect();
        let found = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {}.jobs WHERE queue = $1 AND state ? 'after' \
             AND state->>'after' = ANY($2) AND finished_ms IS NULL ORDER BY id FOR UPDATE",
            self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        found.iter().map(Row::decode).collect()
    }

    /// `row` was cancelled while it waited for `ahead`: the job waiting for it now waits
    /// for `ahead`, a sequence whose tail it was has `ahead` as its tail, and its unique key
    /// goes back to `ahead` (`key_back`).
    pub(crate) async fn unchain_waiting(
        &self,
        conn: &mut PgConnection,
        row: &Row,
        ahead: JobId,
    ) -> Result<()> {
        if row.record.sequence.is_some() {
            self.tails_ended(conn, &[row.record.job_id], Some(ahead))
                .await?;
        }
        if let Some(key) = &row.record.unique_key {
            self.key_back(conn, ahead, key).await?;
        }
        let mut waiters = self.waiting_for(conn, &[row]).await?;
        for w in &mut waiters {
            w.record.after = Some(ahead);
        }
        self.write_rows(conn, &waiters).await
    }

    /// A job of unique key `key` ended while it waited for `ahead`: the key goes back to
    /// `ahead` while that one is unfinished and no other job holds the key.
    async fn key_back(&self, conn: &mut PgConnection, ahead: JobId, key: &str) -> Result<()> {
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
