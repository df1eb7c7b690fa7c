use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use queue_core::{Completion, EventKind, JobError, JobStatus, JobStore, NewJob, Priority, Stages};
use queue_worker::Worker;
use serde_json::json;

use crate::support::{backend, start, wait_status};

#[tokio::test(start_paused = true)]
async fn jobs_complete_with_progress_and_results() {
    let store = backend();
    let job = store
        .enqueue(NewJob::new("count", &json!({"words": ["a", "b", "c"]})).unwrap())
        .await
        .unwrap();
    let mut events = store.subscribe(None).await.unwrap();
    let stages = Stages::new([("read", 20), ("count", 80)]).unwrap();
    let worker = start(Worker::builder(store.clone()).register(
        "count",
        move |input: serde_json::Value, ctx| {
            let stages = stages.clone();
            async move {
                let report = ctx.stages(stages);
                report.start("read").await;
                report.complete("read").await;
                let words = input["words"].as_array().cloned().unwrap_or_default();
                for i in 0..words.len() {
                    report.progress("count", i + 1, words.len()).await;
                }
                Ok::<_, JobError>(Completion::with_result(json!({"count": words.len()})))
            }
        },
    ));
    let done = wait_status(&store, job.job_id, JobStatus::Completed).await;
    assert_eq!(done.progress, 100);
    assert_eq!(done.result, Some(json!({"count": 3})));
    assert_eq!(done.current_step.as_deref(), Some("count"));
    let report = worker.shutdown().await;
    assert_eq!(report.completed, 1);

    let mut progress = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(10), events.next()).await
    {
        if let EventKind::Progress { progress: p, .. } = event.kind {
            progress.push(p);
        }
    }
    assert_eq!(
        progress,
        [0, 20, 46, 73, 100],
        "stage-weighted, monotonic progress"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrency_limit_is_respected() {
    let store = backend();
    for n in 0..12 {
        store
            .enqueue(NewJob::new("work", &n).unwrap())
            .await
            .unwrap();
    }
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (n2, p2) = (Arc::clone(&now), Arc::clone(&peak));
    let worker = start(Worker::builder(store.clone()).concurrency(3).register(
        "work",
        move |_: u32, _ctx| {
            let (now, peak) = (Arc::clone(&n2), Arc::clone(&p2));
            async move {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        },
    ));
    while store.stats().await.unwrap().completed < 12 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        3,
        "exactly the limit, never more"
    );
    assert_eq!(worker.shutdown().await.completed, 12);
}

#[tokio::test(start_paused = true)]
async fn priority_order_is_kept_through_the_worker() {
    let store = backend();
    for (n, p) in [
        (1, Priority::Low),
        (2, Priority::Normal),
        (3, Priority::High),
        (4, Priority::Normal),
    ] {
        store
            .enqueue(NewJob::new("order", &n).unwrap().priority(p))
            .await
            .unwrap();
    }
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    let worker = start(Worker::builder(store.clone()).concurrency(1).register(
        "order",
        move |n: u32, _ctx| {
            let seen = Arc::clone(&s2);
            async move {
                seen.lock().unwrap().push(n);
                Ok(())
            }
        },
    ));
    while store.stats().await.unwrap().completed < 4 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.shutdown().await;
    assert_eq!(*seen.lock().unwrap(), [3, 2, 4, 1]);
}

#[tokio::test(start_paused = true)]
async fn bad_jobs_fail_and_the_worker_goes_on() {
    let store = backend();
    let unknown = store
        .enqueue(NewJob::new("no_such_task", &1).unwrap())
        .await
        .unwrap();
    let garbage = store
        .enqueue(NewJob::new("typed", &json!({"wrong": true})).unwrap())
        .await
        .unwrap();
    let good = store
        .enqueue(NewJob::new("typed", &json!({"n": 2})).unwrap())
        .await
        .unwrap();
    #[derive(serde::Deserialize)]
    struct Typed {
        n: u32,
    }
    let worker = start(Worker::builder(store.clone()).register(
        "typed",
        |t: Typed, _ctx| async move {
            assert_eq!(t.n, 2);
            Ok(())
        },
    ));
    // A task nobody here knows is retried with the normal backoff (during a rolling
    // deploy another worker may know it), then fails saying why.
    let r = wait_status(&store, unknown.job_id, JobStatus::Failed).await;
    assert!(
        r.error_message
            .unwrap()
            .contains("no handler registered for task `no_such_task`")
    );
    assert_eq!(r.retry_count, 3, "retried like any failed attempt");
    let r = wait_status(&store, garbage.job_id, JobStatus::Failed).await;
    let msg = r.error_message.unwrap();
    assert!(
        msg.contains("could not be decoded") && msg.contains("missing field `n`"),
        "{msg}"
    );
    wait_status(&store, good.job_id, JobStatus::Completed).await;
    let report = worker.shutdown().await;
    assert_eq!((report.failed, report.completed, report.retried), (2, 1, 3));
}

#[tokio::test(start_paused = true)]
async fn partial_outcome_says_which_steps_failed() {
    let store = backend();
    let job = store
        .enqueue(NewJob::new("book", &1).unwrap())
        .await
        .unwrap();
    let worker = start(Worker::builder(store.clone()).register(
        "book",
        |_: u32, _ctx| async move {
            Ok::<_, JobError>(Completion::partial(
                "audio_generation failed: espeak-ng is not installed",
                json!({"failed_steps": ["audio_generation"]}),
            ))
        },
    ));
    let r = wait_status(&store, job.job_id, JobStatus::Partial).await;
    assert_eq!(
        r.result,
        Some(json!({"failed_steps": ["audio_generation"]}))
    );
    assert!(r.error_message.unwrap().contains("espeak-ng"));
    worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_running_job_stops_its_handler() {
    let store = backend();
    let job = store
        .enqueue(NewJob::new("long", &1).unwrap())
        .await
        .unwrap();
    let saw_cancel = Arc::new(AtomicUsize::new(0));
    let s2 = Arc::clone(&saw_cancel);
    let worker = start(
        Worker::builder(store.clone()).register("long", move |_: u32, ctx| {
            let saw = Arc::clone(&s2);
            async move {
                ctx.progress(10, Some("working")).await;
                let watcher = ctx.clone();
                tokio::spawn(async move {
                    watcher.cancelled().await;
                    saw.fetch_add(1, Ordering::SeqCst);
                });
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
        }),
    );
    wait_status(&store, job.job_id, JobStatus::Processing).await;
    let asked = tokio::time::Instant::now();
    assert_eq!(
        store.cancel(job.job_id).await.unwrap(),
        queue_core::CancelOutcome::Requested
    );
    let r = wait_status(&store, job.job_id, JobStatus::Cancelled).await;
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "cancel took {:?}",
        asked.elapsed()
    );
    assert_eq!(r.retry_count, 0);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        saw_cancel.load(Ordering::SeqCst),
        1,
        "the handler's context was told"
    );
    assert_eq!(worker.shutdown().await.cancelled, 1);
}
