//! The conformance suite on Postgres, unchanged: every case, a schema per case (dropped
//! after it, pass or fail).

mod support;

use std::sync::Arc;

use queue_core::ManualClock;
use queue_postgres::PostgresBackend;
use queue_testkit::{Harness, suite_config};
use support::TestSchema;

async fn fresh(clock: ManualClock) -> Harness {
    let schema = TestSchema::new();
    let backend = PostgresBackend::builder(schema.config())
        .queue(suite_config("conformance"))
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

queue_testkit::conformance_tests!(fresh);
