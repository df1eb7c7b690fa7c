//! The producer and operator side of a backend: create, read, cancel, retry, count.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    Control, EventStream, GroupControl, GroupStats, JobId, JobRecord, JobStatus, NewJob, Priority,
    RateLimit, Result,
};

/// Stores job records and answers questions about them: what producers and operators
/// call. A backend implements the 18 methods without a body; the others are written once,
/// here, over them.
///
/// # Contract
/// Every method is atomic with respect to every other method of [`JobStore`] and
/// [`crate::backend::Broker`] on the same queue, across processes. The conformance suite in
/// `queue-testkit` checks each bullet below; the case names are given in parentheses.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait JobStore: std::fmt::Debug + Send + Sync + 'static {
    /// Creates a job: `queued`, `progress` 0, `retry_count` 0, defaults filled from the
    /// queue configuration.
    ///
    /// - A job with a delay is not claimable before it is due (case `delayed_jobs_wait`).
    /// - With a unique key held by a queued or processing job, fails with
    ///   `Error::AlreadyExists` naming that job (case `unique_key_refused_while_active`); exactly
    ///   one of many concurrent enqueues of one key wins (case `unique_key_race_has_one_winner`).
    /// - With `job_id` set to an existing job, returns that job unchanged (idempotent
    ///   retry of an enqueue) (case `enqueue_with_same_id_is_idempotent`).
    async fn enqueue(&self, job: NewJob) -> Result<JobRecord> {
        let mut answers = self.enqueue_many(vec![job]).await?;
        answers.pop().expect("one answer per job")
    }

    /// Enqueues several jobs, in order, each with the semantics of [`JobStore::enqueue`];
    /// one refused job does not stop the others (case `enqueue_many_reports_each_job`).
    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Result<JobRecord>>>;

    /// Enqueues a job with its children (any depth) in one atomic step: every job of the
    /// flow is created, or none (a unique key held by an active job, or taken twice in the
    /// flow, refuses the whole flow). A parent stays queued but does not start until every
    /// child ended; each child's [`crate::ChildPolicy`] says what its failure does (case
    /// `a_flow_releases_its_parent_once`, case `flow_failure_policies`). Returns the root's
    /// record; with the root's `job_id` set to an existing job, returns that job and
    /// creates nothing. See [`crate::Flow`].
    async fn enqueue_flow(&self, flow: crate::Flow) -> Result<JobRecord>;

    /// Adds children to a queued job (a batch's callback, or any parent that has not
    /// started), atomically with the same checks as [`JobStore::enqueue_flow`]: it then
    /// waits on them too. Works from inside a running child (a batch member adding
    /// members). Refused for a job that is not queued (it started or ended) with
    /// `Error::InvalidArgument` (case `a_batch_takes_members_while_it_waits`). Returns the
    /// new direct children's records.
    async fn add_children(
        &self,
        parent: JobId,
        children: Vec<crate::Flow>,
    ) -> Result<Vec<JobRecord>>;

    /// Every child of a parent, oldest first; a child whose record retention removed is
    /// left out. An unknown parent is `Error::NotFound`. A parent may have any number of
    /// children (a batch grows with every `add_children`): this reads them page by page
    /// ([`ListQuery::children_of`], at most 1,000 per call), so no backend call grows with
    /// the family (case `children_page_past_any_size`).
    async fn children(&self, parent: JobId) -> Result<Vec<JobRecord>> {
        let mut out = Vec::new();
        let mut query = ListQuery::new().children_of(parent).limit(1000);
        loop {
            let page = self.list(&query).await?;
            out.extend(page.jobs);
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => return Ok(out),
            }
        }
    }

    /// The record, or `Error::NotFound`. A record that cannot be decoded is an
    /// `Error::Corrupt` naming the field.
    async fn get(&self, id: JobId) -> Result<JobRecord>;

    /// Records matching `query`, newest first, paginated by an opaque cursor (cases
    /// `list_by_status_and_unique_key`, `finished_jobs_list_by_when_they_finished`): every
    /// job or one status by [`listed_at`] (a finished job by when it finished, any other by
    /// its creation), then id; one unique key's history and the parents waiting on children
    /// by creation, then id. One parent's children ([`ListQuery::children_of`]) go the other
    /// way, oldest first (by creation, then id), as a handler reads them; an unknown parent
    /// is `Error::NotFound` (case `children_page_past_any_size`).
    async fn list(&self, query: &ListQuery) -> Result<Page>;

    /// Cancels a job. A queued job is removed from the queue and ends `cancelled` at once;
    /// a processing job gets `cancel_requested` and its lease holder is told (heartbeat
    /// reply, progress reply and a `CancelRequested` event); it then ends `cancelled` and
    /// is never retried (case `cancel_queued_job`), (case `cancel_running_job`). A finished job
    /// gives `Error::InvalidTransition`. A parent's unfinished descendants are cancelled
    /// too, in bounded steps ([`crate::backend::CANCEL_STEP`]).
    async fn cancel(&self, id: JobId) -> Result<CancelOutcome>;

    /// Re-queues a `failed`, `partial` or `cancelled` job with a fresh retry budget,
    /// optionally at a new priority. Refused for `completed` (and active) jobs with
    /// `Error::InvalidTransition`, and with `Error::AlreadyExists` when another job now
    /// holds the unique key (case `manual_retry`).
    async fn retry(&self, id: JobId, priority: Option<Priority>) -> Result<JobRecord>;

    /// Deletes a finished job's record and every index entry naming it, as retention
    /// would (its unique key's history, its place among its parent's children), and
    /// answers the record deleted. Refused with `Error::NotDeletable` for a queued or
    /// running job and for a finished child retention keeps for its unfinished parent
    /// ([`crate::backend::on_delete`]); `Error::NotFound` when there is no such job (case
    /// `delete_finished_records`).
    async fn delete(&self, id: JobId) -> Result<JobRecord>;

    /// Counts, without scanning jobs (case `stats_after_mixed_run`).
    async fn stats(&self) -> Result<QueueStats>;

    /// The charts' series over `span`: per interval, each lifetime counter's increase, the
    /// enqueue-to-start and run-time histograms, and the depth workers sampled (case
    /// `series_count_what_happened`); kept by the backend in bounded buckets
    /// ([`crate::series`]).
    async fn series(&self, span: crate::SeriesSpan) -> Result<crate::Series>;

    /// One group's ready and running counts and settings, without scanning jobs (a group
    /// nobody used answers zeros).
    async fn group(&self, group: &str) -> Result<GroupStats>;

    /// The groups with unfinished jobs, the `limit` busiest in full (most unfinished jobs
    /// first, ties by name) and the rest summed (case `groups_list_the_busiest_first`).
    /// Costs O(limit), whatever the number of groups or jobs: the backends keep each
    /// group's count of unfinished jobs as jobs move. `limit` is at most
    /// [`crate::backend::MAX_GROUPS_LISTED`]. A group with settings but no unfinished job
    /// is not listed (ask [`JobStore::group`]).
    async fn groups(&self, limit: usize) -> Result<crate::GroupList>;

    /// Workers that sent a heartbeat within the liveness window (three heartbeat
    /// intervals), with the jobs they hold, and those lost within the last hour.
    async fn workers(&self) -> Result<Vec<WorkerInfo>>;

    /// Ok when the backend answers a read of the queue.
    async fn health(&self) -> Result<()> {
        self.stats().await.map(drop)
    }

    /// Applies one change to the queue's settings ([`Control`]: pause, resume, rate
    /// limits, a group's settings, webhooks), checked first ([`Control::check`]). Waiting
    /// fetches wake at once when the change may let a job start.
    async fn control(&self, change: Control) -> Result<()>;

    /// Pauses the queue ([`Control::Pause`]).
    async fn pause(&self) -> Result<()> {
        self.control(Control::Pause).await
    }

    /// Resumes the queue and lifts a handler's hold ([`Control::Resume`]).
    async fn resume(&self) -> Result<()> {
        self.control(Control::Resume).await
    }

    /// Sets or removes the queue's rate limit ([`Control::RateLimit`]).
    async fn set_rate_limit(&self, limit: Option<RateLimit>) -> Result<()> {
        self.control(Control::RateLimit(limit)).await
    }

    /// Pauses one group ([`GroupControl::Pause`]).
    async fn pause_group(&self, group: &str) -> Result<()> {
        self.control(Control::group(group, GroupControl::Pause))
            .await
    }

    /// Resumes one group and lifts its hold ([`GroupControl::Resume`]).
    async fn resume_group(&self, group: &str) -> Result<()> {
        self.control(Control::group(group, GroupControl::Resume))
            .await
    }

    /// Sets or removes a group's concurrency limit ([`GroupControl::Concurrency`]).
    async fn set_group_concurrency(&self, group: &str, limit: Option<u32>) -> Result<()> {
        self.control(Control::group(group, GroupControl::Concurrency(limit)))
            .await
    }

    /// Sets or removes a group's weight ([`GroupControl::Weight`]).
    async fn set_group_weight(&self, group: &str, weight: Option<u32>) -> Result<()> {
        self.control(Control::group(group, GroupControl::Weight(weight)))
            .await
    }

    /// Sets or removes a group's rate limit ([`GroupControl::RateLimit`]).
    async fn set_group_rate_limit(&self, group: &str, limit: Option<RateLimit>) -> Result<()> {
        self.control(Control::group(group, GroupControl::RateLimit(limit)))
            .await
    }

    /// Creates or replaces a webhook ([`Control::PutWebhook`]).
    async fn put_webhook(&self, hook: &crate::Webhook) -> Result<()> {
        self.control(Control::PutWebhook(hook.clone())).await
    }

    /// Deletes a webhook and its deliveries ([`Control::DeleteWebhook`]); false when there
    /// was none.
    async fn delete_webhook(&self, name: &str) -> Result<bool> {
        let existed = self.webhooks().await?.iter().any(|h| h.name == name);
        self.control(Control::DeleteWebhook(name.to_owned()))
            .await?;
        Ok(existed)
    }

    /// Every webhook, by name, secrets included (show them with `Webhook::redacted`).
    async fn webhooks(&self) -> Result<Vec<crate::Webhook>>;

    /// Pending (`parked` false, oldest due first) or parked deliveries (oldest parked
    /// first), at most `limit`.
    async fn deliveries(&self, parked: bool, limit: usize) -> Result<Vec<crate::Delivery>>;

    /// Sends a parked delivery again: due now, its attempts counted from zero. False when
    /// no parked delivery has this id.
    async fn resend_delivery(&self, id: &str) -> Result<bool>;

    /// Events of this queue: every transition of every job in order, progress updates and
    /// cancel requests (case `subscriber_sees_every_transition`), from now on, or, `after`
    /// the id of the last event a follower saw, first the events the queue's log still
    /// holds after it (oldest first), with no gap and none twice between the two (case
    /// `a_subscriber_resumes_after_the_last_event_it_saw`). The log keeps the last
    /// [`crate::EVENT_LOG_LEN`] events, logged while someone follows the queue and
    /// [`crate::EVENT_LOG_LINGER`] after; a resume from before the oldest, or a follower
    /// that falls behind, gets an [`crate::EventKind::Missed`] event where the gap is (case
    /// `the_event_log_holds_its_length`). A malformed id is `Error::InvalidArgument`.
    async fn subscribe<'a>(&self, after: Option<&'a str>) -> Result<EventStream>;

    /// Waits until job `id` is finished (completed, failed, partial or cancelled) or
    /// `timeout` has passed, and returns its record then: its status says which. Works from
    /// any process and does not poll: it follows the queue's events (a job that ends while
    /// the waiter is connected wakes it within milliseconds; case
    /// `wait_returns_when_the_job_ends`), and reads the record again every
    /// [`WAIT_RECHECK`] in case an event was lost with a connection. An unknown id fails
    /// with `Error::NotFound`.
    async fn wait(&self, id: JobId, timeout: std::time::Duration) -> Result<JobRecord> {
        wait_until_finished(self, id, timeout).await
    }
}

/// How often [`JobStore::wait`] reads the record again besides following events (a lost
/// event delays a waiter by at most this long).
pub const WAIT_RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// [`JobStore::wait`] for every backend: subscribe first, then read, then follow the
/// events until the job's transition to a terminal status.
async fn wait_until_finished<S: JobStore + ?Sized>(
    store: &S,
    id: JobId,
    timeout: std::time::Duration,
) -> Result<JobRecord> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut events = store.subscribe(None).await?;
    loop {
        let record = store.get(id).await?;
        let now = tokio::time::Instant::now();
        if record.status.is_terminal() || now >= deadline {
            return Ok(record);
        }
        let until = deadline.min(now + WAIT_RECHECK);
        loop {
            let next = std::future::poll_fn(|cx| events.as_mut().poll_next(cx));
            match tokio::time::timeout_at(until, next).await {
                Ok(Some(e)) if e.job_id == id && e.ends_a_job() => break,
                Ok(Some(_)) => {}
                // The event stream ended (a backend shutting down): follow a new one.
                Ok(None) => {
                    events = store.subscribe(None).await?;
                    break;
                }
                Err(_) => break,
            }
        }
    }
}

/// A listing filter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ListQuery {
    /// Only jobs with this status.
    pub status: Option<JobStatus>,
    /// Only jobs with this unique key (for books: one book's history).
    pub unique_key: Option<String>,
    /// Only queued jobs waiting on their children (flows, batches).
    #[serde(default)]
    pub waiting_on_children: bool,
    /// Only this parent's children, oldest first.
    #[serde(default)]
    pub parent: Option<crate::JobId>,
    /// Page size, 1 to 1000.
    pub limit: usize,
    /// Where the previous page ended.
    pub cursor: Option<String>,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            status: None,
            unique_key: None,
            waiting_on_children: false,
            parent: None,
            limit: 50,
            cursor: None,
        }
    }
}

impl ListQuery {
    /// Every job, newest first, 50 per page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Filters by status.
    pub fn status(mut self, status: JobStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Filters by unique key.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// Only queued jobs waiting on their children.
    pub fn waiting_on_children(mut self) -> Self {
        self.waiting_on_children = true;
        self
    }

    /// Only `parent`'s children, oldest first (by creation, then id): a family of any size
    /// read page by page.
    pub fn children_of(mut self, parent: crate::JobId) -> Self {
        self.parent = Some(parent);
        self
    }

    /// Sets the page size.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Continues after a previous page.
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// Checks the limit and decodes the cursor into (listed ms, id): the position after
    /// which the page starts.
    pub fn position(&self) -> Result<Option<(i64, JobId)>> {
        if !(1..=1000).contains(&self.limit) {
            return Err(crate::Error::invalid(format!(
                "limit {} is not in 1..=1000",
                self.limit
            )));
        }
        self.cursor.as_deref().map(decode_cursor).transpose()
    }
}

/// Where a job stands in a listing of every job or of one status (newest first, ties by
/// id): a finished job by `finished_ms` (when it finished, or when retention last kept it
/// for its unfinished parent; it is also its retention clock), any other by its creation.
/// Backends keep their status indexes by it, so the failures an operator looks at first are
/// the latest ones.
///
/// ```
/// use queue_core::JobStatus;
/// use queue_core::backend::listed_at;
///
/// assert_eq!(listed_at(JobStatus::Queued, 10, None), 10);
/// assert_eq!(listed_at(JobStatus::Failed, 10, Some(500)), 500);
/// assert_eq!(listed_at(JobStatus::Processing, 10, Some(500)), 10, "retried, running again");
/// ```
pub fn listed_at(
    status: JobStatus,
    created_ms: crate::backend::Millis,
    finished_ms: Option<crate::backend::Millis>,
) -> crate::backend::Millis {
    match finished_ms {
        Some(at) if status.is_terminal() => at,
        _ => created_ms,
    }
}

/// The retention's cutoff at `now` for a retention of `retention_ms`: a finished job whose
/// retention clock ([`listed_at`]: when it finished) is at or before it is due for the
/// sweep (unless its unfinished parent keeps it).
///
/// ```
/// use queue_core::backend::retention_cutoff;
///
/// assert_eq!(retention_cutoff(10_000, 3_000), 7_000);
/// ```
pub fn retention_cutoff(
    now: crate::backend::Millis,
    retention_ms: crate::backend::Millis,
) -> crate::backend::Millis {
    now - retention_ms
}

impl ListQuery {
    /// The cursor that resumes this listing after `record` (its place: [`listed_at`], or
    /// its creation in one unique key's history, among the parents waiting and among a
    /// parent's children).
    pub fn cursor_after(&self, record: &crate::JobRecord) -> String {
        let created = crate::backend::to_millis(record.created_at);
        let at = if self.unique_key.is_some() || self.waiting_on_children || self.parent.is_some() {
            created
        } else {
            listed_at(
                record.status,
                created,
                record.completed_at.map(crate::backend::to_millis),
            )
        };
        encode_cursor(at, record.job_id)
    }
}

/// The cursor that resumes after the job listed at `created_ms` (see [`listed_at`]) with id
/// `id`.
pub fn encode_cursor(created_ms: i64, id: JobId) -> String {
    format!("{created_ms}.{}", id.as_uuid().simple())
}

fn decode_cursor(cursor: &str) -> Result<(i64, JobId)> {
    let bad = || crate::Error::invalid(format!("malformed cursor `{cursor}`"));
    let (ms, id) = cursor.split_once('.').ok_or_else(bad)?;
    let ms = ms.parse::<i64>().map_err(|_| bad())?;
    let id = uuid::Uuid::try_parse(id).map_err(|_| bad())?;
    Ok((ms, JobId::from_uuid(id)))
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// The records, newest first.
    pub jobs: Vec<JobRecord>,
    /// Pass this as the next query's cursor; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// What `cancel` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// The job was queued and is now `cancelled`.
    Cancelled,
    /// The job is running; its lease holder was told to stop.
    Requested,
}

/// Queue counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Retained jobs of every status.
    pub total: u64,
    /// Waiting to run (ready now or delayed).
    pub queued: u64,
    /// Running.
    pub processing: u64,
    /// Retained completed jobs.
    pub completed: u64,
    /// Retained failed jobs.
    pub failed: u64,
    /// Retained partial jobs.
    pub partial: u64,
    /// Retained cancelled jobs.
    pub cancelled: u64,
    /// Queued jobs waiting for a delay or a retry backoff (part of `queued`).
    pub scheduled: u64,
    /// Queued jobs waiting on their children (part of `queued`).
    #[serde(default)]
    pub waiting_on_children: u64,
    /// Workers seen within the liveness window.
    pub active_workers: u64,
    /// Queued jobs ready to run now, per priority.
    pub depth: BTreeMap<Priority, u64>,
    /// Lifetime counters (never decremented, not affected by retention).
    pub totals: LifetimeTotals,
    /// The queue is paused: no job starts until it is resumed.
    #[serde(default)]
    pub paused: bool,
    /// The queue's rate limit, when it has one.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// No job starts before this time: a handler reported a limit hit
    /// (`JobError::rate_limited`). Only while it is in the future.
    #[serde(default)]
    pub held_until: Option<DateTime<Utc>>,
}

/// Monotonic counters since the queue was created.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifetimeTotals {
    /// Jobs enqueued.
    pub enqueued: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Jobs failed.
    pub failed: u64,
    /// Jobs finished partial.
    pub partial: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
    /// Attempts that were retried after a failure.
    pub retried: u64,
    /// Jobs recovered from an expired lease.
    pub recovered: u64,
}

/// A live worker process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Its id.
    pub worker_id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Jobs it may run at once.
    pub concurrency: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub last_seen: DateTime<Utc>,
    /// Jobs it holds.
    pub jobs: Vec<JobId>,
    /// The version of the program it runs (empty when it did not say).
    #[serde(default)]
    pub version: String,
    /// The tasks it has handlers for.
    #[serde(default)]
    pub tasks: Vec<String>,
    /// The payload schema of each typed task that shares one (`Job::schema`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub schemas: std::collections::BTreeMap<String, serde_json::Value>,
    /// It stopped beating without saying goodbye (killed, hung, cut off): listed for
    /// [`LOST_WORKER_KEPT`] after its liveness window ended ([`worker_listing`]).
    #[serde(default)]
    pub lost: bool,
}

/// How long a worker that stopped beating stays listed as lost.
pub const LOST_WORKER_KEPT: std::time::Duration = std::time::Duration::from_secs(3600);

/// How a worker whose liveness window ends at `alive_until` (its last heartbeat plus three
/// intervals) is listed at `now`: `Some(false)` alive, `Some(true)` lost, `None` forgotten
/// (lost for longer than [`LOST_WORKER_KEPT`]). A worker that deregisters is forgotten at
/// once.
///
/// ```
/// use queue_core::backend::worker_listing;
///
/// assert_eq!(worker_listing(1_000, 1_000), Some(false));
/// assert_eq!(worker_listing(1_000, 1_001), Some(true));
/// assert_eq!(worker_listing(1_000, 1_000 + 3_600_001), None);
/// ```
pub fn worker_listing(
    alive_until: crate::backend::Millis,
    now: crate::backend::Millis,
) -> Option<bool> {
    if alive_until >= now {
        Some(false)
    } else if alive_until + crate::backend::duration_ms(LOST_WORKER_KEPT) >= now {
        Some(true)
    } else {
        None
    }
}
