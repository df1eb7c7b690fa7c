//! The event log's bound: exactly [`queue_core::EVENT_LOG_LEN`] events kept for
//! `subscribe_from`, and a `Missed` event wherever a follower's stream has a gap.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use queue_core::EventKind;

use super::limits::enqueue_n;
use super::{enqueue, job};
use crate::Harness;

/// The event log holds exactly [`queue_core::EVENT_LOG_LEN`] events: a subscriber resuming
/// from before the first of that many gets them all, with no gap; one event more, and
/// resuming from before the oldest is told it missed events (`EventKind::Missed`) where
/// they were, then gets the rest; resuming from an event the log still follows misses
/// nothing.
pub async fn the_event_log_holds_its_length(h: &Harness) {
    let len = queue_core::EVENT_LOG_LEN;
    // Someone follows the queue: events are logged.
    let _live = h.backend.subscribe().await.unwrap();
    let ids = enqueue_n(h, len).await;
    let replay = |after: String| {
        let backend = Arc::clone(&h.backend);
        async move { backend.subscribe_from(&after).await.unwrap() }
    };
    let mut all = replay("0-0".into()).await;
    let first = next(&mut all).await;
    assert!(
        !matches!(first.kind, EventKind::Missed { .. }),
        "at its length the log holds every event"
    );
    assert_eq!(first.job_id, ids[0]);
    let mut last = first.clone();
    for id in &ids[1..] {
        last = next(&mut all).await;
        assert_eq!(last.job_id, *id);
    }
    assert!(last.id.is_some());

    // One more: the oldest leaves the log.
    enqueue(h, job(0)).await;
    let mut gap = replay("0-0".into()).await;
    let missed = next(&mut gap).await;
    assert!(
        matches!(missed.kind, EventKind::Missed { .. }),
        "{missed:?}"
    );
    assert_eq!(next(&mut gap).await.job_id, ids[1]);
    // Resuming after the oldest kept one's predecessor misses nothing.
    let mut whole = replay(first.id.clone().unwrap()).await;
    let resumed = next(&mut whole).await;
    assert_eq!(resumed.job_id, ids[1], "{resumed:?}");
}

/// A subscriber that falls behind the live stream is told how many events it missed where
/// the gap is, and the events after it go on.
pub async fn a_lagging_subscriber_is_told_what_it_missed(h: &Harness) {
    let mut events = h.backend.subscribe().await.unwrap();
    // More events than any backend buffers for a subscriber, none read meanwhile.
    enqueue_n(h, 20_000).await;
    let mut missed = None;
    for _ in 0..20_000 {
        let event = next(&mut events).await;
        if let EventKind::Missed { count } = event.kind {
            missed = Some(count);
            break;
        }
    }
    let count = missed.expect("the subscriber is told it missed events");
    assert!(count.is_some_and(|n| n > 0), "{count:?}");
    let last = enqueue(h, job(1)).await;
    loop {
        let event = next(&mut events).await;
        if event.job_id == last.job_id {
            break;
        }
    }
}

async fn next(events: &mut queue_core::EventStream) -> queue_core::JobEvent {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
}
