//! The conformance suite on standalone Redis through EVALSHA scripts (the path servers
//! without Redis Functions take).

mod support;

async fn fresh(clock: queue_core::ManualClock) -> queue_testkit::Harness {
    support::harness_with(&support::redis_url(), clock, false).await
}

queue_testkit::conformance_tests!(fresh);
