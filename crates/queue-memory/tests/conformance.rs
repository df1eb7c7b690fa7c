//! The conformance suite on the memory backend.

use std::sync::Arc;

use queue_core::ManualClock;
use queue_memory::MemoryBackend;
use queue_testkit::{Harness, suite_config};

async fn fresh(clock: ManualClock) -> Harness {
    let backend = MemoryBackend::with_clock(suite_config("conformance"), Arc::new(clock.clone()));
    let probe = backend.clone();
    Harness::new(Arc::new(backend), clock)
        .with_blocked(move || probe.blocked_fetches() + probe.subscribers())
}

queue_testkit::conformance_tests!(fresh);
