use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use queue_core::backend::{Broker, ClaimRequest, to_millis};
use queue_core::{JobError, JobStatus, JobStore, NewJob, WorkerId};
use queue_worker::Worker;

use crate::support::{backend, start, start_waiting, wait_status};

#[tokio::test(start_paused = true)]
async fn failures_retry_with_exponential_backoff_then_succeed() {
    let store = backend();
    let job = store
        .enqueue(NewJob::new("flaky", &1).unwrap())
        .await
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c2 = Arc::clone(&calls);
    let worker = start(
        Worker::builder(store.clone()).register("flaky", move |_: u32, _ctx| {
            let calls = Arc::clone(&c2);
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    return Err(JobError::retry("upstream timeout"));
                }
                Ok(())
            }
        }),
    );
    let r = wait_status(&store, job.job_id, JobStatus::Completed).await;
    assert_eq!(r.retry_count, 2);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Attempts at 0 s, 60 s and 60 + 120 s: the last one started 180 s after creation.
    let waited = to_millis(r.started_at.unwrap()) - to_millis(r.created_at);
    assert!(
        (180_000..182_000).contains(&waited),
        "last attempt after {waited} ms"
    );
    assert_eq!(worker.shutdown().await.retried, 2);
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_and_timeouts_end_failed() {
    let store = backend();
    let job = store
        .enqueue(
            NewJob::new("slow", &1)
                .unwrap()
                .max_retries(2)
                .timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    let worker = start(
        Worker::builder(store.clone()).register("slow", |_: u32, _ctx| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }),
    );
    let r = wait_status(&store, job.job_id, JobStatus::Failed).await;
    assert_eq!(r.retry_count, 2);
    assert!(r.error_message.unwrap().contains("timed out after 5s"));
    let report = worker.shutdown().await;
    assert_eq!((report.retried, report.failed), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn a_dead_workers_job_is_recovered_and_finished_elsewhere() {
    let store = backend();
    let job = store
        .enqueue(NewJob::new("work", &1).unwrap())
        .await
        .unwrap();
    // A worker that leases the job and dies: it never renews nor reports.
    let dead = ClaimRequest::new(WorkerId::new("dead"), 1, Duration::from_secs(30));
    assert_eq!(store.fetch(&dead, Duration::ZERO).await.unwrap().len(), 1);
    let worker =
        start(Worker::builder(store.clone()).register("work", |_: u32, _ctx| async { Ok(()) }));
    let r = wait_status(&store, job.job_id, JobStatus::Completed).await;
    assert_eq!(r.retry_count, 1, "the lost attempt counts");
    let waited = to_millis(r.completed_at.unwrap()) - to_millis(r.created_at);
    assert!(
        waited < 60_000,
        "recovered within about a lease and a reap interval ({waited} ms)"
    );
    worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_stuck_handler_keeps_its_lease_through_heartbeats() {
    let store = backend();
    let job = store
        .enqueue(NewJob::new("cpu", &1).unwrap())
        .await
        .unwrap();
    // Runs for three lease periods; heartbeats must keep the lease alive.
    let worker = start(
        Worker::builder(store.clone()).register("cpu", |_: u32, _ctx| async {
            tokio::time::sleep(Duration::from_secs(95)).await;
            Ok(())
        }),
    );
    let r = wait_status(&store, job.job_id, JobStatus::Completed).await;
    assert_eq!(r.retry_count, 0, "never recovered while alive");
    assert_eq!(store.stats().await.unwrap().totals.recovered, 0);
    worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_snoozed_job_runs_again_later_without_using_an_attempt() {
    let store = backend();
    // No retries at all: snoozing must not spend any.
    let job = store
        .enqueue(NewJob::new("rate_limited", &1).unwrap().max_retries(0))
        .await
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c2 = Arc::clone(&calls);
    let worker = start(Worker::builder(store.clone()).register(
        "rate_limited",
        move |_: u32, _ctx| {
            let calls = Arc::clone(&c2);
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    // The provider said 429, Retry-After: 90.
                    return Err(JobError::snooze(Duration::from_secs(90)));
                }
                Ok(())
            }
        },
    ));
    let r = wait_status(&store, job.job_id, JobStatus::Completed).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(r.retry_count, 0, "snoozes use no attempt");
    let waited = to_millis(r.started_at.unwrap()) - to_millis(r.created_at);
    assert!(
        (180_000..185_000).contains(&waited),
        "two snoozes of 90 s before the last start: {waited} ms"
    );
    let report = worker.shutdown().await;
    assert_eq!(
        (report.snoozed, report.completed, report.retried),
        (2, 1, 0)
    );
}

/// A short snooze is kept to: the worker's fetch that is already waiting (for its free
/// slots) wakes when the job falls due, not at the end of its own wait (a handler working
/// 100 ms then snoozing 300 ms, twice; a 2 s fetch wait).
#[tokio::test(start_paused = true)]
async fn a_short_snooze_runs_again_on_time() {
    let store = backend();
    let job = store
        .enqueue(NewJob::new("not_yet", &1).unwrap())
        .await
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c2 = Arc::clone(&calls);
    let worker = start_waiting(
        Worker::builder(store.clone()).register("not_yet", move |_: u32, _ctx| {
            let calls = Arc::clone(&c2);
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    // Meanwhile the fetch loop waits for work with the other slots.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return Err(JobError::snooze(Duration::from_millis(300)));
                }
                Ok(())
            }
        }),
        Duration::from_secs(2),
    );
    let r = wait_status(&store, job.job_id, JobStatus::Completed).await;
    let waited = to_millis(r.started_at.unwrap()) - to_millis(r.created_at);
    assert!(
        (800..1_100).contains(&waited),
        "two rounds of 100 ms work and a 300 ms snooze before the last start: {waited} ms"
    );
    worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_handler_holds_every_start_of_the_queue() {
    let store = backend();
    let first = store
        .enqueue(NewJob::new("call_provider", &1).unwrap())
        .await
        .unwrap();
    let second = store
        .enqueue(NewJob::new("call_provider", &2).unwrap())
        .await
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c2 = Arc::clone(&calls);
    let worker = start(Worker::builder(store.clone()).concurrency(1).register(
        "call_provider",
        move |_: u32, _ctx| {
            let calls = Arc::clone(&c2);
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    // The provider said 429, Retry-After: 30.
                    return Err(JobError::rate_limited(Duration::from_secs(30)));
                }
                Ok(())
            }
        },
    ));
    let a = wait_status(&store, first.job_id, JobStatus::Completed).await;
    let b = wait_status(&store, second.job_id, JobStatus::Completed).await;
    assert_eq!((a.retry_count, b.retry_count), (0, 0));
    // Nothing started during the 30 s hold: the second job waited although it was ready.
    let waited = to_millis(b.started_at.unwrap()) - to_millis(first.created_at);
    assert!(
        waited >= 30_000,
        "the second job started {waited} ms after the 429"
    );
    assert_eq!(worker.shutdown().await.snoozed, 1);
}
