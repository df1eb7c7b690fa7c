//! The job record and what a producer sends to create one.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, JobId, JobStatus, Payload, Priority, Result};

/// Free-form metadata attached to a job.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// Everything the queue knows about one job. The same fields, under the same names, in
/// every backend and on every API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's id.
    pub job_id: JobId,
    /// The task (handler name) that runs it, e.g. `process_book`.
    pub task: String,
    /// Its input.
    pub payload: Payload,
    /// At most one active job exists per unique key (for books: the `book_id`).
    pub unique_key: Option<String>,
    /// Where it is in its life.
    pub status: JobStatus,
    /// How urgent it is.
    pub priority: Priority,
    /// 0-100; never goes backwards within an attempt.
    pub progress: u8,
    /// The step the handler reported last.
    pub current_step: Option<String>,
    /// The last error (of a failed attempt, or of the final outcome).
    pub error_message: Option<String>,
    /// Retries used so far (a first run is attempt 0).
    pub retry_count: u32,
    /// Retries allowed after the first attempt.
    pub max_retries: u32,
    /// The per-job timeout, when it differs from the worker's default.
    pub timeout_ms: Option<u64>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When its current (or last) attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    pub completed_at: Option<DateTime<Utc>>,
    /// While queued: the earliest time it may run (a delay or a retry backoff).
    pub run_at: Option<DateTime<Utc>>,
    /// Free metadata given at enqueue.
    pub metadata: Metadata,
    /// What the handler returned (for `partial`: which steps failed and why).
    pub result: Option<serde_json::Value>,
    /// The worker holding the job while it is processing.
    pub worker_id: Option<String>,
    /// Set when a caller asked to cancel the running job.
    pub cancel_requested: bool,
    /// The job's group (for books: the publisher): ready jobs of one priority are served
    /// round-robin across groups, and a group can be paused or limited on its own.
    #[serde(default)]
    pub group: Option<String>,
    /// What one start of the job counts against a rate limit (`None`: 1), for example the
    /// tokens an LLM call will use: see [`NewJob::cost`].
    #[serde(default)]
    pub cost: Option<u32>,
    /// How many enqueues of its key replaced its payload while it waited to start
    /// ([`NewJob::debounce`], [`NewJob::keep_latest`]).
    #[serde(default)]
    pub replaced: u32,
    /// The ordered sequence the job belongs to ([`NewJob::sequence`]): its members start
    /// one at a time, in enqueue order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<String>,
    /// The job this one waits for ([`KeyMode::KeepLatest`](crate::KeyMode::KeepLatest), a
    /// sequence's member before it): it is placed (ready, or delayed until its `run_at`)
    /// when that job ends; `None` once placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<JobId>,
    /// The job's parent in a flow (a child ends before its parent starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<JobId>,
    /// For a child: what its failure does to its parent (`None`: the default,
    /// [`crate::ChildPolicy::FailParent`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_policy: Option<crate::ChildPolicy>,
    /// For a parent: its children's counts; while `waiting` is above 0 the job is queued
    /// but does not start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub children: Option<crate::ChildCounts>,
    /// The attempts that ended without success (an error that is retried or fails the job,
    /// an expired lease), oldest first; the last [`MAX_ATTEMPTS_KEPT`] of them. A manual
    /// retry keeps them, so the job's whole story stays in one place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
}

/// How many unsuccessful attempts a record keeps (the oldest go first).
pub const MAX_ATTEMPTS_KEPT: usize = 20;

/// One attempt that ended without success ([`JobRecord::attempts`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Which attempt of the job's life it was, from 1 (counting those of earlier manual
    /// retries too).
    pub attempt: u32,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended (the worker reported, or its lease was found expired).
    pub ended_at: DateTime<Utc>,
    /// The worker that ran it.
    pub worker_id: Option<String>,
    /// Its error.
    pub error: Option<String>,
}

impl Attempt {
    /// How long it ran.
    pub fn duration(&self) -> Option<chrono::Duration> {
        self.started_at.map(|s| self.ended_at - s)
    }
}

impl JobRecord {
    /// The record `job` is born with, under `id` at `now` (ms): queued, with its options
    /// or the queue's defaults (`config`), due after its delay (`run_at`), a cost of 1 not
    /// stored. A flow's child names its parent and policy (`child_of`; the default policy
    /// is not stored); a parent of `children` waits on them. Every backend creates its
    /// records with this, so a new record reads the same everywhere.
    ///
    /// ```
    /// use queue_core::{JobId, JobRecord, JobStatus, NewJob, QueueConfig};
    ///
    /// let job = NewJob::new("t", &1).unwrap().delay(std::time::Duration::from_secs(2));
    /// let record = JobRecord::born(job, JobId::new(), 1_000, &QueueConfig::default(), None, 0);
    /// assert_eq!(record.status, JobStatus::Queued);
    /// assert_eq!(record.max_retries, QueueConfig::default().max_retries);
    /// assert_eq!(record.run_at.map(|t| t.timestamp_millis()), Some(3_000));
    /// ```
    pub fn born(
        job: crate::NewJob,
        id: JobId,
        now: crate::backend::Millis,
        config: &crate::QueueConfig,
        child_of: Option<(JobId, crate::ChildPolicy)>,
        children: u32,
    ) -> Self {
        use crate::backend::{duration_ms, from_millis};
        let crate::NewJob {
            task,
            payload,
            options,
        } = job;
        let delay = options.delay.map(duration_ms).unwrap_or(0);
        Self {
            job_id: id,
            task,
            payload,
            unique_key: options.unique_key,
            status: JobStatus::Queued,
            priority: options.priority.unwrap_or(config.default_priority),
            progress: 0,
            current_step: None,
            error_message: None,
            retry_count: 0,
            max_retries: options.max_retries.unwrap_or(config.max_retries),
            timeout_ms: options.timeout.map(|t| duration_ms(t) as u64),
            created_at: from_millis(now),
            started_at: None,
            completed_at: None,
            run_at: (delay > 0).then(|| from_millis(now + delay)),
            metadata: options.metadata,
            result: None,
            worker_id: None,
            cancel_requested: false,
            group: options.group,
            cost: options.cost.filter(|c| *c != 1),
            replaced: 0,
            sequence: options.sequence,
            after: None,
            parent: child_of.map(|(parent, _)| parent),
            child_policy: child_of
                .map(|(_, policy)| policy)
                .filter(|p| *p != crate::ChildPolicy::default()),
            children: (children > 0).then(|| crate::ChildCounts {
                waiting: children,
                ..crate::ChildCounts::default()
            }),
            attempts: Vec::new(),
        }
    }

    /// Queued and waiting on unfinished children (not claimable yet).
    pub fn waits_on_children(&self) -> bool {
        self.status == JobStatus::Queued && crate::flow::waits_on_children(self.children.as_ref())
    }

    /// Shows a parent's progress while it waits on its children: the share of them that
    /// ended ([`crate::ChildCounts::progress`]). Backends call this on every record they
    /// hand out; a job that started keeps its own progress.
    pub fn show_flow_progress(&mut self) {
        if (self.waits_on_children()
            || (self.status == JobStatus::Queued && self.started_at.is_none()))
            && let Some(counts) = &self.children
        {
            self.progress = counts.progress();
        }
    }

    /// The policy this job's failure applies to its parent.
    pub fn policy(&self) -> crate::ChildPolicy {
        self.child_policy.unwrap_or_default()
    }

    /// The per-job timeout, or `default` when the job has none.
    pub fn timeout_or(&self, default: Duration) -> Duration {
        self.timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(default)
    }

    /// True when a failed attempt may still be retried.
    pub fn has_retries_left(&self) -> bool {
        self.retry_count < self.max_retries
    }

    /// The stored result decoded as `T` (`None` when the job stored none); an error names
    /// the job and what did not match.
    ///
    /// ```
    /// # fn main() -> queue_core::Result<()> {
    /// # let mut record: queue_core::JobRecord = serde_json::from_value(serde_json::json!({
    /// #   "job_id": queue_core::JobId::new(), "task": "t", "payload": null, "unique_key": null,
    /// #   "status": "completed", "priority": "normal", "progress": 100, "current_step": null,
    /// #   "error_message": null, "retry_count": 0, "max_retries": 3, "timeout_ms": null,
    /// #   "created_at": "2026-01-01T00:00:00Z", "started_at": null, "completed_at": null,
    /// #   "run_at": null, "metadata": {}, "worker_id": null, "cancel_requested": false,
    /// #   "result": {"pages": 320}
    /// # })).unwrap();
    /// #[derive(serde::Deserialize)]
    /// struct Counted { pages: u32 }
    ///
    /// let counted: Option<Counted> = record.result_as()?;
    /// assert_eq!(counted.map(|c| c.pages), Some(320));
    /// # Ok(()) }
    /// ```
    pub fn result_as<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>> {
        self.decode_result()
    }

    /// The result of a finished job of type `J`, decoded into its [`crate::Job::Output`]
    /// (`None` while it has none). A job of another task is an error naming both.
    pub fn output<J: crate::Job>(&self) -> Result<Option<J::Output>> {
        if self.task != J::NAME {
            return Err(Error::invalid(format!(
                "job {} is a `{}` job, not a `{}`",
                self.job_id,
                self.task,
                J::NAME
            )));
        }
        self.decode_result()
    }

    fn decode_result<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>> {
        self.result
            .clone()
            .map(|r| {
                serde_json::from_value(r)
                    .map_err(|e| Error::codec(format!("result of job {}", self.job_id), e))
            })
            .transpose()
    }
}

/// Options of a new job. Unset fields take the queue's defaults (see `QueueConfig`).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct EnqueueOptions {
    /// Refuse the job while another job with this key is queued or processing.
    pub unique_key: Option<String>,
    /// Priority (default: `DCS_QUEUE_DEFAULT_PRIORITY`).
    pub priority: Option<Priority>,
    /// Run no earlier than this long after enqueue.
    pub delay: Option<Duration>,
    /// Retries after the first attempt (default: `DCS_QUEUE_MAX_RETRIES`).
    pub max_retries: Option<u32>,
    /// Per-job timeout (default: the worker's `DCS_QUEUE_JOB_TIMEOUT_SECONDS`).
    pub timeout: Option<Duration>,
    /// Free metadata stored with the job.
    pub metadata: Metadata,
    /// Use this id instead of a fresh one (an enqueue repeated with the same id after a
    /// timeout then returns the existing job instead of creating a second one).
    pub job_id: Option<JobId>,
    /// The job's group (see [`JobRecord::group`]).
    pub group: Option<String>,
    /// What a start counts against the rate limits (see [`NewJob::cost`]; default 1).
    pub cost: Option<u32>,
    /// What the enqueue does when another job holds the unique key (default: refused; see
    /// [`NewJob::debounce`], [`NewJob::throttle`]).
    pub key_mode: crate::KeyMode,
    /// The ordered sequence the job joins (see [`NewJob::sequence`]).
    pub sequence: Option<String>,
    /// Where the job goes on a partitioned queue (see [`NewJob::partition_key`]); not
    /// stored.
    pub partition_key: Option<String>,
}

/// A job to enqueue: task name, payload and options.
#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    /// The task (handler name).
    pub task: String,
    /// Its input.
    pub payload: Payload,
    /// Its options.
    pub options: EnqueueOptions,
}

impl NewJob {
    /// A job for `task` with a serializable payload.
    pub fn new<T: Serialize + ?Sized>(task: impl Into<String>, payload: &T) -> Result<Self> {
        Ok(Self::with_payload(task, Payload::encode(payload)?))
    }

    /// A typed job under its `Job::NAME`, with the options its type starts with
    /// ([`crate::Job::options`]); chain the option setters to override them, then enqueue
    /// it.
    pub fn typed<J: crate::Job>(job: &J) -> Result<Self> {
        let mut new = Self::new(J::NAME, job)?;
        let mut options = job.options();
        // Metadata the enqueue itself added (the trace context) stays beside the type's.
        for (key, value) in std::mem::take(&mut new.options.metadata) {
            options.metadata.entry(key).or_insert(value);
        }
        new.options = options;
        Ok(new)
    }

    /// A job for `task` with an encoded payload. With the `opentelemetry` feature, the
    /// current trace context goes with it (see [`crate::backend::TRACE_CONTEXT_KEY`]).
    pub fn with_payload(task: impl Into<String>, payload: Payload) -> Self {
        #[allow(unused_mut)]
        let mut options = EnqueueOptions::default();
        #[cfg(feature = "opentelemetry")]
        if let Some(carrier) = crate::trace::current_carrier() {
            options
                .metadata
                .insert(crate::trace::TRACE_CONTEXT_KEY.into(), carrier);
        }
        Self {
            task: task.into(),
            payload,
            options,
        }
    }

    /// Sets the unique key.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.options.unique_key = Some(key.into());
        self
    }

    /// Clears the unique key (a typed job's comes from its type), for a job that may run
    /// beside another of the same key: a schedule's ticks, a deliberate second run.
    pub fn without_unique_key(mut self) -> Self {
        self.options.unique_key = None;
        self
    }

    /// Clears the delay (a typed job's may come from its type).
    pub fn without_delay(mut self) -> Self {
        self.options.delay = None;
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.options.priority = Some(priority);
        self
    }

    /// Delays the first run.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.options.delay = Some(delay);
        self
    }

    /// Sets the retry budget.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.options.max_retries = Some(retries);
        self
    }

    /// Sets a per-job timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// Adds one metadata entry.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.options.metadata.insert(key.into(), value.into());
        self
    }

    /// Uses a caller-chosen id.
    pub fn job_id(mut self, id: JobId) -> Self {
        self.options.job_id = Some(id);
        self
    }

    /// Puts the job in a group (for books: the publisher's id). Within a priority, ready
    /// jobs are served round-robin across groups, so one group's backlog does not hold back
    /// the others; a group can be paused or given a concurrency limit of its own
    /// ([`crate::JobStore::set_group_concurrency`]).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.options.group = Some(group.into());
        self
    }

    /// What one start of this job counts against the queue's and its group's rate limits
    /// (default 1; 1 to 1,000,000), for example the tokens an LLM call will use with a limit
    /// of tokens per minute. A job starts only when its cost fits in what is left of the
    /// window; a job costing more than a whole window starts alone, in an empty window.
    /// Concurrency limits count jobs, not cost.
    pub fn cost(mut self, cost: u32) -> Self {
        self.options.cost = Some(cost);
        self
    }

    /// Checks the names every backend must refuse: an empty or long task name or unique
    /// key. [`crate::Limits::check`] adds the bounds on sizes and times.
    pub fn validate(&self) -> Result<()> {
        crate::job::check_task_name(&self.task)?;
        if let Some(key) = &self.options.unique_key {
            if key.is_empty() {
                return Err(Error::invalid("unique key is empty"));
            }
            if key.len() > 512 {
                return Err(Error::invalid("unique key is longer than 512 bytes"));
            }
        }
        if let Some(group) = &self.options.group {
            crate::group::check_group_name(group)?;
        }
        if let Some(cost) = self.options.cost {
            crate::rate::check_cost(cost)?;
        }
        crate::sequences::check_sequence(self)?;
        crate::partitions::check_partition_key(self)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_keeps_json_text_and_decodes() {
        let p = Payload::encode(&serde_json::json!({"book_id": "b1", "n": 3})).unwrap();
        assert_eq!(p.as_str(), r#"{"book_id":"b1","n":3}"#);
        #[derive(Debug, Deserialize)]
        struct Book {
            book_id: String,
        }
        assert_eq!(p.decode::<Book>().unwrap().book_id, "b1");
        let err = Payload::from_trusted("{}").decode::<Book>().unwrap_err();
        assert!(
            err.chain().contains("missing field `book_id`"),
            "{}",
            err.chain()
        );
        assert!(Payload::from_json("{nope").is_err());
    }

    #[test]
    fn record_serializes_payload_inline() {
        let json = serde_json::json!({
            "job_id": JobId::new(), "task": "t", "payload": {"a": [1, 2]}, "unique_key": null,
            "status": "queued", "priority": "high", "progress": 0, "current_step": null,
            "error_message": null, "retry_count": 0, "max_retries": 3, "timeout_ms": null,
            "created_at": "2026-01-01T00:00:00Z", "started_at": null, "completed_at": null,
            "run_at": null, "metadata": {}, "result": null, "worker_id": null,
            "cancel_requested": false, "group": "p1", "cost": 7, "replaced": 2
        });
        let record: JobRecord = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(record.payload.as_str(), r#"{"a":[1,2]}"#);
        assert_eq!(serde_json::to_value(&record).unwrap(), json);
    }

    #[test]
    fn result_as_decodes_or_names_the_job() {
        let mut record: JobRecord = serde_json::from_value(serde_json::json!({
            "job_id": JobId::new(), "task": "t", "payload": null, "unique_key": null,
            "status": "completed", "priority": "high", "progress": 100, "current_step": null,
            "error_message": null, "retry_count": 0, "max_retries": 3, "timeout_ms": null,
            "created_at": "2026-01-01T00:00:00Z", "started_at": null, "completed_at": null,
            "run_at": null, "metadata": {}, "result": null, "worker_id": null,
            "cancel_requested": false
        }))
        .unwrap();
        assert_eq!(record.result_as::<u32>().unwrap(), None);
        record.result = Some(serde_json::json!(7));
        assert_eq!(record.result_as::<u32>().unwrap(), Some(7));
        let err = record.result_as::<String>().unwrap_err();
        assert!(
            err.chain().contains(&record.job_id.to_string()),
            "{}",
            err.chain()
        );
    }

    #[test]
    fn validation_names_the_problem() {
        let job = NewJob::new("", &1).unwrap();
        assert!(
            job.validate()
                .unwrap_err()
                .to_string()
                .contains("task name is empty")
        );
        let job = NewJob::new("t", &1).unwrap().unique_key("");
        assert!(
            job.validate()
                .unwrap_err()
                .to_string()
                .contains("unique key is empty")
        );
    }
}
