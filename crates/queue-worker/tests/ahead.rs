//! Claiming ahead (`WorkerConfig::claim_ahead`): short handlers run many jobs per call to
//! the backend, never more at once than the concurrency; a job held behind a handler that
//! runs long goes back for another worker; shutdown hands held jobs back unrun.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use queue_core::WorkerId;
use queue_core::backend::{FinishedMany, Lease, MockBroker, from_millis};
use queue_core::{JobId, JobStatus, JobStore, LeaseToken, NewJob};
use queue_memory::MemoryBackend;
use queue_worker::{CancellationToken, JobContext, MOST_AHEAD, Worker};
use tokio::sync::{Notify, mpsc};

mod support;
use support::{expect_housekeeping, record};

/// What the fake backend saw.
#[derive(Default)]
struct Seen {
    /// Jobs it still has to hand out.
    left: usize,
    /// Calls that stored outcomes or claimed.
    calls: usize,
    /// The largest claim asked for.
    most_asked: usize,
    /// Jobs leased and not yet ended.
    out: usize,
}

fn leases(seen: &mut Seen, max: usize) -> Vec<Lease> {
    seen.most_asked = seen.most_asked.max(max);
    let n = max.min(seen.left);
    seen.left -= n;
    seen.out += n;
    (0..n)
        .map(|_| Lease {
            job: record("echo", "1", 0, 3),
            token: LeaseToken::new("t"),
            expires_at: from_millis(30_000),
            claimed_at: tokio::time::Instant::now(),
        })
        .collect()
}

/// At concurrency 1, instant handlers: jobs come several per call (the calls that store
/// outcomes claim ahead), one handler at a time, each claim within MOST_AHEAD + 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_jobs_are_claimed_ahead_and_stored_many_per_call() {
    const JOBS: usize = 2_000;
    let seen = Arc::new(Mutex::new(Seen {
        left: JOBS,
        ..Seen::default()
    }));
    let mut mock = MockBroker::new();
    let s = Arc::clone(&seen);
    mock.expect_fetch().returning(move |req, _| {
        let mut seen = s.lock().unwrap();
        seen.calls += 1;
        Ok(leases(&mut seen, req.max))
    });
    let s = Arc::clone(&seen);
    let (tx, mut ended) = mpsc::unbounded_channel();
    mock.expect_finish_many().returning(move |endings, next| {
        let mut seen = s.lock().unwrap();
        seen.calls += 1;
        seen.out -= endings.len();
        for _ in &endings {
            tx.send(()).unwrap();
        }
        Ok(FinishedMany {
            statuses: endings.iter().map(|_| Ok(JobStatus::Completed)).collect(),
            next: next.map(|n| leases(&mut seen, n.max)).unwrap_or_default(),
        })
    });
    expect_housekeeping(&mut mock);
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (r, m) = (Arc::clone(&running), Arc::clone(&most));
    let worker = support::on_mock(mock)
        .concurrency(1)
        .fetch_wait(Duration::from_millis(5))
        .register("echo", move |_: u32, _ctx| {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            r.fetch_sub(1, Ordering::SeqCst);
            async { Ok(()) }
        })
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    for _ in 0..JOBS {
        tokio::time::timeout(Duration::from_secs(30), ended.recv())
            .await
            .expect("every job ends")
            .unwrap();
    }
    stop.cancel();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.completed, JOBS as u64);
    assert_eq!(most.load(Ordering::SeqCst), 1, "one handler at a time");
    let seen = seen.lock().unwrap();
    assert!(
        seen.calls * 4 < JOBS,
        "{} calls for {JOBS} jobs: jobs should come several per call",
        seen.calls
    );
    assert!(seen.most_asked <= MOST_AHEAD + 1, "{}", seen.most_asked);
    assert_eq!(seen.out, 0, "every leased job ended or was handed back");
}

/// A job claimed ahead behind a handler that runs long is handed back (its place kept, no
/// attempt used) and another worker runs it while that handler still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_held_behind_a_long_handler_goes_to_another_worker() {
    let backend = Arc::new(MemoryBackend::new());
    // Short jobs teach the worker that handlers are short, then the long one, then more.
    for i in 0..50u32 {
        backend
            .enqueue(NewJob::new("short", &i).unwrap())
            .await
            .unwrap();
    }
    let long = backend
        .enqueue(NewJob::new("long", &0).unwrap())
        .await
        .unwrap();
    let mut behind = Vec::new();
    for i in 0..5u32 {
        behind.push(
            backend
                .enqueue(NewJob::new("short", &i).unwrap())
                .await
                .unwrap(),
        );
    }
    let release = Arc::new(Notify::new());
    let long_started = Arc::new(Notify::new());
    // Which worker ran each job.
    let ran_by: Arc<Mutex<HashMap<JobId, &'static str>>> = Arc::default();
    let worker = |name: &'static str, release: Arc<Notify>, started: Arc<Notify>| {
        let ran_by = Arc::clone(&ran_by);
        Worker::builder(backend.clone())
            .worker_id(WorkerId::new(name))
            .concurrency(1)
            .fetch_wait(Duration::from_millis(20))
            .register("short", move |_: u32, ctx: JobContext| {
                ran_by.lock().unwrap().insert(ctx.job_id(), name);
                async { Ok(()) }
            })
            .register("long", move |_: u32, _ctx| {
                let (release, started) = (Arc::clone(&release), Arc::clone(&started));
                async move {
                    started.notify_one();
                    release.notified().await;
                    Ok(())
                }
            })
            .build()
            .unwrap()
    };
    let stop = CancellationToken::new();
    let a = tokio::spawn(
        worker("a", Arc::clone(&release), Arc::clone(&long_started)).run(stop.clone()),
    );
    tokio::time::timeout(Duration::from_secs(10), long_started.notified())
        .await
        .expect("the long job starts");
    // Worker b starts once a holds whatever it claimed ahead behind the long job.
    let b =
        tokio::spawn(worker("b", Arc::clone(&release), Arc::new(Notify::new())).run(stop.clone()));
    for job in &behind {
        let done = backend
            .wait(job.job_id, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(done.status, JobStatus::Completed, "{done:?}");
        let by = ran_by.lock().unwrap().get(&job.job_id).copied();
        assert_eq!(by, Some("b"), "run by the free worker");
        assert_eq!(done.retry_count, 0, "handing back used no attempt");
    }
    let still = backend.get(long.job_id).await.unwrap();
    assert_eq!(
        still.status,
        JobStatus::Processing,
        "the long job still runs"
    );
    release.notify_one();
    let done = backend
        .wait(long.job_id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    stop.cancel();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
}

/// On shutdown the jobs held ahead go back at once, unrun and with no attempt used, while
/// the running job finishes within the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_held_jobs_back_unrun() {
    let backend = Arc::new(MemoryBackend::new());
    for i in 0..50u32 {
        backend
            .enqueue(NewJob::new("short", &i).unwrap())
            .await
            .unwrap();
    }
    backend
        .enqueue(NewJob::new("long", &0).unwrap())
        .await
        .unwrap();
    let mut behind: Vec<JobId> = Vec::new();
    for i in 0..5u32 {
        behind.push(
            backend
                .enqueue(NewJob::new("short", &i).unwrap())
                .await
                .unwrap()
                .job_id,
        );
    }
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (s, r) = (Arc::clone(&started), Arc::clone(&release));
    let ran: Arc<Mutex<Vec<u32>>> = Arc::default();
    let ran2 = Arc::clone(&ran);
    let worker = Worker::builder(backend.clone())
        .concurrency(1)
        // Patient enough that nothing is given back before the stop.
        .claim_ahead(Duration::from_secs(5))
        .register("short", move |n: u32, _ctx| {
            ran2.lock().unwrap().push(n);
            async { Ok(()) }
        })
        .register("long", move |_: u32, _ctx| {
            let (s, r) = (Arc::clone(&s), Arc::clone(&r));
            async move {
                s.notify_one();
                r.notified().await;
                Ok(())
            }
        })
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("the long job starts");
    let held = backend.stats().await.unwrap().processing;
    assert!(
        held > 1,
        "jobs were held ahead of the long one ({held} leased)"
    );
    stop.cancel();
    // Held jobs are back before the running one ends.
    for _ in 0..1000 {
        if backend.stats().await.unwrap().processing == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        backend.stats().await.unwrap().processing,
        1,
        "only the long job runs"
    );
    release.notify_one();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.completed, 51);
    for id in behind {
        let job = backend.get(id).await.unwrap();
        assert_eq!(job.status, JobStatus::Queued, "{job:?}");
        assert_eq!((job.retry_count, job.attempts.len()), (0, 0));
    }
    assert_eq!(ran.lock().unwrap().len(), 50, "no held job ran");
}

/// A fetch answered with more jobs than free slots (the rest held ahead) runs every one:
/// none is dropped between the slots and the jobs held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_beyond_the_free_slots_runs_every_job() {
    const JOBS: usize = 6;
    let seen = Arc::new(Mutex::new(Seen {
        left: JOBS,
        ..Seen::default()
    }));
    let mut mock = MockBroker::new();
    let s = Arc::clone(&seen);
    // The first fetch asks for one (no handler has run yet); the next for more.
    mock.expect_fetch()
        .returning(move |req, _| Ok(leases(&mut s.lock().unwrap(), req.max)));
    let s = Arc::clone(&seen);
    let (tx, mut ended) = mpsc::unbounded_channel();
    // Finishes claim nothing: every job after the first comes from a fetch.
    mock.expect_finish_many().returning(move |endings, _| {
        s.lock().unwrap().out -= endings.len();
        for _ in &endings {
            tx.send(()).unwrap();
        }
        Ok(FinishedMany {
            statuses: endings.iter().map(|_| Ok(JobStatus::Completed)).collect(),
            next: Vec::new(),
        })
    });
    expect_housekeeping(&mut mock);
    let worker = support::on_mock(mock)
        .concurrency(1)
        .fetch_wait(Duration::from_millis(5))
        .register("echo", |_: u32, _ctx| async { Ok(()) })
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    for _ in 0..JOBS {
        tokio::time::timeout(Duration::from_secs(10), ended.recv())
            .await
            .expect("every job ends")
            .unwrap();
    }
    stop.cancel();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.completed, JOBS as u64);
    assert!(
        seen.lock().unwrap().most_asked > 1,
        "the second fetch claimed ahead"
    );
}
