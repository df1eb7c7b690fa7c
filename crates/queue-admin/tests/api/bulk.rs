//! Bulk actions.

use super::*;

/// Bulk actions through the API: a dry run counts, a retry of 100 failed jobs interrupted
/// after one step resumes from its cursor and retries each once, a cancel by unique key
/// prefix, and bad requests answered 400 naming what is wrong.
async fn bulk(backend: SharedBackend) {
    use queue_core::backend::{ClaimRequest, Outcome};
    use queue_core::{NewJob, WorkerId};
    let jobs: Vec<NewJob> = (0..100)
        .map(|n| NewJob::new("t", &n).unwrap().unique_key(format!("k-{n}")))
        .collect();
    for r in backend.enqueue_many(jobs).await.unwrap() {
        r.unwrap();
    }
    let mut failed = 0;
    while failed < 100 {
        let req = ClaimRequest::new(WorkerId::new("w"), 50, Duration::from_secs(60));
        for lease in backend.fetch(&req, Duration::ZERO).await.unwrap() {
            let outcome = Outcome::Failed {
                error: "boom".into(),
            };
            backend
                .finish(&lease.to_ref(), outcome, None)
                .await
                .unwrap();
            failed += 1;
        }
    }
    let s = Server::start(backend.clone(), Some(TOKEN)).await;
    let step = |body: serde_json::Value| {
        let s = &s;
        async move { s.json("POST", "/jobs/bulk", Some(&body.to_string())).await }
    };
    let (status, counted) = step(json!({"action": "retry", "filter": {"status": "failed"},
        "limit": 1000, "dry_run": true}))
    .await;
    assert_eq!(status, 200, "{counted}");
    assert_eq!(
        (counted["matched"].as_u64(), counted["done"].as_u64()),
        (Some(100), Some(0))
    );
    assert!(counted["next_cursor"].is_null());
    assert_eq!(
        backend.stats().await.unwrap().failed,
        100,
        "a dry run changes nothing"
    );

    let (status, first) =
        step(json!({"action": "retry", "filter": {"status": "failed"}, "limit": 40})).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["done"], 40);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("more to do")
        .to_owned();
    // Interrupted here; resumed from the cursor.
    let (status, rest) = step(json!({"action": "retry", "filter": {"status": "failed"},
        "limit": 1000, "cursor": cursor}))
    .await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(
        (
            rest["done"].as_u64(),
            rest["refused"].as_array().map(Vec::len)
        ),
        (Some(60), Some(0))
    );
    assert!(rest["next_cursor"].is_null());
    let stats = backend.stats().await.unwrap();
    assert_eq!((stats.queued, stats.failed), (100, 0), "each retried once");

    // k-1 and k-10..k-19.
    let (status, cancelled) = step(json!({"action": "cancel",
        "filter": {"unique_key_prefix": "k-1"}, "limit": 1000}))
    .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["done"], 11);
    assert_eq!(backend.stats().await.unwrap().cancelled, 11);

    // Delete the cancelled records: counted, 5 deleted, interrupted, resumed for the rest.
    let cancelled_only = json!({"status": "cancelled"});
    let (_, counted) = step(json!({"action": "delete", "filter": cancelled_only,
        "dry_run": true}))
    .await;
    assert_eq!(counted["matched"], 11, "{counted}");
    let (status, first) =
        step(json!({"action": "delete", "filter": cancelled_only, "limit": 5})).await;
    assert_eq!((status, first["done"].as_u64()), (200, Some(5)), "{first}");
    let (_, rest) = step(json!({"action": "delete", "filter": cancelled_only,
        "cursor": first["next_cursor"]}))
    .await;
    assert_eq!(
        (rest["done"].as_u64(), rest["next_cursor"].as_str()),
        (Some(6), None)
    );
    let stats = backend.stats().await.unwrap();
    assert_eq!((stats.cancelled, stats.total), (0, 89), "each deleted once");
    // One record: a queued job is refused with 409 naming why; a finished one is deleted.
    let queued = backend
        .list(&queue_core::ListQuery::new())
        .await
        .unwrap()
        .jobs[0]
        .job_id;
    let (status, refused) = s.json("DELETE", &format!("/jobs/{queued}"), None).await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("not finished"),
        "{refused}"
    );
    backend.cancel(queued).await.unwrap();
    let (status, deleted) = s.json("DELETE", &format!("/jobs/{queued}"), None).await;
    assert_eq!(
        (status, deleted["status"].as_str()),
        (200, Some("cancelled"))
    );
    let (status, _) = s.json("GET", &format!("/jobs/{queued}"), None).await;
    assert_eq!(status, 404);

    for (body, names) in [
        (json!({"action": "purge"}), "purge"),
        (json!({"action": "retry", "limit": 0}), "limit"),
        (json!({"action": "retry", "filter": {"bogus": 1}}), "bogus"),
        (
            json!({"action": "retry", "filter": {"status": "lost"}}),
            "lost",
        ),
        (json!({"action": "retry", "filter": {"task": ""}}), "task"),
        (
            json!({"action": "retry", "filter": {"created_after": "2026-01-02T00:00:00Z",
                "created_before": "2026-01-01T00:00:00Z"}}),
            "created_before",
        ),
        (json!({"action": "retry", "cursor": "nonsense"}), "cursor"),
    ] {
        let (status, answer) = step(body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert!(answer.to_string().contains(names), "{body} -> {answer}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_memory() {
    bulk(shared(MemoryBackend::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_redis() {
    let b = redis().await;
    bulk(shared(b.clone())).await;
    b.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_postgres() {
    let (b, _schema) = crate::postgres().await;
    bulk(shared(b)).await;
}
