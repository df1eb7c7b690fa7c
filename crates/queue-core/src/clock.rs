//! Time, injected: backends read it from a [`Clock`] so tests can drive it.
//!
//! Every stored time has millisecond precision, so a record reads back the same from any
//! backend.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, TimeZone, Utc};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// A source of "now".
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> Millis;

    /// Now, as a UTC time.
    fn now(&self) -> DateTime<Utc> {
        from_millis(self.now_ms())
    }
}

/// A clock shared between a backend and a test.
pub type SharedClock = Arc<dyn Clock>;

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        Utc::now().timestamp_millis()
    }
}

/// Wall time at creation, then advancing with tokio's clock: in a normal runtime it
/// follows the wall clock; under `tokio::time::pause()` it advances only when tokio's
/// time does, so delays and backoffs take no real time in tests.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    origin_ms: Millis,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at the current wall time.
    pub fn new() -> Self {
        Self {
            origin_ms: Utc::now().timestamp_millis(),
            origin: tokio::time::Instant::now(),
        }
    }

    /// The tokio instant at which this clock will read `at`.
    pub fn instant_at(&self, at: Millis) -> tokio::time::Instant {
        let offset = at.saturating_sub(self.origin_ms).max(0);
        self.origin + Duration::from_millis(offset as u64)
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> Millis {
        self.origin_ms + self.origin.elapsed().as_millis() as Millis
    }
}

/// A clock that moves only when told to. Clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
}

impl ManualClock {
    /// Starts at the current wall time (so server-side expiries stay sensible).
    pub fn new() -> Self {
        Self::at(Utc::now().timestamp_millis())
    }

    /// Starts at `ms`.
    pub fn at(ms: Millis) -> Self {
        Self {
            now: Arc::new(AtomicI64::new(ms)),
        }
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(duration_ms(by), Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }
}

/// A UTC time from epoch milliseconds (saturating at the representable range).
pub fn from_millis(ms: Millis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Epoch milliseconds of a UTC time.
pub fn to_millis(at: DateTime<Utc>) -> Millis {
    at.timestamp_millis()
}

/// A duration in whole milliseconds, saturating.
pub fn duration_ms(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::at(1_000);
        let shared = clock.clone();
        assert_eq!(clock.now_ms(), 1_000);
        shared.advance(Duration::from_millis(250));
        assert_eq!(clock.now_ms(), 1_250);
        assert_eq!(to_millis(clock.now()), 1_250);
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::new();
        let start = clock.now_ms();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(clock.now_ms() - start, 3_600_000);
        assert_eq!(
            clock.instant_at(start + 5),
            clock.origin + Duration::from_millis(5)
        );
    }
}
