//! Claims and leases: promotion of due jobs, claims of many jobs per statement
//! (`FOR UPDATE SKIP LOCKED`), fenced finishes, heartbeats and the reap of expired leases.
//! Every decision is core's (`JobRecord::apply_event`, `rules::settle`,
//! `rules::on_lease_expired`, `lease_holds`, `rules::placement`), made in Rust inside the
//! transaction that holds the rows.

use std::time::Duration;

use queue_core::backend::rules::{self, AttemptFacts, EffectInput, Placement};
use queue_core::backend::{
    ClaimRequest, Ending, Event, FinishedMany, HeartbeatReply, Lease, LeaseRef, MAX_CLAIM,
    MAX_ENDINGS, Millis, Outcome, ProgressReply, WorkerBeat, check_progress, duration_ms,
    from_millis, lease_holds,
};
use queue_core::{Error, EventKind, JobId, JobStatus, LeaseToken, Limits, RateLimit, Result};
use sqlx::PgConnection;

use crate::PostgresBackend;
use crate::rows::{COLUMNS, Held, Row};

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
            let (leases, next_due) = self.claim(req).await?;
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

    /// One claim in one transaction. Returns the leases and, when nothing was taken, how
    /// long until the earliest delayed job is due (ms).
    async fn claim(&self, req: &ClaimRequest) -> Result<(Vec<Lease>, Option<u64>)> {
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let now = self.now(&mut tx).await?;
        let again = self.claimed_before(&mut tx, req, now).await?;
        if !again.is_empty() {
            tx.commit().await.map_err(|e| self.db(e))?;
            return Ok((again, None));
        }
        self.promote(&mut tx, now).await?;
        // Claims take turns on the queue's row: fair share and rate windows are decided
        // one claim at a time.
        let gate = self.gate(&mut tx, true).await?;
        if gate.paused || now < gate.held_until {
            // Nothing starts; a resume wakes waiting fetches, a hold ends on its own.
            tx.commit().await.map_err(|e| self.db(e))?;
            let hint = (!gate.paused).then(|| (gate.held_until - now) as u64);
            return Ok((Vec::new(), hint));
        }
        let window = match gate.rate {
            Some(limit) => Some((limit, self.window(&mut tx, limit, now).await?)),
            None => None,
        };
        let (leases, blocked) = self.take(&mut tx, req, now, &gate, window).await?;
        let next_due = if leases.is_empty() {
            let due = self.next_due(&mut tx, now).await?;
            match (due, blocked) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        } else {
            None
        };
        tx.commit().await.map_err(|e| self.db(e))?;
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
    ) -> Result<Vec<Lease>> {
        let s = &self.inner.schema;
        let q = &self.inner.queue.queue_name;
        let last: Option<i64> = sqlx::query_scalar(&format!(
            "INSERT INTO {s}.claims AS c (queue, worker, last_id) VALUES ($1, $2, $3) \
             ON CONFLICT (queue, worker) DO UPDATE SET last_id = greatest(c.last_id, $3) \
             RETURNING (SELECT last_id FROM {s}.claims WHERE queue = $1 AND worker = $2)"
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
        rows.iter().map(|r| Row::decode(r).map(lease_of)).collect()
    }

    /// Due delayed jobs join the back of their priority, in order of due time, then id.
    async fn promote(&self, conn: &mut PgConnection, now: Millis) -> Result<()> {
        let schema = &self.inner.schema;
        sqlx::query(&format!(
            "WITH due AS (SELECT id, due_ms FROM {schema}.jobs WHERE queue = $1 AND due_ms <= $2 \
             ORDER BY due_ms, id LIMIT {MAX_CLAIM} FOR UPDATE SKIP LOCKED), \
             placed AS (SELECT id, nextval('{schema}.places') AS place \
             FROM (SELECT id FROM due ORDER BY due_ms, id) d) \
             UPDATE {schema}.jobs AS j SET ready = true, due_ms = NULL, place = placed.place \
             FROM placed WHERE j.id = placed.id"
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
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
        now: Millis,
        gate: &crate::control::Gate,
        window: Option<(RateLimit, Vec<(Millis, u32)>)>,
    ) -> Result<(Vec<Lease>, Option<u64>)> {
        let used: u64 = window
            .as_ref()
            .map_or(0, |(_, w)| w.iter().map(|(_, c)| u64::from(*c)).sum());
        let max = match &window {
            Some((limit, _)) => req.size().min(limit.room(used as usize)),
            None => req.size(),
        };
        let (rows, mut blocked) = if max == 0 {
            (Vec::new(), None)
        } else {
            let ask = crate::lanes::Ask {
                max,
                now,
                window: window.as_ref(),
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
        for mut row in rows {
            let id = row.record.job_id;
            if window.is_some() {
                costs.push(row.record.cost.unwrap_or(1) as i32);
            }
            row.record
                .apply_event(Event::Start, &input)
                .map_err(|e| Error::InvalidTransition {
                    id,
                    from: e.from,
                    event: e.event,
                })?;
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
        crate::rows::write(conn, &self.inner.schema, &taken, &self.inner.secrets).await?;
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
        if max == 0
            && let Some((limit, starts)) = &window
        {
            blocked = crate::control::admits_at(*limit, starts, now, 1)
                .map(|at| at.saturating_sub(now).max(0) as u64);
        }
        Ok((taken.into_iter().map(lease_of).collect(), blocked))
    }

    /// Milliseconds until the earliest delayed job is due, if any.
    async fn next_due(&self, conn: &mut PgConnection, now: Millis) -> Result<Option<u64>> {
        let due: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT min(due_ms) FROM {}.jobs WHERE queue = $1 AND due_ms IS NOT NULL",
            self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(due.map(|d| d.saturating_sub(now).max(0) as u64))
    }

    /// Ends one attempt, as [`Broker::finish`](queue_core::backend::Broker::finish).
    pub async fn finish(&self, lease: &LeaseRef, outcome: Outcome) -> Result<JobStatus> {
        let mut done = self
            .finish_many(
                vec![Ending {
                    lease: lease.clone(),
                    outcome,
                }],
                None,
            )
            .await?;
        done.statuses.pop().expect("one status per ending")
    }

    /// Ends several attempts, each fenced by its lease's token, in transactions of at most
    /// [`MAX_ENDINGS`]; then, when `next` is given and an ending was accepted, claims
    /// again. A finish sent again after it was applied answers the status it produced.
    pub async fn finish_many(
        &self,
        endings: Vec<Ending>,
        next: Option<ClaimRequest>,
    ) -> Result<FinishedMany> {
        let mut statuses = Vec::with_capacity(endings.len());
        let mut endings = endings.into_iter().peekable();
        while endings.peek().is_some() {
            let step: Vec<Ending> = endings.by_ref().take(MAX_ENDINGS).collect();
            statuses.extend(self.finish_step(step).await?);
        }
        let mut out = FinishedMany {
            statuses,
            next: Vec::new(),
        };
        if let Some(req) = next
            && out.statuses.iter().any(Result::is_ok)
        {
            out.next = self.claim(&req).await?.0;
        }
        Ok(out)
    }

    async fn finish_step(&self, endings: Vec<Ending>) -> Result<Vec<Result<JobStatus>>> {
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let now = self.now(&mut tx).await?;
        let ids: Vec<uuid::Uuid> = endings.iter().map(|e| *e.lease.job_id.as_uuid()).collect();
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {}.jobs WHERE queue = $1 AND id = ANY($2) ORDER BY id FOR UPDATE",
            self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.db(e))?;
        let mut held: std::collections::HashMap<JobId, Row> = std::collections::HashMap::new();
        for r in &rows {
            let row = Row::decode(r)?;
            held.insert(row.record.job_id, row);
        }
        let limits = self.inner.queue.limits;
        let mut statuses = Vec::with_capacity(endings.len());
        let mut changed: Vec<JobId> = Vec::new();
        let mut deltas = std::collections::BTreeMap::new();
        let mut happened = Vec::new();
        let mut hold: Option<Millis> = None;
        let mut group_holds: std::collections::BTreeMap<String, Millis> = Default::default();
        for Ending { lease, outcome } in endings {
            let id = lease.job_id;
            let Some(row) = held.get_mut(&id) else {
                statuses.push(Err(Error::LeaseLost { id }));
                continue;
            };
            let holds = lease_holds(
                row.lease.as_ref().map(|l| (l.token.as_str(), l.until_ms)),
                lease.token.as_str(),
                now,
            );
            if !holds {
                statuses.push(match &row.ended_token {
                    Some(t) if t == lease.token.as_str() => Ok(row.record.status),
                    _ => Err(Error::LeaseLost { id }),
                });
                continue;
            }
            let outcome = limits.bound_outcome(outcome);
            let event = rules::settle(outcome.kind(), AttemptFacts::of(&row.record));
            let holds = rules::holds_queue(outcome.kind());
            let input = EffectInput::of_outcome(outcome, now, &limits);
            if holds {
                // Whatever the job became, the limit it hit stands: for its group when it
                // has one, else for the whole queue.
                let until = input.due.unwrap_or(now);
                match row.record.group.clone() {
                    Some(g) => {
                        let held = group_holds.entry(g).or_insert(until);
                        *held = (*held).max(until);
                    }
                    None => hold = hold.max(Some(until)),
                }
            }
            let from = row.record.status;
            settle(row, event, &input)?;
            let to = row.record.status;
            happened.push((
                id,
                EventKind::Transition {
                    from: Some(from),
                    to,
                },
            ));
            if let Some(name) = rules::counter(event) {
                *deltas.entry(name).or_insert(0) += 1;
            }
            row.ended_token = Some(lease.token.as_str().to_owned());
            statuses.push(Ok(row.record.status));
            changed.push(id);
        }
        let mut written: Vec<Row> = Vec::with_capacity(changed.len());
        for id in changed {
            if let Some(row) = held.remove(&id) {
                written.push(row);
            }
        }
        self.place_at_back(&mut tx, &mut written).await?;
        crate::rows::write(&mut tx, &self.inner.schema, &written, &self.inner.secrets).await?;
        self.count(&mut tx, &deltas).await?;
        self.emit(&mut tx, now, &happened).await?;
        if let Some(until) = hold {
            self.hold(&mut tx, until).await?;
        }
        for (group, until) in group_holds {
            self.hold_group(&mut tx, &group, until).await?;
        }
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(statuses)
    }

    /// Rows marked for the back of their priority (`place == -1`) take the next places.
    pub(crate) async fn place_at_back(
        &self,
        conn: &mut PgConnection,
        rows: &mut [Row],
    ) -> Result<()> {
        let n = rows.iter().filter(|r| r.place == -1).count();
        if n == 0 {
            return Ok(());
        }
        let places: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT nextval('{}.places') FROM generate_series(1, $1)",
            self.inner.schema
        ))
        .bind(n as i64)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        let mut places = places.into_iter();
        for row in rows.iter_mut().filter(|r| r.place == -1) {
            row.place = places.next().expect("one place per row");
        }
        Ok(())
    }

    /// Renews the leases the worker still holds (each fenced by its token) by `beat.lease`
    /// and records the worker as alive; answers the leases lost and those whose cancel was
    /// requested.
    pub async fn heartbeat(
        &self,
        beat: &WorkerBeat,
        leases: &[LeaseRef],
    ) -> Result<HeartbeatReply> {
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let now = self.now(&mut tx).await?;
        self.seen(&mut tx, beat, now).await?;
        let ids: Vec<uuid::Uuid> = leases.iter().map(|l| *l.job_id.as_uuid()).collect();
        let tokens: Vec<String> = leases.iter().map(|l| l.token.as_str().to_owned()).collect();
        let renewed: Vec<(uuid::Uuid, String, bool)> = sqlx::query_as(&format!(
            "UPDATE {}.jobs AS j SET lease_until_ms = $3 \
             FROM unnest($1::uuid[], $2::text[]) AS t(id, token) \
             WHERE j.id = t.id AND j.lease_token = t.token AND j.lease_until_ms > $4 \
             RETURNING j.id, j.lease_token, coalesce((j.state->>'cancel_requested')::bool, false)",
            self.inner.schema
        ))
        .bind(&ids)
        .bind(&tokens)
        .bind(now.saturating_add(duration_ms(beat.lease)))
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))?;
        let mut reply = HeartbeatReply::default();
        for l in leases {
            let renewal = renewed
                .iter()
                .find(|(id, token, _)| id == l.job_id.as_uuid() && token == l.token.as_str());
            match renewal {
                None => reply.lost.push(l.clone()),
                Some((_, _, true)) => reply.cancel.push(l.clone()),
                Some((_, _, false)) => {}
            }
        }
        Ok(reply)
    }

    /// Records progress on a held attempt (never backwards, its step bounded; an empty step
    /// clears it) and renews the lease by its length.
    pub async fn progress(
        &self,
        lease: &LeaseRef,
        progress: u8,
        step: Option<String>,
    ) -> Result<ProgressReply> {
        check_progress(progress)?;
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let now = self.now(&mut tx).await?;
        let id = lease.job_id;
        let Some(mut row) = self.row_locked(&mut tx, id).await? else {
            return Err(Error::LeaseLost { id });
        };
        let held = row.lease.as_ref().map(|l| (l.token.as_str(), l.until_ms));
        if !lease_holds(held, lease.token.as_str(), now) {
            return Err(Error::LeaseLost { id });
        }
        let r = &mut row.record;
        r.progress = r.progress.max(progress);
        if let Some(s) = Limits::bound_step(step) {
            r.current_step = (!s.is_empty()).then_some(s);
        }
        let reply = ProgressReply {
            cancel_requested: r.cancel_requested,
        };
        if let Some(l) = row.lease.as_mut() {
            l.until_ms = now.saturating_add(l.lease_ms);
        }
        let kind = EventKind::Progress {
            progress: row.record.progress,
            step: row.record.current_step.clone(),
        };
        self.emit(&mut tx, now, &[(id, kind)]).await?;
        crate::rows::write(&mut tx, &self.inner.schema, &[row], &self.inner.secrets).await?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(reply)
    }

    /// Recovers up to `limit` jobs whose lease expired, as `rules::on_lease_expired`
    /// decides.
    pub async fn reap(&self, limit: usize) -> Result<Vec<JobId>> {
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let now = self.now(&mut tx).await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {}.jobs WHERE queue = $1 AND lease_token IS NOT NULL \
             AND lease_until_ms <= $2 ORDER BY lease_until_ms LIMIT $3 FOR UPDATE SKIP LOCKED",
            self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(now)
        .bind(limit.min(MAX_CLAIM) as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.db(e))?;
        let mut written = Vec::with_capacity(rows.len());
        let mut deltas = std::collections::BTreeMap::new();
        let mut happened = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut row = Row::decode(r)?;
            *deltas.entry("recovered").or_insert(0) += 1;
            let facts = AttemptFacts::of(&row.record);
            let worker = row.record.worker_id.clone().unwrap_or_default();
            let input = EffectInput {
                now,
                error: Some(rules::lease_expired_message(&worker, facts.retries_left)),
                ..EffectInput::default()
            };
            let event = rules::on_lease_expired(facts);
            let from = row.record.status;
            settle(&mut row, event, &input)?;
            let to = row.record.status;
            happened.push((
                row.record.job_id,
                EventKind::Transition {
                    from: Some(from),
                    to,
                },
            ));
            if let Some(name) = rules::counter(event) {
                *deltas.entry(name).or_insert(0) += 1;
            }
            written.push(row);
        }
        self.place_at_back(&mut tx, &mut written).await?;
        crate::rows::write(&mut tx, &self.inner.schema, &written, &self.inner.secrets).await?;
        self.count(&mut tx, &deltas).await?;
        self.emit(&mut tx, now, &happened).await?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(written.iter().map(|r| r.record.job_id).collect())
    }
}

/// Applies `event` to a leased row and places it where `rules::placement` says; the lease
/// ends. A row for the back of its priority is marked `place == -1` (the caller numbers
/// them).
pub(crate) fn settle(row: &mut Row, event: Event, input: &EffectInput) -> Result<()> {
    let id = row.record.job_id;
    row.record
        .apply_event(event, input)
        .map_err(|e| Error::InvalidTransition {
            id,
            from: e.from,
            event: e.event,
        })?;
    row.lease = None;
    match rules::placement(event) {
        Placement::Leased => {}
        Placement::ReadyInPlace => row.ready = true,
        Placement::ReadyAtBack => {
            row.ready = true;
            row.place = -1;
        }
        Placement::Delayed => {
            row.ready = false;
            row.due_ms = input.due;
        }
        Placement::Finished => {
            row.ready = false;
            row.finished_ms = Some(input.now);
        }
    }
    Ok(())
}

fn lease_of(row: Row) -> Lease {
    let held = row.lease.expect("a leased row");
    Lease {
        job: row.record,
        token: held.token,
        expires_at: from_millis(held.until_ms),
        claimed_at: tokio::time::Instant::now(),
    }
}

fn claim_id(req: &ClaimRequest) -> i64 {
    req.id.get() as i64
}
