//! Flows: parents held for their children, children pages, what a child's ending (or
//! manual retry) does to its parent (`on_child_ended`, `on_child_reopened`), and the
//! cascade of a cancel through a parent's descendants in bounded steps (`CANCEL_STEP`).

use queue_core::backend::rules::EffectInput;
use queue_core::backend::{
    CANCEL_STEP, Event, FlatJob, MAX_FLOW_DEPTH, Millis, ParentAction, Reopen, accepts_children,
    child_failed_message, is_parent_of, on_child_ended, on_child_reopened, to_millis,
};
use queue_core::{
    ChildCounts, ChildPolicy, Error, EventKind, Flow, JobId, JobRecord, JobStatus, Page, Result,
};
use sqlx::PgConnection;

use crate::PostgresBackend;
use crate::rows::{COLUMNS, Row};

/// A job with a parent moved between unfinished and finished: its parent hears of it.
#[derive(Clone, Debug)]
pub(crate) struct Moved {
    pub(crate) child: JobId,
    pub(crate) created_ms: Millis,
    pub(crate) parent: JobId,
    pub(crate) from: JobStatus,
    pub(crate) to: JobStatus,
    pub(crate) policy: ChildPolicy,
}

impl Moved {
    /// What `row` (which was `from`) tells its parent, if anything.
    pub(crate) fn of(from: JobStatus, row: &Row) -> Option<Self> {
        let to = row.record.status;
        let parent = row.record.parent?;
        let crosses =
            (to.is_terminal() && from.is_active()) || (from.is_terminal() && to.is_active());
        crosses.then(|| Self {
            child: row.record.job_id,
            created_ms: row.created_ms,
            parent,
            from,
            to,
            policy: row.record.policy(),
        })
    }
}

impl PostgresBackend {
    /// Creates a flow whole (or nothing of it): as [`JobStore::enqueue_flow`](queue_core::JobStore::enqueue_flow).
    pub async fn enqueue_flow(&self, flow: Flow) -> Result<JobRecord> {
        let jobs = flow.flatten()?;
        if let Some(id) = jobs.first().and_then(|f| f.job.options.job_id)
            && let Ok(existing) = self.get(id).await
        {
            return Ok(existing);
        }
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<_> = async {
            let mut out = self.insert_flow(&mut tx, jobs, None).await?;
            Ok(out.remove(0))
        }
        .await;
        self.close(tx, out).await
    }

    /// Adds children to a queued parent (it waits on them): as
    /// [`JobStore::add_children`](queue_core::JobStore::add_children).
    pub async fn add_children(&self, parent: JobId, children: Vec<Flow>) -> Result<Vec<JobRecord>> {
        let jobs = queue_core::backend::flatten_all(children)?;
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<_> = async {
            let row = self
                .row_locked(&mut tx, parent)
                .await?
                .ok_or(Error::NotFound { id: parent })?;
            if !accepts_children(row.record.status) {
                return Err(Error::invalid(format!(
                    "job {parent} is {}: children can be added only while it is queued",
                    row.record.status
                )));
            }
            queue_core::backend::check_takes_children(parent, row.record.after)?;
            let group = row.record.group.clone().filter(|_| row.ready);
            if group.is_some() {
                self.gate(&mut tx, true).await?;
            }
            let added = jobs.iter().filter(|f| f.parent.is_none()).count() as u32;
            let out = self.insert_flow(&mut tx, jobs, Some(parent)).await?;
            let mut row = self
                .row_locked(&mut tx, parent)
                .await?
                .ok_or(Error::NotFound { id: parent })?;
            hold_for_children(&mut row, added);
            self.write_rows(&mut tx, &[row]).await?;
            if let Some(g) = &group {
                // Held once its new children are ready: its group keeps its lane if one of
                // them is ready in it, as if in one step.
                self.refresh_lanes(&mut tx, g).await?;
            }
            Ok(out)
        }
        .await;
        self.close(tx, out).await
    }

    /// Inserts every job of a flattened flow, parents before children; `parent` is the
    /// parent of its top-level jobs. Checks each first (limits, ids, unique keys).
    async fn insert_flow(
        &self,
        conn: &mut PgConnection,
        jobs: Vec<FlatJob>,
        parent: Option<JobId>,
    ) -> Result<Vec<JobRecord>> {
        let cfg = &self.inner.queue;
        let now = self.now(conn).await?;
        for flat in &jobs {
            flat.job.validate()?;
            cfg.limits.check(&flat.job)?;
            if let Some(id) = flat.job.options.job_id
                && self.row_in(conn, id).await?.is_some()
            {
                return Err(Error::invalid(format!(
                    "job id {id} of the flow is taken by an existing job"
                )));
            }
            if let Some(key) = &flat.job.options.unique_key
                && let Some(holder) = self.key_holder_in(conn, key).await?
            {
                return Err(Error::AlreadyExists {
                    unique_key: key.clone(),
                    job_id: holder,
                });
            }
        }
        let mut ids: Vec<JobId> = Vec::with_capacity(jobs.len());
        let mut rows = Vec::with_capacity(jobs.len());
        let mut tops = Vec::new();
        for flat in jobs {
            let id = flat.job.options.job_id.unwrap_or_default();
            let up = flat.parent.map(|i| ids[i]).or(parent);
            let record = JobRecord::born(
                flat.job,
                id,
                now,
                cfg,
                up.map(|p| (p, flat.policy)),
                flat.children as u32,
            );
            ids.push(id);
            if flat.parent.is_none() {
                tops.push(rows.len());
            }
            rows.push(Row::born(record, now));
        }
        let inserted = self.insert_rows(conn, now, &rows, true).await?;
        if inserted.len() != rows.len() {
            // Another transaction took an id or a unique key meanwhile: nothing is kept.
            return Err(Error::invalid(
                "a job id or unique key of the flow was taken while it was created; nothing was enqueued",
            ));
        }
        Ok(tops
            .into_iter()
            .map(|i| {
                let mut r = rows[i].record.clone();
                r.show_flow_progress();
                r
            })
            .collect())
    }

    /// Tells parents what their children did (`on_child_ended`, `on_child_reopened`), up
    /// the flow (a parent a child failed tells its own parent).
    pub(crate) async fn propagate(
        &self,
        conn: &mut PgConnection,
        now: Millis,
        moved: Vec<Moved>,
    ) -> Result<()> {
        let mut queue: std::collections::VecDeque<Moved> = moved.into();
        let mut steps = 0usize;
        while let Some(m) = queue.pop_front() {
            steps += 1;
            if steps > MAX_FLOW_DEPTH * 1_000_000 {
                break;
            }
            let Some(mut parent) = self.row_locked(conn, m.parent).await? else {
                continue; // retention removed the parent
            };
            if !is_parent_of(parent.created_ms, m.created_ms) {
                continue;
            }
            let was = parent.record.status;
            let counts = parent
                .record
                .children
                .get_or_insert_with(ChildCounts::default);
            if m.to.is_terminal() {
                counts.waiting = counts.waiting.saturating_sub(1);
                *counts.of(m.to) += 1;
                let waiting = counts.waiting;
                match on_child_ended(m.policy, m.to, was, waiting) {
                    ParentAction::Count => {}
                    ParentAction::Release => {
                        parent.waiting = false;
                        match parent.record.run_at.map(to_millis).filter(|due| *due > now) {
                            Some(due) => parent.due_ms = Some(due),
                            None => {
                                parent.ready = true;
                                parent.place = -1;
                            }
                        }
                        self.wake(conn, None).await?;
                    }
                    ParentAction::Fail => {
                        let input = EffectInput {
                            now,
                            error: Some(child_failed_message(m.child, m.to)),
                            ..EffectInput::default()
                        };
                        crate::rows::settle(&mut parent, Event::ChildFailed, &input)?;
                        self.leave_deliveries(conn, now, &[&parent]).await?;
                        self.unchain(conn, now, &[&parent]).await?;
                        self.count(conn, now, &[("failed", 1)].into_iter().collect())
                            .await?;
                        let to = parent.record.status;
                        self.emit(
                            conn,
                            now,
                            &[(
                                parent.record.job_id,
                                EventKind::Transition {
                                    from: Some(was),
                                    to,
                                },
                            )],
                        )
                        .await?;
                        queue.extend(Moved::of(was, &parent));
                    }
                }
            } else {
                let count = counts.of(m.from);
                *count = count.saturating_sub(1);
                match on_child_reopened(was, parent.record.started_at.is_some()) {
                    Reopen::Count => parent.record.children.as_mut().expect("set").waiting += 1,
                    Reopen::Hold => hold_for_children(&mut parent, 1),
                    Reopen::Requeue => {
                        parent.record.children.as_mut().expect("set").waiting += 1;
                        // The parent comes back unless another job holds its unique key
                        // (then it stays failed, and its counts say the child runs again).
                        let key_free = match &parent.record.unique_key {
                            Some(k) => self.key_holder_in(conn, k).await?.is_none(),
                            None => true,
                        };
                        if key_free {
                            let input = EffectInput {
                                now,
                                ..EffectInput::default()
                            };
                            crate::rows::settle(&mut parent, Event::ManualRetry, &input)?;
                            parent.finished_ms = None;
                            let to = parent.record.status;
                            self.emit(
                                conn,
                                now,
                                &[(
                                    parent.record.job_id,
                                    EventKind::Transition {
                                        from: Some(was),
                                        to,
                                    },
                                )],
                            )
                            .await?;
                            queue.extend(Moved::of(was, &parent));
                        }
                    }
                }
            }
            let group = parent.record.group.clone().filter(|_| parent.ready);
            self.place_at_back(conn, std::slice::from_mut(&mut parent))
                .await?;
            self.write_rows(conn, &[parent]).await?;
            let _ = group;
        }
        Ok(())
    }

    /// A page of a parent's children, oldest first, after `position`.
    pub(crate) async fn children_page(
        &self,
        parent: JobId,
        position: Option<(i64, JobId)>,
        limit: usize,
    ) -> Result<Page> {
        let mut conn = self.inner.pool.acquire().await.map_err(|e| self.db(e))?;
        if self.row_in(&mut conn, parent).await?.is_none() {
            return Err(Error::NotFound { id: parent });
        }
        let (after_at, after_id) = match position {
            Some((ms, id)) => (Some(ms), Some(*id.as_uuid())),
            None => (None, None),
        };
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {}.jobs WHERE parent = $1 AND queue = $2 \
             AND ($3::int8 IS NULL OR (created_ms, id) > ($3, $4)) \
             ORDER BY created_ms, id LIMIT $5",
            self.inner.schema
        ))
        .bind(parent.as_uuid())
        .bind(&self.inner.queue.queue_name)
        .bind(after_at)
        .bind(after_id)
        .bind(limit as i64 + 1)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        crate::listing::page_of(&rows, limit, |row| row.created_ms)
    }

    /// One step of the cancels' cascades: up to [`CANCEL_STEP`] unfinished children of a
    /// cascading job are cancelled (queued ones; their own descendants join the cascade)
    /// or asked to stop (running ones). Returns whether any cascade is left.
    pub(crate) async fn cascade_step(&self) -> Result<bool> {
        let s = &self.inner.schema;
        let q = &self.inner.queue.queue_name;
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<_> = async {
            let now = self.now(&mut tx).await?;
            let head: Option<uuid::Uuid> = sqlx::query_scalar(&format!(
                "SELECT id FROM {s}.jobs WHERE queue = $1 AND cascading LIMIT 1 FOR UPDATE SKIP LOCKED"
            ))
            .bind(q)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            let Some(head) = head else {
                return Ok(false);
            };
            let head = JobId::from_uuid(head);
            let kids: Vec<uuid::Uuid> = sqlx::query_scalar(&format!(
                "SELECT id FROM {s}.jobs WHERE parent = $1 AND queue = $2 AND (status = 'queued' \
                 OR (status = 'processing' AND NOT coalesce((state->>'cancel_requested')::bool, false))) \
                 ORDER BY created_ms, id LIMIT {CANCEL_STEP}"
            ))
            .bind(head.as_uuid())
            .bind(q)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            for kid in &kids {
                self.cancel_in(&mut tx, JobId::from_uuid(*kid), now).await?;
            }
            if kids.len() < CANCEL_STEP {
                sqlx::query(&format!(
                    "UPDATE {s}.jobs SET cascading = false WHERE id = $1"
                ))
                .bind(head.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
            }
            Ok(true)
        }
        .await;
        self.close(tx, out).await
    }

    /// Runs the cancels' cascades to their end, a bounded step per transaction.
    pub(crate) async fn finish_cascades(&self) -> Result<()> {
        while self.cascade_step().await? {}
        Ok(())
    }

    /// Whether a cascade under way is about to cancel `row` (an ancestor of it, still its
    /// parent, is cascading): a claim cancels it instead of starting it.
    pub(crate) async fn doomed(&self, conn: &mut PgConnection, row: &Row) -> Result<bool> {
        let mut child_created = row.created_ms;
        let mut up = row.record.parent;
        for _ in 0..MAX_FLOW_DEPTH {
            let Some(parent) = up else {
                return Ok(false);
            };
            let found: Option<(i64, bool, Option<uuid::Uuid>)> = sqlx::query_as(&format!(
                "SELECT created_ms, cascading, parent FROM {}.jobs WHERE id = $1",
                self.inner.schema
            ))
            .bind(parent.as_uuid())
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
            let Some((created, cascading, next)) = found else {
                return Ok(false);
            };
            if !is_parent_of(created, child_created) {
                return Ok(false);
            }
            if cascading {
                return Ok(true);
            }
            child_created = created;
            up = next.map(JobId::from_uuid);
        }
        Ok(false)
    }
}

/// `row` gets `n` more unfinished children: it waits on them (leaving the ready or delayed
/// jobs if it was there).
pub(crate) fn hold_for_children(row: &mut Row, n: u32) {
    if n == 0 {
        return;
    }
    let counts = row.record.children.get_or_insert_with(ChildCounts::default);
    let was_waiting = counts.waiting > 0;
    counts.waiting += n;
    if was_waiting || row.record.status != JobStatus::Queued {
        return;
    }
    row.ready = false;
    row.due_ms = None;
    row.waiting = true;
}
