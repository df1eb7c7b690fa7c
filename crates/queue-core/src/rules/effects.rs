//! What each event writes on the record ([`effect`]), and the input it writes from.

use crate::JobRecord;
use crate::backend::{Event, Outcome, apply};

/// A field of the record that events change (the status is `apply`'s business).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// `attempts`: the unsuccessful attempts ([`crate::JobRecord::attempts`]).
    Attempts,
    /// `progress`.
    Progress,
    /// `current_step`.
    CurrentStep,
    /// `error_message`.
    ErrorMessage,
    /// `retry_count`.
    RetryCount,
    /// `started_at`.
    StartedAt,
    /// `completed_at`.
    CompletedAt,
    /// `run_at`.
    RunAt,
    /// `worker_id`.
    WorkerId,
    /// `result`.
    Result,
    /// `cancel_requested`.
    CancelRequested,
    /// `after`: the job it waits for ([`crate::JobRecord::after`]).
    After,
}

impl Field {
    /// Every field.
    pub const ALL: [Field; 12] = [
        Self::Attempts,
        Self::Progress,
        Self::CurrentStep,
        Self::ErrorMessage,
        Self::RetryCount,
        Self::StartedAt,
        Self::CompletedAt,
        Self::RunAt,
        Self::WorkerId,
        Self::Result,
        Self::CancelRequested,
        Self::After,
    ];

    /// The field's name on the record (and in a Redis job hash).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attempts => "attempts",
            Self::Progress => "progress",
            Self::CurrentStep => "current_step",
            Self::ErrorMessage => "error_message",
            Self::RetryCount => "retry_count",
            Self::StartedAt => "started_at",
            Self::CompletedAt => "completed_at",
            Self::RunAt => "run_at",
            Self::WorkerId => "worker_id",
            Self::Result => "result",
            Self::CancelRequested => "cancel_requested",
            Self::After => "after",
        }
    }
}

/// How an event changes one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Change {
    /// Unset it (`None`, `false`).
    Clear,
    /// The time of the event.
    Now,
    /// 0 (progress, retry count).
    Zero,
    /// 100 (progress).
    Full,
    /// One more (retry count).
    Increment,
    /// What the event carries: the error message, the result, the due time of a retry,
    /// the worker that starts the attempt ([`EffectInput`]).
    Input,
    /// The attempt that ends, appended (its start, worker and the event's error, as the
    /// record holds them before the rest of the effect), the oldest dropped beyond
    /// [`crate::MAX_ATTEMPTS_KEPT`]. Listed first in an effect.
    Append,
}

impl Change {
    /// The wire name (used in the generated Lua).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clear => "clear",
            Self::Now => "now",
            Self::Zero => "zero",
            Self::Full => "full",
            Self::Increment => "incr",
            Self::Input => "input",
            Self::Append => "append",
        }
    }
}

/// What `event` writes on the record, besides the status; fields not listed keep their
/// value.
pub fn effect(event: Event) -> &'static [(Field, Change)] {
    use Change::*;
    use Field::*;
    match event {
        Event::Start => &[
            (StartedAt, Now),
            (Progress, Zero),
            (CurrentStep, Clear),
            (RunAt, Clear),
            (WorkerId, Input),
        ],
        Event::Complete => &[
            (Progress, Full),
            (ErrorMessage, Clear),
            (Result, Input),
            (CompletedAt, Now),
            (RunAt, Clear),
            (WorkerId, Clear),
        ],
        Event::CompletePartial => &[
            (Progress, Full),
            (ErrorMessage, Input),
            (Result, Input),
            (CompletedAt, Now),
            (RunAt, Clear),
            (WorkerId, Clear),
        ],
        Event::Fail => &[
            (Attempts, Append),
            (ErrorMessage, Input),
            (CompletedAt, Now),
            (RunAt, Clear),
            (WorkerId, Clear),
        ],
        // A job cancelled while it waited for another no longer waits.
        Event::Cancel => &[
            (CompletedAt, Now),
            (RunAt, Clear),
            (WorkerId, Clear),
            (After, Clear),
        ],
        Event::ChildFailed => &[
            (ErrorMessage, Input),
            (CompletedAt, Now),
            (RunAt, Clear),
            (WorkerId, Clear),
        ],
        Event::Retry => &[
            (Attempts, Append),
            (ErrorMessage, Input),
            (RetryCount, Increment),
            (Progress, Zero),
            (CurrentStep, Clear),
            (RunAt, Input),
            (WorkerId, Clear),
        ],
        Event::Release => &[
            (Progress, Zero),
            (CurrentStep, Clear),
            (RunAt, Clear),
            (WorkerId, Clear),
        ],
        Event::Snooze => &[
            (Progress, Zero),
            (CurrentStep, Clear),
            (RunAt, Input),
            (WorkerId, Clear),
        ],
        Event::LeaseExpired => &[
            (Attempts, Append),
            (ErrorMessage, Input),
            (RetryCount, Increment),
            (Progress, Zero),
            (CurrentStep, Clear),
            (RunAt, Clear),
            (WorkerId, Clear),
        ],
        Event::ManualRetry => &[
            (Progress, Zero),
            (CurrentStep, Clear),
            (ErrorMessage, Clear),
            (Result, Clear),
            (RetryCount, Zero),
            (StartedAt, Clear),
            (CompletedAt, Clear),
            (RunAt, Clear),
            (WorkerId, Clear),
            (CancelRequested, Clear),
        ],
    }
}

/// The fields a lease holder writes during an attempt (by reporting progress). Every way
/// into `queued` leaves them as `Start` writes them, so a backend may defer the rest of
/// `Start`'s effect to the end of the attempt (the Redis backend keeps a running job's
/// lease apart from its record, and writes the record when the attempt ends).
pub const PROGRESS_FIELDS: [Field; 2] = [Field::Progress, Field::CurrentStep];

/// What an event carries into its [`effect`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EffectInput {
    /// The event's time (ms).
    pub now: crate::backend::Millis,
    /// `error_message` for events that set it.
    pub error: Option<String>,
    /// `result` for events that set it.
    pub result: Option<serde_json::Value>,
    /// `run_at` (ms) of a retry or a snooze.
    pub due: Option<crate::backend::Millis>,
    /// `worker_id` of a start.
    pub worker: Option<String>,
}

impl EffectInput {
    /// What an attempt's `outcome` carries into its event's effect at `now`: the result,
    /// the error, and the due time of a retry, a snooze or a rate limit (capped by
    /// `limits`). Every backend ends an attempt with it.
    pub fn of_outcome(
        outcome: Outcome,
        now: crate::backend::Millis,
        limits: &crate::Limits,
    ) -> Self {
        let mut input = Self {
            now,
            ..Self::default()
        };
        match outcome {
            Outcome::Completed { result } => input.result = result,
            Outcome::Partial { result, error } => {
                input.result = result;
                input.error = Some(error);
            }
            Outcome::Retry { error, delay } => {
                input.error = Some(error);
                input.due = Some(limits.due(now, delay));
            }
            Outcome::Failed { error } => input.error = Some(error),
            Outcome::Snoozed { delay }
            | Outcome::RateLimited {
                retry_after: delay, ..
            } => input.due = Some(limits.due(now, delay)),
            Outcome::Cancelled | Outcome::Released => {}
        }
        input
    }
}

impl JobRecord {
    /// Applies `event`: the status from [`apply`], the fields from [`effect`].
    pub fn apply_event(
        &mut self,
        event: Event,
        input: &EffectInput,
    ) -> Result<(), crate::backend::InvalidTransition> {
        self.status = apply(self.status, event)?;
        self.apply_effect(effect(event), input);
        Ok(())
    }

    /// Writes `changes` on the record (the status is left alone).
    pub fn apply_effect(&mut self, changes: &[(Field, Change)], input: &EffectInput) {
        let now = crate::backend::from_millis(input.now);
        for (field, change) in changes {
            match (field, change) {
                (Field::Progress, Change::Zero) => self.progress = 0,
                (Field::Progress, Change::Full) => self.progress = 100,
                (Field::CurrentStep, _) => self.current_step = None,
                (Field::ErrorMessage, Change::Input) => self.error_message = input.error.clone(),
                (Field::ErrorMessage, _) => self.error_message = None,
                (Field::RetryCount, Change::Increment) => {
                    self.retry_count = self.retry_count.saturating_add(1)
                }
                (Field::RetryCount, _) => self.retry_count = 0,
                (Field::StartedAt, Change::Now) => self.started_at = Some(now),
                (Field::StartedAt, _) => self.started_at = None,
                (Field::CompletedAt, Change::Now) => self.completed_at = Some(now),
                (Field::CompletedAt, _) => self.completed_at = None,
                (Field::RunAt, Change::Input) => {
                    self.run_at = input.due.map(crate::backend::from_millis)
                }
                (Field::RunAt, _) => self.run_at = None,
                (Field::WorkerId, Change::Input) => self.worker_id = input.worker.clone(),
                (Field::WorkerId, _) => self.worker_id = None,
                (Field::Result, Change::Input) => self.result = input.result.clone(),
                (Field::Result, _) => self.result = None,
                (Field::CancelRequested, _) => self.cancel_requested = false,
                (Field::After, _) => self.after = None,
                (Field::Attempts, _) => {
                    let attempt = self
                        .attempts
                        .last()
                        .map_or(1, |a| a.attempt.saturating_add(1));
                    self.attempts.push(crate::Attempt {
                        attempt,
                        started_at: self.started_at,
                        ended_at: now,
                        worker_id: self.worker_id.clone(),
                        error: input.error.clone(),
                    });
                    let over = self.attempts.len().saturating_sub(crate::MAX_ATTEMPTS_KEPT);
                    self.attempts.drain(..over);
                }
                (Field::Progress, _) => {}
            }
        }
    }
}
