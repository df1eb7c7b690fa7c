//! `MemoryBackend` and how it is built: configuration and clock in, a queue out.

use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard},
};

use queue_core::backend::{TokioClock, duration_ms};
use queue_core::{JobId, QueueConfig, Result, SharedClock};
use tokio::sync::{Notify, broadcast};

use crate::engine::{EventSender, Tables};
use crate::events::{EventLog, Events};

/// The full queue contract in one process. Clones share the same queue.
///
/// Its clock defaults to [`TokioClock`], so under `tokio::time::pause()` delays, backoffs
/// and leases elapse without real waiting.
#[derive(Clone)]
pub struct MemoryBackend {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    tables: Mutex<Tables>,
    pub(crate) work: Notify,
    /// Fetches waiting for work now.
    pub(crate) blocked: queue_core::backend::Blocked,
    pub(crate) events: Events,
    /// Cancel requests only, so a worker listening for them does not make every
    /// transition build an event.
    pub(crate) cancels: broadcast::Sender<JobId>,
    pub(crate) clock: SharedClock,
    pub(crate) config: QueueConfig,
}

/// Builds a [`MemoryBackend`]: the queue's configuration (defaults, limits, retention) and
/// the clock it reads.
#[derive(Clone)]
pub struct MemoryBackendBuilder {
    config: QueueConfig,
    clock: Option<SharedClock>,
}

impl fmt::Debug for MemoryBackendBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackendBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl MemoryBackendBuilder {
    /// Reads time from `clock` (tests drive a `ManualClock`); default [`TokioClock`].
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The queue.
    pub fn build(self) -> MemoryBackend {
        let (tx, _) = broadcast::channel(16 * 1024);
        let (cancels, _) = broadcast::channel(1024);
        let events = Events {
            tx,
            log: Mutex::new(EventLog::default()),
            linger_until: std::sync::atomic::AtomicI64::new(0),
        };
        MemoryBackend {
            inner: Arc::new(Inner {
                tables: Mutex::new(Tables::default()),
                work: Notify::new(),
                blocked: queue_core::backend::Blocked::default(),
                events,
                cancels,
                clock: self.clock.unwrap_or_else(|| Arc::new(TokioClock::new())),
                config: self.config,
            }),
        }
    }
}

impl MemoryBackend {
    /// A builder for `config`.
    pub fn builder(config: QueueConfig) -> MemoryBackendBuilder {
        MemoryBackendBuilder {
            config,
            clock: None,
        }
    }

    /// How many fetches are blocked now, waiting for work (a gauge; tests wait for it
    /// before asserting that a fetch keeps waiting).
    pub fn blocked_fetches(&self) -> usize {
        self.inner.blocked.count()
    }

    /// How many event streams (subscribers, and `wait` calls following a job) are open.
    pub fn subscribers(&self) -> usize {
        self.inner.events.tx.receiver_count()
    }

    /// A queue with the default configuration.
    pub fn new() -> Self {
        Self::builder(QueueConfig::default()).build()
    }

    /// A queue configured by the `DCS_QUEUE_*` variables (see [`QueueConfig::from_env`]); a
    /// bad value is an error naming the variable.
    pub fn from_env() -> Result<Self> {
        Ok(Self::with_config(QueueConfig::from_env()?))
    }

    /// A queue with `config`'s defaults (priority, retries, limits, retention).
    pub fn with_config(config: QueueConfig) -> Self {
        Self::builder(config).build()
    }

    /// A queue reading time from `clock`.
    pub fn with_clock(config: QueueConfig, clock: SharedClock) -> Self {
        Self::builder(config).clock(clock).build()
    }

    /// The configuration the queue uses.
    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Tables> {
        // A panic while holding the lock leaves the tables as consistent as every step
        // before it; keep serving rather than poisoning every later call.
        self.inner.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Where events go, while anyone follows them or did within
    /// [`queue_core::EVENT_LOG_LINGER`] (so a subscriber that reconnects finds them in the
    /// log); `None` otherwise, and no event is built.
    pub(crate) fn events(&self) -> EventSender<'_> {
        use std::sync::atomic::Ordering::Relaxed;
        let e = &self.inner.events;
        let lingers = e.linger_until.load(Relaxed);
        if e.tx.receiver_count() > 0 {
            let until = self.now() + duration_ms(queue_core::EVENT_LOG_LINGER);
            // Renewed at most once a second.
            if until - lingers > 1_000 {
                e.linger_until.store(until, Relaxed);
            }
            return Some(e);
        }
        (lingers != 0 && self.now() < lingers).then_some(e)
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("queue", &self.inner.config.queue_name)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemoryBackend(queue={})", self.inner.config.queue_name)
    }
}
