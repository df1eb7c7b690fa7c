//! Backends and harnesses on the test Redis servers of `queue_redis::testing` (the same
//! fixtures users get with the `test-utils` feature).
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use queue_core::ManualClock;
use queue_redis::RedisBackend;
#[allow(unused_imports)]
pub use queue_redis::testing::{self, *};
use queue_testkit::{Harness, suite_config};

/// A queue name of its own for one test.
pub fn unique_queue() -> String {
    testing::unique_queue_name()
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
        .key_prefix(testing::TEST_KEY_PREFIX)
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
    let probe = backend.clone();
    Harness::new(Arc::new(backend), clock)
        .with_blocked(move || probe.blocked_fetches() + probe.subscribers())
        .with_cleanup(async move {
            if let Err(e) = cleanup.destroy().await {
                eprintln!("cleanup failed: {}", e.chain());
            }
        })
}

/// A conformance harness on a queue of `partitions` partitions over the cluster at `url`;
/// its cleanup deletes every partition's keys and the layout.
pub async fn partitioned_harness(url: &str, clock: ManualClock, partitions: u32) -> Harness {
    let backend = backend(url, Some(clock.clone()))
        .await
        .partitioned(partitions)
        .await
        .expect("a partitioned queue");
    let cleanup = backend.clone();
    let probe = backend.clone();
    let trace = backend.clone();
    trace.claim_trace();
    Harness::new(Arc::new(backend), clock)
        .with_partitions(partitions)
        .with_blocked(move || probe.blocked_fetches() + probe.subscribers())
        .with_claim_trace(move || {
            trace
                .claim_trace()
                .into_iter()
                .map(|s| (s.partition, s.asked, s.gave))
                .collect()
        })
        .with_cleanup(async move {
            if let Err(e) = cleanup.destroy().await {
                eprintln!("cleanup failed: {}", e.chain());
            }
        })
}
