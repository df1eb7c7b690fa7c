//! What the Redis backend stores and sends, checked on the raw keys: records keep no empty
//! fields, and events are published only while someone follows them.

mod support;

use std::{collections::HashMap, time::Duration};

use futures_util::StreamExt;
use queue_core::backend::{Broker, ClaimRequest, Outcome};
use queue_core::{JobStore, NewJob, WorkerId};
use redis::AsyncCommands;

fn req() -> ClaimRequest {
    ClaimRequest::new(WorkerId::new("w1"), 1, Duration::from_secs(30))
}

/// A finished record holds no empty field and no copy of its id; a field an attempt set
/// (here the error of a retried attempt) is removed when a later one clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_keep_no_empty_fields() {
    let url = support::redis_url();
    let backend = support::backend(&url, None).await;
    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let id = backend
        .enqueue(NewJob::new("t", &1).unwrap().max_retries(2))
        .await
        .unwrap()
        .job_id;
    let key = format!("dcs-test:{{{}}}:job:{id}", backend.config().queue_name);

    let lease = backend
        .fetch(&req(), Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    let retry = Outcome::Retry {
        error: "flaky".into(),
        delay: Duration::ZERO,
    };
    backend.finish(&lease.to_ref(), retry, None).await.unwrap();
    let fields: HashMap<String, String> = raw.hgetall(&key).await.unwrap();
    assert_eq!(
        fields.get("error_message").map(String::as_str),
        Some("flaky")
    );

    let lease = backend
        .fetch(&req(), Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    // Progress with a step, then with an empty one: the step is removed, not stored empty.
    backend
        .progress(&lease.to_ref(), 10, Some("parsing".into()))
        .await
        .unwrap();
    let fields: HashMap<String, String> = raw.hgetall(&key).await.unwrap();
    assert_eq!(
        fields.get("current_step").map(String::as_str),
        Some("parsing")
    );
    backend
        .progress(&lease.to_ref(), 20, Some(String::new()))
        .await
        .unwrap();
    let fields: HashMap<String, String> = raw.hgetall(&key).await.unwrap();
    assert_eq!(fields.get("current_step"), None, "{fields:?}");
    let done = Outcome::Completed { result: None };
    backend.finish(&lease.to_ref(), done, None).await.unwrap();
    let fields: Vec<(String, String)> = raw.hgetall(&key).await.unwrap();
    for (field, value) in &fields {
        assert!(
            !value.is_empty(),
            "field {field} is stored empty: {fields:?}"
        );
        assert!(
            ![
                "job_id",
                "error_message",
                "worker_id",
                "run_at",
                "result",
                "current_step"
            ]
            .contains(&field.as_str()),
            "field {field} should not be stored: {fields:?}"
        );
    }
    let record = backend.get(id).await.unwrap();
    assert_eq!((record.job_id, record.retry_count), (id, 1));
    assert_eq!(record.error_message, None);
    backend.destroy().await.unwrap();
}

/// Nobody subscribed: no event is published (a raw listener hears nothing). A subscriber
/// marks its presence, with an expiry it keeps renewing, and then hears every transition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_published_only_while_someone_follows_them() {
    let url = support::redis_url();
    let backend = support::backend(&url, None).await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let prefix = format!("dcs-test:{{{}}}:", backend.config().queue_name);
    let mut listener = client.get_async_pubsub().await.unwrap();
    listener.subscribe(format!("{prefix}events")).await.unwrap();
    let mut heard = listener.into_on_message();

    backend
        .enqueue(NewJob::new("t", &1).unwrap())
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), heard.next())
            .await
            .is_err(),
        "an event was published with nobody subscribed"
    );
    let present: bool = raw.exists(format!("{prefix}subs")).await.unwrap();
    assert!(!present);

    let mut events = backend.subscribe(None).await.unwrap();
    let ttl: i64 = raw.pttl(format!("{prefix}subs")).await.unwrap();
    // It outlives the last subscriber by the event log's linger, so one that reconnects
    // finds what it missed.
    let linger = queue_core::EVENT_LOG_LINGER.as_millis() as i64;
    assert!(
        ttl > linger - 5_000 && ttl <= linger,
        "presence expiry {ttl} ms"
    );
    let id = backend
        .enqueue(NewJob::new("t", &2).unwrap())
        .await
        .unwrap()
        .job_id;
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("the subscriber hears the enqueue")
        .expect("open");
    assert_eq!(event.job_id, id);
    let message = tokio::time::timeout(Duration::from_secs(5), heard.next())
        .await
        .expect("the raw listener hears it too")
        .expect("open");
    let payload = message.get_payload::<String>().unwrap();
    assert!(payload.contains(&id.to_string()));
    // The event went to the log too, under the id it was published with.
    let logged: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{prefix}log"))
        .arg("-")
        .arg("+")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(logged.len(), 1, "only what was published while followed");
    assert!(
        payload.starts_with(&format!("{{\"id\":\"{}\",", logged[0].0)),
        "{payload}"
    );
    drop(events);
    backend.destroy().await.unwrap();
}

/// A finished job is listed in its status set by when it finished, and nothing else keeps
/// its retention clock: each is swept an hour after it finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_indexed_by_when_they_finished() {
    let url = support::redis_url();
    let clock = queue_core::ManualClock::new();
    let backend = support::backend(&url, Some(clock.clone())).await;
    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let prefix = format!("dcs-test:{{{}}}:", backend.config().queue_name);
    let finish_one = async |n: u32| {
        let record = backend
            .enqueue(NewJob::new("t", &n).unwrap())
            .await
            .unwrap();
        clock.advance(Duration::from_secs(1800));
        let lease = backend
            .fetch(&req(), Duration::ZERO)
            .await
            .unwrap()
            .remove(0);
        let done = Outcome::Completed { result: None };
        backend.finish(&lease.to_ref(), done, None).await.unwrap();
        record
    };
    let new = finish_one(1).await;
    let old = finish_one(2).await;
    let created = |r: &queue_core::JobRecord| queue_core::backend::to_millis(r.created_at);
    let score: Option<i64> = raw
        .zscore(format!("{prefix}st:completed"), new.job_id.to_string())
        .await
        .unwrap();
    assert_eq!(score, Some(created(&new) + 1_800_000), "when it finished");
    let finished: Vec<String> = raw
        .zrange(format!("{prefix}finished"), 0, -1)
        .await
        .unwrap();
    assert!(finished.is_empty(), "no second index: {finished:?}");
    // An hour after `new` finished (and `old` was created): only `new` is due.
    clock.advance(Duration::from_secs(1801));
    assert_eq!(backend.sweep(100).await.unwrap(), 1);
    assert!(backend.get(new.job_id).await.is_err());
    backend.get(old.job_id).await.unwrap();
    clock.advance(Duration::from_secs(1800));
    assert_eq!(backend.sweep(100).await.unwrap(), 1);
    assert!(backend.get(old.job_id).await.is_err());
    backend.destroy().await.unwrap();
}

/// The charts' buckets are one small hash per minute and per quarter hour, each with an
/// expiry an interval after its span (so memory stays bounded without a sweep), holding
/// the counters, the histograms and the depth a heartbeat sampled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_buckets_expire_on_their_own() {
    use queue_core::SeriesSpan;
    let url = support::redis_url();
    let backend = support::backend(&url, None).await;
    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    backend
        .enqueue(NewJob::new("t", &1).unwrap())
        .await
        .unwrap();
    let lease = backend
        .fetch(&req(), Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    backend
        .finish(&lease.to_ref(), Outcome::Completed { result: None }, None)
        .await
        .unwrap();
    let pattern = format!("dcs-test:{{{}}}:series:*", backend.config().queue_name);
    let keys: Vec<String> = raw.keys(&pattern).await.unwrap();
    assert!(
        (2..=4).contains(&keys.len()),
        "one bucket per span: {keys:?}"
    );
    for key in &keys {
        let span = if key.contains(":series:m:") {
            SeriesSpan::Hour
        } else {
            SeriesSpan::Day
        };
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(
            ttl > 0 && ttl <= span.keep_ms() + span.step_ms(),
            "{key}: {ttl}"
        );
        let fields: HashMap<String, i64> = raw.hgetall(key).await.unwrap();
        assert_eq!(
            (fields.get("enqueued"), fields.get("completed")),
            (Some(&1), Some(&1)),
            "{key}: {fields:?}"
        );
        let bins: i64 = fields
            .iter()
            .filter(|(k, _)| k.starts_with('w') || k.starts_with('r'))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(bins, 2, "one wait and one run time: {fields:?}");
    }
    backend.destroy().await.unwrap();
}
