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
use queue_core::backend::{FinishedMany, Lease, MockBroker, Outcome, from_millis};
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
    /// The largest claim asked for.
    most_asked: usize,
    /// The most a claim asked beyond one job per slot (concurrency 1) or per ending.
    most_ahead: usize,
    /// Jobs leased and not yet ended.
    out: usize,
    /// Outcomes stored (hand-backs not counted).
    stored: usize,
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

/// A fake backend handing out `jobs` jobs: fetches claim what they ask; finishes complete
/// every ending and claim what they ask when `finish_claims`, else nothing. Each ending but
/// a hand-back (which queues the job again) is sent on the channel.
fn fake(
    jobs: usize,
    finish_claims: bool,
) -> (MockBroker, Arc<Mutex<Seen>>, mpsc::UnboundedReceiver<()>) {
    let seen = Arc::new(Mutex::new(Seen {
        left: jobs,
        ..Seen::default()
    }));
    let mut mock = MockBroker::new();
    let s = Arc::clone(&seen);
    mock.expect_fetch().returning(move |req, _| {
        let mut seen = s.lock().unwrap();
        seen.most_ahead = seen.most_ahead.max(req.max - 1);
        Ok(leases(&mut seen, req.max))
    });
    let s = Arc::clone(&seen);
    let (tx, ended) = mpsc::unbounded_channel();
    mock.expect_finish_many().returning(move |endings, next| {
        let mut seen = s.lock().unwrap();
        seen.out -= endings.len();
        for e in &endings {
            if e.outcome == Outcome::Released {
                // Handed back unrun (held too long on a loaded machine): queued again.
                seen.left += 1;
            } else {
                seen.stored += 1;
                tx.send(()).unwrap();
            }
        }
        if let Some(n) = &next {
            seen.most_ahead = seen.most_ahead.max(n.max.saturating_sub(endings.len()));
        }
        let next = next.filter(|_| finish_claims);
        Ok(FinishedMany {
            statuses: endings.iter().map(|_| Ok(JobStatus::Completed)).collect(),
            next: next.map(|n| leases(&mut seen, n.max)).unwrap_or_default(),
        })
    });
    expect_housekeeping(&mut mock);
    (mock, seen, ended)
}

/// Runs a worker at concurrency 1 claiming ahead within `budget` on `mock` until `jobs`
/// jobs ended, then stops it.
async fn run_until_ended(
    mock: MockBroker,
    mut ended: mpsc::UnboundedReceiver<()>,
    jobs: usize,
    budget: Duration,
    handler: impl Fn(u32, JobContext) -> std::future::Ready<Result<(), queue_worker::JobError>>
    + Send
    + Sync
    + 'static,
) -> queue_worker::WorkerReport {
    let worker = support::on_mock(mock)
        .concurrency(1)
        .claim_ahead(budget)
        .fetch_wait(Duration::from_millis(5))
        .register("echo", handler)
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    for _ in 0..jobs {
        tokio::time::timeout(Duration::from_secs(30), ended.recv())
            .await
            .expect("every job ends")
            .unwrap();
    }
    stop.cancel();
    run.await.unwrap().unwrap()
}

/// Runs `jobs` instant jobs at concurrency 1 with a claim-ahead `budget`: the worker's
/// report, how far handler starts ran ahead of stored outcomes at most, what the backend saw.
async fn instant_jobs(jobs: usize, budget: Duration) -> (queue_worker::WorkerReport, usize, Seen) {
    let (mock, seen, ended) = fake(jobs, true);
    let (started, ahead) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (s, a, st) = (Arc::clone(&seen), Arc::clone(&ahead), Arc::clone(&started));
    let report = run_until_ended(mock, ended, jobs, budget, move |_, _| {
        let n = st.fetch_add(1, Ordering::SeqCst) + 1;
        a.fetch_max(n - s.lock().unwrap().stored, Ordering::SeqCst);
        std::future::ready(Ok(()))
    })
    .await;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    (report, ahead.load(Ordering::SeqCst), seen)
}

/// At concurrency 1, instant handlers: a slot starts its next job before the outcome of
/// the last is stored (the calls that store outcomes claim ahead), which it never does
/// with claiming ahead off; claims reach MOST_AHEAD beyond one job per ending (or per free
/// slot) and never ask more. One thread, so the order is the same every run.
#[tokio::test(flavor = "current_thread")]
async fn short_jobs_start_before_the_last_outcome_is_stored() {
    const JOBS: usize = 2_000;
    let (report, ran_ahead, seen) = instant_jobs(JOBS, Duration::from_secs(10)).await;
    assert_eq!(report.completed, JOBS as u64);
    assert!(
        ran_ahead >= 2,
        "started {ran_ahead} jobs beyond the stored outcomes"
    );
    assert!(ran_ahead <= MOST_AHEAD + 1, "{ran_ahead}");
    // The limit is reached (handlers this short fit far more in the budget) and never
    // passed.
    assert_eq!(seen.most_ahead, MOST_AHEAD);
    assert_eq!(seen.out, 0, "every leased job ended or was handed back");
    // Off: each job starts once the outcome before it is stored (it came with that call).
    let (report, ran_ahead, seen) = instant_jobs(JOBS, Duration::ZERO).await;
    assert_eq!(report.completed, JOBS as u64);
    assert_eq!((ran_ahead, seen.most_ahead), (1, 0));
}

/// Fifty short jobs (they teach a worker that its handlers are short), one long job, five
/// short ones behind it: the long job's id and those of the five.
async fn short_long_short(backend: &MemoryBackend) -> (JobId, Vec<JobId>) {
    let mut ids = Vec::new();
    for (task, n) in [("short", 50u32), ("long", 1), ("short", 5)] {
        for i in 0..n {
            let job = NewJob::new(task, &i).unwrap();
            ids.push(backend.enqueue(job).await.unwrap().job_id);
        }
    }
    (ids[50], ids[51..].to_vec())
}

type Handled = std::pin::Pin<Box<dyn Future<Output = Result<(), queue_worker::JobError>> + Send>>;

/// A handler that says it started, then runs until released.
fn runs_until_released(
    started: Arc<Notify>,
    release: Arc<Notify>,
) -> impl Fn(u32, JobContext) -> Handled + Send + Sync + 'static {
    move |_, _| {
        let (started, release) = (Arc::clone(&started), Arc::clone(&release));
        Box::pin(async move {
            started.notify_one();
            release.notified().await;
            Ok(())
        })
    }
}

/// A job claimed ahead behind a handler that runs long is handed back (its place kept, no
/// attempt used) and another worker runs it while that handler still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_held_behind_a_long_handler_goes_to_another_worker() {
    let backend = Arc::new(MemoryBackend::new());
    let (long, behind) = short_long_short(&backend).await;
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
            .register("long", runs_until_released(started, release))
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
    let held = backend.stats().await.unwrap().processing;
    assert!(
        held > 1,
        "a holds jobs claimed ahead behind the long one ({held} leased)"
    );
    // Worker b starts once a holds whatever it claimed ahead behind the long job.
    let b =
        tokio::spawn(worker("b", Arc::clone(&release), Arc::new(Notify::new())).run(stop.clone()));
    for id in &behind {
        let done = backend.wait(*id, Duration::from_secs(10)).await.unwrap();
        assert_eq!(done.status, JobStatus::Completed, "{done:?}");
        let by = ran_by.lock().unwrap().get(id).copied();
        assert_eq!(by, Some("b"), "run by the free worker");
        assert_eq!(done.retry_count, 0, "handing back used no attempt");
    }
    let still = backend.get(long).await.unwrap();
    assert_eq!(
        still.status,
        JobStatus::Processing,
        "the long job still runs"
    );
    release.notify_one();
    let done = backend.wait(long, Duration::from_secs(10)).await.unwrap();
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
    let (_, behind) = short_long_short(&backend).await;
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
        .register("long", runs_until_released(s, r))
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
#[tokio::test(flavor = "current_thread")]
async fn a_fetch_beyond_the_free_slots_runs_every_job() {
    const JOBS: usize = 6;
    // Finishes claim nothing: every job after the first comes from a fetch, the first
    // asking for one (no handler has run yet), the next for more.
    let (mock, seen, ended) = fake(JOBS, false);
    let budget = Duration::from_secs(10);
    let report =
        run_until_ended(mock, ended, JOBS, budget, |_, _| std::future::ready(Ok(()))).await;
    assert_eq!(report.completed, JOBS as u64);
    assert!(
        seen.lock().unwrap().most_asked > 1,
        "the second fetch claimed ahead"
    );
}

/// However large the budget, a held job goes back within a quarter of the lease (its lease
/// is not renewed while it is held): another worker runs it on its first attempt, before
/// the lease could expire and be reaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_job_goes_back_before_its_lease_could_expire() {
    let backend = Arc::new(MemoryBackend::new());
    let (long, behind) = short_long_short(&backend).await;
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let worker = |budget: Duration, started: Arc<Notify>| {
        Worker::builder(backend.clone())
            .concurrency(1)
            .lease(Duration::from_secs(2), Duration::from_millis(500))
            .claim_ahead(budget)
            .fetch_wait(Duration::from_millis(20))
            .register("short", |_: u32, _ctx| async { Ok(()) })
            .register("long", runs_until_released(started, Arc::clone(&release)))
            .build()
            .unwrap()
    };
    let stop = CancellationToken::new();
    // Fifty budgets would be 500 s.
    let a = tokio::spawn(worker(Duration::from_secs(10), Arc::clone(&started)).run(stop.clone()));
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("the long job starts");
    let b = tokio::spawn(worker(Duration::ZERO, Arc::new(Notify::new())).run(stop.clone()));
    for id in &behind {
        let done = backend.wait(*id, Duration::from_secs(10)).await.unwrap();
        assert_eq!(done.status, JobStatus::Completed, "{done:?}");
        assert_eq!(done.retry_count, 0, "handed back, not reaped: {done:?}");
    }
    release.notify_one();
    let done = backend.wait(long, Duration::from_secs(10)).await.unwrap();
    assert_eq!((done.status, done.retry_count), (JobStatus::Completed, 0));
    stop.cancel();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
}
