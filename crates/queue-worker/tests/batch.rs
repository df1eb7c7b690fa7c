//! Batch handlers (`WorkerBuilder::register_batch`, `handle_batch`): one call for up to a
//! batch's size of jobs, an outcome per job, a failing member retried alone.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use queue_core::{JobId, JobStatus, JobStore, NewJob, RetryPolicy};
use queue_memory::MemoryBackend;
use queue_worker::{Batch, BatchJob, CancellationToken, Job, JobError, MAX_BATCH, Worker};

/// What each call of a batch handler took: the inputs, in order.
type Calls = Arc<Mutex<Vec<Vec<u32>>>>;

async fn enqueue(backend: &MemoryBackend, n: u32) -> Vec<JobId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let job = NewJob::new("bulk", &i).unwrap().max_retries(3);
        ids.push(backend.enqueue(job).await.unwrap().job_id);
    }
    ids
}

/// Runs `worker` until every job of `ids` finished; their records, in order.
async fn run_until_finished(
    backend: &MemoryBackend,
    worker: Worker,
    ids: &[JobId],
) -> Vec<queue_core::JobRecord> {
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    let mut out = Vec::new();
    for id in ids {
        out.push(backend.wait(*id, Duration::from_secs(20)).await.unwrap());
    }
    stop.cancel();
    run.await.unwrap().unwrap();
    out
}

/// 250 jobs through batches of 100 at concurrency 100: every job completes once with its own
/// result, no call takes more than 100 jobs, and calls take many jobs each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_run_each_job_once_with_its_own_result() {
    let backend = Arc::new(MemoryBackend::new());
    let ids = enqueue(&backend, 250).await;
    let calls: Calls = Arc::default();
    let seen = Arc::clone(&calls);
    let worker = Worker::builder(backend.clone())
        .concurrency(100)
        .register_batch(
            "bulk",
            Batch::of(100).wait(Duration::from_millis(200)),
            move |jobs: Vec<BatchJob<u32>>| {
                seen.lock()
                    .unwrap()
                    .push(jobs.iter().map(|j| j.input).collect());
                async move {
                    jobs.iter()
                        .map(|j| {
                            Ok::<_, JobError>(queue_core::Completion::with_result(
                                serde_json::json!(j.input * 2),
                            ))
                        })
                        .collect::<Vec<_>>()
                }
            },
        )
        .build()
        .unwrap();
    for (i, done) in run_until_finished(&backend, worker, &ids)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(done.status, JobStatus::Completed, "{done:?}");
        assert_eq!(done.result, Some(serde_json::json!(i as u32 * 2)));
        assert_eq!(done.retry_count, 0);
    }
    let calls = calls.lock().unwrap();
    let mut inputs: Vec<u32> = calls.iter().flatten().copied().collect();
    inputs.sort_unstable();
    assert_eq!(
        inputs,
        (0..250).collect::<Vec<_>>(),
        "each job in exactly one call"
    );
    let most = calls.iter().map(Vec::len).max().unwrap();
    assert_eq!(
        most, 100,
        "a full batch is called at its size and never past it"
    );
    assert!(
        calls.len() <= 10,
        "batches formed: {} calls for 250 jobs",
        calls.len()
    );
}

/// A member that fails is retried alone: the others complete on their first attempt, it
/// completes on its second, in a call of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_member_retries_alone() {
    let backend = Arc::new(MemoryBackend::new());
    let ids = enqueue(&backend, 10).await;
    let calls: Calls = Arc::default();
    let seen = Arc::clone(&calls);
    let worker = Worker::builder(backend.clone())
        .concurrency(10)
        .retry_policy(RetryPolicy {
            base: Duration::from_millis(50),
            cap: Duration::from_millis(50),
            jitter: 0.0,
        })
        .register_batch(
            "bulk",
            Batch::of(10).wait(Duration::from_millis(500)),
            move |jobs: Vec<BatchJob<u32>>| {
                seen.lock()
                    .unwrap()
                    .push(jobs.iter().map(|j| j.input).collect());
                async move {
                    jobs.iter()
                        .map(|j| match (j.input, j.ctx.record().retry_count) {
                            (3, 0) => Err(JobError::retry("row 3 was refused")),
                            _ => Ok(()),
                        })
                        .collect::<Vec<_>>()
                }
            },
        )
        .build()
        .unwrap();
    for (i, done) in run_until_finished(&backend, worker, &ids)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(done.status, JobStatus::Completed, "{done:?}");
        assert_eq!(done.retry_count, u32::from(i == 3), "job {i}");
    }
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].len(), 10);
    assert_eq!(calls[1], [3], "the failed member ran again alone");
}

/// A handler answering the wrong number of outcomes, or panicking, fails each member of that
/// call for a retry, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_answer_or_a_panic_fails_each_member() {
    for panics in [false, true] {
        let backend = Arc::new(MemoryBackend::new());
        let mut ids = Vec::new();
        for i in 0..4u32 {
            let job = NewJob::new("bulk", &i).unwrap().max_retries(0);
            ids.push(backend.enqueue(job).await.unwrap().job_id);
        }
        let worker = Worker::builder(backend.clone())
            .concurrency(4)
            .register_batch(
                "bulk",
                Batch::of(4).wait(Duration::from_millis(500)),
                move |_jobs: Vec<BatchJob<u32>>| async move {
                    assert!(!panics, "the bulk endpoint is down");
                    vec![Ok::<_, JobError>(())]
                },
            )
            .build()
            .unwrap();
        let why = if panics {
            "batch handler panicked: the bulk endpoint is down"
        } else {
            "returned 1 outcomes for 4 jobs"
        };
        for done in run_until_finished(&backend, worker, &ids).await {
            assert_eq!(done.status, JobStatus::Failed, "{done:?}");
            let error = done.error_message.unwrap_or_default();
            assert!(error.contains(why), "{error}");
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Row {
    id: u32,
}

impl Job for Row {
    const NAME: &'static str = "row";
    type Output = u32;
}

/// A typed batch handler: each job decodes into the type and each output is stored as that
/// job's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_batch_stores_each_output() {
    let backend = Arc::new(MemoryBackend::new());
    let mut ids = Vec::new();
    for id in 0..5 {
        ids.push(
            backend
                .enqueue(NewJob::typed(&Row { id }).unwrap())
                .await
                .unwrap()
                .job_id,
        );
    }
    let worker = Worker::builder(backend.clone())
        .concurrency(5)
        .handle_batch::<Row, _, _, _>(Batch::of(5), |rows: Vec<BatchJob<Row>>| async move {
            rows.iter()
                .map(|r| Ok(r.input.id + 100))
                .collect::<Vec<_>>()
        })
        .build()
        .unwrap();
    for (id, done) in run_until_finished(&backend, worker, &ids)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(done.result, Some(serde_json::json!(id + 100)), "{done:?}");
    }
}

/// The batch size is checked when the worker is built: 1 to MAX_BATCH, and no more than the
/// concurrency (each member holds a slot).
#[test]
fn batch_sizes_past_the_limits_are_refused_at_build() {
    let build = |size: usize, concurrency: usize| {
        Worker::builder(Arc::new(MemoryBackend::new()))
            .concurrency(concurrency)
            .register_batch(
                "bulk",
                Batch::of(size),
                |jobs: Vec<BatchJob<u32>>| async move {
                    jobs.iter()
                        .map(|_| Ok::<_, JobError>(()))
                        .collect::<Vec<_>>()
                },
            )
            .build()
            .map(drop)
    };
    build(MAX_BATCH, MAX_BATCH).expect("the maximum is accepted");
    let past = build(MAX_BATCH + 1, MAX_BATCH + 1).unwrap_err().to_string();
    assert!(
        past.contains("a batch takes 1 to 1000 jobs, not 1001"),
        "{past}"
    );
    let zero = build(0, 10).unwrap_err().to_string();
    assert!(zero.contains("not 0"), "{zero}");
    let slots = build(20, 10).unwrap_err().to_string();
    assert!(
        slots.contains("batches of 20 need a concurrency of at least 20"),
        "{slots}"
    );
}
