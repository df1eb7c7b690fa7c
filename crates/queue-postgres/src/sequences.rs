//! Ordered sequences (`queue_core::sequences`): each sequence's tail (its newest unfinished
//! member) is a row of `sequences`; a member joins under a transaction lock on (queue,
//! sequence), chained behind the tail (`chains.rs` releases it), and becomes the tail.

use queue_core::{JobId, Result};
use sqlx::PgConnection;

use crate::PostgresBackend;
use crate::rows::Row;

impl PostgresBackend {
    /// `row` (a new job, or one retried by hand) joins its sequence, if it has one, in the
    /// caller's transaction: chained behind the tail when there is one. The caller makes it
    /// the tail ([`PostgresBackend::set_tail`]) once it is written.
    pub(crate) async fn join_sequence(&self, conn: &mut PgConnection, row: &mut Row) -> Result<()> {
        let Some(name) = row.record.sequence.as_deref() else {
            return Ok(());
        };
        let queue = &self.inner.queue.queue_name;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('dcs-seq:' || $1), hashtext($2))")
            .bind(queue)
            .bind(name)
            .execute(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        let tail: Option<uuid::Uuid> = sqlx::query_scalar(&format!(
            "SELECT tail FROM {}.sequences WHERE queue = $1 AND name = $2",
            self.inner.schema
        ))
        .bind(queue)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        if let Some(tail) = tail.map(JobId::from_uuid)
            && tail != row.record.job_id
        {
            row.record.after = Some(tail);
            row.ready = false;
            row.due_ms = None;
        }
        Ok(())
    }

    /// Job `id` is the tail of sequence `name`.
    pub(crate) async fn set_tail(
        &self,
        conn: &mut PgConnection,
        name: &str,
        id: JobId,
    ) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO {}.sequences (queue, name, tail) VALUES ($1, $2, $3) \
             ON CONFLICT (queue, name) DO UPDATE SET tail = EXCLUDED.tail",
            self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(name)
        .bind(id.as_uuid())
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// Sequence tails that ended: the tail goes to the member it waited for (`waited`), or
    /// the sequence has none.
    pub(crate) async fn tails_ended(
        &self,
        conn: &mut PgConnection,
        ended: &[JobId],
        waited: Option<JobId>,
    ) -> Result<()> {
        let ids: Vec<uuid::Uuid> = ended.iter().map(|id| *id.as_uuid()).collect();
        let s = &self.inner.schema;
        let sql = match waited {
            Some(_) => {
                format!("UPDATE {s}.sequences SET tail = $3 WHERE queue = $1 AND tail = ANY($2)")
            }
            None => format!("DELETE FROM {s}.sequences WHERE queue = $1 AND tail = ANY($2)"),
        };
        let mut query = sqlx::query(&sql)
            .bind(&self.inner.queue.queue_name)
            .bind(&ids);
        if let Some(w) = waited {
            query = query.bind(*w.as_uuid());
        }
        query.execute(&mut *conn).await.map_err(|e| self.db(e))?;
        Ok(())
    }
}
