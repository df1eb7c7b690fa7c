//! A flow run by a real worker: chapters first, then the merge, which reads their results;
//! a batch's callback sees its members' counts.

use std::time::Duration;

use queue_core::{ChildPolicy, Flow, JobStatus, JobStore, NewJob};
use queue_worker::{Completion, JobError, Worker};
use serde_json::json;

use crate::support::{backend, start, wait_status};

#[tokio::test(start_paused = true)]
async fn a_merge_reads_its_chapters_results() {
    let store = backend();
    let chapter = |n: u64| NewJob::new("chapter", &json!({ "n": n })).unwrap();
    let flow = Flow::new(NewJob::new("merge", &json!({ "book": "b1" })).unwrap())
        .children((1..=3).map(|n| Flow::new(chapter(n))))
        // A chapter that fails and is ignored: the merge does not see it.
        .child(Flow::new(chapter(99).max_retries(0)).on_failure(ChildPolicy::Ignore));
    let merge = store.enqueue_flow(flow).await.unwrap();
    let worker = start(
        Worker::builder(store.clone())
            .concurrency(2)
            .register("chapter", |input: serde_json::Value, _ctx| async move {
                let n = input["n"].as_u64().unwrap();
                if n == 99 {
                    return Err(JobError::permanent("no such chapter"));
                }
                Completion::with(&json!({ "words": n * 100 }))
            })
            .register("merge", |_input: serde_json::Value, ctx| async move {
                #[derive(serde::Deserialize)]
                struct Chapter {
                    words: u64,
                }
                let seen = ctx.children().await.map_err(JobError::retry)?;
                let chapters = ctx
                    .child_results::<Chapter>()
                    .await
                    .map_err(JobError::retry)?;
                let words: u64 = chapters.iter().map(|(_, c)| c.words).sum();
                Completion::with(&json!({ "words": words, "children_seen": seen.len() }))
            }),
    );
    let done = wait_status(&store, merge.job_id, JobStatus::Completed).await;
    assert_eq!(
        done.result,
        Some(json!({ "words": 600, "children_seen": 3 }))
    );
    let counts = done.children.unwrap();
    assert_eq!((counts.completed, counts.failed, counts.waiting), (3, 1, 0));
    // The merge started only after every chapter ended.
    for kid in store.children(merge.job_id).await.unwrap() {
        assert!(kid.completed_at.unwrap() <= done.started_at.unwrap());
    }
    worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_batch_callback_runs_once_with_counts() {
    let store = backend();
    let members = (0..20).map(|n| NewJob::new("member", &json!({ "n": n })).unwrap());
    let batch = store
        .enqueue_flow(Flow::batch(
            NewJob::new("callback", &json!(null)).unwrap(),
            members,
        ))
        .await
        .unwrap();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = calls.clone();
    let worker = start(
        Worker::builder(store.clone())
            .concurrency(8)
            .register("member", |input: serde_json::Value, _ctx| async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if input["n"].as_u64().unwrap().is_multiple_of(7) {
                    return Err(JobError::permanent("bad page"));
                }
                Ok::<_, JobError>(Completion::done())
            })
            .register("callback", move |_input: serde_json::Value, ctx| {
                let seen = seen.clone();
                async move {
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let counts = ctx.record().children.unwrap();
                    Completion::with(&json!({
                        "batch": counts.batch_status(),
                        "failed": counts.failed,
                        "completed": counts.completed,
                    }))
                }
            }),
    );
    let done = wait_status(&store, batch.job_id, JobStatus::Completed).await;
    assert_eq!(
        done.result,
        Some(json!({ "batch": "partial", "failed": 3, "completed": 17 }))
    );
    worker.shutdown().await;
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_chapters_book_is_split_and_merged() {
    let store = backend();
    let out = std::env::temp_dir().join(format!("chapters-{}", queue_core::JobId::new()));
    let settings = book_pipeline::Settings {
        step_delay: Duration::ZERO,
        output_dir: out.clone(),
    };
    let book = book_pipeline::ProcessBook {
        book_id: "book-ch".into(),
        publisher_id: "pub-1".into(),
        job_type: book_pipeline::JobType::Chapters,
        source: None,
    };
    let flow = book_pipeline::chapters_flow(&book).await.unwrap();
    let chapters = flow.children.len();
    assert!(chapters >= 3, "the sample has chapters: {chapters}");
    let root = store.enqueue_flow(flow).await.unwrap();
    let (s1, s2) = (settings.clone(), settings.clone());
    let worker = start(
        Worker::builder(store.clone())
            .concurrency(4)
            .handle(move |job, ctx| {
                let s = s1.clone();
                async move { book_pipeline::run(&s, job, ctx).await }
            })
            .handle(move |job, ctx| {
                let s = s2.clone();
                async move { book_pipeline::run_chapter(&s, job, ctx).await }
            }),
    );
    let done = wait_status(&store, root.job_id, JobStatus::Completed).await;
    worker.shutdown().await;
    let result = done.result.unwrap();
    assert_eq!(result["chapters"], chapters);
    assert!(result["words"].as_u64().unwrap() > 20, "{result}");
    let outline = std::fs::read_to_string(out.join("book-ch").join("chapters.json")).unwrap();
    let outline: serde_json::Value = serde_json::from_str(&outline).unwrap();
    assert_eq!(outline.as_array().unwrap().len(), chapters);
    let _ = std::fs::remove_dir_all(out);
}
