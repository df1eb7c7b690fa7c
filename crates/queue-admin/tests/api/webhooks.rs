//! Routes of webhooks.

use super::*;

/// Webhooks through the API: created (secret hidden in every answer), listed, refused
/// when malformed, deleted; the outbox is listed and a parked delivery re-sent.
async fn webhooks(backend: SharedBackend) {
    let s = Server::start(backend.clone(), Some(TOKEN)).await;
    let body = r#"{"url":"http://127.0.0.1:9/hooks","secret":"a-shared-secret-of-32-bytes-long","events":["completed","failed"],"task":"process_book"}"#;
    let (status, created) = s.json("PUT", "/webhooks/publisher", Some(body)).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["secret"], "***");
    assert_eq!(created["max_attempts"], 10);
    let (status, list) = s.json("GET", "/webhooks", None).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["secret"], "***");
    assert!(!list.to_string().contains("a-shared-secret"), "{list}");
    for (bad, named) in [
        (
            r#"{"url":"ftp://x","secret":"a-shared-secret-of-32-bytes-long"}"#,
            "url",
        ),
        (r#"{"url":"http://x","secret":"short"}"#, "secret"),
        (
            r#"{"url":"http://x","secret":"a-shared-secret-of-32-bytes-long","events":["queued"]}"#,
            "queued",
        ),
        (r#"{"secret":"a-shared-secret-of-32-bytes-long"}"#, "url"),
    ] {
        let (status, err) = s.json("PUT", "/webhooks/x", Some(bad)).await;
        assert_eq!(status, 400, "{bad}: {err}");
        assert!(
            err["error"].as_str().unwrap_or_default().contains(named),
            "{err} names {named}"
        );
    }
    // A job of that task that completes leaves a delivery.
    let job = backend
        .enqueue(queue_core::NewJob::new("process_book", &1).unwrap())
        .await
        .unwrap();
    backend.cancel(job.job_id).await.unwrap();
    let (status, pending) = s.json("GET", "/deliveries", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        pending.as_array().map(Vec::len),
        Some(0),
        "cancelled is not wanted: {pending}"
    );
    let job = backend
        .enqueue(queue_core::NewJob::new("process_book", &2).unwrap())
        .await
        .unwrap();
    let lease = backend
        .fetch(
            &queue_core::backend::ClaimRequest::new(
                queue_core::WorkerId::new("w"),
                1,
                Duration::from_secs(30),
            ),
            Duration::ZERO,
        )
        .await
        .unwrap()
        .pop()
        .unwrap();
    backend
        .finish(
            &lease.to_ref(),
            queue_core::backend::Outcome::Completed { result: None },
            None,
        )
        .await
        .unwrap();
    let (status, pending) = s.json("GET", "/deliveries?limit=10", None).await;
    assert_eq!(status, 200);
    assert_eq!(pending[0]["job_id"], job.job_id.to_string(), "{pending}");
    assert_eq!(pending[0]["event"], "completed");
    // Park it as a delivery loop would after its last attempt, then re-send it.
    let claimed = backend
        .claim_deliveries(10, Duration::from_secs(60))
        .await
        .unwrap()
        .pop()
        .unwrap();
    let mut parked = claimed.delivery.clone();
    parked.parked = true;
    parked.attempts = 10;
    assert!(
        backend
            .settle_delivery(
                &claimed.delivery.id,
                &claimed.stored,
                queue_core::backend::Settle::Park(parked.encode()),
            )
            .await
            .unwrap()
    );
    let (status, list) = s.json("GET", "/deliveries?parked=true", None).await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["attempts"], 10, "{list}");
    let resend = format!(
        "/deliveries/{}/resend",
        claimed.delivery.id.replace('|', "%7C")
    );
    let (status, out) = s.json("POST", &resend, None).await;
    assert_eq!(status, 200, "{out}");
    let (status, _) = s.json("POST", &resend, None).await;
    assert_eq!(status, 404, "no longer parked");
    let (status, err) = s.json("GET", "/deliveries?limit=0", None).await;
    assert_eq!(status, 400, "{err}");
    let (status, _) = s.call("DELETE", "/webhooks/publisher", None, true).await;
    assert_eq!(status, 204);
    let (status, err) = s.json("DELETE", "/webhooks/publisher", None).await;
    assert_eq!(status, 404, "{err}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_memory() {
    webhooks(shared(MemoryBackend::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_redis() {
    let b = redis().await;
    webhooks(shared(b.clone())).await;
    b.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_postgres() {
    let (b, _schema) = crate::postgres().await;
    webhooks(shared(b)).await;
}
