//! Every decision about a job besides the legal transitions ([`crate::backend::apply`]): what an
//! outcome, an expired lease or a cancel becomes, what each event writes on the record,
//! where the job goes next and which lifetime counter it moves.
//!
//! Each is a pure function over a small domain, table-tested over the whole domain. The
//! memory backend calls them; the Redis scripts carry Lua tables generated from them
//! (`queue-redis/src/scripts.rs`), so the rules exist once, in Rust.
//!
//! ```
//! use queue_core::backend::rules::{settle, AttemptFacts, OutcomeKind};
//! use queue_core::backend::Event;
//!
//! // A failure with retries left is retried...
//! let facts = AttemptFacts { cancel_requested: false, retries_left: true };
//! assert_eq!(settle(OutcomeKind::Retry, facts), Event::Retry);
//! // ...unless a cancel was requested: the cancel wins over every outcome.
//! let cancelled = AttemptFacts { cancel_requested: true, ..facts };
//! assert_eq!(settle(OutcomeKind::Completed, cancelled), Event::Cancel);
//! ```

use std::fmt;

use crate::backend::{Event, Outcome, apply};
use crate::{JobRecord, JobStatus};

mod effects;
pub use effects::*;

/// What a lease holder reported, without its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutcomeKind {
    /// [`Outcome::Completed`].
    Completed,
    /// [`Outcome::Partial`].
    Partial,
    /// [`Outcome::Retry`].
    Retry,
    /// [`Outcome::Failed`].
    Failed,
    /// [`Outcome::Cancelled`].
    Cancelled,
    /// [`Outcome::Released`].
    Released,
    /// [`Outcome::Snoozed`].
    Snoozed,
    /// [`Outcome::RateLimited`].
    RateLimited,
}

impl OutcomeKind {
    /// Every kind.
    pub const ALL: [OutcomeKind; 8] = [
        Self::Completed,
        Self::Partial,
        Self::Retry,
        Self::Failed,
        Self::Cancelled,
        Self::Released,
        Self::Snoozed,
        Self::RateLimited,
    ];

    /// The wire name (as `Outcome::name`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Partial => "partial",
            Self::Retry => "retry",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Released => "released",
            Self::Snoozed => "snoozed",
            Self::RateLimited => "rate_limited",
        }
    }
}

impl fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Outcome {
    /// The outcome's kind.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Self::Completed { .. } => OutcomeKind::Completed,
            Self::Partial { .. } => OutcomeKind::Partial,
            Self::Retry { .. } => OutcomeKind::Retry,
            Self::Failed { .. } => OutcomeKind::Failed,
            Self::Cancelled => OutcomeKind::Cancelled,
            Self::Released => OutcomeKind::Released,
            Self::Snoozed { .. } => OutcomeKind::Snoozed,
            Self::RateLimited { .. } => OutcomeKind::RateLimited,
        }
    }
}

/// What the backend knows about a running job when its attempt ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AttemptFacts {
    /// A caller asked to cancel the job while it ran.
    pub cancel_requested: bool,
    /// `retry_count < max_retries`.
    pub retries_left: bool,
}

impl AttemptFacts {
    /// Every combination.
    pub const ALL: [AttemptFacts; 4] = [
        Self::new(false, false),
        Self::new(false, true),
        Self::new(true, false),
        Self::new(true, true),
    ];

    const fn new(cancel_requested: bool, retries_left: bool) -> Self {
        Self {
            cancel_requested,
            retries_left,
        }
    }

    /// The facts of `record`.
    pub fn of(record: &JobRecord) -> Self {
        Self {
            cancel_requested: record.cancel_requested,
            retries_left: record.has_retries_left(),
        }
    }
}

/// Whether an outcome holds every start of the queue until its delay has passed (applied
/// whatever the job became: a requested cancel ends the job, the provider's limit still
/// stands). For a job in a group, only the starts of its group are held (the limit is the
/// group's: a publisher's quota), whatever the other groups do.
pub fn holds_queue(kind: OutcomeKind) -> bool {
    kind == OutcomeKind::RateLimited
}

/// What an attempt's reported outcome becomes.
///
/// A requested cancel wins over every outcome, success included: the caller of
/// `cancel` was told the job would end `cancelled`, so it does (the handler's result is
/// not stored). A retry with no retries left is a failure; a snooze uses no attempt, so it
/// never fails a job.
pub fn settle(kind: OutcomeKind, facts: AttemptFacts) -> Event {
    if facts.cancel_requested {
        return Event::Cancel;
    }
    match kind {
        OutcomeKind::Completed => Event::Complete,
        OutcomeKind::Partial => Event::CompletePartial,
        OutcomeKind::Retry if facts.retries_left => Event::Retry,
        OutcomeKind::Retry | OutcomeKind::Failed => Event::Fail,
        OutcomeKind::Cancelled => Event::Cancel,
        OutcomeKind::Released => Event::Release,
        OutcomeKind::Snoozed | OutcomeKind::RateLimited => Event::Snooze,
    }
}

/// What a running job whose lease expired (its worker died or hung) becomes: back in its
/// old place counting an attempt, failed when no retries are left, cancelled when a cancel
/// was requested.
pub fn on_lease_expired(facts: AttemptFacts) -> Event {
    if facts.cancel_requested {
        Event::Cancel
    } else if facts.retries_left {
        Event::LeaseExpired
    } else {
        Event::Fail
    }
}

/// The error message a job gets when its lease expired.
pub fn lease_expired_message(worker: &str, retries_left: bool) -> String {
    let (before, after) = lease_expired_template(retries_left);
    format!("{before}{worker}{after}")
}

/// The two halves of [`lease_expired_message`] around the worker id (the Lua scripts are
/// generated with them).
pub fn lease_expired_template(retries_left: bool) -> (&'static str, &'static str) {
    if retries_left {
        ("lease expired: worker ", " stopped renewing it")
    } else {
        (
            "lease expired: worker ",
            " was lost and no retries are left",
        )
    }
}

/// What a caller's cancel does to a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CancelAction {
    /// The job is queued: it leaves the queue and is `cancelled` now (event `Cancel`).
    Cancel,
    /// The job is running: flag it and tell its lease holder (one `CancelRequested` event).
    Request,
    /// The job is running and its cancel was already requested: nothing more to do (no
    /// second event); the caller is told it is requested.
    AlreadyRequested,
    /// The job is finished: refused (`InvalidTransition`).
    Refuse,
}

impl CancelAction {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::Request => "request",
            Self::AlreadyRequested => "already_requested",
            Self::Refuse => "refuse",
        }
    }
}

/// What a caller's cancel does to a job in `status`.
pub fn on_cancel(status: JobStatus, cancel_requested: bool) -> CancelAction {
    match status {
        JobStatus::Processing if cancel_requested => CancelAction::AlreadyRequested,
        // A running job is stopped by its holder, who then acknowledges with `Cancel`.
        JobStatus::Processing => CancelAction::Request,
        status if apply(status, Event::Cancel).is_ok() => CancelAction::Cancel,
        _ => CancelAction::Refuse,
    }
}

/// Where a job goes after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Placement {
    /// Held under a lease.
    Leased,
    /// Ready, at the place it had before it started (no queue jumping, no demotion).
    ReadyInPlace,
    /// Ready, behind every job of its priority.
    ReadyAtBack,
    /// Waiting for its `run_at`.
    Delayed,
    /// Finished: kept for the retention period, then swept.
    Finished,
}

impl Placement {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Leased => "leased",
            Self::ReadyInPlace => "ready_in_place",
            Self::ReadyAtBack => "ready_at_back",
            Self::Delayed => "delayed",
            Self::Finished => "finished",
        }
    }
}

/// Where a job goes after `event`.
pub fn placement(event: Event) -> Placement {
    match event {
        Event::Start => Placement::Leased,
        Event::Release | Event::LeaseExpired => Placement::ReadyInPlace,
        Event::ManualRetry => Placement::ReadyAtBack,
        Event::Retry | Event::Snooze => Placement::Delayed,
        Event::Complete
        | Event::CompletePartial
        | Event::Fail
        | Event::Cancel
        | Event::ChildFailed => Placement::Finished,
    }
}

/// The lifetime counter (`LifetimeTotals` field) an event moves, if any. A recovered
/// lease also moves `recovered`, whatever it became.
pub fn counter(event: Event) -> Option<&'static str> {
    match event {
        Event::Complete => Some("completed"),
        Event::CompletePartial => Some("partial"),
        Event::Fail | Event::ChildFailed => Some("failed"),
        Event::Cancel => Some("cancelled"),
        Event::Retry => Some("retried"),
        Event::Start
        | Event::Release
        | Event::Snooze
        | Event::LeaseExpired
        | Event::ManualRetry => None,
    }
}

#[cfg(test)]
mod tests;
