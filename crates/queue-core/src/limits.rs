//! Bounds on what a job may ask for. Every backend checks a new job against them before
//! storing anything, so a bad value is refused with an error naming the field instead of
//! overflowing a due time or filling the store.

use std::time::Duration;

use crate::backend::{Millis, duration_ms};
use crate::{Error, NewJob, Result};

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
        }
    }
}

impl Limits {
    /// An outcome storing a result larger than `result_bytes` becomes `Failed`, saying how
    /// large it was (nothing of it is stored, and no retry would make it smaller); every
    /// other outcome is kept. Backends apply this to every outcome they store.
    ///
    /// ```
    /// use queue_core::Limits;
    /// use queue_core::backend::Outcome;
    ///
    /// let limits = Limits::default();
    /// let big = Outcome::Completed { result: Some(serde_json::json!("x".repeat(2 << 20))) };
    /// assert!(matches!(limits.check_result(big), Outcome::Failed { error } if error.contains("result")));
    /// let small = Outcome::Completed { result: Some(serde_json::json!({"pages": 3})) };
    /// assert_eq!(limits.check_result(small.clone()), small);
    /// ```
    pub fn check_result(&self, outcome: crate::backend::Outcome) -> crate::backend::Outcome {
        use crate::backend::Outcome;
        let result = match &outcome {
            Outcome::Completed { result } | Outcome::Partial { result, .. } => result.as_ref(),
            _ => None,
        };
        let size = result.map_or(0, |r| {
            serde_json::to_string(r)
                .map(|s| s.len())
                .unwrap_or(usize::MAX)
        });
        if size <= self.result_bytes {
            return outcome;
        }
        Outcome::Failed {
            error: format!(
                "result: {size} bytes is above the limit of {} bytes (DCS_QUEUE_LIMIT_RESULT_BYTES)",
                self.result_bytes
            ),
        }
    }

    /// Checks everything a backend must refuse in a new job; the error names the field.
    pub fn check(&self, job: &NewJob) -> Result<()> {
        job.validate()?;
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
}
