//! The model-checked suite on Postgres: random runs compared step by step with the
//! reference model, a schema per run. `DCS_MODEL_CASES=500 cargo test -p queue-postgres
//! --test model` runs a longer budget.

mod support;

use std::sync::Arc;

use queue_core::ManualClock;
use queue_postgres::PostgresBackend;
use queue_testkit::{Harness, suite_config};
use support::TestSchema;

async fn fresh(clock: ManualClock) -> Harness {
    let schema = TestSchema::new();
    let backend = PostgresBackend::builder(schema.config())
        .queue(suite_config("model"))
        .migrate(true)
        .clock(Arc::new(clock.clone()))
        .connect()
        .await
        .expect("connect");
    let probe = backend.clone();
    Harness::new(Arc::new(backend), clock)
        .with_blocked(move || probe.blocked_fetches() + probe.subscribers())
        .with_cleanup(async move { drop(schema) })
}

queue_testkit::model_tests!(fresh, 32, 40);
