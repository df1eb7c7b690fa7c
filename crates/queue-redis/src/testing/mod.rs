//! Fixtures for your own integration tests (feature `test-utils`): a Redis to talk to and a
//! queue of its own per test, removed afterwards.
//!
//! - [`redis_url`]: `REDIS_URL` when set, else a private `redis-server` started from the
//!   installed binary for the life of the test binary (never skipped: a missing binary fails
//!   loudly, naming what to install). [`cluster_url`] does the same for a 3-master cluster
//!   (`REDIS_CLUSTER_URL`). With the `testcontainers` feature, `RedisContainer` runs one
//!   in Docker, and [`redis_url_or`] lets you prefer it.
//! - [`TestQueue`]: a [`RedisBackend`] on a queue name no other test uses, under the key
//!   prefix `dcs-test`; its keys are deleted when it is dropped (or by
//!   [`TestQueue::cleanup`]), so tests can share one server, even a shared one.
//! - [`RedisServer`]: one `redis-server` process you control, for restart and crash tests.
//!
//! ```no_run
//! use queue_core::{JobStore, NewJob};
//! use queue_redis::testing::{TestQueue, redis_url};
//!
//! #[tokio::test]
//! async fn enqueues_on_redis() {
//!     let queue = TestQueue::start(&redis_url()).await;
//!     let job = queue.enqueue(NewJob::new("greet", &"world").unwrap()).await.unwrap();
//!     assert_eq!(queue.get(job.job_id).await.unwrap().task, "greet");
//! } // the queue's keys are deleted here
//! # fn main() {}
//! ```

#[cfg(feature = "testcontainers")]
mod container;
mod servers;

use std::{ops::Deref, sync::Arc};

use queue_core::{QueueConfig, SharedClock};

#[cfg(feature = "testcontainers")]
pub use container::RedisContainer;
pub use servers::{RedisServer, cli, cluster_url, free_port, redis_url, redis_url_or, require};

use crate::RedisBackend;

/// With the `testcontainers` feature and a Docker engine: a Redis container, kept for the
/// life of the test binary. `None` without either (the caller then spawns `redis-server`).
#[cfg(feature = "testcontainers")]
fn container_url() -> Option<String> {
    use std::sync::OnceLock;
    static CONTAINER: OnceLock<Option<(tokio::runtime::Runtime, RedisContainer)>> = OnceLock::new();
    CONTAINER
        .get_or_init(|| {
            // Tests call this from inside their runtime: start the container on a thread
            // (and a runtime) of its own.
            std::thread::spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                match rt.block_on(RedisContainer::start()) {
                    Ok(c) => Some((rt, c)),
                    Err(e) => {
                        eprintln!("no Docker ({}): using a local redis-server", e.chain());
                        None
                    }
                }
            })
            .join()
            .ok()
            .flatten()
        })
        .as_ref()
        .map(|(_, c)| c.url().to_owned())
}

#[cfg(not(feature = "testcontainers"))]
fn container_url() -> Option<String> {
    None
}

/// The key prefix of every [`TestQueue`].
pub const TEST_KEY_PREFIX: &str = "dcs-test";

/// A queue name no other test uses: `t-` and a fresh UUID.
pub fn unique_queue_name() -> String {
    format!("t-{}", uuid::Uuid::now_v7().simple())
}

/// A [`RedisBackend`] on a queue of its own (see [`unique_queue_name`]); dereferences to
/// the backend. Its keys are deleted on drop (from a thread of its own, so dropping it
/// inside a test's runtime is fine), or explicitly with [`TestQueue::cleanup`].
#[derive(Debug)]
pub struct TestQueue {
    backend: Option<RedisBackend>,
    config: QueueConfig,
}

impl TestQueue {
    /// A fresh queue on `url` with the default configuration. Panics when Redis cannot be
    /// reached (a test fixture fails loudly).
    pub async fn start(url: &str) -> Self {
        let config = QueueConfig::builder()
            .redis_url(url)
            .expect("a valid Redis URL")
            .build()
            .expect("the default configuration is valid");
        Self::with_config(config, None).await
    }

    /// A fresh queue with `config` (its queue name is replaced by a unique one), driven by
    /// `clock` when given.
    pub async fn with_config(config: QueueConfig, clock: Option<SharedClock>) -> Self {
        let config = config
            .to_builder()
            .queue_name(unique_queue_name())
            .build()
            .expect("a valid configuration");
        let mut builder = RedisBackend::builder(&config).key_prefix(TEST_KEY_PREFIX);
        if let Some(clock) = clock {
            builder = builder.clock(clock);
        }
        let backend = builder.build().await.unwrap_or_else(|e| {
            panic!("the test Redis is not reachable: {}", e.chain());
        });
        Self {
            backend: Some(backend),
            config,
        }
    }

    /// The backend, as the worker and the binaries hold it.
    pub fn shared(&self) -> Arc<RedisBackend> {
        Arc::new(self.backend.clone().expect("not cleaned up yet"))
    }

    /// The configuration (with the unique queue name).
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Deletes every key of the queue now; returns how many.
    pub async fn cleanup(mut self) -> u64 {
        let backend = self.backend.take().expect("not cleaned up yet");
        backend.destroy().await.unwrap_or_else(|e| {
            panic!("could not delete the test queue's keys: {}", e.chain());
        })
    }
}

impl Deref for TestQueue {
    type Target = RedisBackend;

    fn deref(&self) -> &RedisBackend {
        self.backend.as_ref().expect("not cleaned up yet")
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        if self.backend.take().is_none() {
            return;
        }
        // The backend's connections are driven by the test's runtime, which this thread may
        // be blocking; clean up on a new connection, on a thread and runtime of its own.
        let config = self.config.clone();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let backend = RedisBackend::builder(&config)
                    .key_prefix(TEST_KEY_PREFIX)
                    .build()
                    .await
                    .ok()?;
                backend.destroy().await.ok()
            })
        })
        .join();
        if !matches!(done, Ok(Some(_))) {
            eprintln!(
                "could not delete the keys of test queue {}",
                self.config.queue_name
            );
        }
    }
}
