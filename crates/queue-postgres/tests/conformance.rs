//! The conformance suite on Postgres, unchanged: every case, a schema per case (dropped
//! after it, pass or fail).

mod support;

use queue_core::ManualClock;
use queue_testkit::Harness;

async fn fresh(clock: ManualClock) -> Harness {
    support::harness("conformance", clock).await
}

queue_testkit::conformance_tests!(fresh);
