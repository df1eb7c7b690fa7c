//! `queuectl`: operate a queue on Redis without writing Rust.
//!
//! Every `DCS_*` setting applies; `--redis-url` and `--queue` override `DCS_REDIS_URL` and
//! `DCS_QUEUE_NAME`. Exit codes: 0 success, 1 backend or other failure, 2 usage, 3 job (or
//! schedule) not found, 4 the unique key already has an active job, 5 the transition is not allowed, 7
//! `status --wait` timed out before the job finished.

mod commands;
mod output;

use std::{process::ExitCode, str::FromStr};

use clap::{Parser, Subcommand, ValueEnum};
use queue_core::{ChildPolicy, Error, JobId, JobStatus, MissedTicks, Payload, Priority};

/// Operate a dcs job queue on Redis or PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "queuectl", version)]
pub(crate) struct Cli {
    /// Redis URL (default: DCS_REDIS_URL, else redis://localhost:6379).
    #[arg(long, global = true, env = "DCS_REDIS_URL", hide_env_values = true)]
    pub(crate) redis_url: Option<String>,
    /// PostgreSQL URL (default: DCS_DATABASE_URL): when given, the queue is on Postgres
    /// (schema DCS_DATABASE_SCHEMA, else dcs_queue), not Redis.
    #[arg(long, global = true, env = "DCS_DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,
    /// Queue name (default: DCS_QUEUE_NAME, else ai_processing).
    #[arg(long, global = true, env = "DCS_QUEUE_NAME")]
    pub(crate) queue: Option<String>,
    /// Print exactly one JSON document on stdout.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create or upgrade the Postgres schema (`--database-url`): applies the migrations it
    /// lacks; prints the versions applied.
    Migrate,
    /// Enqueue a job; prints its id.
    Enqueue {
        /// The task (handler name), e.g. process_book.
        #[arg(long)]
        task: String,
        /// The payload, as JSON.
        #[arg(long, value_parser = parse_payload)]
        payload: Payload,
        /// At most one active job per unique key.
        #[arg(long)]
        unique_key: Option<String>,
        /// high, normal or low.
        #[arg(long, value_parser = parse_priority)]
        priority: Option<Priority>,
        /// Run no earlier than this many seconds from now.
        #[arg(long)]
        delay: Option<u64>,
        /// Retries after the first attempt.
        #[arg(long)]
        max_retries: Option<u32>,
        /// The job's group (e.g. the publisher): groups share the workers round-robin.
        #[arg(long)]
        group: Option<String>,
        /// What a start counts against rate limits (default 1), e.g. an LLM call's tokens.
        #[arg(long)]
        cost: Option<u32>,
        /// With --unique-key: debounce, a burst of enqueues of the key becomes one run this
        /// many milliseconds after the last, with the last payload.
        #[arg(long, conflicts_with_all = ["throttle_ms", "keep_latest", "replace_running"])]
        debounce_ms: Option<u64>,
        /// With --unique-key: throttle, at most one job of the key per this many
        /// milliseconds; an enqueue within it prints the window's job.
        #[arg(long, conflicts_with_all = ["keep_latest", "replace_running"])]
        throttle_ms: Option<u64>,
        /// With --unique-key: keep-latest, at most one running and one waiting job of the
        /// key; while one runs, the enqueue waits for it to end (or replaces the payload of
        /// the one already waiting).
        #[arg(long, conflicts_with = "replace_running")]
        keep_latest: bool,
        /// With --unique-key: replace-running, the key's running job is asked to stop and
        /// this one runs once its attempt ended.
        #[arg(long)]
        replace_running: bool,
        /// The ordered sequence the job joins: it starts after every job of the sequence
        /// enqueued before it has ended, one at a time.
        #[arg(long)]
        sequence: Option<String>,
        /// A child, as TASK:JSON (repeat it): the job then runs once every child ended,
        /// all created in one step (a flow).
        #[arg(long = "child", value_parser = parse_child)]
        children: Vec<(String, Payload)>,
        /// What a child's failure does to the job: fail_parent (default), ignore or
        /// continue.
        #[arg(long, value_parser = parse_policy, default_value = "fail_parent")]
        on_child_failure: ChildPolicy,
    },
    /// A job with its descendants (a flow, a batch) as a tree: status, progress, task, id.
    Flow {
        /// The job id.
        #[arg(value_parser = parse_id)]
        job_id: JobId,
        /// Read at most this many jobs.
        #[arg(long, default_value_t = 200)]
        limit: usize,
    },
    /// One job's record.
    Status {
        /// The job id.
        #[arg(value_parser = parse_id)]
        job_id: JobId,
        /// Wait up to this many seconds for the job to finish (no polling); the record is
        /// printed then, finished or not (exit 0 only when it finished).
        #[arg(long)]
        wait: Option<f64>,
    },
    /// Jobs, newest first (a finished job by when it finished; one unique key's history by creation).
    List {
        /// Only jobs with this status.
        #[arg(long, value_parser = parse_status)]
        status: Option<JobStatus>,
        /// Only jobs with this unique key.
        #[arg(long)]
        unique_key: Option<String>,
        /// Page size (1-1000).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Continue after a previous page.
        #[arg(long)]
        cursor: Option<String>,
        /// Only queued jobs waiting on their children.
        #[arg(long)]
        waiting_on_children: bool,
    },
    /// Cancel a queued or running job.
    Cancel {
        /// The job id.
        #[arg(value_parser = parse_id)]
        job_id: JobId,
    },
    /// Re-queue a failed, partial or cancelled job.
    Retry {
        /// The job id.
        #[arg(value_parser = parse_id)]
        job_id: JobId,
        /// A new priority.
        #[arg(long, value_parser = parse_priority)]
        priority: Option<Priority>,
    },
    /// Delete a finished job's record (refused while it is queued or running).
    Delete {
        /// The job id.
        #[arg(value_parser = parse_id)]
        job_id: JobId,
    },
    /// Retry, cancel or delete every job matching a filter, in bounded steps: prints progress per
    /// step on stderr with the cursor to resume from (`--cursor`) after an interruption;
    /// `--dry-run` only counts what would be done.
    Bulk {
        /// `retry` (failed, partial or cancelled jobs), `cancel` (queued or running ones) or
        /// `delete` (finished records).
        #[arg(value_parser = parse_bulk_action)]
        action: queue_core::BulkAction,
        /// Only jobs with this status.
        #[arg(long, value_parser = parse_status)]
        status: Option<JobStatus>,
        /// Only jobs of this task.
        #[arg(long)]
        task: Option<String>,
        /// Only jobs whose unique key starts with this.
        #[arg(long)]
        unique_key_prefix: Option<String>,
        /// Only jobs created at or after this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        created_after: Option<chrono::DateTime<chrono::Utc>>,
        /// Only jobs created before this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        created_before: Option<chrono::DateTime<chrono::Utc>>,
        /// Jobs looked at per step (1 to 1000).
        #[arg(long, default_value_t = 200)]
        step: usize,
        /// Resume where an earlier run stopped (the last cursor it printed).
        #[arg(long)]
        cursor: Option<String>,
        /// Count what would be done; do nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Queue counts (and whether the queue is paused).
    Stats,
    /// A Redis queue's partitions (README "Partitions"): the layout and each partition's
    /// hash tag and counts; --resize N sets where new jobs go (nothing moves: older
    /// partitions drain).
    Partitions {
        /// New jobs go to this many partitions from now on (1 to 64).
        #[arg(long, value_name = "N")]
        resize: Option<u32>,
    },
    /// Pause the queue (or one group): no job starts until `resume`; running jobs finish,
    /// enqueues go on.
    Pause {
        /// Pause only this group.
        #[arg(long)]
        group: Option<String>,
    },
    /// Resume a paused queue (or group); waiting workers start jobs at once.
    Resume {
        /// Resume only this group.
        #[arg(long)]
        group: Option<String>,
    },
    /// The groups with unfinished jobs, the busiest first (the rest summed).
    Groups {
        /// Groups shown in full (at most 1000).
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One group's ready and running jobs and settings; sets its concurrency limit with
    /// --concurrency (at most N of its jobs run at once, across all workers) or removes
    /// it with --unlimited, and its rate limit with --rate N [--per SECONDS] or --no-rate.
    Group {
        /// The group.
        name: String,
        /// At most this many of its jobs run at once.
        #[arg(long)]
        concurrency: Option<u32>,
        /// Remove its concurrency limit.
        #[arg(long, conflicts_with = "concurrency")]
        unlimited: bool,
        /// Its weight in the fair share: this many starts in a row per turn (1 removes it).
        #[arg(long)]
        weight: Option<u32>,
        /// At most this many of its jobs start per --per seconds.
        #[arg(long)]
        rate: Option<u32>,
        /// The rate window, in seconds (fractions allowed).
        #[arg(long, default_value_t = 60.0)]
        per: f64,
        /// Remove its rate limit.
        #[arg(long, conflicts_with = "rate")]
        no_rate: bool,
    },
    /// Set the queue's rate limit (at most MAX starts per SECONDS, across all workers), or
    /// remove it with --off.
    Limit {
        /// Starts allowed per window.
        #[arg(long, required_unless_present = "off")]
        max: Option<u32>,
        /// The window, in seconds (fractions allowed).
        #[arg(long, default_value_t = 60.0)]
        per: f64,
        /// Remove the limit.
        #[arg(long, conflicts_with = "max")]
        off: bool,
    },
    /// Live workers and the jobs they hold.
    Workers,
    /// The tasks the live workers run, each with its payload's fields when its type shares a
    /// schema (`#[job(schema)]`); with TASK, that task's whole JSON schema.
    Tasks {
        /// One task.
        task: Option<String>,
    },
    /// Live progress of jobs until they end (all running jobs if none are named).
    Watch {
        /// Job ids.
        #[arg(value_parser = parse_id)]
        job_ids: Vec<JobId>,
    },
    /// Follow the queue's events, one JSON object per line (each with its `id`), until
    /// interrupted; with --since, first what the event log holds after that id (resume a
    /// follower that stopped).
    Events {
        /// Resume after this event id.
        #[arg(long)]
        since: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Run the book pipeline's handlers until SIGINT/SIGTERM.
    Worker {
        /// Jobs at once (default DCS_QUEUE_MAX_CONCURRENCY).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Seconds running jobs may finish after SIGTERM (default DCS_QUEUE_SHUTDOWN_GRACE_SECONDS).
        #[arg(long)]
        shutdown_grace: Option<u64>,
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
    },
    /// Job schedulers: each tick of a schedule enqueues exactly one job, however many
    /// workers run (every worker fires due schedules).
    Schedule {
        #[command(subcommand)]
        action: ScheduleAction,
    },
    /// Durable webhooks: each job reaching a status a webhook wants is POSTed to it,
    /// signed, retried, parked when it keeps failing.
    Webhook {
        #[command(subcommand)]
        action: WebhookAction,
    },
    /// Exit 0 when the backend answers.
    Health,
}

#[derive(Debug, Subcommand)]
pub(crate) enum WebhookAction {
    /// Create a webhook, or replace the one of that name.
    Add {
        /// Its name.
        name: String,
        /// Where deliveries are POSTed.
        #[arg(long)]
        url: String,
        /// The HMAC-SHA256 key of the X-Dcs-Signature header (at least 16 bytes).
        #[arg(long, env = "DCS_WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        /// A finished status it wants (repeat it; default all four).
        #[arg(long = "event", value_parser = parse_status)]
        events: Vec<JobStatus>,
        /// Only jobs of this task.
        #[arg(long)]
        task: Option<String>,
        /// Only jobs of this group.
        #[arg(long)]
        group: Option<String>,
        /// Attempts before a delivery is parked.
        #[arg(long, default_value_t = 10)]
        max_attempts: u32,
        /// Milliseconds before the first retry (doubled after each).
        #[arg(long, default_value_t = 5000)]
        retry_ms: u64,
    },
    /// Every webhook (secrets hidden).
    List,
    /// Delete a webhook (its pending deliveries are dropped).
    Delete {
        /// Its name.
        name: String,
    },
    /// Pending deliveries (oldest due first), or parked ones with --parked.
    Deliveries {
        /// Parked deliveries.
        #[arg(long)]
        parked: bool,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Send parked deliveries again (their attempts counted from zero).
    Resend {
        /// Delivery ids.
        ids: Vec<String>,
        /// Every parked delivery.
        #[arg(long, conflicts_with = "ids")]
        all_parked: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ScheduleAction {
    /// Create a schedule, or change the one of that name.
    Set {
        /// Its name.
        name: String,
        /// A cron expression (5 fields, or 6 with seconds first), e.g. "0 2 * * *".
        #[arg(long, required_unless_present = "every", conflicts_with = "every")]
        cron: Option<String>,
        /// The cron expression's IANA time zone, e.g. Europe/Berlin.
        #[arg(long, default_value = "UTC", requires = "cron")]
        tz: String,
        /// Or a fixed interval, in seconds.
        #[arg(long)]
        every: Option<u64>,
        /// The task each tick enqueues.
        #[arg(long)]
        task: String,
        /// Its payload, as JSON.
        #[arg(long, value_parser = parse_payload, default_value = "null")]
        payload: Payload,
        /// high, normal or low.
        #[arg(long, value_parser = parse_priority)]
        priority: Option<Priority>,
        /// Retries after the first attempt.
        #[arg(long)]
        max_retries: Option<u32>,
        /// The jobs' group.
        #[arg(long)]
        group: Option<String>,
        /// Missed ticks (due longer ago than --grace): skip, once (the latest of them) or
        /// each:N (the latest N).
        #[arg(long, value_parser = parse_missed, default_value = "once")]
        missed: MissedTicks,
        /// Seconds a tick may be late and still be on time.
        #[arg(long, default_value_t = 60)]
        grace: u64,
        /// Create it paused.
        #[arg(long)]
        paused: bool,
    },
    /// Every schedule with its next run.
    List,
    /// One schedule.
    Show {
        /// Its name.
        name: String,
    },
    /// Stop a schedule ticking until `resume`.
    Pause {
        /// Its name.
        name: String,
    },
    /// Resume a schedule from its next tick after now.
    Resume {
        /// Its name.
        name: String,
    },
    /// Delete a schedule (the jobs it enqueued stay).
    Delete {
        /// Its name.
        name: String,
    },
    /// Fire the due schedules once now (what every worker does each second).
    RunDue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Human,
    Json,
}

fn parse_payload(s: &str) -> Result<Payload, String> {
    Payload::from_json(s).map_err(|e| e.chain())
}

fn parse_child(s: &str) -> Result<(String, Payload), String> {
    let (task, payload) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not TASK:JSON"))?;
    if task.is_empty() {
        return Err(format!("`{s}` has no task before `:`"));
    }
    Ok((task.to_owned(), parse_payload(payload)?))
}

fn parse_missed(s: &str) -> Result<MissedTicks, String> {
    MissedTicks::from_str(s).map_err(|e| e.to_string())
}

fn parse_policy(s: &str) -> Result<ChildPolicy, String> {
    ChildPolicy::parse(s).map_err(|e| e.to_string())
}

fn parse_priority(s: &str) -> Result<Priority, String> {
    Priority::from_str(s).map_err(|e| e.to_string())
}

fn parse_status(s: &str) -> Result<JobStatus, String> {
    JobStatus::from_str(s).map_err(|e| e.to_string())
}

fn parse_bulk_action(s: &str) -> Result<queue_core::BulkAction, String> {
    queue_core::BulkAction::from_str(s).map_err(|e| e.to_string())
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

fn parse_id(s: &str) -> Result<JobId, String> {
    JobId::from_str(s).map_err(|e| e.to_string())
}

/// The exit code of an error.
fn exit_code(err: &Error) -> u8 {
    match err {
        Error::NotFound { .. } | Error::ScheduleNotFound { .. } => 3,
        Error::AlreadyExists { .. } => 4,
        Error::InvalidTransition { .. } | Error::NotDeletable { .. } => 5,
        Error::Config { .. } | Error::InvalidArgument { .. } => 2,
        _ => 1,
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help, --version
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            // One line, not clap's usage block.
            let text = err.to_string();
            eprintln!(
                "{}",
                text.lines().next().unwrap_or("error: invalid arguments")
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", err.chain());
            ExitCode::from(exit_code(&err))
        }
    }
}
