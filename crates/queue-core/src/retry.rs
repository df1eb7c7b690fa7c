//! Retry policy: exponential backoff as pure functions.

use std::time::Duration;

use crate::backend::Outcome;
use crate::{JobError, JobRecord, outcome::JobErrorKind};

/// `delay(attempt) = min(base * 2^attempt, cap)`, optionally spread by ±`jitter`.
///
/// `attempt` is the record's `retry_count` before the retry, so with the defaults (base
/// 60 s, cap 1 h) the retries wait 60 s, 120 s, 240 s, ...
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// The first retry's delay (`DCS_QUEUE_RETRY_DELAY_SECONDS`).
    pub base: Duration,
    /// The longest delay (one hour).
    pub cap: Duration,
    /// Fraction in `0.0..=1.0`: each delay is multiplied by a random factor in
    /// `1 ± jitter` (then capped). 0 gives exact delays.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(60),
            cap: Duration::from_secs(3600),
            jitter: 0.0,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (0-based), without jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.checked_pow(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay with jitter applied (never above the cap).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exact = self.backoff(attempt);
        if self.jitter <= 0.0 {
            return exact;
        }
        let spread = self.jitter.min(1.0);
        let factor = 1.0 + spread * (fastrand::f64() * 2.0 - 1.0);
        exact.mul_f64(factor).min(self.cap)
    }

    /// What a failed attempt of `record` becomes: a retry while retries are left and the
    /// error allows it, otherwise a failure; a snooze whatever the retries.
    pub fn decide(&self, record: &JobRecord, error: &JobError) -> Outcome {
        let message = error.message();
        let delay = match error.kind() {
            JobErrorKind::Permanent => return Outcome::Failed { error: message },
            JobErrorKind::Snooze(delay) => return Outcome::Snoozed { delay },
            JobErrorKind::RateLimited(retry_after) => {
                return Outcome::RateLimited { retry_after };
            }
            JobErrorKind::RetryAfter(delay) => delay,
            JobErrorKind::Retry => self.delay(record.retry_count),
        };
        if record.has_retries_left() {
            Outcome::Retry {
                error: message,
                delay,
            }
        } else {
            Outcome::Failed { error: message }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = (0..8).map(|a| p.backoff(a).as_secs()).collect();
        assert_eq!(secs, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn jitter_stays_in_its_band_and_under_the_cap() {
        let p = RetryPolicy {
            jitter: 0.1,
            ..RetryPolicy::default()
        };
        for _ in 0..1000 {
            let d = p.delay(1).as_secs_f64();
            assert!((108.0..=132.0).contains(&d), "{d}");
            assert!(p.delay(10) <= p.cap);
        }
    }
}
