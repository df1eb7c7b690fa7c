//! Transactional completion: a handler's own writes and its job's completion commit
//! together; a rollback leaves the attempt held, to end as the worker reports it.

mod support;

use std::time::Duration;

use queue_core::backend::{ClaimRequest, Outcome};
use queue_core::{JobStatus, NewJob, WorkerId};
use support::TestSchema;

fn req() -> ClaimRequest {
    ClaimRequest::new(WorkerId::new("w1"), 1, Duration::from_secs(30))
}

#[tokio::test]
async fn a_completion_commits_with_the_handlers_writes_and_never_runs_again() {
    let s = TestSchema::new();
    let q = s.backend().await;
    let table = format!("\"{}\".shipped", s.name);
    sqlx::query(&format!("CREATE TABLE {table} (order_id int8 PRIMARY KEY)"))
        .execute(q.pool())
        .await
        .unwrap();
    let job = q.enqueue(NewJob::new("ship", &7).unwrap()).await.unwrap();
    let lease = q
        .fetch(&req(), Duration::ZERO)
        .await
        .unwrap()
        .pop()
        .unwrap();

    let mut tx = q.pool().begin().await.unwrap();
    sqlx::query(&format!("INSERT INTO {table} VALUES (7)"))
        .execute(&mut *tx)
        .await
        .unwrap();
    let done = Outcome::Completed {
        result: Some(serde_json::json!({"shipped": 7})),
    };
    let status = q.finish_in(&mut tx, &lease.to_ref(), done).await.unwrap();
    assert_eq!(status, JobStatus::Completed);
    // Not visible before the commit: the job still runs, as far as anyone else knows.
    assert_eq!(
        q.get(job.job_id).await.unwrap().status,
        JobStatus::Processing
    );
    tx.commit().await.unwrap();

    let stored = q.get(job.job_id).await.unwrap();
    assert_eq!(stored.status, JobStatus::Completed);
    assert_eq!(stored.result, Some(serde_json::json!({"shipped": 7})));
    let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(q.pool())
        .await
        .unwrap();
    assert_eq!(rows, 1);
    // The worker's own report of the attempt is answered with what the handler committed.
    let again = q
        .finish(
            &lease.to_ref(),
            Outcome::Failed {
                error: "late".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(again, JobStatus::Completed);
    assert_eq!(
        q.get(job.job_id).await.unwrap().status,
        JobStatus::Completed
    );
    // And it never runs again, even once its lease would have expired.
    assert!(q.reap(100).await.unwrap().is_empty());
    assert!(q.fetch(&req(), Duration::ZERO).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_rolled_back_completion_leaves_the_attempt_to_fail_and_retry() {
    let s = TestSchema::new();
    let q = s.backend().await;
    let job = q
        .enqueue(NewJob::new("ship", &8).unwrap().max_retries(1))
        .await
        .unwrap();
    let lease = q
        .fetch(&req(), Duration::ZERO)
        .await
        .unwrap()
        .pop()
        .unwrap();
    let mut tx = q.pool().begin().await.unwrap();
    let done = Outcome::Completed { result: None };
    q.finish_in(&mut tx, &lease.to_ref(), done).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        q.get(job.job_id).await.unwrap().status,
        JobStatus::Processing
    );
    // The handler's error, as the worker reports it: a failed attempt, retried.
    let retry = Outcome::Retry {
        error: "the order could not be saved".into(),
        delay: Duration::ZERO,
    };
    assert_eq!(
        q.finish(&lease.to_ref(), retry).await.unwrap(),
        JobStatus::Queued
    );
    let second = q
        .fetch(&req(), Duration::ZERO)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!((second.job.job_id, second.job.retry_count), (job.job_id, 1));
    // A completion inside a transaction with a lease that is not held is refused.
    let stranger = queue_core::backend::LeaseRef {
        job_id: job.job_id,
        token: queue_core::LeaseToken::new("not-the-holder"),
    };
    let mut tx = q.pool().begin().await.unwrap();
    let stale = q
        .finish_in(&mut tx, &stranger, Outcome::Completed { result: None })
        .await;
    assert!(
        matches!(stale, Err(queue_core::Error::LeaseLost { .. })),
        "{stale:?}"
    );
    // The refusal left the application's transaction usable.
    sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
}
