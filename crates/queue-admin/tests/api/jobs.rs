//! Routes of jobs: the round trip of every route, and bad input refused.

use super::*;

/// Every route, the happy paths and the conflicts.
async fn round_trip(backend: SharedBackend) {
    let s = Server::start(backend, Some(TOKEN)).await;
    assert_eq!(
        s.call("GET", "/health", None, false).await.0,
        200,
        "health needs no token"
    );
    assert_eq!(
        s.call("GET", "/stats", None, false).await.0,
        401,
        "stats needs the token"
    );
    assert_eq!(
        s.call("GET", "/metrics", None, false).await.0,
        401,
        "metrics name the groups: they need the token too"
    );
    // No page may be framed by another site.
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n", s.addr)
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let head = raw
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-security-policy: frame-ancestors 'none'")
            && head.contains("x-frame-options: deny"),
        "{head}"
    );
    let (status, stats) = s.json("GET", "/stats", None).await;
    assert_eq!((status, stats["total"].as_u64()), (200, Some(0)));

    let job = r#"{"task":"process_book","payload":{"book_id":"b-1","publisher_id":"p","job_type":"full"},"unique_key":"b-1"}"#;
    let (status, created) = s.json("POST", "/jobs", Some(job)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["job_id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "queued");
    let (status, dup) = s.json("POST", "/jobs", Some(job)).await;
    assert_eq!(
        (status, dup["job_id"].as_str()),
        (409, Some(id.as_str())),
        "{dup}"
    );
    for n in 2..5 {
        let body = json!({"task": "t", "payload": n, "priority": "low"}).to_string();
        assert_eq!(s.json("POST", "/jobs", Some(&body)).await.0, 201);
    }
    let (status, record) = s.json("GET", &format!("/jobs/{id}"), None).await;
    assert_eq!((status, record["unique_key"].as_str()), (200, Some("b-1")));
    // Long-poll: the record at the timeout; woken by the job's ending.
    let (status, record) = s.json("GET", &format!("/jobs/{id}?wait=0.2"), None).await;
    assert_eq!((status, record["status"].as_str()), (200, Some("queued")));
    for bad in ["wait=61", "wait=-1", "wait=soon"] {
        let (status, body) = s.json("GET", &format!("/jobs/{id}?{bad}"), None).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // Paging newest first.
    let (_, page) = s.json("GET", "/jobs?limit=3", None).await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 3);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, rest) = s
        .json("GET", &format!("/jobs?limit=3&cursor={cursor}"), None)
        .await;
    let last = rest["jobs"].as_array().unwrap();
    assert_eq!(
        (last.len(), last[0]["job_id"].as_str()),
        (1, Some(id.as_str()))
    );
    assert!(rest["next_cursor"].is_null());
    let (_, by_book) = s
        .json("GET", "/jobs?unique_key=b-1&status=queued", None)
        .await;
    assert_eq!(by_book["jobs"].as_array().unwrap().len(), 1);

    // Cancel, retry with a new priority, refused transitions.
    let (status, cancelled) = s.json("POST", &format!("/jobs/{id}/cancel"), None).await;
    assert_eq!(
        (status, cancelled["result"].as_str()),
        (200, Some("cancelled"))
    );
    assert_eq!(
        s.json("POST", &format!("/jobs/{id}/cancel"), None).await.0,
        409
    );
    let (status, retried) = s
        .json(
            "POST",
            &format!("/jobs/{id}/retry"),
            Some(r#"{"priority":"high"}"#),
        )
        .await;
    assert_eq!(
        (
            status,
            retried["priority"].as_str(),
            retried["status"].as_str()
        ),
        (200, Some("high"), Some("queued"))
    );
    let (status, refused) = s.json("POST", &format!("/jobs/{id}/retry"), None).await;
    assert_eq!(status, 409, "{refused}");

    let body = json!({"task": "t", "payload": 0}).to_string();
    let (_, waited) = s.json("POST", "/jobs", Some(&body)).await;
    let waited = waited["job_id"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    let long_poll = format!("/jobs/{waited}?wait=30");
    let ((status, record), _) = tokio::join!(s.json("GET", &long_poll, None), async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        s.json("POST", &format!("/jobs/{waited}/cancel"), None)
            .await
    });
    assert_eq!(
        (status, record["status"].as_str()),
        (200, Some("cancelled"))
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "woken by the cancel"
    );
    let (status, workers) = s.json("GET", "/workers", None).await;
    assert_eq!((status, workers.as_array().map(Vec::len)), (200, Some(0)));
    let (status, stats) = s.json("GET", "/stats", None).await;
    assert_eq!(
        (
            status,
            stats["queued"].as_u64(),
            stats["depth"]["high"].as_u64()
        ),
        (200, Some(4), Some(1))
    );
    assert_eq!(stats["paused"], false);
    control_and_groups(&s).await;
    documents(&s, &id).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_memory() {
    round_trip(shared(MemoryBackend::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_redis() {
    let b = redis().await;
    round_trip(shared(b.clone())).await;
    b.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_postgres() {
    let (b, _schema) = crate::postgres().await;
    round_trip(shared(b)).await;
}

/// Every kind of bad input is a 4xx with a JSON error naming the problem.
async fn bad_input(backend: SharedBackend) {
    let s = Server::start(backend, Some(TOKEN)).await;
    let cases: Vec<(&str, String, Option<String>, u16, &str)> = vec![
        (
            "POST",
            "/jobs".into(),
            Some("{not json".into()),
            400,
            "malformed job",
        ),
        (
            "POST",
            "/jobs".into(),
            Some(r#"{"payload":{}}"#.into()),
            400,
            "missing field `task`",
        ),
        (
            "POST",
            "/jobs".into(),
            Some(r#"{"task":"t","priority":"urgent"}"#.into()),
            400,
            "unknown variant",
        ),
        (
            "POST",
            "/jobs".into(),
            Some(r#"{"task":"t","colour":"red"}"#.into()),
            400,
            "unknown field",
        ),
        (
            "POST",
            "/jobs".into(),
            Some(r#"{"task":""}"#.into()),
            400,
            "task name is empty",
        ),
        // Bounds, each named (the delay used to overflow the due time).
        (
            "POST",
            "/jobs".into(),
            Some(r#"{"task":"t","delay_seconds":18446744073709551615}"#.into()),
            400,
            "delay:",
        ),
        (
            "POST",
            "/jobs".into(),
            Some(r#"{"task":"t","timeout_seconds":0}"#.into()),
            400,
            "timeout: must be at least",
        ),
        (
            "POST",
            "/jobs".into(),
            Some(r#"{"task":"t","max_retries":5000}"#.into()),
            400,
            "max_retries: 5000 is above the limit",
        ),
        (
            "POST",
            "/jobs".into(),
            Some(format!(
                r#"{{"task":"t","payload":"{}"}}"#,
                "x".repeat(400_000)
            )),
            413,
            "larger than",
        ),
        (
            "GET",
            "/jobs?status=sleeping".into(),
            None,
            400,
            "unknown status",
        ),
        ("GET", "/jobs?limit=abc".into(), None, 400, "limit"),
        ("GET", "/jobs?limit=0".into(), None, 400, "limit"),
        ("GET", "/jobs?cursor=garbage".into(), None, 400, "cursor"),
        (
            "GET",
            "/jobs?colour=red".into(),
            None,
            400,
            "unknown query parameter",
        ),
        ("GET", "/jobs/not-a-uuid".into(), None, 400, "not a job id"),
        (
            "GET",
            "/jobs/0192aaaa-0000-7000-8000-000000000000".into(),
            None,
            404,
            "not found",
        ),
        (
            "POST",
            "/jobs/0192aaaa-0000-7000-8000-000000000000/cancel".into(),
            None,
            404,
            "not found",
        ),
        (
            "POST",
            "/jobs/0192aaaa-0000-7000-8000-000000000000/retry".into(),
            Some(r#"{"priority":1}"#.into()),
            400,
            "malformed retry",
        ),
        ("GET", "/nowhere".into(), None, 404, "no such route"),
        ("DELETE", "/jobs".into(), None, 405, "method not allowed"),
    ];
    for (method, path, body, want, needle) in cases {
        let (status, text) = s.call(method, &path, body.as_deref(), true).await;
        assert_eq!(status, want, "{method} {path}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{method} {path}: {msg}");
    }
    let (status, text) = s.call("GET", "/stats", None, false).await;
    assert!(status == 401 && text.contains("bearer token"), "{text}");
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(
            format!("GET /stats HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer wrong\r\nConnection: close\r\n\r\n", s.addr)
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 401"), "{raw}");
    // The query carries the token only where a browser cannot send a header.
    assert_eq!(
        s.call("GET", &format!("/stats?token={TOKEN}"), None, false)
            .await
            .0,
        401
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_memory() {
    bad_input(shared(MemoryBackend::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_redis() {
    let b = redis().await;
    bad_input(shared(b.clone())).await;
    b.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_postgres() {
    let (b, _schema) = crate::postgres().await;
    bad_input(shared(b)).await;
}

/// Key modes over HTTP: a debounced enqueue is created (201), the next is answered with the
/// pending job whose payload it replaced (200); a throttled one within its window with
/// the window's job (200); keep-latest likewise; a sequence's member names the one it waits
/// for; two modes at once are refused (400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_modes_answer_the_job_holding_the_key() {
    let s = Server::start(shared(MemoryBackend::new()), Some(TOKEN)).await;
    let post = |body: serde_json::Value| {
        let s = &s;
        async move { s.json("POST", "/jobs", Some(&body.to_string())).await }
    };
    let debounced = |n: u32| json!({"task": "t", "payload": {"n": n}, "unique_key": "doc", "debounce_ms": 5000});
    let (status, first) = post(debounced(1)).await;
    assert_eq!(
        (status, first["replaced"].as_u64()),
        (201, Some(0)),
        "{first}"
    );
    let (status, again) = post(debounced(2)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["job_id"], first["job_id"]);
    assert_eq!(
        (again["replaced"].as_u64(), &again["payload"]),
        (Some(1), &json!({"n": 2}))
    );
    let throttled = json!({"task": "t", "payload": {}, "unique_key": "feed", "throttle_ms": 60000});
    let (status, window) = post(throttled.clone()).await;
    assert_eq!(status, 201, "{window}");
    let (status, answer) = post(throttled).await;
    assert_eq!(
        (status, &answer["job_id"]),
        (200, &window["job_id"]),
        "{answer}"
    );
    let latest = |n: u32| json!({"task": "t", "payload": {"n": n}, "unique_key": "book", "keep_latest": true});
    let (status, first) = post(latest(1)).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = post(latest(2)).await;
    assert_eq!(
        (status, &again["job_id"], again["replaced"].as_u64()),
        (200, &first["job_id"], Some(1)),
        "{again}"
    );
    // A sequence's second member names the first as the job it waits for.
    let member = |n: u32| json!({"task": "t", "payload": {"n": n}, "sequence": "acct-7"});
    let (status, head) = post(member(1)).await;
    assert_eq!(
        (status, &head["after"]),
        (201, &serde_json::Value::Null),
        "{head}"
    );
    let (status, next) = post(member(2)).await;
    assert_eq!((status, &next["after"]), (201, &head["job_id"]), "{next}");
    for both in [
        json!({"task": "t", "unique_key": "k", "debounce_ms": 1, "throttle_ms": 1}),
        json!({"task": "t", "unique_key": "k", "keep_latest": true, "replace_running": true}),
    ] {
        let (status, body) = post(both).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or("")
                .contains("one key mode"),
            "{body}"
        );
    }
}
