//! `MemoryBackend`: the traits over [`Tables`] behind one mutex.

use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use futures_util::StreamExt;
use queue_core::{
    Broker, CancelOutcome, CancelStream, ClaimRequest, EventStream, Finished, HeartbeatReply,
    JobEvent, JobId, JobRecord, JobStore, Lease, LeaseRef, LeaseStatus, ListQuery, NewJob, Outcome,
    Page, Priority, QueueConfig, QueueStats, Result, SharedClock, TokioClock, WorkerBeat, WorkerId,
    WorkerInfo, duration_ms,
};
use tokio::sync::{Notify, broadcast};

use crate::tables::{Sink, Tables};

/// The full queue contract in one process. Clones share the same queue.
///
/// Its clock defaults to [`TokioClock`], so under `tokio::time::pause()` delays, backoffs
/// and leases elapse without real waiting.
#[derive(Clone)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

struct Inner {
    tables: Mutex<Tables>,
    work: Notify,
    events: broadcast::Sender<JobEvent>,
    /// Cancel requests only, so a worker listening for them does not make every
    /// transition build an event.
    cancels: broadcast::Sender<JobId>,
    clock: SharedClock,
    config: QueueConfig,
}

impl MemoryBackend {
    /// A queue with the default configuration.
    pub fn new() -> Self {
        Self::with_config(QueueConfig::default())
    }

    /// A queue with `config`'s defaults (priority, retries, retention).
    pub fn with_config(config: QueueConfig) -> Self {
        Self::with_clock(config, Arc::new(TokioClock::new()))
    }

    /// A queue reading time from `clock`.
    pub fn with_clock(config: QueueConfig, clock: SharedClock) -> Self {
        let (events, _) = broadcast::channel(16 * 1024);
        let (cancels, _) = broadcast::channel(1024);
        Self {
            inner: Arc::new(Inner {
                tables: Mutex::new(Tables::default()),
                work: Notify::new(),
                events,
                cancels,
                clock,
                config,
            }),
        }
    }

    /// The configuration the queue uses.
    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // A panic while holding the lock leaves the tables as consistent as every step
        // before it; keep serving rather than poisoning every later call.
        self.inner.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn sink(&self) -> Sink<'_> {
        (self.inner.events.receiver_count() > 0).then_some(&self.inner.events)
    }

    fn claim(&self, req: &ClaimRequest) -> (Vec<Lease>, Option<i64>) {
        let mut t = self.lock();
        let leases = t.claim(req, self.now(), self.sink());
        (leases, t.next_due())
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("queue", &self.inner.config.queue_name)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemoryBackend(queue={})", self.inner.config.queue_name)
    }
}

#[async_trait]
impl JobStore for MemoryBackend {
    async fn enqueue(&self, job: NewJob) -> Result<JobRecord> {
        let (record, created) =
            self.lock()
                .enqueue(job, &self.inner.config, self.now(), self.sink())?;
        if created {
            self.inner.work.notify_waiters();
        }
        Ok(record)
    }

    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Result<JobRecord>>> {
        let now = self.now();
        let out = {
            let mut t = self.lock();
            jobs.into_iter()
                .map(|job| {
                    t.enqueue(job, &self.inner.config, now, self.sink())
                        .map(|(r, _)| r)
                })
                .collect()
        };
        self.inner.work.notify_waiters();
        Ok(out)
    }

    async fn get(&self, id: JobId) -> Result<JobRecord> {
        self.lock().get(id)
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        self.lock().list(query)
    }

    async fn cancel(&self, id: JobId) -> Result<CancelOutcome> {
        let outcome = self.lock().cancel(id, self.now(), self.sink())?;
        if outcome == CancelOutcome::Requested {
            let _ = self.inner.cancels.send(id);
        }
        Ok(outcome)
    }

    async fn retry(&self, id: JobId, priority: Option<Priority>) -> Result<JobRecord> {
        let record = self.lock().retry(id, priority, self.now(), self.sink())?;
        self.inner.work.notify_waiters();
        Ok(record)
    }

    async fn stats(&self) -> Result<QueueStats> {
        Ok(self.lock().stats(self.now()))
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        Ok(self.lock().workers(self.now()))
    }

    async fn health(&self) -> Result<()> {
        Ok(())
    }

    async fn subscribe(&self) -> Result<EventStream> {
        let rx = self.inner.events.subscribe();
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx)
            .filter_map(|item| std::future::ready(item.ok()));
        Ok(Box::pin(stream))
    }
}

#[async_trait]
impl Broker for MemoryBackend {
    async fn fetch(&self, req: &ClaimRequest, wait: Duration) -> Result<Vec<Lease>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.inner.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (leases, next_due) = self.claim(req);
            let now = tokio::time::Instant::now();
            if !leases.is_empty() || now >= deadline {
                return Ok(leases);
            }
            let mut until = deadline;
            if let Some(due) = next_due {
                let in_ms = (due - self.now()).max(1) as u64;
                until = until.min(now + Duration::from_millis(in_ms));
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn heartbeat(&self, beat: &WorkerBeat, leases: &[LeaseRef]) -> Result<HeartbeatReply> {
        Ok(self.lock().heartbeat(beat, leases, self.now()))
    }

    async fn progress(
        &self,
        lease: &LeaseRef,
        progress: u8,
        step: Option<String>,
    ) -> Result<LeaseStatus> {
        self.lock()
            .progress(lease, progress, step.as_deref(), self.now(), self.sink())
    }

    async fn finish(
        &self,
        lease: &LeaseRef,
        outcome: Outcome,
        next: Option<ClaimRequest>,
    ) -> Result<Finished> {
        let requeues = matches!(outcome, Outcome::Retry { .. } | Outcome::Released);
        let (status, next) = {
            let mut t = self.lock();
            let now = self.now();
            let status = t.finish(lease, outcome, now, self.sink())?;
            let next = next.and_then(|req| {
                let one = ClaimRequest { max: 1, ..req };
                t.claim(&one, now, self.sink()).pop()
            });
            (status, next)
        };
        if requeues {
            self.inner.work.notify_waiters();
        }
        Ok(Finished { status, next })
    }

    async fn reap(&self, limit: usize) -> Result<Vec<JobId>> {
        let ids = self.lock().reap(limit, self.now(), self.sink());
        if !ids.is_empty() {
            self.inner.work.notify_waiters();
        }
        Ok(ids)
    }

    async fn deregister(&self, worker: &WorkerId) -> Result<()> {
        self.lock().deregister(worker.as_str());
        Ok(())
    }

    async fn sweep(&self, limit: usize) -> Result<usize> {
        let cutoff = self.now() - duration_ms(self.inner.config.retention);
        Ok(self.lock().sweep(limit, cutoff))
    }

    async fn cancellations(&self) -> Result<CancelStream> {
        let rx = self.inner.cancels.subscribe();
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx)
            .filter_map(|item| std::future::ready(item.ok()));
        Ok(Box::pin(stream))
    }
}
