//! A minimal worker that shuts down cleanly in a container: on SIGTERM (or SIGINT) it stops
//! fetching, lets running books finish within `DCS_QUEUE_SHUTDOWN_GRACE_SECONDS`, hands
//! the rest back without using an attempt, and exits 0.
//!
//! ```sh
//! export DCS_REDIS_URL=redis://127.0.0.1:6379
//! cargo run -p queue-examples --example worker
//! ```
//!
//! In a container, run the binary as PID 1 (or under `tini`) so SIGTERM reaches it, and give
//! the orchestrator a stop timeout above the grace period (Kubernetes:
//! `terminationGracePeriodSeconds`).

#[path = "book.rs"]
mod book;

use std::time::Duration;

use book::ProcessBook;
use dcs_queue::prelude::*;
use tracing::info;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let backend = std::sync::Arc::new(RedisBackend::from_env().await?);
    let worker = Worker::builder(backend)
        .config(WorkerConfig::from_env()?)
        .handle(|book: ProcessBook, ctx: JobContext| async move {
            let stages = ctx.stages(book.stages().expect("declared on ProcessBook"));
            for stage in ["read", "summarize", "index"] {
                stages.start(stage).await;
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(book.stage_ms)) => {}
                    () = ctx.cancelled() => return Err(JobError::permanent("cancelled")),
                }
                stages.complete(stage).await;
            }
            info!(book = %book.book_id, title = %book.title, "processed");
            Ok(())
        })
        .build()?;
    info!(worker = %worker.id(), "running until SIGTERM or SIGINT");
    let report = worker.run_until_signal().await?;
    info!(?report, "stopped");
    Ok(())
}
