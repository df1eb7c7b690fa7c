//! The retention soak: jobs through at full speed with a short retention; once the sweep
//! has caught up, Redis memory and key count are back at the baseline measured before.
//! The charts' buckets (`series:*`, one per minute and quarter hour, whatever the load)
//! are measured apart: they are bounded per queue, not per job, and must stay so.

use std::{sync::Arc, time::Duration};

use queue_core::{JobStore, NewJob, QueueConfig};
use queue_redis::RedisBackend;
use queue_redis::testing::{RedisServer, cli, free_port};
use queue_worker::{CancellationToken, Worker};
use serde::Serialize;

/// The soak's settings.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct SoakArgs {
    /// Jobs to put through.
    #[arg(long, default_value_t = 200_000)]
    pub(crate) jobs: usize,
    /// Retention of finished records, seconds.
    #[arg(long, default_value_t = 5)]
    pub(crate) retention_seconds: u64,
    /// Jobs the worker runs at once.
    #[arg(long, default_value_t = 100)]
    pub(crate) concurrency: usize,
    /// Jobs put through (and swept) before the baseline is measured.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) warmup: usize,
    /// Tolerance around the baseline, percent.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) tolerance: f64,
}

/// What the soak measured.
#[derive(Debug, Serialize)]
pub(crate) struct SoakReport {
    /// Jobs put through.
    pub(crate) jobs: usize,
    /// Seconds from the first enqueue to the last job finished.
    pub(crate) seconds: f64,
    /// Jobs per second through enqueue, run and finish.
    pub(crate) jobs_per_second: f64,
    /// `used_memory` before, at the peak and after the sweep (bytes).
    pub(crate) memory: [u64; 3],
    /// Keys before, at the peak and after the sweep.
    pub(crate) keys: [u64; 3],
    /// After / before.
    pub(crate) memory_ratio: f64,
    /// The charts' buckets after the sweep: keys and bytes (`MEMORY USAGE`), not counted
    /// in `memory` and `keys`.
    pub(crate) series: [u64; 2],
    /// The tolerance, percent.
    pub(crate) tolerance: f64,
}

impl SoakReport {
    /// True when memory and keys came back to the baseline, within the tolerance.
    pub(crate) fn clean(&self) -> bool {
        let limit = 1.0 + self.tolerance / 100.0;
        self.memory_ratio <= limit && self.keys[2] <= self.keys[0] && self.series_bounded()
    }

    /// The charts' buckets within their bound: both spans' buckets and a spare each, at
    /// most 1 KB apiece (every field set is about 520 B).
    pub(crate) fn series_bounded(&self) -> bool {
        let most = (62 + 98) as u64;
        self.series[0] <= most && self.series[1] <= most * 1024
    }
}

/// The charts' buckets: keys and their bytes.
fn series(port: u16) -> (u64, u64) {
    let keys = cli(port, &["--scan", "--pattern", "*:series:*"]).unwrap_or_default();
    let mut bytes = 0;
    let mut count = 0;
    for key in keys.lines().filter(|k| !k.is_empty()) {
        count += 1;
        bytes += cli(port, &["MEMORY", "USAGE", key])
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    (count, bytes)
}

fn info(port: u16) -> (u64, u64) {
    let memory: u64 = cli(port, &["INFO", "memory"])
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let keys: u64 = cli(port, &["DBSIZE"])
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    // The charts' buckets come and go by the minute, not by the job: measured apart.
    let (series_keys, series_bytes) = series(port);
    (
        memory.saturating_sub(series_bytes),
        keys.saturating_sub(series_keys),
    )
}

/// Runs the soak on a private Redis.
pub(crate) async fn run(args: SoakArgs) -> anyhow::Result<SoakReport> {
    // The slowlog keeps the arguments of up to 128 slow commands (our batches of 500 jobs
    // are among them): a bounded diagnostic of Redis, not queue data, so it is off here.
    let server = RedisServer::start(free_port(), &["--appendonly no", "--slowlog-max-len 0"]);
    let cfg = QueueConfig::builder()
        .redis_url(&server.url())?
        .queue_name("soak")
        .retention(Duration::from_secs(args.retention_seconds))
        .max_concurrency(args.concurrency)
        .build()?;
    let backend = RedisBackend::connect(&cfg).await?;
    let stop = CancellationToken::new();
    let worker = Worker::builder(Arc::new(backend.clone()))
        .config(&cfg)
        .register("noop", |_: u32, _ctx| async { Ok(()) })
        .build()?;
    let run = tokio::spawn(worker.run(stop.clone()));
    // Warm up (scripts, counters, worker registry, Redis' own tables at their working
    // size), let it be swept: the baseline.
    put_through(&backend, args.warmup).await?;
    settle(&backend, args.retention_seconds).await?;
    let before = info(server.port);
    let started = std::time::Instant::now();
    let peak = put_through(&backend, args.jobs).await?;
    let seconds = started.elapsed().as_secs_f64();
    let peak = peak.max(info(server.port));
    settle(&backend, args.retention_seconds).await?;
    let after = info(server.port);
    stop.cancel();
    run.await??;
    Ok(SoakReport {
        jobs: args.jobs,
        seconds,
        jobs_per_second: args.jobs as f64 / seconds,
        memory: [before.0, peak.0, after.0],
        keys: [before.1, peak.1, after.1],
        memory_ratio: after.0 as f64 / before.0.max(1) as f64,
        series: {
            let (keys, bytes) = series(server.port);
            [keys, bytes]
        },
        tolerance: args.tolerance,
    })
}

/// Enqueues `n` jobs in batches and waits until every one is finished; returns the
/// highest memory and key count seen meanwhile.
async fn put_through(backend: &RedisBackend, n: usize) -> anyhow::Result<(u64, u64)> {
    let port: u16 = backend
        .config()
        .redis_url
        .endpoints()
        .first()
        .and_then(|e| e.rsplit(':').next()?.parse().ok())
        .unwrap_or(6379);
    let mut peak = (0, 0);
    let finished_before = backend.stats().await?.totals.completed;
    let mut sent = 0;
    while sent < n {
        let batch: Vec<NewJob> = (0..500.min(n - sent))
            .map(|i| NewJob::new("noop", &(i as u32)).expect("encodes"))
            .collect();
        sent += batch.len();
        for r in backend.enqueue_many(batch).await? {
            r?;
        }
        // Keep the backlog bounded, as a steady producer would.
        while backend.stats().await?.queued > 20_000 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if sent % 20_000 < 500 {
            let now = info(port);
            peak = (peak.0.max(now.0), peak.1.max(now.1));
        }
    }
    loop {
        let s = backend.stats().await?;
        let now = info(port);
        peak = (peak.0.max(now.0), peak.1.max(now.1));
        if s.totals.completed - finished_before >= n as u64 {
            return Ok(peak);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the sweep has removed every finished record.
async fn settle(backend: &RedisBackend, retention: u64) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(retention + 120);
    loop {
        if backend.stats().await?.total == 0 {
            // One more sweep interval for anything the last sweep left behind.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the sweep did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
