//! What a handler gets besides its payload: progress, cancellation, the record.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use queue_core::backend::{LeaseRef, Monotonic};
use queue_core::{Error, JobId, JobRecord, JobStore, Stages};
use tokio::{task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::running::{Running, StopReason};

/// A running job's view of the queue. Cheap to clone.
#[derive(Clone, Debug)]
pub struct JobContext {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    record: JobRecord,
    lease: LeaseRef,
    running: Arc<Running>,
    broker: Arc<dyn queue_core::backend::Broker>,
    store: Arc<dyn JobStore>,
    /// The lease a progress report renews.
    lease_duration: Duration,
    reported: Mutex<(Monotonic, Option<String>)>,
}

impl JobContext {
    pub(crate) fn new(
        record: JobRecord,
        lease: LeaseRef,
        running: Arc<Running>,
        broker: Arc<dyn queue_core::backend::Broker>,
        store: Arc<dyn JobStore>,
        lease_duration: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                record,
                lease,
                running,
                broker,
                store,
                lease_duration,
                reported: Mutex::new((Monotonic::default(), None)),
            }),
        }
    }

    /// The job's id.
    pub fn job_id(&self) -> JobId {
        self.inner.record.job_id
    }

    /// This attempt's lease token: it names the attempt (the job id alone does not, as a
    /// job may run again), so downstream writes can be keyed by it.
    pub fn lease_token(&self) -> &queue_core::LeaseToken {
        &self.inner.lease.token
    }

    /// The record as it was when this attempt started.
    pub fn record(&self) -> &JobRecord {
        &self.inner.record
    }

    /// A parent's children (a flow, a batch), oldest first, as they ended: their statuses,
    /// results and errors. A child whose failure its policy says to ignore
    /// ([`queue_core::ChildPolicy::Ignore`]) is left out. Empty for a job without children.
    /// A batch of any size is read a page (1,000 children) per call to the backend.
    pub async fn children(&self) -> queue_core::Result<Vec<JobRecord>> {
        if self.inner.record.children.is_none() {
            return Ok(Vec::new());
        }
        let kids = self.inner.store.children(self.job_id()).await?;
        Ok(kids
            .into_iter()
            .filter(|k| k.policy().shows(k.status))
            .collect())
    }

    /// The queue this job runs on, as producers see it: to enqueue follow-up jobs, or to
    /// add members to the batch this job belongs to
    /// ([`JobStore::add_children`](queue_core::JobStore::add_children)).
    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.inner.store
    }

    /// The results of this parent's children that completed (or ended partial), decoded
    /// as `T`, oldest first, with their ids; a child that stored no result is left out.
    ///
    /// ```no_run
    /// # async fn merge(ctx: queue_worker::JobContext) -> queue_core::Result<()> {
    /// #[derive(serde::Deserialize)]
    /// struct Chapter { words: u64 }
    ///
    /// let chapters: Vec<_> = ctx.child_results::<Chapter>().await?;
    /// let words: u64 = chapters.iter().map(|(_, c)| c.words).sum();
    /// # let _ = words; Ok(()) }
    /// ```
    pub async fn child_results<T: serde::de::DeserializeOwned>(
        &self,
    ) -> queue_core::Result<Vec<(JobId, T)>> {
        let mut out = Vec::new();
        for kid in self.children().await? {
            if matches!(
                kid.status,
                queue_core::JobStatus::Completed | queue_core::JobStatus::Partial
            ) && let Some(result) = kid.result_as::<T>()?
            {
                out.push((kid.job_id, result));
            }
        }
        Ok(out)
    }

    /// Retries used before this attempt (0 on the first run).
    pub fn attempt(&self) -> u32 {
        self.inner.record.retry_count
    }

    /// Reports overall progress (0-100) and the current step. Lower values than an
    /// earlier report are ignored; unchanged reports are not sent. A lost lease or a
    /// requested cancel stops the job (see [`JobContext::cancelled`]); other backend errors
    /// are logged and do not fail the job.
    pub async fn progress(&self, percent: u8, step: Option<&str>) {
        let (value, step) = {
            let mut reported = self
                .inner
                .reported
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let before = reported.0.get();
            let value = reported.0.offer(percent);
            let step_changed = step.is_some() && step != reported.1.as_deref();
            if value == before && !step_changed && before != 0 {
                return;
            }
            if step_changed {
                reported.1 = step.map(str::to_owned);
            }
            (value, step)
        };
        let sent = Instant::now();
        match self
            .inner
            .broker
            .progress(&self.inner.lease, value, step.map(str::to_owned))
            .await
        {
            Ok(status) => {
                // A progress report renews the lease too.
                self.inner.running.renewed(sent, self.inner.lease_duration);
                if status.cancel_requested {
                    self.inner.running.stop(StopReason::Cancelled);
                }
            }
            Err(Error::LeaseLost { .. }) => {
                self.inner.running.stop(StopReason::LeaseLost);
            }
            Err(err) => tracing::warn!(error = %err.chain(), "progress update failed"),
        }
    }

    /// Runs blocking work (CPU-heavy parsing, a synchronous library) on tokio's blocking
    /// pool, tied to this attempt: the attempt keeps its concurrency slot, and the worker
    /// keeps renewing its lease and holds back its outcome, until `work` has really ended,
    /// even after a timeout or a cancel. So no more bodies run than the concurrency allows
    /// and a timed-out attempt's work never overlaps the next attempt's.
    ///
    /// Work started with plain `tokio::task::spawn_blocking` or `std::thread::spawn` is not
    /// tracked: when the attempt times out the worker frees the slot while it goes on.
    /// Long work should watch [`JobContext::cancellation_token`] and return early.
    ///
    /// ```
    /// # async fn demo(ctx: queue_worker::JobContext) -> Result<(), queue_core::JobError> {
    /// let stop = ctx.cancellation_token();
    /// let words = ctx
    ///     .spawn_blocking(move || {
    ///         let mut n = 0;
    ///         for page in 0..1000 {
    ///             if stop.is_cancelled() {
    ///                 break;
    ///             }
    ///             n += page; // parse a page
    ///         }
    ///         n
    ///     })
    ///     .await?;
    /// # let _ = words; Ok(())
    /// # }
    /// ```
    pub fn spawn_blocking<F, R>(&self, work: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.inner.running.blocking.spawn_blocking(work)
    }

    /// A reporter that turns stage progress into overall progress with `stages`' weights.
    pub fn stages(&self, stages: Stages) -> StageReporter {
        StageReporter {
            ctx: self.clone(),
            stages,
        }
    }

    /// Resolves when the job must stop: its cancel was requested, its lease was lost, or
    /// the worker's shutdown grace ran out. The worker also drops the handler's future
    /// then; long blocking work should poll [`JobContext::is_cancelled`] or watch
    /// [`JobContext::cancellation_token`].
    pub async fn cancelled(&self) {
        self.inner.running.token().cancelled().await;
    }

    /// True once the job must stop.
    pub fn is_cancelled(&self) -> bool {
        self.inner.running.token().is_cancelled()
    }

    /// A token that fires when the job must stop, for blocking work (see
    /// [`JobContext::spawn_blocking`]).
    pub fn cancellation_token(&self) -> CancellationToken {
        self.inner.running.token().clone()
    }
}

/// Reports progress by stage: `start`, then `progress(stage, done, total)` inside it, then the next.
#[derive(Clone, Debug)]
pub struct StageReporter {
    ctx: JobContext,
    stages: Stages,
}

impl StageReporter {
    /// The stage model.
    pub fn stages(&self) -> &Stages {
        &self.stages
    }

    /// Marks `stage` as started (its weight not yet earned).
    pub async fn start(&self, stage: &str) {
        self.report(stage, 0.0).await;
    }

    /// `done` of `total` sub-steps of `stage` are finished.
    pub async fn progress(&self, stage: &str, done: usize, total: usize) {
        let fraction = if total == 0 {
            1.0
        } else {
            done as f64 / total as f64
        };
        self.report(stage, fraction).await;
    }

    /// `stage` is finished.
    pub async fn complete(&self, stage: &str) {
        self.report(stage, 1.0).await;
    }

    async fn report(&self, stage: &str, fraction: f64) {
        match self.stages.percent(stage, fraction) {
            Some(pct) => self.ctx.progress(pct, Some(stage)).await,
            None => tracing::warn!(stage, "progress for a stage outside the model ignored"),
        }
    }
}
