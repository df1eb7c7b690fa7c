//! The conformance suite on a 3-master Redis Cluster that this test binary starts.

mod support;

async fn fresh(clock: queue_core::ManualClock) -> queue_testkit::Harness {
    let url = tokio::task::spawn_blocking(support::cluster_url)
        .await
        .unwrap();
    support::harness(&url, clock).await
}

queue_testkit::conformance_tests!(fresh);
