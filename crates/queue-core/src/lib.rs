#![doc = include_str!("../README.md")]

mod broker;
mod bulk;
mod chains;
mod clock;
mod config;
mod control;
mod error;
mod event;
mod flow;
mod group;
mod handoff;
mod id;
mod job;
mod keys;
mod lease;
mod limits;
mod outcome;
mod partitions;
mod payload;
mod priority;
mod progress;
mod rate;
mod record;
mod retry;
mod rules;
mod schedule;
mod sequences;
pub mod series;
mod state;
mod store;
mod tasks;
mod trace;
mod umbrella;
mod webhook;

// Producers, operators and handler authors: the job, the store, the errors.
pub use bulk::{
    BulkAction, BulkActions, BulkFilter, BulkRequest, BulkStep, Found, MAX_BULK_STEP,
    MAX_SEARCH_SCAN, Search,
};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use config::{QueueConfig, QueueConfigBuilder, RedisUrl};
pub use control::{Control, GroupControl};
pub use error::{BoxError, Error, Result};
pub use event::{
    EVENT_LOG_LEN, EVENT_LOG_LINGER, EventKind, EventStream, JobEvent, parse_event_id,
};
pub use flow::{ChildCounts, ChildPolicy, Flow, FlowTree};
pub use group::{GroupList, GroupStats};
pub use id::{JobId, LeaseToken, WorkerId};
pub use job::{Done, IntoOutput, Job, KeyField, MAX_TASK_NAME_BYTES};
pub use keys::{KeyMode, KeyModeKind};
pub use limits::Limits;
pub use outcome::{Completion, JobError, JobErrorKind};
pub use payload::Payload;
pub use priority::Priority;
pub use progress::Stages;
pub use rate::RateLimit;
pub use record::{Attempt, EnqueueOptions, JobRecord, MAX_ATTEMPTS_KEPT, Metadata, NewJob};
pub use retry::RetryPolicy;
pub use schedule::{
    Cadence, MissedTicks, Schedule, ScheduleRecord, ScheduledJob, Schedules, TickReport,
};
pub use sequences::MAX_SEQUENCE_BYTES;
pub use series::{Series, SeriesPoint, SeriesSpan};
pub use state::JobStatus;
#[cfg(feature = "mock")]
pub use store::MockJobStore;
pub use store::{
    CancelOutcome, JobStore, LifetimeTotals, ListQuery, Page, QueueStats, WAIT_RECHECK, WorkerInfo,
};
pub use tasks::{TaskEntry, task_catalog};
pub use umbrella::{Backend, JobStoreExt, SharedBackend};
pub use webhook::{
    DeliveredJob, Delivery, DeliveryBody, Webhook, signature as webhook_signature,
    verify_signature as verify_webhook_signature,
};

/// For backend implementers and the worker runtime: the [`Broker`](backend::Broker) trait
/// a worker drives, the state machine and every other rule about a job (backends call
/// them, the Redis scripts are generated from them), and the helpers a backend needs
/// (time conversion, cursor encoding, validation).
pub mod backend {
    #[cfg(feature = "mock")]
    pub use crate::broker::MockBroker;
    pub use crate::broker::{
        Blocked, BlockedGuard, Broker, CancelStream, ClaimRequest, Ending, Finished, FinishedMany,
        HeartbeatReply, Lease, LeaseRef, ProgressReply, WorkerBeat,
    };
    pub use crate::chains::{check_takes_children, released_due};
    pub use crate::clock::{Millis, TokioClock, duration_ms, from_millis, to_millis};
    pub use crate::config::validate_queue_name;
    pub use crate::flow::{
        CANCEL_STEP, DeleteDecision, FlatJob, MAX_FLOW_DEPTH, MAX_FLOW_JOBS, ParentAction, Reopen,
        accepts_children, child_failed_message, child_failed_template, flatten_all,
        is_child_failure, is_parent_of, on_child_ended, on_child_reopened, on_delete,
        retention_keeps_child, waits_on_children,
    };
    pub use crate::group::{
        MAX_GROUP_BYTES, MAX_GROUP_WEIGHT, MAX_GROUPS_LISTED, check_group_concurrency,
        check_group_name, check_group_weight, check_groups_limit, group_admits, group_rate_admits,
        unfinished_change, ungrouped_goes_first, weighted_turn,
    };
    pub use crate::handoff::{Handoff, detached, finish_guarded};
    pub use crate::id::{ClaimId, hostname};
    pub use crate::job::{
        MAX_TASK_SCHEMA_BYTES, check_task_name, check_task_schema, task_name_problem,
    };
    pub use crate::keys::{Holder, KeyAction, on_key_held};
    pub use crate::lease::{
        check_heartbeat, fence_margin, heartbeat_retry, lease_holds, longest_heartbeat,
    };
    pub use crate::limits::{
        MAX_CLAIM, MAX_CONCURRENCY, MAX_ENDINGS, MAX_ENQUEUE_STEP, MAX_STEP_BYTES, bound_text,
        too_many,
    };
    pub use crate::outcome::Outcome;
    pub use crate::partitions::{
        MAX_PARTITION_KEY_BYTES, MAX_PARTITIONS, Route, check_partitions, partition_of, route,
        route_children, route_flow, route_together, routing_key, split_rate,
    };
    pub use crate::progress::{Monotonic, check_progress};
    pub use crate::rate::{MAX_COST, check_cost};
    pub use crate::schedule::{
        DEFAULT_GRACE, Firing, MAX_CATCH_UP, MAX_SCHEDULE_NAME_BYTES, MAX_SCHEDULES, MIN_INTERVAL,
        SCHEDULE_POLL, SCHEDULES_PER_READ, ScheduleRead, ScheduleWrite, ScheduleWritten,
        StoredSchedules, check_schedule_name, tick_job_id,
    };
    pub use crate::state::{Event, InvalidTransition, apply};
    pub use crate::store::{
        LOST_WORKER_KEPT, encode_cursor, listed_at, retention_cutoff, worker_listing,
    };
    pub use crate::trace::{TRACE_CONTEXT_KEY, trace_carrier};
    pub use crate::webhook::{
        ClaimedDelivery, DELIVERY_LEASE, DELIVERY_TIMEOUT, MAX_RETRY_DELAY, MAX_WEBHOOK_NAME_BYTES,
        MAX_WEBHOOKS, Settle, check_webhook_name, retry_delay,
    };

    /// Every decision about a job besides the transitions, as pure functions (the Redis
    /// scripts' tables are generated from them).
    pub mod rules {
        pub use crate::rules::*;
    }

    /// The state machine: one pure `apply(status, event)`.
    pub mod state {
        pub use crate::state::*;
    }
}

/// What `#[derive(Job)]` expands to refers to; not a public interface.
#[doc(hidden)]
pub mod __private {
    pub use crate::job::{KeyField, schema_of, task_name_problem};
    pub use crate::{ChildPolicy, EnqueueOptions, Priority, Stages};
    pub use serde_json::Value;
}
