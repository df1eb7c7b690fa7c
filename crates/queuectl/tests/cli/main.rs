//! The real `queuectl` binary against Redis: every command, every exit code, bad input,
//! and workers killed in the middle of a batch.

mod operate;
mod postgres;

use std::{
    process::{Child, Command, Output, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use queue_core::{JobId, JobRecord, JobStatus, Priority};
use queue_redis::testing::redis_url;
use serde_json::Value;

struct Ctl {
    url: String,
    queue: String,
    out_dir: std::path::PathBuf,
}

impl Ctl {
    fn new() -> Self {
        let queue = format!("cli-{}", uuid::Uuid::new_v4().simple());
        let out_dir = std::env::temp_dir().join(&queue);
        Self {
            url: redis_url(),
            queue,
            out_dir,
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_queuectl"));
        cmd.arg("--redis-url")
            .arg(&self.url)
            .arg("--queue")
            .arg(&self.queue);
        cmd.env_remove("DCS_REDIS_URL")
            .env_remove("DCS_QUEUE_NAME")
            .env_remove("DCS_DATABASE_URL");
        cmd.env("DCS_BOOK_OUTPUT_DIR", &self.out_dir)
            .env("DCS_BOOK_STEP_DELAY_MS", "40");
        cmd.env("DCS_QUEUE_LEASE_SECONDS", "2")
            .env("DCS_QUEUE_HEARTBEAT_SECONDS", "1");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("queuectl runs")
    }

    /// Runs and expects exit 0; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend(args);
        serde_json::from_str(&self.ok(&all)).expect("one JSON document")
    }

    fn record(&self, id: &str) -> JobRecord {
        serde_json::from_value(self.json(&["status", id])).unwrap()
    }

    fn book(&self, book: &str, job_type: &str) -> String {
        let payload =
            format!(r#"{{"book_id":"{book}","publisher_id":"p1","job_type":"{job_type}"}}"#);
        self.ok(&[
            "enqueue",
            "--task",
            "process_book",
            "--payload",
            &payload,
            "--unique-key",
            book,
        ])
        .trim()
        .to_owned()
    }

    fn worker(&self, concurrency: &str) -> Child {
        self.command()
            .args([
                "worker",
                "--concurrency",
                concurrency,
                "--shutdown-grace",
                "5",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn wait_for(&self, id: &str, done: impl Fn(&JobRecord) -> bool) -> JobRecord {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.record(id);
            if done(&r) {
                return r;
            }
            assert!(Instant::now() < deadline, "job {id} stuck: {r:?}");
            sleep(Duration::from_millis(50));
        }
    }

    fn cleanup(&self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("redis-cli -u {} --scan --pattern 'dcs:{{{}}}:*' | xargs -r redis-cli -u {} del >/dev/null", self.url, self.queue, self.url))
            .status();
        let _ = std::fs::remove_dir_all(&self.out_dir);
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sigterm(child: &Child) {
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
}

#[test]
fn commands_and_exit_codes() {
    let c = Ctl::new();
    let before = c.json(&["stats"]);
    for key in [
        "total",
        "queued",
        "processing",
        "completed",
        "failed",
        "partial",
        "cancelled",
        "active_workers",
        "depth",
    ] {
        assert!(before.get(key).is_some(), "stats lacks {key}: {before}");
    }
    assert_eq!(before["total"], 0);

    let ids: Vec<String> = (0..5)
        .map(|i| c.book(&format!("book-{i}"), "text_only"))
        .collect();
    let r = c.record(&ids[0]);
    assert_eq!(
        (r.status, r.task.as_str(), r.unique_key.as_deref()),
        (JobStatus::Queued, "process_book", Some("book-0"))
    );
    assert!(
        c.ok(&["status", &ids[0]])
            .contains("status            queued")
    );
    // Paging: newest first, no gaps, no repeats.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = vec!["list", "--limit", "2"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let page = c.json(&args);
        for job in page["jobs"].as_array().unwrap() {
            seen.push(job["job_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    let human = c.ok(&["list", "--limit", "2"]);
    assert!(
        human.starts_with("JOB_ID") && human.contains("more: --cursor "),
        "{human}"
    );

    // Duplicate unique key: 4, naming the active job on stderr.
    let payload = r#"{"book_id":"book-0","publisher_id":"p1","job_type":"full"}"#;
    let dup = c.run(&[
        "enqueue",
        "--task",
        "process_book",
        "--payload",
        payload,
        "--unique-key",
        "book-0",
    ]);
    assert_eq!(code(&dup), 4);
    assert!(stderr(&dup).contains(&ids[0]), "{}", stderr(&dup));

    // Cancel a queued job; cancelling again is a refused transition (5).
    assert!(c.ok(&["cancel", &ids[1]]).contains("cancelled"));
    assert_eq!(c.record(&ids[1]).status, JobStatus::Cancelled);
    assert_eq!(code(&c.run(&["cancel", &ids[1]])), 5);
    // Retry it with a new priority.
    let retried: JobRecord =
        serde_json::from_value(c.json(&["retry", &ids[1], "--priority", "high"])).unwrap();
    assert_eq!(
        (retried.status, retried.priority),
        (JobStatus::Queued, Priority::High)
    );
    assert_eq!(c.json(&["stats"])["depth"]["high"], 1);

    // Not found: 3.
    let missing = c.run(&["status", "0192aaaa-0000-7000-8000-000000000000"]);
    assert_eq!(code(&missing), 3);
    assert!(stderr(&missing).contains("not found"));
    assert_eq!(
        code(&c.run(&["cancel", "0192aaaa-0000-7000-8000-000000000000"])),
        3
    );

    // Usage errors: 2, one line.
    for args in [
        vec!["enqueue", "--task", "t", "--payload", "{not json"],
        vec![
            "enqueue",
            "--task",
            "t",
            "--payload",
            "{}",
            "--priority",
            "urgent",
        ],
        vec!["list", "--bogus-flag"],
        vec!["status", "not-an-id"],
        vec!["list", "--status", "sleeping"],
        // Bounds: a delay past the limit (u64::MAX used to overflow), too many retries.
        vec![
            "enqueue",
            "--task",
            "t",
            "--payload",
            "{}",
            "--delay",
            "18446744073709551615",
        ],
        vec![
            "enqueue",
            "--task",
            "t",
            "--payload",
            "{}",
            "--max-retries",
            "4000000000",
        ],
    ] {
        let out = c.run(&args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert_eq!(
            stderr(&out).trim().lines().count(),
            1,
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(code(&c.run(&["list", "--limit", "0"])), 2);
    let out = c.run(&[
        "enqueue",
        "--task",
        "t",
        "--payload",
        "{}",
        "--delay",
        "99999999999",
    ]);
    assert!(
        stderr(&out).contains("delay: 99999999999 s is above the limit"),
        "{}",
        stderr(&out)
    );

    // Unreachable Redis: 1, a clear line, no password.
    let out = Command::new(env!("CARGO_BIN_EXE_queuectl"))
        .args(["--redis-url", "redis://:s3cret-pw@127.0.0.1:1", "health"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.contains("unavailable") && !err.contains("s3cret-pw"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(c.ok(&["health"]).trim(), "ok");

    let after = c.json(&["stats"]);
    assert_eq!(
        (after["total"].as_u64(), after["queued"].as_u64()),
        (Some(5), Some(5))
    );
    // --wait: the record at the timeout and exit 7; a finished job answers at once.
    let waited = c.run(&["status", &ids[0], "--wait", "0.2", "--json"]);
    assert_eq!(code(&waited), 7, "{}", stderr(&waited));
    assert!(String::from_utf8_lossy(&waited.stdout).contains("\"queued\""));
    let gone = c.book("book-waited", "text_only");
    c.ok(&["cancel", &gone]);
    let waited = c.run(&["status", &gone, "--wait", "30", "--json"]);
    assert_eq!(code(&waited), 0, "{}", stderr(&waited));
    assert!(String::from_utf8_lossy(&waited.stdout).contains("\"cancelled\""));
    assert_eq!(code(&c.run(&["status", &gone, "--wait", "-1"])), 2);
    c.cleanup();
}

#[test]
fn worker_runs_books_watch_follows_and_running_jobs_cancel() {
    let c = Ctl::new();
    let mut worker = c.worker("2");
    let quick = c.book("quick", "text_only");
    let done = c.wait_for(&quick, |r| r.status.is_terminal());
    assert_eq!((done.status, done.progress), (JobStatus::Completed, 100));
    // Retrying a completed job is refused: 5.
    assert_eq!(code(&c.run(&["retry", &quick])), 5);

    // A running job cancels promptly and is not retried.
    let slow = c.book("slow", "full");
    c.wait_for(&slow, |r| {
        r.status == JobStatus::Processing && r.progress > 0
    });
    assert!(c.ok(&["cancel", &slow]).contains("cancel requested"));
    let r = c.wait_for(&slow, |r| r.status.is_terminal());
    assert_eq!((r.status, r.retry_count), (JobStatus::Cancelled, 0));

    // watch follows a job to its end (lines, not bars, when not on a terminal).
    let watched = c.book("watched", "vocabulary_only");
    let out = c.run(&["watch", &watched]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(c.record(&watched).status.is_terminal());
    let workers = c.json(&["workers"]);
    assert_eq!(workers.as_array().map(Vec::len), Some(1), "{workers}");
    assert_eq!(workers[0]["lost"], false, "{workers}");
    assert!(
        workers[0]["tasks"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "process_book")),
        "{workers}"
    );
    assert!(
        !workers[0]["version"].as_str().unwrap_or("").is_empty(),
        "{workers}"
    );
    assert!(c.ok(&["workers"]).contains("alive"));
    // The tasks it runs, with the fields its typed jobs share (`#[job(schema)]`).
    let tasks = c.ok(&["tasks"]);
    assert!(
        tasks.contains("process_book")
            && tasks.contains("book_id, job_type, publisher_id, source?"),
        "{tasks}"
    );
    let entry = c.json(&["tasks", "process_book"]);
    assert_eq!(
        entry["workers"].as_array().map(Vec::len),
        Some(1),
        "{entry}"
    );
    assert_eq!(
        entry["schema"]["$defs"]["JobType"]["oneOf"][0]["const"], "full",
        "{entry}"
    );
    let schema: Value = serde_json::from_str(&c.ok(&["tasks", "process_book"])).unwrap();
    assert_eq!(schema["title"], "ProcessBook", "the schema alone: {schema}");
    let unknown = c.run(&["tasks", "no_such_task"]);
    assert_ne!(code(&unknown), 0);
    assert!(stderr(&unknown).contains("no live worker runs task `no_such_task`"));

    sigterm(&worker);
    let status = worker.wait().unwrap();
    assert!(status.success(), "worker exit: {status:?}");
    assert_eq!(c.json(&["workers"]).as_array().map(Vec::len), Some(0));
    c.cleanup();
}

#[test]
fn a_killed_worker_loses_no_book() {
    let c = Ctl::new();
    let ids: Vec<String> = (0..8)
        .map(|i| c.book(&format!("kill-{i}"), "full"))
        .collect();
    let mut a = c.worker("2");
    let mut b = c.worker("2");
    // Let both take jobs, then kill one in the middle of its batch.
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.json(&["stats"])["processing"].as_u64() < Some(3) {
        assert!(Instant::now() < deadline, "workers never started");
        sleep(Duration::from_millis(20));
    }
    a.kill().unwrap();
    a.wait().unwrap();
    for id in &ids {
        let r = c.wait_for(id, |r| r.status.is_terminal());
        assert!(
            matches!(r.status, JobStatus::Completed | JobStatus::Partial),
            "{id}: {r:?}"
        );
    }
    let stats = c.json(&["stats"]);
    assert_eq!(
        (stats["processing"].as_u64(), stats["failed"].as_u64()),
        (Some(0), Some(0)),
        "{stats}"
    );
    assert!(
        stats["totals"]["recovered"].as_u64() >= Some(1),
        "the killed worker's jobs came back through lease expiry: {stats}"
    );
    sigterm(&b);
    assert!(b.wait().unwrap().success());
    c.cleanup();
}

#[test]
fn the_key_prefix_comes_from_dcs_redis_key_prefix() {
    let ctl = Ctl::new();
    let keys = |prefix: &str| -> String {
        let out = Command::new("redis-cli")
            .args(["-u", &ctl.url, "--scan", "--pattern"])
            .arg(format!("{prefix}:{{{}}}:*", ctl.queue))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let out = ctl
        .command()
        .env("DCS_REDIS_KEY_PREFIX", "tenant-a")
        .args(["enqueue", "--task", "t", "--payload", "{}"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(keys("tenant-a").contains(&id), "the job is under tenant-a");
    assert!(keys("dcs").is_empty(), "nothing under the default prefix");
    // Without the variable, the default prefix: this queue has no job there.
    assert_eq!(code(&ctl.run(&["status", &id])), 3);
    let bad = ctl
        .command()
        .env("DCS_REDIS_KEY_PREFIX", "a{b}")
        .arg("stats")
        .output()
        .unwrap();
    assert_eq!(code(&bad), 2, "a configuration error: {}", stderr(&bad));
    assert!(
        stderr(&bad).contains("DCS_REDIS_KEY_PREFIX"),
        "{}",
        stderr(&bad)
    );
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "redis-cli -u {} --scan --pattern 'tenant-a:{{{}}}:*' | xargs -r redis-cli -u {} del >/dev/null",
            ctl.url, ctl.queue, ctl.url
        ))
        .status();
    ctl.cleanup();
}
