//! Time at the edges of the lease protocol, seen from the worker: a lease counts from the
//! claim that took it, a claim nobody answered is sent again under its own id, and a
//! worker at its most concurrent claims in bounded calls, and a failed renewal is tried
//! again before the fence.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use queue_core::backend::{ClaimRequest, Lease, MAX_CLAIM, MAX_CONCURRENCY, MockBroker};
use queue_core::{Error, JobStatus, JobStore, LeaseToken, NewJob, QueueConfig};
use queue_memory::MemoryBackend;
use queue_worker::{CancellationToken, Worker};
use tokio::sync::mpsc;

mod support;
use support::{completed, expect_housekeeping, record};

/// A job that reaches an idle worker late in its fetch's wait runs to the end: its lease
/// counts from the claim that took it, not from when the wait began (a 2 s lease with
/// 500 ms heartbeats, the job arriving 1.7 s into a 2 s wait, running 3 s).
#[tokio::test(start_paused = true)]
async fn a_job_claimed_late_in_a_fetch_wait_keeps_its_lease() {
    let config = QueueConfig::builder()
        .queue_name("late")
        .lease(Duration::from_secs(2))
        .heartbeat(Duration::from_millis(500))
        .build()
        .unwrap();
    let backend = Arc::new(MemoryBackend::with_config(config.clone()));
    let worker = Worker::builder(backend.clone())
        .config(&config)
        .fetch_wait(Duration::from_secs(2))
        .register("slow", |_: u32, _ctx| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok(())
        })
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    // The worker is waiting for work; the job arrives near the end of the wait.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let job = backend
        .enqueue(NewJob::new("slow", &1).unwrap())
        .await
        .unwrap();
    let done = backend
        .wait(job.job_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Completed, "{done:?}");
    stop.cancel();
    let report = run.await.unwrap().unwrap();
    assert_eq!((report.completed, report.lost), (1, 0));
}

/// A fetch that got no answer (the reply was lost, then the backend stayed away longer
/// than its own re-sends) is sent again with the same request id and size, so a replay
/// answers the leases the unanswered send took instead of a new claim stranding them.
#[tokio::test]
async fn an_unanswered_claim_is_sent_again_under_its_id() {
    let mut mock = MockBroker::new();
    let seen: Arc<Mutex<Vec<ClaimRequest>>> = Arc::default();
    let sent = Arc::clone(&seen);
    let job = record("echo", "9", 0, 3);
    mock.expect_fetch().returning(move |req, _| {
        let mut sent = sent.lock().unwrap();
        sent.push(req.clone());
        match sent.len() {
            1 | 2 => Err(Error::Unavailable {
                backend: "mock",
                source: "no answer".into(),
            }),
            3 => Ok(vec![Lease {
                job: job.clone(),
                token: LeaseToken::new("t"),
                expires_at: queue_core::backend::from_millis(30_000),
                claimed_at: tokio::time::Instant::now(),
            }]),
            _ => Ok(Vec::new()),
        }
    });
    expect_housekeeping(&mut mock);
    let (tx, mut outcomes) = mpsc::unbounded_channel();
    mock.expect_finish_many().returning(move |endings, _| {
        for e in &endings {
            tx.send(e.outcome.clone()).unwrap();
        }
        Ok(completed(&endings))
    });
    let worker = support::on_mock(mock)
        .concurrency(4)
        .fetch_wait(Duration::from_millis(5))
        .register("echo", |_: u32, _ctx| async { Ok(()) })
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    let outcome = tokio::time::timeout(Duration::from_secs(10), outcomes.recv())
        .await
        .expect("the job runs")
        .unwrap();
    assert!(matches!(
        outcome,
        queue_core::backend::Outcome::Completed { .. }
    ));
    stop.cancel();
    run.await.unwrap().unwrap();
    let sent = seen.lock().unwrap();
    assert!(sent.len() >= 3);
    assert_eq!(sent[1], sent[0], "sent again unchanged: same id, same size");
    assert_eq!(sent[2], sent[0]);
}

/// A worker at its most concurrent ([`MAX_CONCURRENCY`] slots) claims at most [`MAX_CLAIM`]
/// jobs per call and runs every job exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_at_its_most_concurrent_runs_every_job_once() {
    let backend = Arc::new(MemoryBackend::new());
    let jobs: Vec<NewJob> = (0..MAX_CLAIM * 3 + 1)
        .map(|n| NewJob::new("count", &n).unwrap())
        .collect();
    let total = jobs.len();
    for r in backend.enqueue_many(jobs).await.unwrap() {
        r.unwrap();
    }
    let runs: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let counted = Arc::clone(&runs);
    let worker = Worker::builder(backend.clone())
        .concurrency(MAX_CONCURRENCY)
        .fetch_wait(Duration::from_millis(20))
        .register("count", move |n: u32, _ctx| {
            let counted = Arc::clone(&counted);
            async move {
                *counted.lock().unwrap().entry(n).or_default() += 1;
                Ok(())
            }
        })
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stats = backend.stats().await.unwrap();
        if stats.completed == total as u64 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.completed, total as u64);
    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), total);
    assert!(runs.values().all(|n| *n == 1), "every job ran once");
}

/// A renewal that fails is tried again after a quarter interval
/// (`queue_core::backend::heartbeat_retry`), so at the longest heartbeat the fence
/// tolerates the lease is still renewed in time: a 3 s lease with 1.5 s heartbeats, the
/// first renewal of the job's lease failing. Without the retry the next renewal would go
/// out at 3 s, past the fence at 2.5 s, and a healthy job would be stopped as lost.
#[tokio::test(start_paused = true)]
async fn a_failed_renewal_is_tried_again_before_the_fence() {
    use queue_core::backend::{Outcome, from_millis, heartbeat_retry, longest_heartbeat};
    use tokio::time::Instant;
    let lease_time = Duration::from_secs(3);
    let heartbeat = longest_heartbeat(lease_time);
    assert_eq!(heartbeat, Duration::from_millis(1500));
    let mut mock = MockBroker::new();
    let mut lease = Some(Lease {
        job: record("slow", "1", 0, 0),
        token: LeaseToken::new("t"),
        expires_at: from_millis(3_000),
        claimed_at: Instant::now(),
    });
    // Then the backend has nothing: fetches fail and back off, so the paused clock moves.
    mock.expect_fetch()
        .returning(move |_, _| match lease.take() {
            Some(lease) => Ok(vec![lease]),
            None => Err(Error::Unavailable {
                backend: "mock",
                source: "down".into(),
            }),
        });
    // Renewals of the job's lease, by when they were sent; the first one fails.
    let renewals = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&renewals);
    mock.expect_heartbeat().returning(move |_, leases| {
        if leases.is_empty() {
            return Ok(Default::default());
        }
        let mut sent = seen.lock().unwrap();
        sent.push(Instant::now());
        if sent.len() == 1 {
            return Err(Error::Unavailable {
                backend: "mock",
                source: "connection reset".into(),
            });
        }
        Ok(Default::default())
    });
    mock.expect_reap().returning(|_| Ok(vec![]));
    mock.expect_sweep().returning(|_| Ok(0));
    mock.expect_read_schedules()
        .returning(|_| Ok(Default::default()));
    mock.expect_claim_deliveries()
        .returning(|_, _| Ok(Vec::new()));
    mock.expect_deregister().returning(|_| Ok(()));
    mock.expect_cancellations()
        .returning(|| Ok(Box::pin(futures_util::stream::pending())));
    let (tx, mut outcomes) = mpsc::unbounded_channel();
    mock.expect_finish_many().returning(move |endings, _| {
        for e in &endings {
            tx.send(e.outcome.clone()).unwrap();
        }
        Ok(completed(&endings))
    });
    let worker = support::on_mock(mock)
        .lease(lease_time, heartbeat)
        .fetch_wait(Duration::from_millis(5))
        .register("slow", |_: u32, _ctx| async {
            tokio::time::sleep(Duration::from_secs(6)).await;
            Ok(())
        })
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    let outcome = tokio::time::timeout(Duration::from_secs(60), outcomes.recv())
        .await
        .expect("the job ends (not stopped by the fence)")
        .expect("an outcome");
    assert_eq!(outcome, Outcome::Completed { result: None });
    stop.cancel();
    let report = run.await.unwrap().unwrap();
    assert_eq!((report.completed, report.lost), (1, 0));
    let sent = renewals.lock().unwrap().clone();
    assert!(sent.len() >= 2, "{sent:?}");
    assert_eq!(sent[1] - sent[0], heartbeat_retry(heartbeat));
}
