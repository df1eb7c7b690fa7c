#![doc = include_str!("../README.md")]

mod ahead;
mod attempt;
mod batch;
mod builder;
mod config;
mod context;
mod egress;
mod handler;
mod registry;
mod reporter;
mod running;
mod shared;
mod shutdown;
mod upkeep;
mod webhooks;
mod worker;

pub use ahead::{GIVE_BACK, MOST_AHEAD};
pub use batch::{Batch, BatchJob, MAX_BATCH};
pub use builder::WorkerBuilder;
pub use config::WorkerConfig;
pub use egress::WebhookEgress;
pub use handler::Handler;
// Everything a handler author names, so that this crate (or the facade's prelude) is the
// only import a worker needs.
pub use context::{JobContext, StageReporter};
pub use queue_core::{
    Completion, Done, Error, Job, JobError, JobErrorKind, JobId, JobRecord, LeaseToken,
    QueueConfig, Result, RetryPolicy, Stages,
};
pub use shutdown::shutdown_signal;
pub use tokio_util::sync::CancellationToken;
pub use worker::{Worker, WorkerReport};
