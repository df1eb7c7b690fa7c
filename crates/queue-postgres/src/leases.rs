//! Leases: fenced finishes (answered once when sent again), heartbeats, progress and the
//! reap of expired leases (claims are `claims.rs`).
//! Every decision is core's (`JobRecord::apply_event`, `rules::settle`,
//! `rules::on_lease_expired`, `lease_holds`, `rules::placement`), made in Rust inside the
//! transaction that holds the rows.

use queue_core::backend::rules::{self, AttemptFacts, EffectInput};
use queue_core::backend::{
    ClaimRequest, Ending, FinishedMany, HeartbeatReply, LeaseRef, MAX_CLAIM, MAX_ENDINGS, Millis,
    Outcome, ProgressReply, WorkerBeat, check_progress, duration_ms, lease_holds,
};
use queue_core::series::latency_field;
use queue_core::{Error, EventKind, JobId, JobStatus, Limits, Result};
use sqlx::PgConnection;

use crate::PostgresBackend;
use crate::rows::{COLUMNS, Row, settle};

impl PostgresBackend {
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
        let sent = tokio::time::Instant::now();
        let mut out = FinishedMany {
            statuses: Vec::with_capacity(endings.len()),
            next: Vec::new(),
        };
        let mut endings = endings.into_iter().peekable();
        let mut accepted = false;
        while endings.peek().is_some() {
            let step: Vec<Ending> = endings.by_ref().take(MAX_ENDINGS).collect();
            // The last step's transaction also claims the next jobs: one commit for both.
            let last = endings.peek().is_none();
            let next = next.as_ref().filter(|_| last);
            let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
            let done: Result<_> = async {
                let statuses = self.finish_step_in(&mut tx, step).await?;
                accepted |= statuses.iter().any(Result::is_ok);
                let leases = match next {
                    Some(req) if accepted => self.claim_in(&mut tx, req, sent).await?.0,
                    _ => Vec::new(),
                };
                Ok((statuses, leases))
            }
            .await;
            let (statuses, leases) = self.close(tx, done).await?;
            out.statuses.extend(statuses);
            out.next = leases;
        }
        Ok(out)
    }

    /// Ends a held attempt inside a transaction the application owns (`&mut *tx` of a
    /// `sqlx::Transaction<Postgres>`): a handler that writes to this database commits its
    /// own writes and its job's outcome together. Once that transaction commits the job
    /// never runs again (the worker's own report of the attempt is then answered with the
    /// status this one produced); if it rolls back, the attempt is still held and ends as
    /// the worker reports it (a handler that failed: a failed attempt, retried by policy).
    ///
    /// ```no_run
    /// # async fn demo(queue: queue_postgres::PostgresBackend, ctx: queue_worker::JobContext) -> Result<(), Box<dyn std::error::Error>> {
    /// use queue_core::backend::{LeaseRef, Outcome};
    /// let lease = LeaseRef { job_id: ctx.job_id(), token: ctx.lease_token().clone() };
    /// let mut tx = queue.pool().begin().await?;
    /// sqlx::query("UPDATE orders SET shipped = true WHERE id = $1").bind(7_i64).execute(&mut *tx).await?;
    /// queue.finish_in(&mut tx, &lease, Outcome::Completed { result: None }).await?;
    /// tx.commit().await?; // the order is shipped and the job completed, or neither
    /// # Ok(()) }
    /// ```
    pub async fn finish_in(
        &self,
        conn: &mut PgConnection,
        lease: &LeaseRef,
        outcome: Outcome,
    ) -> Result<JobStatus> {
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
        let ending = Ending {
            lease: lease.clone(),
            outcome,
        };
        let out = self.finish_step_in(&mut tx, vec![ending]).await;
        let mut statuses = self.close(tx, out).await?;
        statuses.pop().expect("one status per ending")
    }

    async fn finish_step_in(
        &self,
        conn: &mut PgConnection,
        endings: Vec<Ending>,
    ) -> Result<Vec<Result<JobStatus>>> {
        let now = self.now(&mut *conn).await?;
        let ids: Vec<uuid::Uuid> = endings.iter().map(|e| *e.lease.job_id.as_uuid()).collect();
        // By id alone, the queue checked here: with `queue = $1` in the statement a generic
        // plan on a table never analyzed scans the queue's every row instead of the keys.
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS}, queue FROM {}.jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            self.inner.schema
        ))
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        let mut held: std::collections::HashMap<JobId, Row> = std::collections::HashMap::new();
        for r in &rows {
            if sqlx::Row::get::<&str, _>(r, "queue") != self.inner.queue.queue_name {
                continue;
            }
            let row = Row::decode(r)?;
            held.insert(row.record.job_id, row);
        }
        let limits = self.inner.queue.limits;
        let mut statuses = Vec::with_capacity(endings.len());
        let mut changed: Vec<JobId> = Vec::new();
        let mut deltas = std::collections::BTreeMap::new();
        let mut latencies: std::collections::BTreeMap<String, i64> = Default::default();
        let mut happened = Vec::new();
        let mut hold: Option<Millis> = None;
        let mut moved = Vec::new();
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
                // Sent again after it was applied: the status it produced.
                let produced = row
                    .ended_token
                    .as_deref()
                    .and_then(|e| e.split_once(' '))
                    .filter(|(t, _)| *t == lease.token.as_str())
                    .and_then(|(_, status)| status.parse::<JobStatus>().ok());
                statuses.push(produced.ok_or(Error::LeaseLost { id }));
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
            if let Some(field) = latency_field(&row.record, event, now) {
                *latencies.entry(field).or_insert(0) += 1;
            }
            let from = row.record.status;
            settle(row, event, &input)?;
            let to = row.record.status;
            moved.extend(crate::flows::Moved::of(from, row));
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
            row.ended_token = Some(format!("{} {}", lease.token.as_str(), row.record.status));
            statuses.push(Ok(row.record.status));
            changed.push(id);
        }
        let mut written: Vec<Row> = Vec::with_capacity(changed.len());
        for id in changed {
            if let Some(row) = held.remove(&id) {
                written.push(row);
            }
        }
        self.place_at_back(&mut *conn, &mut written).await?;
        self.write_rows(&mut *conn, &written).await?;
        let ended: Vec<&Row> = written.iter().collect();
        self.leave_deliveries(&mut *conn, now, &ended).await?;
        self.unchain(&mut *conn, now, &ended).await?;
        self.count(&mut *conn, now, &deltas).await?;
        self.add_series(&mut *conn, now, &latencies).await?;
        self.emit(&mut *conn, now, &happened).await?;
        if let Some(until) = hold {
            self.hold(&mut *conn, until).await?;
        }
        for (group, until) in group_holds {
            self.hold_group(&mut *conn, &group, until).await?;
        }
        self.propagate(&mut *conn, now, moved).await?;
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
        let out: Result<_> = async {
            let now = self.now(&mut tx).await?;
            let ids: Vec<uuid::Uuid> = leases.iter().map(|l| *l.job_id.as_uuid()).collect();
            let tokens: Vec<String> = leases.iter().map(|l| l.token.as_str().to_owned()).collect();
            let renewed: Vec<(uuid::Uuid, String, bool)> = sqlx::query_as(&format!(
                // Rows locked in id order, as finishes lock them, and before the queue's
                // row (`seen`), as a finish that claims takes it after its jobs': the two
                // never deadlock.
                "WITH locked AS (SELECT id FROM {s}.jobs WHERE id = ANY($1) ORDER BY id \
                 FOR UPDATE) \
                 UPDATE {s}.jobs AS j SET lease_until_ms = $3 \
                 FROM unnest($1::uuid[], $2::text[]) AS t(id, token) \
                 WHERE j.id = t.id AND j.id IN (SELECT id FROM locked) \
                 AND j.lease_token = t.token AND j.lease_until_ms > $4 \
                 RETURNING j.id, j.lease_token, coalesce((j.state->>'cancel_requested')::bool, false)",
                s = self.inner.schema
            ))
            .bind(&ids)
            .bind(&tokens)
            .bind(now.saturating_add(duration_ms(beat.lease)))
            .bind(now)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            self.seen(&mut tx, beat, now).await?;
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
        .await;
        let reply = self.close(tx, out).await?;
        // The heartbeat samples the gauges of the charts' series.
        self.sample().await?;
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
        let out: Result<_> = async {
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
            self.write_rows(&mut tx, &[row]).await?;
            Ok(reply)
        }
        .await;
        self.close(tx, out).await
    }

    /// Recovers up to `limit` jobs whose lease expired, as `rules::on_lease_expired`
    /// decides.
    pub async fn reap(&self, limit: usize) -> Result<Vec<JobId>> {
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<_> = async {
            let now = self.now(&mut tx).await?;
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM {}.jobs WHERE queue = $1 AND lease_token IS NOT NULL \
                 AND lease_until_ms <= $2 ORDER BY lease_until_ms, id LIMIT $3 FOR UPDATE SKIP LOCKED",
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
            let mut latencies: std::collections::BTreeMap<String, i64> = Default::default();
            let mut happened = Vec::with_capacity(rows.len());
            let mut moved = Vec::new();
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
                if let Some(field) = latency_field(&row.record, event, now) {
                    *latencies.entry(field).or_insert(0) += 1;
                }
                let from = row.record.status;
                settle(&mut row, event, &input)?;
                let to = row.record.status;
                moved.extend(crate::flows::Moved::of(from, &row));
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
            self.write_rows(&mut tx, &written).await?;
            let ended: Vec<&Row> = written.iter().collect();
            self.leave_deliveries(&mut tx, now, &ended).await?;
            self.unchain(&mut tx, now, &ended).await?;
            self.count(&mut tx, now, &deltas).await?;
            self.add_series(&mut tx, now, &latencies).await?;
            self.emit(&mut tx, now, &happened).await?;
            self.propagate(&mut tx, now, moved).await?;
            Ok(written.iter().map(|r| r.record.job_id).collect())
        }
        .await;
        self.close(tx, out).await
    }
}
