//! Identifiers: jobs, workers and lease tokens.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Error;

/// A job's id: a UUIDv7, so ids sort by creation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(Uuid);

impl JobId {
    /// A fresh UUIDv7: the wall-clock millisecond, then a counter (so ids made by one
    /// process are strictly increasing), then random bits. Built here rather than with
    /// `Uuid::now_v7` to avoid a `getrandom` system call per id.
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static LAST: AtomicU64 = AtomicU64::new(0);
        let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let floor = now_ms << 12;
        let mut prev = LAST.load(Ordering::Relaxed);
        let state = loop {
            let next = floor.max(prev + 1);
            match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break next,
                Err(seen) => prev = seen,
            }
        };
        let (ms, counter) = (state >> 12, (state & 0xfff) as u16);
        let random = fastrand::u64(..);
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        bytes[6..8].copy_from_slice(&(0x7000 | counter).to_be_bytes());
        bytes[8..].copy_from_slice(&((random >> 2) | 0x8000_0000_0000_0000).to_be_bytes());
        Self(Uuid::from_bytes(bytes))
    }

    /// Wraps an existing UUID.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID inside.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for JobId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s.trim())
            .map(Self)
            .map_err(|_| Error::invalid(format!("`{s}` is not a job id (expected a UUID)")))
    }
}

/// Names one worker process (host, pid and a random suffix).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(std::sync::Arc<str>);

impl WorkerId {
    /// Wraps a name; use [`WorkerId::generate`] for a unique one.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into().into())
    }

    /// `<host>-<pid>-<random>`: unique per process start.
    pub fn generate() -> Self {
        let host = hostname();
        Self::new(format!(
            "{host}-{}-{:06x}",
            std::process::id(),
            fastrand::u32(..0x00ff_ffff)
        ))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The machine's host name, or `localhost` when it cannot be read.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Names one claim request of one worker, so that a claim sent again (its reply was lost,
/// or a cluster client re-sent it) returns the leases the first one took instead of
/// taking more. Increasing per process (microseconds since the epoch, then +1), so a
/// worker's requests arrive in order and a re-sent one is recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClaimId(u64);

impl ClaimId {
    /// The next id of this process.
    pub fn next() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static LAST: AtomicU64 = AtomicU64::new(0);
        let now_us = chrono::Utc::now().timestamp_micros().max(0) as u64;
        let mut prev = LAST.load(Ordering::Relaxed);
        loop {
            let next = now_us.max(prev + 1);
            match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Self(next),
                Err(seen) => prev = seen,
            }
        }
    }

    /// Wraps a number (tests).
    pub fn from_u64(n: u64) -> Self {
        Self(n)
    }

    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ClaimId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Proof of holding a job's lease. Every write by a lease holder carries it; a write
/// with a stale token is refused with [`Error::LeaseLost`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseToken(String);

impl LeaseToken {
    /// Wraps a token string.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// A fresh random token.
    pub fn generate() -> Self {
        Self(format!("{:016x}", fastrand::u64(..)))
    }

    /// The token string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_round_trip_and_sort_by_creation() {
        let a = JobId::new();
        let b = JobId::new();
        assert!(a < b);
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert_eq!(a.as_uuid().get_variant(), uuid::Variant::RFC4122);
        let ids: Vec<JobId> = (0..10_000).map(|_| JobId::new()).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "strictly increasing within a process"
        );
        assert_eq!(a.to_string().parse::<JobId>().unwrap(), a);
        let err = "nope".parse::<JobId>().unwrap_err();
        assert!(err.to_string().contains("`nope` is not a job id"));
        let (a, b) = (ClaimId::next(), ClaimId::next());
        assert!(a < b, "claim ids increase");
    }
}
