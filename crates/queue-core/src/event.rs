//! Job events: transitions and progress, for subscribers (callbacks, dashboards, webhooks).

use std::pin::Pin;

use chrono::{DateTime, Utc};
use futures_core::Stream;
use serde::{Deserialize, Serialize};

use crate::{JobId, JobStatus};

/// How many events a queue's event log keeps (the oldest go first).
pub const EVENT_LOG_LEN: usize = 10_000;

/// How long a queue keeps logging events after its last subscriber left: a subscriber that
/// reconnects within this time resumes where it stopped ([`crate::JobStore::subscribe`]).
pub const EVENT_LOG_LINGER: std::time::Duration = std::time::Duration::from_secs(120);

/// One thing that happened to one job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// Its place in the queue's event log (`<ms>-<n>`, increasing): pass the last one seen
    /// to [`crate::JobStore::subscribe`] to resume after it. `None` only for events
    /// built by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The job.
    pub job_id: JobId,
    /// When (backend clock).
    pub at: DateTime<Utc>,
    /// What.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// An event id as `(ms, n)`, ordered as the log orders them; `None` when `id` is not of the
/// form `<ms>-<n>` (an `<ms>` alone means `<ms>-0`). What follows a `~` is ignored: a
/// partitioned queue's events carry every partition's place there (README "Partitions").
///
/// ```
/// use queue_core::parse_event_id;
///
/// assert_eq!(parse_event_id("1700000000000-3"), Some((1_700_000_000_000, 3)));
/// assert_eq!(parse_event_id("17-3~17-3,0,15-1"), Some((17, 3)));
/// assert_eq!(parse_event_id("yesterday"), None);
/// ```
pub fn parse_event_id(id: &str) -> Option<(u64, u64)> {
    let id = id.split_once('~').map_or(id, |(own, _)| own);
    let (ms, n) = id.split_once('-').unwrap_or((id, "0"));
    Some((ms.parse().ok()?, n.parse().ok()?))
}

impl JobEvent {
    /// The notice that events were missed at `at` (`count` of them, when known): see
    /// [`EventKind::Missed`].
    pub fn missed(count: Option<u64>, at: DateTime<Utc>) -> Self {
        Self {
            id: None,
            job_id: JobId::from_uuid(uuid::Uuid::nil()),
            at,
            kind: EventKind::Missed { count },
        }
    }

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
    /// Events were missed here: the subscriber fell behind the live stream (`count` of them
    /// were dropped), or asked to resume from before the oldest event the log still holds
    /// (`count` unknown). The `job_id` is the nil id. Re-read what matters (records, stats)
    /// instead of trusting the events to be complete.
    Missed {
        /// How many were dropped, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
    },
}

/// Events of one queue, in the order the backend applied them. A subscriber that loses its
/// connection resumes from the last event id it saw with
/// [`crate::JobStore::subscribe`], as far back as the log reaches
/// ([`EVENT_LOG_LEN`] events, logged while someone follows and [`EVENT_LOG_LINGER`] after);
/// one that falls far behind a live stream, or resumes from before the oldest event the log
/// holds, is told so by an [`EventKind::Missed`] event where the gap is. Treat the job
/// records as the truth and events as the signal to look.
pub type EventStream = Pin<Box<dyn Stream<Item = JobEvent> + Send>>;
