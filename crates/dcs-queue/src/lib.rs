//! A background job queue for Rust that stays correct when workers crash.
//!
//! Producers enqueue jobs from any process; workers in others run them with leases and
//! heartbeats, retries with exponential backoff, priorities, unique keys, cancellation of
//! running jobs and stage-weighted progress. Redis (and Redis Cluster) in production; an
//! in-memory backend with the same behaviour for tests. This crate is the one dependency a
//! user needs; the layers underneath (`queue-core`, `queue-memory`, `queue-redis`,
//! `queue-worker`) are re-exported by audience:
//!
//! | who | where |
//! |---|---|
//! | producers and operators | the crate root: [`NewJob`], [`JobStore`], [`JobRecord`], [`Error`], ... (about 30 names) |
//! | the topics | [`typed`], [`schedules`], [`webhooks`], [`bulk`], [`series`], [`events`], [`groups`], [`flows`], [`records`], [`config`] |
//! | handler authors | [`prelude`], or [`worker`] alone |
//! | backends | `memory` (feature `memory`, default), `redis` (feature `redis`), `postgres` (feature `postgres`) |
//! | backend implementers | [`backend`]: the `Broker` trait, the state machine, the rules and their helpers |
//!
//! # Features
//!
//! - `memory` (default): `memory::MemoryBackend`.
//! - `derive` (default): `#[derive(Job)]` (the `queue-macros` crate).
//! - `schema`: `#[job(schema)]` shares a typed job's payload schema (`schemars`) with
//!   operators (`queuectl tasks`, the dashboard's workers page).
//! - `redis`: `redis::RedisBackend`, standalone or Cluster.
//! - `postgres`: `postgres::PostgresBackend`, with enqueue and completion inside the
//!   application's own transaction (sqlx).
//! - `tls`: `rediss://` URLs (rustls); implies `redis`.
//! - `test-utils`: `redis::testing`, throwaway `redis-server` processes and a unique,
//!   self-cleaning queue per test, for your own integration tests; implies `redis`. With
//!   `postgres`, also `postgres::testing`: a schema per test, dropped after it, on
//!   `DCS_DATABASE_URL` or a private server started from the installed binaries.
//! - `testcontainers`: `redis::testing::RedisContainer` (Redis in Docker), and with
//!   `postgres` `postgres::testing::PostgresContainer`; implies `test-utils`.
//! - `opentelemetry`: a job carries the trace context it was enqueued in (the current
//!   `tracing` span, through `tracing-opentelemetry`), and the worker's `job` span continues
//!   it, so a request and the job it caused show as one trace. Set a global propagator
//!   (`opentelemetry::global::set_text_map_propagator`) in both processes.
//! - `mock`: `backend::MockJobStore` and `backend::MockBroker` (mockall) for unit tests.
//!
//! # A producer and a worker
//!
//! ```
//! use std::sync::Arc;
//! use dcs_queue::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Book { title: String, pages: u32 }
//!
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let backend = Arc::new(MemoryBackend::new()); // or RedisBackend::from_env().await?
//!
//! // Producer: any process holding a backend.
//! let job = backend
//!     .enqueue(NewJob::new("process_book", &Book { title: "Dune".into(), pages: 412 })?
//!         .unique_key("book-42")
//!         .priority(Priority::High))
//!     .await?;
//! assert_eq!(job.status, JobStatus::Queued);
//!
//! // Worker: a handler per task name, with a typed payload.
//! let stop = CancellationToken::new();
//! let worker = Worker::builder(backend.clone())
//!     .register("process_book", |book: Book, ctx: JobContext| async move {
//!         ctx.progress(20, Some("text_extraction")).await;
//!         if book.pages == 0 {
//!             return Err(JobError::permanent("empty book")); // no retry
//!         }
//!         Ok(())
//!     })
//!     .build()?;
//! let running = tokio::spawn(worker.run(stop.clone())); // or .run_until_signal()
//!
//! while !backend.get(job.job_id).await?.status.is_terminal() {
//!     tokio::time::sleep(std::time::Duration::from_millis(5)).await;
//! }
//! assert_eq!(backend.get(job.job_id).await?.status, JobStatus::Completed);
//! stop.cancel();
//! running.await??;
//! # Ok(())
//! # }
//! ```
//!
//! # A typed job, end to end
//!
//! One definition ties the task name, the payload and the result; the compiler checks the
//! producer and the handler against it (options: [`macro@Job`]):
//!
//! ```
//! use dcs_queue::prelude::*;
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! #[derive(serde::Serialize, serde::Deserialize, Job)]
//! #[job(name = "hello", output = String)]
//! struct Hello { name: String }
//!
//! let backend = std::sync::Arc::new(MemoryBackend::new());
//! let job = backend.enqueue_job(&Hello { name: "world".into() }).await?;
//! let worker = Worker::builder(backend.clone())
//!     .handle::<Hello>(|hello: Hello, _| async move { Ok(format!("hello, {}", hello.name)) })
//!     .build()?;
//! # let stop = CancellationToken::new();
//! # let running = tokio::spawn(worker.run(stop.clone()));
//! let done = backend.wait(job.job_id, std::time::Duration::from_secs(10)).await?;
//! assert_eq!(done.output::<Hello>()?.as_deref(), Some("hello, world"));
//! # stop.cancel();
//! # running.await??;
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

// The README's examples are compiled (and run) as tests of this crate (with `test-utils`,
// which `cargo test --workspace` turns on through `examples/`).
#[cfg(all(doctest, feature = "test-utils"))]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

// The root: what a producer and an operator name (the topics below hold the rest).
pub use queue_core::{
    Backend, CancelOutcome, ChildPolicy, Completion, Control, EnqueueOptions, Error, Flow, Job,
    JobError, JobId, JobRecord, JobStatus, JobStore, JobStoreExt, KeyMode, ListQuery, NewJob, Page,
    Priority, QueueConfig, QueueStats, RateLimit, Result, RetryPolicy, SharedBackend, Stages,
};
/// `#[derive(Job)]`: see [`macro@Job`] for its options (feature `derive`, on by default).
#[cfg(feature = "derive")]
#[cfg_attr(docsrs, doc(cfg(feature = "derive")))]
pub use queue_macros::Job;
pub use queue_worker::{CancellationToken, JobContext, Worker, WorkerConfig};

#[doc(hidden)]
pub use queue_core::__private;

/// Typed jobs beyond the [`Job`] trait: what a typed handler returns, the fields a derived
/// job takes its key and group from.
pub mod typed {
    pub use queue_core::{Done, IntoOutput, KeyField, MAX_TASK_NAME_BYTES};
}

/// A job's record in detail: its attempts, payload and metadata, error kinds, the queue's
/// lifetime totals and live workers.
pub mod records {
    pub use queue_core::{
        Attempt, BoxError, JobErrorKind, LifetimeTotals, MAX_ATTEMPTS_KEPT, Metadata, Payload,
        WorkerInfo,
    };
}

/// The queue's configuration beyond [`QueueConfig`]: its builder, the size limits, and
/// the clocks (a [`config::ManualClock`] drives time in tests).
pub mod config {
    pub use queue_core::{
        Clock, Limits, ManualClock, QueueConfigBuilder, RedisUrl, SharedClock, SystemClock,
    };
}

/// Groups: fair share, concurrency, pause and rate limits per group ([`crate::Control`]).
pub mod groups {
    pub use queue_core::{GroupControl, GroupList, GroupStats};
}

/// Flows and batches: a parent released by its children.
pub mod flows {
    pub use queue_core::{ChildCounts, ChildPolicy, Flow, FlowTree};
}

/// The queue's events: every transition, resumable after the last one seen.
pub mod events {
    pub use queue_core::{
        EVENT_LOG_LEN, EVENT_LOG_LINGER, EventKind, EventStream, JobEvent, parse_event_id,
    };
}

/// Schedules: cron or interval, each tick enqueued exactly once.
pub mod schedules {
    pub use queue_core::{
        Cadence, MissedTicks, Schedule, ScheduleRecord, ScheduledJob, Schedules, TickReport,
    };
}

/// Webhooks: durable deliveries of job endings, signed.
pub mod webhooks {
    pub use queue_core::{
        Delivery, Webhook, verify_webhook_signature as verify_signature,
        webhook_signature as signature,
    };
}

/// Bulk actions and search over a queue's jobs.
pub mod bulk {
    pub use queue_core::{BulkAction, BulkActions, BulkFilter, BulkRequest, BulkStep, Search};
}

/// The charts' series: counters and latencies per interval.
pub mod series {
    pub use queue_core::{Series, SeriesPoint, SeriesSpan};
}

/// The worker runtime: handlers, concurrency, leases, retries, graceful shutdown.
pub mod worker {
    pub use queue_worker::*;
}

/// The in-memory backend: one process, the same behaviour as Redis.
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub mod memory {
    pub use queue_memory::*;
}

/// The Redis and Redis Cluster backend.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis {
    pub use queue_redis::*;
}

/// The PostgreSQL backend: enqueue and complete jobs inside your own transaction
/// (`PostgresBackend::enqueue_in`, `finish_in`).
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres {
    pub use queue_postgres::*;
}

/// For backend implementers and tools built on the traits: the `Broker` trait a worker
/// drives, the state machine, every rule about a job, and their helpers.
pub mod backend {
    #[cfg(feature = "mock")]
    pub use queue_core::MockJobStore;
    pub use queue_core::backend::*;
}

/// What a producer or a handler author names, in one import: `use dcs_queue::prelude::*;`.
pub mod prelude {
    #[cfg(feature = "memory")]
    pub use crate::memory::MemoryBackend;
    #[cfg(feature = "postgres")]
    pub use crate::postgres::PostgresBackend;
    #[cfg(feature = "redis")]
    pub use crate::redis::RedisBackend;
    pub use queue_core::{
        ChildPolicy, Completion, Done, Flow, Job, JobError, JobId, JobRecord, JobStatus, JobStore,
        JobStoreExt, MissedTicks, NewJob, Priority, QueueConfig, Schedule, Schedules, Stages,
    };
    #[cfg(feature = "derive")]
    pub use queue_macros::Job;
    pub use queue_worker::{CancellationToken, JobContext, Worker, WorkerConfig};
}
