//! Job events: transitions and progress, for subscribers (callbacks, dashboards, webhooks).

use std::pin::Pin;

use chrono::{DateTime, Utc};
use futures_core::Stream;
use serde::{Deserialize, Serialize};

use crate::{JobId, JobStatus};

/// One thing that happened to one job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// The job.
    pub job_id: JobId,
    /// When (backend clock).
    pub at: DateTime<Utc>,
    /// What.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl JobEvent {
    /// True for a transition to a finished status (completed, failed, partial, cancelled).
    pub fn ends_a_job(&self) -> bool {
        matches!(self.kind, EventKind::Transition { to, .. } if to.is_terminal())
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The status changed. `from` is `None` when the job was just created.
    Transition {
        /// The previous status.
        from: Option<JobStatus>,
        /// The new status.
        to: JobStatus,
    },
    /// The handler reported progress.
    Progress {
        /// 0-100.
        progress: u8,
        /// The current step.
        step: Option<String>,
    },
    /// A caller asked to cancel the running job.
    CancelRequested,
}

/// Events of one queue, in the order the backend applied them. Delivery is best-effort:
/// a subscriber that falls far behind (or loses its connection) misses events, so treat
/// the job records as the truth and events as the signal to look.
pub type EventStream = Pin<Box<dyn Stream<Item = JobEvent> + Send>>;
