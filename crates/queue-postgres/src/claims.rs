//! Claims: promotion of due jobs, then many jobs per statement (`FOR UPDATE SKIP
//! LOCKED`) in the order `lanes.rs` gives, a request sent again answered with what it took,
//! and waiting for work (LISTEN/NOTIFY, polling as the fallback). Every decision is core's
//! (`JobRecord::apply_event` for the start), made in Rust inside the claim's transaction.

use std::time::Duration;

use queue_core::backend::rules::EffectInput;
use queue_core::backend::{
    ClaimRequest, Event, Handoff, Lease, MAX_CLAIM, Millis, detached, duration_ms, from_millis,
};
use queue_core::{EventKind, JobId, JobStatus, LeaseToken, RateLimit, Result};
use sqlx::PgConnection;

use crate::PostgresBackend;
use crate::rows::{COLUMNS, Held, Row, TALLY_COLUMNS, tallied};

impl PostgresBackend {
    /// Leases up to `req.size()` due jobs, as [`Broker::fetch`](queue_core::backend::Broker::fetch):
    /// strict priority then FIFO; a request sent again answers what its first send took.
    /// When nothing is due, waits up to `wait`, woken by a commit that adds work (LISTEN/
    /// NOTIFY) and looking again at least every [`crate::POLL`].
    pub async fn fetch(&self, req: &ClaimRequest, wait: Duration) -> Result<Vec<Lease>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let woken = self.inner.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let (leases, next_due) = self.claim_detached(req).await?;
            let leases = leases.take();
            let now = tokio::time::Instant::now();
            if !leases.is_empty() || now >= deadline {
                return Ok(leases);
            }
            let mut nap = (deadline - now).min(crate::POLL);
            if let Some(due) = next_due {
                nap = nap.min(Duration::from_millis(due));
            }
            let _blocked = self.inner.blocked.enter();
            let _ = tokio::time::timeout(nap, woken).await;
        }
    }

    /// [`PostgresBackend::claim`] on its own task, so a caller that goes away (a dropped
    /// `fetch`, mid-commit) cannot strand what it took: the leases come in a [`Handoff`],
    /// handed back (no attempt used) unless taken.
    async fn claim_detached(
        &self,
        req: &ClaimRequest,
    ) -> Result<(Handoff<PostgresBackend>, Option<u64>)> {
        let (this, req) = (self.clone(), req.clone());
        let sent = tokio::time::Instant::now();
        detached("postgres", async move {
            let (leases, due) = this.claim(&req, sent).await?;
            Ok((Handoff::new(this, leases), due))
        })
        .await
    }

    /// One claim in one transaction. Returns the leases and, when nothing was taken, how
    /// long until the earliest delayed job is due (ms).
    /// `sent`: when the call was sent (this process's clock): each lease's holder counts
    /// it from there ([`Lease::claimed_at`]).
    pub(crate) async fn claim(
        &self,
        req: &ClaimRequest,
        sent: tokio::time::Instant,
    ) -> Result<(Vec<Lease>, Option<u64>)> {
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out = self.claim_in(&mut tx, req, sent).await;
        self.close(tx, out).await
    }

    /// A claim inside the caller's transaction (a worker's finishes and its next claim
    /// commit together: one WAL flush for both).
    pub(crate) async fn claim_in(
        &self,
        tx: &mut PgConnection,
        req: &ClaimRequest,
        sent: tokio::time::Instant,
    ) -> Result<(Vec<Lease>, Option<u64>)> {
        // Claims take turns on the queue's row: fair share and rate windows are decided
        // one claim at a time. Taken first, so the worker's own row in `claims` (the
        // next lock) is never waited on while another claim holds the queue's.
        let mut gate = self.gate(tx, true).await?;
        // Leases start when the claim decides, after any wait for that row.
        let now = self.cursor(tx, &mut gate).await?;
        let again = self.claimed_before(tx, req, now, sent).await?;
        if !again.is_empty() {
            return Ok((again, None));
        }
        // The places wake-ups announced since the last claim lower the floors; put back
        // unless this claim writes them (`floors.rs`).
        let floors = crate::floors::Floors::start(&gate.stored, self.inner.hint.take(), now);
        let out = self.start(tx, req, (now, sent), &gate, floors).await;
        if out.is_err() {
            self.inner.hint.restore(floors.hint);
        }
        out
    }

    /// The claim's decisions under the queue's row: promotes due jobs, then starts what
    /// the queue's pause, hold and rate window let it (`take`).
    async fn start(
        &self,
        tx: &mut PgConnection,
        req: &ClaimRequest,
        (now, sent): (Millis, tokio::time::Instant),
        gate: &crate::control::Gate,
        floors: crate::floors::Floors,
    ) -> Result<(Vec<Lease>, Option<u64>)> {
        let due_floor = self.promote(tx, now, &floors).await?;
        if gate.paused || now < gate.held_until {
            // Nothing starts; a resume wakes waiting fetches, a hold ends on its own.
            self.inner.hint.restore(floors.hint);
            let wait = (!gate.paused).then(|| (gate.held_until - now) as u64);
            return Ok((Vec::new(), wait));
        }
        let window = match gate.rate {
            Some(limit) => Some((limit, self.window(tx, limit, now).await?)),
            None => None,
        };
        let floors = (floors, due_floor);
        let (leases, blocked) = self
            .take(tx, req, (now, sent), gate, window, floors)
            .await?;
        let next_due = if leases.is_empty() {
            let due = self.next_due(tx, now, due_floor).await?;
            match (due, blocked) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        } else {
            None
        };
        Ok((leases, next_due))
    }

    /// A request sent again (its id at or below the newest the worker sent) answers the
    /// leases it took that are still held, oldest first, at most `req.size()`; a new one is
    /// recorded as the newest. Empty: claim anew.
    async fn claimed_before(
        &self,
        conn: &mut PgConnection,
        req: &ClaimRequest,
        now: Millis,
        sent: tokio::time::Instant,
    ) -> Result<Vec<Lease>> {
        let s = &self.inner.schema;
        let q = &self.inner.queue.queue_name;
        // A row per request, the newest read first (never one row updated per claim:
        // `migrations/0003_floors.sql`); the folder deletes the older ones.
        let last: Option<i64> = sqlx::query_scalar(&format!(
            "WITH prev AS (SELECT max(last_id) AS last FROM {s}.claims \
             WHERE queue = $1 AND worker = $2), \
             added AS (INSERT INTO {s}.claims (queue, worker, last_id) \
             SELECT $1, $2, $3 FROM prev WHERE prev.last IS NULL OR prev.last < $3) \
             SELECT last FROM prev"
        ))
        .bind(q)
        .bind(req.worker.as_str())
        .bind(claim_id(req))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        if last.is_none_or(|last| claim_id(req) > last) {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {s}.jobs WHERE queue = $1 AND claim_worker = $2 \
             AND claim_id = $3 AND lease_token IS NOT NULL AND lease_until_ms > $5 \
             ORDER BY claimed_ms, id LIMIT $4"
        ))
        .bind(q)
        .bind(req.worker.as_str())
        .bind(claim_id(req))
        .bind(req.size() as i64)
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        rows.iter()
            .map(|r| Row::decode(r).map(|row| lease_of(row, sent, now)))
            .collect()
    }

    /// Deletes the cursors older than the queue's newest and the claim requests older
    /// than each worker's newest (claims add one of each instead of updating a row).
    pub(crate) async fn forget_old(&self) -> Result<()> {
        let s = &self.inner.schema;
        sqlx::query(&format!(
            "WITH cursors AS (DELETE FROM {s}.cursors WHERE queue = $1 \
             AND n < (SELECT max(n) FROM {s}.cursors WHERE queue = $1)), \
             requests AS (DELETE FROM {s}.claims c WHERE queue = $1 AND last_id < \
             (SELECT max(last_id) FROM {s}.claims d WHERE d.queue = $1 AND d.worker = c.worker)) \
             SELECT 1"
        ))
        .bind(&self.inner.queue.queue_name)
        .execute(&self.inner.pool)
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// Due delayed jobs join the back of their priority, in order of due time, then id,
    /// scanning from the due floor. Answers the due floor after it.
    async fn promote(
        &self,
        conn: &mut PgConnection,
        now: Millis,
        floors: &crate::floors::Floors,
    ) -> Result<Millis> {
        let schema = &self.inner.schema;
        let (promoted, last): (i64, Option<i64>) = sqlx::query_as(&format!(
            "WITH due AS (SELECT id, {TALLY_COLUMNS} FROM {schema}.jobs WHERE queue = $1 \
             AND due_ms <= $2 AND due_ms >= $3 ORDER BY due_ms, id LIMIT {MAX_CLAIM} \
             FOR UPDATE SKIP LOCKED), \
             placed AS (SELECT id, nextval('{schema}.places') AS place \
             FROM (SELECT id FROM due ORDER BY due_ms, id) d), \
             promoted AS (UPDATE {schema}.jobs AS j SET ready = true, due_ms = NULL, \
             place = placed.place FROM placed WHERE j.id = placed.id \
             RETURNING j.queue, j.status, j.band, j.ready, j.due_ms, j.waiting), \
             tallies AS ({}) \
             SELECT count(*), max(due_ms) FROM due",
            tallied(schema, &["due"], &["promoted"])
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(now)
        .bind(floors.due_from())
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(floors.due_after(promoted as usize, MAX_CLAIM, last, now))
    }

    /// Leases the first ready jobs (strict priority, FIFO), skipping rows another claim
    /// holds.
    /// Under a rate limit (`window`: the limit and the starts inside it), takes only what
    /// it admits, in order: a job that does not fit holds the ones behind it; then answers
    /// when the window will admit it (ms from now).
    async fn take(
        &self,
        conn: &mut PgConnection,
        req: &ClaimRequest,
        (now, sent): (Millis, tokio::time::Instant),
        gate: &crate::control::Gate,
        window: Option<(RateLimit, Vec<(Millis, u32)>)>,
        (floors, due_floor): (crate::floors::Floors, Millis),
    ) -> Result<(Vec<Lease>, Option<u64>)> {
        let used: u64 = window
            .as_ref()
            .map_or(0, |(_, w)| w.iter().map(|(_, c)| u64::from(*c)).sum());
        let max = match &window {
            Some((limit, _)) => req.size().min(limit.room(used as usize)),
            None => req.size(),
        };
        let (rows, mut blocked) = if max == 0 {
            // No scan: the floors stay as they were.
            self.inner.hint.restore(floors.hint);
            (Vec::new(), None)
        } else {
            let ask = crate::lanes::Ask {
                max,
                now,
                window: window.as_ref(),
                floors,
                due_floor,
            };
            self.pick(conn, gate, ask).await?
        };
        let until = now.saturating_add(duration_ms(req.lease));
        let input = EffectInput {
            now,
            worker: Some(req.worker.as_str().to_owned()),
            ..EffectInput::default()
        };
        let mut taken = Vec::with_capacity(rows.len());
        let mut costs = Vec::new();
        let mut waits: std::collections::BTreeMap<String, i64> = Default::default();
        let cascades = self.cascades_under_way(conn).await?;
        for mut row in rows {
            let id = row.record.job_id;
            if cascades && self.doomed(conn, &row).await? {
                // An ancestor's cancel is cascading: cancelled instead of started.
                self.cancel_in(conn, id, now).await?;
                continue;
            }
            if window.is_some() {
                costs.push(row.record.cost.unwrap_or(1) as i32);
            }
            if let Some(field) = queue_core::series::latency_field(&row.record, Event::Start, now) {
                *waits.entry(field).or_insert(0) += 1;
            }
            row.record
                .apply_event(Event::Start, &input)
                .map_err(|e| e.of(id))?;
            row.ready = false;
            row.lease = Some(Held {
                token: LeaseToken::generate(),
                until_ms: until,
                lease_ms: duration_ms(req.lease),
                claimed_ms: now,
                worker: req.worker.as_str().to_owned(),
                claim_id: claim_id(req),
            });
            taken.push(row);
        }
        self.write_rows(conn, &taken).await?;
        let started: Vec<(JobId, EventKind)> = taken
            .iter()
            .map(|r| {
                let kind = EventKind::Transition {
                    from: Some(JobStatus::Queued),
                    to: JobStatus::Processing,
                };
                (r.record.job_id, kind)
            })
            .collect();
        self.emit(conn, now, &started).await?;
        self.log_starts(conn, now, &costs).await?;
        self.add_series(conn, now, &waits).await?;
        if max == 0
            && let Some((limit, starts)) = &window
        {
            blocked = crate::control::admits_at(*limit, starts, now, 1)
                .map(|at| at.saturating_sub(now).max(0) as u64);
        }
        let leases = taken.into_iter().map(|r| lease_of(r, sent, now)).collect();
        Ok((leases, blocked))
    }

    /// Whether any cancel's cascade is under way in this queue.
    async fn cascades_under_way(&self, conn: &mut PgConnection) -> Result<bool> {
        sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM {}.jobs WHERE queue = $1 AND cascading)",
            self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| self.db(e))
    }

    /// Milliseconds until the earliest delayed job at or above the due floor is due, if
    /// any.
    async fn next_due(
        &self,
        conn: &mut PgConnection,
        now: Millis,
        floor: Millis,
    ) -> Result<Option<u64>> {
        let due: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT min(due_ms) FROM {}.jobs WHERE queue = $1 AND due_ms >= $2",
            self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(floor)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(due.map(|d| d.saturating_sub(now).max(0) as u64))
    }
}

/// The lease a leased row holds, answered to a call sent at `sent` (local) and decided at
/// `now` (the database's clock): its holder counts it from no later than it began
/// ([`Lease::claimed_at_from`]), never from when the answer arrived.
pub(crate) fn lease_of(row: Row, sent: tokio::time::Instant, now: Millis) -> Lease {
    let held = row.lease.expect("a leased row");
    Lease {
        job: row.record,
        token: held.token,
        expires_at: from_millis(held.until_ms),
        claimed_at: Lease::claimed_at_from(sent, now, held.claimed_ms),
    }
}

fn claim_id(req: &ClaimRequest) -> i64 {
    req.id.get() as i64
}
