//! The conformance suite on a queue of four partitions over the 3-master Redis Cluster
//! that this test binary starts (the fifth deployment: README "Partitions").

mod support;

use std::sync::Arc;

async fn fresh(clock: queue_core::ManualClock) -> queue_testkit::Harness {
    let url = tokio::task::spawn_blocking(support::cluster_url)
        .await
        .unwrap();
    let backend = support::backend(&url, Some(clock.clone()))
        .await
        .partitioned(4)
        .await
        .expect("a queue of four partitions");
    let cleanup = backend.clone();
    let probe = backend.clone();
    queue_testkit::Harness::new(Arc::new(backend), clock)
        .with_partitions(4)
        .with_blocked(move || probe.blocked_fetches() + probe.subscribers())
        .with_cleanup(async move {
            if let Err(e) = cleanup.destroy().await {
                eprintln!("cleanup failed: {}", e.chain());
            }
        })
}

queue_testkit::conformance_tests!(fresh);
