//! The job state machine: one pure function that every backend obeys.
//!
//! ```text
//! queued ──start──▶ processing ──complete──▶ completed
//!   │                   ├── complete_partial ──▶ partial
//!   │                   ├── fail ──▶ failed
//!   │                   ├── cancel ──▶ cancelled
//!   │                   ├── retry (retries left) ──▶ queued
//!   │                   ├── release (graceful shutdown) ──▶ queued
//!   │                   └── lease_expired (worker died) ──▶ queued
//!   ├── cancel ──▶ cancelled
//!   └── child_failed (a child of a waiting parent failed it) ──▶ failed
//! failed | partial | cancelled ──manual_retry──▶ queued
//! ```
//!
//! Backends never decide a next state themselves: they compute it with [`apply`] (the
//! Redis scripts carry a table generated from it) and compare-and-set.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::Error;

/// Where a job is in its life. Serialized lower-case (`"queued"`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting to run (possibly delayed until `run_at`).
    Queued,
    /// Leased by a worker and running.
    Processing,
    /// Finished successfully.
    Completed,
    /// Finished with an error and no retries left (or a permanent error).
    Failed,
    /// Finished; some non-critical steps failed (the record says which).
    Partial,
    /// Cancelled before or while running; never retried automatically.
    Cancelled,
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 6] = [
        Self::Queued,
        Self::Processing,
        Self::Completed,
        Self::Failed,
        Self::Partial,
        Self::Cancelled,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Partial => "partial",
            Self::Cancelled => "cancelled",
        }
    }

    /// Completed, failed, partial or cancelled: the job will not run again by itself.
    pub fn is_terminal(self) -> bool {
        !self.is_active()
    }

    /// Queued or processing: the job holds its unique key.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Queued | Self::Processing)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown status `{s}` (expected one of queued, processing, completed, failed, partial, cancelled)"
                ))
            })
    }
}

/// Something that happens to a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A worker leased the job.
    Start,
    /// The handler succeeded.
    Complete,
    /// The handler finished with some non-critical steps failed.
    CompletePartial,
    /// The attempt failed and no retry follows.
    Fail,
    /// The attempt failed and a retry is scheduled.
    Retry,
    /// A worker shutting down handed the job back unfinished (no attempt used).
    Release,
    /// The handler said "not now": the job waits until its `run_at`, no attempt used.
    Snooze,
    /// The lease expired: the worker died or hung (counts as an attempt).
    LeaseExpired,
    /// Cancelled by a caller (queued), or acknowledged by the lease holder (processing).
    Cancel,
    /// An operator re-queued a finished, unsuccessful job.
    ManualRetry,
    /// A child of this queued parent failed under `ChildPolicy::FailParent`: the parent
    /// fails without running.
    ChildFailed,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 11] = [
        Self::Start,
        Self::Complete,
        Self::CompletePartial,
        Self::Fail,
        Self::Retry,
        Self::Release,
        Self::Snooze,
        Self::LeaseExpired,
        Self::Cancel,
        Self::ManualRetry,
        Self::ChildFailed,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Complete => "complete",
            Self::CompletePartial => "complete_partial",
            Self::Fail => "fail",
            Self::Retry => "retry",
            Self::Release => "release",
            Self::Snooze => "snooze",
            Self::LeaseExpired => "lease_expired",
            Self::Cancel => "cancel",
            Self::ManualRetry => "manual_retry",
            Self::ChildFailed => "child_failed",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Reads well in "cannot {event} a job that is {status}".
        f.write_str(match self {
            Self::Start => "start",
            Self::Complete => "complete",
            Self::CompletePartial => "partially complete",
            Self::Fail => "fail",
            Self::Retry => "retry",
            Self::Release => "release",
            Self::Snooze => "snooze",
            Self::LeaseExpired => "expire the lease of",
            Self::Cancel => "cancel",
            Self::ManualRetry => "manually retry",
            Self::ChildFailed => "fail on a child's failure",
        })
    }
}

/// The refusal of an event in a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot {event} a job that is {from}")]
pub struct InvalidTransition {
    /// The current state.
    pub from: JobStatus,
    /// The refused event.
    pub event: Event,
}

impl InvalidTransition {
    /// The refusal as the queue's error, naming the job.
    pub fn of(self, id: crate::JobId) -> Error {
        Error::InvalidTransition {
            id,
            from: self.from,
            event: self.event,
        }
    }
}

/// The state machine: the next status after `event`, or the refusal.
pub fn apply(from: JobStatus, event: Event) -> Result<JobStatus, InvalidTransition> {
    use Event as E;
    use JobStatus as S;
    let next = match (from, event) {
        (S::Queued, E::Start) => S::Processing,
        (S::Queued, E::Cancel) => S::Cancelled,
        (S::Queued, E::ChildFailed) => S::Failed,
        (S::Processing, E::Complete) => S::Completed,
        (S::Processing, E::CompletePartial) => S::Partial,
        (S::Processing, E::Fail) => S::Failed,
        (S::Processing, E::Cancel) => S::Cancelled,
        (S::Processing, E::Retry | E::Release | E::Snooze | E::LeaseExpired) => S::Queued,
        (S::Failed | S::Partial | S::Cancelled, E::ManualRetry) => S::Queued,
        _ => return Err(InvalidTransition { from, event }),
    };
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole table, written out by hand so a change to `apply` must change it too.
    #[test]
    fn every_state_event_pair() {
        use Event as E;
        use JobStatus as S;
        let allowed: &[(S, E, S)] = &[
            (S::Queued, E::Start, S::Processing),
            (S::Queued, E::Cancel, S::Cancelled),
            (S::Queued, E::ChildFailed, S::Failed),
            (S::Processing, E::Complete, S::Completed),
            (S::Processing, E::CompletePartial, S::Partial),
            (S::Processing, E::Fail, S::Failed),
            (S::Processing, E::Cancel, S::Cancelled),
            (S::Processing, E::Retry, S::Queued),
            (S::Processing, E::Release, S::Queued),
            (S::Processing, E::Snooze, S::Queued),
            (S::Processing, E::LeaseExpired, S::Queued),
            (S::Failed, E::ManualRetry, S::Queued),
            (S::Partial, E::ManualRetry, S::Queued),
            (S::Cancelled, E::ManualRetry, S::Queued),
        ];
        let mut checked = 0;
        for from in S::ALL {
            for event in E::ALL {
                let expected = allowed
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|(_, _, to)| *to);
                match (apply(from, event), expected) {
                    (Ok(to), Some(want)) => assert_eq!(to, want, "{from} + {event:?}"),
                    (Err(err), None) => {
                        assert_eq!(err, InvalidTransition { from, event });
                    }
                    (got, want) => panic!("{from} + {event:?}: got {got:?}, want {want:?}"),
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 66);
    }

    #[test]
    fn completed_jobs_are_never_retried() {
        assert!(apply(JobStatus::Completed, Event::ManualRetry).is_err());
        assert!(apply(JobStatus::Completed, Event::Cancel).is_err());
    }

    #[test]
    fn statuses_round_trip_lower_case() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>().unwrap(), status);
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        assert!("Queued".parse::<JobStatus>().is_err());
        assert!(JobStatus::Queued.is_active() && JobStatus::Processing.is_active());
        assert!(JobStatus::Partial.is_terminal());
    }
}
