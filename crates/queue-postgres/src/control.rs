//! Queue control: pause and resume, the rate limit with the starts inside its window, and
//! a handler's hold (a rate-limited outcome holds every start until its time).

use std::time::Duration;

use queue_core::backend::{Millis, duration_ms};
use queue_core::{RateLimit, Result};
use sqlx::PgConnection;

use crate::PostgresBackend;

/// A queue's settings as a claim reads them.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Gate {
    pub(crate) paused: bool,
    pub(crate) held_until: Millis,
    pub(crate) rate: Option<RateLimit>,
    /// Fair share: the last start's ticket, and per band the last start without a group's.
    pub(crate) tick: i64,
    pub(crate) ungrouped: [i64; 3],
    /// The floors claims scan from (`floors.rs`).
    pub(crate) stored: crate::floors::Stored,
    /// The number of the newest row of `cursors` (these fields but the first three);
    /// a claim adds the next.
    pub(crate) cursor: i64,
}

/// `queues` as `gate` selects it.
type GateRow = (bool, i64, Option<i32>, Option<i64>);

/// The newest `cursors` row and the database's clock, as `cursor` selects them.
type CursorRow = (i64, (i64, Vec<i64>, Vec<i64>), (i64, i64, i64));

impl PostgresBackend {
    /// The queue's settings; locked for this transaction when `lock` (a claim under a
    /// rate limit counts its starts against the window alone). The cursor's fields are
    /// left at their defaults: a claim reads them after the lock (`cursor`).
    pub(crate) async fn gate(&self, conn: &mut PgConnection, lock: bool) -> Result<Gate> {
        let row: Option<GateRow> = sqlx::query_as(&format!(
            "SELECT paused, held_until, rate_max, rate_per_ms FROM {}.queues WHERE queue = $1{}",
            self.inner.schema,
            if lock { " FOR UPDATE" } else { "" }
        ))
        .bind(&self.inner.queue.queue_name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        let Some((paused, held_until, max, per)) = row else {
            return Ok(Gate::default());
        };
        let rate = match (max, per) {
            (Some(max), Some(per)) => Some(
                RateLimit::new(max as u32, Duration::from_millis(per as u64)).map_err(|e| {
                    queue_core::Error::corrupt(format!("the queue's rate limit: {e}"))
                })?,
            ),
            _ => None,
        };
        Ok(Gate {
            paused,
            held_until,
            rate,
            ..Gate::default()
        })
    }

    /// Reads the newest cursor into `gate` and answers now (one statement: a claim reads
    /// both after it holds the queue's row, so no other claim's cursor is newer).
    /// The newest is the first entry of a backward scan of its index, however many older
    /// ones wait for the folder (or, behind a held horizon, for vacuum).
    pub(crate) async fn cursor(&self, conn: &mut PgConnection, gate: &mut Gate) -> Result<Millis> {
        let (db_now, (tick, ungrouped, floors), (due_floor, swept_ms, n)): CursorRow =
            sqlx::query_as(&format!(
                "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::int8, \
                 (coalesce(c.tick, 0), coalesce(c.ungrouped, '{{0,0,0}}'), \
                  coalesce(c.floors, '{{0,0,0}}')), \
                 (coalesce(c.due_floor, 0), coalesce(c.swept_ms, 0), coalesce(c.n, 0)) \
                 FROM (SELECT 1) one LEFT JOIN LATERAL (SELECT * FROM {}.cursors \
                 WHERE queue = $1 ORDER BY n DESC LIMIT 1) c ON true",
                self.inner.schema
            ))
            .bind(&self.inner.queue.queue_name)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        let band = |v: &[i64], b: usize| v.get(b).copied().unwrap_or(0);
        gate.tick = tick;
        gate.ungrouped = [0, 1, 2].map(|b| band(&ungrouped, b));
        gate.stored = crate::floors::Stored {
            floors: [0, 1, 2].map(|b| band(&floors, b)),
            due_floor,
            swept_ms,
        };
        gate.cursor = n;
        Ok(match &self.inner.clock {
            Some(clock) => clock.now_ms(),
            None => db_now,
        })
    }

    /// The starts inside `limit`'s window at `now` (oldest first), forgetting older ones.
    pub(crate) async fn window(
        &self,
        conn: &mut PgConnection,
        limit: RateLimit,
        now: Millis,
    ) -> Result<Vec<(Millis, u32)>> {
        let s = &self.inner.schema;
        let floor = limit.window_floor(now);
        sqlx::query(&format!(
            "DELETE FROM {s}.starts WHERE queue = $1 AND ms <= $2"
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(floor)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        let starts: Vec<(i64, i32)> = sqlx::query_as(&format!(
            "SELECT ms, cost FROM {s}.starts WHERE queue = $1 ORDER BY ms"
        ))
        .bind(&self.inner.queue.queue_name)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(starts.into_iter().map(|(ms, c)| (ms, c as u32)).collect())
    }

    /// Logs starts of `costs` at `now`.
    pub(crate) async fn log_starts(
        &self,
        conn: &mut PgConnection,
        now: Millis,
        costs: &[i32],
    ) -> Result<()> {
        if costs.is_empty() {
            return Ok(());
        }
        sqlx::query(&format!(
            "INSERT INTO {}.starts (queue, ms, cost) SELECT $1, $2, unnest($3::int4[])",
            self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(now)
        .bind(costs)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// Holds every start of the queue until `until` (a rate-limited outcome; the later of
    /// two holds stands).
    pub(crate) async fn hold(&self, conn: &mut PgConnection, until: Millis) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO {s}.queues AS q (queue, held_until) VALUES ($1, $2) \
             ON CONFLICT (queue) DO UPDATE SET held_until = greatest(q.held_until, $2)",
            s = self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(until)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// Pauses or resumes the queue (a resume lifts a hold and wakes waiting fetches).
    pub async fn set_paused(&self, paused: bool) -> Result<()> {
        let held = if paused { "q.held_until" } else { "0" };
        self.change_queue(&format!(
            "INSERT INTO {s}.queues AS q (queue, paused) VALUES ($1, {paused}) \
             ON CONFLICT (queue) DO UPDATE SET paused = {paused}, held_until = {held}",
            s = self.inner.schema
        ))
        .await
    }

    /// Sets the rate limit, or removes it (its start log and a hold go with it).
    pub async fn set_rate_limit(&self, limit: Option<RateLimit>) -> Result<()> {
        let s = &self.inner.schema;
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<_> = async {
            let (max, per) = match limit {
                Some(l) => (Some(l.max as i32), Some(duration_ms(l.per))),
                None => (None, None),
            };
            sqlx::query(&format!(
                "INSERT INTO {s}.queues AS q (queue, rate_max, rate_per_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (queue) DO UPDATE SET rate_max = $2, rate_per_ms = $3, \
                 held_until = CASE WHEN $2 IS NULL THEN 0 ELSE q.held_until END"
            ))
            .bind(&self.inner.queue.queue_name)
            .bind(max)
            .bind(per)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            if limit.is_none() {
                sqlx::query(&format!("DELETE FROM {s}.starts WHERE queue = $1"))
                    .bind(&self.inner.queue.queue_name)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
            }
            self.wake(&mut tx, None).await?;
            Ok(())
        }
        .await;
        self.close(tx, out).await
    }

    async fn change_queue(&self, sql: &str) -> Result<()> {
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<_> = async {
            sqlx::query(sql)
                .bind(&self.inner.queue.queue_name)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
            self.wake(&mut tx, None).await?;
            Ok(())
        }
        .await;
        self.close(tx, out).await
    }

    /// Wakes waiting fetches when this transaction commits, announcing `place` (the
    /// lowest place of a row it made ready, `floors.rs`) when given.
    pub(crate) async fn wake(&self, conn: &mut PgConnection, place: Option<i64>) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.inner.channel)
            .bind(crate::floors::payload(&self.inner.queue.queue_name, place))
            .execute(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }
}

/// When a job of `cost` that `limit` does not admit at `now` will be: once enough of the
/// oldest starts of the window (`starts`, oldest first) leave it (`RateLimit::admits`,
/// `RateLimit::next_start`). A hint for when to look again, not a decision.
pub(crate) fn admits_at(
    limit: RateLimit,
    starts: &[(Millis, u32)],
    now: Millis,
    cost: u32,
) -> Option<Millis> {
    let floor = limit.window_floor(now);
    let inside: Vec<&(Millis, u32)> = starts.iter().filter(|(at, _)| *at > floor).collect();
    let mut used: u64 = inside.iter().map(|(_, c)| u64::from(*c)).sum();
    for (at, c) in inside {
        used -= u64::from(*c);
        if limit.admits(used, cost) {
            return Some(limit.next_start(*at));
        }
    }
    None
}
