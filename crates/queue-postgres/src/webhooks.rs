//! Webhooks and their outbox: deliveries left by endings in the transaction that ended the
//! job, claimed, settled, parked and resent.

use std::time::Duration;

use queue_core::backend::{ClaimedDelivery, MAX_WEBHOOKS, Millis, Settle, duration_ms};
use queue_core::{Delivery, Error, JobId, JobStatus, Result, Webhook};
use sqlx::PgConnection;

use crate::PostgresBackend;
use crate::rows::Row;

/// How many deliveries one statement of a webhook's deletion removes.
const DROP_STEP: i64 = 1_000;

impl PostgresBackend {
    /// The outbox entries of `rows` (each just finished at `now`): one per webhook that
    /// wants it, in the same transaction as the ending.
    pub(crate) async fn leave_deliveries(
        &self,
        conn: &mut PgConnection,
        now: Millis,
        rows: &[&Row],
    ) -> Result<()> {
        let ended: Vec<&&Row> = rows
            .iter()
            .filter(|r| r.record.status.is_terminal())
            .collect();
        if ended.is_empty() {
            return Ok(());
        }
        let hooks = self.webhooks_in(conn).await?;
        if hooks.is_empty() {
            return Ok(());
        }
        let (mut ids, mut names, mut stored) = (Vec::new(), Vec::new(), Vec::new());
        for row in ended {
            let r = &row.record;
            for hook in hooks
                .iter()
                .filter(|h| h.wants(&r.task, r.group.as_deref(), r.status))
            {
                let delivery = delivery_of(r.job_id, r.status, now, hook, &row.record);
                ids.push(delivery.id.clone());
                names.push(hook.name.clone());
                stored.push(delivery.encode());
            }
        }
        sqlx::query(&format!(
            "INSERT INTO {}.deliveries (queue, id, hook, stored, due_ms) \
             SELECT $1, id, hook, stored, $5 FROM unnest($2::text[], $3::text[], $4::text[]) \
             AS t(id, hook, stored) ON CONFLICT DO NOTHING",
            self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(&ids)
        .bind(&names)
        .bind(&stored)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }

    async fn webhooks_in(&self, conn: &mut PgConnection) -> Result<Vec<Webhook>> {
        let hooks: Vec<serde_json::Value> = sqlx::query_scalar(&format!(
            "SELECT hook FROM {}.webhooks WHERE queue = $1 ORDER BY name",
            self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        hooks
            .into_iter()
            .map(|h| {
                serde_json::from_value(h)
                    .map_err(|e| Error::corrupt(format!("a stored webhook: {e}")))
            })
            .collect()
    }

    /// Every webhook of the queue, by name.
    pub async fn webhooks(&self) -> Result<Vec<Webhook>> {
        let mut conn = self.inner.pool.acquire().await.map_err(|e| self.db(e))?;
        self.webhooks_in(&mut conn).await
    }

    /// Creates or replaces a webhook (at most [`MAX_WEBHOOKS`]).
    pub async fn put_webhook(&self, hook: &Webhook) -> Result<()> {
        hook.check()?;
        let s = &self.inner.schema;
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<_> = async {
            self.gate(&mut tx, true).await?;
            let (n, exists): (i64, bool) = sqlx::query_as(&format!(
                "SELECT count(*), bool_or(name = $2) IS TRUE FROM {s}.webhooks WHERE queue = $1"
            ))
            .bind(&self.inner.queue.queue_name)
            .bind(&hook.name)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            if !exists && n as usize >= MAX_WEBHOOKS {
                return Err(queue_core::backend::too_many("webhooks", MAX_WEBHOOKS));
            }
            let json = serde_json::to_value(hook)
                .map_err(|e| Error::codec("webhook could not be encoded", e))?;
            sqlx::query(&format!(
                "INSERT INTO {s}.webhooks (queue, name, hook) VALUES ($1, $2, $3) \
                 ON CONFLICT (queue, name) DO UPDATE SET hook = $3"
            ))
            .bind(&self.inner.queue.queue_name)
            .bind(&hook.name)
            .bind(json)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            Ok(())
        }
        .await;
        self.close(tx, out).await
    }

    /// Deletes a webhook and its deliveries, pending and parked (a bounded statement at a
    /// time).
    pub async fn delete_webhook(&self, name: &str) -> Result<bool> {
        let s = &self.inner.schema;
        let q = &self.inner.queue.queue_name;
        let gone = sqlx::query(&format!(
            "DELETE FROM {s}.webhooks WHERE queue = $1 AND name = $2"
        ))
        .bind(q)
        .bind(name)
        .execute(&self.inner.pool)
        .await
        .map_err(|e| self.db(e))?
        .rows_affected();
        loop {
            let n = sqlx::query(&format!(
                "DELETE FROM {s}.deliveries WHERE queue = $1 AND id IN (SELECT id FROM \
                 {s}.deliveries WHERE queue = $1 AND hook = $2 LIMIT {DROP_STEP}) \
                 AND NOT EXISTS (SELECT 1 FROM {s}.webhooks WHERE queue = $1 AND name = $2)"
            ))
            .bind(q)
            .bind(name)
            .execute(&self.inner.pool)
            .await
            .map_err(|e| self.db(e))?
            .rows_affected();
            if (n as i64) < DROP_STEP {
                break;
            }
        }
        Ok(gone > 0)
    }

    /// Takes up to `limit` due deliveries (oldest due first), hidden from other loops for
    /// `lease`.
    pub async fn claim_deliveries(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedDelivery>> {
        let s = &self.inner.schema;
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<_> = async {
            let now = self.now(&mut tx).await?;
            let due: Vec<(String, String)> = sqlx::query_as(&format!(
                "UPDATE {s}.deliveries AS d SET due_ms = $3 FROM (SELECT id FROM {s}.deliveries \
                 WHERE queue = $1 AND due_ms <= $2 ORDER BY due_ms, id LIMIT $4 \
                 FOR UPDATE SKIP LOCKED) AS t WHERE d.queue = $1 AND d.id = t.id \
                 RETURNING d.id, d.stored"
            ))
            .bind(&self.inner.queue.queue_name)
            .bind(now)
            .bind(now.saturating_add(duration_ms(lease)))
            .bind(limit as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            let hooks = self.webhooks_in(&mut tx).await?;
            let mut out = Vec::with_capacity(due.len());
            for (id, stored) in due {
                match Delivery::decode(&stored) {
                    Ok(delivery) => out.push(ClaimedDelivery {
                        webhook: hooks.iter().find(|h| h.name == delivery.webhook).cloned(),
                        stored,
                        delivery,
                    }),
                    // A record nobody can read cannot be sent: it is parked, as it is.
                    Err(_) => self.set_due(&mut tx, &id, &stored, None, now).await?,
                }
            }
            Ok(out)
        }
        .await;
        self.close(tx, out).await
    }

    async fn set_due(
        &self,
        conn: &mut PgConnection,
        id: &str,
        stored: &str,
        due: Option<Millis>,
        now: Millis,
    ) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE {}.deliveries SET stored = $3, due_ms = $4, parked_ms = $5 \
             WHERE queue = $1 AND id = $2",
            self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(id)
        .bind(stored)
        .bind(due)
        .bind(due.is_none().then_some(now))
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// Ends a delivery attempt, only if its stored form is still `claimed`.
    pub async fn settle_delivery(&self, id: &str, claimed: &str, settle: Settle) -> Result<bool> {
        let s = &self.inner.schema;
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<_> = async {
            let now = self.now(&mut tx).await?;
            let held: Option<String> = sqlx::query_scalar(&format!(
                "SELECT stored FROM {s}.deliveries WHERE queue = $1 AND id = $2 FOR UPDATE"
            ))
            .bind(&self.inner.queue.queue_name)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            if held.as_deref() != Some(claimed) {
                return Ok(false);
            }
            match settle {
                Settle::Remove => {
                    sqlx::query(&format!(
                        "DELETE FROM {s}.deliveries WHERE queue = $1 AND id = $2"
                    ))
                    .bind(&self.inner.queue.queue_name)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                }
                Settle::Retry(stored, wait) => {
                    self.set_due(
                        &mut tx,
                        id,
                        &stored,
                        Some(now.saturating_add(duration_ms(wait))),
                        now,
                    )
                    .await?
                }
                Settle::Park(stored) => self.set_due(&mut tx, id, &stored, None, now).await?,
            }
            Ok(true)
        }
        .await;
        self.close(tx, out).await
    }

    /// Deliveries due or parked, oldest first, at most `limit`.
    pub async fn deliveries(&self, parked: bool, limit: usize) -> Result<Vec<Delivery>> {
        let order = if parked { "parked_ms" } else { "due_ms" };
        let stored: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT stored FROM {}.deliveries WHERE queue = $1 AND {order} IS NOT NULL \
             ORDER BY {order}, id LIMIT $2",
            self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(limit as i64)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(|e| self.db(e))?;
        Ok(stored
            .iter()
            .filter_map(|s| Delivery::decode(s).ok())
            .collect())
    }

    /// Sends a parked delivery again: due now, its attempts counted from zero.
    pub async fn resend_delivery(&self, id: &str) -> Result<bool> {
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<_> = async {
            let now = self.now(&mut tx).await?;
            let stored: Option<String> = sqlx::query_scalar(&format!(
                "SELECT stored FROM {}.deliveries WHERE queue = $1 AND id = $2 AND parked_ms IS NOT NULL \
                 FOR UPDATE",
                self.inner.schema
            ))
            .bind(&self.inner.queue.queue_name)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            let Some(Ok(mut d)) = stored.map(|s| Delivery::decode(&s)) else {
                return Ok(false);
            };
            d.attempts = 0;
            d.parked = false;
            self.set_due(&mut tx, id, &d.encode(), Some(now), now).await?;
            Ok(true)
        }
        .await;
        self.close(tx, out).await
    }

    /// Removes up to `limit` deliveries parked at or before `cutoff` (retention).
    pub(crate) async fn sweep_parked(
        &self,
        conn: &mut PgConnection,
        cutoff: Millis,
        limit: usize,
    ) -> Result<()> {
        sqlx::query(&format!(
            "DELETE FROM {s}.deliveries WHERE queue = $1 AND id IN (SELECT id FROM {s}.deliveries \
             WHERE queue = $1 AND parked_ms <= $2 ORDER BY parked_ms, id LIMIT $3)",
            s = self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(cutoff)
        .bind(limit as i64)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }
}

fn delivery_of(
    job: JobId,
    to: JobStatus,
    now: Millis,
    hook: &Webhook,
    r: &queue_core::JobRecord,
) -> Delivery {
    Delivery {
        id: Delivery::id_of(job, to, now, &hook.name),
        webhook: hook.name.clone(),
        job_id: job,
        event: to,
        at: now,
        task: r.task.clone(),
        group: r.group.clone(),
        unique_key: r.unique_key.clone(),
        attempts: 0,
        last_attempt_at: None,
        last_error: None,
        parked: false,
    }
}
