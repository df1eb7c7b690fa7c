//! Time at the edges of a lease: how long before its earliest possible expiry on the
//! server a holder that could not renew it gives it up (the fence), and which heartbeat
//! intervals the fence tolerates, and how soon a failed renewal is tried again.
//!
//! A lease runs on the server from the moment its claim was applied, which is no earlier
//! than when the claim was sent; a renewal likewise. So a holder counts every lease from
//! the send time of the call that produced or last renewed it (its own monotonic clock,
//! [`crate::backend::Lease::claimed_at`]), never from when the answer arrived or from when
//! a waiting fetch began: `renewed_until = sent + lease`, and the attempt stops once
//! `now + fence_margin(lease)` reaches that, before another worker may take the job.

use std::time::Duration;

use crate::{Error, Result};

/// How long before the earliest possible server-side expiry a lease that could not be
/// renewed is given up locally: a sixth of the lease, at least 50 ms (enough for the
/// handler's future to be dropped).
///
/// ```
/// use std::time::Duration;
/// use queue_core::backend::fence_margin;
///
/// assert_eq!(fence_margin(Duration::from_secs(30)), Duration::from_secs(5));
/// assert_eq!(fence_margin(Duration::from_millis(120)), Duration::from_millis(50));
/// ```
pub fn fence_margin(lease: Duration) -> Duration {
    (lease / 6).max(Duration::from_millis(50))
}

/// The longest heartbeat interval the fence tolerates for `lease`: three fifths of the
/// time before the fence (`lease - fence_margin(lease)`), which is half the lease for
/// leases of 300 ms and more (BullMQ's and asynq's ratio). The first renewal then goes out
/// with two fifths of that time (a third of the lease) left for it, or for the quicker
/// retries a worker sends after a failed one ([`heartbeat_retry`]), to land.
///
/// ```
/// use std::time::Duration;
/// use queue_core::backend::longest_heartbeat;
///
/// // The defaults: a 30 s lease tolerates heartbeats up to 15 s (10 s is the default).
/// assert_eq!(longest_heartbeat(Duration::from_secs(30)), Duration::from_secs(15));
/// ```
pub fn longest_heartbeat(lease: Duration) -> Duration {
    lease.saturating_sub(fence_margin(lease)) * 3 / 5
}

/// How soon a worker whose renewal failed tries again: a quarter of its heartbeat
/// interval, at least 5 ms, so that at the longest interval two more tries fit before
/// the fence.
///
/// ```
/// use std::time::Duration;
/// use queue_core::backend::heartbeat_retry;
///
/// assert_eq!(heartbeat_retry(Duration::from_secs(10)), Duration::from_millis(2_500));
/// ```
pub fn heartbeat_retry(heartbeat: Duration) -> Duration {
    (heartbeat / 4).max(Duration::from_millis(5))
}

/// Refuses a heartbeat interval the fence cannot tolerate for `lease` (zero, or longer
/// than [`longest_heartbeat`]), naming both values: with it, a healthy worker would stop
/// its own jobs as if it had lost them.
///
/// ```
/// use std::time::Duration;
/// use queue_core::backend::check_heartbeat;
///
/// assert!(check_heartbeat(Duration::from_secs(2), Duration::from_millis(500)).is_ok());
/// assert!(check_heartbeat(Duration::from_secs(2), Duration::from_secs(1)).is_ok());
/// let err = check_heartbeat(Duration::from_secs(2), Duration::from_millis(1100)).unwrap_err();
/// assert!(err.to_string().contains("1.1s") && err.to_string().contains("2s"), "{err}");
/// ```
pub fn check_heartbeat(lease: Duration, heartbeat: Duration) -> Result<()> {
    let longest = longest_heartbeat(lease);
    if heartbeat.is_zero() || heartbeat > longest {
        return Err(Error::config(format!(
            "heartbeat ({heartbeat:?}) must be positive and at most {longest:?} for a lease of \
             {lease:?} (three fifths of the lease less its fence margin of {:?})",
            fence_margin(lease)
        )));
    }
    Ok(())
}

/// The lease fence on the server's side: whether a write sent with `token` (a heartbeat,
/// progress, a finish) is the lease holder's, the job's lease being `held` (its token and
/// its expiry, ms) at `now`. Only the same, non-empty token before the expiry writes: an
/// expired holder may not, even before a sweep took the job back.
///
/// ```
/// use queue_core::backend::lease_holds;
///
/// assert!(lease_holds(Some(("t1", 2_000)), "t1", 1_999));
/// assert!(!lease_holds(Some(("t1", 2_000)), "t1", 2_000), "expired");
/// assert!(!lease_holds(Some(("t1", 2_000)), "t2", 1_000), "another attempt's");
/// assert!(!lease_holds(None, "t1", 1_000), "not running");
/// ```
pub fn lease_holds(
    held: Option<(&str, crate::backend::Millis)>,
    token: &str,
    now: crate::backend::Millis,
) -> bool {
    held.is_some_and(|(held, expires)| !token.is_empty() && held == token && expires > now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_heartbeat_is_accepted_and_one_past_it_refused() {
        for lease_ms in [100u64, 120, 1_000, 2_000, 30_000, 3_600_000] {
            let lease = Duration::from_millis(lease_ms);
            let longest = longest_heartbeat(lease);
            assert!(check_heartbeat(lease, longest).is_ok(), "{lease:?}");
            let past = longest + Duration::from_nanos(1);
            assert!(check_heartbeat(lease, past).is_err(), "{lease:?}");
            assert!(check_heartbeat(lease, Duration::ZERO).is_err());
            // After the first renewal, two retries fit before the fence.
            let fence = lease - fence_margin(lease);
            assert!(longest + heartbeat_retry(longest) * 2 < fence, "{lease:?}");
            if lease_ms >= 300 {
                assert_eq!(longest, lease / 2);
            }
        }
    }
}
