//! `Broker` for the memory backend: claims, leases, outcomes, recovery and retention.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use queue_core::backend::MAX_ENDINGS;
use queue_core::backend::{
    Broker, CancelStream, ClaimRequest, Ending, FinishedMany, HeartbeatReply, Lease, LeaseRef,
    ProgressReply, ScheduleRead, ScheduleWrite, ScheduleWritten, StoredSchedules, WorkerBeat,
    duration_ms,
};
use queue_core::{JobId, Result, WorkerId};

use crate::MemoryBackend;

impl MemoryBackend {
    fn claim(&self, req: &ClaimRequest) -> (Vec<Lease>, Option<i64>) {
        let mut t = self.lock();
        let leases = t.claim(req, self.now(), self.events());
        (leases, t.next_wake(self.now()))
    }

    /// Runs cancel cascades to their end, one bounded step per lock, telling the holders
    /// of running descendants to stop and waking fetchers when a parent was released.
    pub(crate) fn finish_cascades(&self) {
        loop {
            let (more, requested, woken) = {
                let mut t = self.lock();
                let more = t.cascade_step(self.now(), self.events());
                (more, t.take_cancel_requests(), t.take_woken())
            };
            for child in requested {
                let _ = self.inner.cancels.send(child);
            }
            if woken {
                self.inner.work.notify_waiters();
            }
            if !more {
                return;
            }
        }
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
            let _blocked = self.inner.blocked.enter();
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
    ) -> Result<ProgressReply> {
        self.lock()
            .progress(lease, progress, step.as_deref(), self.now(), self.events())
    }

    async fn finish_many(
        &self,
        endings: Vec<Ending>,
        next: Option<ClaimRequest>,
    ) -> Result<FinishedMany> {
        // Each step of at most MAX_ENDINGS endings under one lock; the claim goes with the
        // last step.
        let mut statuses = Vec::with_capacity(endings.len());
        let mut endings = endings.into_iter().peekable();
        let mut leases = Vec::new();
        loop {
            let step: Vec<Ending> = endings.by_ref().take(MAX_ENDINGS).collect();
            let last = endings.peek().is_none();
            let woken = {
                let mut t = self.lock();
                let now = self.now();
                statuses.extend(step.into_iter().map(|e| {
                    t.finish(&e.lease, e.outcome, &self.inner.config, now, self.events())
                }));
                // Only a call that ended something claims more.
                if last
                    && let Some(req) = next.as_ref().filter(|_| statuses.iter().any(Result::is_ok))
                {
                    leases = t.claim(req, now, self.events());
                }
                t.take_woken()
            };
            if woken {
                self.inner.work.notify_waiters();
            }
            if last {
                return Ok(FinishedMany {
                    statuses,
                    next: leases,
                });
            }
        }
    }

    async fn reap(&self, limit: usize) -> Result<Vec<JobId>> {
        let (ids, woken) = {
            let mut t = self.lock();
            let ids = t.reap(limit, self.now(), self.events());
            (ids, t.take_woken())
        };
        if woken {
            self.inner.work.notify_waiters();
        }
        // A cancel's cascade its caller left unfinished (its future was dropped) goes on.
        self.finish_cascades();
        Ok(ids)
    }

    async fn deregister(&self, worker: &WorkerId) -> Result<()> {
        self.lock().deregister(worker.as_str());
        Ok(())
    }

    async fn sweep(&self, limit: usize) -> Result<usize> {
        let now = self.now();
        let cutoff =
            queue_core::backend::retention_cutoff(now, duration_ms(self.inner.config.retention));
        Ok(self.lock().sweep(limit, cutoff, now))
    }

    async fn read_schedules(&self, read: &ScheduleRead) -> Result<StoredSchedules> {
        Ok(self.lock().read_schedules(read, self.now()))
    }

    async fn write_schedule(&self, write: ScheduleWrite) -> Result<ScheduleWritten> {
        let creates = !write.jobs.is_empty();
        let written =
            self.lock()
                .write_schedule(write, &self.inner.config, self.now(), self.events())?;
        if creates {
            self.inner.work.notify_waiters();
        }
        Ok(written)
    }

    async fn claim_deliveries(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<queue_core::backend::ClaimedDelivery>> {
        Ok(self
            .lock()
            .claim_deliveries(limit, duration_ms(lease), self.now()))
    }

    async fn settle_delivery(
        &self,
        id: &str,
        claimed: &str,
        settle: queue_core::backend::Settle,
    ) -> Result<bool> {
        Ok(self.lock().settle_delivery(id, claimed, settle, self.now()))
    }

    async fn cancellations(&self) -> Result<CancelStream> {
        let rx = self.inner.cancels.subscribe();
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx)
            .filter_map(|item| std::future::ready(item.ok()));
        Ok(Box::pin(stream))
    }
}
