//! Routes that control the queue and its groups.

use super::*;

/// Pause and resume, rate limits and groups, with what the metrics show of them (the
/// second part of the round trip of every route).
pub(crate) async fn control_and_groups(s: &Server) {
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
}
