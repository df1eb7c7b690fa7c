//! Throughput and latency of no-op jobs.
//!
//! ```text
//! cargo run --release -p queue-examples --example bench                 # memory backend
//! cargo run --release -p queue-examples --example bench -- --jobs 50000
//! cargo run --release -p queue-examples --example bench -- --backend-only   # lifecycles only
//! ```
//!
//! Prints: backend lifecycles/s (enqueue one by one, claim 100 and end them in one
//! `finish_many`, with no worker), jobs/s through
//! the worker at concurrency 1, 10 and 100, and enqueue-to-start latency (p50/p99) with
//! an idle worker.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use queue_core::backend::{ClaimRequest, Ending, Outcome};
use queue_core::{NewJob, Payload, QueueConfig, SharedBackend, WorkerId};
use queue_memory::MemoryBackend;
use queue_worker::{CancellationToken, Worker};

struct Args {
    jobs: usize,
    samples: usize,
    backend_only: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut out = Args {
        jobs: 200_000,
        samples: 1_000,
        backend_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--backend-only" {
            out.backend_only = true;
            continue;
        }
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--jobs" => out.jobs = value.parse()?,
            "--samples" => out.samples = value.parse()?,
            other => bail!("unknown flag {other} (expected --jobs N, --samples N, --backend-only)"),
        }
    }
    Ok(out)
}

fn noop(n: usize) -> NewJob {
    NewJob::with_payload("noop", Payload::from_trusted(n.to_string()))
}

fn fresh() -> SharedBackend {
    Arc::new(MemoryBackend::with_config(QueueConfig::default()))
}

/// Enqueue, claim and finish directly on the backend, no worker.
async fn lifecycles(backend: SharedBackend, n: usize) -> anyhow::Result<(f64, f64, f64)> {
    let t = Instant::now();
    for i in 0..n {
        backend.enqueue(noop(i)).await?;
    }
    let enqueue = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut done = 0;
    while done < n {
        let req = ClaimRequest::new(WorkerId::new("bench"), 100, Duration::from_secs(30));
        let leases = backend.fetch(&req, Duration::ZERO).await?;
        if leases.is_empty() {
            bail!("queue ran dry after {done} jobs");
        }
        // Ended together, as the worker reports them.
        let endings: Vec<Ending> = leases
            .iter()
            .map(|lease| Ending {
                lease: lease.to_ref(),
                outcome: Outcome::Completed { result: None },
            })
            .collect();
        done += endings.len();
        for status in backend.finish_many(endings, None).await?.statuses {
            status?;
        }
    }
    let claim_finish = n as f64 / t.elapsed().as_secs_f64();
    let full = 1.0 / (1.0 / enqueue + 1.0 / claim_finish);
    Ok((enqueue, claim_finish, full))
}

/// `n` queued no-op jobs drained by one worker at `concurrency`.
async fn through_worker(
    backend: SharedBackend,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let batch: Vec<NewJob> = (0..n).map(noop).collect();
    for chunk in batch.chunks(1000) {
        for r in backend.enqueue_many(chunk.to_vec()).await? {
            r?;
        }
    }
    let counter = Arc::new(AtomicUsize::new(0));
    let c2 = Arc::clone(&counter);
    let stop = CancellationToken::new();
    let worker = Worker::builder(backend.clone())
        .concurrency(concurrency)
        .register("noop", move |_: serde_json::Value, _ctx| {
            c2.fetch_add(1, Ordering::Relaxed);
            async { Ok(()) }
        })
        .build()?;
    let t = Instant::now();
    let run = tokio::spawn(worker.run(stop.clone()));
    loop {
        if backend.stats().await?.totals.completed as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    stop.cancel();
    run.await??;
    assert_eq!(counter.load(Ordering::Relaxed), n);
    Ok(rate)
}

/// Enqueue-to-handler-start latency with an idle worker, one job at a time.
async fn latency(backend: SharedBackend, samples: usize) -> anyhow::Result<(Duration, Duration)> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let stop = CancellationToken::new();
    let worker = Worker::builder(backend.clone())
        .concurrency(10)
        .fetch_wait(Duration::from_secs(5))
        .register("noop", move |n: usize, _ctx| {
            let _ = tx.send((n, Instant::now()));
            async { Ok(()) }
        })
        .build()?;
    let run = tokio::spawn(worker.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut lat = Vec::with_capacity(samples);
    for i in 0..samples {
        let t = Instant::now();
        backend.enqueue(noop(i)).await?;
        let (n, at) = rx.recv().await.expect("worker runs");
        assert_eq!(n, i);
        lat.push(at - t);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stop.cancel();
    run.await??;
    lat.sort();
    Ok((
        lat[lat.len() / 2],
        lat[(lat.len() * 99 / 100).min(lat.len() - 1)],
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    println!(
        "backend: memory; {} jobs per measurement; {} latency samples",
        a.jobs, a.samples
    );
    println!("(median of 3 runs each)");
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(lifecycles(fresh(), a.jobs).await?);
    }
    runs.sort_by(|a, b| a.2.total_cmp(&b.2));
    let (enq, cf, full) = runs[1];
    println!(
        "backend alone  enqueue {enq:>12.0}/s  claim+finish {cf:>12.0}/s  full lifecycle {full:>12.0}/s"
    );
    if a.backend_only {
        return Ok(());
    }
    for c in [1, 10, 100] {
        let mut rates = Vec::new();
        for _ in 0..3 {
            rates.push(through_worker(fresh(), a.jobs, c).await?);
        }
        rates.sort_by(f64::total_cmp);
        println!(
            "worker         concurrency {c:>3}: {:>12.0} jobs/s",
            rates[1]
        );
    }
    let (p50, p99) = latency(fresh(), a.samples).await?;
    println!(
        "idle pickup    p50 {:>8.1} µs  p99 {:>8.1} µs",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    Ok(())
}
