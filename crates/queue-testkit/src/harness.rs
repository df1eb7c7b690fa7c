use std::{fmt, future::Future, pin::Pin, sync::Mutex, time::Duration};

use queue_core::{ManualClock, QueueConfig, SharedBackend};

type Cleanup = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One backend on a fresh namespace, with the clock that drives it.
pub struct Harness {
    /// The backend under test.
    pub backend: SharedBackend,
    /// Its clock: cases move time with `advance`.
    pub clock: ManualClock,
    cleanup: Mutex<Option<Cleanup>>,
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("backend", &self.backend.to_string())
            .finish()
    }
}

impl Harness {
    /// Wraps a backend built with `clock`.
    pub fn new(backend: SharedBackend, clock: ManualClock) -> Self {
        Self {
            backend,
            clock,
            cleanup: Mutex::new(None),
        }
    }

    /// Runs `cleanup` after the case (pass or fail): remove the namespace here.
    pub fn with_cleanup(self, cleanup: impl Future<Output = ()> + Send + 'static) -> Self {
        *self.cleanup.lock().unwrap() = Some(Box::pin(cleanup));
        self
    }

    /// Runs the cleanup.
    pub async fn cleanup(&self) {
        let cleanup = self.cleanup.lock().unwrap().take();
        if let Some(cleanup) = cleanup {
            cleanup.await;
        }
    }

    /// Moves the backend's clock.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

/// The configuration every suite backend is built with (the cases rely on it): the
/// defaults of the story (3 retries, `normal` priority) and one hour of retention.
pub fn suite_config(queue_name: &str) -> QueueConfig {
    QueueConfig::builder()
        .queue_name(queue_name)
        .retention(Duration::from_secs(3600))
        .build()
        .expect("suite configuration is valid")
}
