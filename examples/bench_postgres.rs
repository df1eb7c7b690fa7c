//! No-op jobs through the Postgres backend, measured like `../shared/bench/peers-pg`
//! measures River, BullMQ 6 on Postgres and pg-limits, so the figures sit side by side.
//!
//! ```text
//! cargo run --release -p queue-examples --example bench_postgres -- \
//!     --url postgres://postgres@127.0.0.1:5432/postgres --n 20000
//! ```
//!
//! Each phase runs in a schema of its own (`bench_<pid>_<phase>`), dropped afterwards.
//! Phases: enqueue with 50 in flight and in batches of 100; processing at concurrency 10
//! and 100 with records retained (jobs/s, the jobs table's bytes per finished job,
//! commits and database CPU per processed job: the backends' CPU time from
//! `/proc/<pid>/schedstat`, as the peers measure it, so the server must run on this
//! machine);
//! enqueue-to-start with an idle worker (p50, p99). With `--horizon`: processing while an
//! open transaction holds the xmin horizon, against without; with `--backlog N`:
//! processing and `stats` above N queued jobs, against above 1,000. Prints a table and
//! one JSON line. `--extra-only` runs only those two. `--claim-ahead-us` sets the workers'
//! budget for jobs claimed ahead (default 1000, the worker's; 0 turns it off).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use queue_core::{NewJob, QueueConfig};
use queue_postgres::{PostgresBackend, PostgresConfig, sqlx};
use queue_worker::{CancellationToken, Worker};
use tokio::sync::mpsc;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn noop(i: usize) -> NewJob {
    NewJob::new("noop", &i).expect("encodes")
}

struct Bench {
    url: String,
    phase: String,
}

impl Bench {
    fn schema(&self) -> String {
        format!("bench_{}_{}", std::process::id(), self.phase)
    }

    async fn backend(&self) -> anyhow::Result<PostgresBackend> {
        let cfg = QueueConfig::builder().queue_name("bench").build()?;
        Ok(
            PostgresBackend::builder(PostgresConfig::new(&self.url)?.schema(self.schema())?)
                .queue(cfg)
                .max_connections(40)
                .migrate(true)
                .connect()
                .await?,
        )
    }

    async fn drop_schema(&self, b: &PostgresBackend) -> anyhow::Result<()> {
        sqlx::query(&format!("DROP SCHEMA \"{}\" CASCADE", self.schema()))
            .execute(b.pool())
            .await?;
        Ok(())
    }
}

/// Transactions committed in the database so far (`pg_stat_database`). A backend reports
/// its own lazily (up to 10 s late when idle) and at the latest when it exits: read this
/// once the pools whose work it measures are closed.
async fn commits(url: &str) -> anyhow::Result<i64> {
    use sqlx::Connection;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let n = sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    Ok(n)
}

/// CPU time (ns) of each backend connected to the database but `mon`'s own, from
/// `/proc/<pid>/schedstat` (the server runs on this machine; empty when it cannot be read).
async fn backend_cpu(
    mon: &mut sqlx::PgConnection,
) -> anyhow::Result<std::collections::HashMap<i32, u64>> {
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut *mon)
    .await?;
    Ok(pids
        .into_iter()
        .filter_map(|pid| {
            let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
            Some((pid, s.split(' ').next()?.parse().ok()?))
        })
        .collect())
}

/// Runs a worker of `concurrency` no-op handlers on `b` until `n` jobs have run, then stops
/// it (its last outcomes stored): jobs/s. Counted by the handlers, not by polling `stats`
/// (load of its own): the work measured is the worker's alone.
async fn drain(b: &PostgresBackend, n: usize, concurrency: usize) -> anyhow::Result<f64> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let stop = CancellationToken::new();
    let done = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&done);
    // The worker's budget for jobs claimed ahead (`--claim-ahead-us`, default its 1 ms; 0
    // claims none ahead).
    let ahead = Duration::from_micros(arg("--claim-ahead-us", "1000").parse()?);
    let worker = Worker::builder(Arc::new(b.clone()))
        .concurrency(concurrency)
        .claim_ahead(ahead)
        .register("noop", move |_: serde_json::Value, _ctx| {
            counted.fetch_add(1, Ordering::Relaxed);
            async { Ok(()) }
        })
        .build()?;
    let t = Instant::now();
    let run = tokio::spawn(worker.run(stop.clone()));
    while done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    run.await??;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// What processing `n` jobs measured.
struct Processed {
    rate: f64,
    bytes_per_job: f64,
    commits_per_job: f64,
    db_cpu_us_per_job: f64,
}

/// Processes `n` queued no-op jobs at `concurrency`: jobs/s, bytes of the jobs table per
/// finished job, commits and database CPU (its backends') per processed job.
async fn process(url: &str, n: usize, concurrency: usize) -> anyhow::Result<Processed> {
    use sqlx::Connection;
    let bench = Bench {
        url: url.to_owned(),
        phase: format!("c{concurrency}"),
    };
    let filler = bench.backend().await?;
    for start in (0..n).step_by(1000) {
        let batch: Vec<NewJob> = (start..(start + 1000).min(n)).map(noop).collect();
        for r in filler.enqueue_many(batch).await? {
            r?;
        }
    }
    filler.pool().close().await;
    let before = commits(url).await?;
    let mut mon = sqlx::PgConnection::connect(url).await?;
    let b = bench.backend().await?;
    let cpu_before = backend_cpu(&mut mon).await?;
    let rate = drain(&b, n, concurrency).await?;
    let cpu_after = backend_cpu(&mut mon).await?;
    let cpu_ns: u64 = cpu_after
        .iter()
        .map(|(pid, ns)| ns.saturating_sub(cpu_before.get(pid).copied().unwrap_or(0)))
        .sum();
    mon.close().await?;
    b.pool().close().await;
    // The monitor's connection is a transaction or two.
    let commits_per_job = (commits(url).await? - before) as f64 / n as f64;
    let b = bench.backend().await?;
    let completed = b.stats().await?.completed as usize;
    anyhow::ensure!(completed == n, "{completed} of {n} jobs completed");
    let bytes: i64 = sqlx::query_scalar(&format!(
        "SELECT pg_total_relation_size('\"{}\".jobs')",
        bench.schema()
    ))
    .fetch_one(b.pool())
    .await?;
    bench.drop_schema(&b).await?;
    Ok(Processed {
        rate,
        bytes_per_job: bytes as f64 / n as f64,
        commits_per_job,
        db_cpu_us_per_job: cpu_ns as f64 / 1000.0 / n as f64,
    })
}

/// Processes `n` no-op jobs at concurrency 10 above `backlog` low-priority jobs that stay
/// queued, while another session holds the xmin horizon when `horizon`: jobs/s, and the
/// median time of `stats` at that depth (ms).
async fn steady(url: &str, n: usize, backlog: usize, horizon: bool) -> anyhow::Result<(f64, f64)> {
    use sqlx::Connection;
    let bench = Bench {
        url: url.to_owned(),
        phase: format!("s{backlog}{}", if horizon { "h" } else { "" }),
    };
    let b = bench.backend().await?;
    for start in (0..backlog).step_by(1000) {
        let batch: Vec<NewJob> = (start..(start + 1000).min(backlog))
            .map(|i| noop(i).priority(queue_core::Priority::Low))
            .collect();
        for r in b.enqueue_many(batch).await? {
            r?;
        }
    }
    for start in (0..n).step_by(1000) {
        let batch: Vec<NewJob> = (start..(start + 1000).min(n)).map(noop).collect();
        for r in b.enqueue_many(batch).await? {
            r?;
        }
    }
    // A transaction that keeps its snapshot: no row version it could see is removed.
    let mut holder = sqlx::PgConnection::connect(url).await?;
    if horizon {
        sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM pg_class")
            .execute(&mut holder)
            .await?;
    }
    let mut took = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        b.stats().await?;
        took.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    took.sort_by(f64::total_cmp);
    let rate = drain(&b, n, 10).await?;
    if horizon {
        sqlx::raw_sql("ROLLBACK").execute(&mut holder).await?;
    }
    holder.close().await?;
    bench.drop_schema(&b).await?;
    b.pool().close().await;
    Ok((rate, took[took.len() / 2]))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = arg("--url", "postgres://postgres@127.0.0.1:5432/postgres");
    let n: usize = arg("--n", "20000").parse()?;
    let samples: usize = arg("--samples", "300").parse()?;
    let mut out = serde_json::Map::new();
    if !std::env::args().any(|a| a == "--extra-only") {
        standard(&url, n, samples, &mut out).await?;
    }

    // Optional: processing with the xmin horizon held, and above a deep backlog.
    if std::env::args().any(|a| a == "--horizon") {
        let (free, _) = steady(&url, n, 0, false).await?;
        let (held, _) = steady(&url, n, 0, true).await?;
        println!(
            "horizon held by an open transaction: {held:.0} jobs/s against {free:.0} without ({:.2}x)",
            held / free
        );
        out.insert(
            "horizon_ratio".into(),
            serde_json::json!((held / free * 100.0).round() / 100.0),
        );
    }
    let deep: usize = arg("--backlog", "0").parse()?;
    if deep > 0 {
        let (small_rate, small_stats) = steady(&url, n, 1000, false).await?;
        let (deep_rate, deep_stats) = steady(&url, n, deep, false).await?;
        println!(
            "backlog {deep} against 1000: processing {deep_rate:.0} against {small_rate:.0} jobs/s ({:.2}x), stats {deep_stats:.2} against {small_stats:.2} ms",
            deep_rate / small_rate
        );
        out.insert(
            "backlog_rate_ratio".into(),
            serde_json::json!((deep_rate / small_rate * 100.0).round() / 100.0),
        );
        out.insert(
            "backlog_stats_ms".into(),
            serde_json::json!([small_stats, deep_stats]),
        );
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}

/// The phases every run has: enqueue, processing at concurrency 10 and 100, pickup.
async fn standard(
    url: &str,
    n: usize,
    samples: usize,
    out: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    let url = url.to_owned();
    // Enqueue: 50 in flight, then batches of 100.

    let bench = Bench {
        url: url.clone(),
        phase: "enq".into(),
    };
    let b = bench.backend().await?;
    let t = Instant::now();
    futures_util::stream::iter(0..n)
        .for_each_concurrent(50, |i| {
            let b = b.clone();
            async move {
                b.enqueue(noop(i)).await.expect("enqueue");
            }
        })
        .await;
    let conc = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for start in (0..n).step_by(100) {
        let batch: Vec<NewJob> = (start..(start + 100).min(n)).map(noop).collect();
        for r in b.enqueue_many(batch).await? {
            r?;
        }
    }
    let bulk = n as f64 / t.elapsed().as_secs_f64();
    bench.drop_schema(&b).await?;
    // Its connections report their commits when they close, not in the next phase.
    b.pool().close().await;
    println!("enqueue: {conc:.0}/s with 50 in flight, {bulk:.0}/s in batches of 100");
    out.insert(
        "enqueue_conc50_jobs_s".into(),
        serde_json::json!(conc.round()),
    );
    out.insert(
        "enqueue_bulk100_jobs_s".into(),
        serde_json::json!(bulk.round()),
    );

    // Processing, records retained.
    for c in [10, 100] {
        let p = process(&url, n, c).await?;
        let (rate, bytes, per_job, cpu) = (
            p.rate,
            p.bytes_per_job,
            p.commits_per_job,
            p.db_cpu_us_per_job,
        );
        println!(
            "processed at concurrency {c}: {rate:.0} jobs/s, {bytes:.0} B of jobs table per finished job, {per_job:.3} commits and {cpu:.0} us of database CPU per job"
        );
        out.insert(
            format!("commits_per_job_c{c}"),
            serde_json::json!((per_job * 1000.0).round() / 1000.0),
        );
        out.insert(
            format!("db_cpu_us_per_job_c{c}"),
            serde_json::json!((cpu * 10.0).round() / 10.0),
        );
        out.insert(
            format!("processed_c{c}_jobs_s"),
            serde_json::json!(rate.round()),
        );
        out.insert(
            format!("bytes_per_job_c{c}"),
            serde_json::json!(bytes.round()),
        );
    }

    // Enqueue-to-start with an idle worker.
    let bench = Bench {
        url: url.clone(),
        phase: "lat".into(),
    };
    let b = bench.backend().await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let stop = CancellationToken::new();
    let worker = Worker::builder(Arc::new(b.clone()))
        .concurrency(10)
        .register("noop", move |_: serde_json::Value, _ctx| {
            let _ = tx.send(Instant::now());
            async { Ok(()) }
        })
        .build()?;
    let run = tokio::spawn(worker.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut lat = Vec::with_capacity(samples);
    for i in 0..samples {
        tokio::time::sleep(Duration::from_millis(2 + (i as u64 * 7) % 15)).await;
        let t = Instant::now();
        b.enqueue(noop(i)).await?;
        let started = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await?
            .expect("the worker runs");
        lat.push(started.duration_since(t).as_secs_f64() * 1000.0);
    }
    stop.cancel();
    run.await??;
    bench.drop_schema(&b).await?;
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "enqueue to start, idle worker: p50 {:.2} ms, p99 {:.2} ms",
        q(0.5),
        q(0.99)
    );
    out.insert(
        "pickup_p50_ms".into(),
        serde_json::json!((q(0.5) * 100.0).round() / 100.0),
    );
    out.insert(
        "pickup_p99_ms".into(),
        serde_json::json!((q(0.99) * 100.0).round() / 100.0),
    );
    Ok(())
}
