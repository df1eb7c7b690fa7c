//! One worker process of the drill: the real worker runtime with handlers that record
//! every execution in the history.

use std::{path::PathBuf, sync::Arc, time::Duration};

use queue_core::{JobError, QueueConfig};
use queue_redis::RedisBackend;
use queue_worker::Worker;
use serde::{Deserialize, Serialize};

use crate::history::HistoryFile;

/// What a drill job asks its handler to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Task {
    /// How long the work takes.
    pub(crate) ms: u64,
    /// Fail (retryably) instead of completing.
    pub(crate) fail: bool,
    /// Report progress on the way.
    pub(crate) progress: bool,
}

/// The worker process's settings.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    /// Redis URL (the worker's proxy, or the cluster's nodes), or a PostgreSQL URL with
    /// `--schema`.
    #[arg(long)]
    pub(crate) url: String,
    /// The PostgreSQL schema of the queue (`pg-drill`): the worker runs on Postgres.
    #[arg(long)]
    pub(crate) schema: Option<String>,
    /// Queue name.
    #[arg(long)]
    pub(crate) queue: String,
    /// History file.
    #[arg(long)]
    pub(crate) history: PathBuf,
    /// Jobs at once.
    #[arg(long, default_value_t = 32)]
    pub(crate) concurrency: usize,
    /// Lease, ms.
    #[arg(long, default_value_t = 2000)]
    pub(crate) lease_ms: u64,
    /// Heartbeat interval, ms.
    #[arg(long, default_value_t = 500)]
    pub(crate) heartbeat_ms: u64,
    /// Where webhook deliveries may go besides public addresses (the drill's receiver
    /// listens on loopback).
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) webhook_allow: String,
}

impl WorkerArgs {
    /// The queue configuration of the drill.
    pub(crate) fn config(&self) -> anyhow::Result<QueueConfig> {
        let mut builder = QueueConfig::builder();
        if self.schema.is_none() {
            builder = builder.redis_url(&self.url)?;
        }
        Ok(builder
            .queue_name(&self.queue)
            .lease(Duration::from_millis(self.lease_ms))
            .heartbeat(Duration::from_millis(self.heartbeat_ms))
            .retry_delay(Duration::from_millis(200))
            .retry_max_delay(Duration::from_secs(2))
            .job_timeout(Duration::from_secs(30))
            .shutdown_grace(Duration::from_secs(3))
            .retention(Duration::from_secs(3600))
            .max_concurrency(self.concurrency)
            .build()?)
    }
}

/// Runs until SIGTERM (graceful) or SIGKILL (the drill's crash).
pub(crate) async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    let history = HistoryFile::open(&args.history)?;
    if let Some(schema) = &args.schema {
        let backend = loop {
            let pg = queue_postgres::PostgresConfig::new(&args.url)?.schema(schema.clone())?;
            match queue_postgres::PostgresBackend::builder(pg)
                .queue(cfg.clone())
                // Fewer connections than jobs at once: the pool runs out under load.
                .max_connections(4)
                .connect()
                .await
            {
                Ok(b) => break b,
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e.chain(), "Postgres not reachable yet");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        return work(Arc::new(backend), &cfg, &args, history).await;
    }
    let backend = loop {
        // `open`: a queue with partitions is opened whole.
        match RedisBackend::builder(&cfg)
            .response_timeout(Duration::from_secs(2))
            .open()
            .await
        {
            Ok(b) => break b,
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e.chain(), "Redis not reachable yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    work(backend, &cfg, &args, history).await
}

/// The worker on `backend` until a signal.
async fn work(
    backend: Arc<dyn queue_core::Backend>,
    cfg: &QueueConfig,
    args: &WorkerArgs,
    history: HistoryFile,
) -> anyhow::Result<()> {
    let work = history.clone();
    let worker = Worker::builder(backend)
        .config(cfg)
        .webhook_egress(queue_worker::WebhookEgress::from_list(&args.webhook_allow)?)
        .fetch_wait(Duration::from_millis(500))
        // A killed worker's claimed webhook deliveries are sent again soon.
        .delivery_lease(Duration::from_secs(12))
        .register("work", move |task: Task, ctx| {
            let history = work.clone();
            async move {
                let mut run = history.start(&ctx.job_id().to_string(), ctx.lease_token().as_str());
                let steps = if task.progress { 4 } else { 1 };
                for step in 1..=steps {
                    tokio::time::sleep(Duration::from_millis(task.ms / steps)).await;
                    if task.progress {
                        ctx.progress((step * 25) as u8, Some("working")).await;
                    }
                }
                if task.fail {
                    run.ended("failed");
                    return Err(JobError::retry("asked to fail"));
                }
                run.ended("ok");
                Ok(())
            }
        })
        .build()?;
    worker.run_until_signal().await?;
    Ok(())
}
