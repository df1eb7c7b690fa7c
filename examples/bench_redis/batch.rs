//! The batch phase (`--batch N`, default 10,000 jobs; 0 skips it): handlers whose call
//! costs 1 ms (`--call-ms`) on a downstream that serves one call at a time (`--downstream`,
//! default 1: one connection to a bulk endpoint, a single-writer store), run one job per
//! call and in batches of `--batch-size` (default 100), both at concurrency
//! `--batch-size`. It prints the jobs/s of each and their ratio (issue 29's target: >= 5x).
//!
//! The downstream is what makes batching pay: with calls that run in parallel without
//! limit, single-job handlers at concurrency 100 would reach the same rate as batches.

use std::sync::atomic::AtomicU64;

use queue_worker::{Batch, BatchJob, JobError};
use tokio::sync::Semaphore;

use super::*;

/// A downstream that takes `lanes` calls at once, each `call` long, and counts them.
struct Downstream {
    lanes: Semaphore,
    call: Duration,
    calls: AtomicU64,
    /// The calls' time in µs, each from its lane's start (the sleep overshoots 1 ms).
    busy_us: AtomicU64,
}

impl Downstream {
    async fn call(&self) {
        let _lane = self.lanes.acquire().await.expect("never closed");
        let t = Instant::now();
        tokio::time::sleep(self.call).await;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let busy = t.elapsed().as_micros() as u64;
        self.busy_us.fetch_add(busy, Ordering::Relaxed);
    }
}

pub(crate) async fn phase(
    url: &str,
    info: &mut Info,
    out: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    let n: usize = arg("--batch", "10000").parse()?;
    if n == 0 {
        return Ok(());
    }
    let size: usize = arg("--batch-size", "100").parse()?;
    let call_ms: u64 = arg("--call-ms", "1").parse()?;
    let lanes: usize = arg("--downstream", "1").parse()?;
    let mut rates = Vec::new();
    for batched in [false, true] {
        let queue = format!("bench-batch-{batched}-{}", std::process::id());
        let b = backend(url, &queue).await?;
        let jobs = if batched { n } else { n / 10 };
        prefill(&b, jobs).await?;
        let downstream = Arc::new(Downstream {
            lanes: Semaphore::new(lanes),
            call: Duration::from_millis(call_ms),
            calls: AtomicU64::new(0),
            busy_us: AtomicU64::new(0),
        });
        let d = Arc::clone(&downstream);
        let processed = run_worker_with(&b, info, &queue, jobs, size, move |builder, first| {
            if batched {
                builder.register_batch(
                    "noop",
                    Batch::of(size),
                    move |jobs: Vec<BatchJob<serde_json::Value>>| {
                        first.get_or_init(Instant::now);
                        let d = Arc::clone(&d);
                        async move {
                            d.call().await;
                            jobs.iter()
                                .map(|_| Ok::<_, JobError>(()))
                                .collect::<Vec<_>>()
                        }
                    },
                )
            } else {
                builder.register("noop", move |_: serde_json::Value, _ctx| {
                    first.get_or_init(Instant::now);
                    let d = Arc::clone(&d);
                    async move {
                        d.call().await;
                        Ok::<_, JobError>(())
                    }
                })
            }
        })
        .await?;
        let calls = downstream.calls.load(Ordering::Relaxed) as f64;
        let call_time = downstream.busy_us.load(Ordering::Relaxed) as f64 / 1e3 / calls;
        b.destroy().await?;
        let label = if batched {
            "batches"
        } else {
            "one job per call"
        };
        println!(
            "batch phase, {label:<16} ({jobs} jobs, c{size}, {call_ms} ms calls, {lanes} at once): process {:>7.0} jobs/s  ({:.1} jobs per call, a call took {call_time:.2} ms, redis cpu/job {:.1} µs)",
            processed.rate,
            jobs as f64 / calls,
            processed.cpu_us
        );
        let key = if batched { "batch" } else { "single" };
        out.insert(
            format!("batch_{key}_jobs_s"),
            serde_json::json!(processed.rate.round()),
        );
        rates.push(processed.rate);
    }
    let ratio = rates[1] / rates[0];
    out.insert(
        "batch_over_single".into(),
        serde_json::json!((ratio * 100.0).round() / 100.0),
    );
    println!(
        "batch phase: batches of {size} process {ratio:.1}x the jobs/s of one job per call (target >= 5x: {})",
        if ratio >= 5.0 { "met" } else { "not met" }
    );
    Ok(())
}
