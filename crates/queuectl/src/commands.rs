//! One function per command, all on the library calls the other binaries use.

use std::{collections::HashMap, io::IsTerminal, sync::Arc, time::Duration};

use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use queue_core::{
    BulkAction, BulkActions, BulkFilter, BulkRequest, BulkStep, CancelOutcome, EventKind, Flow,
    JobId, JobStatus, JobStore, JobStoreExt, ListQuery, NewJob, QueueConfig, Result,
};
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
        return worker(cfg, *concurrency, *shutdown_grace, *log_format).await;
    }
    let backend = redis_backend(&cfg).await?;
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
            children,
            on_child_failure,
        } => {
            let mut job = NewJob::with_payload(task, payload);
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
        Command::Worker { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// Follows jobs to their end: progress bars on a terminal, one line per change otherwise.
async fn watch(backend: &RedisBackend, mut ids: Vec<JobId>, json: bool) -> Result<()> {
    let mut events = backend.subscribe(None).await?;
    if ids.is_empty() {
        let running = backend
            .list(&ListQuery::new().status(JobStatus::Processing).limit(1000))
            .await?;
        ids = running.jobs.iter().map(|r| r.job_id).collect();
        if ids.is_empty() {
            if json {
                output::json(&Vec::<queue_core::JobRecord>::new())
            } else {
                println!("no running jobs")
            }
            return Ok(());
        }
    }
    let bars_on = std::io::stderr().is_terminal() && !json;
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos:>3}% {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    let mut bars: HashMap<JobId, ProgressBar> = HashMap::new();
    let mut open = 0;
    for id in &ids {
        let r = backend.get(*id).await?;
        let bar = multi.add(
            ProgressBar::new(100)
                .with_style(style.clone())
                .with_prefix(id.to_string()),
        );
        if !bars_on {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        if !show(&bar, &r) {
            open += 1;
        }
        bars.insert(*id, bar);
    }
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    while open > 0 {
        let id = tokio::select! {
            event = events.next() => match event {
                Some(e) if bars.contains_key(&e.job_id) => {
                    if !bars_on && !json {
                        match &e.kind {
                            EventKind::Progress { progress, step } => println!("{} {progress}% {}", e.job_id, step.clone().unwrap_or_default()),
                            EventKind::Transition { to, .. } => println!("{} {to}", e.job_id),
                            EventKind::CancelRequested => println!("{} cancel requested", e.job_id),
                            EventKind::Missed { .. } => {}
                        }
                    }
                    e.job_id
                }
                Some(_) => continue,
                None => {
                    events = backend.subscribe(None).await?;
                    continue;
                }
            },
            // Events are best-effort: re-read the records now and then.
            _ = poll.tick() => {
                for (id, bar) in &bars {
                    if !bar.is_finished() {
                        refresh(backend, *id, bar, &mut open).await?;
                    }
                }
                continue;
            }
        };
        let bar = &bars[&id];
        if !bar.is_finished() {
            refresh(backend, id, bar, &mut open).await?;
        }
    }
    if json {
        let mut records = Vec::new();
        for id in &ids {
            records.push(backend.get(*id).await?);
        }
        output::json(&records);
    }
    Ok(())
}

/// Draws a record on its bar; true when the job has ended (the bar is finished).
fn show(bar: &ProgressBar, r: &queue_core::JobRecord) -> bool {
    bar.set_position(u64::from(r.progress));
    bar.set_message(format!(
        "{} {}",
        r.status,
        r.current_step.clone().unwrap_or_default()
    ));
    if r.status.is_terminal() {
        bar.finish();
    }
    r.status.is_terminal()
}

async fn refresh(
    backend: &RedisBackend,
    id: JobId,
    bar: &ProgressBar,
    open: &mut usize,
) -> Result<()> {
    let r = backend.get(id).await?;
    if show(bar, &r) {
        *open -= 1;
    }
    Ok(())
}

async fn worker(
    cfg: QueueConfig,
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
        backend = connect_patiently(&cfg) => Arc::new(backend?),
        () = queue_worker::shutdown_signal() => return Ok(()),
    };
    tracing::info!(backend = %backend, "queuectl worker starting");
    if let Some(multi) = bars {
        tokio::spawn(draw_running_jobs(backend.subscribe(None).await?, multi));
    }
    let mut builder = Worker::builder(backend)
        .config(&cfg)
        .register_job(book_pipeline::process_book)
        .register_job(book_pipeline::process_chapter);
    if let Some(n) = concurrency {
        builder = builder.concurrency(n);
    }
    if let Some(secs) = grace {
        builder = builder.shutdown_grace(Duration::from_secs(secs));
    }
    builder.build()?.run_until_signal().await?;
    Ok(())
}

/// The backend on `cfg`'s queue and URL (`--redis-url` or `DCS_REDIS_URL`), with the other
/// `DCS_REDIS_*` settings (key prefix, timeout) of the environment.
async fn redis_backend(cfg: &QueueConfig) -> Result<RedisBackend> {
    RedisBackend::builder(cfg)
        .redis(RedisConfig::from_env()?.with_url(cfg.redis_url.clone()))
        .build()
        .await
}

/// A worker waits for Redis instead of exiting: it may start before Redis (or during a
/// restart). Configuration errors still stop it at once.
async fn connect_patiently(cfg: &QueueConfig) -> Result<RedisBackend> {
    let mut delay = Duration::from_millis(250);
    loop {
        match redis_backend(cfg).await {
            Err(err) if err.is_retryable() => {
                tracing::warn!(error = %err.chain(), retry_in = ?delay, "Redis is not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// One bar per job that starts while this worker runs (jobs of every worker of the queue).
async fn draw_running_jobs(mut events: queue_core::EventStream, multi: MultiProgress) {
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos:>3}% {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    let mut bars: HashMap<JobId, ProgressBar> = HashMap::new();
    while let Some(e) = events.next().await {
        match e.kind {
            EventKind::Transition {
                to: JobStatus::Processing,
                ..
            } => {
                let bar = multi.add(
                    ProgressBar::new(100)
                        .with_style(style.clone())
                        .with_prefix(e.job_id.to_string()),
                );
                bars.insert(e.job_id, bar);
            }
            EventKind::Progress { progress, step } => {
                if let Some(bar) = bars.get(&e.job_id) {
                    bar.set_position(u64::from(progress));
                    bar.set_message(step.unwrap_or_default());
                }
            }
            EventKind::Transition { .. } => {
                if let Some(bar) = bars.remove(&e.job_id) {
                    bar.finish_and_clear();
                    multi.remove(&bar);
                }
            }
            EventKind::CancelRequested | EventKind::Missed { .. } => {}
        }
    }
}

/// Log output that does not tear the progress bars.
#[derive(Clone)]
struct BarWriter(MultiProgress);

impl std::io::Write for BarWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BarWriter {
    type Writer = BarWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

async fn schedule(backend: &RedisBackend, action: ScheduleAction, json: bool) -> Result<()> {
    use queue_core::{Schedule, Schedules};
    let show = |r: &queue_core::ScheduleRecord| {
        if json {
            output::json(r)
        } else {
            output::schedules(std::slice::from_ref(r))
        }
    };
    match action {
        ScheduleAction::Set {
            name,
            cron,
            tz,
            every,
            task,
            payload,
            priority,
            max_retries,
            group,
            missed,
            grace,
            paused,
        } => {
            let mut job = NewJob::with_payload(task, payload);
            if let Some(p) = priority {
                job = job.priority(p);
            }
            if let Some(n) = max_retries {
                job = job.max_retries(n);
            }
            if let Some(g) = group {
                job = job.group(g);
            }
            let schedule = match (cron, every) {
                (Some(expr), _) => Schedule::cron(name, expr, job)?.time_zone(tz),
                (None, Some(secs)) => Schedule::every(name, Duration::from_secs(secs), job)?,
                (None, None) => unreachable!("clap requires --cron or --every"),
            };
            let record = backend
                .put_schedule(
                    schedule
                        .missed(missed)
                        .grace(Duration::from_secs(grace))
                        .paused(paused),
                )
                .await?;
            show(&record);
        }
        ScheduleAction::List => {
            let all = backend.schedules().await?;
            if json {
                output::json(&all)
            } else {
                output::schedules(&all)
            }
        }
        ScheduleAction::Show { name } => show(&backend.schedule(&name).await?),
        ScheduleAction::Pause { name } => show(&backend.pause_schedule(&name).await?),
        ScheduleAction::Resume { name } => show(&backend.resume_schedule(&name).await?),
        ScheduleAction::Delete { name } => {
            backend.delete_schedule(&name).await?;
            if json {
                output::json(&json!({ "deleted": name }))
            } else {
                println!("deleted {name}")
            }
        }
        ScheduleAction::RunDue => {
            let report = backend.run_due_schedules().await?;
            let fired: Vec<_> = report
                .fired
                .iter()
                .map(|(name, jobs)| json!({ "schedule": name, "jobs": jobs }))
                .collect();
            let errors: Vec<_> = report
                .errors
                .iter()
                .map(|(name, e)| json!({ "schedule": name, "error": e.chain() }))
                .collect();
            if json {
                output::json(&json!({ "fired": fired, "errors": errors }))
            } else {
                for (name, jobs) in &report.fired {
                    for id in jobs {
                        println!("{name}\t{id}");
                    }
                }
                for (name, e) in &report.errors {
                    eprintln!("{name}: {}", e.chain());
                }
            }
            if let Some((_, e)) = report.errors.into_iter().next() {
                return Err(e);
            }
        }
    }
    Ok(())
}

async fn webhook(backend: &RedisBackend, action: WebhookAction, json: bool) -> Result<()> {
    match action {
        WebhookAction::Add {
            name,
            url,
            secret,
            events,
            task,
            group,
            max_attempts,
            retry_ms,
        } => {
            let mut hook = queue_core::Webhook::new(name, url, secret)
                .retries(max_attempts, Duration::from_millis(retry_ms));
            if !events.is_empty() {
                hook = hook.events(events);
            }
            if let Some(t) = task {
                hook = hook.task(t);
            }
            if let Some(g) = group {
                hook = hook.group(g);
            }
            backend.put_webhook(&hook).await?;
            if json {
                output::json(&hook.redacted())
            } else {
                output::webhooks(&[hook.redacted()])
            }
        }
        WebhookAction::List => {
            let hooks: Vec<_> = backend
                .webhooks()
                .await?
                .iter()
                .map(queue_core::Webhook::redacted)
                .collect();
            if json {
                output::json(&hooks)
            } else {
                output::webhooks(&hooks)
            }
        }
        WebhookAction::Delete { name } => {
            if !backend.delete_webhook(&name).await? {
                return Err(queue_core::Error::invalid(format!(
                    "no webhook named `{name}`"
                )));
            }
            if json {
                output::json(&json!({ "deleted": name }))
            } else {
                println!("deleted {name}")
            }
        }
        WebhookAction::Deliveries { parked, limit } => {
            let list = backend.deliveries(parked, limit).await?;
            if json {
                output::json(&list)
            } else {
                output::deliveries(&list)
            }
        }
        WebhookAction::Resend { ids, all_parked } => {
            let ids = if all_parked {
                backend
                    .deliveries(true, 10_000)
                    .await?
                    .into_iter()
                    .map(|d| d.id)
                    .collect()
            } else {
                ids
            };
            let mut resent = Vec::new();
            for id in ids {
                if backend.resend_delivery(&id).await? {
                    resent.push(id);
                } else {
                    return Err(queue_core::Error::invalid(format!(
                        "no parked delivery `{id}` (resent before it: {})",
                        resent.len()
                    )));
                }
            }
            if json {
                output::json(&json!({ "resent": resent }))
            } else {
                println!("resent {}", resent.len())
            }
        }
    }
    Ok(())
}
