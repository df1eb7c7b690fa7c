//! Charts' series and search.

use super::*;

/// The charts' series after a run, and searching by task, prefix and time.
async fn series_and_search(backend: SharedBackend) {
    use queue_core::backend::{ClaimRequest, Outcome};
    use queue_core::{NewJob, WorkerId};
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    for n in 0..12 {
        let task = if n % 3 == 0 { "render" } else { "t" };
        let job = NewJob::new(task, &n)
            .unwrap()
            .unique_key(format!("book-{n:02}"));
        backend.enqueue(job).await.unwrap();
    }
    let req = ClaimRequest::new(WorkerId::new("w"), 4, Duration::from_secs(60));
    for (i, lease) in backend
        .fetch(&req, Duration::ZERO)
        .await
        .unwrap()
        .into_iter()
        .enumerate()
    {
        let outcome = if i == 0 {
            Outcome::Failed {
                error: "boom".into(),
            }
        } else {
            Outcome::Completed { result: None }
        };
        backend
            .finish(&lease.to_ref(), outcome, None)
            .await
            .unwrap();
    }
    let s = Server::start(backend.clone(), Some(TOKEN)).await;
    let (status, series) = s.json("GET", "/series?span=hour", None).await;
    assert_eq!(status, 200, "{series}");
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 60);
    let total = |name: &str| -> u64 {
        points
            .iter()
            .map(|p| p["counts"][name].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(
        (total("enqueued"), total("completed"), total("failed")),
        (12, 3, 1)
    );
    let waits: u64 = points
        .iter()
        .map(|p| p["wait_ms"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(waits, 4);
    assert!(
        points.iter().any(|p| p["run_ms"]["p99"].is_u64()),
        "{series}"
    );
    let (status, day) = s.json("GET", "/series?span=day", None).await;
    assert_eq!(
        (status, day["points"].as_array().map(Vec::len)),
        (200, Some(96))
    );
    let (status, bad) = s.json("GET", "/series?span=week", None).await;
    assert_eq!(status, 400);
    assert!(bad["error"].as_str().unwrap().contains("week"), "{bad}");

    // Search: by task (4 render jobs), two per page, resumed from the cursor.
    let (status, first) = s.json("GET", "/jobs?task=render&limit=2", None).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["jobs"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let (_, rest) = s
        .json(
            "GET",
            &format!("/jobs?task=render&limit=10&cursor={cursor}"),
            None,
        )
        .await;
    let mut keys: Vec<String> = first["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["jobs"].as_array().unwrap())
        .map(|j| j["unique_key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, ["book-00", "book-03", "book-06", "book-09"]);
    let after = before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let url = format!(
        "/jobs?unique_key_prefix=book-1&created_after={}",
        after.replace('+', "%2B")
    );
    let (status, prefixed) = s.json("GET", &url, None).await;
    assert_eq!(status, 200, "{prefixed}");
    assert_eq!(
        prefixed["jobs"].as_array().unwrap().len(),
        2,
        "book-10, book-11"
    );
    let (status, none) = s
        .json("GET", "/jobs?created_before=2000-01-01T00:00:00Z", None)
        .await;
    assert_eq!(
        (status, none["jobs"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let (status, bad) = s.json("GET", "/jobs?created_after=yesterday", None).await;
    assert_eq!(status, 400);
    assert!(bad["error"].as_str().unwrap().contains("filter"), "{bad}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_and_search_memory() {
    series_and_search(shared(MemoryBackend::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_and_search_redis() {
    let b = redis().await;
    series_and_search(shared(b.clone())).await;
    b.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_and_search_postgres() {
    let (b, _schema) = crate::postgres().await;
    series_and_search(shared(b)).await;
}
