//! A claim's leases that never reach their caller go back (`queue_core::backend::Handoff`
//! around [`RedisBackend::claim_detached`](crate::RedisBackend)).

use std::time::Duration;

use queue_core::backend::ClaimRequest;
use queue_core::{JobStore, ListQuery, NewJob, WorkerId};

use crate::testing::{TestQueue, redis_url};

/// The race a dropped fetch can lose: the claim task sent its leases, the caller went
/// away before reading them. Dropped untaken, the handoff hands them back.
#[tokio::test]
async fn an_untaken_handoff_hands_its_leases_back() {
    let queue = TestQueue::start(&redis_url()).await;
    for i in 0..3 {
        queue.enqueue(NewJob::new("t", &i).unwrap()).await.unwrap();
    }
    let req = ClaimRequest::new(WorkerId::new("w"), 3, Duration::from_secs(60));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (handoff, _, _) = queue.claim_detached(&req).await.unwrap();
    assert_eq!(handoff.len(), 3);
    tx.send(handoff).map_err(|_| "receiver alive").unwrap();
    drop(rx); // the caller went away with the leases unread
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while queue.stats().await.unwrap().processing > 0 {
        assert!(tokio::time::Instant::now() < deadline, "leases stranded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let page = queue.list(&ListQuery::new()).await.unwrap();
    assert_eq!(page.jobs.len(), 3);
    assert!(page.jobs.iter().all(|j| j.attempts.is_empty()));
    queue.cleanup().await;
}
