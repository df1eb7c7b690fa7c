//! The partitions phase (`--partitions 1,4`): the same no-op jobs through a queue of P
//! partitions, per P: processed jobs/s with one worker of concurrency 100, and each
//! master's Redis CPU per processed job. On one server (`--url`) it shows what
//! partitioning costs; on a cluster (`--cluster redis://a,redis://b,...`, masters only) it
//! shows how the load spreads: the busiest master's CPU per job against a one-partition
//! queue's.
//!
//! ```text
//! # three private masters (cluster mode), then:
//! cargo run --release -p queue-examples --example bench_redis -- \
//!     --partitions 1,3 --cluster redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103
//! ```

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use queue_core::{JobStore, QueueConfig};
use queue_redis::{PartitionedBackend, RedisBackend};
use queue_worker::{CancellationToken, Worker};

use super::{Info, arg, noop};

/// One run: jobs/s, and per master its Redis CPU µs per processed job.
struct Run {
    rate: f64,
    cpu_us: Vec<f64>,
}

/// Runs the phase when `--partitions` is given; answers whether it ran.
pub(crate) async fn phase(
    out: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<bool> {
    let list = arg("--partitions", "");
    if list.is_empty() {
        return Ok(false);
    }
    let n: usize = arg("--n", "20000").parse()?;
    let cluster = arg("--cluster", "");
    let url = if cluster.is_empty() {
        arg("--url", "redis://127.0.0.1:6399")
    } else {
        cluster.clone()
    };
    let nodes: Vec<String> = url.split(',').map(str::to_owned).collect();
    let mut infos = Vec::new();
    for node in &nodes {
        let client = redis::Client::open(node.as_str())?;
        infos.push(Info(client.get_connection_manager().await?));
    }
    println!(
        "partitions: {n} no-op jobs, one worker of concurrency 100, on {} master(s)",
        nodes.len()
    );
    let mut base: Option<f64> = None;
    for p in list.split(',') {
        let p: u32 = p
            .trim()
            .parse()
            .context("--partitions: a list of numbers")?;
        let run = run(&url, p, n, &mut infos).await?;
        let busiest = run.cpu_us.iter().copied().fold(0.0, f64::max);
        let total: f64 = run.cpu_us.iter().sum();
        let one = *base.get_or_insert(busiest);
        let per: Vec<String> = run.cpu_us.iter().map(|c| format!("{c:.1}")).collect();
        println!(
            "P={p:<2} processed {:>7.0} jobs/s  redis cpu/processed job per master [{}] µs  \
             busiest {busiest:.1} µs ({:.2}x P={} busiest)  all masters {total:.1} µs",
            run.rate,
            per.join(", "),
            busiest / one,
            list.split(',').next().unwrap_or("1").trim(),
        );
        out.insert(format!("partitions{p}_processed_per_sec"), json(run.rate));
        out.insert(
            format!("partitions{p}_busiest_master_cpu_us_per_job"),
            json(busiest),
        );
        out.insert(
            format!("partitions{p}_all_masters_cpu_us_per_job"),
            json(total),
        );
    }
    Ok(true)
}

fn json(v: f64) -> serde_json::Value {
    serde_json::json!((v * 10.0).round() / 10.0)
}

async fn run(url: &str, p: u32, n: usize, infos: &mut [Info]) -> anyhow::Result<Run> {
    let queue = format!("bench-part{p}-{}", std::process::id());
    let cfg = QueueConfig::builder()
        .redis_url(url)?
        .queue_name(&queue)
        .build()?;
    let plain = RedisBackend::connect(&cfg).await?;
    let b: PartitionedBackend = plain.clone().partitioned(p.max(1)).await?;
    // P = 0: the same queue through the unpartitioned backend, for reference.
    let backend: queue_core::SharedBackend = if p == 0 {
        Arc::new(plain)
    } else {
        Arc::new(b.clone())
    };
    for start in (0..n).step_by(1000) {
        let jobs = (start..n.min(start + 1000)).map(noop).collect();
        for r in b.enqueue_many(jobs).await? {
            r?;
        }
    }
    let done_keys: Vec<String> = b
        .partition_tags()
        .iter()
        .map(|tag| format!("dcs:{{{tag}}}:st:completed"))
        .collect();
    let mut cpu0 = Vec::new();
    for info in infos.iter_mut() {
        cpu0.push(info.cpu().await?);
    }
    let first: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    let stop = CancellationToken::new();
    let started = Arc::clone(&first);
    let worker = Worker::builder(backend)
        .concurrency(100)
        .register("noop", move |_: serde_json::Value, _ctx| {
            started.get_or_init(Instant::now);
            async { Ok(()) }
        })
        .build()?;
    let run = tokio::spawn(worker.run(stop.clone()));
    // Which master serves each key (the others answer `MOVED`): found once.
    let mut serves = Vec::new();
    for key in &done_keys {
        let mut at = 0;
        for (i, info) in infos.iter_mut().enumerate() {
            if info.zcard(key).await.is_ok() {
                at = i;
                break;
            }
        }
        serves.push(at);
    }
    let end = loop {
        let mut done = 0;
        for (key, at) in done_keys.iter().zip(&serves) {
            done += infos[*at].zcard(key).await.unwrap_or(0);
        }
        if done >= n {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut cpu_us = Vec::new();
    for (info, before) in infos.iter_mut().zip(cpu0) {
        cpu_us.push((info.cpu().await? - before) / n as f64 * 1e6);
    }
    stop.cancel();
    run.await??;
    let rate = n as f64 / (end - *first.get().context("no job ran")?).as_secs_f64();
    b.destroy().await?;
    Ok(Run { rate, cpu_us })
}
