//! The conformance suite on standalone Redis (`REDIS_URL`, or a spawned `redis-server`).

mod support;

async fn fresh(clock: queue_core::ManualClock) -> queue_testkit::Harness {
    support::harness(&support::redis_url(), clock).await
}

queue_testkit::conformance_tests!(fresh);
