//! Regression drills for the defects a review found in the Redis backend (issue 8, §4):
//! each reproduces the situation against a real Redis and checks that nothing is lost,
//! stranded or left half written.

mod support;

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use queue_core::backend::{Broker, ClaimRequest, Outcome};
use queue_core::{
    Error, JobId, JobStatus, JobStore, ListQuery, ManualClock, NewJob, Priority, QueueConfig,
    WorkerId,
};
use queue_redis::RedisBackend;
use queue_worker::{CancellationToken, Worker};
use redis::AsyncCommands;
use support::{RedisServer, free_port, unique_queue};

const LEASE: Duration = Duration::from_secs(30);

fn req(max: usize) -> ClaimRequest {
    ClaimRequest::new(WorkerId::new("w1"), max, LEASE)
}

/// A backend on its own queue of the shared test Redis, driven by a manual clock, and a raw
/// connection to poke at its keys.
async fn setup() -> (
    RedisBackend,
    ManualClock,
    redis::aio::MultiplexedConnection,
    String,
) {
    let url = support::redis_url();
    let clock = ManualClock::new();
    let backend = support::backend(&url, Some(clock.clone())).await;
    let raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let prefix = format!("dcs-test:{{{}}}:", backend.config().queue_name);
    (backend, clock, raw, prefix)
}

fn job(n: u32) -> NewJob {
    NewJob::new("t", &n).unwrap()
}

/// Defect 2: a job id reused while entries of its deleted record remain is refused (the
/// sweep would otherwise delete the new job); once the sweep has cleaned up, the id is
/// free, and the sweep never touches the live job that took it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_id_never_loses_its_new_job() {
    let (backend, clock, mut raw, prefix) = setup().await;
    let id = JobId::new();
    backend.enqueue(job(1).job_id(id)).await.unwrap();
    let lease = backend
        .fetch(&req(1), Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    backend
        .finish(&lease.to_ref(), Outcome::Completed { result: None }, None)
        .await
        .unwrap();
    // The record vanishes behind the queue's back (as the old safety expiry did).
    let _: () = raw.del(format!("{prefix}job:{id}")).await.unwrap();
    let err = backend.enqueue(job(2).job_id(id)).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { message } if message.contains("still in use")),
        "{err:?}"
    );
    clock.advance(Duration::from_secs(3601));
    backend.sweep(100).await.unwrap();
    let fresh = backend.enqueue(job(3).job_id(id)).await.unwrap();
    assert_eq!(fresh.status, JobStatus::Queued);
    clock.advance(Duration::from_secs(7200));
    assert_eq!(backend.sweep(100).await.unwrap(), 0);
    assert_eq!(backend.get(id).await.unwrap().status, JobStatus::Queued);
    backend.destroy().await.unwrap();
}

/// Defect 10: a running job whose record lost `created_at` is recovered when its lease
/// expires (not left `processing`), then failed saying which field is broken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_running_job_is_recovered_then_failed() {
    let (backend, clock, mut raw, prefix) = setup().await;
    let a = backend.enqueue(job(1)).await.unwrap();
    backend.fetch(&req(1), Duration::ZERO).await.unwrap();
    let _: () = raw
        .hdel(format!("{prefix}job:{}", a.job_id), "created_at")
        .await
        .unwrap();
    clock.advance(LEASE + Duration::from_secs(1));
    assert_eq!(backend.reap(10).await.unwrap(), vec![a.job_id]);
    let s = backend.stats().await.unwrap();
    assert_eq!((s.processing, s.queued), (0, 1), "not stranded");
    // The next claim reads the record, finds it broken and fails the job saying why.
    assert!(
        backend
            .fetch(&req(1), Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    let r = backend.get(a.job_id).await.unwrap();
    assert_eq!(r.status, JobStatus::Failed);
    assert!(
        r.error_message.unwrap().contains("created_at"),
        "the error names the field"
    );
    backend.destroy().await.unwrap();
}

/// Defect 14: a transition whose lifetime counter cannot move (at i64::MAX) still happens
/// whole: the record and every index agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_at_its_limit_never_leaves_half_a_transition() {
    let (backend, _clock, mut raw, prefix) = setup().await;
    let _: () = raw
        .hset(format!("{prefix}stats"), "completed", i64::MAX)
        .await
        .unwrap();
    let a = backend.enqueue(job(1)).await.unwrap();
    let lease = backend
        .fetch(&req(1), Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    let done = backend
        .finish(&lease.to_ref(), Outcome::Completed { result: None }, None)
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    let listed = backend
        .list(&ListQuery::new().status(JobStatus::Completed))
        .await
        .unwrap();
    assert_eq!(listed.jobs.len(), 1, "in its status index");
    assert_eq!(listed.jobs[0].job_id, a.job_id);
    let s = backend.stats().await.unwrap();
    assert_eq!((s.completed, s.processing), (1, 0));
    assert_eq!(s.totals.completed, i64::MAX as u64);
    backend.destroy().await.unwrap();
}

/// Defect 14 (enqueue): a unique key whose history key holds garbage refuses that job
/// only; the rest of the batch is stored whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_history_key_refuses_only_its_job() {
    let (backend, _clock, mut raw, prefix) = setup().await;
    let _: () = raw.set(format!("{prefix}uk:bad"), "garbage").await.unwrap();
    let results = backend
        .enqueue_many(vec![
            job(1),
            job(2).unique_key("bad"),
            job(3).unique_key("good"),
        ])
        .await
        .unwrap();
    assert!(results[0].is_ok() && results[2].is_ok());
    let err = results[1].as_ref().unwrap_err().to_string();
    assert!(err.contains("unique key `bad`"), "{err}");
    let s = backend.stats().await.unwrap();
    assert_eq!((s.total, s.queued, s.totals.enqueued), (2, 2, 2));
    backend.destroy().await.unwrap();
}

/// Defect 15: priority bands are separate queues, so no number of enqueues lets a job
/// spill into the next band.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_holds_after_a_trillion_enqueues() {
    let (backend, _clock, mut raw, prefix) = setup().await;
    let _: () = raw
        .set(format!("{prefix}seq"), 1_000_000_000_000i64 - 1)
        .await
        .unwrap();
    let normal = backend.enqueue(job(1)).await.unwrap();
    let _: () = raw
        .set(format!("{prefix}seq"), 5_000_000_000_000i64)
        .await
        .unwrap();
    let high = backend
        .enqueue(job(2).priority(Priority::High))
        .await
        .unwrap();
    let order: Vec<JobId> = backend
        .fetch(&req(2), Duration::ZERO)
        .await
        .unwrap()
        .iter()
        .map(|l| l.job.job_id)
        .collect();
    assert_eq!(order, [high.job_id, normal.job_id]);
    backend.destroy().await.unwrap();
}

/// Defect 16: a subscription whose connection is killed comes back by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_come_back_after_their_connection_is_killed() {
    let server = RedisServer::start(free_port(), &["--appendonly no"]);
    let backend = support::backend(&server.url(), None).await;
    let mut events = backend.subscribe(None).await.unwrap();
    backend.enqueue(job(0)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an event before the kill")
        .expect("open");
    support::cli(server.port, &["CLIENT", "KILL", "TYPE", "pubsub"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut n = 1;
    loop {
        let id = backend.enqueue(job(n)).await.unwrap().job_id;
        n += 1;
        match tokio::time::timeout(Duration::from_millis(300), events.next()).await {
            Ok(Some(e)) if e.job_id == id => break,
            Ok(None) => panic!("the event stream ended"),
            _ => assert!(
                tokio::time::Instant::now() < deadline,
                "the subscription did not come back"
            ),
        }
    }
}

/// Defect 19: an unreachable Redis is named by host and port (never by password).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_name_the_endpoint() {
    let port = free_port();
    let config = QueueConfig::builder()
        .redis_url(&format!("redis://:hunter2@127.0.0.1:{port}"))
        .unwrap()
        .queue_name(unique_queue())
        .build()
        .unwrap();
    let err = RedisBackend::connect(&config).await.unwrap_err();
    assert!(err.is_retryable());
    let chain = err.chain();
    assert!(chain.contains(&format!("127.0.0.1:{port}")), "{chain}");
    assert!(!chain.contains("hunter2"), "{chain}");
}

/// Defect 20: loading this version's function library deletes older versions of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_function_libraries_do_not_pile_up() {
    let server = RedisServer::start(free_port(), &["--appendonly no"]);
    let old = "#!lua name=dcsq_0ld0ld0ld0ld\nredis.register_function('dcsq_0ld_f', function() return 1 end)";
    assert!(
        support::cli(server.port, &["FUNCTION", "LOAD", old])
            .is_some_and(|o| o.contains("dcsq_0ld"))
    );
    let backend = support::backend(&server.url(), None).await;
    assert!(backend.uses_functions());
    let listed = support::cli(server.port, &["FUNCTION", "LIST", "LIBRARYNAME", "dcsq_*"]).unwrap();
    assert!(!listed.contains("dcsq_0ld"), "{listed}");
    assert_eq!(listed.matches("library_name").count(), 1, "{listed}");
}

/// Defect 8: when one batch of an `enqueue_many` fails (here Redis is out of memory),
/// the jobs of the batches that were stored are reported stored, and each job of the
/// failed batch gets its own error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_is_reported_job_by_job() {
    let server = RedisServer::start(
        free_port(),
        &["--appendonly no", "--maxmemory-policy noeviction"],
    );
    let backend = support::backend(&server.url(), None).await;
    let used: u64 = support::cli(server.port, &["INFO", "memory"])
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // A batch of 500 jobs of ~4 KiB is a 2 MiB request, counted while it is read. The
    // first starts at used + 2 MiB (below the limit), stores about 2.5 MiB; the second
    // would start at used + 4.5 MiB (above it) and is refused before it runs.
    let limit = (used + 3 * 1024 * 1024).to_string();
    support::cli(server.port, &["CONFIG", "SET", "maxmemory", &limit]);
    let payload = "x".repeat(4096);
    let jobs: Vec<NewJob> = (0..1000)
        .map(|_| NewJob::new("t", &payload).unwrap())
        .collect();
    let results = backend.enqueue_many(jobs).await.expect("the call answers");
    let stored = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(stored, 500, "the first batch was stored");
    for r in &results[500..] {
        let err = r.as_ref().unwrap_err().chain();
        assert!(
            err.contains("may not have been stored") && err.contains("OOM"),
            "{err}"
        );
    }
    support::cli(server.port, &["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(backend.stats().await.unwrap().queued, 500);
}

/// Defect 17: with Redis gone, a worker asked to stop takes at most its grace period
/// plus a small margin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_with_redis_gone_is_bounded() {
    let mut server = RedisServer::start(free_port(), &["--appendonly no"]);
    let cfg = QueueConfig::builder()
        .redis_url(&server.url())
        .unwrap()
        .queue_name(unique_queue())
        .shutdown_grace(Duration::from_secs(1))
        .build()
        .unwrap();
    let backend = RedisBackend::connect(&cfg).await.unwrap();
    backend.enqueue(job(1)).await.unwrap();
    let worker = Worker::builder(Arc::new(backend.clone()))
        .config(&cfg)
        .register("t", |_: u32, _ctx| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        })
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while backend.stats().await.unwrap().processing == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    let asked = std::time::Instant::now();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the worker stops")
        .unwrap()
        .unwrap();
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
}
