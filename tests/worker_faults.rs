//! The worker around the races a review found: a cancel pushed the instant after a claim,
//! and blocking work that outlives a timed-out attempt.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use queue_core::backend::{
    Broker, CancelStream, ClaimRequest, Ending, FinishedMany, HeartbeatReply, Lease, LeaseRef,
    ProgressReply, WorkerBeat,
};
use queue_core::{JobId, JobStatus, JobStore, NewJob, Result, WorkerId};
use queue_memory::MemoryBackend;
use queue_worker::Worker;
use tokio::sync::Notify;

use crate::support::{backend, start, wait_status};

/// A broker whose claims come back late: the job is leased on the backend, but the
/// worker hears of it only after `delay` (a slow network, a busy process).
#[derive(Debug)]
struct LateClaims {
    inner: Arc<MemoryBackend>,
    delay: Duration,
    claimed: Notify,
}

#[async_trait]
impl Broker for LateClaims {
    async fn fetch(&self, req: &ClaimRequest, wait: Duration) -> Result<Vec<Lease>> {
        let leases = self.inner.fetch(req, wait).await?;
        if !leases.is_empty() {
            self.claimed.notify_one();
            tokio::time::sleep(self.delay).await;
        }
        Ok(leases)
    }
    async fn heartbeat(&self, beat: &WorkerBeat, leases: &[LeaseRef]) -> Result<HeartbeatReply> {
        self.inner.heartbeat(beat, leases).await
    }
    async fn progress(
        &self,
        lease: &LeaseRef,
        p: u8,
        step: Option<String>,
    ) -> Result<ProgressReply> {
        self.inner.progress(lease, p, step).await
    }
    async fn finish_many(
        &self,
        endings: Vec<Ending>,
        next: Option<ClaimRequest>,
    ) -> Result<FinishedMany> {
        self.inner.finish_many(endings, next).await
    }
    async fn reap(&self, limit: usize) -> Result<Vec<JobId>> {
        self.inner.reap(limit).await
    }
    async fn deregister(&self, worker: &WorkerId) -> Result<()> {
        self.inner.deregister(worker).await
    }
    async fn sweep(&self, limit: usize) -> Result<usize> {
        self.inner.sweep(limit).await
    }
    async fn cancellations(&self) -> Result<CancelStream> {
        self.inner.cancellations().await
    }

    async fn read_schedules(
        &self,
        read: &queue_core::backend::ScheduleRead,
    ) -> Result<queue_core::backend::StoredSchedules> {
        self.inner.read_schedules(read).await
    }

    async fn write_schedule(
        &self,
        write: queue_core::backend::ScheduleWrite,
    ) -> Result<queue_core::backend::ScheduleWritten> {
        self.inner.write_schedule(write).await
    }

    async fn claim_deliveries(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<queue_core::backend::ClaimedDelivery>> {
        self.inner.claim_deliveries(limit, lease).await
    }

    async fn settle_delivery(
        &self,
        id: &str,
        claimed: &str,
        settle: queue_core::backend::Settle,
    ) -> Result<bool> {
        self.inner.settle_delivery(id, claimed, settle).await
    }
}

/// A cancel pushed before the worker has even seen its claim still stops the job within
/// a moment, not at the next heartbeat (10 s away).
#[tokio::test(start_paused = true)]
async fn a_cancel_right_after_the_claim_is_not_missed() {
    let store = backend();
    let broker = Arc::new(LateClaims {
        inner: Arc::clone(&store),
        delay: Duration::from_millis(200),
        claimed: Notify::new(),
    });
    let job = store
        .enqueue(NewJob::new("long", &1).unwrap())
        .await
        .unwrap();
    let worker = start(Worker::with_parts(broker.clone(), store.clone()).register(
        "long",
        |_: u32, ctx| async move {
            ctx.cancelled().await;
            Ok(())
        },
    ));
    broker.claimed.notified().await;
    let asked = tokio::time::Instant::now();
    store.cancel(job.job_id).await.unwrap();
    wait_status(&store, job.job_id, JobStatus::Cancelled).await;
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(1), "cancelled after {took:?}");
    worker.shutdown().await;
}

/// Blocking work started through the context keeps the attempt's slot until it has
/// really ended, even when the attempt timed out: no more bodies run than the
/// concurrency allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_work_holds_its_slot_past_a_timeout() {
    let store = backend();
    let first = store
        .enqueue(NewJob::new("slow", &1).unwrap())
        .await
        .unwrap();
    let second = store
        .enqueue(NewJob::new("slow", &2).unwrap())
        .await
        .unwrap();
    type Log = Vec<(u32, &'static str, std::time::Instant)>;
    let log: Arc<Mutex<Log>> = Arc::default();
    let seen = Arc::clone(&log);
    let worker = start(
        Worker::builder(store.clone())
            .concurrency(1)
            .job_timeout(Duration::from_millis(50))
            .register("slow", move |n: u32, ctx| {
                let log = Arc::clone(&seen);
                async move {
                    log.lock()
                        .unwrap()
                        .push((n, "start", std::time::Instant::now()));
                    if n == 1 {
                        let log = Arc::clone(&log);
                        ctx.spawn_blocking(move || {
                            std::thread::sleep(Duration::from_millis(400));
                            log.lock()
                                .unwrap()
                                .push((1, "end", std::time::Instant::now()));
                        })
                        .await?;
                    }
                    Ok(())
                }
            }),
    );
    wait_status(&store, second.job_id, JobStatus::Completed).await;
    let first_record = store.get(first.job_id).await.unwrap();
    assert!(
        first_record
            .error_message
            .unwrap_or_default()
            .contains("timed out"),
        "the first attempt timed out"
    );
    let log = log.lock().unwrap().clone();
    let at = |n: u32, what: &str| {
        log.iter()
            .find(|(m, w, _)| *m == n && *w == what)
            .map(|(_, _, t)| *t)
    };
    let (end_1, start_2) = (at(1, "end").unwrap(), at(2, "start").unwrap());
    assert!(
        start_2 >= end_1,
        "the second job started while the first one's work ran: {log:?}"
    );
    worker.shutdown().await;
}
