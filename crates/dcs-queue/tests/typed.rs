//! Typed jobs end to end: a derived `Job` carries its defaults into the record, its handler
//! is checked by the compiler, its result reads back typed, and the typed and the string
//! forms interoperate in one queue (a job enqueued by name runs in a typed handler, a typed
//! job runs in a handler registered by name, as a worker in another language would).

use std::{sync::Arc, time::Duration};

use dcs_queue::ListQuery;
use dcs_queue::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(name = "count_words", priority = "high", retries = 5, timeout_secs = 90,
      delay_ms = 0, cost = 3, output = Counted, stages(read = 1, count = 3))]
struct CountWords {
    #[job(unique_key)]
    book_id: String,
    #[job(group)]
    publisher: Option<String>,
    text: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Counted {
    words: usize,
}

// `crate = ...` names where the queue's crate is (a re-export, or `queue_core` inside this
// workspace).
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(name = "shout", output = String, on_failure = "ignore", crate = ::dcs_queue)]
struct Shout(String);

async fn count_words(job: CountWords, ctx: JobContext) -> Result<Done<Counted>, JobError> {
    let stages = ctx.stages(job.stages().expect("declared"));
    stages.start("count").await;
    let words = job.text.split_whitespace().count();
    if words == 0 {
        return Ok(Done::partial("nothing to count", Counted { words }));
    }
    Ok(Done::completed(Counted { words }))
}

fn worker(backend: Arc<MemoryBackend>) -> Worker {
    Worker::builder(backend)
        .handle::<CountWords>(count_words)
        // A typed job run by a handler registered by name, as another language would.
        .register("shout", |text: String, _ctx: JobContext| async move {
            Ok::<_, JobError>(serde_json::Value::String(text.to_uppercase()))
        })
        .concurrency(2)
        .fetch_wait(Duration::from_millis(50))
        .build()
        .expect("builds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_derived_job_starts_with_its_defaults_and_calls_override_them() {
    let job = CountWords {
        book_id: "b1".into(),
        publisher: Some("p1".into()),
        text: "a b c".into(),
    };
    let new = NewJob::typed(&job).unwrap();
    assert_eq!(new.task, "count_words");
    assert_eq!(new.options.priority, Some(Priority::High));
    assert_eq!(new.options.max_retries, Some(5));
    assert_eq!(new.options.timeout, Some(Duration::from_secs(90)));
    assert_eq!(new.options.delay, Some(Duration::ZERO));
    assert_eq!(new.options.cost, Some(3));
    assert_eq!(new.options.unique_key.as_deref(), Some("b1"));
    assert_eq!(new.options.group.as_deref(), Some("p1"));
    let stages = job.stages().unwrap();
    assert_eq!(stages.names().collect::<Vec<_>>(), ["read", "count"]);
    assert_eq!(stages.percent("count", 0.0), Some(25));
    // A per-call setter wins over the type's default; an absent optional field sets none.
    let over = NewJob::typed(&job)
        .unwrap()
        .priority(Priority::Low)
        .max_retries(0);
    assert_eq!(
        (over.options.priority, over.options.max_retries),
        (Some(Priority::Low), Some(0))
    );
    let lone = CountWords {
        publisher: None,
        ..job
    };
    assert_eq!(NewJob::typed(&lone).unwrap().options.group, None);

    let backend = Arc::new(MemoryBackend::new());
    let record = backend.enqueue_job(&lone).await.unwrap();
    assert_eq!(
        (
            record.priority,
            record.max_retries,
            record.unique_key.as_deref()
        ),
        (Priority::High, 5, Some("b1"))
    );
    assert_eq!(record.cost, Some(3));
    // Its unique key holds: the same book is refused while it is queued.
    let again = backend.enqueue_job(&lone).await.unwrap_err();
    assert!(
        matches!(again, dcs_queue::Error::AlreadyExists { .. }),
        "{again}"
    );

    // A flow built from typed children keeps each type's failure policy.
    let flow = Flow::of(&Shout("merge".into()))
        .unwrap()
        .child(Flow::of(&Shout("a".into())).unwrap());
    assert_eq!(flow.children[0].policy, ChildPolicy::Ignore);
    assert_eq!(flow.children[0].job.task, "shout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_and_string_forms_interoperate() {
    let backend = Arc::new(MemoryBackend::new());
    // Enqueued by name with a JSON payload (the CLI, another language), run typed.
    let by_name = backend
        .enqueue(
            NewJob::new(
                "count_words",
                &json!({"book_id": "b2", "publisher": null, "text": "one two three"}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    // Enqueued typed, run by a handler registered by name.
    let typed = backend.enqueue_job(&Shout("hello".into())).await.unwrap();
    // Enqueued by name with a payload that is not a `CountWords`: fails, naming the field.
    let bad = backend
        .enqueue(NewJob::new("count_words", &json!({"book_id": "b3"})).unwrap())
        .await
        .unwrap();
    let empty = backend
        .enqueue_job(&CountWords {
            book_id: "b4".into(),
            publisher: None,
            text: " ".into(),
        })
        .await
        .unwrap();

    let stop = CancellationToken::new();
    let running = tokio::spawn(worker(backend.clone()).run(stop.clone()));
    let wait = Duration::from_secs(20);
    let counted = backend.wait(by_name.job_id, wait).await.unwrap();
    assert_eq!(counted.status, JobStatus::Completed, "{counted:?}");
    assert_eq!(
        counted.output::<CountWords>().unwrap(),
        Some(Counted { words: 3 })
    );
    let shouted = backend.wait(typed.job_id, wait).await.unwrap();
    assert_eq!(shouted.status, JobStatus::Completed);
    assert_eq!(shouted.output::<Shout>().unwrap().as_deref(), Some("HELLO"));
    // Reading it as another type names both tasks.
    let wrong = shouted.output::<CountWords>().unwrap_err().to_string();
    assert!(
        wrong.contains("is a `shout` job, not a `count_words`"),
        "{wrong}"
    );

    let failed = backend.wait(bad.job_id, wait).await.unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    let message = failed.error_message.unwrap_or_default();
    assert!(
        message.contains("count_words") && message.contains("missing field `text`"),
        "{message}"
    );
    let partial = backend.wait(empty.job_id, wait).await.unwrap();
    assert_eq!(partial.status, JobStatus::Partial);
    assert_eq!(partial.error_message.as_deref(), Some("nothing to count"));
    assert_eq!(
        partial.output::<CountWords>().unwrap(),
        Some(Counted { words: 0 })
    );
    stop.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(
        backend.list(&ListQuery::new()).await.unwrap().jobs.len(),
        4,
        "nothing else was enqueued"
    );
}
