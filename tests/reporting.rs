//! Outcomes are stored in groups: what arrives while calls are in flight leaves together
//! in the next call, a few calls in flight at once, and a group whose reply was lost is
//! sent again as it was (same endings, same claim request), so no job runs twice.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use queue_core::backend::{
    Broker, CancelStream, ClaimId, ClaimRequest, Ending, FinishedMany, HeartbeatReply, Lease,
    LeaseRef, ProgressReply, WorkerBeat,
};
use queue_core::{Error, JobId, JobStatus, JobStore, NewJob, Result, WorkerId};
use queue_memory::MemoryBackend;
use queue_worker::{MOST_AHEAD, Worker};

use crate::support::{backend, start, wait_status};

/// One `finish_many` call: how many endings, and the claim request's id and size.
type Call = (usize, Option<(ClaimId, usize)>);

/// A broker whose `finish_many` takes `delay`, recording each call; with `lose_first`, the
/// first call is applied but its reply is lost.
#[derive(Debug)]
struct SlowFinishes {
    inner: Arc<MemoryBackend>,
    delay: Duration,
    lose_first: bool,
    calls: Mutex<Vec<Call>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

impl SlowFinishes {
    fn new(inner: Arc<MemoryBackend>, delay: Duration, lose_first: bool) -> Self {
        Self {
            inner,
            delay,
            lose_first,
            calls: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl Broker for SlowFinishes {
    async fn fetch(&self, req: &ClaimRequest, wait: Duration) -> Result<Vec<Lease>> {
        self.inner.fetch(req, wait).await
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
        let first = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((endings.len(), next.as_ref().map(|r| (r.id, r.max))));
            calls.len() == 1
        };
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let done = self.inner.finish_many(endings, next).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if first && self.lose_first {
            return Err(Error::Unavailable {
                backend: "test",
                source: "reply lost".into(),
            });
        }
        done
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

async fn enqueue(store: &MemoryBackend, n: usize) -> Vec<JobId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let job = store.enqueue(NewJob::new("count", &i).unwrap()).await;
        ids.push(job.unwrap().job_id);
    }
    ids
}

/// Runs `n` jobs (job `i` takes `i % 13` ms) on `broker` with concurrency 20; returns how
/// many times handlers ran.
async fn run_all(store: &Arc<MemoryBackend>, broker: Arc<SlowFinishes>, n: usize) -> usize {
    let ids = enqueue(store, n).await;
    let ran = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&ran);
    let running = start(
        Worker::with_parts(broker, store.clone())
            .concurrency(20)
            .register("count", move |i: usize, _ctx| {
                let counter = Arc::clone(&counter);
                async move {
                    // Jobs end at different times, as real ones do.
                    tokio::time::sleep(Duration::from_millis((i % 13) as u64)).await;
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }),
    );
    for id in ids {
        wait_status(store, id, JobStatus::Completed).await;
    }
    running.shutdown().await;
    ran.load(Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn outcomes_arriving_during_calls_leave_together() {
    let store = backend();
    let broker = Arc::new(SlowFinishes::new(
        Arc::clone(&store),
        Duration::from_millis(50),
        false,
    ));
    let ran = run_all(&store, Arc::clone(&broker), 200).await;
    assert_eq!(ran, 200, "every job ran once");
    let calls = broker.calls.lock().unwrap().clone();
    let endings: usize = calls.iter().map(|c| c.0).sum();
    assert_eq!(endings, 200, "each outcome sent once: {calls:?}");
    assert!(
        calls.len() <= 200 / 2,
        "{} calls for 200 outcomes: outcomes were not grouped",
        calls.len()
    );
    assert!(calls.iter().any(|c| c.0 > 1), "{calls:?}");
    let most = broker.most_in_flight.load(Ordering::SeqCst);
    assert_eq!(
        most, 2,
        "calls in flight at once: groups are pipelined, two at a time"
    );
    // Each call asked for as many jobs as its endings' slots wanted, and at most
    // MOST_AHEAD more to hold ahead.
    assert!(
        calls
            .iter()
            .all(|(n, next)| next.is_none_or(|(_, max)| max <= *n + MOST_AHEAD)),
        "{calls:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_group_whose_reply_was_lost_is_sent_again_unchanged() {
    let store = backend();
    let broker = Arc::new(SlowFinishes::new(
        Arc::clone(&store),
        Duration::from_millis(5),
        true,
    ));
    let ran = run_all(&store, Arc::clone(&broker), 60).await;
    assert_eq!(ran, 60, "no job ran twice, none was lost");
    let calls = broker.calls.lock().unwrap().clone();
    let first = calls[0];
    assert!(
        calls[1..].contains(&first),
        "the lost call was sent again with the same endings and claim request: {calls:?}"
    );
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.completed, 60);
    assert_eq!((stats.queued, stats.processing), (0, 0));
}
