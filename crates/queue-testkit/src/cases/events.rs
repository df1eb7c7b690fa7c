//! The event stream: every transition, resumed after the last event seen, and the event
//! log's bound: exactly [`queue_core::EVENT_LOG_LEN`] events kept for a resumed `subscribe`,
//! and a `Missed` event wherever a follower's stream has a gap.

use super::limits::enqueue_n;
use super::*;

/// A subscriber sees every transition of a job, in order, with progress and cancel requests.
pub async fn subscriber_sees_every_transition(h: &Harness) {
    let mut events = h.backend.subscribe(None).await.unwrap();
    let a = enqueue(h, job(1)).await;
    let lease = claim_one(h).await;
    h.backend
        .progress(&lease.to_ref(), 50, Some("half".into()))
        .await
        .unwrap();
    finish(h, &lease, completed()).await;
    let b = enqueue(h, job(2)).await;
    let lease = claim_one(h).await;
    finish(h, &lease, retry(1)).await;
    h.advance(Duration::from_secs(1));
    let lease = claim_one(h).await;
    h.backend.cancel(b.job_id).await.unwrap();
    finish(h, &lease, Outcome::Cancelled).await;

    use JobStatus::*;
    let t = |from: Option<JobStatus>, to| EventKind::Transition { from, to };
    let want_a = vec![
        t(None, Queued),
        t(Some(Queued), Processing),
        EventKind::Progress {
            progress: 50,
            step: Some("half".into()),
        },
        t(Some(Processing), Completed),
    ];
    let want_b = vec![
        t(None, Queued),
        t(Some(Queued), Processing),
        t(Some(Processing), Queued),
        t(Some(Queued), Processing),
        EventKind::CancelRequested,
        t(Some(Processing), Cancelled),
    ];
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    while got_a.len() < want_a.len() || got_b.len() < want_b.len() {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap_or_else(|_| panic!("missing events: a={got_a:?} b={got_b:?}"))
            .expect("stream ended");
        if event.job_id == a.job_id {
            got_a.push(event.kind);
        } else if event.job_id == b.job_id {
            got_b.push(event.kind);
        }
    }
    assert_eq!(got_a, want_a);
    assert_eq!(got_b, want_b);
}

async fn next_event(events: &mut queue_core::EventStream) -> queue_core::JobEvent {
    tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an event arrives")
        .expect("the stream goes on")
}

/// A subscriber that lost its connection resumes after the last event it saw: every event
/// in between comes from the log, in order, none twice, then the live ones; ids increase.
pub async fn a_subscriber_resumes_after_the_last_event_it_saw(h: &Harness) {
    use queue_core::parse_event_id;
    let mut first = h.backend.subscribe(None).await.expect("subscribe");
    let a = enqueue(h, ordered(h, 1)).await;
    let lease = claim_one(h).await;
    let seen = [next_event(&mut first).await, next_event(&mut first).await];
    assert!(seen.iter().all(|e| e.job_id == a.job_id));
    let last = seen[1].id.clone().expect("events carry their log id");
    assert!(
        parse_event_id(seen[0].id.as_deref().unwrap()) < parse_event_id(&last),
        "ids increase"
    );
    // The connection drops; the queue goes on.
    drop(first);
    h.backend
        .progress(&lease.to_ref(), 40, None)
        .await
        .expect("progress");
    finish(h, &lease, completed()).await;
    let b = enqueue(h, ordered(h, 2)).await;
    h.backend.cancel(b.job_id).await.expect("cancel");

    let mut resumed = h
        .backend
        .subscribe(Some(last.as_str()))
        .await
        .expect("resume");
    use JobStatus::*;
    let t = |from: Option<JobStatus>, to| EventKind::Transition { from, to };
    let want = [
        (
            a.job_id,
            EventKind::Progress {
                progress: 40,
                step: None,
            },
        ),
        (a.job_id, t(Some(Processing), Completed)),
        (b.job_id, t(None, Queued)),
        (b.job_id, t(Some(Queued), Cancelled)),
    ];
    let mut ids = vec![parse_event_id(&last).unwrap()];
    for (job, kind) in want {
        let e = next_event(&mut resumed).await;
        assert_eq!(
            (e.job_id, &e.kind),
            (job, &kind),
            "missed while disconnected"
        );
        ids.push(parse_event_id(e.id.as_deref().expect("an id")).expect("well formed"));
    }
    // Then live, once each.
    let c = enqueue(h, ordered(h, 3)).await;
    let e = next_event(&mut resumed).await;
    assert_eq!((e.job_id, e.kind), (c.job_id, t(None, Queued)));
    ids.push(parse_event_id(e.id.as_deref().expect("an id")).expect("well formed"));
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let extra = tokio::time::timeout(Duration::from_millis(300), resumed.next()).await;
    assert!(extra.is_err(), "nothing twice: {extra:?}");

    // Resuming from the last id sees only what comes after it.
    let c_id = e.id.clone().unwrap();
    let mut again = h
        .backend
        .subscribe(Some(c_id.as_str()))
        .await
        .expect("resume");
    let d = enqueue(h, ordered(h, 4)).await;
    assert_eq!(next_event(&mut again).await.job_id, d.job_id);

    assert!(matches!(
        h.backend.subscribe(Some("yesterday")).await.map(drop),
        Err(Error::InvalidArgument { .. })
    ));
}

/// The event log holds exactly [`queue_core::EVENT_LOG_LEN`] events: a subscriber resuming
/// from before the first of that many gets them all, with no gap; one event more, and
/// resuming from before the oldest is told it missed events (`EventKind::Missed`) where
/// they were, then gets the rest; resuming from an event the log still follows misses
/// nothing.
pub async fn the_event_log_holds_its_length(h: &Harness) {
    let len = queue_core::EVENT_LOG_LEN;
    // Someone follows the queue: events are logged.
    let _live = h.backend.subscribe(None).await.unwrap();
    let ids = enqueue_n(h, len).await;
    let replay = |after: String| {
        let backend = Arc::clone(&h.backend);
        async move { backend.subscribe(Some(after.as_str())).await.unwrap() }
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
    enqueue(h, ordered(h, 0)).await;
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
    let mut events = h.backend.subscribe(None).await.unwrap();
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
