//! The dashboard in headless Chromium: a book job's progress bar moves, a running job is
//! cancelled from its button and ends `cancelled`, the queue and a group pause and resume;
//! the finished-jobs chart counts a run, a failing job's page shows its attempt history and
//! grows it after a retry, a deep link restores a filter, 100 failed jobs are retried in
//! bulk (count, confirm, progress), the workers page shows what each worker runs, and
//! axe-core finds no serious accessibility violation on any page, light or dark.
//! Screenshots of each page go to `target/dashboard*.png`. Needs Debian's `chromium`,
//! Node.js and `npm install` in `tests/browser` (`.ci/run` installs them); without them the
//! test fails under CI and says what is missing elsewhere.

mod support;

use std::{path::PathBuf, process::Command, sync::Arc, time::Duration};

use book_pipeline::{ProcessBook, Settings};
use queue_core::{JobStore, NewJob, QueueConfig};
use queue_memory::MemoryBackend;
use queue_worker::{CancellationToken, Worker};
use serde_json::json;
use support::{Server, TOKEN};

fn missing_tools() -> Option<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !PathBuf::from(&chromium).exists() {
        return Some(format!("{chromium} (apt-get install chromium)"));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node".into());
    }
    for module in ["playwright-core", "axe-core"] {
        if !dir.join("node_modules").join(module).exists() {
            return Some(format!("{module} (cd {} && npm install)", dir.display()));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_progress_and_cancels() {
    if let Some(missing) = missing_tools() {
        assert!(
            std::env::var_os("CI").is_none(),
            "browser test needs {missing}"
        );
        eprintln!("SKIPPED (not under CI): browser test needs {missing}");
        return;
    }
    let backend = Arc::new(MemoryBackend::with_config(QueueConfig::default()));
    let out = std::env::temp_dir().join(format!("dashboard-books-{}", std::process::id()));
    let settings = Settings {
        step_delay: Duration::from_millis(150),
        output_dir: out.clone(),
    };
    let stop = CancellationToken::new();
    // A book split into chapters (a flow): the dashboard shows its tree.
    let chapters = ProcessBook {
        book_id: "book-chapters".into(),
        publisher_id: "p".into(),
        job_type: book_pipeline::JobType::Chapters,
        source: None,
    };
    let flow = book_pipeline::chapters_flow(&chapters).await.unwrap();
    let chapter_count = flow.children.len();
    let flow_parent = backend.enqueue_flow(flow).await.unwrap();
    // A nightly schedule the schedules panel lists with its next run.
    {
        use queue_core::{Schedule, Schedules};
        let nightly = Schedule::cron(
            "nightly-reprocess",
            "0 2 * * *",
            NewJob::new("process_book", &"all").unwrap(),
        )
        .unwrap()
        .time_zone("Europe/Berlin");
        backend.put_schedule(nightly).await.unwrap();
    }
    // A job that fails each attempt (one retry allowed): its page shows the attempts.
    let flaky = backend
        .enqueue(
            NewJob::new("flaky", &json!({"n": 1}))
                .unwrap()
                .max_retries(1),
        )
        .await
        .unwrap()
        .job_id;
    // A worker that beat once and was never heard of again: the workers page shows it lost.
    {
        use queue_core::backend::{Broker, WorkerBeat};
        let ghost = WorkerBeat {
            worker: queue_core::WorkerId::new("ghost-worker"),
            host: "gone-host".into(),
            pid: 4242,
            concurrency: 1,
            started_at: chrono::Utc::now(),
            version: "0.0.1".into(),
            tasks: vec!["process_book".into()],
            schemas: Default::default(),
            lease: Duration::from_secs(30),
            interval: Duration::from_secs(1),
        };
        backend.heartbeat(&ghost, &[]).await.unwrap();
    }
    // 100 jobs that fail at once, for the bulk retry.
    let doomed: Vec<NewJob> = (0..100)
        .map(|n| {
            NewJob::new("doomed", &json!({"n": n}))
                .unwrap()
                .max_retries(0)
        })
        .collect();
    for r in backend.enqueue_many(doomed).await.unwrap() {
        r.unwrap();
    }
    let chapter_settings = settings.clone();
    let worker = Worker::builder(backend.clone())
        .concurrency(2)
        .version("9.9.9-test")
        .register("flaky", |_: serde_json::Value, _ctx| async move {
            Err::<(), _>(queue_core::JobError::retry_after(
                Duration::from_millis(200),
                "the printer is on fire",
            ))
        })
        .register("doomed", |_: serde_json::Value, _ctx| async move {
            Err::<(), _>(queue_core::JobError::permanent("no such book"))
        })
        .handle(move |job: ProcessBook, ctx| {
            let settings = settings.clone();
            async move { book_pipeline::run(&settings, job, ctx).await }
        })
        .handle(move |job, ctx| {
            let settings = chapter_settings.clone();
            async move { book_pipeline::run_chapter(&settings, job, ctx).await }
        })
        .build()
        .unwrap();
    let running = tokio::spawn(worker.run(stop.clone()));
    // Books keep coming while the browser works (its first start on a fresh machine can
    // take many seconds), so there is always one running to watch and one to cancel.
    let producer = {
        let backend = backend.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            for n in 0..120 {
                let book = format!("book-{n:03}");
                let job = ProcessBook {
                    book_id: book.clone(),
                    publisher_id: "p".into(),
                    job_type: book_pipeline::JobType::Full,
                    source: None,
                };
                backend
                    .enqueue(NewJob::typed(&job).unwrap().unique_key(book).group("p"))
                    .await
                    .unwrap();
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(700)) => {}
                    () = stop.cancelled() => return,
                }
            }
        })
    };
    let server = Server::start(backend.clone(), Some(TOKEN)).await;
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard.png");
    let url = format!("http://{}/?token={TOKEN}", server.addr);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.mjs");
    // The failing jobs have failed before the browser looks.
    for _ in 0..200 {
        let s = backend.stats().await.unwrap();
        if s.failed >= 101 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&url)
        .arg(&shot)
        .arg(flaky.to_string())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "browser drill failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert!(
        report["after"].as_u64() > report["before"].as_u64(),
        "{report}"
    );
    assert_eq!(
        (report["flowId"].as_str(), report["flowChildren"].as_u64()),
        (
            Some(flow_parent.job_id.to_string().as_str()),
            Some(chapter_count as u64)
        ),
        "the flow's tree lists its chapters, completed: {report}"
    );
    let cancelled: queue_core::JobId = report["cancelled"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        backend.get(cancelled).await.unwrap().status,
        queue_core::JobStatus::Cancelled
    );
    assert_eq!(
        (report["paused"].as_bool(), report["resumed"].as_bool()),
        (Some(true), Some(true)),
        "the pause button pauses and resumes: {report}"
    );
    assert!(!backend.stats().await.unwrap().paused);
    assert_eq!(
        (
            report["groupPaused"].as_bool(),
            report["groupResumed"].as_bool()
        ),
        (Some(true), Some(true)),
        "the groups panel pauses and resumes a group: {report}"
    );
    assert!(!backend.group("p").await.unwrap().paused);
    assert!(
        report["finishedChart"].as_u64() > Some(0),
        "the chart counts finished jobs: {report}"
    );
    let attempts = report["attemptsBefore"].as_u64().unwrap_or(0);
    assert_eq!(
        attempts, 2,
        "two failed attempts before the retry: {report}"
    );
    assert!(
        report["attemptsAfter"].as_u64() > Some(attempts),
        "the retry's attempt shows: {report}"
    );
    assert_eq!(
        report["attemptsCounted"].as_u64(),
        report["attemptsAfter"].as_u64(),
        "the details count the attempts the table lists: {report}"
    );
    assert_eq!(
        report["groupCells"]["aligned"].as_bool(),
        Some(true),
        "each group value sits under its header: {report}"
    );
    assert!(
        report["jobsShown"].as_u64() >= Some(10),
        "the jobs screenshot shows jobs: {report}"
    );
    assert!(
        backend.get(flaky).await.unwrap().attempts.len() > 2,
        "the retried job failed again and kept its history"
    );
    assert_eq!(
        (report["deepStatus"].as_str(), report["deepTask"].as_str()),
        (Some("failed"), Some("doomed")),
        "a deep link restores its filter: {report}"
    );
    assert_eq!(
        (report["bulkCounted"].as_u64(), report["bulkDone"].as_u64()),
        (Some(100), Some(100)),
        "100 failed jobs counted, confirmed and retried: {report}"
    );
    assert!(
        backend.stats().await.unwrap().totals.failed >= 101,
        "they failed again after the retry (the worker ran them)"
    );
    assert_eq!(
        report["workerVersion"].as_str(),
        Some("9.9.9-test"),
        "{report}"
    );
    assert!(
        report["workerTasks"]
            .as_str()
            .is_some_and(|t| t.contains("process_book (book_id, job_type, publisher_id, source?)")),
        "the workers page shows a typed task's fields: {report}"
    );
    assert_eq!(
        report["lostShown"].as_bool(),
        Some(true),
        "the silent worker shows as lost: {report}"
    );
    let violations = report["axe"].as_array().expect("axe ran on every page");
    assert!(
        violations.is_empty(),
        "serious accessibility violations: {report}"
    );
    assert_eq!(report["axePages"].as_u64(), Some(6), "{report}");
    assert!(shot.exists(), "screenshot saved");
    println!("screenshot: {}", shot.display());
    stop.cancel();
    producer.await.unwrap();
    running.await.unwrap().unwrap();
    server.stop().await;
    let _ = std::fs::remove_dir_all(out);
}
