//! Unique keys and their modes: what an enqueue does when another job holds its key
//! (`queue_core::backend::on_key_held` decides, in the enqueue's transaction).
//!
//! A keyed enqueue (debounce, throttle) first takes a transaction lock on its key, so two
//! of one key decide one after the other, each seeing what the other committed; the
//! one-active-job-per-key index guards them against plain enqueues.

use queue_core::backend::{Holder, KeyAction, Millis, duration_ms, from_millis, on_key_held};
use queue_core::{Error, JobId, JobRecord, KeyMode, Result};
use sqlx::PgConnection;

use crate::PostgresBackend;
use crate::rows::{COLUMNS, Row};

impl PostgresBackend {
    /// Applies `mode` to the holder of the key of `new` (the row of the job to enqueue, born
    /// at `now`), in the caller's transaction: `None` when the job is to be inserted (a job
    /// to wait for the running holder is made so: chained), else its answer.
    pub(crate) async fn keyed_in(
        &self,
        conn: &mut PgConnection,
        new: &mut Row,
        mode: KeyMode,
        now: Millis,
    ) -> Result<Option<Result<JobRecord>>> {
        let record = &new.record;
        let Some(key) = record.unique_key.as_deref() else {
            return Ok(None);
        };
        let (schema, queue) = (&self.inner.schema, &self.inner.queue.queue_name);
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('dcs-key:' || $1), hashtext($2))")
            .bind(queue)
            .bind(key)
            .execute(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        let active = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {schema}.jobs WHERE queue = $1 AND unique_key = $2 \
             AND finished_ms IS NULL AND key_held FOR UPDATE"
        ))
        .bind(queue)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        let mut holder = active.as_ref().map(Row::decode).transpose()?;
        let mut state = holder
            .as_ref()
            .map(|h| Holder::of(&h.record, h.lease.is_some()));
        if let (None, Some(window)) = (&holder, mode.window()) {
            // The newest job of the key, by creation then id (as every backend).
            let newest = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM {schema}.jobs WHERE queue = $1 AND unique_key = $2 \
                 ORDER BY created_ms DESC, id DESC LIMIT 1"
            ))
            .bind(queue)
            .bind(key)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
            if let Some(row) = newest.as_ref().map(Row::decode).transpose()?
                && now - row.created_ms < duration_ms(window)
            {
                holder = Some(row);
                state = Some(Holder::Recent);
            }
        }
        let (Some(mut holder), Some(state)) = (holder, state) else {
            return Ok(None);
        };
        let id = holder.record.job_id;
        Ok(Some(match on_key_held(mode.kind(), state) {
            KeyAction::Create => {
                if state != Holder::Recent {
                    // The running holder goes on without the key; the new job takes it.
                    self.let_key_go(conn, id).await?;
                }
                return Ok(None);
            }
            KeyAction::Chain => {
                // The new job waits for the running holder to end, and takes the key.
                self.chain_behind(conn, new, id).await?;
                return Ok(None);
            }
            KeyAction::Supersede => {
                // The holder is asked to stop (a parent waiting on children ends at once);
                // the new job waits for it while it still runs.
                if self.cancel_in(conn, id, now).await? != queue_core::CancelOutcome::Cancelled {
                    self.chain_behind(conn, new, id).await?;
                }
                return Ok(None);
            }
            KeyAction::Refuse => Err(Error::AlreadyExists {
                unique_key: key.to_owned(),
                job_id: id,
            }),
            KeyAction::Answer => {
                holder.record.show_flow_progress();
                Ok(holder.record)
            }
            KeyAction::Replace => {
                let new = new.record.clone();
                self.replace(conn, &mut holder, &new, mode, now).await?;
                Ok(holder.record)
            }
        }))
    }

    /// A replacement: the pending `holder` takes `new`'s payload; a debounce moves its start
    /// to `new`'s `run_at` (its delay from now), wherever it waited before (one waiting for
    /// another job to end keeps waiting); keep-latest keeps its place.
    async fn replace(
        &self,
        conn: &mut PgConnection,
        holder: &mut Row,
        new: &JobRecord,
        mode: KeyMode,
        now: Millis,
    ) -> Result<()> {
        let restart = mode.restart_delay().is_some();
        let chained = holder.record.after.is_some();
        let group = holder
            .record
            .group
            .clone()
            .filter(|_| holder.ready && restart && !chained);
        if group.is_some() {
            // Its group's lanes change with it: decided in turn with the claims.
            self.gate(conn, true).await?;
        }
        let id = holder.record.job_id;
        sqlx::query(&format!(
            "UPDATE {}.jobs SET payload = $2 WHERE id = $1",
            self.inner.schema
        ))
        .bind(id.as_uuid())
        .bind(new.payload.as_str())
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        let due = new
            .run_at
            .map(queue_core::backend::to_millis)
            .unwrap_or(now);
        holder.record.payload = new.payload.clone();
        holder.record.replaced += 1;
        if restart {
            holder.record.run_at = Some(from_millis(due));
            if !chained {
                holder.ready = false;
                holder.due_ms = Some(due);
            }
        }
        self.write_rows(conn, std::slice::from_ref(holder)).await?;
        if let Some(g) = &group {
            self.refresh_lanes(conn, g).await?;
        }
        Ok(())
    }

    /// `new` waits for the running holder `id` to end, and takes its key.
    async fn chain_behind(&self, conn: &mut PgConnection, new: &mut Row, id: JobId) -> Result<()> {
        self.let_key_go(conn, id).await?;
        new.record.after = Some(id);
        new.ready = false;
        new.due_ms = None;
        Ok(())
    }

    /// Job `id` no longer holds its unique key (it keeps it on its record and in the key's
    /// history).
    async fn let_key_go(&self, conn: &mut PgConnection, id: JobId) -> Result<()> {
        self.set_key_held(conn, id, false).await
    }

    /// Whether job `id` holds its unique key (a manual retry takes it back).
    pub(crate) async fn set_key_held(
        &self,
        conn: &mut PgConnection,
        id: JobId,
        held: bool,
    ) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE {}.jobs SET key_held = $2 WHERE id = $1 AND key_held <> $2",
            self.inner.schema
        ))
        .bind(id.as_uuid())
        .bind(held)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }
}
