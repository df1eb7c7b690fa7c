//! The admin API over real HTTP, on the memory backend and on Redis.

mod support;

use std::time::Duration;

use queue_admin::{ROUTES, check_bind};
use queue_core::{QueueConfig, SharedBackend};
use queue_memory::MemoryBackend;
use queue_redis::RedisBackend;
use serde_json::json;
use support::{Server, TOKEN, shared};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn redis() -> RedisBackend {
    let cfg = QueueConfig::builder()
        .redis_url(&queue_redis::testing::redis_url())
        .unwrap()
        .queue_name(format!("admin-{}", uuid::Uuid::new_v4().simple()))
        .build()
        .unwrap();
    RedisBackend::builder(&cfg)
        .key_prefix("dcs-test")
        .build()
        .await
        .unwrap()
}

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

    // Pause and resume the queue.
    let (status, paused) = s.json("POST", "/queue/pause", None).await;
    assert_eq!((status, paused["paused"].as_bool()), (200, Some(true)));
    assert_eq!(s.json("GET", "/stats", None).await.1["paused"], true);
    let (_, metrics) = s.call("GET", "/metrics", None, true).await;
    let paused_line = |metrics: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("dcs_queue_paused{"))
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
    };
    assert_eq!(paused_line(&metrics).as_deref(), Some("1"), "{metrics}");
    // Rate limit: set, shown, bad input refused, removed.
    let (status, set) = s
        .json(
            "POST",
            "/queue/rate_limit",
            Some(r#"{"max": 5, "per_seconds": 2}"#),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["rate_limit"], json!({"max": 5, "per": 2000}));
    assert_eq!(
        s.json("GET", "/stats", None).await.1["rate_limit"]["max"],
        5
    );
    let (_, metrics) = s.call("GET", "/metrics", None, true).await;
    assert!(
        metrics.contains("dcs_queue_rate_limit_window_seconds{"),
        "{metrics}"
    );
    for bad in [
        r#"{"max": 0}"#,
        r#"{"max": 5, "per_seconds": -1}"#,
        r#"{"maxx": 1}"#,
    ] {
        let (status, body) = s.json("POST", "/queue/rate_limit", Some(bad)).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, removed) = s
        .json("POST", "/queue/rate_limit", Some(r#"{"max": null}"#))
        .await;
    assert_eq!((status, removed["rate_limit"].is_null()), (200, true));
    assert!(s.json("GET", "/stats", None).await.1["rate_limit"].is_null());

    // Groups: enqueue into one, read it, limit it, pause and resume it, bad names refused.
    let (status, job) = s
        .json(
            "POST",
            "/jobs",
            Some(r#"{"task": "t", "payload": {}, "group": "publisher-1"}"#),
        )
        .await;
    assert_eq!((status, job["group"].as_str()), (201, Some("publisher-1")));
    let (status, g) = s.json("GET", "/groups/publisher-1", None).await;
    assert_eq!((status, g["ready"].as_u64()), (200, Some(1)), "{g}");
    let (status, g) = s
        .json(
            "POST",
            "/groups/publisher-1/concurrency",
            Some(r#"{"max": 2}"#),
        )
        .await;
    assert_eq!((status, g["concurrency"].as_u64()), (200, Some(2)), "{g}");
    let (status, g) = s
        .json(
            "POST",
            "/groups/publisher-1/weight",
            Some(r#"{"weight": 3}"#),
        )
        .await;
    assert_eq!((status, g["weight"].as_u64()), (200, Some(3)), "{g}");
    let (status, body) = s
        .json(
            "POST",
            "/groups/publisher-1/weight",
            Some(r#"{"weight": 0}"#),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (_, g) = s
        .json("POST", "/groups/publisher-1/weight", Some("{}"))
        .await;
    assert!(g["weight"].is_null(), "{g}");
    let (_, g) = s.json("POST", "/groups/publisher-1/pause", None).await;
    assert_eq!(g["paused"], true);
    let (_, g) = s.json("POST", "/groups/publisher-1/resume", None).await;
    assert_eq!(g["paused"], false);
    let (_, g) = s
        .json("POST", "/groups/publisher-1/concurrency", Some("{}"))
        .await;
    assert!(g["concurrency"].is_null(), "{g}");
    let (status, body) = s
        .json(
            "POST",
            "/groups/publisher-1/concurrency",
            Some(r#"{"max": 0}"#),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, g) = s
        .json(
            "POST",
            "/groups/publisher-1/rate_limit",
            Some(r#"{"max": 3, "per_seconds": 60}"#),
        )
        .await;
    assert_eq!(status, 200, "{g}");
    assert_eq!(g["rate_limit"], json!({"max": 3, "per": 60000}));
    let (_, g) = s
        .json("POST", "/groups/publisher-1/rate_limit", Some("{}"))
        .await;
    assert!(g["rate_limit"].is_null(), "{g}");
    let (status, body) = s.json("GET", "/groups/a%7Cb", None).await;
    assert_eq!(status, 400, "{body}");
    // The listing: the busiest groups first, the rest summed; shown in the metrics.
    for group in ["publisher-2", "publisher-2", "say \"hi\""] {
        let body = json!({"task": "t", "payload": {}, "group": group}).to_string();
        let (status, job) = s.json("POST", "/jobs", Some(&body)).await;
        assert_eq!(status, 201, "{job}");
    }
    let (status, costly) = s
        .json(
            "POST",
            "/jobs",
            Some(r#"{"task": "t", "payload": {}, "cost": 500}"#),
        )
        .await;
    assert_eq!(
        (status, costly["cost"].as_u64()),
        (201, Some(500)),
        "{costly}"
    );
    let (status, body) = s
        .json(
            "POST",
            "/jobs",
            Some(r#"{"task": "t", "payload": {}, "cost": 0}"#),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("cost"),
        "{body}"
    );
    let (status, list) = s.json("GET", "/groups?limit=1", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["groups"][0]["group"], "publisher-2", "{list}");
    assert_eq!(list["groups"][0]["unfinished"], 2, "{list}");
    assert_eq!(
        (
            list["other_groups"].as_u64(),
            list["other_unfinished"].as_u64()
        ),
        (Some(2), Some(2)),
        "{list}"
    );
    let (status, list) = s.json("GET", "/groups", None).await;
    assert_eq!(
        (status, list["groups"].as_array().map(Vec::len)),
        (200, Some(3)),
        "{list}"
    );
    for bad in ["/groups?limit=x", "/groups?limit=1001", "/groups?nope=1"] {
        let (status, body) = s.json("GET", bad, None).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = s
        .json(
            "POST",
            "/groups/publisher-2/concurrency",
            Some(r#"{"max": 1}"#),
        )
        .await;
    assert_eq!(status, 200);
    let (_, metrics) = s.call("GET", "/metrics", None, true).await;
    // Each family's samples follow its own `# TYPE` line (the text format).
    let mut family = "";
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            family = rest.split(' ').next().unwrap();
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split('{').next().unwrap();
            assert!(
                name.starts_with(family),
                "{name} under {family}:\n{metrics}"
            );
        }
    }
    for needle in [
        "dcs_queue_group_concurrency_limit{queue=",
        "dcs_queue_groups{queue=",
        "group=\"publisher-2\",state=\"ready\"} 2",
        "group=\"say \\\"hi\\\"\",state=\"ready\"} 1",
        "dcs_queue_other_groups_jobs{",
        "dcs_queue_group_paused{",
    ] {
        assert!(metrics.contains(needle), "{needle} in {metrics}");
    }

    let (status, resumed) = s.json("POST", "/queue/resume", None).await;
    assert_eq!((status, resumed["paused"].as_bool()), (200, Some(false)));
    assert_eq!(s.json("GET", "/stats", None).await.1["paused"], false);

    let (status, metrics) = s.call("GET", "/metrics", None, true).await;
    assert_eq!(status, 200);
    assert_eq!(paused_line(&metrics).as_deref(), Some("0"), "{metrics}");
    for needle in [
        "dcs_queue_jobs{",
        "status=\"queued\"} 9",
        "dcs_queue_depth{",
        "dcs_queue_active_workers{",
        "dcs_queue_retries_total{",
        "dcs_queue_lease_recoveries_total{",
        "dcs_queue_job_duration_seconds_bucket{",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle}:\n{metrics}"
        );
    }

    // The OpenAPI document matches the routes.
    let (status, doc) = s.json("GET", "/openapi.json", None).await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().unwrap();
    for (method, path, _, _) in ROUTES {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} undocumented"
        );
        if path == "/events" {
            continue; // a stream that never ends; `events_*` cover it
        }
        if path.contains("{name}") {
            // Each call finds the schedule (a DELETE before removed it).
            let (status, _) = s
                .json(
                    "PUT",
                    "/schedules/walk",
                    Some(r#"{"cadence":{"kind":"every","every_ms":60000},"job":{"task":"noop"}}"#),
                )
                .await;
            assert_eq!(status, 200);
        }
        let concrete = path
            .replace("{id}", &id)
            .replace("{name}", "walk")
            .replace("{delivery}", "walk");
        let (status, body) = s
            .call(&method.to_uppercase(), &concrete, Some("{}"), true)
            .await;
        // A routed handler's 404 says what it did not find (in JSON); the router's is empty.
        assert!(
            status != 404 || body.contains("\"error\""),
            "{method} {path} documented but not routed"
        );
        assert_ne!(status, 405, "{method} {path} documented but not routed");
    }
    let (status, page) = s.call("GET", "/", None, true).await;
    assert!(
        status == 200 && page.contains("<table"),
        "dashboard: {status}"
    );
    s.stop().await;
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

/// A browser on another site cannot make this server act: writes need a JSON content
/// type and a same-origin `Origin`, every protected route needs a Host this server
/// answers to, and the token travels in a cookie the dashboard sets.
async fn cross_site(backend: SharedBackend, token: Option<&str>) {
    let s = Server::start(backend.clone(), token).await;
    let host = format!("Host: {}", s.addr);
    let auth = token
        .map(|t| format!("\r\nAuthorization: Bearer {t}"))
        .unwrap_or_default();
    let job = r#"{"task":"t","payload":1}"#;
    // A form post (text/plain) is refused, and nothing is stored.
    let text = s
        .raw(
            &format!("POST /jobs HTTP/1.1\r\n{host}\r\nContent-Type: text/plain{auth}"),
            job,
        )
        .await;
    assert!(text.starts_with("HTTP/1.1 415"), "{text}");
    let text = s
        .raw(&format!("POST /jobs HTTP/1.1\r\n{host}{auth}"), job)
        .await;
    assert!(text.starts_with("HTTP/1.1 415"), "no content type: {text}");
    // Another site's page, even with the right content type.
    let text = s
        .raw(
            &format!("POST /jobs HTTP/1.1\r\n{host}\r\nContent-Type: application/json\r\nOrigin: http://evil.example{auth}"),
            job,
        )
        .await;
    assert!(
        text.starts_with("HTTP/1.1 403") && text.contains("origin"),
        "{text}"
    );
    assert_eq!(
        backend.stats().await.unwrap().total,
        0,
        "nothing was enqueued"
    );
    // A name re-resolved to this machine (DNS rebinding).
    let text = s
        .raw(
            &format!(
                "GET /stats HTTP/1.1\r\nHost: evil.example:{}{auth}",
                s.addr.port()
            ),
            "",
        )
        .await;
    assert!(
        text.starts_with("HTTP/1.1 403") && text.contains("host"),
        "{text}"
    );
    // The same page, same origin, with JSON: accepted.
    let text = s
        .raw(
            &format!("POST /jobs HTTP/1.1\r\n{host}\r\nContent-Type: application/json; charset=utf-8\r\nOrigin: http://{}{auth}", s.addr),
            job,
        )
        .await;
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    // Health and metrics stay open to probes and scrapers whatever their Host.
    let text = s
        .raw("GET /health HTTP/1.1\r\nHost: monitor.internal", "")
        .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_are_refused_without_a_token() {
    cross_site(shared(MemoryBackend::new()), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_are_refused_with_a_token() {
    cross_site(shared(MemoryBackend::new()), Some(TOKEN)).await;
}

/// The dashboard's link carries the token once (URL-encoded); the server swaps it for an
/// HttpOnly, SameSite cookie that then authorises the page's requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_link_sets_a_cookie() {
    let token = "a+b/c=d&e";
    let s = Server::start(shared(MemoryBackend::new()), Some(token)).await;
    let host = format!("Host: {}", s.addr);
    let text = s
        .raw(
            &format!("GET /?token=a%2Bb%2Fc%3Dd%26e HTTP/1.1\r\n{host}"),
            "",
        )
        .await;
    assert!(text.starts_with("HTTP/1.1 303"), "{text}");
    let cookie = text
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap_or_else(|| panic!("a cookie is set: {text}"));
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    let text = s
        .raw(
            &format!("GET /stats HTTP/1.1\r\n{host}\r\nCookie: {pair}"),
            "",
        )
        .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // The raw (undecoded) value is not the token.
    let text = s
        .raw(&format!("GET /?token=a+b/c=d HTTP/1.1\r\n{host}"), "")
        .await;
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    s.stop().await;
}

/// `/events` streams job transitions as server-sent events.
async fn events_stream(backend: SharedBackend) {
    let s = Server::start(backend.clone(), Some(TOKEN)).await;
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(
            format!(
                "GET /events?token={TOKEN} HTTP/1.1\r\nHost: {}\r\n\r\n",
                s.addr
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    assert!(seen.contains("text/event-stream"), "{seen}");
    let job = backend
        .enqueue(queue_core::NewJob::new("t", &1).unwrap())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.contains(&job.job_id.to_string()) {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("event arrives")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        seen.contains("event: transition") && seen.contains("\"to\":\"queued\""),
        "{seen}"
    );
    // Each event carries its log id; a client that reconnects with the last one gets what
    // happened while it was away.
    let last_id = seen
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
        .expect("events have ids")
        .trim()
        .to_owned();
    drop(stream);
    let missed = backend
        .enqueue(queue_core::NewJob::new("t", &2).unwrap())
        .await
        .unwrap();
    for how in ["header", "query"] {
        let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let request = match how {
            "header" => format!(
                "GET /events?token={TOKEN} HTTP/1.1\r\nHost: {}\r\nLast-Event-ID: {last_id}\r\n\r\n",
                s.addr
            ),
            _ => format!(
                "GET /events?token={TOKEN}&since={last_id} HTTP/1.1\r\nHost: {}\r\n\r\n",
                s.addr
            ),
        };
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut resumed = String::new();
        while !resumed.contains(&missed.job_id.to_string()) {
            let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{how}: the missed event is replayed: {resumed}"))
                .unwrap();
            resumed.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(
            !resumed.contains(&job.job_id.to_string()),
            "{how}: nothing before the last id is sent again: {resumed}"
        );
    }
    let (status, err) = s.json("GET", "/events?since=yesterday", None).await;
    assert_eq!(status, 400, "{err}");
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
async fn events_memory() {
    events_stream(shared(MemoryBackend::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_redis() {
    let b = redis().await;
    events_stream(shared(b.clone())).await;
    b.destroy().await.unwrap();
}

#[tokio::test]
async fn no_token_no_public_address() {
    let public = "0.0.0.0:8080".parse().unwrap();
    let local = "127.0.0.1:8080".parse().unwrap();
    assert!(
        check_bind(&public, None)
            .unwrap_err()
            .contains("DCS_ADMIN_TOKEN")
    );
    assert!(check_bind(&public, Some("")).is_err());
    assert!(check_bind(&public, Some("t")).is_ok());
    assert!(check_bind(&local, None).is_ok());
    // Without a token configured, routes are open (loopback only).
    let s = Server::start(shared(MemoryBackend::new()), None).await;
    assert_eq!(s.call("GET", "/stats", None, false).await.0, 200);
    s.stop().await;
}

/// Flows over HTTP: `POST /jobs` with children, the tree, the waiting listing, children
/// added to a batch, and the refusals.
async fn flows(backend: SharedBackend) {
    let s = Server::start(backend, Some(TOKEN)).await;
    let body = json!({
        "task": "merge", "payload": {"book": "b-9"}, "unique_key": "b-9",
        "children": [
            {"task": "chapter", "payload": 1},
            {"task": "chapter", "payload": 2, "on_failure": "continue",
             "children": [{"task": "figure", "payload": 21}]}
        ]
    })
    .to_string();
    let (status, root) = s.json("POST", "/jobs", Some(&body)).await;
    assert_eq!(status, 201, "{root}");
    assert_eq!(root["children"]["waiting"], 2);
    let id = root["job_id"].as_str().unwrap().to_owned();
    let (status, tree) = s.json("GET", &format!("/jobs/{id}/flow"), None).await;
    assert_eq!(status, 200, "{tree}");
    let kids = tree["children"].as_array().unwrap();
    assert_eq!(kids.len(), 2);
    assert_eq!(kids[1]["job"]["child_policy"], "continue");
    assert_eq!(kids[1]["children"][0]["job"]["task"], "figure");
    let (_, small) = s
        .json("GET", &format!("/jobs/{id}/flow?limit=2"), None)
        .await;
    assert_eq!(
        (
            small["children"].as_array().unwrap().len(),
            &small["truncated"]
        ),
        (1, &json!(1))
    );
    let (_, waiting) = s.json("GET", "/jobs?waiting_on_children=true", None).await;
    assert_eq!(waiting["jobs"].as_array().unwrap().len(), 2, "{waiting}");
    let (status, listed) = s.json("GET", &format!("/jobs/{id}/children"), None).await;
    assert_eq!(
        (status, listed["children"].as_array().unwrap().len()),
        (200, 2)
    );
    assert!(listed["next_cursor"].is_null(), "{listed}");
    // Paged: a family of any size is read a page at a time.
    let (_, first) = s
        .json("GET", &format!("/jobs/{id}/children?limit=1"), None)
        .await;
    let cursor = first["next_cursor"].as_str().expect("more").to_owned();
    let (_, second) = s
        .json(
            "GET",
            &format!("/jobs/{id}/children?limit=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(second["children"].as_array().unwrap().len(), 1);
    assert_ne!(
        second["children"][0]["job_id"],
        first["children"][0]["job_id"]
    );
    assert!(second["next_cursor"].is_null(), "{second}");
    let (status, _) = s
        .json("GET", &format!("/jobs/{id}/children?limit=1001"), None)
        .await;
    assert_eq!(status, 400, "a page is at most 1000");
    let add = json!({"children": [{"task": "chapter", "payload": 3}]}).to_string();
    let (status, added) = s
        .json("POST", &format!("/jobs/{id}/children"), Some(&add))
        .await;
    assert_eq!(status, 201, "{added}");
    let (_, root) = s.json("GET", &format!("/jobs/{id}"), None).await;
    assert_eq!(root["children"]["waiting"], 3);
    let (_, stats) = s.json("GET", "/stats", None).await;
    assert_eq!(stats["waiting_on_children"], 2);

    // Refusals: a taken unique key refuses the whole flow; bad shapes name the problem.
    let dup = json!({"task": "t", "children": [{"task": "c", "unique_key": "b-9"}]}).to_string();
    let (status, err) = s.json("POST", "/jobs", Some(&dup)).await;
    assert_eq!(status, 409, "{err}");
    let (_, stats) = s.json("GET", "/stats", None).await;
    assert_eq!(stats["total"], 5, "nothing of a refused flow is created");
    for (bad, says) in [
        (
            json!({"task": "t", "children": [{"task": "c", "on_failure": "maybe"}]}),
            "unknown variant `maybe`, expected one of `fail_parent`, `ignore`, `continue`",
        ),
        (json!({"task": "t", "children": [{"tsk": "c"}]}), "tsk"),
    ] {
        let (status, err) = s.json("POST", "/jobs", Some(&bad.to_string())).await;
        assert_eq!(status, 400, "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
    let missing = uuid::Uuid::now_v7();
    let (status, _) = s
        .json("POST", &format!("/jobs/{missing}/children"), Some(&add))
        .await;
    assert_eq!(status, 404);
    let (status, err) = s
        .json(
            "POST",
            &format!("/jobs/{id}/children"),
            Some(r#"{"children": []}"#),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    let (status, _) = s.json("POST", &format!("/jobs/{id}/cancel"), None).await;
    assert_eq!(status, 200);
    let (status, err) = s
        .json("POST", &format!("/jobs/{id}/children"), Some(&add))
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(err.to_string().contains("only while it is queued"), "{err}");
    let (status, _) = s
        .json("GET", &format!("/jobs/{id}/flow?limit=0"), None)
        .await;
    assert_eq!(status, 400);
    let (_, tree) = s.json("GET", &format!("/jobs/{id}/flow"), None).await;
    assert!(
        tree.to_string().matches("\"status\":\"cancelled\"").count() >= 4,
        "the cancel reached every child: {tree}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_memory() {
    flows(shared(MemoryBackend::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_redis() {
    let b = redis().await;
    flows(shared(b.clone())).await;
    b.destroy().await.unwrap();
}

/// Job schedules through the API: created, read, listed, paused, resumed, changed and
/// deleted; bad input is a 400 naming what is wrong; an unknown name a 404.
async fn schedules(backend: SharedBackend) {
    let s = Server::start(backend, Some(TOKEN)).await;
    let nightly = r#"{"cadence":{"kind":"cron","expr":"0 2 * * *","tz":"Europe/Berlin"},
        "job":{"task":"process_book","payload":{"book_id":"all"},"priority":"low"},
        "missed":{"policy":"run_each","max":3}}"#;
    let (status, created) = s.json("PUT", "/schedules/nightly", Some(nightly)).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["schedule"]["name"], "nightly");
    assert_eq!(created["schedule"]["cadence"]["tz"], "Europe/Berlin");
    assert_eq!(created["revision"], 1);
    let next = chrono::DateTime::parse_from_rfc3339(created["next_run"].as_str().unwrap()).unwrap();
    let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    assert_eq!(
        next.with_timezone(&berlin).format("%H:%M").to_string(),
        "02:00"
    );
    let (status, one) = s.json("GET", "/schedules/nightly", None).await;
    assert_eq!((status, &one), (200, &created));
    let (status, list) = s.json("GET", "/schedules", None).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1));

    let (status, paused) = s.json("POST", "/schedules/nightly/pause", None).await;
    assert_eq!(status, 200);
    assert_eq!(paused["schedule"]["paused"], true);
    assert!(paused["next_run"].is_null());
    let (status, resumed) = s.json("POST", "/schedules/nightly/resume", None).await;
    assert_eq!(status, 200);
    assert_eq!(resumed["next_run"], created["next_run"]);
    let (status, changed) = s
        .json(
            "PUT",
            "/schedules/nightly",
            Some(r#"{"name":"nightly","cadence":{"kind":"every","every_ms":3600000},"job":{"task":"process_book"}}"#),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["schedule"]["cadence"]["kind"], "every");
    assert_eq!(changed["created_at"], created["created_at"]);

    let bad: [(&str, &str, &str); 5] = [
        (
            "/schedules/x",
            r#"{"cadence":{"kind":"cron","expr":"99 * * * *"},"job":{"task":"t"}}"#,
            "99 * * * *",
        ),
        (
            "/schedules/x",
            r#"{"cadence":{"kind":"cron","expr":"0 2 * * *","tz":"Mars/Base"},"job":{"task":"t"}}"#,
            "Mars/Base",
        ),
        (
            "/schedules/x",
            r#"{"cadence":{"kind":"every","every_ms":10},"job":{"task":"t"}}"#,
            "every_ms",
        ),
        (
            "/schedules/x",
            r#"{"name":"y","cadence":{"kind":"every","every_ms":60000},"job":{"task":"t"}}"#,
            "does not match",
        ),
        (
            "/schedules/x",
            r#"{"cadence":{"kind":"hourly"},"job":{"task":"t"}}"#,
            "malformed schedule",
        ),
    ];
    for (path, body, named) in bad {
        let (status, err) = s.json("PUT", path, Some(body)).await;
        assert_eq!(status, 400, "{body}: {err}");
        let message = err["error"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{message} should name {named}");
    }
    let (status, list) = s.json("GET", "/schedules", None).await;
    assert_eq!(
        (status, list.as_array().map(Vec::len)),
        (200, Some(1)),
        "bad input stored nothing"
    );

    let (status, _) = s.call("DELETE", "/schedules/nightly", None, true).await;
    assert_eq!(status, 204);
    for (method, path) in [
        ("GET", "/schedules/nightly"),
        ("DELETE", "/schedules/nightly"),
        ("POST", "/schedules/nightly/pause"),
    ] {
        let (status, err) = s.json(method, path, None).await;
        assert_eq!(status, 404, "{method} {path}: {err}");
        assert!(
            err["error"]
                .as_str()
                .unwrap_or_default()
                .contains("nightly")
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_memory() {
    schedules(shared(MemoryBackend::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_redis() {
    let b = redis().await;
    schedules(shared(b.clone())).await;
    b.destroy().await.unwrap();
}

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
