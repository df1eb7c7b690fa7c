//! The book pipeline: the queue's flagship example (SPEC §3).
//!
//! Task `process_book` runs five weighted stages over a plain-text book: text extraction
//! (20), segmentation (15), topic analysis (20), vocabulary (20) and audio generation (25,
//! non-critical: without `espeak-ng` the job ends `partial`, saying why).
//!
//! ```text
//! cargo run -p queue-examples --example book_pipeline             # demo, in-memory backend
//! cargo run -p queue-examples --example book_pipeline -- worker   # only the worker, until SIGINT/SIGTERM
//! cargo run -p queue-examples --example book_pipeline -- produce  # only the producer (Redis)
//! ```
//!
//! The demo enqueues a bulk import of eight books from one publisher, then single uploads
//! of two other publishers, one re-processing job at HIGH priority and one duplicate
//! (refused), runs a worker with live progress bars, and prints a table of every job in
//! the order they started. Book `book-004` is of type `chapters`: a flow of one
//! `process_chapter` job per chapter, run in parallel, merged by the book's job once they
//! all ended (its bar moves as chapters finish). Each job's group is its `publisher_id`: the publishers take
//! turns, so the single uploads start right away instead of waiting behind the import, and
//! at most `DCS_BOOK_PUBLISHER_CONCURRENCY` (default 2) books of one publisher run at once.
//! `DCS_BOOK_RATE_PER_MINUTE` (unset: no limit) caps how many books start per minute
//! across all workers (the AI stages' provider quota), and
//! `DCS_BOOK_PUBLISHER_RATE_PER_MINUTE` how many of one publisher. Outputs go to
//! `target/book-output/<book_id>/`.
//!
//! With `DCS_DATABASE_URL` set (`postgres://postgres@127.0.0.1:5432/postgres`; schema
//! `DCS_DATABASE_SCHEMA`, default `dcs_queue`, migrated on connect) every mode runs on
//! Postgres. With `DCS_REDIS_URL` set, every mode runs on Redis, so the worker and the
//! producer can be separate processes:
//!
//! ```text
//! export DCS_REDIS_URL=redis://127.0.0.1:6379
//! cargo run -p queue-examples --example book_pipeline -- worker &
//! cargo run -p queue-examples --example book_pipeline -- produce
//! ```

use std::{
    collections::HashMap,
    io::IsTerminal,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use queue_core::backend::to_millis;
use queue_core::{
    Error, EventKind, Job, JobId, JobRecord, JobStatus, JobStoreExt, NewJob, Priority, QueueConfig,
    Schedule, Schedules, SharedBackend, Webhook,
};
use queue_memory::MemoryBackend;
use queue_postgres::{PostgresBackend, PostgresConfig};
use queue_redis::{RedisBackend, RedisConfig};
use queue_worker::{CancellationToken, Worker};

use book_pipeline::{JobType, ProcessBook, chapters_flow, process_book, process_chapter};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().map(String::as_str).unwrap_or("demo");
    init_tracing(if command == "demo" { "warn" } else { "info" });
    let cfg = QueueConfig::from_env()?;
    match command {
        "demo" => demo(cfg, true).await,
        "produce" => demo(cfg, false).await,
        "worker" => run_worker(cfg).await,
        "-h" | "--help" | "help" => {
            println!("usage: book_pipeline [demo | worker | produce]");
            Ok(())
        }
        other => bail!("unknown command `{other}` (expected `demo`, `worker` or `produce`)"),
    }
}

fn init_tracing(default: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Postgres when `DCS_DATABASE_URL` is set, Redis when `DCS_REDIS_URL` is, else the
/// in-memory backend.
async fn open_backend(cfg: &QueueConfig) -> anyhow::Result<SharedBackend> {
    if std::env::var_os("DCS_DATABASE_URL").is_some() {
        Ok(Arc::new(
            PostgresBackend::builder(PostgresConfig::from_env()?)
                .queue(cfg.clone())
                .migrate(true)
                .connect()
                .await?,
        ))
    } else if std::env::var_os("DCS_REDIS_URL").is_some() {
        Ok(Arc::new(
            RedisBackend::builder(cfg)
                .redis(RedisConfig::from_env()?.with_url(cfg.redis_url.clone()))
                .build()
                .await?,
        ))
    } else {
        Ok(Arc::new(MemoryBackend::with_config(cfg.clone())))
    }
}

fn worker(backend: SharedBackend, cfg: &QueueConfig) -> anyhow::Result<Worker> {
    // Deliveries go to public addresses only, unless DCS_WEBHOOK_ALLOW says otherwise; the
    // demo's own receiver listens on loopback, so the demo allows it.
    let allow = std::env::var("DCS_WEBHOOK_ALLOW").unwrap_or_else(|_| "127.0.0.1".into());
    Ok(Worker::builder(backend)
        .config(cfg)
        .webhook_egress(queue_worker::WebhookEgress::from_list(&allow)?)
        .handle(process_book)
        .handle(process_chapter)
        .build()?)
}

async fn run_worker(cfg: QueueConfig) -> anyhow::Result<()> {
    let backend = open_backend(&cfg).await?;
    tracing::info!(backend = %backend, queue = %cfg.queue_name, "starting book pipeline worker");
    let report = worker(backend, &cfg)?.run_until_signal().await?;
    tracing::info!(?report, "done");
    Ok(())
}

struct Planned {
    book: ProcessBook,
    priority: Priority,
    note: &'static str,
}

fn plan() -> Vec<Planned> {
    let book = |id: &str, publisher: &str, job_type| ProcessBook {
        book_id: id.into(),
        publisher_id: publisher.into(),
        job_type,
        source: None,
    };
    // The bulk import is enqueued first: without groups it would run before everything
    // else of its priority.
    let mut plan: Vec<Planned> = (1..=8)
        .map(|n| Planned {
            book: book(&format!("book-1{n:02}"), "pub-bulk", JobType::TextOnly),
            priority: Priority::Normal,
            note: "bulk import",
        })
        .collect();
    plan.extend([
        Planned {
            book: book("book-001", "pub-7", JobType::Full),
            priority: Priority::Normal,
            note: "new upload",
        },
        Planned {
            book: book("book-002", "pub-9", JobType::VocabularyOnly),
            priority: Priority::Normal,
            note: "vocabulary only",
        },
        Planned {
            book: book("book-003", "pub-7", JobType::Full),
            priority: Priority::High,
            note: "re-processing (admin)",
        },
        Planned {
            book: book("book-004", "pub-9", JobType::Chapters),
            priority: Priority::Normal,
            note: "split into chapters",
        },
    ]);
    plan
}

/// Per publisher, at most this many books run at once (`DCS_BOOK_PUBLISHER_CONCURRENCY`,
/// default 2); books start at most `DCS_BOOK_RATE_PER_MINUTE` times a minute when set, and
/// at most `DCS_BOOK_PUBLISHER_RATE_PER_MINUTE` times a minute per publisher.
async fn apply_limits(backend: &SharedBackend, publishers: &[String]) -> anyhow::Result<()> {
    let per_publisher: u32 = match std::env::var("DCS_BOOK_PUBLISHER_CONCURRENCY") {
        Ok(v) => v.trim().parse().with_context(|| {
            format!("DCS_BOOK_PUBLISHER_CONCURRENCY: {v:?} is not a positive integer")
        })?,
        Err(_) => 2,
    };
    for publisher in publishers {
        backend
            .set_group_concurrency(publisher, Some(per_publisher))
            .await
            .context("DCS_BOOK_PUBLISHER_CONCURRENCY")?;
    }
    if let Ok(v) = std::env::var("DCS_BOOK_PUBLISHER_RATE_PER_MINUTE") {
        let max: u32 = v.trim().parse().with_context(|| {
            format!("DCS_BOOK_PUBLISHER_RATE_PER_MINUTE: {v:?} is not a positive integer")
        })?;
        let limit = queue_core::RateLimit::new(max, Duration::from_secs(60))
            .context("DCS_BOOK_PUBLISHER_RATE_PER_MINUTE")?;
        for publisher in publishers {
            backend.set_group_rate_limit(publisher, Some(limit)).await?;
        }
    }
    if let Ok(v) = std::env::var("DCS_BOOK_RATE_PER_MINUTE") {
        let max: u32 = v.trim().parse().with_context(|| {
            format!("DCS_BOOK_RATE_PER_MINUTE: {v:?} is not a positive integer")
        })?;
        let limit = queue_core::RateLimit::new(max, Duration::from_secs(60))
            .context("DCS_BOOK_RATE_PER_MINUTE")?;
        backend.set_rate_limit(Some(limit)).await?;
    }
    println!("at most {per_publisher} books of one publisher at once");
    Ok(())
}

/// Enqueues the plan and follows it to the end; runs a worker too when `with_worker`.
async fn demo(cfg: QueueConfig, with_worker: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let backend = open_backend(&cfg).await?;
    if !with_worker
        && std::env::var_os("DCS_REDIS_URL").is_none()
        && std::env::var_os("DCS_DATABASE_URL").is_none()
    {
        bail!("`produce` needs a worker in another process: set DCS_REDIS_URL or DCS_DATABASE_URL");
    }
    let mut events = backend.subscribe(None).await?;
    println!(
        "book pipeline on {backend}, queue `{}`, concurrency {}",
        cfg.queue_name, cfg.max_concurrency
    );

    let tty = std::io::stderr().is_terminal();
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>9} [{bar:30.cyan/blue}] {pos:>3}% {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    let mut jobs: Vec<JobId> = Vec::new();
    let mut by_id: HashMap<JobId, ProgressBar> = HashMap::new();
    let plan = plan();
    let mut publishers: Vec<String> = plan.iter().map(|p| p.book.publisher_id.clone()).collect();
    publishers.sort();
    publishers.dedup();
    apply_limits(&backend, &publishers).await?;
    // A chapter's job -> its book's job (the book's bar follows its chapters).
    let mut book_of: HashMap<JobId, JobId> = HashMap::new();
    for planned in plan {
        let record = if planned.book.job_type == JobType::Chapters {
            // A flow: one job per chapter, then the book's own job merges them.
            let mut flow = chapters_flow(&planned.book).await?;
            flow.job = flow
                .job
                .priority(planned.priority)
                .meta("reason", planned.note);
            let record = backend.enqueue_flow(flow).await?;
            for chapter in backend.children(record.job_id).await? {
                book_of.insert(chapter.job_id, record.job_id);
            }
            record
        } else {
            // Its unique key (the book) and group (the publisher) come from its type.
            let job = NewJob::typed(&planned.book)?
                .priority(planned.priority)
                .meta("reason", planned.note);
            backend.enqueue(job).await?
        };
        println!(
            "enqueued {}  {:<9}  {:<8}  {:<15}  {:<6}  {}",
            short(record.job_id),
            planned.book.book_id,
            planned.book.publisher_id,
            planned.book.job_type.as_str(),
            planned.priority,
            planned.note
        );
        let bar = bars.add(
            ProgressBar::new(100)
                .with_style(style.clone())
                .with_prefix(planned.book.book_id.clone())
                .with_message("queued"),
        );
        by_id.insert(record.job_id, bar);
        jobs.push(record.job_id);
    }
    // A second upload of a book that is already queued is refused, naming the active job.
    let duplicate = ProcessBook {
        book_id: "book-001".into(),
        publisher_id: "pub-7".into(),
        job_type: JobType::Full,
        source: None,
    };
    match backend.enqueue_job(&duplicate).await {
        Err(Error::AlreadyExists { unique_key, job_id }) => println!(
            "refused  duplicate of {unique_key}: active job {}",
            short(job_id)
        ),
        Ok(r) => bail!("duplicate was accepted as {}", r.job_id),
        Err(e) => return Err(e.into()),
    }
    // A re-upload of the book keeps only the newest file (keep-latest): it replaces the
    // payload of the queued job, or, once that one runs, waits for it to end and runs after
    // it (never beside it), taking the payload of any later re-upload.
    let reupload = backend
        .enqueue(NewJob::typed(&duplicate)?.keep_latest())
        .await?;
    match reupload.after {
        None => println!(
            "re-upload {}: replaced the payload of queued job {} ({} time)",
            duplicate.book_id,
            short(reupload.job_id),
            reupload.replaced
        ),
        Some(running) => {
            println!(
                "re-upload {}: job {} waits for running job {} to end",
                duplicate.book_id,
                short(reupload.job_id),
                short(running)
            );
            let bar = bars.add(
                ProgressBar::new(100)
                    .with_style(style.clone())
                    .with_prefix(format!("{}+", duplicate.book_id))
                    .with_message("waiting"),
            );
            by_id.insert(reupload.job_id, bar);
            jobs.push(reupload.job_id);
        }
    }

    // Nightly re-processing: a schedule in the backend, so each night runs it once
    // whatever number of workers (each fires due schedules).
    let nightly = Schedule::cron(
        "nightly-reprocess",
        "0 2 * * *",
        NewJob::typed(&ProcessBook {
            book_id: "book-001".into(),
            publisher_id: "pub-7".into(),
            job_type: JobType::Full,
            source: None,
        })?
        // Each night's run is its own job: not held back by the book's unique key.
        .without_unique_key()
        .priority(Priority::Low),
    )?
    .time_zone("Europe/Berlin");
    let nightly = backend.put_schedule(nightly).await?;
    println!(
        "schedule nightly-reprocess: {}, next run {}",
        nightly.schedule.cadence,
        nightly
            .next_run
            .map_or_else(|| "-".to_owned(), |t| t.to_rfc3339())
    );

    // The publishing platform is told when a book is done: a durable webhook to a local
    // receiver this demo starts (it checks every signature).
    let receiver = WebhookReceiver::start().await?;
    backend
        .put_webhook(
            &Webhook::new("publishing-platform", receiver.url.as_str(), WEBHOOK_SECRET)
                .events([JobStatus::Completed, JobStatus::Partial, JobStatus::Failed])
                .task(ProcessBook::NAME)
                .retries(10, Duration::from_millis(500)),
        )
        .await?;
    println!("webhook publishing-platform -> {}", receiver.url);

    let stop = CancellationToken::new();
    let running = match with_worker {
        true => Some(tokio::spawn(
            worker(backend.clone(), &cfg)?.run(stop.clone()),
        )),
        false => None,
    };
    let mut open = jobs.len();
    let deadline = tokio::time::sleep(Duration::from_secs(120));
    tokio::pin!(deadline);
    while open > 0 {
        let event = tokio::select! {
            event = events.next() => event.context("event stream ended")?,
            () = &mut deadline => bail!("jobs did not finish within two minutes (is a worker running?)"),
        };
        if let (Some(book), EventKind::Transition { to, .. }) =
            (book_of.get(&event.job_id), &event.kind)
        {
            // A chapter ended: its book's progress is the share of chapters done.
            if to.is_terminal() {
                let record = backend.get(*book).await?;
                if let (Some(bar), Some(counts)) = (by_id.get(book), record.children) {
                    bar.set_position(u64::from(record.progress));
                    bar.set_message(format!("chapters {}/{}", counts.finished(), counts.total()));
                }
            }
            continue;
        }
        if let EventKind::Missed { .. } = event.kind {
            // Events were lost: read every unfinished book's record instead.
            for (id, bar) in &by_id {
                let record = backend.get(*id).await?;
                if record.status.is_terminal() && !bar.is_finished() {
                    bar.set_position(u64::from(record.progress));
                    bar.finish_with_message(record.status.to_string());
                    open -= 1;
                }
            }
            continue;
        }
        let Some(bar) = by_id.get(&event.job_id) else {
            continue;
        };
        match event.kind {
            EventKind::Progress { progress, step } => {
                bar.set_position(u64::from(progress));
                bar.set_message(step.unwrap_or_default());
            }
            EventKind::Transition { to, .. } => {
                if !tty {
                    println!("{:>9} {to}", bar.prefix());
                }
                if to.is_terminal() && !bar.is_finished() {
                    let record = backend.get(event.job_id).await?;
                    bar.set_position(u64::from(record.progress));
                    bar.finish_with_message(to.to_string());
                    open -= 1;
                } else if !to.is_terminal() {
                    bar.set_message(to.to_string());
                }
            }
            EventKind::CancelRequested => bar.set_message("cancelling"),
            EventKind::Missed { .. } => {}
        }
    }
    let mut records = Vec::new();
    for id in &jobs {
        records.push(backend.get(*id).await?);
    }
    // Every finished book of the webhook's task is delivered (the worker sends them).
    let expected: usize = records
        .iter()
        .filter(|r| r.task == ProcessBook::NAME && r.status != JobStatus::Cancelled)
        .count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.count() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    if let Some(running) = running {
        running.await??;
    }
    backend.delete_webhook("publishing-platform").await?;
    let (received, valid) = (receiver.count(), receiver.valid());
    println!(
        "webhook publishing-platform: {received} of {expected} books delivered, {valid} with a valid signature"
    );
    if received < expected || valid != received {
        bail!("the webhook receiver got {received} of {expected} books ({valid} signed right)");
    }
    // In the order they started (then enqueued): the single uploads of the other
    // publishers start among the first, next to the import.
    records.sort_by_key(|r| (r.started_at, r.created_at, r.job_id));
    print_table(&records);
    println!(
        "outputs in {}; finished in {:.1?}",
        std::env::var("DCS_BOOK_OUTPUT_DIR").unwrap_or_else(|_| "target/book-output".into()),
        started.elapsed()
    );
    Ok(())
}

fn short(id: JobId) -> String {
    // The tail of a UUIDv7 is random; its head is the creation time.
    let id = id.to_string();
    id[id.len() - 8..].to_owned()
}

fn print_table(records: &[JobRecord]) {
    println!();
    println!(
        "{:<8}  {:<9}  {:<9}  {:<15}  {:<6}  {:<9}  {:>8}  {:>8}  {:>7}  note",
        "job", "book", "publisher", "type", "prio", "status", "progress", "attempts", "time"
    );
    for r in records {
        let book: ProcessBook = r.payload.decode().expect("our own payload");
        let time = match (r.started_at, r.completed_at) {
            (Some(s), Some(e)) => format!("{:.2}s", (to_millis(e) - to_millis(s)) as f64 / 1000.0),
            _ => "-".into(),
        };
        let note = match r.status {
            JobStatus::Partial | JobStatus::Failed => r.error_message.clone().unwrap_or_default(),
            _ => r
                .metadata
                .get("reason")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned(),
        };
        println!(
            "{:<8}  {:<9}  {:<9}  {:<15}  {:<6}  {:<9}  {:>7}%  {:>8}  {:>7}  {}",
            short(r.job_id),
            book.book_id,
            book.publisher_id,
            book.job_type.as_str(),
            r.priority,
            r.status,
            r.progress,
            r.retry_count + 1,
            time,
            note
        );
    }
}

const WEBHOOK_SECRET: &str = "demo-secret-shared-with-the-publisher";

/// The publishing platform's side of the webhook: counts the books it was told about and
/// checks each signature.
struct WebhookReceiver {
    url: String,
    seen: Arc<Mutex<std::collections::BTreeMap<String, bool>>>,
}

impl WebhookReceiver {
    async fn start() -> anyhow::Result<Self> {
        let seen: Arc<Mutex<std::collections::BTreeMap<String, bool>>> = Arc::default();
        let log = Arc::clone(&seen);
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let log = Arc::clone(&log);
                    async move {
                        let header = |name: &str| {
                            headers
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        let ts: i64 = header("x-dcs-timestamp").parse().unwrap_or_default();
                        let valid = queue_core::verify_webhook_signature(
                            WEBHOOK_SECRET,
                            ts,
                            &body,
                            &header("x-dcs-signature"),
                        );
                        // Deliveries come at least once: the delivery id dedupes.
                        log.lock().unwrap().insert(header("x-dcs-delivery"), valid);
                        axum::http::StatusCode::NO_CONTENT
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hooks", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, seen })
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn valid(&self) -> usize {
        self.seen.lock().unwrap().values().filter(|v| **v).count()
    }
}
