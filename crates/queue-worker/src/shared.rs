//! What a worker's tasks share: the backend's two sides, the registry, the settings, the
//! running jobs, the counts, and the channel of outcomes to store.

use std::sync::{
    OnceLock,
    atomic::{AtomicU64, Ordering},
};

use queue_core::JobStore;
use queue_core::backend::{Broker, Outcome, WorkerBeat};
use std::sync::Arc;
use tokio::{sync::mpsc, time::Instant};

use queue_core::backend::LeaseRef;
use tokio::sync::oneshot;
use tracing::Span;

use crate::{ahead::Ahead, builder::Settings, registry::Registry, running::RunningJobs};

pub(crate) struct Shared {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) store: Arc<dyn JobStore>,
    pub(crate) registry: Registry,
    pub(crate) settings: Settings,
    pub(crate) running: RunningJobs,
    /// Jobs claimed ahead of the slots (see `ahead`).
    pub(crate) ahead: Ahead,
    pub(crate) counts: Counts,
    pub(crate) beat: WorkerBeat,
    /// Outcomes to store (see `reporter`).
    pub(crate) reports: mpsc::UnboundedSender<Report>,
    /// Set when shutdown begins: nothing the worker does may outlast it.
    pub(crate) stop_by: OnceLock<Instant>,
}

impl Shared {
    /// The latest time a backend call may end: `deadline`, or earlier once the worker is
    /// stopping.
    pub(crate) fn bounded(&self, deadline: Instant) -> Instant {
        self.stop_by.get().map_or(deadline, |s| deadline.min(*s))
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.settings.id)
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) completed: AtomicU64,
    pub(crate) partial: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) snoozed: AtomicU64,
    pub(crate) lost: AtomicU64,
}

impl Counts {
    pub(crate) fn count(&self, outcome: &Outcome) {
        let counter = match outcome {
            Outcome::Completed { .. } => &self.completed,
            Outcome::Partial { .. } => &self.partial,
            Outcome::Retry { .. } => &self.retried,
            Outcome::Failed { .. } => &self.failed,
            Outcome::Cancelled => &self.cancelled,
            Outcome::Released => &self.released,
            Outcome::Snoozed { .. } | Outcome::RateLimited { .. } => &self.snoozed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One outcome to store.
pub(crate) struct Report {
    pub(crate) lease: LeaseRef,
    pub(crate) outcome: Outcome,
    /// Jobs to claim with it (the slot's next and jobs ahead), counted as expected by
    /// `shared.ahead` until the call is answered.
    pub(crate) want: usize,
    /// Where the attempt's messages go.
    pub(crate) span: Span,
    /// Answered once the outcome is stored (or could not be).
    pub(crate) reply: oneshot::Sender<()>,
}
