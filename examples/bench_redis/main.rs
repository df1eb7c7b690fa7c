//! No-op jobs through the Redis backend, measured like `../shared/bench/peers` measures
//! arq, BullMQ and apalis, so the figures sit side by side.
//!
//! ```text
//! redis-server --port 6399 --bind 127.0.0.1 --save "" --appendonly no --daemonize yes
//! cargo run --release -p queue-examples --example bench_redis -- --url redis://127.0.0.1:6399
//! ```
//!
//! Use a Redis of its own: the CPU, command and memory figures are server-wide deltas.
//! Prints a table and one JSON line. Each phase uses a fresh queue, deleted afterwards.
//! The rate-limit phase (`--rate-limit N`, default 5000 starts per second; 0 skips it)
//! processes the jobs under that limit and prints the rate held and the busiest 1 s window.
//! The groups phase (`--groups 1,10000`, the default) spreads the jobs over that many
//! groups and prints the processing rate next to the rate without groups.
//!
//! The backlog phase queues `--backlog` jobs (default 10⁶, about 0.75 GB of Redis memory;
//! `--backlog 0` skips it) and compares the processing rate, `stats` and the first page of
//! `list` with the same on a queue of 1,000. It ends with a line per target of issue 9,
//! met or not; `--peer FILE` (the JSON lines of the peers' bullmq-rs benchmark at
//! concurrency 10 and 100) supplies the figures the relative targets compare with.
//! The flows phase (`--flows F`, default 100; 0 skips) enqueues F flows of 1 parent + 100
//! children and prints their cost per job next to plain jobs.
//! The profile phase (`--profile 1,3,10`, the default; `--profile 0` skips) runs
//! `--profile-n` jobs (default 3,000) at each concurrency and prints where a job's time goes
//! (`profile.rs`): claim -> handler start, handler end -> outcome stored, the share of the
//! run with a call to Redis in flight, calls per job.
//! The batch phase (`--batch N`, default 10,000 jobs; 0 skips) runs 1 ms handlers one job
//! per call and in batches of 100 (`batch.rs`).
//! `--partitions 1,4` runs only the partitions phase (`partitions.rs`): processed jobs/s
//! and each master's Redis CPU per job for a queue of each P, on `--url` or on the
//! masters of `--cluster`.

mod batch;
mod partitions;
mod profile;
mod targets;

use targets::*;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use futures_util::StreamExt;
use queue_core::{JobStatus, JobStore, ListQuery, NewJob, Payload, QueueConfig};
use queue_redis::RedisBackend;
use queue_worker::{CancellationToken, JobContext, Worker, WorkerBuilder};
use tokio::sync::{Notify, mpsc};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

struct Info(redis::aio::ConnectionManager);

impl Info {
    async fn field(&mut self, section: &str, key: &str) -> anyhow::Result<f64> {
        let text: String = redis::cmd("INFO")
            .arg(section)
            .query_async(&mut self.0)
            .await?;
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .with_context(|| format!("INFO has no {key}"))?;
        Ok(line.trim().parse()?)
    }
    async fn cpu(&mut self) -> anyhow::Result<f64> {
        Ok(self.field("cpu", "used_cpu_user").await? + self.field("cpu", "used_cpu_sys").await?)
    }
    async fn commands(&mut self) -> anyhow::Result<f64> {
        self.field("stats", "total_commands_processed").await
    }
    async fn memory(&mut self) -> anyhow::Result<f64> {
        self.field("memory", "used_memory").await
    }
    async fn zcard(&mut self, key: &str) -> anyhow::Result<usize> {
        Ok(redis::cmd("ZCARD")
            .arg(key)
            .query_async(&mut self.0)
            .await?)
    }
}

async fn backend(url: &str, queue: &str) -> anyhow::Result<RedisBackend> {
    let cfg = QueueConfig::builder()
        .redis_url(url)?
        .queue_name(queue)
        .build()?;
    Ok(RedisBackend::connect(&cfg).await?)
}

fn noop(i: usize) -> NewJob {
    NewJob::with_payload("noop", Payload::from_trusted(format!("{{\"i\":{i}}}")))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = arg("--url", "redis://127.0.0.1:6399");
    let n: usize = arg("--n", "20000").parse()?;
    let samples: usize = arg("--samples", "200").parse()?;
    let inflight: usize = arg("--inflight", "50").parse()?;
    let client = redis::Client::open(url.as_str())?;
    let mut info = Info(client.get_connection_manager().await?);
    let mut out = serde_json::Map::new();
    // `--partitions 1,4`: that phase alone (`partitions.rs`).
    if partitions::phase(&mut out).await? {
        println!("{}", serde_json::Value::Object(out));
        return Ok(());
    }
    println!(
        "Redis backend on {}, {n} no-op jobs per phase",
        queue_core::RedisUrl::redact(&url)
    );

    // 1a. Sequential enqueue, then processing, at each concurrency.
    for concurrency in [10usize, 100] {
        let queue = format!("bench-{concurrency}-{}", std::process::id());
        let b = backend(&url, &queue).await?;
        let mem0 = info.memory().await?;
        let (cpu0, cmd0) = (info.cpu().await?, info.commands().await?);
        let t = Instant::now();
        for i in 0..n {
            b.enqueue(noop(i)).await?;
        }
        let enqueue_seq = n as f64 / t.elapsed().as_secs_f64();
        let cmd_enq = (info.commands().await? - cmd0 - 2.0) / n as f64;
        let cpu_enq = (info.cpu().await? - cpu0) / n as f64 * 1e6;
        let mem_queued = (info.memory().await? - mem0) / n as f64;

        let Processed {
            rate: process,
            cmds: cmd_proc,
            cpu_us: cpu_proc,
        } = run_worker(&b, &mut info, &queue, n, concurrency).await?;
        let mem_done = (info.memory().await? - mem0) / n as f64;
        println!(
            "concurrency {concurrency:>3}: enqueue {enqueue_seq:>7.0}/s  process {process:>7.0} jobs/s  \
             cmds/enqueue {cmd_enq:.1}  cmds/processed job {cmd_proc:.1}  \
             redis cpu/enqueue {cpu_enq:.1} µs  cpu/processed job {cpu_proc:.1} µs  \
             bytes/queued job {mem_queued:.0}  bytes/finished job {mem_done:.0}"
        );
        let p = format!("c{concurrency}_");
        for (k, v) in [
            ("enqueue_seq_jobs_s", enqueue_seq),
            ("process_jobs_s", process),
            ("cmds_per_enqueue", cmd_enq),
            ("cmds_per_processed_job", cmd_proc),
            ("redis_cpu_us_per_enqueue", cpu_enq),
            ("redis_cpu_us_per_processed_job", cpu_proc),
            ("bytes_per_queued_job", mem_queued),
            ("bytes_per_finished_job", mem_done),
        ] {
            out.insert(
                format!("{p}{k}"),
                serde_json::json!((v * 10.0).round() / 10.0),
            );
        }
        b.destroy().await?;
    }

    // 1b. Concurrent enqueue (`inflight` in flight) and bulk enqueue (100 per call).
    let queue = format!("bench-enq-{}", std::process::id());
    let b = backend(&url, &queue).await?;
    let t = Instant::now();
    futures_util::stream::iter(0..n)
        .for_each_concurrent(inflight, |i| {
            let b = b.clone();
            async move {
                b.enqueue(noop(i)).await.expect("enqueue");
            }
        })
        .await;
    let enqueue_conc = n as f64 / t.elapsed().as_secs_f64();
    b.destroy().await?;
    let t = Instant::now();
    for start in (0..n).step_by(100) {
        let batch: Vec<NewJob> = (start..(start + 100).min(n)).map(noop).collect();
        for r in b.enqueue_many(batch).await? {
            r?;
        }
    }
    let enqueue_bulk = n as f64 / t.elapsed().as_secs_f64();
    b.destroy().await?;
    println!(
        "enqueue: {enqueue_conc:.0}/s with {inflight} in flight, {enqueue_bulk:.0}/s in batches of 100"
    );
    out.insert(
        "enqueue_conc_jobs_s".into(),
        serde_json::json!(enqueue_conc.round()),
    );
    out.insert(
        "enqueue_bulk100_jobs_s".into(),
        serde_json::json!(enqueue_bulk.round()),
    );

    // 3. Idle pickup: one job at a time, random gaps up to 20 ms.
    let queue = format!("bench-lat-{}", std::process::id());
    let b = backend(&url, &queue).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let ready = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    let worker = Worker::builder(Arc::new(b.clone()))
        .concurrency(10)
        .register("noop", move |_: serde_json::Value, _ctx| {
            let _ = tx.send(Instant::now());
            async { Ok(()) }
        })
        .build()?;
    let run = tokio::spawn(worker.run(stop.clone()));
    drop(ready);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut lat = Vec::with_capacity(samples);
    let seen = AtomicUsize::new(0);
    for i in 0..samples {
        tokio::time::sleep(Duration::from_micros(fastrand_u64() % 20_000)).await;
        let t = Instant::now();
        b.enqueue(noop(i)).await?;
        let started = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await?
            .context("worker stopped")?;
        lat.push((started - t).as_secs_f64() * 1e3);
        seen.fetch_add(1, Ordering::Relaxed);
    }
    stop.cancel();
    run.await??;
    b.destroy().await?;
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat[(((p / 100.0) * (lat.len() as f64 - 1.0)).round() as usize).min(lat.len() - 1)]
    };
    println!(
        "idle pickup: p50 {:.3} ms  p99 {:.3} ms ({} samples)",
        pct(50.0),
        pct(99.0),
        seen.load(Ordering::Relaxed)
    );
    out.insert(
        "lat_p50_ms".into(),
        serde_json::json!((pct(50.0) * 1000.0).round() / 1000.0),
    );
    out.insert(
        "lat_p99_ms".into(),
        serde_json::json!((pct(99.0) * 1000.0).round() / 1000.0),
    );
    // 3b. Where a job's time goes at low concurrency (`--profile`).
    profile::low_concurrency(&url, &mut out).await?;

    // 4. Flat under backlog: the same work with 1,000 and with `--backlog` jobs queued.
    let backlog: usize = arg("--backlog", "1000000").parse()?;
    if backlog > 1000 {
        let mut rows = Vec::new();
        for size in [1000, backlog] {
            let queue = format!("bench-backlog-{size}-{}", std::process::id());
            let b = backend(&url, &queue).await?;
            let mem0 = info.memory().await?;
            prefill(&b, size).await?;
            let mem = (info.memory().await? - mem0) / size as f64;
            let stats_ms = median_ms(50, || async { b.stats().await.map(drop) }).await?;
            let list_ms = median_ms(50, || async {
                b.list(&ListQuery::new().limit(20)).await.map(drop)
            })
            .await?;
            let list_queued_ms = median_ms(50, || async {
                b.list(&ListQuery::new().status(JobStatus::Queued).limit(20))
                    .await
                    .map(drop)
            })
            .await?;
            // The rate is taken over `n` jobs; the small queue gets them on top of its 1,000.
            let count = if size < n {
                prefill(&b, n).await?;
                n
            } else {
                n.min(size)
            };
            let rate = run_worker(&b, &mut info, &queue, count, 100).await?.rate;
            println!(
                "backlog {size:>8}: process {rate:>7.0} jobs/s (c100, {count} jobs)  stats {stats_ms:.3} ms  \
                 first page {list_ms:.3} ms  first queued page {list_queued_ms:.3} ms  bytes/queued job {mem:.0}"
            );
            rows.push((rate, stats_ms, list_ms));
            for (k, v) in [
                ("process_jobs_s", rate),
                ("stats_ms", stats_ms),
                ("list_first_page_ms", list_ms),
                ("list_queued_first_page_ms", list_queued_ms),
                ("bytes_per_queued_job", mem),
            ] {
                out.insert(
                    format!("backlog{size}_{k}"),
                    serde_json::json!((v * 1000.0).round() / 1000.0),
                );
            }
            b.destroy().await?;
        }
        let (small, large) = (rows[0], rows[1]);
        println!(
            "backlog {backlog} vs 1000: process {:.2}x  stats {:.2}x  first page {:.2}x",
            large.0 / small.0,
            large.1 / small.1,
            large.2 / small.2
        );
    }
    // 5. A rate limit in force: `--rate-limit` starts per second (0 skips), `n` jobs queued.
    let per_second: u32 = arg("--rate-limit", "5000").parse()?;
    if per_second > 0 {
        let queue = format!("bench-rate-{}", std::process::id());
        let b = backend(&url, &queue).await?;
        prefill(&b, n).await?;
        let limit = queue_core::RateLimit::new(per_second, Duration::from_secs(1))?;
        b.set_rate_limit(Some(limit)).await?;
        let starts = rate_limited_starts(&b, &queue, n).await?;
        b.destroy().await?;
        let (first, last) = (starts[0], starts[starts.len() - 1]);
        // The guarantee: at most `per_second` starts in any 1 s window (claim times on the
        // Redis clock, as the limit counts them).
        let mut busiest = 0;
        let mut lo = 0;
        for hi in 0..starts.len() {
            while starts[hi] - starts[lo] >= 1.0 {
                lo += 1;
            }
            busiest = busiest.max(hi - lo + 1);
        }
        // The rate held: starts per window over the whole windows of the run.
        let windows = (last - first).floor().max(1.0);
        let held = starts.iter().filter(|t| **t - first < windows).count() as f64 / windows;
        println!(
            "rate limit {per_second}/s: {held:.0} starts/s held over {windows:.0} windows \
             ({:.3}x the limit), busiest 1 s window {busiest} starts",
            held / f64::from(per_second)
        );
        out.insert("rate_limit_per_s".into(), serde_json::json!(per_second));
        out.insert(
            "rate_limit_held_per_s".into(),
            serde_json::json!(held.round()),
        );
        out.insert(
            "rate_limit_busiest_window".into(),
            serde_json::json!(busiest),
        );
    }
    // 6. Groups: `n` jobs spread round-robin over G groups (`--groups`, default 1 and
    // 10,000; empty skips), processed at concurrency 100, next to the same without groups.
    let groups = arg("--groups", "1,10000");
    for g in groups.split(',').filter(|g| !g.is_empty()) {
        let g: usize = g.trim().parse().context("--groups: a list of numbers")?;
        let queue = format!("bench-groups-{g}-{}", std::process::id());
        let b = backend(&url, &queue).await?;
        prefill_with(&b, n, |i| noop(i).group(format!("publisher-{}", i % g))).await?;
        let Processed { rate, cmds, cpu_us } = run_worker(&b, &mut info, &queue, n, 100).await?;
        b.destroy().await?;
        let plain = out
            .get("c100_process_jobs_s")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN);
        println!(
            "{g:>6} groups: process {rate:>7.0} jobs/s (c100, {:.2}x without groups)  \
             cmds/processed job {cmds:.1}  redis cpu/processed job {cpu_us:.1} µs",
            rate / plain
        );
        out.insert(
            format!("groups{g}_process_jobs_s"),
            serde_json::json!(rate.round()),
        );
        out.insert(
            format!("groups{g}_redis_cpu_us_per_processed_job"),
            serde_json::json!((cpu_us * 10.0).round() / 10.0),
        );
    }
    // 7. Flows: `--flows F` flows of 1 parent + 100 children (default 100; 0 skips), each
    // enqueued in one call, then processed at concurrency 100: the cost per job of a flow
    // next to the same number of plain jobs.
    let flows: usize = arg("--flows", "100").parse()?;
    if flows > 0 {
        let queue = format!("bench-flows-{}", std::process::id());
        let b = backend(&url, &queue).await?;
        let jobs = flows * 101;
        let (cpu0, cmd0) = (info.cpu().await?, info.commands().await?);
        let mem0 = info.memory().await?;
        let t = Instant::now();
        for f in 0..flows {
            let children = (0..100).map(|c| queue_core::Flow::new(noop(f * 100 + c)));
            b.enqueue_flow(queue_core::Flow::new(noop(f)).children(children))
                .await?;
        }
        let enqueue = jobs as f64 / t.elapsed().as_secs_f64();
        let cmd_enq = (info.commands().await? - cmd0 - 2.0) / jobs as f64;
        let cpu_enq = (info.cpu().await? - cpu0) / jobs as f64 * 1e6;
        let mem_queued = (info.memory().await? - mem0) / jobs as f64;
        let Processed { rate, cmds, cpu_us } = run_worker(&b, &mut info, &queue, jobs, 100).await?;
        let mem_done = (info.memory().await? - mem0) / jobs as f64;
        b.destroy().await?;
        let plain_cpu = out
            .get("c100_redis_cpu_us_per_processed_job")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN);
        println!(
            "flows of 1+100 ({flows} flows, {jobs} jobs): enqueue {enqueue:>7.0} jobs/s              (cmds/job {cmd_enq:.2}, redis cpu/job {cpu_enq:.1} µs)  process {rate:>7.0} jobs/s              (c100, cmds/job {cmds:.1}, redis cpu/job {cpu_us:.1} µs, {:.2}x a plain job)               bytes/queued job {mem_queued:.0}  bytes/finished job {mem_done:.0}",
            cpu_us / plain_cpu
        );
        for (k, v) in [
            ("enqueue_jobs_s", enqueue),
            ("cmds_per_enqueued_job", cmd_enq),
            ("redis_cpu_us_per_enqueued_job", cpu_enq),
            ("process_jobs_s", rate),
            ("cmds_per_processed_job", cmds),
            ("redis_cpu_us_per_processed_job", cpu_us),
            ("bytes_per_queued_job", mem_queued),
            ("bytes_per_finished_job", mem_done),
        ] {
            out.insert(
                format!("flow101_{k}"),
                serde_json::json!((v * 10.0).round() / 10.0),
            );
        }
    }
    batch::phase(&url, &mut info, &mut out).await?;
    targets(&out, &arg("--peer", ""))?;
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}

/// Enqueues `count` no-op jobs in batches of 500, four batches in flight.
async fn prefill(b: &RedisBackend, count: usize) -> anyhow::Result<()> {
    prefill_with(b, count, noop).await
}

/// Enqueues `count` jobs made by `job` in batches of 500, four batches in flight.
async fn prefill_with(
    b: &RedisBackend,
    count: usize,
    job: impl Fn(usize) -> NewJob,
) -> anyhow::Result<()> {
    let batches: Vec<Vec<NewJob>> = (0..count)
        .collect::<Vec<_>>()
        .chunks(500)
        .map(|c| c.iter().map(|&i| job(i)).collect())
        .collect();
    let mut calls = futures_util::stream::iter(batches)
        .map(|batch| {
            let b = b.clone();
            async move { b.enqueue_many(batch).await }
        })
        .buffer_unordered(4);
    while let Some(results) = calls.next().await {
        for r in results? {
            r?;
        }
    }
    Ok(())
}

/// What one worker run measured.
struct Processed {
    /// Jobs per second from the first job on.
    rate: f64,
    /// Redis commands per job (worker heartbeats and maintenance included; the
    /// benchmark's own polling and INFO calls not).
    cmds: f64,
    /// Redis CPU µs per job.
    cpu_us: f64,
}

/// Runs a worker with a no-op handler until `count` jobs completed.
async fn run_worker(
    b: &RedisBackend,
    info: &mut Info,
    queue: &str,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<Processed> {
    run_worker_with(b, info, queue, count, concurrency, |builder, first| {
        builder.register("noop", move |_: serde_json::Value, _ctx| {
            first.get_or_init(Instant::now);
            async { Ok(()) }
        })
    })
    .await
}

/// When a run's first job started.
type First = Arc<std::sync::OnceLock<Instant>>;

/// Runs a worker with the handlers `handlers` registers until `count` jobs completed; the
/// handlers note when the first job started in the `First` they are given.
async fn run_worker_with(
    b: &RedisBackend,
    info: &mut Info,
    queue: &str,
    count: usize,
    concurrency: usize,
    handlers: impl FnOnce(WorkerBuilder, First) -> WorkerBuilder,
) -> anyhow::Result<Processed> {
    let (cpu0, cmd0) = (info.cpu().await?, info.commands().await?);
    let first: First = Arc::default();
    let stop = CancellationToken::new();
    let worker = handlers(
        Worker::builder(Arc::new(b.clone())).concurrency(concurrency),
        Arc::clone(&first),
    )
    .build()?;
    let run = tokio::spawn(worker.run(stop.clone()));
    let done_key = format!("dcs:{{{queue}}}:st:completed");
    let mut polls = 0.0;
    let end = loop {
        polls += 1.0;
        if info.zcard(&done_key).await? >= count {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let n = count as f64;
    let cmds = (info.commands().await? - cmd0 - polls - 2.0) / n;
    let cpu_us = (info.cpu().await? - cpu0) / n * 1e6;
    stop.cancel();
    run.await??;
    let rate = n / (end - *first.get().context("no job ran")?).as_secs_f64();
    Ok(Processed { rate, cmds, cpu_us })
}

/// The median time of `runs` calls, in ms.
async fn median_ms<F, Fut>(runs: usize, mut call: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = queue_core::Result<()>>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        call().await?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn fastrand_u64() -> u64 {
    use std::{
        cell::Cell,
        hash::{BuildHasher, RandomState},
    };
    thread_local!(static SEED: Cell<u64> = Cell::new(RandomState::new().hash_one(0u8) | 1));
    SEED.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}
