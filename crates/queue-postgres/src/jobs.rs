//! Jobs: enqueue (on the backend's pool or inside the application's own transaction) and
//! reads of one record.

use queue_core::backend::{MAX_ENQUEUE_STEP, Millis};
use queue_core::{Error, EventKind, JobId, JobRecord, KeyMode, NewJob, Result};
use sqlx::{Acquire, PgConnection};

use crate::PostgresBackend;
use crate::rows::{COLUMNS, Row};

impl PostgresBackend {
    /// Enqueues one job in its own transaction. As
    /// [`JobStore::enqueue`](queue_core::JobStore::enqueue): an id that exists answers its
    /// record; a unique key an active job holds is refused with `AlreadyExists`.
    pub async fn enqueue(&self, job: NewJob) -> Result<JobRecord> {
        self.enqueue_many(vec![job])
            .await?
            .pop()
            .expect("one answer per job")
    }

    /// Enqueues one job on a connection or transaction the application owns
    /// (`&mut *tx` for a `sqlx::Transaction<Postgres>`). The job exists, its unique key is
    /// held and idle workers are woken only when that transaction commits; a rollback
    /// leaves nothing behind.
    ///
    /// ```no_run
    /// # async fn demo(queue: queue_postgres::PostgresBackend) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = queue.pool().begin().await?;
    /// sqlx::query("INSERT INTO orders (id) VALUES ($1)").bind(7_i64).execute(&mut *tx).await?;
    /// queue.enqueue_in(&mut tx, queue_core::NewJob::new("ship_order", &7)?).await?;
    /// tx.commit().await?; // the order and its job, or neither
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_in(&self, conn: &mut PgConnection, job: NewJob) -> Result<JobRecord> {
        self.enqueue_many_in(conn, vec![job])
            .await?
            .pop()
            .expect("one answer per job")
    }

    /// Enqueues several jobs in one transaction; each has its own answer (a refused one
    /// does not stop the others).
    ///
    /// Workers are woken after the commit, by a statement of its own: a transaction that
    /// notifies holds the server's notify lock through its commit, so enqueues that
    /// notified inside their transactions would commit one at a time.
    pub async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Result<JobRecord>>> {
        // Replace-running cancels the key's holder: a parent's descendants are cancelled by
        // the cascade, finished after the commit.
        let supersedes = jobs
            .iter()
            .any(|j| j.options.key_mode == KeyMode::ReplaceRunning);
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out = self.enqueue_jobs(&mut tx, jobs, false).await;
        let (out, added) = self.close(tx, out).await?;
        if supersedes {
            self.finish_cascades().await?;
        }
        if added.created > 0 {
            // The jobs are committed: a wake-up that fails is not the enqueue's failure
            // (waiting workers look again within `POLL`, claims sweep within `SWEEP`).
            if let Ok(mut conn) = self.inner.pool.acquire().await
                && let Err(e) = self.wake(&mut conn, added.lowest).await
            {
                tracing::debug!(error = %e, "postgres: waking workers after an enqueue failed");
            }
        }
        Ok(out)
    }

    /// [`PostgresBackend::enqueue_many`] on the application's connection or transaction
    /// (see [`PostgresBackend::enqueue_in`]). Written in statements of at most
    /// [`MAX_ENQUEUE_STEP`] jobs, all inside that transaction.
    pub async fn enqueue_many_in(
        &self,
        conn: &mut PgConnection,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<Result<JobRecord>>> {
        // A savepoint when the caller is inside a transaction: an error here leaves the
        // caller's transaction usable.
        let mut tx = conn.begin().await.map_err(|e| self.db(e))?;
        let out = self.enqueue_jobs(&mut tx, jobs, true).await;
        Ok(self.close(tx, out).await?.0)
    }

    /// The enqueue of `jobs` in statements of at most [`MAX_ENQUEUE_STEP`]; with `wake`,
    /// workers are woken when the transaction commits. Answers, and what was added.
    async fn enqueue_jobs(
        &self,
        conn: &mut PgConnection,
        jobs: Vec<NewJob>,
        wake: bool,
    ) -> Result<(Vec<Result<JobRecord>>, Added)> {
        let now = self.now(&mut *conn).await?;
        let mut out = Vec::with_capacity(jobs.len());
        let mut added = Added::default();
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let step: Vec<NewJob> = jobs.by_ref().take(MAX_ENQUEUE_STEP).collect();
            let answers = self.enqueue_step(&mut *conn, step, now, wake).await?;
            added.created += answers.1.created;
            added.lowest = added.lowest.into_iter().chain(answers.1.lowest).min();
            out.extend(answers.0);
        }
        Ok((out, added))
    }

    async fn enqueue_step(
        &self,
        conn: &mut PgConnection,
        jobs: Vec<NewJob>,
        now: Millis,
        wake: bool,
    ) -> Result<(Vec<Result<JobRecord>>, Added)> {
        let cfg = &self.inner.queue;
        let mut answers: Vec<Option<Result<JobRecord>>> = Vec::with_capacity(jobs.len());
        let mut rows = Vec::new();
        let mut modes = Vec::new();
        for job in jobs {
            let checked = job.validate().and_then(|()| cfg.limits.check(&job));
            if let Err(e) = checked {
                answers.push(Some(Err(e)));
                continue;
            }
            let id = job.options.job_id.unwrap_or_default();
            modes.push(job.options.key_mode);
            let record = JobRecord::born(job, id, now, cfg, None, 0);
            rows.push(Row::born(record, now));
            answers.push(None);
        }
        // A keyed or sequenced job decides on what the jobs before it in the batch did: one
        // at a time.
        let keyed = modes.iter().any(|m| *m != KeyMode::Refuse)
            || rows.iter().any(|r| r.record.sequence.is_some());
        // Distinct ids go in one statement; a batch naming one id more than once goes a row
        // at a time, each answered before the next (as one enqueue after another would).
        let distinct: std::collections::HashSet<JobId> =
            rows.iter().map(|r| r.record.job_id).collect();
        let mut results: Vec<Result<JobRecord>> = Vec::with_capacity(rows.len());
        let mut added = Added::default();
        if distinct.len() == rows.len() && !keyed {
            let inserted = self.insert_rows(conn, now, &rows, wake).await?;
            added.count(&inserted);
            for mut row in rows {
                results.push(match inserted.get(&row.record.job_id) {
                    Some(place) => {
                        row.place = *place;
                        Ok(row.record)
                    }
                    None => self.not_inserted(conn, &row.record).await,
                });
            }
        } else {
            for (mut row, mode) in rows.into_iter().zip(modes) {
                if mode != KeyMode::Refuse {
                    if let Some(existing) = self.row_in(conn, row.record.job_id).await? {
                        let mut record = existing.record;
                        record.show_flow_progress();
                        results.push(Ok(record));
                        continue;
                    }
                    if let Some(answer) = self.keyed_in(conn, &mut row, mode, now).await? {
                        results.push(answer);
                        continue;
                    }
                }
                self.join_sequence(conn, &mut row).await?;
                let inserted = self
                    .insert_rows(conn, now, std::slice::from_ref(&row), wake)
                    .await?;
                added.count(&inserted);
                if let (Some(name), true) = (
                    &row.record.sequence,
                    inserted.contains_key(&row.record.job_id),
                ) {
                    self.set_tail(conn, name, row.record.job_id).await?;
                }
                results.push(match inserted.get(&row.record.job_id) {
                    Some(place) => {
                        row.place = *place;
                        Ok(row.record)
                    }
                    None => self.not_inserted(conn, &row.record).await,
                });
            }
        }
        let mut results = results.into_iter();
        let mut out = Vec::with_capacity(answers.len());
        for answer in answers {
            out.push(match answer {
                Some(answer) => answer,
                None => results.next().expect("one result per accepted job"),
            });
        }
        Ok((out, added))
    }

    /// Inserts `rows` ([`crate::rows::insert`]; with `wake`, workers are woken at commit).
    /// The lowest place of a ready one is announced to this process's claims at once
    /// (before the commit: at worst one scan more) and to others' by the wake-up.
    pub(crate) async fn insert_rows(
        &self,
        conn: &mut PgConnection,
        now: queue_core::backend::Millis,
        rows: &[Row],
        wake: bool,
    ) -> Result<std::collections::HashMap<JobId, i64>> {
        let inserted = crate::rows::insert(
            conn,
            &self.inner.schema,
            &self.inner.queue.queue_name,
            (
                Some(self.inner.channel.as_str()).filter(|_| wake),
                &self.inner.events_channel,
            ),
            now,
            rows,
            &self.inner.secrets,
        )
        .await?;
        if let Some(place) = inserted.values().copied().filter(|p| *p > 0).min() {
            self.inner.hint.announce(place);
        }
        Ok(inserted)
    }

    /// Why a job was not inserted: its id exists (its record answers) or an active job
    /// holds its unique key.
    async fn not_inserted(&self, conn: &mut PgConnection, record: &JobRecord) -> Result<JobRecord> {
        if let Some(existing) = self.row_in(conn, record.job_id).await? {
            let mut record = existing.record;
            record.show_flow_progress();
            return Ok(record);
        }
        if let Some(key) = &record.unique_key {
            let holder = self.key_holder_in(conn, key).await?;
            if let Some(holder) = holder {
                return Err(Error::AlreadyExists {
                    unique_key: key.clone(),
                    job_id: holder,
                });
            }
        }
        Err(Error::backend(
            "postgres",
            format!("job {} was neither inserted nor found", record.job_id),
        ))
    }

    /// The record of job `id`.
    pub async fn get(&self, id: JobId) -> Result<JobRecord> {
        let mut conn = self.inner.pool.acquire().await.map_err(|e| self.db(e))?;
        let mut record = self
            .row_in(&mut conn, id)
            .await?
            .map(|r| r.record)
            .ok_or(Error::NotFound { id })?;
        record.show_flow_progress();
        Ok(record)
    }

    /// The row of job `id` in this queue, if any.
    pub(crate) async fn row_in(&self, conn: &mut PgConnection, id: JobId) -> Result<Option<Row>> {
        self.select_row(conn, id, "").await
    }

    /// The row of job `id`, locked for this transaction.
    pub(crate) async fn row_locked(
        &self,
        conn: &mut PgConnection,
        id: JobId,
    ) -> Result<Option<Row>> {
        self.select_row(conn, id, " FOR UPDATE").await
    }

    async fn select_row(
        &self,
        conn: &mut PgConnection,
        id: JobId,
        lock: &str,
    ) -> Result<Option<Row>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {}.jobs WHERE id = $1 AND queue = $2{lock}",
            self.inner.schema
        ))
        .bind(id.as_uuid())
        .bind(&self.inner.queue.queue_name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        row.as_ref().map(Row::decode).transpose()
    }

    /// The active job holding unique key `key`, if any (in this transaction).
    pub(crate) async fn key_holder_in(
        &self,
        conn: &mut PgConnection,
        key: &str,
    ) -> Result<Option<JobId>> {
        let holder: Option<uuid::Uuid> = sqlx::query_scalar(&format!(
            "SELECT id FROM {}.jobs WHERE queue = $1 AND unique_key = $2 AND finished_ms IS NULL \
             AND key_held",
            self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(holder.map(JobId::from_uuid))
    }
}

impl PostgresBackend {
    /// Cancels a job as `rules::on_cancel` decides: a queued job is cancelled now; a
    /// running one is asked to stop (its holder hears it on the cancel channel and in its
    /// heartbeat reply).
    pub async fn cancel(&self, id: JobId) -> Result<queue_core::CancelOutcome> {
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<_> = async {
            let now = self.now(&mut tx).await?;
            self.cancel_in(&mut tx, id, now).await
        }
        .await;
        let out = self.close(tx, out).await?;
        // Its descendants, in bounded steps (`queue_core::backend::CANCEL_STEP`).
        self.finish_cascades().await?;
        Ok(out)
    }

    /// [`PostgresBackend::cancel`] in the caller's transaction; a cancelled job with
    /// children starts a cascade (`cascading`), continued by `finish_cascades`.
    pub(crate) async fn cancel_in(
        &self,
        tx: &mut PgConnection,
        id: JobId,
        now: queue_core::backend::Millis,
    ) -> Result<queue_core::CancelOutcome> {
        use queue_core::backend::rules::{self, CancelAction, EffectInput};
        let mut row = self
            .row_locked(tx, id)
            .await?
            .ok_or(Error::NotFound { id })?;
        let group = row.record.group.clone().filter(|_| row.ready);
        if group.is_some() {
            // Its group's lanes change with it: decided in turn with the claims.
            self.gate(tx, true).await?;
        }
        Ok(
            match rules::on_cancel(row.record.status, row.record.cancel_requested) {
                CancelAction::Cancel => {
                    let input = EffectInput {
                        now,
                        ..EffectInput::default()
                    };
                    let from = row.record.status;
                    // The job it waited for, when it is cancelled while waiting.
                    let waited = row.record.after;
                    crate::rows::settle(&mut row, queue_core::backend::Event::Cancel, &input)?;
                    let to = row.record.status;
                    row.cascading = self.has_children(tx, id).await?;
                    let moved = crate::flows::Moved::of(from, &row);
                    let kind = EventKind::Transition {
                        from: Some(from),
                        to,
                    };
                    self.emit(tx, now, &[(id, kind)]).await?;
                    self.leave_deliveries(tx, now, &[&row]).await?;
                    self.write_rows(tx, std::slice::from_ref(&row)).await?;
                    match waited {
                        Some(ahead) => self.unchain_waiting(tx, &row, ahead).await?,
                        None => self.unchain(tx, now, &[&row]).await?,
                    }
                    self.count(tx, now, &[("cancelled", 1)].into_iter().collect())
                        .await?;
                    // Its parent hears of it before it leaves its group's lane: a group with
                    // ready jobs before and after the call keeps its lane.
                    self.propagate(tx, now, moved.into_iter().collect()).await?;
                    if let Some(g) = &group {
                        self.refresh_lanes(tx, g).await?;
                    }
                    queue_core::CancelOutcome::Cancelled
                }
                CancelAction::Request => {
                    row.record.cancel_requested = true;
                    self.emit(tx, now, &[(id, EventKind::CancelRequested)])
                        .await?;
                    self.write_rows(tx, &[row]).await?;
                    sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(&self.inner.cancel_channel)
                        .bind(format!("{} {id}", self.inner.queue.queue_name))
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.db(e))?;
                    queue_core::CancelOutcome::Requested
                }
                CancelAction::AlreadyRequested => queue_core::CancelOutcome::Requested,
                CancelAction::Refuse => {
                    return Err(Error::InvalidTransition {
                        id,
                        from: row.record.status,
                        event: queue_core::backend::Event::Cancel,
                    });
                }
            },
        )
    }

    /// Whether job `id` has children.
    async fn has_children(&self, conn: &mut PgConnection, id: JobId) -> Result<bool> {
        sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM {}.jobs WHERE parent = $1)",
            self.inner.schema
        ))
        .bind(id.as_uuid())
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| self.db(e))
    }

    /// Re-queues a finished, unsuccessful job at the back of its priority (or of
    /// `priority`), as `Event::ManualRetry` allows; refused while another active job holds
    /// its unique key.
    pub async fn retry(
        &self,
        id: JobId,
        priority: Option<queue_core::Priority>,
    ) -> Result<JobRecord> {
        use queue_core::backend::rules::EffectInput;
        use queue_core::backend::{Event, apply};
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<_> = async {
            let now = self.now(&mut tx).await?;
            let mut row = self
                .row_locked(&mut tx, id)
                .await?
                .ok_or(Error::NotFound { id })?;
            apply(row.record.status, Event::ManualRetry).map_err(|e| Error::InvalidTransition {
                id,
                from: e.from,
                event: e.event,
            })?;
            if let Some(p) = priority {
                row.record.priority = p;
            }
            let input = EffectInput {
                now,
                ..EffectInput::default()
            };
            let from = row.record.status;
            crate::rows::settle(&mut row, Event::ManualRetry, &input)?;
            row.finished_ms = None;
            let to = row.record.status;
            self.place_at_back(&mut tx, std::slice::from_mut(&mut row))
                .await?;
            // Refused while another active job holds its unique key (the unique index
            // guards the race with a concurrent enqueue).
            if let Some(key) = &row.record.unique_key
                && let Some(holder) = self.key_holder_in(&mut tx, key).await?
                && holder != id
            {
                return Err(Error::AlreadyExists {
                    unique_key: key.clone(),
                    job_id: holder,
                });
            }
            // A member of a sequence joins its back.
            self.join_sequence(&mut tx, &mut row).await?;
            self.write_rows(&mut tx, std::slice::from_ref(&row)).await?;
            if let Some(name) = &row.record.sequence {
                self.set_tail(&mut tx, name, id).await?;
            }
            if row.record.unique_key.is_some() {
                // It may have let its key go to a debounce's next run: it holds it again.
                self.set_key_held(&mut tx, id, true).await?;
            }
            let moved = crate::flows::Moved::of(from, &row);
            self.propagate(&mut tx, now, moved.into_iter().collect())
                .await?;
            self.emit(
                &mut tx,
                now,
                &[(
                    id,
                    EventKind::Transition {
                        from: Some(from),
                        to,
                    },
                )],
            )
            .await?;
            // (`write_rows` wakes the workers when the row is ready.)
            let mut record = row.record;
            record.show_flow_progress();
            Ok(record)
        }
        .await;
        self.close(tx, out).await
    }

    /// Adds lifetime counter deltas in this transaction, and the same to the charts'
    /// series at `now`.
    pub(crate) async fn count(
        &self,
        conn: &mut PgConnection,
        now: queue_core::backend::Millis,
        deltas: &std::collections::BTreeMap<&'static str, i64>,
    ) -> Result<()> {
        let fields = deltas.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        self.add_series(conn, now, &fields).await?;
        crate::rows::count(
            conn,
            &self.inner.schema,
            &self.inner.queue.queue_name,
            deltas,
            &self.inner.secrets,
        )
        .await
    }
}

/// What an enqueue inserted: how many rows, and the lowest place of a ready one (announced
/// in the wake-up, `floors.rs`).
#[derive(Default)]
struct Added {
    created: usize,
    lowest: Option<i64>,
}

impl Added {
    /// Adds the rows of one insert (`rows::insert`'s answer: a row not ready has place 0).
    fn count(&mut self, inserted: &std::collections::HashMap<JobId, i64>) {
        self.created += inserted.len();
        let lowest = inserted.values().copied().filter(|p| *p > 0).min();
        self.lowest = self.lowest.into_iter().chain(lowest).min();
    }
}
