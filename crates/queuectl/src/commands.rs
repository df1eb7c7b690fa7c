//! One function per command, all on the library calls the other binaries use.

mod partitions;
mod schedules;
mod watch;
mod webhooks;

use schedules::schedule;
use watch::*;
use webhooks::webhook;

use std::{collections::HashMap, io::IsTerminal, sync::Arc, time::Duration};

use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use queue_core::SharedBackend;
use queue_core::{
    BulkAction, BulkActions, BulkFilter, BulkRequest, BulkStep, CancelOutcome, EventKind, Flow,
    JobId, JobStatus, JobStoreExt, ListQuery, NewJob, QueueConfig, Result,
};
use queue_postgres::{PostgresBackend, PostgresConfig};
use queue_redis::{RedisBackend, RedisConfig};
use queue_worker::Worker;
use serde_json::json;

use crate::{Cli, Command, LogFormat, ScheduleAction, WebhookAction, output};

/// What a bulk action did, for a sentence (`retried`, `cancelled`, `deleted`).
fn past(action: BulkAction) -> &'static str {
    match action {
        BulkAction::Retry => "retried",
        BulkAction::Cancel => "cancelled",
        BulkAction::Delete => "deleted",
    }
}

fn config(cli: &Cli) -> Result<QueueConfig> {
    let mut builder = QueueConfig::from_env()?.to_builder();
    if let Some(url) = &cli.redis_url {
        builder = builder.redis_url(url)?;
    }
    if let Some(queue) = &cli.queue {
        builder = builder.queue_name(queue);
    }
    builder.build()
}

pub(crate) async fn run(cli: Cli) -> Result<()> {
    let cfg = config(&cli)?;
    if let Command::Worker {
        concurrency,
        shutdown_grace,
        log_format,
    } = &cli.command
    {
        let url = cli.database_url.clone();
        return worker(cfg, url, *concurrency, *shutdown_grace, *log_format).await;
    }
    if let Command::Migrate = &cli.command {
        return migrate(&cli).await;
    }
    if let Command::Partitions { resize } = &cli.command {
        return partitions::partitions(&cli, &cfg, *resize).await;
    }
    let backend = open_backend(&cli, &cfg).await?;
    let json = cli.json;
    match cli.command {
        Command::Enqueue {
            task,
            payload,
            unique_key,
            priority,
            delay,
            max_retries,
            group,
            cost,
            debounce_ms,
            throttle_ms,
            keep_latest,
            replace_running,
            sequence,
            children,
            on_child_failure,
        } => {
            let mut job = NewJob::with_payload(task, payload);
            if let Some(ms) = debounce_ms {
                job = job.debounce(Duration::from_millis(ms));
            }
            if let Some(ms) = throttle_ms {
                job = job.throttle(Duration::from_millis(ms));
            }
            if keep_latest {
                job = job.keep_latest();
            }
            if replace_running {
                job = job.replace_running();
            }
            if let Some(name) = sequence {
                job = job.sequence(name);
            }
            if let Some(g) = group {
                job = job.group(g);
            }
            if let Some(c) = cost {
                job = job.cost(c);
            }
            if let Some(k) = unique_key {
                job = job.unique_key(k);
            }
            if let Some(p) = priority {
                job = job.priority(p);
            }
            if let Some(d) = delay {
                job = job.delay(Duration::from_secs(d));
            }
            if let Some(n) = max_retries {
                job = job.max_retries(n);
            }
            let record = if children.is_empty() {
                backend.enqueue(job).await?
            } else {
                let kids = children.into_iter().map(|(task, payload)| {
                    Flow::new(NewJob::with_payload(task, payload)).on_failure(on_child_failure)
                });
                backend.enqueue_flow(Flow::new(job).children(kids)).await?
            };
            if json {
                output::json(&record)
            } else {
                println!("{}", record.job_id)
            }
        }
        Command::Status { job_id, wait } => {
            let record = match wait {
                None => backend.get(job_id).await?,
                Some(secs) if secs.is_finite() && (0.0..=86_400.0).contains(&secs) => {
                    backend.wait(job_id, Duration::from_secs_f64(secs)).await?
                }
                Some(secs) => {
                    return Err(queue_core::Error::invalid(format!(
                        "--wait: {secs} is not a number of seconds from 0 to 86400"
                    )));
                }
            };
            if json {
                output::json(&record)
            } else {
                output::record(&record)
            }
            if wait.is_some() && !record.status.is_terminal() {
                // Waited, and the job has not finished: the record is printed, exit 7.
                use std::io::Write;
                let _ = std::io::stdout().flush();
                eprintln!(
                    "error: job {job_id} did not finish in time (it is {})",
                    record.status
                );
                std::process::exit(7);
            }
        }
        Command::List {
            status,
            unique_key,
            limit,
            cursor,
            waiting_on_children,
        } => {
            let mut query = ListQuery::new().limit(limit);
            query.status = status;
            query.unique_key = unique_key;
            query.cursor = cursor;
            query.waiting_on_children = waiting_on_children;
            let page = backend.list(&query).await?;
            if json {
                output::json(&page)
            } else {
                output::page(&page)
            }
        }
        Command::Flow { job_id, limit } => {
            if !(1..=10_000).contains(&limit) {
                return Err(queue_core::Error::invalid(format!(
                    "--limit: {limit} is not in 1..=10000"
                )));
            }
            let tree = backend.flow_tree(job_id, limit).await?;
            if json {
                output::json(&tree)
            } else {
                output::tree(&tree)
            }
        }
        Command::Cancel { job_id } => {
            let outcome = backend.cancel(job_id).await?;
            if json {
                output::json(&json!({ "job_id": job_id, "result": outcome }));
            } else {
                match outcome {
                    CancelOutcome::Cancelled => println!("{job_id} cancelled"),
                    CancelOutcome::Requested => {
                        println!("{job_id} is running: cancel requested, its worker stops it")
                    }
                }
            }
        }
        Command::Retry { job_id, priority } => {
            let record = backend.retry(job_id, priority).await?;
            if json {
                output::json(&record)
            } else {
                println!("{job_id} queued again at {} priority", record.priority)
            }
        }
        Command::Delete { job_id } => {
            let record = backend.delete(job_id).await?;
            if json {
                output::json(&record)
            } else {
                println!("{job_id} deleted (it was {})", record.status)
            }
        }
        Command::Bulk {
            action,
            status,
            task,
            unique_key_prefix,
            created_after,
            created_before,
            step,
            cursor,
            dry_run,
        } => {
            let mut filter = BulkFilter::new().created(created_after, created_before);
            filter.status = status;
            filter.task = task;
            filter.unique_key_prefix = unique_key_prefix;
            let mut req = BulkRequest::new(action, filter);
            req.limit = step;
            req.cursor = cursor;
            req.dry_run = dry_run;
            let mut total = BulkStep::default();
            loop {
                let s = backend.bulk(&req).await?;
                total.examined += s.examined;
                total.matched += s.matched;
                total.done += s.done;
                for (id, why) in &s.refused {
                    eprintln!("{id}: refused: {why}");
                }
                total.refused.extend(s.refused);
                eprintln!(
                    "{} looked at, {} matched, {} done{}",
                    total.examined,
                    total.matched,
                    total.done,
                    s.next_cursor
                        .as_deref()
                        .map(|c| format!("; resume with --cursor {c}"))
                        .unwrap_or_default()
                );
                match s.next_cursor {
                    Some(c) => req.cursor = Some(c),
                    None => break,
                }
            }
            if json {
                output::json(&json!({
                    "action": action.as_str(),
                    "dry_run": dry_run,
                    "examined": total.examined,
                    "matched": total.matched,
                    "done": total.done,
                    "refused": total.refused.iter()
                        .map(|(id, why)| json!({ "job_id": id, "error": why }))
                        .collect::<Vec<_>>(),
                }));
            } else if dry_run {
                println!("{} jobs would be {}", total.matched, past(action));
            } else {
                println!(
                    "{} jobs {}, {} refused",
                    total.done,
                    past(action),
                    total.refused.len()
                );
            }
        }
        Command::Stats => {
            let stats = backend.stats().await?;
            if json {
                output::json(&stats)
            } else {
                output::stats(&stats)
            }
        }
        Command::Pause { ref group } | Command::Resume { ref group } => {
            let pause = matches!(cli.command, Command::Pause { .. });
            let group = group.clone();
            match (&group, pause) {
                (Some(g), true) => backend.pause_group(g).await?,
                (Some(g), false) => backend.resume_group(g).await?,
                (None, true) => backend.pause().await?,
                (None, false) => backend.resume().await?,
            }
            let state = if pause { "paused" } else { "running" };
            let what = match &group {
                Some(g) => format!("{} group {g}", cfg.queue_name),
                None => cfg.queue_name.clone(),
            };
            if json {
                output::json(&json!({ "queue": cfg.queue_name, "group": group, "state": state }))
            } else {
                println!("{what}: {state}")
            }
        }
        Command::Groups { limit } => {
            let list = backend.groups(limit).await?;
            if json {
                output::json(&list)
            } else {
                output::groups(&list)
            }
        }
        Command::Group {
            name,
            concurrency,
            unlimited,
            weight,
            rate,
            per,
            no_rate,
        } => {
            if concurrency.is_some() || unlimited {
                backend.set_group_concurrency(&name, concurrency).await?;
            }
            if let Some(w) = weight {
                backend
                    .set_group_weight(&name, (w != 1).then_some(w))
                    .await?;
            }
            if let Some(max) = rate {
                if !(per.is_finite() && per > 0.0) {
                    return Err(queue_core::Error::invalid(format!(
                        "--per: {per} is not a positive number of seconds"
                    )));
                }
                let limit = queue_core::RateLimit::new(max, Duration::from_secs_f64(per))?;
                backend.set_group_rate_limit(&name, Some(limit)).await?;
            } else if no_rate {
                backend.set_group_rate_limit(&name, None).await?;
            }
            let stats = backend.group(&name).await?;
            if json {
                output::json(&stats)
            } else {
                output::group(&stats)
            }
        }
        Command::Limit { max, per, off } => {
            let limit = match (max, off) {
                (Some(max), false) => {
                    if !(per.is_finite() && per > 0.0) {
                        return Err(queue_core::Error::invalid(format!(
                            "--per: {per} is not a positive number of seconds"
                        )));
                    }
                    Some(queue_core::RateLimit::new(
                        max,
                        Duration::from_secs_f64(per),
                    )?)
                }
                _ => None,
            };
            backend.set_rate_limit(limit).await?;
            if json {
                output::json(&json!({ "queue": cfg.queue_name, "rate_limit": limit }))
            } else {
                match limit {
                    Some(limit) => println!("{}: at most {limit}", cfg.queue_name),
                    None => println!("{}: no rate limit", cfg.queue_name),
                }
            }
        }
        Command::Tasks { task } => {
            let catalog = queue_core::task_catalog(&backend.workers().await?);
            match task {
                None if json => output::json(&catalog),
                None => output::tasks(&catalog),
                Some(name) => {
                    let Some(entry) = catalog.into_iter().find(|t| t.task == name) else {
                        return Err(queue_core::Error::invalid(format!(
                            "no live worker runs task `{name}`"
                        )));
                    };
                    match &entry.schema {
                        Some(schema) if !json => output::json(schema),
                        _ => output::json(&entry),
                    }
                }
            }
        }
        Command::Workers => {
            let workers = backend.workers().await?;
            if json {
                output::json(&workers)
            } else {
                output::workers(&workers)
            }
        }
        Command::Health => {
            backend.health().await?;
            if json {
                output::json(&json!({ "status": "ok" }))
            } else {
                println!("ok")
            }
        }
        Command::Watch { job_ids } => watch(&backend, job_ids, json).await?,
        Command::Schedule { action } => schedule(&backend, action, json).await?,
        Command::Webhook { action } => webhook(&backend, action, json).await?,
        Command::Events { since, count } => {
            let mut events = backend.subscribe(since.as_deref()).await?;
            let mut left = count.unwrap_or(usize::MAX);
            while left > 0 {
                let Some(event) = events.next().await else {
                    break;
                };
                println!(
                    "{}",
                    serde_json::to_string(&event).expect("events serialize")
                );
                left -= 1;
            }
        }
        Command::Worker { .. } | Command::Migrate | Command::Partitions { .. } => {
            unreachable!("handled above")
        }
    }
    Ok(())
}

async fn worker(
    cfg: QueueConfig,
    cli_url: Option<String>,
    concurrency: Option<usize>,
    grace: Option<u64>,
    format: LogFormat,
) -> Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Progress bars only on a terminal; log lines are then printed above them.
    let bars =
        (std::io::stderr().is_terminal() && format == LogFormat::Human).then(MultiProgress::new);
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter);
    match (format, &bars) {
        (LogFormat::Json, _) => subscriber.json().with_writer(std::io::stderr).init(),
        (LogFormat::Human, Some(multi)) => subscriber.with_writer(BarWriter(multi.clone())).init(),
        (LogFormat::Human, None) => subscriber
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init(),
    }
    let backend = tokio::select! {
        backend = connect_patiently(&cli_url, &cfg) => backend?,
        () = queue_worker::shutdown_signal() => return Ok(()),
    };
    tracing::info!(backend = %backend, "queuectl worker starting");
    if let Some(multi) = bars {
        tokio::spawn(draw_running_jobs(backend.subscribe(None).await?, multi));
    }
    let mut builder = Worker::builder(backend)
        .config(&cfg)
        .handle(book_pipeline::process_book)
        .handle(book_pipeline::process_chapter);
    if let Some(n) = concurrency {
        builder = builder.concurrency(n);
    }
    if let Some(secs) = grace {
        builder = builder.shutdown_grace(Duration::from_secs(secs));
    }
    builder.build()?.run_until_signal().await?;
    Ok(())
}

/// Postgres when a database URL is given (`--database-url` or `DCS_DATABASE_URL`; its
/// schema must be migrated: `queuectl migrate`), else Redis.
async fn open_backend(cli: &Cli, cfg: &QueueConfig) -> Result<SharedBackend> {
    match &cli.database_url {
        Some(url) => Ok(Arc::new(
            PostgresBackend::builder(postgres_config(url)?)
                .queue(cfg.clone())
                .connect()
                .await?,
        )),
        None => redis_builder(cfg)?.open().await,
    }
}

fn postgres_config(url: &str) -> Result<PostgresConfig> {
    let cfg = PostgresConfig::new(url)?;
    match std::env::var(queue_postgres::SCHEMA_VAR) {
        Ok(schema) => cfg.schema(schema),
        Err(_) => Ok(cfg),
    }
}

/// `queuectl migrate`: the Postgres schema's missing migrations.
async fn migrate(cli: &Cli) -> Result<()> {
    let Some(url) = &cli.database_url else {
        return Err(queue_core::Error::config(
            "migrate needs a PostgreSQL URL: --database-url or DCS_DATABASE_URL",
        ));
    };
    let cfg = postgres_config(url)?;
    let applied = PostgresBackend::migrate(&cfg).await?;
    if cli.json {
        println!(
            "{}",
            json!({ "schema": cfg.schema_name(), "applied": applied, "version": queue_postgres::LATEST_MIGRATION })
        );
    } else if applied.is_empty() {
        println!(
            "schema {} is up to date (version {})",
            cfg.schema_name(),
            queue_postgres::LATEST_MIGRATION
        );
    } else {
        println!(
            "schema {}: applied {:?}, now at version {}",
            cfg.schema_name(),
            applied,
            queue_postgres::LATEST_MIGRATION
        );
    }
    Ok(())
}

/// The Redis backend on `cfg`'s queue and URL (`--redis-url` or `DCS_REDIS_URL`), with the
/// other `DCS_REDIS_*` settings (key prefix, timeout) of the environment.
async fn redis_backend(cfg: &QueueConfig) -> Result<RedisBackend> {
    redis_builder(cfg)?.build().await
}

/// As [`redis_backend`], not connected yet: `open` connects to a partitioned queue as one.
fn redis_builder(cfg: &QueueConfig) -> Result<queue_redis::RedisBackendBuilder> {
    Ok(RedisBackend::builder(cfg).redis(RedisConfig::from_env()?.with_url(cfg.redis_url.clone())))
}

/// A worker waits for its store instead of exiting: it may start before Redis or Postgres
/// (or during a restart). Configuration errors still stop it at once.
async fn connect_patiently(
    database_url: &Option<String>,
    cfg: &QueueConfig,
) -> Result<SharedBackend> {
    let mut delay = Duration::from_millis(250);
    loop {
        let connected: Result<SharedBackend> = match database_url {
            Some(url) => match postgres_config(url) {
                Ok(pg) => PostgresBackend::builder(pg)
                    .queue(cfg.clone())
                    .connect()
                    .await
                    .map(|b| Arc::new(b) as SharedBackend),
                Err(e) => Err(e),
            },
            None => match redis_builder(cfg) {
                Ok(builder) => builder.open().await,
                Err(e) => Err(e),
            },
        };
        match connected {
            Err(err) if err.is_retryable() => {
                tracing::warn!(error = %err.chain(), retry_in = ?delay, "the store is not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BarWriter {
    type Writer = BarWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
