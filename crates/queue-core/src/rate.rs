//! A queue's rate limit: at most `max` starts in any window of `per`.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

use crate::backend::{Millis, duration_ms};
use crate::{Error, Result};

/// At most `max` jobs start in any window of length `per` (a sliding window over the start
/// times, kept with the queue, checked inside the claim). A job held back by the limit
/// waits without using an attempt and starts as soon as the window allows.
///
/// ```
/// use std::time::Duration;
/// use queue_core::RateLimit;
///
/// let limit = RateLimit::new(60, Duration::from_secs(60)).unwrap(); // 60 a minute
/// assert_eq!(limit.to_string(), "60 per 60s");
/// assert!(RateLimit::new(0, Duration::from_secs(1)).is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Starts allowed per window.
    pub max: u32,
    /// The window.
    #[serde(with = "per_ms")]
    pub per: Duration,
}

mod per_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(per: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(per.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl RateLimit {
    /// The longest window.
    pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

    /// `max` starts per `per`; refused (naming the field) for `max` 0 or above 1,000,000, or
    /// a window under 1 ms or above 7 days.
    pub fn new(max: u32, per: Duration) -> Result<Self> {
        let limit = Self { max, per };
        limit.check()?;
        Ok(limit)
    }

    /// Checks the bounds [`RateLimit::new`] enforces (for values that were deserialized).
    pub fn check(&self) -> Result<()> {
        if !(1..=1_000_000).contains(&self.max) {
            return Err(Error::invalid(format!(
                "rate limit max: {} is not between 1 and 1000000",
                self.max
            )));
        }
        if self.per < Duration::from_millis(1) || self.per > Self::MAX_WINDOW {
            return Err(Error::invalid(format!(
                "rate limit window: {:?} is not between 1 ms and 7 days",
                self.per
            )));
        }
        Ok(())
    }

    /// The window in ms.
    pub fn per_ms(&self) -> Millis {
        duration_ms(self.per)
    }

    /// Starts at or before this time no longer count at `now`.
    pub fn window_floor(&self, now: Millis) -> Millis {
        now - self.per_ms()
    }

    /// How many jobs of cost 1 may start with `used` (the costs of the starts in the
    /// window) used.
    pub fn room(&self, used: usize) -> usize {
        (self.max as usize).saturating_sub(used)
    }

    /// Whether a job of `cost` may start with `used` already counted in the window: when it
    /// fits in what is left, or when the window is empty (a job costing more than the whole
    /// window starts alone; otherwise it could never start).
    ///
    /// ```
    /// use std::time::Duration;
    /// use queue_core::RateLimit;
    ///
    /// let limit = RateLimit::new(10, Duration::from_secs(60)).unwrap();
    /// assert!(limit.admits(7, 3));
    /// assert!(!limit.admits(8, 3));
    /// assert!(limit.admits(0, 50));
    /// assert!(!limit.admits(1, 50));
    /// ```
    pub fn admits(&self, used: u64, cost: u32) -> bool {
        used == 0 || used + u64::from(cost) <= u64::from(self.max)
    }

    /// When the next start is allowed, with the window full and its oldest start at
    /// `oldest`.
    pub fn next_start(&self, oldest: Millis) -> Millis {
        oldest + self.per_ms()
    }
}

/// The most a job may cost (see `NewJob::cost`).
pub const MAX_COST: u32 = 1_000_000;

/// Checks a job's cost: 1 to [`MAX_COST`].
pub fn check_cost(cost: u32) -> Result<()> {
    if !(1..=MAX_COST).contains(&cost) {
        return Err(Error::invalid(format!(
            "cost: {cost} is not between 1 and {MAX_COST}"
        )));
    }
    Ok(())
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} per {:?}", self.max, self.per)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_slides() {
        let limit = RateLimit::new(3, Duration::from_secs(10)).unwrap();
        assert_eq!(limit.room(0), 3);
        assert_eq!(limit.room(3), 0);
        assert_eq!(limit.room(7), 0);
        // A start at 1,000 counts until 11,000 (exclusive).
        assert_eq!(limit.window_floor(11_000), 1_000);
        assert_eq!(limit.next_start(1_000), 11_000);
        assert!(RateLimit::new(1, Duration::ZERO).is_err());
        assert!(RateLimit::new(1, Duration::from_secs(8 * 24 * 3600)).is_err());
        let json = serde_json::to_value(limit).unwrap();
        assert_eq!(json, serde_json::json!({"max": 3, "per": 10000}));
        assert_eq!(serde_json::from_value::<RateLimit>(json).unwrap(), limit);
    }
}
