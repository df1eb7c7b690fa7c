//! The attempts a worker holds, how each is told to stop, and until when its lease is
//! known to be renewed.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use queue_core::JobId;
use queue_core::backend::LeaseRef;
use tokio::{sync::Notify, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Why a running attempt must stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// A caller cancelled it: finish it as cancelled.
    Cancelled,
    /// The lease is gone (or about to go unrenewed): someone else may hold the job;
    /// report nothing.
    LeaseLost,
    /// The worker's shutdown grace ran out: hand it back.
    Shutdown,
}

/// One running attempt.
#[derive(Debug)]
pub(crate) struct Running {
    lease: LeaseRef,
    token: CancellationToken,
    reason: OnceLock<StopReason>,
    /// When the lease may expire on the server at the earliest: the send time of the last
    /// renewal that succeeded (or of the claim), plus the lease it asked for.
    renewed_until: Mutex<Instant>,
    /// Blocking work the handler started through its context; the attempt holds its slot
    /// until it has ended.
    pub(crate) blocking: TaskTracker,
}

impl Running {
    pub(crate) fn stop(&self, reason: StopReason) -> bool {
        let first = self.reason.set(reason).is_ok();
        if first {
            self.token.cancel();
        }
        first
    }

    pub(crate) fn reason(&self) -> Option<StopReason> {
        self.reason.get().copied()
    }

    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// A renewal sent at `sent` for `lease` succeeded.
    pub(crate) fn renewed(&self, sent: Instant, lease: Duration) {
        let mut until = self.renewed_until.lock().unwrap_or_else(|p| p.into_inner());
        *until = (*until).max(sent + lease);
    }

    fn renewed_until(&self) -> Instant {
        *self.renewed_until.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Attempts held by this worker process, by job.
#[derive(Debug, Default)]
pub(crate) struct RunningJobs {
    jobs: Mutex<HashMap<JobId, Arc<Running>>>,
    /// Cancels pushed for jobs not (yet) running here, with when they arrived: a job
    /// claimed a moment before its cancel is checked at once by a heartbeat.
    pending: Mutex<HashMap<JobId, Instant>>,
    /// Asks the heartbeat task for a beat now.
    pub(crate) beat_now: Notify,
}

/// How long a pushed cancel for a job not running here is remembered.
const PENDING_CANCEL: Duration = Duration::from_secs(30);

impl RunningJobs {
    /// Registers an attempt whose lease is renewed until `until` at least.
    pub(crate) fn insert(&self, lease: LeaseRef, until: Instant) -> Arc<Running> {
        let running = Arc::new(Running {
            lease: lease.clone(),
            token: CancellationToken::new(),
            reason: OnceLock::new(),
            renewed_until: Mutex::new(until),
            blocking: TaskTracker::new(),
        });
        self.lock().insert(lease.job_id, Arc::clone(&running));
        let pushed = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&lease.job_id);
        if pushed.is_some_and(|at| at.elapsed() < PENDING_CANCEL) {
            // The cancel may be about this attempt: the heartbeat reply says for sure.
            self.beat_now.notify_one();
        }
        running
    }

    /// Forgets an attempt (only this lease: a later attempt of the job stays).
    pub(crate) fn remove(&self, lease: &LeaseRef) {
        let mut jobs = self.lock();
        if jobs.get(&lease.job_id).is_some_and(|r| r.lease == *lease) {
            jobs.remove(&lease.job_id);
        }
    }

    pub(crate) fn leases(&self) -> Vec<LeaseRef> {
        self.lock().values().map(|r| r.lease.clone()).collect()
    }

    pub(crate) fn get(&self, lease: &LeaseRef) -> Option<Arc<Running>> {
        self.lock()
            .get(&lease.job_id)
            .filter(|r| r.lease == *lease)
            .cloned()
    }

    /// Stops this attempt (never a later one of the same job).
    pub(crate) fn stop_lease(&self, lease: &LeaseRef, reason: StopReason) -> bool {
        self.get(lease).is_some_and(|r| r.stop(reason))
    }

    /// Stops whatever attempt of `id` runs here (a pushed cancel is about the job); when
    /// none does, remembers the cancel for a moment.
    pub(crate) fn cancel_job(&self, id: JobId) -> bool {
        let running = self.lock().get(&id).cloned();
        match running {
            Some(r) => r.stop(StopReason::Cancelled),
            None => {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                pending.retain(|_, at| at.elapsed() < PENDING_CANCEL);
                pending.insert(id, Instant::now());
                false
            }
        }
    }

    pub(crate) fn stop_all(&self, reason: StopReason) {
        for running in self.lock().values() {
            running.stop(reason);
        }
    }

    /// Stops every attempt whose lease may expire on the server before `horizon`: the
    /// worker could not renew it in time, so another worker may soon run the job.
    pub(crate) fn fence(&self, horizon: Instant) -> Vec<JobId> {
        let mut out = Vec::new();
        for (id, running) in self.lock().iter() {
            if running.renewed_until() <= horizon && running.stop(StopReason::LeaseLost) {
                out.push(*id);
            }
        }
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Arc<Running>>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use queue_core::LeaseToken;

    use super::*;

    fn lease(id: JobId, token: &str) -> LeaseRef {
        LeaseRef {
            job_id: id,
            token: LeaseToken::new(token),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_lease_never_touches_a_later_attempt() {
        let jobs = RunningJobs::default();
        let id = JobId::new();
        let now = Instant::now();
        let new = jobs.insert(lease(id, "new"), now + Duration::from_secs(30));
        assert!(!jobs.stop_lease(&lease(id, "old"), StopReason::LeaseLost));
        jobs.remove(&lease(id, "old"));
        assert_eq!(jobs.len(), 1);
        assert_eq!(new.reason(), None);
        assert!(jobs.stop_lease(&lease(id, "new"), StopReason::Cancelled));
        assert_eq!(new.reason(), Some(StopReason::Cancelled));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_fenced_before_their_lease_can_expire() {
        let jobs = RunningJobs::default();
        let now = Instant::now();
        let a = jobs.insert(lease(JobId::new(), "a"), now + Duration::from_secs(30));
        let b = jobs.insert(lease(JobId::new(), "b"), now + Duration::from_secs(30));
        b.renewed(now + Duration::from_secs(10), Duration::from_secs(30));
        assert!(jobs.fence(now + Duration::from_secs(29)).is_empty());
        assert_eq!(jobs.fence(now + Duration::from_secs(30)).len(), 1);
        assert_eq!(a.reason(), Some(StopReason::LeaseLost));
        assert_eq!(b.reason(), None, "renewed later, still safe");
    }
}
