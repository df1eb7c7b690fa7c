//! Backends and harnesses on the test Redis servers of `queue_testkit::servers`.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
#[cfg(feature = "testcontainers")]
use std::sync::OnceLock;

use queue_core::ManualClock;
use queue_redis::RedisBackend;
#[allow(unused_imports)]
pub use queue_testkit::servers::*;
use queue_testkit::{Harness, suite_config};

/// With the `testcontainers` feature and a Docker engine: a Redis container, kept for the
/// life of the test binary. `None` without either (the caller then spawns `redis-server`).
#[cfg(feature = "testcontainers")]
fn container_url() -> Option<String> {
    static CONTAINER: OnceLock<
        Option<(
            tokio::runtime::Runtime,
            queue_redis::testing::RedisContainer,
        )>,
    > = OnceLock::new();
    CONTAINER
        .get_or_init(|| {
            // Tests call this from inside their runtime: start the container on a thread
            // (and a runtime) of its own.
            std::thread::spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                match rt.block_on(queue_redis::testing::RedisContainer::start()) {
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

/// The standalone Redis: `REDIS_URL`, a container (feature `testcontainers`), or a
/// spawned `redis-server`.
pub fn redis_url() -> String {
    queue_testkit::servers::redis_url_or(container_url)
}

/// A queue name of its own for one test.
pub fn unique_queue() -> String {
    format!("t-{}", uuid::Uuid::new_v4().simple())
}

/// A backend on its own queue at `url`, driven by `clock` when given.
pub async fn backend(url: &str, clock: Option<ManualClock>) -> RedisBackend {
    backend_with(url, clock, true).await
}

/// As [`backend`], choosing Functions or EVALSHA scripts.
pub async fn backend_with(url: &str, clock: Option<ManualClock>, functions: bool) -> RedisBackend {
    let config = suite_config(&unique_queue())
        .to_builder()
        .redis_url(url)
        .unwrap()
        .build()
        .unwrap();
    let mut builder = RedisBackend::builder(&config)
        .key_prefix("dcs-test")
        .functions(functions);
    if let Some(clock) = clock {
        builder = builder.clock(Arc::new(clock));
    }
    builder.build().await.expect("connect to the test Redis")
}

/// A conformance harness on `url`; its cleanup deletes every key of the queue.
pub async fn harness(url: &str, clock: ManualClock) -> Harness {
    harness_with(url, clock, true).await
}

/// As [`harness`], choosing Functions or EVALSHA scripts.
pub async fn harness_with(url: &str, clock: ManualClock, functions: bool) -> Harness {
    let backend = backend_with(url, Some(clock.clone()), functions).await;
    assert_eq!(
        backend.uses_functions(),
        functions,
        "Redis 7 serves Functions"
    );
    let cleanup = backend.clone();
    Harness::new(Arc::new(backend), clock).with_cleanup(async move {
        if let Err(e) = cleanup.destroy().await {
            eprintln!("cleanup failed: {}", e.chain());
        }
    })
}
