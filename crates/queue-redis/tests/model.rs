//! The model-checked suite on standalone Redis (Functions), through EVALSHA scripts, on a
//! 3-master cluster, through the partitioned backend of one partition (what `open` gives
//! every worker and operator), and on a queue of four partitions over the cluster: random
//! runs compared step by step with the reference model. On four partitions the model knows
//! where each job lives and follows the backend's split of each claim among the partitions
//! (its claim trace): each partition must start what the model's partition would, and one
//! that gave fewer jobs than asked must have none left to start.
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
