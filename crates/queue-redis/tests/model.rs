//! The model-checked suite on standalone Redis (Functions), through EVALSHA scripts, on a
//! 3-master cluster, and through the partitioned backend of one partition (what `open`
//! gives every worker and operator): random runs compared step by step with the reference
//! model. (A queue of several partitions orders claims per partition, which the model does
//! not: its order and fair-share cases are the conformance suite's.)
//! `DCS_MODEL_CASES=500 cargo test -p queue-redis --test model` runs a longer budget.

mod support;

use queue_core::ManualClock;
use queue_testkit::Harness;

async fn standalone(clock: ManualClock) -> Harness {
    support::harness(&support::redis_url(), clock).await
}

async fn scripts(clock: ManualClock) -> Harness {
    support::harness_with(&support::redis_url(), clock, false).await
}

async fn cluster(clock: ManualClock) -> Harness {
    let url = tokio::task::spawn_blocking(support::cluster_url)
        .await
        .unwrap();
    support::harness(&url, clock).await
}

async fn partitioned(clock: ManualClock) -> Harness {
    let url = tokio::task::spawn_blocking(support::cluster_url)
        .await
        .unwrap();
    support::partitioned_harness(&url, clock, 1).await
}

async fn four_partitions(clock: ManualClock) -> Harness {
    let url = tokio::task::spawn_blocking(support::cluster_url)
        .await
        .unwrap();
    support::partitioned_harness(&url, clock, 4).await
}

mod on_standalone {
    queue_testkit::model_tests!(super::standalone, 64, 40);
}

mod on_scripts {
    queue_testkit::model_tests!(super::scripts, 16, 40);
}

mod on_cluster {
    queue_testkit::model_tests!(super::cluster, 24, 40);
}

mod on_partitioned {
    queue_testkit::model_tests!(super::partitioned, 16, 40);
}

mod on_four_partitions {
    queue_testkit::model_tests!(super::four_partitions, 24, 40);
}
