//! Fault drills against Redis servers these tests start: a restart under load, a worker
//! that dies without shutting down, SCRIPT FLUSH under load, garbage job records.

#[path = "../support/mod.rs"]
mod support;

mod records;
mod restarts;

use std::{sync::Arc, time::Duration};

use queue_core::{JobId, JobStatus, JobStore, NewJob, QueueConfig};
use queue_redis::RedisBackend;
use queue_worker::{CancellationToken, Worker, WorkerBuilder};
use support::{RedisServer, cli, free_port, unique_queue};

pub(crate) fn config(url: &str) -> QueueConfig {
    QueueConfig::builder()
        .redis_url(url)
        .unwrap()
        .queue_name(unique_queue())
        .lease(Duration::from_secs(2))
        .heartbeat(Duration::from_millis(500))
        .retry_delay(Duration::from_millis(100))
        .build()
        .unwrap()
}

pub(crate) fn sleeper(builder: WorkerBuilder, ms: u64) -> WorkerBuilder {
    builder.register("sleep", move |_: u32, _ctx| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(())
    })
}

pub(crate) async fn enqueue_n(backend: &RedisBackend, n: u32) -> Vec<JobId> {
    let jobs: Vec<NewJob> = (0..n).map(|i| NewJob::new("sleep", &i).unwrap()).collect();
    backend
        .enqueue_many(jobs)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap().job_id)
        .collect()
}

/// Waits until every job is finished; retries through backend errors (the server may be
/// down for a moment).
pub(crate) async fn wait_all_done(
    backend: &RedisBackend,
    ids: &[JobId],
    limit: Duration,
) -> Vec<JobStatus> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut statuses = Vec::new();
        for id in ids {
            match backend.get(*id).await {
                Ok(r) => statuses.push(r.status),
                Err(_) => break,
            }
        }
        if statuses.len() == ids.len() && statuses.iter().all(|s| s.is_terminal()) {
            return statuses;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "jobs not finished in time: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_rides_out_a_redis_restart() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("dcs-restart-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    // Durable, so the restarted server has the jobs back.
    let aof = ["--appendonly yes", "--appendfsync always"];
    let mut server = RedisServer::start_in(port, dir.clone(), &aof);
    let cfg = config(&server.url());
    let backend = RedisBackend::connect(&cfg).await.unwrap();
    let ids = enqueue_n(&backend, 60).await;
    let stop = CancellationToken::new();
    let worker = sleeper(
        Worker::builder(Arc::new(backend.clone()))
            .config(&cfg)
            .concurrency(4)
            .fetch_wait(Duration::from_millis(500)),
        50,
    )
    .build()
    .unwrap();
    let run = tokio::spawn(worker.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _server = RedisServer::start_in(port, dir, &aof);
    let statuses = wait_all_done(&backend, &ids, Duration::from_secs(60)).await;
    assert!(
        statuses.iter().all(|s| *s == JobStatus::Completed),
        "{statuses:?}"
    );
    stop.cancel();
    let report = run.await.unwrap().unwrap();
    assert!(report.completed >= 60, "{report:?}");
    let stats = backend.stats().await.unwrap();
    assert_eq!(
        (stats.processing, stats.queued, stats.completed),
        (0, 0, 60)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_jobs_finish_on_another_worker() {
    let cfg = config(&support::redis_url());
    let backend = RedisBackend::connect(&cfg).await.unwrap();
    let ids = enqueue_n(&backend, 12).await;

    // Worker A runs on its own runtime; tearing that runtime down drops every task at
    // once (no outcome, no release, no deregistration): a crash, as far as Redis can tell.
    let doomed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let a = Worker::builder(Arc::new(backend.clone()))
        .config(&cfg)
        .concurrency(4)
        .register("sleep", |_: u32, _ctx| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
    doomed.spawn(a.build().unwrap().run(CancellationToken::new()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while backend.stats().await.unwrap().processing < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker A never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held: Vec<JobId> = backend
        .list(&queue_core::ListQuery::new().status(JobStatus::Processing))
        .await
        .unwrap()
        .jobs
        .iter()
        .map(|r| r.job_id)
        .collect();
    doomed.shutdown_background();

    let stop = CancellationToken::new();
    let b = sleeper(
        Worker::builder(Arc::new(backend.clone()))
            .config(&cfg)
            .concurrency(4)
            .fetch_wait(Duration::from_millis(500)),
        10,
    )
    .build()
    .unwrap();
    let run = tokio::spawn(b.run(stop.clone()));
    let statuses = wait_all_done(&backend, &ids, Duration::from_secs(30)).await;
    assert!(
        statuses.iter().all(|s| *s == JobStatus::Completed),
        "{statuses:?}"
    );
    for id in held {
        assert_eq!(
            backend.get(id).await.unwrap().retry_count,
            1,
            "the lost attempt counts"
        );
    }
    stop.cancel();
    run.await.unwrap().unwrap();
    let stats = backend.stats().await.unwrap();
    assert_eq!(
        (stats.processing, stats.completed, stats.totals.recovered),
        (0, 12, 4)
    );
    backend.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_flush_under_load_loses_nothing() {
    flush_under_load(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_under_load_loses_nothing() {
    flush_under_load(false).await;
}

/// Empties the server's script cache and function libraries ten times while a worker
/// drains 400 jobs and a producer keeps enqueueing.
async fn flush_under_load(functions: bool) {
    let server = RedisServer::start(free_port(), &["--appendonly no"]);
    let cfg = config(&server.url());
    let backend = RedisBackend::builder(&cfg)
        .functions(functions)
        .build()
        .await
        .unwrap();
    assert_eq!(backend.uses_functions(), functions);
    let ids = enqueue_n(&backend, 400).await;
    let stop = CancellationToken::new();
    let worker = sleeper(
        Worker::builder(Arc::new(backend.clone()))
            .config(&cfg)
            .concurrency(8),
        1,
    )
    .build()
    .unwrap();
    let run = tokio::spawn(worker.run(stop.clone()));
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(cli(server.port, &["SCRIPT", "FLUSH"]).is_some_and(|o| o.contains("OK")));
        assert!(cli(server.port, &["FUNCTION", "FLUSH"]).is_some_and(|o| o.contains("OK")));
        // Producers keep working across the flush too.
        enqueue_n(&backend, 1).await;
    }
    let statuses = wait_all_done(&backend, &ids, Duration::from_secs(60)).await;
    assert!(statuses.iter().all(|s| *s == JobStatus::Completed));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = backend.stats().await.unwrap();
    assert_eq!(
        (
            stats.completed,
            stats.failed,
            stats.queued,
            stats.processing
        ),
        (410, 0, 0, 0)
    );
    stop.cancel();
    run.await.unwrap().unwrap();
}
