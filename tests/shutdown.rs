use std::time::Duration;

use queue_core::{JobStatus, JobStore, NewJob};
use queue_worker::Worker;

use crate::support::{backend, start, wait_status};

#[tokio::test(start_paused = true)]
async fn shutdown_lets_short_jobs_finish_and_hands_back_long_ones() {
    let store = backend();
    let short = store
        .enqueue(NewJob::new("sleep", &1u64).unwrap())
        .await
        .unwrap();
    let long = store
        .enqueue(NewJob::new("sleep", &600u64).unwrap())
        .await
        .unwrap();
    let worker = start(
        Worker::builder(store.clone())
            .shutdown_grace(Duration::from_secs(5))
            .register("sleep", |secs: u64, _ctx| async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                Ok(())
            }),
    );
    wait_status(&store, long.job_id, JobStatus::Processing).await;
    wait_status(&store, short.job_id, JobStatus::Processing).await;
    let report = worker.shutdown().await;
    assert_eq!((report.completed, report.released), (1, 1));
    assert_eq!(
        store.get(short.job_id).await.unwrap().status,
        JobStatus::Completed
    );
    let r = store.get(long.job_id).await.unwrap();
    assert_eq!(
        (r.status, r.retry_count),
        (JobStatus::Queued, 0),
        "handed back without using an attempt"
    );
    assert!(store.workers().await.unwrap().is_empty(), "deregistered");
    // Another worker picks it up.
    let next =
        start(Worker::builder(store.clone()).register("sleep", |_: u64, _ctx| async { Ok(()) }));
    wait_status(&store, long.job_id, JobStatus::Completed).await;
    next.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_stopped_worker_fetches_nothing_more() {
    let store = backend();
    let worker =
        start(Worker::builder(store.clone()).register("x", |_: u32, _ctx| async { Ok(()) }));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let live = store.workers().await.unwrap();
    assert_eq!(live.len(), 1, "registered by its first heartbeat");
    worker.shutdown().await;
    let job = store.enqueue(NewJob::new("x", &1).unwrap()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        store.get(job.job_id).await.unwrap().status,
        JobStatus::Queued
    );
}
