//! The memory backend's events: the log a resumed subscriber reads, and the live channel.

use queue_core::JobEvent;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// The event channel and the log behind it.
pub(crate) struct Events {
    pub(crate) tx: broadcast::Sender<JobEvent>,
    pub(crate) log: Mutex<EventLog>,
    /// Events are logged until then (ms; renewed while anyone follows).
    pub(crate) linger_until: std::sync::atomic::AtomicI64,
}

/// The last [`queue_core::EVENT_LOG_LEN`] events, oldest first.
#[derive(Default)]
pub(crate) struct EventLog {
    pub(crate) entries: std::collections::VecDeque<JobEvent>,
    /// The last id given: (ms, n).
    pub(crate) last: (i64, u64),
    /// The id of the newest event that left the log: a resume from before it missed some.
    pub(crate) dropped: Option<(u64, u64)>,
}

impl Events {
    /// Logs the event with the next id, then sends it; both under the log's lock, so a
    /// subscriber that reads the log and subscribes under it misses nothing and sees
    /// nothing twice.
    pub(crate) fn send(&self, mut event: JobEvent, now: i64) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.last = if now > log.last.0 {
            (now, 0)
        } else {
            (log.last.0, log.last.1 + 1)
        };
        event.id = Some(format!("{}-{}", log.last.0, log.last.1));
        if log.entries.len() == queue_core::EVENT_LOG_LEN
            && let Some(gone) = log.entries.pop_front()
        {
            log.dropped = gone.id.as_deref().and_then(queue_core::parse_event_id);
        }
        log.entries.push_back(event.clone());
        let _ = self.tx.send(event);
    }
}
