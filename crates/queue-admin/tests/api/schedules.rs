//! Routes of schedules.

use super::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_postgres() {
    let (b, _schema) = crate::postgres().await;
    schedules(shared(b)).await;
}
