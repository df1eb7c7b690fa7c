//! The model-checked suite on Postgres: random runs compared step by step with the
//! reference model, a schema per run. `DCS_MODEL_CASES=500 cargo test -p queue-postgres
//! --test model` runs a longer budget.

mod support;

use queue_core::ManualClock;
use queue_testkit::Harness;

async fn fresh(clock: ManualClock) -> Harness {
    support::harness("model", clock).await
}

queue_testkit::model_tests!(fresh, 32, 40);
