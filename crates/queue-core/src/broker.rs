//! The worker side of a backend: leases, heartbeats, progress and outcomes.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::backend::{ClaimId, Outcome};
use crate::schedule::{ScheduleRead, ScheduleWrite, ScheduleWritten, StoredSchedules};
use crate::{JobId, JobRecord, JobStatus, LeaseToken, Result, WorkerId};

/// Hands jobs to workers under leases: what a worker, its scheduler and its delivery loop
/// drive, nothing else. A backend implements the 12 methods without a body.
///
/// # Contract
/// Every write by a lease holder carries its token; once the lease expired (even before
/// anything reaped it) or passed to someone else, the write fails with
/// `Error::LeaseLost` and changes nothing (case `expired_holder_cannot_write`). Case names of
/// the conformance suite are given in parentheses.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Broker: std::fmt::Debug + Send + Sync + 'static {
    /// Leases up to `req.size()` due jobs (`req.max`, at most [`crate::backend::MAX_CLAIM`]
    /// per call: case `a_claim_takes_at_most_its_bound`): promotes delayed jobs that are
    /// due, then takes ready jobs in strict priority order, FIFO within a priority (case
    /// `priority_then_fifo`).
    /// Each becomes `processing` with `started_at` set and progress 0. A job is held by
    /// at most one lease (case `claims_are_exclusive`). When nothing is due, waits up to `wait`
    /// for work (without polling) and may return empty (case `fetch_waits_for_work`).
    ///
    /// Idempotent per request: a request sent again with the same `req.id` (its reply was
    /// lost) returns the leases the first one took that are still held (oldest first, at
    /// most `req.size()`), and takes no more (case `claim_sent_twice_takes_nothing_more`);
    /// finding them reads only that request's leases. A request whose earlier sends took
    /// nothing (or whose leases all ended) claims as new, so a fetch that waited for work
    /// asks again under the same id, and a worker that got no answer sends the same request
    /// again until one send is answered. A worker's request history is forgotten when it
    /// deregisters or is found dead.
    ///
    /// Cancel-safe: dropping the future before it completes loses no lease (a backend
    /// hands back whatever it leased for a caller that went away).
    async fn fetch(&self, req: &ClaimRequest, wait: Duration) -> Result<Vec<Lease>>;

    /// Renews the leases the worker still holds and records the worker as alive. Returns
    /// the leases (id and token, so a reply never touches a later attempt of the same job)
    /// that were lost and those whose cancel was requested
    /// (case `cancel_running_job`), (case `heartbeat_extends_lease`).
    async fn heartbeat(&self, beat: &WorkerBeat, leases: &[LeaseRef]) -> Result<HeartbeatReply>;

    /// Stores progress (never lower than what the attempt already reported
    /// (case `progress_never_goes_backwards`)) and the current step; renews the lease.
    async fn progress(
        &self,
        lease: &LeaseRef,
        progress: u8,
        step: Option<String>,
    ) -> Result<ProgressReply>;

    /// Ends the attempt with `outcome`, turned into an event by
    /// [`crate::backend::rules::settle`] (a requested cancel wins over every outcome; a retry with no
    /// retries left fails): (case `retry_with_backoff`), (case `retries_exhausted_fail`),
    /// (case `permanent_error_fails_at_once`), (case `partial_outcome_keeps_details`),
    /// (case `release_uses_no_attempt`), (case `cancel_wins_over_a_late_success`). Releases the
    /// unique key when the job reached a terminal status, and, when `next` is given, leases
    /// the next due job in the same round trip (idempotent per `next.id` like `fetch`).
    ///
    /// Sent again with the same lease after it was applied (its reply was lost), it answers
    /// the status it produced instead of `LeaseLost` (case `finish_sent_twice_is_answered_once`).
    async fn finish(
        &self,
        lease: &LeaseRef,
        outcome: Outcome,
        next: Option<ClaimRequest>,
    ) -> Result<Finished> {
        let mut done = self
            .finish_many(
                vec![Ending {
                    lease: lease.clone(),
                    outcome,
                }],
                next,
            )
            .await?;
        let status = done.statuses.pop().expect("one status per ending")?;
        Ok(Finished {
            status,
            next: done.next.pop(),
        })
    }

    /// Ends several attempts in one round trip, each exactly as [`Broker::finish`] would
    /// (its own answer, `LeaseLost` included, in the order given), then, when `next` is
    /// given and at least one ending was accepted, leases up to `next.size()` due jobs
    /// (case `finish_many_ends_each_and_claims_next`). More than
    /// [`crate::backend::MAX_ENDINGS`] endings are stored in steps of that many, each atomic.
    /// Sent again with the same endings and request (its reply was lost), it answers the
    /// same. Workers report outcomes in groups with it; [`Broker::finish`] is one ending.
    async fn finish_many(
        &self,
        endings: Vec<Ending>,
        next: Option<ClaimRequest>,
    ) -> Result<FinishedMany>;

    /// Recovers up to `limit` jobs whose lease expired, as [`crate::backend::rules::on_lease_expired`]
    /// decides: back to `queued` at their old place with `retry_count` + 1, or `failed` when
    /// no retries are left, or `cancelled` when a cancel was requested
    /// (case `expired_lease_requeues_in_place`).
    async fn reap(&self, limit: usize) -> Result<Vec<JobId>>;

    /// Removes a stopping worker from the registry.
    async fn deregister(&self, worker: &WorkerId) -> Result<()>;

    /// Deletes up to `limit` finished records older than the retention period, from every
    /// index; returns how many. Only records that are finished and due are deleted, never a
    /// live job (case `retention_removes_from_every_index`), (case `sweep_keeps_up_and_spares_live_jobs`).
    /// Callers loop while it returns `limit` to keep up with any finish rate.
    async fn sweep(&self, limit: usize) -> Result<usize>;

    /// Ids of running jobs whose cancel is requested from now on: the fast path that tells
    /// a lease holder within milliseconds. Best-effort; the heartbeat reply is the durable
    /// path (case `cancel_running_job`).
    async fn cancellations(&self) -> Result<CancelStream>;

    /// Stored schedules, with the backend's now: the read half of every schedule change
    /// (see [`crate::Schedules`], which is how to use schedules).
    async fn read_schedules(&self, read: &ScheduleRead) -> Result<StoredSchedules>;

    /// The write half: one compare-and-set of a schedule's stored form, with the jobs of
    /// its ticks created in the same atomic step; nothing happens when the stored form is
    /// not `write.expected` (case `a_tick_enqueues_exactly_once`).
    async fn write_schedule(&self, write: ScheduleWrite) -> Result<ScheduleWritten>;

    /// Takes up to `limit` due deliveries (oldest due first) and hides them from other
    /// delivery loops for `lease`: what a delivery loop sends next.
    async fn claim_deliveries(
        &self,
        limit: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<crate::backend::ClaimedDelivery>>;

    /// Ends an attempt: removes the delivery, stores it for a retry at a time, or parks it,
    /// only if its stored form is still `claimed` (another loop that claimed it after this
    /// one's lease ran out wins). False when it was not.
    async fn settle_delivery(
        &self,
        id: &str,
        claimed: &str,
        settle: crate::backend::Settle,
    ) -> Result<bool>;
}

/// Job ids whose cancel was requested.
pub type CancelStream = std::pin::Pin<Box<dyn futures_core::Stream<Item = JobId> + Send>>;

/// What a fetch asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRequest {
    /// Who holds the leases.
    pub worker: WorkerId,
    /// At most this many jobs.
    pub max: usize,
    /// Lease duration.
    pub lease: Duration,
    /// This request's id: the same request sent again takes nothing more.
    pub id: ClaimId,
}

impl ClaimRequest {
    /// A new request (with a fresh id) for up to `max` jobs under `lease`.
    pub fn new(worker: WorkerId, max: usize, lease: Duration) -> Self {
        Self {
            worker,
            max,
            lease,
            id: ClaimId::next(),
        }
    }

    /// How many jobs one call of this request may lease: `max`, at most
    /// [`crate::backend::MAX_CLAIM`] (a worker with more free slots asks again). A replay
    /// answers at most as many.
    ///
    /// ```
    /// use std::time::Duration;
    /// use queue_core::WorkerId;
    /// use queue_core::backend::{ClaimRequest, MAX_CLAIM};
    ///
    /// let req = ClaimRequest::new(WorkerId::new("w"), 10_000, Duration::from_secs(30));
    /// assert_eq!(req.size(), MAX_CLAIM);
    /// ```
    pub fn size(&self) -> usize {
        self.max.min(crate::backend::MAX_CLAIM)
    }
}

/// A leased job.
#[derive(Clone, Debug, PartialEq)]
pub struct Lease {
    /// The record as of the claim (`processing`).
    pub job: JobRecord,
    /// The fencing token.
    pub token: LeaseToken,
    /// When the lease expires unless renewed (the backend's clock).
    pub expires_at: DateTime<Utc>,
    /// When the call that took this lease was sent, by this process's monotonic clock:
    /// the lease runs on the server from no earlier than this, so its holder counts the
    /// lease from here (the fence, [`crate::backend::fence_margin`]), not from when a
    /// waiting fetch began or when the answer arrived.
    pub claimed_at: tokio::time::Instant,
}

impl Lease {
    /// [`Lease::claimed_at`] of a lease a claim answered: the call was sent at `sent`
    /// (local), the backend answered at `now_ms` (its clock) and the lease started at
    /// `started_ms` (its clock; earlier than `now_ms` when a replay answers a lease an
    /// earlier send took). The lease started no earlier than `sent - (now - started)` in
    /// real time, whatever the two clocks read, so that is when its holder counts it from.
    ///
    /// ```
    /// use std::time::Duration;
    /// use queue_core::backend::Lease;
    ///
    /// let sent = tokio::time::Instant::now();
    /// assert_eq!(Lease::claimed_at_from(sent, 5_000, 5_000), sent);
    /// assert_eq!(Lease::claimed_at_from(sent, 5_000, 4_000), sent - Duration::from_secs(1));
    /// ```
    pub fn claimed_at_from(
        sent: tokio::time::Instant,
        now_ms: crate::backend::Millis,
        started_ms: crate::backend::Millis,
    ) -> tokio::time::Instant {
        let age = Duration::from_millis(now_ms.saturating_sub(started_ms).max(0) as u64);
        sent.checked_sub(age).unwrap_or(sent)
    }

    /// The (id, token) pair used for writes.
    pub fn to_ref(&self) -> LeaseRef {
        LeaseRef {
            job_id: self.job.job_id,
            token: self.token.clone(),
        }
    }
}

/// Identifies a lease: the job and the token.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LeaseRef {
    /// The job.
    pub job_id: JobId,
    /// The token.
    pub token: LeaseToken,
}

/// A worker's heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerBeat {
    /// Who.
    pub worker: WorkerId,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Jobs it may run at once.
    pub concurrency: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// The version of the program it runs (the worker crate's, unless the program says).
    pub version: String,
    /// The tasks it has handlers for.
    pub tasks: Vec<String>,
    /// The payload schema of each typed task that shares one (`Job::schema`), each at most
    /// `MAX_TASK_SCHEMA_BYTES` of JSON.
    pub schemas: std::collections::BTreeMap<String, serde_json::Value>,
    /// New lease duration for every lease still held.
    pub lease: Duration,
    /// The heartbeat interval: the worker counts as alive for three of them.
    pub interval: Duration,
}

/// What a heartbeat learned, lease by lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// Leases that are no longer held: stop those attempts and do not report them.
    pub lost: Vec<LeaseRef>,
    /// Leases whose job's cancel was requested: stop them and finish them as cancelled.
    pub cancel: Vec<LeaseRef>,
}

/// The state of a lease after a progress update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgressReply {
    /// A caller asked to cancel the job.
    pub cancel_requested: bool,
}

/// One attempt's end, as [`Broker::finish_many`] takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Ending {
    /// The attempt.
    pub lease: LeaseRef,
    /// What it came to.
    pub outcome: Outcome,
}

impl Ending {
    /// Hands a leased job back unrun: it keeps its place and no attempt is used.
    pub fn handed_back(lease: &Lease) -> Self {
        Self {
            lease: lease.to_ref(),
            outcome: Outcome::Released,
        }
    }
}

/// What `finish_many` did.
#[derive(Debug)]
pub struct FinishedMany {
    /// Each ending's status after its outcome (or why it was refused), in order.
    pub statuses: Vec<Result<JobStatus>>,
    /// The leases taken for `next`, oldest claim first.
    pub next: Vec<Lease>,
}

/// What `finish` did.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// The job's status after the outcome.
    pub status: JobStatus,
    /// The next lease, when one was asked for and a job was due.
    pub next: Option<Lease>,
}

/// The calls now blocked on a backend waiting for work (fetches that found nothing and
/// wait): a gauge for operators, and the state a test waits for before it asserts that a
/// fetch keeps waiting (no fixed sleeps). Each backend keeps one and counts its waits with
/// [`Blocked::enter`].
#[derive(Debug, Default)]
pub struct Blocked(std::sync::atomic::AtomicUsize);

impl Blocked {
    /// Counts one blocked call until the guard is dropped (its wait ended, or the call was
    /// cancelled).
    pub fn enter(&self) -> BlockedGuard<'_> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        BlockedGuard(self)
    }

    /// How many calls are blocked now.
    pub fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// One blocked call of a [`Blocked`] count; dropping it ends the count.
#[derive(Debug)]
pub struct BlockedGuard<'a>(&'a Blocked);

impl Drop for BlockedGuard<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}
