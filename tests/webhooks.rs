//! Durable webhooks end to end: a real worker delivers every finished job to a local
//! receiver, signed, retrying a receiver that fails, parking what keeps failing until an
//! operator sends it again.

use std::{collections::BTreeMap, time::Duration};

use queue_core::{JobStatus, JobStore, NewJob, Webhook, verify_webhook_signature};
use queue_testkit::receiver::Receiver;
use queue_worker::{JobError, Worker};
use serde_json::Value;

use crate::support::{backend, start, start_waiting, wait_status};

const SECRET: &str = "a-shared-secret-of-32-bytes-long";

/// Waits (real time) until `done` holds for what the receiver got.
async fn until(
    receiver: &Receiver,
    what: &str,
    done: impl Fn(&[queue_testkit::receiver::Received]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done(&receiver.received()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: got {:?}",
            receiver
                .received()
                .iter()
                .map(|r| String::from_utf8_lossy(&r.body).to_string())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_finished_job_is_delivered_signed_and_retried() {
    let store = backend();
    // The receiver fails the first two requests: those deliveries are sent again.
    let receiver = Receiver::start(2).await;
    store
        .put_webhook(
            &Webhook::new("publisher", receiver.url.as_str(), SECRET)
                .task("book")
                .retries(5, Duration::from_millis(100)),
        )
        .await
        .unwrap();
    let worker = start(
        Worker::builder(store.clone())
            .concurrency(3)
            .register("book", |n: u32, _ctx| async move {
                match n {
                    4 => Err(JobError::permanent("unreadable manuscript")),
                    _ => Ok(()),
                }
            })
            .register("other", |_: u32, _ctx| async move { Ok(()) }),
    );
    let mut want = BTreeMap::new();
    for n in 1..=4u32 {
        let job = store
            .enqueue(NewJob::new("book", &n).unwrap().max_retries(0))
            .await
            .unwrap();
        let status = if n == 4 {
            JobStatus::Failed
        } else {
            JobStatus::Completed
        };
        want.insert(job.job_id.to_string(), status.as_str().to_owned());
    }
    let cancelled = store
        .enqueue(
            NewJob::new("book", &5)
                .unwrap()
                .delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    store.cancel(cancelled.job_id).await.unwrap();
    want.insert(cancelled.job_id.to_string(), "cancelled".to_owned());
    // Another task's job is not this webhook's business.
    let other = store
        .enqueue(NewJob::new("other", &0).unwrap())
        .await
        .unwrap();
    wait_status(&store, other.job_id, JobStatus::Completed).await;

    let delivered = |r: &[queue_testkit::receiver::Received]| {
        let mut got = BTreeMap::new();
        for x in r.iter().filter(|x| x.status == 200) {
            let body: Value = serde_json::from_slice(&x.body).unwrap();
            got.insert(
                body["job"]["job_id"].as_str().unwrap().to_owned(),
                body["event"].as_str().unwrap().to_owned(),
            );
        }
        got
    };
    until(&receiver, "every finished book delivered", |r| {
        delivered(r) == want
    })
    .await;
    let all = receiver.received();
    assert_eq!(all.iter().filter(|x| x.status == 500).count(), 2);
    let mut attempts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for x in &all {
        let ts: i64 = x.headers["x-dcs-timestamp"].parse().unwrap();
        assert!(
            verify_webhook_signature(SECRET, ts, &x.body, &x.headers["x-dcs-signature"]),
            "a valid signature"
        );
        assert!(!verify_webhook_signature(
            "another-secret-entirely!!",
            ts,
            &x.body,
            &x.headers["x-dcs-signature"]
        ));
        let body: Value = serde_json::from_slice(&x.body).unwrap();
        assert_eq!(
            x.headers["x-dcs-delivery"],
            body["delivery_id"].as_str().unwrap()
        );
        assert_eq!(x.headers["x-dcs-event"], body["event"].as_str().unwrap());
        assert_eq!(x.headers["content-type"], "application/json");
        assert_eq!(body["webhook"], "publisher");
        assert_eq!(body["job"]["task"], "book");
        attempts
            .entry(body["delivery_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(body["attempt"].as_u64().unwrap());
    }
    // Five deliveries; the two that failed were sent again, counting their attempts.
    assert_eq!(attempts.len(), 5);
    // The two failed requests were sent again: each delivery's attempts count 1, 2, ...
    let extra: usize = attempts.values().map(|a| a.len() - 1).sum();
    assert_eq!(extra, 2, "{attempts:?}");
    for a in attempts.values() {
        assert!(
            a.iter().copied().eq(1..=a.len() as u64),
            "attempts count up: {attempts:?}"
        );
    }
    // Nothing left in the outbox, once the publisher has recorded the last answer (it
    // does so after the receiver answered, so the receiver can see it first).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !store.deliveries(false, 10).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the outbox empties");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(store.deliveries(true, 10).await.unwrap().is_empty());
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_stays_down_parks_and_an_operator_resends() {
    let store = backend();
    // Nothing listens on the webhook's port: every attempt is refused.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let hook = Webhook::new("down", format!("http://127.0.0.1:{closed}/hooks"), SECRET)
        .retries(3, Duration::from_millis(100));
    store.put_webhook(&hook).await.unwrap();
    // An https:// URL goes through the TLS client (here refused at the TCP connect).
    let tls = Webhook::new(
        "down-tls",
        format!("https://127.0.0.1:{closed}/hooks"),
        SECRET,
    )
    .retries(2, Duration::from_millis(100));
    store.put_webhook(&tls).await.unwrap();
    let worker =
        start(Worker::builder(store.clone()).register("t", |_: u32, _ctx| async move { Ok(()) }));
    let job = store.enqueue(NewJob::new("t", &1).unwrap()).await.unwrap();
    wait_status(&store, job.job_id, JobStatus::Completed).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut parked = loop {
        let parked = store.deliveries(true, 10).await.unwrap();
        if parked.len() == 2 {
            break parked;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deliveries were parked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    parked.sort_by(|a, b| a.webhook.cmp(&b.webhook));
    assert_eq!((parked[0].attempts, parked[1].attempts), (3, 2));
    for p in &parked {
        // Coarse: whether the port was closed, filtered or not HTTP does not show.
        assert_eq!(p.last_error.as_deref(), Some("connect failed"));
    }
    // The receiver is back (at a new address): the operator points the webhook at it and
    // sends the parked delivery again.
    let receiver = Receiver::start(0).await;
    store
        .put_webhook(&Webhook {
            url: receiver.url.clone(),
            ..hook
        })
        .await
        .unwrap();
    assert!(store.resend_delivery(&parked[0].id).await.unwrap());
    until(&receiver, "the parked delivery", |r| r.len() == 1).await;
    let body: Value = serde_json::from_slice(&receiver.received()[0].body).unwrap();
    assert_eq!(body["delivery_id"], parked[0].id.as_str());
    assert_eq!(body["attempt"], 1);
    worker.shutdown().await;
}

/// By default deliveries go to public addresses only: a receiver on loopback (by address or
/// by a name that resolves there) and the cloud metadata address are refused without a
/// request being sent, the stored error says so (and nothing about the port); allowing
/// the range lets the same delivery through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_to_internal_addresses_are_refused_unless_allowed() {
    let store = backend();
    let receiver = Receiver::start(0).await;
    let port = receiver
        .url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .expect("a port");
    for (name, url) in [
        ("by-address", receiver.url.to_string()),
        ("by-name", format!("http://localhost:{port}/hooks")),
        (
            "metadata",
            "http://169.254.169.254/latest/meta-data".to_owned(),
        ),
    ] {
        store
            .put_webhook(&Webhook::new(name, url, SECRET).retries(1, Duration::from_millis(100)))
            .await
            .unwrap();
    }
    let worker = start_waiting(
        Worker::builder(store.clone()).register("t", |_: u32, _ctx| async move { Ok(()) }),
        Duration::from_millis(200),
    );
    let job = store.enqueue(NewJob::new("t", &1).unwrap()).await.unwrap();
    wait_status(&store, job.job_id, JobStatus::Completed).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let parked = loop {
        let parked = store.deliveries(true, 10).await.unwrap();
        if parked.len() == 3 {
            break parked;
        }
        assert!(tokio::time::Instant::now() < deadline, "parked: {parked:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for p in &parked {
        assert_eq!(
            p.last_error.as_deref(),
            Some("refused by the webhook egress policy"),
            "{}",
            p.webhook
        );
    }
    assert!(
        receiver.received().is_empty(),
        "nothing reached the receiver"
    );
    worker.shutdown().await;

    // Allowed by range: the parked delivery to the receiver goes through.
    let allowed = queue_worker::WebhookEgress::from_list("127.0.0.0/8").unwrap();
    let worker = start_waiting(
        Worker::builder(store.clone())
            .webhook_egress(allowed)
            .register("t", |_: u32, _ctx| async move { Ok(()) }),
        Duration::from_millis(200),
    );
    let by_address = parked.iter().find(|p| p.webhook == "by-address").unwrap();
    assert!(store.resend_delivery(&by_address.id).await.unwrap());
    until(&receiver, "the allowed delivery", |r| r.len() == 1).await;
    worker.shutdown().await;
}
