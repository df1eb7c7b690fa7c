//! What a handler returns, and what a worker reports to the broker.

use std::{fmt, time::Duration};

use serde_json::Value;

use crate::BoxError;

/// A handler's error, typed by what should happen next.
///
/// Any error converts into a retryable `JobError`, so `?` works in handlers; use
/// [`JobError::permanent`] for errors that a retry cannot fix (bad input) and
/// [`JobError::retry_after`] when the handler knows when to come back (rate limits).
///
/// Like `anyhow::Error`, it does not implement `std::error::Error` (that would collide with
/// the blanket `From`); [`JobError::source`] gives the cause.
pub struct JobError {
    kind: JobErrorKind,
    source: BoxError,
}

/// How a failed attempt is treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobErrorKind {
    /// Retry with the policy's backoff while retries are left.
    Retry,
    /// Retry after this delay instead of the policy's backoff.
    RetryAfter(Duration),
    /// Fail now; never retry.
    Permanent,
    /// Not now: run again after this delay, without using an attempt (a provider's 429
    /// with `Retry-After`, a dependency not ready yet).
    Snooze(Duration),
    /// A limit outside the queue was hit (a provider's 429): snooze this job and hold every
    /// start of the queue, for every worker, for this long.
    RateLimited(Duration),
}

impl JobError {
    /// A retryable error (the default for `?`).
    pub fn retry(source: impl Into<BoxError>) -> Self {
        Self {
            kind: JobErrorKind::Retry,
            source: source.into(),
        }
    }

    /// A retryable error that asks for a specific delay.
    pub fn retry_after(delay: Duration, source: impl Into<BoxError>) -> Self {
        Self {
            kind: JobErrorKind::RetryAfter(delay),
            source: source.into(),
        }
    }

    /// An error no retry can fix: the job fails at once.
    pub fn permanent(source: impl Into<BoxError>) -> Self {
        Self {
            kind: JobErrorKind::Permanent,
            source: source.into(),
        }
    }

    /// Not now: the job goes back to waiting and runs again after `delay` (capped by the
    /// delay limit) without using an attempt, however often it snoozes. A requested cancel
    /// still wins.
    pub fn snooze(delay: Duration) -> Self {
        Self {
            kind: JobErrorKind::Snooze(delay),
            source: format!("snoozed for {delay:?}").into(),
        }
    }

    /// A limit outside the queue was hit (a provider answered 429 with `Retry-After`): the
    /// job snoozes for `retry_after` (no attempt used) and no job of its group (of the
    /// whole queue, for a job without a group) starts on any worker until then, so nobody
    /// else hammers the provider with that quota in the meantime.
    pub fn rate_limited(retry_after: Duration) -> Self {
        Self {
            kind: JobErrorKind::RateLimited(retry_after),
            source: format!("rate limited: retry after {retry_after:?}").into(),
        }
    }

    /// How the failed attempt is treated.
    pub fn kind(&self) -> JobErrorKind {
        self.kind
    }

    /// The cause.
    pub fn source(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }

    /// The cause and its sources, joined with `": "`: what the job record stores.
    pub fn message(&self) -> String {
        let mut out = self.source.to_string();
        let mut next = self.source.source();
        while let Some(err) = next {
            out.push_str(": ");
            out.push_str(&err.to_string());
            next = err.source();
        }
        out
    }
}

impl<E: Into<BoxError>> From<E> for JobError {
    fn from(err: E) -> Self {
        Self::retry(err)
    }
}

impl fmt::Debug for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobError")
            .field("kind", &self.kind)
            .field("message", &self.message())
            .finish()
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

/// A handler's successful result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Completion {
    /// Stored on the record as `result`.
    pub result: Option<Value>,
    /// When set, the job ends `partial` with this error message (non-critical steps
    /// failed; `result` says which).
    pub partial_error: Option<String>,
}

impl Completion {
    /// Completed, with nothing to store.
    pub fn done() -> Self {
        Self::default()
    }

    /// Completed, storing `result`.
    pub fn with_result(result: Value) -> Self {
        Self {
            result: Some(result),
            partial_error: None,
        }
    }

    /// Completed, storing `value` serialized (read it back with
    /// [`crate::JobRecord::result_as`]). A value that cannot be serialized is a permanent
    /// failure of the job, naming why.
    ///
    /// ```
    /// use queue_core::Completion;
    ///
    /// #[derive(serde::Serialize)]
    /// struct Counted { pages: u32 }
    ///
    /// let done = Completion::with(&Counted { pages: 320 }).unwrap();
    /// assert_eq!(done.result, Some(serde_json::json!({"pages": 320})));
    /// ```
    pub fn with<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, JobError> {
        serde_json::to_value(value)
            .map(Self::with_result)
            .map_err(|e| JobError::permanent(format!("result does not serialize: {e}")))
    }

    /// Partial: some non-critical steps failed. `details` says which and why.
    pub fn partial(error: impl Into<String>, details: Value) -> Self {
        Self {
            result: Some(details),
            partial_error: Some(error.into()),
        }
    }
}

impl From<()> for Completion {
    fn from((): ()) -> Self {
        Self::done()
    }
}

impl From<Value> for Completion {
    fn from(result: Value) -> Self {
        Self::with_result(result)
    }
}

/// What the lease holder reports when an attempt ends.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Success.
    Completed {
        /// Stored as the record's `result`.
        result: Option<Value>,
    },
    /// Success with non-critical steps failed.
    Partial {
        /// Which steps failed and why.
        result: Option<Value>,
        /// A one-line summary, stored as `error_message`.
        error: String,
    },
    /// The attempt failed; retry after `delay`. The backend turns it into
    /// [`Outcome::Failed`] when no retries are left, and into a cancel when a cancel was
    /// requested.
    Retry {
        /// Why the attempt failed.
        error: String,
        /// How long to wait before the next attempt.
        delay: Duration,
    },
    /// The job failed for good.
    Failed {
        /// Why.
        error: String,
    },
    /// The handler stopped because a cancel was requested.
    Cancelled,
    /// The worker is shutting down and hands the job back unfinished; no attempt is used.
    Released,
    /// The handler said "not now": back to waiting until `delay` has passed, no attempt
    /// used (a requested cancel still wins).
    Snoozed {
        /// How long to wait before the job may start again.
        delay: Duration,
    },
    /// As [`Outcome::Snoozed`], and no job of the queue starts, on any worker, until the
    /// delay has passed (a provider's 429).
    RateLimited {
        /// How long to wait before the job, and any job of the queue, may start again.
        retry_after: Duration,
    },
}

impl Outcome {
    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Completed { .. } => "completed",
            Self::Partial { .. } => "partial",
            Self::Retry { .. } => "retry",
            Self::Failed { .. } => "failed",
            Self::Cancelled => "cancelled",
            Self::Released => "released",
            Self::Snoozed { .. } => "snoozed",
            Self::RateLimited { .. } => "rate_limited",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fails() -> Result<(), JobError> {
        let n: Result<u8, _> = "x".parse::<u8>();
        n?;
        Ok(())
    }

    #[test]
    fn question_mark_is_retryable_and_keeps_the_message() {
        let err = fails().unwrap_err();
        assert_eq!(err.kind(), JobErrorKind::Retry);
        assert_eq!(err.message(), "invalid digit found in string");
        let err = JobError::permanent("bad input");
        assert_eq!(err.kind(), JobErrorKind::Permanent);
        assert_eq!(err.to_string(), "bad input");
    }
}
