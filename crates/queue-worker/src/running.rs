//! The jobs a worker holds, and how each is told to stop.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use queue_core::{JobId, LeaseRef};
use tokio_util::sync::CancellationToken;

/// Why a running job must stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// A caller cancelled it: finish it as cancelled.
    Cancelled,
    /// The lease is gone: someone else may hold the job; report nothing.
    LeaseLost,
    /// The worker's shutdown grace ran out: hand it back.
    Shutdown,
}

/// One running job's stop signal.
#[derive(Debug, Default)]
pub(crate) struct Running {
    token: CancellationToken,
    reason: OnceLock<StopReason>,
}

impl Running {
    pub(crate) fn stop(&self, reason: StopReason) {
        if self.reason.set(reason).is_ok() {
            self.token.cancel();
        }
    }

    pub(crate) fn reason(&self) -> Option<StopReason> {
        self.reason.get().copied()
    }

    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }
}

/// Leases held by this worker process.
#[derive(Debug, Default)]
pub(crate) struct RunningJobs {
    jobs: Mutex<HashMap<JobId, (LeaseRef, Arc<Running>)>>,
}

impl RunningJobs {
    pub(crate) fn insert(&self, lease: LeaseRef) -> Arc<Running> {
        let running = Arc::new(Running::default());
        self.lock()
            .insert(lease.job_id, (lease, Arc::clone(&running)));
        running
    }

    pub(crate) fn remove(&self, id: JobId) {
        self.lock().remove(&id);
    }

    pub(crate) fn leases(&self) -> Vec<LeaseRef> {
        self.lock()
            .values()
            .map(|(lease, _)| lease.clone())
            .collect()
    }

    pub(crate) fn stop(&self, id: JobId, reason: StopReason) -> bool {
        match self.lock().get(&id) {
            Some((_, running)) => {
                running.stop(reason);
                true
            }
            None => false,
        }
    }

    pub(crate) fn stop_all(&self, reason: StopReason) {
        for (_, running) in self.lock().values() {
            running.stop(reason);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, (LeaseRef, Arc<Running>)>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}
