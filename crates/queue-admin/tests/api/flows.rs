//! Routes of flows.

use super::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_postgres() {
    let (b, _schema) = crate::postgres().await;
    flows(shared(b)).await;
}
