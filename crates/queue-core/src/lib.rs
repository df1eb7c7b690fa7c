#![doc = include_str!("../README.md")]

mod backend;
mod broker;
mod clock;
mod config;
mod error;
mod event;
mod id;
mod job;
mod limits;
mod outcome;
mod priority;
mod progress;
mod record;
mod retry;
pub mod rules;
pub mod state;
mod store;

pub use backend::{Backend, JobStoreExt, SharedBackend};
#[cfg(feature = "mock")]
pub use broker::MockBroker;
pub use broker::{
    Broker, CancelStream, ClaimRequest, Ending, Finished, FinishedMany, HeartbeatReply, Lease,
    LeaseRef, LeaseStatus, WorkerBeat,
};
pub use clock::{
    Clock, ManualClock, Millis, SharedClock, SystemClock, TokioClock, duration_ms, from_millis,
    to_millis,
};
pub use config::{QueueConfig, QueueConfigBuilder, RedisUrl, validate_queue_name};
pub use error::{BoxError, Error, Result};
pub use event::{EventKind, EventStream, JobEvent};
pub use id::{ClaimId, JobId, LeaseToken, WorkerId, hostname};
pub use job::Job;
pub use limits::Limits;
pub use outcome::{Completion, JobError, JobErrorKind, Outcome};
pub use priority::Priority;
pub use progress::{Monotonic, Stages, check_progress};
pub use record::{EnqueueOptions, JobRecord, Metadata, NewJob, Payload};
pub use retry::RetryPolicy;
pub use state::{Event, InvalidTransition, JobStatus, apply};
#[cfg(feature = "mock")]
pub use store::MockJobStore;
pub use store::{
    CancelOutcome, JobStore, LifetimeTotals, ListQuery, Page, QueueStats, WorkerInfo, encode_cursor,
};
