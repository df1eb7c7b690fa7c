//! Bounds on what a job may ask for and on what one call may do. Every backend checks a
//! new job against them before storing anything, so a bad value is refused with an error
//! naming the field instead of overflowing a due time or filling the store; text a handler
//! reports (errors, step names) is cut to its bound here, saying so, before any backend
//! stores it; and a claim takes at most [`MAX_CLAIM`] jobs per call whatever it asks for.

use std::{borrow::Cow, time::Duration};

use crate::backend::{Millis, Outcome, duration_ms};
use crate::{Error, NewJob, Result};

/// The most jobs one claim (a `fetch`, or the claim of a `finish_many`) leases in one call,
/// whatever its `max`: a worker with more free slots asks again. Every backend's work per
/// call stays bounded, and a Redis script never builds a reply past Lua's stack limit.
pub const MAX_CLAIM: usize = 1_000;

/// The most endings one `finish_many` call stores in one atomic step (backends split a
/// longer list into steps of this size, each answering as it would alone).
pub const MAX_ENDINGS: usize = 1_000;

/// The most jobs one `enqueue_many` call writes in one atomic step (a longer list is sent
/// in steps of this size; each job is refused or created on its own as before).
pub const MAX_ENQUEUE_STEP: usize = 1_000;

/// The longest step name a handler may report, in bytes: a longer one is cut
/// ([`bound_text`]).
pub const MAX_STEP_BYTES: usize = 200;

/// The most jobs a worker may run at once (`DCS_QUEUE_MAX_CONCURRENCY`).
pub const MAX_CONCURRENCY: usize = 10_000;

/// The error of a queue that already holds the most `what` it may (webhooks, schedules):
/// the same words from every backend.
///
/// ```
/// use queue_core::backend::too_many;
///
/// let err = too_many("webhooks", 100).to_string();
/// assert!(err.contains("100 webhooks, the most it may have"), "{err}");
/// ```
pub fn too_many(what: &str, max: usize) -> crate::Error {
    crate::Error::invalid(format!(
        "the queue has {max} {what}, the most it may have: delete one first"
    ))
}

/// `text` when it is at most `max` bytes, else its start cut on a character boundary and
/// followed by `… (truncated from N bytes)`, all within `max` bytes: what every backend
/// stores of an error message ([`Limits::error_bytes`]) and a step name
/// ([`MAX_STEP_BYTES`]).
///
/// ```
/// use queue_core::backend::bound_text;
///
/// assert_eq!(bound_text("short", 100), "short");
/// let long = "é".repeat(100);
/// let cut = bound_text(&long, 60);
/// assert!(cut.len() <= 60 && cut.ends_with("(truncated from 200 bytes)"), "{cut}");
/// ```
pub fn bound_text(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let note = format!("… (truncated from {} bytes)", text.len());
    let mut keep = max.saturating_sub(note.len());
    while keep > 0 && !text.is_char_boundary(keep) {
        keep -= 1;
    }
    let mut out = String::with_capacity(keep + note.len());
    out.push_str(&text[..keep]);
    if out.len() + note.len() <= max {
        out.push_str(&note);
    }
    Cow::Owned(out)
}

/// Bounds on a job's size and times (configurable; `DCS_QUEUE_LIMIT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest payload, in bytes of JSON (`DCS_QUEUE_LIMIT_PAYLOAD_BYTES`, 1 MiB).
    pub payload_bytes: usize,
    /// Largest metadata, in bytes of JSON (`DCS_QUEUE_LIMIT_METADATA_BYTES`, 64 KiB).
    pub metadata_bytes: usize,
    /// Largest result a handler may store, in bytes of JSON
    /// (`DCS_QUEUE_LIMIT_RESULT_BYTES`, 1 MiB): a larger one fails the job saying so.
    pub result_bytes: usize,
    /// Longest delay, of an enqueue or a retry (`DCS_QUEUE_LIMIT_DELAY_SECONDS`, 365 days).
    pub delay: Duration,
    /// Longest per-job timeout (`DCS_QUEUE_LIMIT_TIMEOUT_SECONDS`, 7 days).
    pub timeout: Duration,
    /// Most retries a job may ask for (`DCS_QUEUE_LIMIT_RETRIES`, 1000).
    pub retries: u32,
    /// Longest error message stored, in bytes (`DCS_QUEUE_LIMIT_ERROR_BYTES`, 4 KiB): a
    /// longer one is cut, saying so ([`bound_text`]); each of the attempts a record keeps
    /// holds at most this much.
    pub error_bytes: usize,
    /// Longest hold a handler's `rate_limited(retry_after)` may put on its group or the
    /// queue, and longest it snoozes its own job (`DCS_QUEUE_LIMIT_HOLD_SECONDS`, 1 hour).
    /// An operator lifts a hold early with `resume` (`resume_group` for a group's).
    pub hold: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            payload_bytes: 1024 * 1024,
            metadata_bytes: 64 * 1024,
            result_bytes: 1024 * 1024,
            delay: Duration::from_secs(365 * 24 * 3600),
            timeout: Duration::from_secs(7 * 24 * 3600),
            retries: 1000,
            error_bytes: 4096,
            hold: Duration::from_secs(3600),
        }
    }
}

impl Limits {
    /// What a backend stores of a reported outcome (every backend calls this on every
    /// outcome before anything else):
    ///
    /// - an outcome storing a result larger than `result_bytes` becomes `Failed`, saying how
    ///   large it was (nothing of it is stored, and no retry would make it smaller);
    /// - an error message longer than `error_bytes` is cut, saying so ([`bound_text`]);
    /// - a `RateLimited` hold (and its job's snooze) is at most `hold`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use queue_core::Limits;
    /// use queue_core::backend::Outcome;
    ///
    /// let limits = Limits::default();
    /// let big = Outcome::Completed { result: Some(serde_json::json!("x".repeat(2 << 20))) };
    /// assert!(matches!(limits.bound_outcome(big), Outcome::Failed { error } if error.contains("result")));
    /// let small = Outcome::Completed { result: Some(serde_json::json!({"pages": 3})) };
    /// assert_eq!(limits.bound_outcome(small.clone()), small);
    /// let long = Outcome::Failed { error: "e".repeat(1 << 20) };
    /// assert!(matches!(limits.bound_outcome(long), Outcome::Failed { error } if error.len() <= 4096));
    /// let held = Outcome::RateLimited { retry_after: Duration::from_secs(30 * 86_400) };
    /// assert_eq!(limits.bound_outcome(held), Outcome::RateLimited { retry_after: limits.hold });
    /// ```
    pub fn bound_outcome(&self, outcome: Outcome) -> Outcome {
        let result = match &outcome {
            Outcome::Completed { result } | Outcome::Partial { result, .. } => result.as_ref(),
            _ => None,
        };
        let size = result.map_or(0, |r| {
            serde_json::to_string(r)
                .map(|s| s.len())
                .unwrap_or(usize::MAX)
        });
        if size > self.result_bytes {
            return Outcome::Failed {
                error: format!(
                    "result: {size} bytes is above the limit of {} bytes (DCS_QUEUE_LIMIT_RESULT_BYTES)",
                    self.result_bytes
                ),
            };
        }
        let cut = |error: String| match bound_text(&error, self.error_bytes) {
            Cow::Borrowed(_) => error,
            Cow::Owned(short) => short,
        };
        match outcome {
            Outcome::Partial { result, error } => Outcome::Partial {
                result,
                error: cut(error),
            },
            Outcome::Retry { error, delay } => Outcome::Retry {
                error: cut(error),
                delay,
            },
            Outcome::Failed { error } => Outcome::Failed { error: cut(error) },
            Outcome::RateLimited { retry_after } => Outcome::RateLimited {
                retry_after: retry_after.min(self.hold),
            },
            other => other,
        }
    }

    /// A step name as stored: at most [`MAX_STEP_BYTES`], cut saying so.
    pub fn bound_step(step: Option<String>) -> Option<String> {
        step.map(|s| match bound_text(&s, MAX_STEP_BYTES) {
            Cow::Borrowed(_) => s,
            Cow::Owned(short) => short,
        })
    }

    /// Checks everything a backend must refuse in a new job; the error names the field.
    pub fn check(&self, job: &NewJob) -> Result<()> {
        job.validate()?;
        crate::keys::check_key_mode(job, self.delay)?;
        let o = &job.options;
        let payload = job.payload.as_str().len();
        if payload > self.payload_bytes {
            return Err(Error::invalid(format!(
                "payload: {payload} bytes is above the limit of {} bytes (DCS_QUEUE_LIMIT_PAYLOAD_BYTES)",
                self.payload_bytes
            )));
        }
        if !o.metadata.is_empty() {
            let size = serde_json::to_string(&o.metadata)
                .map(|s| s.len())
                .unwrap_or(usize::MAX);
            if size > self.metadata_bytes {
                return Err(Error::invalid(format!(
                    "metadata: {size} bytes is above the limit of {} bytes (DCS_QUEUE_LIMIT_METADATA_BYTES)",
                    self.metadata_bytes
                )));
            }
        }
        if let Some(delay) = o.delay
            && delay > self.delay
        {
            return Err(Error::invalid(format!(
                "delay: {} s is above the limit of {} s (DCS_QUEUE_LIMIT_DELAY_SECONDS)",
                delay.as_secs(),
                self.delay.as_secs()
            )));
        }
        if let Some(timeout) = o.timeout {
            if timeout < Duration::from_millis(1) {
                return Err(Error::invalid("timeout: must be at least 1 ms"));
            }
            if timeout > self.timeout {
                return Err(Error::invalid(format!(
                    "timeout: {} s is above the limit of {} s (DCS_QUEUE_LIMIT_TIMEOUT_SECONDS)",
                    timeout.as_secs(),
                    self.timeout.as_secs()
                )));
            }
        }
        if let Some(retries) = o.max_retries
            && retries > self.retries
        {
            return Err(Error::invalid(format!(
                "max_retries: {retries} is above the limit of {} (DCS_QUEUE_LIMIT_RETRIES)",
                self.retries
            )));
        }
        Ok(())
    }

    /// A retry delay capped at the limit (a handler's `retry_after` may ask for more).
    pub fn cap_delay(&self, delay: Duration) -> Duration {
        delay.min(self.delay)
    }

    /// When a job delayed by `delay` from `now` is due: the delay is capped at the limit,
    /// so the time never overflows.
    pub fn due(&self, now: Millis, delay: Duration) -> Millis {
        now.saturating_add(duration_ms(self.cap_delay(delay)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bound_names_its_field() {
        let limits = Limits::default();
        let job = || NewJob::new("t", &1).unwrap();
        for (bad, field) in [
            (job().delay(Duration::from_secs(u64::MAX)), "delay:"),
            (job().timeout(Duration::ZERO), "timeout: must be"),
            (job().timeout(Duration::from_secs(u64::MAX)), "timeout:"),
            (job().max_retries(u32::MAX), "max_retries:"),
            (
                NewJob::new("t", &"x".repeat(2 * 1024 * 1024)).unwrap(),
                "payload:",
            ),
            (job().meta("k", "v".repeat(100_000)), "metadata:"),
        ] {
            let err = limits.check(&bad).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
        limits.check(&job().delay(Duration::from_secs(60))).unwrap();
        assert_eq!(
            limits.due(i64::MAX - 5, Duration::from_secs(10)),
            i64::MAX,
            "never overflows"
        );
        assert_eq!(
            limits.due(1_000, Duration::MAX),
            1_000 + 365 * 24 * 3_600_000
        );
    }

    #[test]
    fn text_is_cut_at_its_bound_and_one_past_it() {
        for max in [40, 200, 4096] {
            let at = "a".repeat(max);
            assert_eq!(
                bound_text(&at, max),
                at.as_str(),
                "at the bound: kept whole"
            );
            let past = "a".repeat(max + 1);
            let cut = bound_text(&past, max);
            assert!(cut.len() <= max, "{} > {max}", cut.len());
            assert!(cut.ends_with(&format!("(truncated from {} bytes)", max + 1)));
            assert!(cut.starts_with('a'));
        }
        // Multi-byte characters are never split.
        let long = "日本語".repeat(50);
        let cut = bound_text(&long, 100);
        assert!(cut.len() <= 100);
        assert!(cut.starts_with("日本"));
        // A bound shorter than the note keeps what fits.
        assert!(bound_text("abcdef", 3).len() <= 3);
        let step = Limits::bound_step(Some("s".repeat(MAX_STEP_BYTES + 1))).unwrap();
        assert!(step.len() <= MAX_STEP_BYTES && step.contains("truncated"));
        assert_eq!(
            Limits::bound_step(Some("s".repeat(MAX_STEP_BYTES)))
                .unwrap()
                .len(),
            MAX_STEP_BYTES
        );
    }

    #[test]
    fn outcomes_are_bounded() {
        let limits = Limits::default();
        let at = Outcome::Retry {
            error: "e".repeat(limits.error_bytes),
            delay: Duration::from_secs(1),
        };
        assert_eq!(limits.bound_outcome(at.clone()), at);
        let Outcome::Partial { error, .. } = limits.bound_outcome(Outcome::Partial {
            result: None,
            error: "e".repeat(limits.error_bytes + 1),
        }) else {
            panic!("stays partial")
        };
        assert!(error.len() <= limits.error_bytes && error.contains("truncated"));
        let hold = Outcome::RateLimited {
            retry_after: limits.hold,
        };
        assert_eq!(limits.bound_outcome(hold.clone()), hold);
        assert_eq!(
            limits.bound_outcome(Outcome::RateLimited {
                retry_after: limits.hold + Duration::from_millis(1)
            }),
            hold
        );
        let result = |n: usize| Outcome::Completed {
            result: Some(serde_json::Value::String("r".repeat(n - 2))),
        };
        let at = result(limits.result_bytes);
        assert_eq!(limits.bound_outcome(at.clone()), at);
        assert!(matches!(
            limits.bound_outcome(result(limits.result_bytes + 1)),
            Outcome::Failed { .. }
        ));
    }
}
