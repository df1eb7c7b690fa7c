//! What an operator does with queuectl: pause, rate limits, groups, flows, schedules,
//! events, webhooks and bulk actions.

use super::*;

#[test]
fn pause_and_resume_the_queue() {
    let ctl = Ctl::new();
    assert_eq!(ctl.json(&["stats"])["paused"], false);
    assert_eq!(ctl.json(&["pause"])["state"], "paused");
    assert_eq!(ctl.json(&["stats"])["paused"], true);
    assert!(ctl.ok(&["stats"]).contains("paused"), "the table says so");
    // A worker started on a paused queue starts nothing.
    let id = ctl.ok(&["enqueue", "--task", "t", "--payload", "{}"]);
    let id = id.trim();
    let mut worker = ctl
        .command()
        .args(["worker", "--concurrency", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    sleep(Duration::from_millis(800));
    assert_eq!(ctl.json(&["status", id])["status"], "queued");
    assert_eq!(ctl.json(&["resume"])["state"], "running");
    assert_eq!(ctl.json(&["stats"])["paused"], false);
    // The task is unknown to the book pipeline's worker: it runs, fails and is retried;
    // what matters is that it started once the queue resumed.
    let started = ctl.wait_for(id, |r| r.started_at.is_some());
    assert!(started.started_at.is_some());
    sigterm(&worker);
    assert!(worker.wait().unwrap().success());
    ctl.cleanup();
}

#[test]
fn rate_limit_is_set_shown_and_removed() {
    let ctl = Ctl::new();
    assert!(ctl.json(&["stats"])["rate_limit"].is_null());
    let set = ctl.json(&["limit", "--max", "2", "--per", "3600"]);
    assert_eq!(
        set["rate_limit"],
        serde_json::json!({"max": 2, "per": 3_600_000})
    );
    assert_eq!(ctl.json(&["stats"])["rate_limit"]["max"], 2);
    assert!(
        ctl.ok(&["stats"]).contains("rate limit"),
        "the table says so"
    );
    let bad = ctl.run(&["limit", "--max", "0"]);
    assert_ne!(code(&bad), 0);
    assert!(stderr(&bad).contains("max"), "{}", stderr(&bad));
    let bad = ctl.run(&["limit", "--max", "3", "--per", "0"]);
    assert_ne!(code(&bad), 0);
    assert!(stderr(&bad).contains("--per"), "{}", stderr(&bad));
    assert!(ctl.json(&["limit", "--off"])["rate_limit"].is_null());
    assert!(ctl.json(&["stats"])["rate_limit"].is_null());
    ctl.cleanup();
}

#[test]
fn groups_are_shown_paused_and_limited() {
    let ctl = Ctl::new();
    let id = ctl.ok(&[
        "enqueue",
        "--task",
        "noop",
        "--payload",
        "{}",
        "--group",
        "publisher-7",
    ]);
    assert_eq!(ctl.json(&["status", id.trim()])["group"], "publisher-7");
    let g = ctl.json(&["group", "publisher-7"]);
    assert_eq!(
        (g["ready"].as_u64(), g["running"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(g["concurrency"].is_null());
    let g = ctl.json(&["group", "publisher-7", "--concurrency", "2"]);
    assert_eq!(g["concurrency"], 2);
    assert!(ctl.ok(&["group", "publisher-7"]).contains("2 at once"));
    let paused = ctl.json(&["pause", "--group", "publisher-7"]);
    assert_eq!(
        (paused["group"].as_str(), paused["state"].as_str()),
        (Some("publisher-7"), Some("paused"))
    );
    assert_eq!(ctl.json(&["group", "publisher-7"])["paused"], true);
    assert_eq!(ctl.json(&["stats"])["paused"], false, "only the group");
    ctl.json(&["resume", "--group", "publisher-7"]);
    assert_eq!(ctl.json(&["group", "publisher-7"])["paused"], false);
    assert!(ctl.json(&["group", "publisher-7", "--unlimited"])["concurrency"].is_null());
    assert_eq!(
        ctl.json(&["group", "publisher-7", "--weight", "4"])["weight"],
        4
    );
    assert!(ctl.ok(&["groups"]).contains("weight 4"));
    assert!(ctl.json(&["group", "publisher-7", "--weight", "1"])["weight"].is_null());
    let bad = ctl.run(&["group", "publisher-7", "--weight", "0"]);
    assert_eq!(code(&bad), 2, "{}", stderr(&bad));
    assert!(stderr(&bad).contains("weight"), "{}", stderr(&bad));
    let g = ctl.json(&["group", "publisher-7", "--rate", "10", "--per", "60"]);
    assert_eq!(
        g["rate_limit"],
        serde_json::json!({"max": 10, "per": 60_000})
    );
    assert!(ctl.ok(&["group", "publisher-7"]).contains("rate limit"));
    assert!(ctl.json(&["group", "publisher-7", "--no-rate"])["rate_limit"].is_null());
    let enqueue = |extra: &[&str]| {
        let mut args = vec!["enqueue", "--task", "noop", "--payload", "{}"];
        args.extend_from_slice(extra);
        ctl.run(&args)
    };
    for _ in 0..2 {
        assert_eq!(code(&enqueue(&["--group", "publisher-8"])), 0);
    }
    let costly = enqueue(&["--cost", "40"]);
    let costly = String::from_utf8_lossy(&costly.stdout).trim().to_owned();
    assert_eq!(ctl.json(&["status", &costly])["cost"], 40);
    let bad = enqueue(&["--cost", "0"]);
    assert_eq!(code(&bad), 2, "{}", stderr(&bad));
    assert!(stderr(&bad).contains("cost"), "{}", stderr(&bad));
    let list = ctl.json(&["groups", "--limit", "1"]);
    assert_eq!(list["groups"][0]["group"], "publisher-8", "{list}");
    assert_eq!(list["groups"][0]["unfinished"], 2, "{list}");
    assert_eq!(
        (
            list["other_groups"].as_u64(),
            list["other_unfinished"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let table = ctl.ok(&["groups"]);
    assert!(
        table.contains("publisher-8") && table.contains("publisher-7"),
        "{table}"
    );
    assert!(table.contains("UNFINISHED"), "{table}");
    let bad = ctl.run(&["groups", "--limit", "5000"]);
    assert_eq!(code(&bad), 2, "{}", stderr(&bad));
    assert!(stderr(&bad).contains("groups limit"), "{}", stderr(&bad));
    let bad = ctl.run(&["group", "a|b"]);
    assert_ne!(code(&bad), 0);
    assert!(stderr(&bad).contains("group"), "{}", stderr(&bad));
    ctl.cleanup();
}

#[test]
fn a_flow_is_enqueued_shown_as_a_tree_and_listed() {
    let ctl = Ctl::new();
    let id = ctl.ok(&[
        "enqueue",
        "--task",
        "merge",
        "--payload",
        r#"{"book":"b-3"}"#,
        "--child",
        r#"chapter:{"n":1}"#,
        "--child",
        r#"chapter:{"n":2}"#,
        "--on-child-failure",
        "continue",
    ]);
    let id = id.trim();
    let record = ctl.json(&["status", id]);
    assert_eq!(record["children"]["waiting"], 2, "{record}");
    let tree = ctl.ok(&["flow", id]);
    let lines: Vec<&str> = tree.lines().collect();
    assert_eq!(lines.len(), 3, "{tree}");
    assert!(lines[0].starts_with("queued") && lines[0].contains("(waits on children)"));
    assert!(
        lines[1].starts_with("  queued") && lines[1].contains("chapter"),
        "{tree}"
    );
    let json = ctl.json(&["flow", id]);
    assert_eq!(json["children"][1]["job"]["child_policy"], "continue");
    let waiting = ctl.json(&["list", "--waiting-on-children"]);
    assert_eq!(waiting["jobs"][0]["job_id"], id);
    assert!(ctl.ok(&["stats"]).contains("on children"));
    let bad = ctl.run(&[
        "enqueue",
        "--task",
        "t",
        "--payload",
        "{}",
        "--child",
        "nojson",
    ]);
    assert_eq!(code(&bad), 2, "{}", stderr(&bad));
    assert!(stderr(&bad).contains("TASK:JSON"), "{}", stderr(&bad));
    let missing = ctl.run(&["flow", &JobId::new().to_string()]);
    assert_eq!(code(&missing), 3, "{}", stderr(&missing));
    ctl.cleanup();
}

#[test]
fn schedules_are_set_listed_paused_fired_and_deleted() {
    let ctl = Ctl::new();
    let set = ctl.json(&[
        "schedule",
        "set",
        "nightly",
        "--cron",
        "0 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--task",
        "process_book",
        "--payload",
        r#"{"book_id":"all"}"#,
        "--missed",
        "each:3",
    ]);
    assert_eq!(set["schedule"]["cadence"]["tz"], "Europe/Berlin");
    assert_eq!(set["schedule"]["missed"]["max"], 3);
    assert!(set["next_run"].is_string());
    let table = ctl.ok(&["schedule", "list"]);
    assert!(
        table.contains("nightly") && table.contains("0 2 * * *"),
        "{table}"
    );
    // An every-second schedule fires from `run-due` (what each worker does every second).
    ctl.ok(&["schedule", "set", "often", "--every", "1", "--task", "t"]);
    sleep(Duration::from_millis(1200));
    let fired = ctl.json(&["schedule", "run-due"]);
    let jobs = fired["fired"][0]["jobs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(fired["fired"][0]["schedule"], "often", "{fired}");
    assert!(!jobs.is_empty(), "{fired}");
    let job = ctl.record(jobs[0].as_str().unwrap());
    assert_eq!(job.metadata["schedule"], "often");
    assert_eq!(
        ctl.json(&["schedule", "pause", "often"])["schedule"]["paused"],
        true
    );
    assert_eq!(
        ctl.json(&["schedule", "show", "often"])["next_run"],
        Value::Null
    );
    // Bad input names the field; an unknown schedule exits 3.
    let out = ctl.run(&[
        "schedule",
        "set",
        "x",
        "--cron",
        "99 * * * *",
        "--task",
        "t",
    ]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("99 * * * *"), "{}", stderr(&out));
    let out = ctl.run(&["schedule", "show", "nope"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    ctl.ok(&["schedule", "delete", "often"]);
    ctl.ok(&["schedule", "delete", "nightly"]);
    assert_eq!(ctl.json(&["schedule", "list"]), serde_json::json!([]));
    ctl.cleanup();
}

#[test]
fn events_resume_after_the_last_id_seen() {
    let ctl = Ctl::new();
    // A follower sees one event, stops; two more happen; it resumes after the first.
    let follower = ctl
        .command()
        .args(["events", "--count", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    sleep(Duration::from_millis(500));
    let a = ctl.ok(&["enqueue", "--task", "t", "--payload", "1"]);
    let out = follower.wait_with_output().unwrap();
    let first: Value = serde_json::from_slice(&out.stdout).expect("one JSON event");
    assert_eq!(first["job_id"], a.trim());
    let id = first["id"].as_str().expect("an event id").to_owned();
    let b = ctl.ok(&["enqueue", "--task", "t", "--payload", "2"]);
    let c = ctl.ok(&["enqueue", "--task", "t", "--payload", "3"]);
    let out = ctl.ok(&["events", "--since", &id, "--count", "2"]);
    let resumed: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    let ids: Vec<&str> = resumed
        .iter()
        .filter_map(|e| e["job_id"].as_str())
        .collect();
    assert_eq!(ids, [b.trim(), c.trim()]);
    let out = ctl.run(&["events", "--since", "yesterday", "--count", "1"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    ctl.cleanup();
}

#[test]
fn webhooks_are_added_listed_without_secrets_and_deleted() {
    let ctl = Ctl::new();
    let out = ctl
        .command()
        .args([
            "--json",
            "webhook",
            "add",
            "publisher",
            "--url",
            "http://127.0.0.1:9/hooks",
            "--event",
            "completed",
            "--event",
            "failed",
            "--task",
            "process_book",
        ])
        .env("DCS_WEBHOOK_SECRET", "a-shared-secret-of-32-bytes-long")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(added["secret"], "***");
    assert_eq!(added["events"], serde_json::json!(["completed", "failed"]));
    let table = ctl.ok(&["webhook", "list"]);
    assert!(
        table.contains("publisher") && !table.contains("a-shared-secret"),
        "{table}"
    );
    let bad = ctl.run(&[
        "webhook",
        "add",
        "x",
        "--url",
        "ftp://x",
        "--secret",
        "a-shared-secret-of-32-bytes-long",
    ]);
    assert_eq!(code(&bad), 2, "{}", stderr(&bad));
    assert!(stderr(&bad).contains("url"), "{}", stderr(&bad));
    assert_eq!(ctl.json(&["webhook", "deliveries"]), serde_json::json!([]));
    let none = ctl.run(&["webhook", "resend", "no-such-delivery"]);
    assert_eq!(code(&none), 2, "{}", stderr(&none));
    ctl.ok(&["webhook", "delete", "publisher"]);
    assert_eq!(ctl.json(&["webhook", "list"]), serde_json::json!([]));
    ctl.cleanup();
}

#[test]
fn bulk_actions_count_act_and_resume() {
    let ctl = Ctl::new();
    for n in 1..=6 {
        let key = format!("b-{n}");
        ctl.ok(&[
            "enqueue",
            "--task",
            "t",
            "--payload",
            "{}",
            "--unique-key",
            &key,
        ]);
        sleep(Duration::from_millis(2)); // distinct creation times: a stable order
    }
    ctl.ok(&["enqueue", "--task", "t", "--payload", "{}"]);
    // A dry run counts and changes nothing; its first step says where to resume.
    let out = ctl.run(&[
        "bulk",
        "cancel",
        "--status",
        "queued",
        "--unique-key-prefix",
        "b-",
        "--step",
        "4",
        "--dry-run",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "6 jobs would be cancelled"
    );
    let err = stderr(&out);
    let cursor = err
        .split("resume with --cursor ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no cursor in {err}"))
        .to_owned();
    assert_eq!(ctl.json(&["stats"])["queued"], 7);
    // Resumed from there: only the jobs after the first step (which looked at the job
    // without a key and the three newest books): the three oldest books.
    let done = ctl.json(&[
        "bulk",
        "cancel",
        "--status",
        "queued",
        "--unique-key-prefix",
        "b-",
        "--step",
        "4",
        "--cursor",
        &cursor,
    ]);
    assert_eq!(
        (done["matched"].as_u64(), done["done"].as_u64()),
        (Some(3), Some(3))
    );
    let done = ctl.json(&["bulk", "cancel", "--unique-key-prefix", "b-"]);
    assert_eq!(done["done"], 3);
    let stats = ctl.json(&["stats"]);
    assert_eq!(
        (stats["queued"].as_u64(), stats["cancelled"].as_u64()),
        (Some(1), Some(6))
    );
    // Cancelled jobs retried, two per step.
    let out = ctl.ok(&[
        "bulk",
        "retry",
        "--status",
        "cancelled",
        "--task",
        "t",
        "--step",
        "2",
    ]);
    assert_eq!(out.trim(), "6 jobs retried, 0 refused");
    assert_eq!(ctl.json(&["stats"])["queued"], 7);
    // Finished records deleted: one by id (a live one is refused, exit code 5), then the
    // rest in bulk.
    let done = ctl.json(&["bulk", "cancel", "--unique-key-prefix", "b-"]);
    assert_eq!(done["done"], 6);
    let live = ctl.json(&["list", "--status", "queued"]);
    let live_id = live["jobs"][0]["job_id"].as_str().unwrap().to_owned();
    let out = ctl.run(&["delete", &live_id]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains("not finished"), "{}", stderr(&out));
    let one = ctl.json(&["list", "--status", "cancelled", "--limit", "1"]);
    let one_id = one["jobs"][0]["job_id"].as_str().unwrap().to_owned();
    assert!(ctl.ok(&["delete", &one_id]).contains("deleted"));
    let out = ctl.ok(&["bulk", "delete", "--status", "cancelled", "--step", "2"]);
    assert_eq!(out.trim(), "5 jobs deleted, 0 refused");
    assert_eq!(ctl.json(&["stats"])["total"], 1);
    // Bad input names what is wrong.
    for (args, says) in [
        (vec!["bulk", "purge"], "purge"),
        (
            vec!["bulk", "retry", "--created-after", "yesterday"],
            "RFC 3339",
        ),
        (vec!["bulk", "retry", "--step", "0"], "limit"),
        (vec!["bulk", "retry", "--cursor", "nonsense"], "cursor"),
    ] {
        let out = ctl.run(&args);
        assert_ne!(code(&out), 0, "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    ctl.cleanup();
}
