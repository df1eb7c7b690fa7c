//! The cases. Each takes a fresh [`Harness`] and panics on a broken contract.

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures_util::StreamExt;
use queue_core::backend::{ClaimRequest, Lease, LeaseRef, Outcome, WorkerBeat, to_millis};
use queue_core::{
    CancelOutcome, ChildPolicy, Clock, Error, EventKind, Flow, JobId, JobRecord, JobStatus,
    LeaseToken, ListQuery, NewJob, Page, Priority, WorkerId,
};
use serde_json::json;

use crate::Harness;

mod event_log;
pub use event_log::*;
mod limits;
pub use limits::*;

const LEASE: Duration = Duration::from_secs(30);

fn job(n: u32) -> NewJob {
    NewJob::new("conformance", &json!({ "n": n })).expect("encodes")
}

fn req(worker: &str, max: usize) -> ClaimRequest {
    ClaimRequest::new(WorkerId::new(worker), max, LEASE)
}

fn beat(worker: &str) -> WorkerBeat {
    WorkerBeat {
        worker: WorkerId::new(worker),
        host: "test-host".into(),
        pid: 42,
        concurrency: 3,
        version: "1.2.3".into(),
        tasks: vec!["model".into()],
        started_at: queue_core::backend::from_millis(0),
        lease: LEASE,
        interval: Duration::from_secs(10),
    }
}

fn n_of(record: &JobRecord) -> u64 {
    record.payload.to_value()["n"]
        .as_u64()
        .expect("conformance payload")
}

async fn enqueue(h: &Harness, job: NewJob) -> JobRecord {
    h.backend.enqueue(job).await.expect("enqueue")
}

async fn fetch(h: &Harness, max: usize) -> Vec<Lease> {
    h.backend
        .fetch(&req("w1", max), Duration::ZERO)
        .await
        .expect("fetch")
}

async fn claim_one(h: &Harness) -> Lease {
    let mut leases = fetch(h, 1).await;
    assert_eq!(leases.len(), 1, "expected one due job");
    leases.pop().unwrap()
}

async fn finish(h: &Harness, lease: &Lease, outcome: Outcome) -> JobStatus {
    h.backend
        .finish(&lease.to_ref(), outcome, None)
        .await
        .expect("finish")
        .status
}

async fn get(h: &Harness, id: JobId) -> JobRecord {
    h.backend.get(id).await.expect("get")
}

fn completed() -> Outcome {
    Outcome::Completed { result: None }
}

fn retry(delay_secs: u64) -> Outcome {
    Outcome::Retry {
        error: "flaky".into(),
        delay: Duration::from_secs(delay_secs),
    }
}

/// Strict priority between levels, FIFO within one.
pub async fn priority_then_fifo(h: &Harness) {
    let plan = [
        (1, Priority::Low),
        (2, Priority::Normal),
        (3, Priority::High),
        (4, Priority::Normal),
        (5, Priority::High),
        (6, Priority::Low),
        (7, Priority::Normal),
    ];
    for (n, p) in plan {
        enqueue(h, job(n).priority(p)).await;
    }
    let mut order = Vec::new();
    for lease in fetch(h, 3).await.into_iter().chain(fetch(h, 10).await) {
        assert_eq!(lease.job.status, JobStatus::Processing);
        order.push(n_of(&lease.job));
    }
    assert_eq!(order, [3, 5, 2, 4, 7, 1, 6]);
    // A default-priority job is `normal`.
    let r = enqueue(h, job(8)).await;
    assert_eq!(r.priority, Priority::Normal);
}

/// A delayed job is queued but not claimable before it is due.
pub async fn delayed_jobs_wait(h: &Harness) {
    let delayed = enqueue(h, job(1).delay(Duration::from_secs(30))).await;
    assert_eq!(delayed.status, JobStatus::Queued);
    let due = delayed.run_at.expect("delayed job has run_at");
    assert_eq!(to_millis(due) - to_millis(delayed.created_at), 30_000);
    let now = enqueue(h, job(2)).await;
    let first = fetch(h, 10).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].job.job_id, now.job_id);
    let stats = h.backend.stats().await.unwrap();
    assert_eq!((stats.queued, stats.scheduled), (1, 1));
    h.advance(Duration::from_secs(29));
    assert!(fetch(h, 10).await.is_empty(), "claimed 1 s early");
    h.advance(Duration::from_secs(1));
    let later = fetch(h, 10).await;
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].job.job_id, delayed.job_id);
    assert_eq!(later[0].job.run_at, None);
}

/// A unique key is refused while its job is queued or processing (the error names that
/// job) and accepted again once it ended.
pub async fn unique_key_refused_while_active(h: &Harness) {
    let first = enqueue(h, job(1).unique_key("book-1")).await;
    assert_eq!(first.unique_key.as_deref(), Some("book-1"));
    let refused = |e: Error| match e {
        Error::AlreadyExists { unique_key, job_id } => {
            assert_eq!(unique_key, "book-1");
            assert_eq!(job_id, first.job_id, "error must name the active job");
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    };
    refused(
        h.backend
            .enqueue(job(2).unique_key("book-1"))
            .await
            .unwrap_err(),
    );
    enqueue(h, job(3).unique_key("book-2")).await;
    let lease = claim_one(h).await;
    assert_eq!(lease.job.job_id, first.job_id);
    refused(
        h.backend
            .enqueue(job(4).unique_key("book-1"))
            .await
            .unwrap_err(),
    );
    finish(h, &lease, completed()).await;
    let second = enqueue(h, job(5).unique_key("book-1")).await;
    assert_ne!(second.job_id, first.job_id);
    let totals = h.backend.stats().await.unwrap().totals;
    assert_eq!(
        totals.enqueued, 3,
        "refused duplicates are not counted as enqueued"
    );
    // A cancelled queued job frees its key too.
    assert_eq!(
        h.backend.cancel(second.job_id).await.unwrap(),
        CancelOutcome::Cancelled
    );
    enqueue(h, job(6).unique_key("book-1")).await;
}

/// Of 50 concurrent enqueues of one key, exactly one wins; the others name the winner.
pub async fn unique_key_race_has_one_winner(h: &Harness) {
    let tasks: Vec<_> = (0..50)
        .map(|n| {
            let backend = Arc::clone(&h.backend);
            tokio::spawn(async move { backend.enqueue(job(n).unique_key("contested")).await })
        })
        .collect();
    let mut winners = Vec::new();
    let mut named = HashSet::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(record) => winners.push(record.job_id),
            Err(Error::AlreadyExists { job_id, .. }) => {
                named.insert(job_id);
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one enqueue wins");
    assert!(
        named.iter().all(|id| *id == winners[0]),
        "losers name the winner"
    );
    let page = h
        .backend
        .list(&ListQuery::new().unique_key("contested"))
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 1);
    assert_eq!(h.backend.stats().await.unwrap().total, 1);
}

/// Many enqueues at once (which a backend may send together) each get their own answer:
/// their own record, or the refusal of their own bad input; two with one chosen id get
/// the same record.
pub async fn concurrent_enqueues_each_get_their_own_answer(h: &Harness) {
    let shared = JobId::new();
    let tasks: Vec<_> = (0..200u32)
        .map(|n| {
            let backend = Arc::clone(&h.backend);
            let new = match n % 10 {
                3 => job(n).unique_key(""),
                7 => job(n).job_id(shared),
                _ => job(n).priority(Priority::High),
            };
            tokio::spawn(async move { (n, backend.enqueue(new).await) })
        })
        .collect();
    let mut ids = HashSet::new();
    let mut holders = Vec::new();
    for task in tasks {
        let (n, result) = task.await.unwrap();
        match (n % 10, result) {
            (3, Err(Error::InvalidArgument { message })) => {
                assert!(message.contains("unique"), "{message}")
            }
            (3, other) => panic!("job {n}: expected InvalidArgument, got {other:?}"),
            (7, Ok(record)) => {
                assert_eq!(record.job_id, shared);
                holders.push(n_of(&record));
            }
            (_, Ok(record)) => {
                assert_eq!(n_of(&record), u64::from(n), "job {n} got another's record");
                assert_eq!(record.priority, Priority::High);
                assert!(ids.insert(record.job_id), "job {n}: id given twice");
            }
            (_, Err(e)) => panic!("job {n}: {e:?}"),
        }
    }
    assert_eq!(holders.len(), 20);
    assert!(
        holders.windows(2).all(|w| w[0] == w[1]),
        "one chosen id, one record: {holders:?}"
    );
    assert_eq!(h.backend.stats().await.unwrap().total, 161);
    assert_eq!(fetch(h, 500).await.len(), 161);
}

/// Enqueueing again with the same job id returns the existing job.
pub async fn enqueue_with_same_id_is_idempotent(h: &Harness) {
    let id = JobId::new();
    let a = enqueue(h, job(1).job_id(id)).await;
    let b = enqueue(h, job(2).job_id(id)).await;
    assert_eq!(a.job_id, id);
    assert_eq!(a, b, "the second enqueue returns the first record");
    assert_eq!(h.backend.stats().await.unwrap().total, 1);
    assert_eq!(fetch(h, 10).await.len(), 1);
}

/// A batch reports each job; a refused job does not stop the others.
pub async fn enqueue_many_reports_each_job(h: &Harness) {
    let results = h
        .backend
        .enqueue_many(vec![
            job(1).unique_key("k"),
            job(2).unique_key("k"),
            job(3).priority(Priority::High),
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 3);
    let first = results[0].as_ref().expect("first is accepted").job_id;
    match &results[1] {
        Err(Error::AlreadyExists { job_id, .. }) => assert_eq!(*job_id, first),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert!(results[2].is_ok());
    let order: Vec<u64> = fetch(h, 10).await.iter().map(|l| n_of(&l.job)).collect();
    assert_eq!(order, [3, 1]);
}

/// A queued (or delayed) job is removed from the queue at once and ends `cancelled`.
pub async fn cancel_queued_job(h: &Harness) {
    let a = enqueue(h, job(1).unique_key("k")).await;
    let delayed = enqueue(h, job(2).delay(Duration::from_secs(5))).await;
    assert_eq!(
        h.backend.cancel(a.job_id).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        h.backend.cancel(delayed.job_id).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let r = get(h, a.job_id).await;
    assert_eq!(r.status, JobStatus::Cancelled);
    assert!(r.completed_at.is_some());
    h.advance(Duration::from_secs(10));
    assert!(
        fetch(h, 10).await.is_empty(),
        "cancelled jobs are not claimable"
    );
    match h.backend.cancel(a.job_id).await.unwrap_err() {
        Error::InvalidTransition { from, .. } => assert_eq!(from, JobStatus::Cancelled),
        other => panic!("expected InvalidTransition, got {other:?}"),
    }
    assert!(matches!(
        h.backend.cancel(JobId::new()).await,
        Err(Error::NotFound { .. })
    ));
    let stats = h.backend.stats().await.unwrap();
    assert_eq!((stats.queued, stats.cancelled, stats.scheduled), (0, 2, 0));
    enqueue(h, job(3).unique_key("k")).await;
}

/// Cancelling a running job tells its lease holder; the job ends `cancelled`, not retried.
pub async fn cancel_running_job(h: &Harness) {
    let a = enqueue(h, job(1)).await;
    let lease = claim_one(h).await;
    let mut pushed = h.backend.cancellations().await.unwrap();
    assert_eq!(
        h.backend.cancel(a.job_id).await.unwrap(),
        CancelOutcome::Requested
    );
    let told = tokio::time::timeout(Duration::from_secs(5), pushed.next()).await;
    assert_eq!(
        told.expect("the cancel is pushed to lease holders"),
        Some(a.job_id)
    );
    let r = get(h, a.job_id).await;
    assert_eq!(r.status, JobStatus::Processing);
    assert!(r.cancel_requested);
    let reply = h
        .backend
        .heartbeat(&beat("w1"), &[lease.to_ref()])
        .await
        .unwrap();
    assert_eq!(reply.cancel, vec![lease.to_ref()]);
    assert!(reply.lost.is_empty());
    let status = h.backend.progress(&lease.to_ref(), 10, None).await.unwrap();
    assert!(status.cancel_requested);
    // Whatever the handler reports as a failure, a requested cancel wins: no retry.
    assert_eq!(finish(h, &lease, retry(1)).await, JobStatus::Cancelled);
    let r = get(h, a.job_id).await;
    assert_eq!(r.status, JobStatus::Cancelled);
    assert_eq!(r.retry_count, 0);
    h.advance(Duration::from_secs(60));
    assert!(fetch(h, 10).await.is_empty());
    // And a holder acknowledging the cancel directly.
    let b = enqueue(h, job(2)).await;
    let lease = claim_one(h).await;
    h.backend.cancel(b.job_id).await.unwrap();
    assert_eq!(
        finish(h, &lease, Outcome::Cancelled).await,
        JobStatus::Cancelled
    );
}

/// A failure with retries left goes back to `queued` after the backoff, `retry_count` + 1.
pub async fn retry_with_backoff(h: &Harness) {
    let a = enqueue(h, job(1)).await;
    assert_eq!(a.max_retries, 3);
    let lease = claim_one(h).await;
    h.backend
        .progress(&lease.to_ref(), 40, Some("half".into()))
        .await
        .unwrap();
    assert_eq!(finish(h, &lease, retry(60)).await, JobStatus::Queued);
    let r = get(h, a.job_id).await;
    assert_eq!(r.status, JobStatus::Queued);
    assert_eq!(r.retry_count, 1);
    assert_eq!(r.error_message.as_deref(), Some("flaky"));
    assert_eq!(r.progress, 0, "a new attempt starts from 0");
    assert!(r.run_at.is_some());
    h.advance(Duration::from_secs(59));
    assert!(fetch(h, 1).await.is_empty(), "backoff not respected");
    h.advance(Duration::from_secs(1));
    let again = claim_one(h).await;
    assert_eq!(again.job.job_id, a.job_id);
    assert_eq!(again.job.retry_count, 1);
    assert_ne!(again.token, lease.token, "each attempt has its own token");
    assert_eq!(h.backend.stats().await.unwrap().totals.retried, 1);
}

/// When the retries are used up, a retry request ends the job `failed` with its error.
pub async fn retries_exhausted_fail(h: &Harness) {
    let a = enqueue(h, job(1).max_retries(1)).await;
    let lease = claim_one(h).await;
    assert_eq!(finish(h, &lease, retry(1)).await, JobStatus::Queued);
    h.advance(Duration::from_secs(1));
    let lease = claim_one(h).await;
    let last = Outcome::Retry {
        error: "still broken".into(),
        delay: Duration::from_secs(1),
    };
    assert_eq!(finish(h, &lease, last).await, JobStatus::Failed);
    let r = get(h, a.job_id).await;
    assert_eq!(r.status, JobStatus::Failed);
    assert_eq!(r.retry_count, 1);
    assert_eq!(r.error_message.as_deref(), Some("still broken"));
    assert!(r.completed_at.is_some());
    h.advance(Duration::from_secs(10));
    assert!(fetch(h, 1).await.is_empty());
}

/// A permanent error fails the job at once, whatever retries are left.
pub async fn permanent_error_fails_at_once(h: &Harness) {
    let a = enqueue(h, job(1).max_retries(5)).await;
    let lease = claim_one(h).await;
    let status = finish(
        h,
        &lease,
        Outcome::Failed {
            error: "bad input".into(),
        },
    )
    .await;
    assert_eq!(status, JobStatus::Failed);
    let r = get(h, a.job_id).await;
    assert_eq!((r.status, r.retry_count), (JobStatus::Failed, 0));
    assert_eq!(r.error_message.as_deref(), Some("bad input"));
}

/// An expired lease puts the job back in its old place (counting an attempt), fails it
/// when no retries are left, and cancels it when a cancel was requested.
pub async fn expired_lease_requeues_in_place(h: &Harness) {
    let a = enqueue(h, job(1)).await;
    enqueue(h, job(2)).await;
    enqueue(h, job(3)).await;
    let lease = claim_one(h).await;
    assert_eq!(lease.job.job_id, a.job_id);
    h.advance(LEASE - Duration::from_secs(1));
    assert!(
        h.backend.reap(100).await.unwrap().is_empty(),
        "lease not yet expired"
    );
    h.advance(Duration::from_secs(2));
    assert_eq!(h.backend.reap(100).await.unwrap(), vec![a.job_id]);
    let r = get(h, a.job_id).await;
    assert_eq!((r.status, r.retry_count), (JobStatus::Queued, 1));
    assert!(
        r.error_message
            .as_deref()
            .unwrap_or("")
            .contains("lease expired")
    );
    assert_eq!(r.worker_id, None);
    let order: Vec<u64> = fetch(h, 10).await.iter().map(|l| n_of(&l.job)).collect();
    assert_eq!(order, [1, 2, 3], "the recovered job keeps its place");
    assert_eq!(h.backend.stats().await.unwrap().totals.recovered, 1);

    // No retries left: failed. Cancel requested: cancelled.
    let b = enqueue(h, job(4).max_retries(0)).await;
    let c = enqueue(h, job(5)).await;
    let held = fetch(h, 2).await;
    assert_eq!(held.len(), 2);
    h.backend.cancel(c.job_id).await.unwrap();
    h.advance(LEASE * 2);
    let mut reaped = h.backend.reap(100).await.unwrap();
    reaped.sort();
    assert!(reaped.contains(&b.job_id) && reaped.contains(&c.job_id));
    let rb = get(h, b.job_id).await;
    assert_eq!(rb.status, JobStatus::Failed);
    assert!(rb.error_message.unwrap().contains("lease expired"));
    assert_eq!(get(h, c.job_id).await.status, JobStatus::Cancelled);
}

/// A holder whose lease expired (reaped or not) cannot finish, update or renew the job.
pub async fn expired_holder_cannot_write(h: &Harness) {
    let a = enqueue(h, job(1)).await;
    let lease = claim_one(h).await;
    let forged = LeaseRef {
        job_id: a.job_id,
        token: LeaseToken::new("forged"),
    };
    assert!(matches!(
        h.backend.progress(&forged, 5, None).await,
        Err(Error::LeaseLost { .. })
    ));
    h.advance(LEASE + Duration::from_secs(1));
    let lost = |r: Result<_, Error>| match r {
        Err(Error::LeaseLost { id }) => assert_eq!(id, a.job_id),
        Err(other) => panic!("expected LeaseLost, got {other:?}"),
        Ok(_) => panic!("expected LeaseLost, got Ok"),
    };
    lost(
        h.backend
            .progress(&lease.to_ref(), 50, None)
            .await
            .map(|_| ()),
    );
    lost(
        h.backend
            .finish(&lease.to_ref(), completed(), None)
            .await
            .map(|_| ()),
    );
    let reply = h
        .backend
        .heartbeat(&beat("w1"), &[lease.to_ref()])
        .await
        .unwrap();
    assert_eq!(reply.lost, vec![lease.to_ref()]);
    let r = get(h, a.job_id).await;
    assert_eq!(
        (r.status, r.progress),
        (JobStatus::Processing, 0),
        "nothing changed"
    );
    h.backend.reap(10).await.unwrap();
    let second = claim_one(h).await;
    lost(
        h.backend
            .finish(&lease.to_ref(), completed(), None)
            .await
            .map(|_| ()),
    );
    assert_eq!(finish(h, &second, completed()).await, JobStatus::Completed);
}

/// Heartbeats renew leases and register the worker.
pub async fn heartbeat_extends_lease(h: &Harness) {
    let a = enqueue(h, job(1)).await;
    let lease = claim_one(h).await;
    h.advance(Duration::from_secs(20));
    let reply = h
        .backend
        .heartbeat(&beat("w1"), &[lease.to_ref()])
        .await
        .unwrap();
    assert!(reply.lost.is_empty() && reply.cancel.is_empty());
    h.advance(Duration::from_secs(20));
    assert!(
        h.backend.reap(10).await.unwrap().is_empty(),
        "renewed lease must not expire"
    );
    let workers = h.backend.workers().await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].worker_id, "w1");
    assert_eq!(workers[0].jobs, vec![a.job_id]);
    assert_eq!((workers[0].pid, workers[0].concurrency), (42, 3));
    assert_eq!(
        (workers[0].version.as_str(), workers[0].tasks.as_slice()),
        ("1.2.3", ["model".to_owned()].as_slice()),
        "what it runs"
    );
    assert_eq!(h.backend.stats().await.unwrap().active_workers, 1);
    assert_eq!(finish(h, &lease, completed()).await, JobStatus::Completed);
    h.backend.deregister(&WorkerId::new("w1")).await.unwrap();
    assert!(h.backend.workers().await.unwrap().is_empty());
    // A worker that stops beating drops out after three intervals: no longer counted,
    // listed as lost (with the job it still held) for an hour, then forgotten.
    let b = enqueue(h, job(2)).await;
    let held = h
        .backend
        .fetch(&req("w2", 1), Duration::ZERO)
        .await
        .unwrap();
    h.backend
        .heartbeat(&beat("w2"), &[held[0].to_ref()])
        .await
        .unwrap();
    h.advance(Duration::from_secs(31));
    assert_eq!(h.backend.stats().await.unwrap().active_workers, 0);
    h.backend.heartbeat(&beat("w3"), &[]).await.unwrap();
    let listed: Vec<(String, bool)> = h
        .backend
        .workers()
        .await
        .unwrap()
        .into_iter()
        .map(|w| (w.worker_id, w.lost))
        .collect();
    assert_eq!(listed, [("w2".to_owned(), true), ("w3".to_owned(), false)]);
    let lost = &h.backend.workers().await.unwrap()[0];
    assert_eq!(
        (lost.jobs.as_slice(), lost.version.as_str()),
        ([b.job_id].as_slice(), "1.2.3")
    );
    h.advance(Duration::from_secs(3600));
    h.backend.heartbeat(&beat("w3"), &[]).await.unwrap();
    let ids: Vec<String> = h
        .backend
        .workers()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.worker_id)
        .collect();
    assert_eq!(ids, ["w3"], "forgotten an hour later");
    assert_eq!(h.backend.stats().await.unwrap().active_workers, 1);
}

/// Progress never goes backwards within an attempt; the step is stored (an empty one clears it).
pub async fn progress_never_goes_backwards(h: &Harness) {
    let a = enqueue(h, job(1)).await;
    let lease = claim_one(h).await;
    h.backend
        .progress(&lease.to_ref(), 40, Some("segmentation".into()))
        .await
        .unwrap();
    h.backend
        .progress(&lease.to_ref(), 20, Some("topic_analysis".into()))
        .await
        .unwrap();
    let r = get(h, a.job_id).await;
    assert_eq!(r.progress, 40);
    assert_eq!(r.current_step.as_deref(), Some("topic_analysis"));
    h.backend.progress(&lease.to_ref(), 55, None).await.unwrap();
    let r = get(h, a.job_id).await;
    assert_eq!(
        (r.progress, r.current_step.as_deref()),
        (55, Some("topic_analysis"))
    );
    // An empty step name clears the step.
    h.backend
        .progress(&lease.to_ref(), 60, Some(String::new()))
        .await
        .unwrap();
    let r = get(h, a.job_id).await;
    assert_eq!((r.progress, r.current_step.as_deref()), (60, None));
    assert!(matches!(
        h.backend.progress(&lease.to_ref(), 101, None).await,
        Err(Error::InvalidArgument { .. })
    ));
}

/// A partial outcome ends `partial` with its details and error.
pub async fn partial_outcome_keeps_details(h: &Harness) {
    let a = enqueue(h, job(1).unique_key("book-9")).await;
    let lease = claim_one(h).await;
    let details = json!({ "failed_steps": { "audio_generation": "espeak-ng not installed" } });
    let status = finish(
        h,
        &lease,
        Outcome::Partial {
            result: Some(details.clone()),
            error: "audio_generation failed".into(),
        },
    )
    .await;
    assert_eq!(status, JobStatus::Partial);
    let r = get(h, a.job_id).await;
    assert_eq!(r.status, JobStatus::Partial);
    assert_eq!(r.result, Some(details));
    assert_eq!(r.error_message.as_deref(), Some("audio_generation failed"));
    assert_eq!(r.progress, 100);
    assert!(r.completed_at.is_some());
    enqueue(h, job(2).unique_key("book-9")).await;
}

/// A job handed back by a stopping worker keeps its place and uses no attempt.
pub async fn release_uses_no_attempt(h: &Harness) {
    let a = enqueue(h, job(1)).await;
    enqueue(h, job(2)).await;
    let lease = claim_one(h).await;
    assert_eq!(
        finish(h, &lease, Outcome::Released).await,
        JobStatus::Queued
    );
    let r = get(h, a.job_id).await;
    assert_eq!(
        (r.status, r.retry_count, r.worker_id.as_deref()),
        (JobStatus::Queued, 0, None)
    );
    let order: Vec<u64> = fetch(h, 10).await.iter().map(|l| n_of(&l.job)).collect();
    assert_eq!(order, [1, 2]);
}

/// Stats after a run of every kind of outcome.
pub async fn stats_after_mixed_run(h: &Harness) {
    for (n, p) in [
        (1, Priority::High),
        (2, Priority::Normal),
        (3, Priority::Normal),
        (4, Priority::Normal),
    ] {
        enqueue(h, job(n).priority(p)).await;
    }
    let leases = fetch(h, 4).await; // 1, 2, 3, 4
    finish(h, &leases[0], completed()).await;
    finish(h, &leases[1], Outcome::Failed { error: "x".into() }).await;
    finish(
        h,
        &leases[2],
        Outcome::Partial {
            result: None,
            error: "y".into(),
        },
    )
    .await;
    // leases[3] stays processing.
    let cancelled = enqueue(h, job(5)).await;
    h.backend.cancel(cancelled.job_id).await.unwrap();
    for (n, p) in [
        (6, Priority::High),
        (7, Priority::Low),
        (8, Priority::Low),
        (9, Priority::Normal),
    ] {
        enqueue(h, job(n).priority(p)).await;
    }
    enqueue(h, job(10).delay(Duration::from_secs(60))).await;
    let s = h.backend.stats().await.unwrap();
    assert_eq!(s.total, 10);
    assert_eq!((s.queued, s.scheduled, s.processing), (5, 1, 1));
    assert_eq!(
        (s.completed, s.failed, s.partial, s.cancelled),
        (1, 1, 1, 1)
    );
    assert_eq!(s.depth[&Priority::High], 1);
    assert_eq!(s.depth[&Priority::Normal], 1);
    assert_eq!(s.depth[&Priority::Low], 2);
    assert_eq!(s.totals.enqueued, 10);
    assert_eq!(
        (
            s.totals.completed,
            s.totals.failed,
            s.totals.partial,
            s.totals.cancelled
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(s.active_workers, 0);
}

/// Listing by status and by unique key, newest first, paginated without gaps or repeats.
pub async fn list_by_status_and_unique_key(h: &Harness) {
    let mut book1 = Vec::new();
    for n in 0..3 {
        let r = enqueue(h, job(n).unique_key("book-1")).await;
        book1.push(r.job_id);
        h.advance(Duration::from_millis(5));
        let lease = claim_one(h).await;
        finish(h, &lease, completed()).await;
    }
    let mut others = Vec::new();
    for n in 10..14 {
        others.push(
            enqueue(h, job(n).unique_key(format!("book-{n}")))
                .await
                .job_id,
        );
        h.advance(Duration::from_millis(5));
    }
    let mut all_ids: Vec<JobId> = book1.iter().chain(&others).copied().collect();
    all_ids.reverse(); // newest first

    let mut seen = Vec::new();
    let mut query = ListQuery::new().limit(3);
    loop {
        let page = h.backend.list(&query).await.unwrap();
        assert!(page.jobs.len() <= 3);
        seen.extend(page.jobs.iter().map(|r| r.job_id));
        match page.next_cursor {
            Some(c) => query = query.cursor(c),
            None => break,
        }
    }
    assert_eq!(seen, all_ids, "all jobs, newest first, each once");

    let done = h
        .backend
        .list(&ListQuery::new().status(JobStatus::Completed))
        .await
        .unwrap();
    let done_ids: Vec<JobId> = done.jobs.iter().map(|r| r.job_id).collect();
    assert_eq!(done_ids, book1.iter().rev().copied().collect::<Vec<_>>());
    assert_eq!(done.next_cursor, None);
    let queued = h
        .backend
        .list(&ListQuery::new().status(JobStatus::Queued).limit(2))
        .await
        .unwrap();
    assert_eq!(
        queued.jobs.iter().map(|r| r.job_id).collect::<Vec<_>>(),
        [others[3], others[2]]
    );
    assert!(queued.next_cursor.is_some());

    let history = h
        .backend
        .list(&ListQuery::new().unique_key("book-1").limit(2))
        .await
        .unwrap();
    assert_eq!(
        history.jobs.iter().map(|r| r.job_id).collect::<Vec<_>>(),
        [book1[2], book1[1]]
    );
    let rest = h
        .backend
        .list(
            &ListQuery::new()
                .unique_key("book-1")
                .limit(2)
                .cursor(history.next_cursor.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(
        rest.jobs.iter().map(|r| r.job_id).collect::<Vec<_>>(),
        [book1[0]]
    );
    assert_eq!(rest.next_cursor, None);
    let filtered = h
        .backend
        .list(
            &ListQuery::new()
                .unique_key("book-10")
                .status(JobStatus::Completed),
        )
        .await
        .unwrap();
    assert!(filtered.jobs.is_empty());
    let none = h
        .backend
        .list(&ListQuery::new().unique_key("no-such-book"))
        .await
        .unwrap();
    assert!(none.jobs.is_empty() && none.next_cursor.is_none());
}

/// Jobs created in the same millisecond page by id, newest first, without repeats.
pub async fn list_pages_through_ties(h: &Harness) {
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(enqueue(h, job(n)).await.job_id);
    }
    ids.sort();
    ids.reverse();
    let mut seen = Vec::new();
    let mut query = ListQuery::new().limit(2);
    loop {
        let page = h.backend.list(&query).await.unwrap();
        seen.extend(page.jobs.iter().map(|r| r.job_id));
        match page.next_cursor {
            Some(c) => query = query.cursor(c),
            None => break,
        }
    }
    assert_eq!(seen, ids);
}

/// Every job and one finished status list a finished job by when it finished, newest first
/// (`queue_core::backend::listed_at`): the latest failure comes first however old its job,
/// pages stay whole; a retried job is listed by its creation again, one unique key's history
/// stays by creation. Retention counts from the finish too: an old job that finished
/// recently is kept.
pub async fn finished_jobs_list_by_when_they_finished(h: &Harness) {
    let old = enqueue(h, job(1).unique_key("book-f")).await;
    h.advance(Duration::from_secs(3000));
    let young = enqueue(h, job(2)).await;
    h.advance(Duration::from_millis(5));
    let queued = enqueue(h, job(3).priority(Priority::Low)).await;
    let leases = fetch(h, 2).await;
    assert_eq!(leases.len(), 2);
    let lease_of = |id: JobId| leases.iter().find(|l| l.job.job_id == id).unwrap();
    h.advance(Duration::from_millis(5));
    finish(
        h,
        lease_of(young.job_id),
        Outcome::Failed { error: "x".into() },
    )
    .await;
    h.advance(Duration::from_millis(5));
    finish(
        h,
        lease_of(old.job_id),
        Outcome::Failed { error: "y".into() },
    )
    .await;
    let ids = |page: &Page| page.jobs.iter().map(|r| r.job_id).collect::<Vec<_>>();
    let failed = h
        .backend
        .list(&ListQuery::new().status(JobStatus::Failed))
        .await
        .unwrap();
    assert_eq!(
        ids(&failed),
        [old.job_id, young.job_id],
        "the latest failure first"
    );
    // Every job: the two failures (listed when they failed, after `queued` was created).
    let mut seen = Vec::new();
    let mut query = ListQuery::new().limit(1);
    loop {
        let page = h.backend.list(&query).await.unwrap();
        seen.extend(ids(&page));
        match page.next_cursor {
            Some(c) => query = query.cursor(c),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [old.job_id, young.job_id, queued.job_id],
        "pages of one"
    );
    // One unique key's history goes by creation.
    let history = h
        .backend
        .list(&ListQuery::new().unique_key("book-f"))
        .await
        .unwrap();
    assert_eq!(ids(&history), [old.job_id]);
    // Retried, `young` is queued again: listed by its creation, among the queued.
    h.backend.retry(young.job_id, None).await.unwrap();
    let all = h.backend.list(&ListQuery::new()).await.unwrap();
    assert_eq!(ids(&all), [old.job_id, queued.job_id, young.job_id]);
    // Retention (an hour in the harness) counts from the finish: `old` was created 50
    // minutes before it failed, so 20 minutes later it is still kept.
    h.advance(Duration::from_secs(1200));
    assert_eq!(
        h.backend.sweep(100).await.unwrap(),
        0,
        "finished 20 minutes ago"
    );
    h.backend.get(old.job_id).await.unwrap();
    h.advance(Duration::from_secs(2401));
    assert_eq!(h.backend.sweep(100).await.unwrap(), 1);
    assert!(matches!(
        h.backend.get(old.job_id).await,
        Err(Error::NotFound { .. })
    ));
}

/// Bulk actions act on what the filter matches, once each, in bounded steps that resume
/// from a cursor: a dry run counts, an interrupted pass goes on where it stopped, a job the
/// action cannot apply to is refused with the reason, a bad filter names what is wrong.
pub async fn bulk_actions_resume_and_act_once(h: &Harness) {
    use queue_core::{BulkAction, BulkActions, BulkFilter, BulkRequest, BulkStep};
    let t0 = h.clock.now();
    let mut books = Vec::new();
    for n in 1..=5 {
        books.push(
            enqueue(h, job(n).unique_key(format!("book-{n}")))
                .await
                .job_id,
        );
    }
    let old9 = enqueue(h, job(9).unique_key("book-9")).await.job_id;
    h.advance(Duration::from_secs(1));
    let t1 = h.clock.now();
    let mut mags = Vec::new();
    for n in 1..=3 {
        let j = NewJob::new("other", &json!({ "n": n }))
            .unwrap()
            .unique_key(format!("mag-{n}"));
        mags.push(enqueue(h, j).await.job_id);
    }
    let leases = fetch(h, 20).await;
    assert_eq!(leases.len(), 9);
    for lease in &leases {
        finish(h, lease, Outcome::Failed { error: "x".into() }).await;
    }
    let new9 = enqueue(h, job(10).unique_key("book-9")).await.job_id;
    let plain = enqueue(h, job(11)).await.job_id;
    // Runs a pass to the end, `limit` jobs per step, from `cursor`.
    let pass = async |mut req: BulkRequest| {
        let mut total = BulkStep::default();
        loop {
            let step = h.backend.bulk(&req).await.expect("bulk step");
            assert!(step.examined <= req.limit);
            total.examined += step.examined;
            total.matched += step.matched;
            total.done += step.done;
            total.refused.extend(step.refused);
            match step.next_cursor {
                Some(c) => req.cursor = Some(c),
                None => return total,
            }
        }
    };
    // A dry run counts the failed jobs created before `mags`, and changes nothing.
    let filter = BulkFilter::new()
        .status(JobStatus::Failed)
        .created(Some(t0), Some(t1));
    let mut req = BulkRequest::new(BulkAction::Retry, filter);
    req.limit = 2;
    req.dry_run = true;
    let counted = pass(req).await;
    assert_eq!((counted.matched, counted.done), (6, 0));
    assert_eq!(h.backend.stats().await.unwrap().failed, 9);
    // Retry the books: one step, then (as after an interruption) the rest from its cursor.
    let books_only = BulkFilter::new()
        .status(JobStatus::Failed)
        .unique_key_prefix("book-");
    let mut req = BulkRequest::new(BulkAction::Retry, books_only);
    req.limit = 2;
    let first = h.backend.bulk(&req).await.unwrap();
    assert_eq!(first.examined, 2);
    req.cursor = first.next_cursor.clone();
    assert!(req.cursor.is_some());
    let rest = pass(req).await;
    assert_eq!(first.done + rest.done, 5, "each book retried once");
    let refused: Vec<JobId> = first
        .refused
        .iter()
        .chain(&rest.refused)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(refused, [old9], "book-9 is held by a newer job");
    let why = &rest.refused.iter().chain(&first.refused).next().unwrap().1;
    assert!(why.contains("book-9"), "{why}");
    for id in &books {
        assert_eq!(get(h, *id).await.status, JobStatus::Queued);
    }
    for id in &mags {
        assert_eq!(get(h, *id).await.status, JobStatus::Failed);
    }
    assert_eq!(get(h, old9).await.status, JobStatus::Failed);
    // Cancel every queued book, three per step: the five retried and the new book-9.
    let mut req = BulkRequest::new(
        BulkAction::Cancel,
        BulkFilter::new()
            .status(JobStatus::Queued)
            .unique_key_prefix("book-"),
    );
    req.limit = 3;
    let cancelled = pass(req).await;
    assert_eq!((cancelled.matched, cancelled.done), (6, 6));
    assert_eq!(get(h, new9).await.status, JobStatus::Cancelled);
    assert_eq!(
        get(h, plain).await.status,
        JobStatus::Queued,
        "no unique key"
    );
    // Bad requests name what is wrong.
    let mut bad = BulkRequest::new(BulkAction::Retry, BulkFilter::new());
    bad.limit = 0;
    let err = h.backend.bulk(&bad).await.unwrap_err().to_string();
    assert!(err.contains("limit"), "{err}");
    let backwards = BulkRequest::new(
        BulkAction::Retry,
        BulkFilter::new().created(Some(t1), Some(t0)),
    );
    let err = h.backend.bulk(&backwards).await.unwrap_err().to_string();
    assert!(err.contains("created_before"), "{err}");
}

/// Deleting finished records on request: each index forgets the job (its status, its
/// unique key's history, its parent's children), a live job or a child an unfinished parent
/// will read is refused, and a bulk delete by filter goes step by step.
pub async fn delete_finished_records(h: &Harness) {
    use queue_core::{BulkAction, BulkActions, BulkFilter, BulkRequest};
    let done = enqueue(h, job(1).unique_key("book-d")).await.job_id;
    let lease = claim_one(h).await;
    finish(h, &lease, completed()).await;
    let again = enqueue(h, job(2).unique_key("book-d")).await.job_id;
    let running = claim_one(h).await;
    let queued = enqueue(h, job(3)).await.job_id;
    let root = enqueue_flow(h, flow(10).child(flow(11)).child(flow(12))).await;
    let first_child = claim_n(h, 11).await;
    finish(h, &first_child, completed()).await;
    // Refused: running, queued, a finished child its waiting parent will read.
    for (id, why) in [
        (again, "not finished"),
        (queued, "not finished"),
        (first_child.job.job_id, "parent"),
    ] {
        match h.backend.delete(id).await {
            Err(Error::NotDeletable {
                id: refused,
                reason,
            }) => {
                assert_eq!(refused, id);
                assert!(reason.contains(why), "{reason}");
            }
            other => panic!("delete of {id}: {other:?}"),
        }
    }
    assert_eq!(
        get(h, first_child.job.job_id).await.status,
        JobStatus::Completed
    );
    // The finished record goes from every listing; the live job with its key stays.
    let deleted = h.backend.delete(done).await.expect("deleted");
    assert_eq!(
        (deleted.job_id, deleted.status),
        (done, JobStatus::Completed)
    );
    assert!(matches!(
        h.backend.get(done).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        h.backend.delete(done).await,
        Err(Error::NotFound { .. })
    ));
    let history = h
        .backend
        .list(&ListQuery::new().unique_key("book-d"))
        .await
        .unwrap();
    assert_eq!(
        history.jobs.iter().map(|j| j.job_id).collect::<Vec<_>>(),
        [again]
    );
    let completed_listed = h
        .backend
        .list(&ListQuery::new().status(JobStatus::Completed))
        .await
        .unwrap();
    assert_eq!(
        completed_listed
            .jobs
            .iter()
            .map(|j| j.job_id)
            .collect::<Vec<_>>(),
        [first_child.job.job_id]
    );
    let s = h.backend.stats().await.unwrap();
    assert_eq!(
        (s.completed, s.totals.completed),
        (1, 2),
        "lifetime totals stay"
    );
    // The key's holder ends; with no record left, the key is free for a new job.
    finish(h, &running, Outcome::Failed { error: "x".into() }).await;
    h.backend.delete(again).await.expect("failed job deleted");
    enqueue(h, job(4).unique_key("book-d")).await;
    // The flow ends; then its records go, the parent's children list with them.
    for n in [12, 10] {
        let lease = claim_n(h, n).await;
        finish(h, &lease, completed()).await;
    }
    h.backend.delete(root.job_id).await.expect("parent deleted");
    h.backend
        .delete(first_child.job.job_id)
        .await
        .expect("child deleted");
    // Bulk: a dry run counts the completed jobs, then they go two per step.
    let mut req = BulkRequest::new(
        BulkAction::Delete,
        BulkFilter::new().status(JobStatus::Completed),
    );
    req.limit = 2;
    req.dry_run = true;
    let counted = h.backend.bulk(&req).await.unwrap();
    assert_eq!((counted.matched, counted.done), (1, 0));
    req.dry_run = false;
    let step = h.backend.bulk(&req).await.unwrap();
    assert_eq!((step.matched, step.done, step.next_cursor), (1, 1, None));
    let left = h.backend.list(&ListQuery::new()).await.unwrap();
    let mut statuses: Vec<JobStatus> = left.jobs.iter().map(|j| j.status).collect();
    statuses.sort_by_key(|s| s.as_str());
    assert_eq!(statuses, [JobStatus::Queued, JobStatus::Queued], "{left:?}");
    assert_eq!(h.backend.stats().await.unwrap().total, 2);
}

/// Each unsuccessful attempt is kept on the record (when, which worker, what error, how
/// long), across an expired lease and a manual retry; a success adds none.
pub async fn attempt_history_is_kept(h: &Harness) {
    let id = enqueue(h, job(1).max_retries(1)).await.job_id;
    let t0 = h.clock.now();
    let lease = h
        .backend
        .fetch(&req("w-a", 1), Duration::ZERO)
        .await
        .unwrap();
    h.advance(Duration::from_secs(3));
    let retry = Outcome::Retry {
        error: "timeout talking to the printer".into(),
        delay: Duration::ZERO,
    };
    assert_eq!(finish(h, &lease[0], retry).await, JobStatus::Queued);
    let t1 = h.clock.now();
    let lease = h
        .backend
        .fetch(&req("w-b", 1), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(lease.len(), 1);
    h.advance(LEASE + Duration::from_secs(1));
    assert_eq!(h.backend.reap(10).await.unwrap(), [id]);
    let t2 = h.clock.now();
    let r = get(h, id).await;
    assert_eq!(r.status, JobStatus::Failed, "no retries left");
    let a = &r.attempts;
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(
        (
            a[0].attempt,
            a[0].started_at,
            a[0].ended_at,
            a[0].worker_id.as_deref()
        ),
        (1, Some(t0), t1, Some("w-a"))
    );
    assert_eq!(
        a[0].error.as_deref(),
        Some("timeout talking to the printer")
    );
    assert_eq!(a[0].duration(), Some(chrono::Duration::seconds(3)));
    assert_eq!(
        (
            a[1].attempt,
            a[1].started_at,
            a[1].ended_at,
            a[1].worker_id.as_deref()
        ),
        (2, Some(t1), t2, Some("w-b"))
    );
    assert!(
        a[1].error
            .as_deref()
            .unwrap_or("")
            .contains("lease expired"),
        "{a:?}"
    );
    // A manual retry keeps the story; its failure is attempt 3, its success adds nothing.
    h.backend.retry(id, None).await.unwrap();
    assert_eq!(get(h, id).await.attempts.len(), 2);
    let lease = claim_one(h).await;
    finish(
        h,
        &lease,
        Outcome::Failed {
            error: "bad page 7".into(),
        },
    )
    .await;
    h.backend.retry(id, None).await.unwrap();
    let lease = claim_one(h).await;
    finish(h, &lease, completed()).await;
    let r = get(h, id).await;
    assert_eq!(r.status, JobStatus::Completed);
    let numbers: Vec<(u32, Option<&str>)> = r
        .attempts
        .iter()
        .map(|a| (a.attempt, a.error.as_deref()))
        .collect();
    assert_eq!(numbers[2], (3, Some("bad page 7")));
    assert_eq!(numbers.len(), 3);
    // A job that succeeds at once has no history.
    let ok = enqueue(h, job(2)).await.job_id;
    let lease = claim_one(h).await;
    finish(h, &lease, completed()).await;
    assert!(get(h, ok).await.attempts.is_empty());
}

/// The charts' series: per interval, what the lifetime counters counted, how long jobs
/// waited to start and ran, and the depth a heartbeat sampled; each span shows only its
/// window.
pub async fn series_count_what_happened(h: &Harness) {
    use queue_core::SeriesSpan;
    use queue_core::series::{LATENCY_BOUNDS_MS, latency_bin, percentile};
    let sum = |s: &queue_core::Series, counter: &str| -> u64 {
        s.points.iter().map(|p| p.count(counter)).sum()
    };
    let hist = |s: &queue_core::Series, wait: bool| -> Vec<u64> {
        let mut out = vec![0; LATENCY_BOUNDS_MS.len() + 1];
        for p in &s.points {
            let h = if wait { &p.wait } else { &p.run };
            for (o, n) in out.iter_mut().zip(h) {
                *o += n;
            }
        }
        out
    };
    let empty = h.backend.series(SeriesSpan::Hour).await.unwrap();
    assert_eq!((empty.points.len(), empty.step_ms), (60, 60_000));
    assert_eq!(sum(&empty, "enqueued"), 0);
    enqueue(h, job(1)).await;
    enqueue(h, job(2).max_retries(0)).await;
    enqueue(
        h,
        job(3)
            .priority(Priority::High)
            .delay(Duration::from_secs(600)),
    )
    .await;
    enqueue(h, job(4).priority(Priority::Low)).await;
    h.advance(Duration::from_secs(2));
    let leases = fetch(h, 2).await;
    assert_eq!(leases.len(), 2);
    h.advance(Duration::from_millis(300));
    finish(h, &leases[0], completed()).await;
    finish(h, &leases[1], Outcome::Failed { error: "x".into() }).await;
    h.backend.heartbeat(&beat("w1"), &[]).await.unwrap();
    for span in SeriesSpan::ALL {
        let s = h.backend.series(span).await.unwrap();
        assert_eq!(s.points.len(), span.points());
        assert!(
            s.points
                .windows(2)
                .all(|w| w[1].at - w[0].at == chrono::Duration::milliseconds(span.step_ms()))
        );
        let counts: Vec<u64> = ["enqueued", "completed", "failed", "retried"]
            .iter()
            .map(|c| sum(&s, c))
            .collect();
        assert_eq!(counts, [4, 1, 1, 0], "{span:?}");
        let waits = hist(&s, true);
        assert_eq!(waits[latency_bin(2000)], 2, "{span:?}: {waits:?}");
        assert_eq!(waits.iter().sum::<u64>(), 2);
        let runs = hist(&s, false);
        assert_eq!(runs[latency_bin(300)], 2, "{span:?}: {runs:?}");
        assert_eq!(percentile(&runs, 0.99), Some(500));
        // The heartbeat's sample is in the current interval.
        let last = s.points.last().unwrap();
        let g = |name: &str| last.gauges.get(name).copied();
        assert_eq!(
            (
                g("g_high"),
                g("g_normal"),
                g("g_low"),
                g("g_scheduled"),
                g("g_running")
            ),
            (Some(0), Some(0), Some(1), Some(1), Some(0)),
            "{span:?}: {last:?}"
        );
    }
    // Two hours on, the hour's window is empty and the day's still holds it all.
    h.advance(Duration::from_secs(2 * 3600));
    assert_eq!(
        sum(
            &h.backend.series(SeriesSpan::Hour).await.unwrap(),
            "enqueued"
        ),
        0
    );
    assert_eq!(
        sum(
            &h.backend.series(SeriesSpan::Day).await.unwrap(),
            "enqueued"
        ),
        4
    );
    h.advance(Duration::from_secs(24 * 3600));
    assert_eq!(
        sum(
            &h.backend.series(SeriesSpan::Day).await.unwrap(),
            "completed"
        ),
        0
    );
}

/// Retention removes finished records from every index and leaves live jobs alone.
pub async fn retention_removes_from_every_index(h: &Harness) {
    let done = enqueue(h, job(1).unique_key("book-r")).await;
    let lease = claim_one(h).await;
    finish(h, &lease, completed()).await;
    let failed = enqueue(h, job(2)).await;
    let lease = claim_one(h).await;
    finish(h, &lease, Outcome::Failed { error: "x".into() }).await;
    let cancelled = enqueue(h, job(3)).await;
    h.backend.cancel(cancelled.job_id).await.unwrap();
    let waiting = enqueue(h, job(4).priority(Priority::Low)).await;
    let running = enqueue(h, job(5)).await;
    h.advance(Duration::from_secs(1800));
    let young = enqueue(h, job(6)).await;
    let lease = fetch(h, 10).await; // running + young
    assert_eq!(lease.len(), 3);
    let young_lease = lease.iter().find(|l| l.job.job_id == young.job_id).unwrap();
    finish(h, young_lease, completed()).await;
    let _ = (&waiting, &running);
    assert_eq!(
        h.backend.sweep(100).await.unwrap(),
        0,
        "nothing is old enough yet"
    );
    h.advance(Duration::from_secs(1801));
    assert_eq!(h.backend.sweep(100).await.unwrap(), 3);
    for id in [done.job_id, failed.job_id, cancelled.job_id] {
        assert!(matches!(
            h.backend.get(id).await,
            Err(Error::NotFound { .. })
        ));
    }
    assert!(
        h.backend
            .list(&ListQuery::new().unique_key("book-r"))
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    assert!(
        h.backend
            .list(&ListQuery::new().status(JobStatus::Completed))
            .await
            .unwrap()
            .jobs
            .len()
            == 1
    );
    let all: HashSet<JobId> = h
        .backend
        .list(&ListQuery::new())
        .await
        .unwrap()
        .jobs
        .iter()
        .map(|r| r.job_id)
        .collect();
    assert_eq!(
        all,
        HashSet::from([waiting.job_id, running.job_id, young.job_id])
    );
    let s = h.backend.stats().await.unwrap();
    assert_eq!(
        (s.total, s.completed, s.failed, s.cancelled, s.processing),
        (3, 1, 0, 0, 2)
    );
    assert_eq!(s.totals.completed, 2, "lifetime totals survive retention");
    assert_eq!(h.backend.sweep(100).await.unwrap(), 0);
    enqueue(h, job(7).unique_key("book-r")).await;
}

/// Manual retry of failed, partial and cancelled jobs, with a new priority; refused for
/// completed and active jobs, and while another job holds the unique key.
pub async fn manual_retry(h: &Harness) {
    let a = enqueue(h, job(1).unique_key("book-m").max_retries(0)).await;
    let lease = claim_one(h).await;
    finish(h, &lease, retry(1)).await;
    assert_eq!(get(h, a.job_id).await.status, JobStatus::Failed);
    enqueue(h, job(2)).await; // normal, queued before the retry
    let r = h
        .backend
        .retry(a.job_id, Some(Priority::High))
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.priority, r.retry_count),
        (JobStatus::Queued, Priority::High, 0)
    );
    assert_eq!(
        (r.error_message.as_deref(), r.completed_at, r.progress),
        (None, None, 0)
    );
    let first = claim_one(h).await;
    assert_eq!(
        first.job.job_id, a.job_id,
        "the retried job jumps ahead at high priority"
    );
    assert!(matches!(
        h.backend.retry(a.job_id, None).await,
        Err(Error::InvalidTransition { .. })
    ));
    finish(h, &first, completed()).await;
    match h.backend.retry(a.job_id, None).await.unwrap_err() {
        Error::InvalidTransition { from, .. } => assert_eq!(from, JobStatus::Completed),
        other => panic!("expected InvalidTransition, got {other:?}"),
    }
    // Partial and cancelled can be retried.
    let lease = claim_one(h).await;
    finish(
        h,
        &lease,
        Outcome::Partial {
            result: None,
            error: "p".into(),
        },
    )
    .await;
    assert_eq!(
        h.backend
            .retry(lease.job.job_id, None)
            .await
            .unwrap()
            .priority,
        Priority::Normal
    );
    let c = enqueue(h, job(3).unique_key("book-c")).await;
    h.backend.cancel(c.job_id).await.unwrap();
    // Someone else took the key meanwhile: refused, naming them.
    let taker = enqueue(h, job(4).unique_key("book-c")).await;
    match h.backend.retry(c.job_id, None).await.unwrap_err() {
        Error::AlreadyExists { job_id, .. } => assert_eq!(job_id, taker.job_id),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert!(matches!(
        h.backend.retry(JobId::new(), None).await,
        Err(Error::NotFound { .. })
    ));
}

/// A subscriber sees every transition of a job, in order, with progress and cancel requests.
pub async fn subscriber_sees_every_transition(h: &Harness) {
    let mut events = h.backend.subscribe().await.unwrap();
    let a = enqueue(h, job(1)).await;
    let lease = claim_one(h).await;
    h.backend
        .progress(&lease.to_ref(), 50, Some("half".into()))
        .await
        .unwrap();
    finish(h, &lease, completed()).await;
    let b = enqueue(h, job(2)).await;
    let lease = claim_one(h).await;
    finish(h, &lease, retry(1)).await;
    h.advance(Duration::from_secs(1));
    let lease = claim_one(h).await;
    h.backend.cancel(b.job_id).await.unwrap();
    finish(h, &lease, Outcome::Cancelled).await;

    use JobStatus::*;
    let t = |from: Option<JobStatus>, to| EventKind::Transition { from, to };
    let want_a = vec![
        t(None, Queued),
        t(Some(Queued), Processing),
        EventKind::Progress {
            progress: 50,
            step: Some("half".into()),
        },
        t(Some(Processing), Completed),
    ];
    let want_b = vec![
        t(None, Queued),
        t(Some(Queued), Processing),
        t(Some(Processing), Queued),
        t(Some(Queued), Processing),
        EventKind::CancelRequested,
        t(Some(Processing), Cancelled),
    ];
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    while got_a.len() < want_a.len() || got_b.len() < want_b.len() {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap_or_else(|_| panic!("missing events: a={got_a:?} b={got_b:?}"))
            .expect("stream ended");
        if event.job_id == a.job_id {
            got_a.push(event.kind);
        } else if event.job_id == b.job_id {
            got_b.push(event.kind);
        }
    }
    assert_eq!(got_a, want_a);
    assert_eq!(got_b, want_b);
}

/// Concurrent fetchers never lease the same job twice.
pub async fn claims_are_exclusive(h: &Harness) {
    let jobs: Vec<NewJob> = (0..200).map(job).collect();
    for r in h.backend.enqueue_many(jobs).await.unwrap() {
        r.unwrap();
    }
    let fetchers: Vec<_> = (0..8)
        .map(|w| {
            let backend = Arc::clone(&h.backend);
            tokio::spawn(async move {
                let mut ids = Vec::new();
                loop {
                    let leases = backend
                        .fetch(&req(&format!("w{w}"), 7), Duration::ZERO)
                        .await
                        .unwrap();
                    if leases.is_empty() {
                        return ids;
                    }
                    ids.extend(leases.into_iter().map(|l| l.job.job_id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for f in fetchers {
        all.extend(f.await.unwrap());
    }
    let unique: HashSet<JobId> = all.iter().copied().collect();
    assert_eq!(all.len(), 200);
    assert_eq!(unique.len(), 200, "a job was leased twice");
}

/// Finishing a job can lease the next one in the same call.
pub async fn finish_claims_next(h: &Harness) {
    enqueue(h, job(1)).await;
    let b = enqueue(h, job(2)).await;
    let lease = claim_one(h).await;
    let done = h
        .backend
        .finish(&lease.to_ref(), completed(), Some(req("w1", 5)))
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    let next = done.next.expect("the next job is leased");
    assert_eq!(next.job.job_id, b.job_id);
    assert_eq!(next.job.status, JobStatus::Processing);
    let done = h
        .backend
        .finish(&next.to_ref(), completed(), Some(req("w1", 5)))
        .await
        .unwrap();
    assert!(done.next.is_none());
}

/// Several attempts end in one call, each answered on its own, and up to `max` next jobs
/// are leased; sent again, the call answers the same.
pub async fn finish_many_ends_each_and_claims_next(h: &Harness) {
    for n in 0..6 {
        enqueue(h, job(n)).await;
    }
    let leases = fetch(h, 3).await;
    let forged = LeaseRef {
        job_id: leases[2].job.job_id,
        token: LeaseToken::new("forged"),
    };
    let endings = vec![
        queue_core::backend::Ending {
            lease: leases[0].to_ref(),
            outcome: completed(),
        },
        queue_core::backend::Ending {
            lease: leases[1].to_ref(),
            outcome: retry(10),
        },
        queue_core::backend::Ending {
            lease: forged,
            outcome: completed(),
        },
    ];
    let next = req("w1", 2);
    let done = h
        .backend
        .finish_many(endings.clone(), Some(next.clone()))
        .await
        .unwrap();
    let statuses: Vec<_> = done
        .statuses
        .iter()
        .map(|r| r.as_ref().map(|s| *s).map_err(|e| e.to_string()))
        .collect();
    assert_eq!(statuses[0], Ok(JobStatus::Completed));
    assert_eq!(statuses[1], Ok(JobStatus::Queued));
    assert!(
        matches!(&done.statuses[2], Err(Error::LeaseLost { .. })),
        "{:?}",
        statuses[2]
    );
    let took: Vec<u64> = done.next.iter().map(|l| n_of(&l.job)).collect();
    assert_eq!(took, [3, 4], "up to max, in order");
    let again = h.backend.finish_many(endings, Some(next)).await.unwrap();
    assert_eq!(
        again
            .statuses
            .iter()
            .map(|r| r.as_ref().ok().copied())
            .collect::<Vec<_>>(),
        [Some(JobStatus::Completed), Some(JobStatus::Queued), None]
    );
    let tokens = |l: &[Lease]| l.iter().map(|l| l.token.clone()).collect::<Vec<_>>();
    assert_eq!(tokens(&again.next), tokens(&done.next), "the same leases");
    let s = h.backend.stats().await.unwrap();
    assert_eq!((s.completed, s.processing, s.totals.completed), (1, 3, 1));
}

/// An idle fetch waits for work and returns as soon as a job arrives (no polling delay).
pub async fn fetch_waits_for_work(h: &Harness) {
    let backend = Arc::clone(&h.backend);
    let waiter =
        tokio::spawn(async move { backend.fetch(&req("w1", 1), Duration::from_secs(10)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let a = enqueue(h, job(1)).await;
    let leases = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("a waiting fetch must wake up when a job is enqueued")
        .unwrap()
        .unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].job.job_id, a.job_id);
    // With nothing to do, a fetch returns empty after its wait.
    let empty = h
        .backend
        .fetch(&req("w1", 1), Duration::from_millis(20))
        .await
        .unwrap();
    assert!(empty.is_empty());
}

/// The record of a completed job: times, worker, result, progress.
pub async fn completed_record_fields(h: &Harness) {
    let a = enqueue(
        h,
        job(7)
            .meta("source", "upload")
            .timeout(Duration::from_secs(90)),
    )
    .await;
    assert_eq!(a.task, "conformance");
    assert_eq!((a.progress, a.retry_count, a.started_at), (0, 0, None));
    assert_eq!(a.metadata.get("source"), Some(&json!("upload")));
    assert_eq!(a.timeout_ms, Some(90_000));
    h.advance(Duration::from_millis(1500));
    let lease = claim_one(h).await;
    assert_eq!(lease.job.worker_id.as_deref(), Some("w1"));
    assert_eq!(
        lease.job.started_at.map(to_millis),
        Some(to_millis(a.created_at) + 1500)
    );
    assert_eq!(
        to_millis(lease.expires_at),
        to_millis(a.created_at) + 1500 + 30_000
    );
    h.advance(Duration::from_millis(500));
    let status = finish(
        h,
        &lease,
        Outcome::Completed {
            result: Some(json!({ "words": 12 })),
        },
    )
    .await;
    assert_eq!(status, JobStatus::Completed);
    let r = get(h, a.job_id).await;
    assert_eq!(r.status, JobStatus::Completed);
    assert_eq!(r.progress, 100);
    assert_eq!(r.result, Some(json!({ "words": 12 })));
    assert_eq!(
        r.completed_at.map(to_millis),
        Some(to_millis(a.created_at) + 2000)
    );
    assert_eq!(r.worker_id, None);
    assert_eq!(r.payload.to_value(), json!({ "n": 7 }));
    assert_eq!(r.created_at, a.created_at);
}

/// Bad input is refused with a clear error and changes nothing.
pub async fn bad_input_is_refused(h: &Harness) {
    let missing = JobId::new();
    match h.backend.get(missing).await.unwrap_err() {
        Error::NotFound { id } => assert_eq!(id, missing),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        h.backend.enqueue(job(1).unique_key("")).await,
        Err(Error::InvalidArgument { .. })
    ));
    let no_task = NewJob::new(" ", &json!({})).unwrap();
    assert!(matches!(
        h.backend.enqueue(no_task).await,
        Err(Error::InvalidArgument { .. })
    ));
    let bad_cursor = ListQuery::new().cursor("garbage");
    match h.backend.list(&bad_cursor).await.unwrap_err() {
        Error::InvalidArgument { message } => assert!(message.contains("cursor"), "{message}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert!(matches!(
        h.backend.list(&ListQuery::new().limit(0)).await,
        Err(Error::InvalidArgument { .. })
    ));
    // Bounds: each refusal names the field, and nothing is stored.
    for (bad, field) in [
        (job(2).delay(Duration::from_secs(u64::MAX)), "delay"),
        (job(3).timeout(Duration::ZERO), "timeout"),
        (job(4).max_retries(u32::MAX), "max_retries"),
        (
            NewJob::new("conformance", &"x".repeat(2 << 20)).unwrap(),
            "payload",
        ),
    ] {
        match h.backend.enqueue(bad.clone()).await.unwrap_err() {
            Error::InvalidArgument { message } => {
                assert!(message.starts_with(field), "{field}: {message}")
            }
            other => panic!("{field}: expected InvalidArgument, got {other:?}"),
        }
        let batch = h.backend.enqueue_many(vec![bad, job(5)]).await.unwrap();
        assert!(matches!(batch[0], Err(Error::InvalidArgument { .. })));
        h.backend
            .cancel(batch[1].as_ref().unwrap().job_id)
            .await
            .unwrap();
    }
    let s = h.backend.stats().await.unwrap();
    assert_eq!((s.total, s.queued, s.cancelled), (4, 0, 4));
    h.backend.health().await.unwrap();
}

/// A claim sent again with the same request id (its reply was lost, or a client re-sent
/// it) answers the leases the first one took and still held, and takes nothing more.
pub async fn claim_sent_twice_takes_nothing_more(h: &Harness) {
    for n in 0..4 {
        enqueue(h, job(n)).await;
    }
    let request = req("w1", 2);
    let first = h.backend.fetch(&request, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), 2);
    let again = h.backend.fetch(&request, Duration::ZERO).await.unwrap();
    let tokens = |leases: &[Lease]| {
        let mut v: Vec<(JobId, LeaseToken)> = leases
            .iter()
            .map(|l| (l.job.job_id, l.token.clone()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        tokens(&again),
        tokens(&first),
        "the same leases, not new ones"
    );
    assert_eq!(h.backend.stats().await.unwrap().processing, 2);
    // Once one of them ended, the replay answers the other only.
    finish(h, &first[0], completed()).await;
    let again = h.backend.fetch(&request, Duration::ZERO).await.unwrap();
    assert_eq!(tokens(&again), tokens(&first[1..]));
    // A new request takes new jobs.
    assert_eq!(fetch(h, 10).await.len(), 2);
    assert_eq!(h.backend.stats().await.unwrap().processing, 3);
}

/// A worker's request history is forgotten when it deregisters; an old request id it then
/// sends again may have claimed twice. Sent again once more, it answers deterministically:
/// what it holds, oldest first, at most what it asks for (found by the model check).
pub async fn claim_replay_answers_oldest_first(h: &Harness) {
    let a = enqueue(h, job(1)).await;
    let b = enqueue(h, job(2)).await;
    let request = req("w1", 1);
    let first = h.backend.fetch(&request, Duration::ZERO).await.unwrap();
    assert_eq!(first[0].job.job_id, a.job_id);
    h.backend.deregister(&WorkerId::new("w1")).await.unwrap();
    h.advance(Duration::from_secs(1));
    let again = h.backend.fetch(&request, Duration::ZERO).await.unwrap();
    assert_eq!(
        again[0].job.job_id, b.job_id,
        "history forgotten: a new claim"
    );
    for _ in 0..3 {
        let replay = h.backend.fetch(&request, Duration::ZERO).await.unwrap();
        assert_eq!(replay.len(), 1, "at most what it asks for");
        assert_eq!(replay[0].token, first[0].token, "the oldest lease");
    }
}

/// A finish sent again after it was applied answers the same status (and the same next
/// lease) instead of `LeaseLost`; a different token still gets `LeaseLost`.
pub async fn finish_sent_twice_is_answered_once(h: &Harness) {
    let a = enqueue(h, job(1)).await;
    let b = enqueue(h, job(2)).await;
    let lease = claim_one(h).await;
    let next = req("w1", 1);
    let first = h
        .backend
        .finish(&lease.to_ref(), completed(), Some(next.clone()))
        .await
        .unwrap();
    assert_eq!(first.status, JobStatus::Completed);
    let next_lease = first.next.expect("the next job is leased");
    assert_eq!(next_lease.job.job_id, b.job_id);
    let again = h
        .backend
        .finish(&lease.to_ref(), completed(), Some(next))
        .await
        .unwrap();
    assert_eq!(again.status, JobStatus::Completed);
    let replayed = again.next.expect("the same next lease");
    assert_eq!(
        (replayed.job.job_id, replayed.token.clone()),
        (b.job_id, next_lease.token.clone())
    );
    let s = h.backend.stats().await.unwrap();
    assert_eq!((s.completed, s.processing, s.totals.completed), (1, 1, 1));
    let forged = LeaseRef {
        job_id: a.job_id,
        token: LeaseToken::new("forged"),
    };
    assert!(matches!(
        h.backend.finish(&forged, completed(), None).await,
        Err(Error::LeaseLost { .. })
    ));
}

/// A requested cancel wins over whatever the holder reports afterwards, success included:
/// the caller was told the job would be cancelled.
pub async fn cancel_wins_over_a_late_success(h: &Harness) {
    for (n, outcome) in [
        (
            1,
            Outcome::Completed {
                result: Some(json!({ "done": true })),
            },
        ),
        (
            2,
            Outcome::Partial {
                result: None,
                error: "audio".into(),
            },
        ),
        (3, Outcome::Released),
        (4, Outcome::Failed { error: "x".into() }),
    ] {
        let a = enqueue(h, job(n).unique_key("book-c")).await;
        let lease = claim_one(h).await;
        assert_eq!(
            h.backend.cancel(a.job_id).await.unwrap(),
            CancelOutcome::Requested
        );
        assert_eq!(finish(h, &lease, outcome).await, JobStatus::Cancelled);
        let r = get(h, a.job_id).await;
        assert_eq!((r.status, r.cancel_requested), (JobStatus::Cancelled, true));
        assert_eq!(r.result, None, "the late result is not stored");
        assert!(r.completed_at.is_some());
    }
    let s = h.backend.stats().await.unwrap();
    assert_eq!((s.cancelled, s.completed, s.queued), (4, 0, 0));
}

/// Cancelling a running job twice is answered `Requested` twice, with one
/// `cancel_requested` event.
pub async fn repeated_cancel_emits_one_event(h: &Harness) {
    let mut events = h.backend.subscribe().await.unwrap();
    let a = enqueue(h, job(1)).await;
    let lease = claim_one(h).await;
    for _ in 0..3 {
        assert_eq!(
            h.backend.cancel(a.job_id).await.unwrap(),
            CancelOutcome::Requested
        );
    }
    finish(h, &lease, Outcome::Cancelled).await;
    let mut requests = 0;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("events arrive")
            .expect("stream open");
        match event.kind {
            EventKind::CancelRequested => requests += 1,
            EventKind::Transition {
                to: JobStatus::Cancelled,
                ..
            } => break,
            _ => {}
        }
    }
    assert_eq!(requests, 1);
}

/// A heartbeat's reply names leases, not jobs: a stale lease of a job that the same worker
/// holds again under a new lease is reported lost without touching the new one.
pub async fn heartbeat_reply_names_leases(h: &Harness) {
    let a = enqueue(h, job(1)).await;
    let old = claim_one(h).await;
    assert_eq!(finish(h, &old, retry(0)).await, JobStatus::Queued);
    let new = claim_one(h).await;
    assert_eq!(new.job.job_id, a.job_id);
    let reply = h
        .backend
        .heartbeat(&beat("w1"), &[old.to_ref(), new.to_ref()])
        .await
        .unwrap();
    assert_eq!(reply.lost, vec![old.to_ref()]);
    assert!(reply.cancel.is_empty());
    h.backend.cancel(a.job_id).await.unwrap();
    let reply = h
        .backend
        .heartbeat(&beat("w1"), &[old.to_ref(), new.to_ref()])
        .await
        .unwrap();
    assert_eq!(
        (reply.lost, reply.cancel),
        (vec![old.to_ref()], vec![new.to_ref()])
    );
}

/// The sweep deletes any number of due records in bounded batches, never a live job,
/// and an id whose record was swept starts afresh.
pub async fn sweep_keeps_up_and_spares_live_jobs(h: &Harness) {
    let mut ids = Vec::new();
    for n in 0..25 {
        let r = enqueue(h, job(n).unique_key(format!("book-{n}"))).await;
        ids.push(r.job_id);
    }
    while let Some(lease) = fetch(h, 1).await.pop() {
        finish(h, &lease, completed()).await;
    }
    h.advance(Duration::from_secs(3601));
    let live = enqueue(h, job(99).unique_key("book-0")).await;
    let mut batches = Vec::new();
    loop {
        let n = h.backend.sweep(10).await.unwrap();
        batches.push(n);
        if n < 10 {
            break;
        }
    }
    assert_eq!(batches, [10, 10, 5]);
    let s = h.backend.stats().await.unwrap();
    assert_eq!((s.total, s.completed, s.queued), (1, 0, 1));
    assert_eq!(get(h, live.job_id).await.status, JobStatus::Queued);
    // A swept id can be used again: a new job, not the old record.
    let reused = enqueue(h, job(7).job_id(ids[3])).await;
    assert_eq!(
        (reused.status, reused.unique_key.as_deref()),
        (JobStatus::Queued, None)
    );
    assert_eq!(n_of(&reused), 7);
    h.advance(Duration::from_secs(7200));
    assert_eq!(h.backend.sweep(100).await.unwrap(), 0, "live jobs stay");
    assert_eq!(get(h, ids[3]).await.status, JobStatus::Queued);
    let history = h
        .backend
        .list(&ListQuery::new().unique_key("book-3"))
        .await
        .unwrap();
    assert!(
        history.jobs.is_empty(),
        "no index entry outlives its record"
    );
}

/// A retry delay beyond the limit (a handler's `retry_after`) is capped, never overflows.
pub async fn retry_after_is_capped(h: &Harness) {
    let a = enqueue(h, job(1)).await;
    let lease = claim_one(h).await;
    let outcome = Outcome::Retry {
        error: "come back much later".into(),
        delay: Duration::MAX,
    };
    assert_eq!(finish(h, &lease, outcome).await, JobStatus::Queued);
    let r = get(h, a.job_id).await;
    let due = to_millis(r.run_at.expect("delayed"));
    let limit = crate::suite_config("x").limits.delay;
    assert_eq!(
        due,
        to_millis(lease.job.started_at.unwrap()) + limit.as_millis() as i64
    );
}

/// A paused queue starts nothing: claims (also the next claim of a finish) answer nothing,
/// while enqueue, cancel, finish and lease expiry go on; resume lets jobs start again.
pub async fn pause_stops_starts_until_resume(h: &Harness) {
    let running = enqueue(h, job(1)).await;
    let lease = claim_one(h).await;
    assert_eq!(lease.job.job_id, running.job_id);
    let queued = enqueue(h, job(2)).await;
    assert!(!h.backend.stats().await.unwrap().paused);

    h.backend.pause().await.expect("pause");
    h.backend.pause().await.expect("pausing twice is fine");
    assert!(h.backend.stats().await.unwrap().paused);
    assert!(
        fetch(h, 10).await.is_empty(),
        "a paused queue starts nothing"
    );
    // Enqueues and cancels work while paused.
    let later = enqueue(h, job(3)).await;
    let cancelled = enqueue(h, job(4)).await;
    assert_eq!(
        h.backend.cancel(cancelled.job_id).await.unwrap(),
        CancelOutcome::Cancelled
    );
    // A running job finishes; the finish leases nothing next.
    let done = h
        .backend
        .finish(&lease.to_ref(), completed(), Some(req("w1", 5)))
        .await
        .expect("finish while paused");
    assert_eq!(done.status, JobStatus::Completed);
    assert!(done.next.is_none(), "no next job while paused");
    let stats = h.backend.stats().await.unwrap();
    assert_eq!((stats.queued, stats.processing, stats.completed), (2, 0, 1));

    h.backend.resume().await.expect("resume");
    h.backend.resume().await.expect("resuming twice is fine");
    assert!(!h.backend.stats().await.unwrap().paused);
    let ids: Vec<JobId> = fetch(h, 10).await.iter().map(|l| l.job.job_id).collect();
    assert_eq!(
        ids,
        vec![queued.job_id, later.job_id],
        "in order, none lost"
    );
}

/// An expired lease of a paused queue returns its job to the queue, where it waits.
pub async fn pause_keeps_recovered_jobs_queued(h: &Harness) {
    let a = enqueue(h, job(1)).await;
    let _lease = claim_one(h).await;
    h.backend.pause().await.unwrap();
    h.advance(LEASE + Duration::from_secs(1));
    assert_eq!(h.backend.reap(100).await.unwrap(), vec![a.job_id]);
    assert_eq!(get(h, a.job_id).await.status, JobStatus::Queued);
    assert!(fetch(h, 10).await.is_empty(), "still paused");
    h.backend.resume().await.unwrap();
    assert_eq!(claim_one(h).await.job.job_id, a.job_id);
}

/// A fetch waiting on a paused queue wakes when the queue resumes, without polling.
pub async fn resume_wakes_a_waiting_fetch(h: &Harness) {
    h.backend.pause().await.unwrap();
    let a = enqueue(h, job(1)).await;
    let backend = Arc::clone(&h.backend);
    let waiter =
        tokio::spawn(async move { backend.fetch(&req("w1", 1), Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiter.is_finished(),
        "a paused queue keeps the fetch waiting"
    );
    h.backend.resume().await.unwrap();
    let leases = tokio::time::timeout(Duration::from_secs(3), waiter)
        .await
        .expect("resume must wake a waiting fetch at once")
        .unwrap()
        .unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].job.job_id, a.job_id);
}

/// "Not now": a snoozed job waits its delay, then runs again, without using an attempt,
/// however often it snoozes (a job with no retries left snoozes too); a requested cancel
/// still wins; the delay is capped by the delay limit.
pub async fn snooze_uses_no_attempt(h: &Harness) {
    let a = enqueue(h, job(1).max_retries(0)).await;
    for round in 0..3 {
        let lease = claim_one(h).await;
        assert_eq!(lease.job.job_id, a.job_id);
        let status = finish(
            h,
            &lease,
            Outcome::Snoozed {
                delay: Duration::from_secs(30),
            },
        )
        .await;
        assert_eq!(status, JobStatus::Queued, "round {round}");
        let r = get(h, a.job_id).await;
        assert_eq!(
            (r.status, r.retry_count, r.worker_id.as_deref(), r.progress),
            (JobStatus::Queued, 0, None, 0),
            "round {round}"
        );
        let due = to_millis(r.run_at.expect("a due time"));
        assert_eq!(due, h.clock.now_ms() + 30_000, "round {round}");
        assert_eq!(h.backend.stats().await.unwrap().scheduled, 1);
        h.advance(Duration::from_secs(29));
        assert!(fetch(h, 10).await.is_empty(), "not before its delay");
        h.advance(Duration::from_secs(1));
    }
    // After three snoozes it still has its whole (empty) retry budget: it completes.
    let lease = claim_one(h).await;
    assert_eq!(finish(h, &lease, completed()).await, JobStatus::Completed);
    let totals = h.backend.stats().await.unwrap().totals;
    assert_eq!((totals.retried, totals.completed), (0, 1));

    // A requested cancel wins over a snooze.
    let b = enqueue(h, job(2)).await;
    let lease = claim_one(h).await;
    assert_eq!(
        h.backend.cancel(b.job_id).await.unwrap(),
        CancelOutcome::Requested
    );
    let status = finish(
        h,
        &lease,
        Outcome::Snoozed {
            delay: Duration::from_secs(5),
        },
    )
    .await;
    assert_eq!(status, JobStatus::Cancelled);
}

/// At most `max` starts in any window, over many windows and every way a job starts (a
/// fetch or a finish's next claim); held-back jobs start as the window slides; removing
/// the limit lets everything start.
pub async fn rate_limit_holds_over_many_windows(h: &Harness) {
    let limit = queue_core::RateLimit::new(3, Duration::from_secs(10)).unwrap();
    h.backend.set_rate_limit(Some(limit)).await.unwrap();
    assert_eq!(h.backend.stats().await.unwrap().rate_limit, Some(limit));
    for n in 0..40 {
        enqueue(h, job(n)).await;
    }
    let mut starts: Vec<i64> = Vec::new();
    let mut held: Vec<Lease> = Vec::new();
    for _second in 0..100 {
        let now = h.clock.now_ms();
        // Finish one held job asking for the next, then fetch more.
        if let Some(lease) = held.pop() {
            let done = h
                .backend
                .finish(&lease.to_ref(), completed(), Some(req("w1", 2)))
                .await
                .unwrap();
            starts.extend(done.next.iter().map(|_| now));
            held.extend(done.next);
        }
        let got = fetch(h, 10).await;
        starts.extend(got.iter().map(|_| now));
        held.extend(got);
        h.advance(Duration::from_secs(1));
    }
    for (i, start) in starts.iter().enumerate() {
        let in_window = starts[i..].iter().filter(|t| **t < start + 10_000).count();
        assert!(
            in_window <= 3,
            "{in_window} starts in the 10 s from {start}: {starts:?}"
        );
    }
    assert_eq!(
        starts.len(),
        30,
        "the limit allows 3 per 10 s over 100 s: {starts:?}"
    );
    let stats = h.backend.stats().await.unwrap();
    assert_eq!(stats.queued, 10, "the rest wait, none lost");
    h.backend.set_rate_limit(None).await.unwrap();
    assert_eq!(h.backend.stats().await.unwrap().rate_limit, None);
    assert_eq!(fetch(h, 20).await.len(), 10, "no limit: everything starts");
}

/// A fetch held back by the limit wakes as soon as the window allows, without polling.
pub async fn a_rate_limited_fetch_wakes_when_the_window_allows(h: &Harness) {
    let limit = queue_core::RateLimit::new(1, Duration::from_millis(400)).unwrap();
    h.backend.set_rate_limit(Some(limit)).await.unwrap();
    enqueue(h, job(1)).await;
    let b = enqueue(h, job(2)).await;
    assert_eq!(fetch(h, 10).await.len(), 1, "one start per window");
    let backend = Arc::clone(&h.backend);
    let waiter =
        tokio::spawn(async move { backend.fetch(&req("w2", 1), Duration::from_secs(20)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "held back by the limit");
    // The window slides on the backend's clock; the fetch was told when to look again
    // (a fetch that slept for its whole wait would take 20 s).
    h.advance(Duration::from_millis(400));
    let leases = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the fetch must wake when the window allows")
        .unwrap()
        .unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].job.job_id, b.job_id);
}

/// A handler that hit a limit outside the queue (a provider's 429) snoozes its job and
/// holds every start of the queue until the delay has passed, for every worker.
pub async fn a_rate_limited_job_holds_the_queue(h: &Harness) {
    let a = enqueue(h, job(1)).await;
    enqueue(h, job(2)).await;
    let c = enqueue(h, job(3)).await;
    let leases = fetch(h, 2).await;
    assert_eq!(leases.len(), 2);
    let t0 = h.clock.now_ms();
    let status = finish(
        h,
        &leases[0],
        Outcome::RateLimited {
            retry_after: Duration::from_secs(60),
        },
    )
    .await;
    assert_eq!(status, JobStatus::Queued);
    let r = get(h, a.job_id).await;
    assert_eq!(
        (r.status, r.retry_count),
        (JobStatus::Queued, 0),
        "no attempt used"
    );
    let stats = h.backend.stats().await.unwrap();
    assert_eq!(stats.held_until.map(to_millis), Some(t0 + 60_000));
    assert!(fetch(h, 10).await.is_empty(), "held: nothing starts");
    // The other running job finishes; its finish starts nothing either.
    let done = h
        .backend
        .finish(&leases[1].to_ref(), completed(), Some(req("w1", 5)))
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    assert!(done.next.is_none(), "held: no next job");
    h.advance(Duration::from_secs(59));
    assert!(fetch(h, 10).await.is_empty(), "held until 60 s");
    h.advance(Duration::from_secs(1));
    assert_eq!(h.backend.stats().await.unwrap().held_until, None);
    let order: Vec<JobId> = fetch(h, 10).await.iter().map(|l| l.job.job_id).collect();
    assert_eq!(
        order,
        vec![c.job_id, a.job_id],
        "the ready job, then the snoozed one"
    );
}

fn in_group(n: u32, group: &str) -> NewJob {
    job(n).group(group)
}

/// Fair share: within a priority the lanes (each group, and the jobs without one) take
/// turns, least recently served first (queue_core::GroupStats docs); a group with 1,000
/// queued jobs does not hold back a group with 3; batch fetches follow the same order;
/// priorities stay strict.
pub async fn groups_share_fairly(h: &Harness) {
    let big: Vec<NewJob> = (0..1000).map(|n| in_group(n, "big")).collect();
    for r in h.backend.enqueue_many(big).await.unwrap() {
        assert_eq!(r.unwrap().group.as_deref(), Some("big"));
    }
    for n in 1000..1003 {
        enqueue(h, in_group(n, "small")).await;
    }
    enqueue(h, job(2000)).await;
    enqueue(h, job(2001)).await;
    let stats = h.backend.stats().await.unwrap();
    assert_eq!(stats.depth[&Priority::Normal], 1005);
    let big_stats = h.backend.group("big").await.unwrap();
    assert_eq!((big_stats.ready, big_stats.running), (1000, 0));

    let mut order: Vec<u64> = Vec::new();
    order.extend(fetch(h, 1).await.iter().map(|l| n_of(&l.job)));
    order.extend(fetch(h, 3).await.iter().map(|l| n_of(&l.job)));
    order.extend(fetch(h, 4).await.iter().map(|l| n_of(&l.job)));
    assert_eq!(
        order,
        [2000, 0, 1000, 2001, 1, 1001, 2, 1002],
        "lanes take turns: no group, big, small, no group, ..."
    );
    let rest: Vec<u64> = fetch(h, 5).await.iter().map(|l| n_of(&l.job)).collect();
    assert_eq!(rest, [3, 4, 5, 6, 7], "one lane left: FIFO");
    let lease = &fetch(h, 1).await[0];
    assert_eq!(lease.job.group.as_deref(), Some("big"));
    assert_eq!(get(h, lease.job.job_id).await.group.as_deref(), Some("big"));

    // Strict priority between bands, whatever the groups.
    let urgent = enqueue(h, in_group(3000, "small").priority(Priority::High)).await;
    assert_eq!(claim_one(h).await.job.job_id, urgent.job_id);
    let big_stats = h.backend.group("big").await.unwrap();
    assert_eq!((big_stats.ready, big_stats.running), (991, 9));
    let small = h.backend.group("small").await.unwrap();
    assert_eq!((small.ready, small.running), (0, 4));
}

/// A group's concurrency limit holds across racing fetches of several workers, round
/// after round, and other groups are not held back by it.
pub async fn group_concurrency_holds_under_racing_fetches(h: &Harness) {
    h.backend
        .set_group_concurrency("g", Some(2))
        .await
        .expect("set the limit");
    assert_eq!(h.backend.group("g").await.unwrap().concurrency, Some(2));
    let jobs: Vec<NewJob> = (0..30)
        .map(|n| in_group(n, if n < 20 { "g" } else { "other" }))
        .collect();
    h.backend.enqueue_many(jobs).await.unwrap();
    let mut other_started = 0;
    for round in 0..5 {
        let mut racers = Vec::new();
        for w in 0..6 {
            let backend = Arc::clone(&h.backend);
            racers.push(tokio::spawn(async move {
                backend
                    .fetch(&req(&format!("racer-{round}-{w}"), 3), Duration::ZERO)
                    .await
                    .unwrap()
            }));
        }
        let mut leases = Vec::new();
        for r in racers {
            leases.extend(r.await.unwrap());
        }
        let in_g = leases
            .iter()
            .filter(|l| l.job.group.as_deref() == Some("g"))
            .count();
        assert_eq!(in_g, 2, "round {round}: exactly the limit of `g` runs");
        other_started += leases.len() - in_g;
        let g = h.backend.group("g").await.unwrap();
        assert_eq!(g.running, 2, "round {round}");
        assert!(
            fetch(h, 10).await.iter().all(|l| {
                other_started += 1;
                l.job.group.as_deref() != Some("g")
            }),
            "round {round}: no third job of `g`"
        );
        for lease in &leases {
            finish(h, lease, completed()).await;
        }
    }
    assert_eq!(other_started, 10, "the other group was never held back");
    assert_eq!(h.backend.group("g").await.unwrap().ready, 10);
    h.backend.set_group_concurrency("g", None).await.unwrap();
    assert_eq!(fetch(h, 20).await.len(), 10, "no limit: the rest start");
    assert!(matches!(
        h.backend.set_group_concurrency("g", Some(0)).await,
        Err(Error::InvalidArgument { .. })
    ));
}

/// A group's slot comes back on every way a job stops running: an outcome, a cancel, an
/// expired lease, a release; a fetch waiting for the slot wakes when it frees.
pub async fn group_slot_comes_back_on_every_ending(h: &Harness) {
    h.backend.set_group_concurrency("g", Some(1)).await.unwrap();
    let ids: Vec<JobId> = {
        let mut ids = Vec::new();
        for n in 0..5 {
            ids.push(enqueue(h, in_group(n, "g")).await.job_id);
        }
        ids
    };
    let a = claim_one(h).await;
    assert_eq!(a.job.job_id, ids[0]);
    assert!(fetch(h, 5).await.is_empty(), "the slot is taken");
    // A fetch waiting for the slot wakes when the job finishes.
    let backend = Arc::clone(&h.backend);
    let waiter =
        tokio::spawn(async move { backend.fetch(&req("w2", 1), Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "waits for the slot");
    finish(h, &a, completed()).await;
    let b = tokio::time::timeout(Duration::from_secs(3), waiter)
        .await
        .expect("a freed slot wakes a waiting fetch")
        .unwrap()
        .unwrap()
        .pop()
        .expect("the next job of the group");
    assert_eq!(b.job.job_id, ids[1]);
    // Cancelled while running: the slot comes back when the holder stops.
    h.backend.cancel(b.job.job_id).await.unwrap();
    assert!(fetch(h, 5).await.is_empty());
    assert_eq!(
        h.backend
            .finish(&b.to_ref(), Outcome::Cancelled, None)
            .await
            .unwrap()
            .status,
        JobStatus::Cancelled
    );
    // An expired lease: the job goes back to its place, the slot is free.
    let c = claim_one(h).await;
    assert_eq!(c.job.job_id, ids[2]);
    h.advance(LEASE + Duration::from_secs(1));
    assert_eq!(h.backend.reap(10).await.unwrap(), vec![ids[2]]);
    assert_eq!(h.backend.group("g").await.unwrap().running, 0);
    let c2 = claim_one(h).await;
    assert_eq!(c2.job.job_id, ids[2], "the recovered job keeps its place");
    // Released (a worker shutting down): no attempt used, the slot is free.
    finish(h, &c2, Outcome::Released).await;
    let c3 = claim_one(h).await;
    assert_eq!(c3.job.job_id, ids[2]);
    // A queued job of the group cancelled: nothing runs it, the others follow.
    h.backend.cancel(ids[3]).await.unwrap();
    finish(h, &c3, completed()).await;
    assert_eq!(claim_one(h).await.job.job_id, ids[4]);
    let g = h.backend.group("g").await.unwrap();
    assert_eq!((g.ready, g.running, g.concurrency), (0, 1, Some(1)));
}

/// Pausing a group stops its starts only; its jobs stay queued, its running jobs finish,
/// and resuming lets them start, in order, waking a waiting fetch.
pub async fn pause_group_stops_only_that_group(h: &Harness) {
    let a1 = enqueue(h, in_group(1, "a")).await;
    let running = claim_one(h).await;
    assert_eq!(running.job.job_id, a1.job_id);
    let a2 = enqueue(h, in_group(2, "a")).await;
    let a3 = enqueue(h, in_group(3, "a")).await;
    let b1 = enqueue(h, in_group(4, "b")).await;
    let u1 = enqueue(h, job(5)).await;
    h.backend.pause_group("a").await.expect("pause a group");
    h.backend
        .pause_group("a")
        .await
        .expect("pausing twice is fine");
    let a = h.backend.group("a").await.unwrap();
    assert_eq!((a.paused, a.ready, a.running), (true, 2, 1));
    let ids: Vec<JobId> = fetch(h, 10).await.iter().map(|l| l.job.job_id).collect();
    assert_eq!(ids, vec![u1.job_id, b1.job_id], "only group `a` waits");
    assert_eq!(finish(h, &running, completed()).await, JobStatus::Completed);
    assert!(fetch(h, 10).await.is_empty());
    let backend = Arc::clone(&h.backend);
    let waiter =
        tokio::spawn(async move { backend.fetch(&req("w2", 5), Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "group `a` is paused");
    h.backend.resume_group("a").await.expect("resume");
    h.backend
        .resume_group("a")
        .await
        .expect("resuming twice is fine");
    let ids: Vec<JobId> = tokio::time::timeout(Duration::from_secs(3), waiter)
        .await
        .expect("resuming a group wakes a waiting fetch")
        .unwrap()
        .unwrap()
        .iter()
        .map(|l| l.job.job_id)
        .collect();
    assert_eq!(ids, vec![a2.job_id, a3.job_id]);
    assert!(!h.backend.group("a").await.unwrap().paused);
    // Bad group keys are refused, naming the problem.
    for bad in ["", "a|b", "tab\there"] {
        let err = h.backend.pause_group(bad).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { .. }),
            "{bad:?}: {err}"
        );
        let err = h.backend.enqueue(job(9).group(bad)).await.unwrap_err();
        assert!(err.to_string().contains("group"), "{bad:?}: {err}");
    }
}

/// A handler's result is stored with the record (a partial one too); a result above
/// `Limits::result_bytes` is not stored and the job fails saying why.
pub async fn results_round_trip_and_size_limit(h: &Harness) {
    for n in 1..=3 {
        enqueue(h, job(n)).await;
    }
    let leases = fetch(h, 3).await;
    let result = json!({ "pages": 320, "chapters": ["one", "two"] });
    let status = finish(
        h,
        &leases[0],
        Outcome::Completed {
            result: Some(result.clone()),
        },
    )
    .await;
    assert_eq!(status, JobStatus::Completed);
    assert_eq!(get(h, leases[0].job.job_id).await.result, Some(result));
    let details = json!({ "failed_steps": ["cover"] });
    let status = finish(
        h,
        &leases[1],
        Outcome::Partial {
            result: Some(details.clone()),
            error: "cover failed".into(),
        },
    )
    .await;
    assert_eq!(status, JobStatus::Partial);
    assert_eq!(get(h, leases[1].job.job_id).await.result, Some(details));
    let limit = queue_core::Limits::default().result_bytes;
    let huge = json!("x".repeat(limit + 1));
    let status = finish(h, &leases[2], Outcome::Completed { result: Some(huge) }).await;
    assert_eq!(
        status,
        JobStatus::Failed,
        "a result above the limit fails the job"
    );
    let record = get(h, leases[2].job.job_id).await;
    assert_eq!(record.result, None, "nothing of it is stored");
    let error = record.error_message.unwrap_or_default();
    assert!(
        error.contains("result") && error.contains("DCS_QUEUE_LIMIT_RESULT_BYTES"),
        "{error}"
    );
}

/// `wait` returns a job's record once it is finished, woken by the job's ending (well
/// within `WAIT_RECHECK`, so not by polling), at once for a finished job, and the record
/// as it is when the timeout passes; an unknown id is `NotFound`.
pub async fn wait_returns_when_the_job_ends(h: &Harness) {
    let err = h
        .backend
        .wait(JobId::new(), Duration::from_millis(10))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let a = enqueue(h, job(1)).await;
    let timed_out = h
        .backend
        .wait(a.job_id, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(
        timed_out.status,
        JobStatus::Queued,
        "the record at the timeout"
    );
    let spawn_wait = |id: JobId| {
        let backend = Arc::clone(&h.backend);
        tokio::spawn(async move { backend.wait(id, Duration::from_secs(120)).await })
    };
    let waiter = spawn_wait(a.job_id);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let lease = claim_one(h).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "running is not finished");
    let result = json!({ "pages": 3 });
    let status = finish(
        h,
        &lease,
        Outcome::Completed {
            result: Some(result.clone()),
        },
    )
    .await;
    assert_eq!(status, JobStatus::Completed);
    assert!(queue_core::WAIT_RECHECK >= Duration::from_secs(5));
    let done = tokio::time::timeout(Duration::from_secs(3), waiter)
        .await
        .expect("the ending wakes the waiter, well before a recheck")
        .unwrap()
        .unwrap();
    assert_eq!(
        (done.status, done.result),
        (JobStatus::Completed, Some(result))
    );
    let again = tokio::time::timeout(
        Duration::from_secs(3),
        h.backend.wait(a.job_id, Duration::from_secs(120)),
    )
    .await
    .expect("a finished job answers at once")
    .unwrap();
    assert_eq!(again.status, JobStatus::Completed);
    // A cancel of a queued job ends it too; waiters of other jobs are not woken by it.
    let b = enqueue(h, job(2)).await;
    let c = enqueue(h, job(3)).await;
    let waiter_b = spawn_wait(b.job_id);
    let waiter_c = spawn_wait(c.job_id);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        h.backend.cancel(b.job_id).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let cancelled = tokio::time::timeout(Duration::from_secs(3), waiter_b)
        .await
        .expect("a cancel wakes the waiter")
        .unwrap()
        .unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter_c.is_finished(), "job 3 is still queued");
    waiter_c.abort();
}

/// A group's weight: within a priority its lane is served `weight` times in a row per
/// turn, so a group of weight 3 gets three starts for each start of a group of weight 1,
/// in one batch fetch as in single ones; without the weight they alternate again.
pub async fn weighted_groups_share_in_proportion(h: &Harness) {
    for bad in [0, queue_core::backend::MAX_GROUP_WEIGHT + 1] {
        let err = h
            .backend
            .set_group_weight("a", Some(bad))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        assert!(err.to_string().contains("weight"), "{err}");
    }
    h.backend.set_group_weight("a", Some(3)).await.unwrap();
    assert_eq!(h.backend.group("a").await.unwrap().weight, Some(3));
    for n in 0..12 {
        enqueue(h, in_group(n, "a")).await;
    }
    for n in 100..106 {
        enqueue(h, in_group(n, "b")).await;
    }
    let group_of = |l: &Lease| l.job.group.clone().unwrap_or_default();
    let mut singles = String::new();
    for _ in 0..8 {
        singles += &group_of(&claim_one(h).await);
    }
    assert_eq!(singles, "aaabaaab", "three of a for each of b");
    let batch: String = fetch(h, 4).await.iter().map(group_of).collect();
    assert_eq!(batch, "aaab", "a batch follows the same turns");
    h.backend.set_group_weight("a", None).await.unwrap();
    assert_eq!(h.backend.group("a").await.unwrap().weight, None);
    let rest: String = fetch(h, 10).await.iter().map(group_of).collect();
    assert_eq!(rest, "ababab", "without the weight, turns of one each");
}

/// `groups` lists the groups with unfinished jobs (queued, delayed, waiting for a retry or
/// running), the busiest first and ties by name, and sums the rest; the counts follow every
/// way a job enters or leaves the unfinished set (enqueue, an ending, a retry from
/// `failed`, a cancel); a group with nothing unfinished is not listed.
pub async fn groups_list_the_busiest_first(h: &Harness) {
    use std::collections::BTreeMap;
    let shown = |list: &queue_core::GroupList| -> Vec<(String, u64)> {
        list.groups
            .iter()
            .map(|g| (g.group.clone(), g.unfinished))
            .collect()
    };
    let empty = h.backend.groups(10).await.expect("list groups");
    assert!(empty.groups.is_empty());
    assert_eq!((empty.other_groups, empty.other_unfinished), (0, 0));
    for n in 1..=3 {
        enqueue(h, in_group(n, "a")).await;
    }
    enqueue(h, in_group(4, "b").delay(Duration::from_secs(60))).await;
    enqueue(h, in_group(5, "c")).await;
    enqueue(h, in_group(6, "c")).await;
    enqueue(h, job(7)).await;
    let list = h.backend.groups(10).await.unwrap();
    let want = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
        v.iter().map(|(g, n)| ((*g).to_owned(), *n)).collect()
    };
    assert_eq!(shown(&list), want(&[("a", 3), ("c", 2), ("b", 1)]));
    let b = &list.groups[2];
    assert_eq!((b.ready, b.running), (0, 0), "b's job is delayed");
    assert_eq!(list.groups[0].ready, 3);
    let top = h.backend.groups(1).await.unwrap();
    assert_eq!(shown(&top), want(&[("a", 3)]));
    assert_eq!((top.other_groups, top.other_unfinished), (2, 3));
    let none = h.backend.groups(0).await.unwrap();
    assert!(none.groups.is_empty());
    assert_eq!((none.other_groups, none.other_unfinished), (3, 6));
    // Running jobs still count; endings, retries and cancels move the counts.
    let leases: BTreeMap<u64, Lease> = fetch(h, 10)
        .await
        .into_iter()
        .map(|l| (n_of(&l.job), l))
        .collect();
    assert_eq!(leases.len(), 6);
    let running = h.backend.groups(10).await.unwrap();
    assert_eq!(shown(&running), want(&[("a", 3), ("c", 2), ("b", 1)]));
    assert_eq!(running.groups[0].running, 3);
    assert_eq!(
        finish(h, &leases[&1], completed()).await,
        JobStatus::Completed
    );
    assert_eq!(finish(h, &leases[&2], retry(30)).await, JobStatus::Queued);
    let failed = Outcome::Failed { error: "no".into() };
    assert_eq!(
        finish(h, &leases[&5], failed.clone()).await,
        JobStatus::Failed
    );
    assert_eq!(finish(h, &leases[&6], failed).await, JobStatus::Failed);
    assert_eq!(
        finish(h, &leases[&7], completed()).await,
        JobStatus::Completed
    );
    let list = h.backend.groups(10).await.unwrap();
    assert_eq!(
        shown(&list),
        want(&[("a", 2), ("b", 1)]),
        "c has nothing left"
    );
    assert_eq!(h.backend.group("a").await.unwrap().unfinished, 2);
    assert_eq!(h.backend.group("c").await.unwrap().unfinished, 0);
    let b_job = h
        .backend
        .list(&ListQuery::new().status(JobStatus::Queued).limit(10))
        .await
        .unwrap()
        .jobs
        .into_iter()
        .find(|j| j.group.as_deref() == Some("b"))
        .expect("b's delayed job is queued");
    assert_eq!(
        h.backend.cancel(b_job.job_id).await.unwrap(),
        CancelOutcome::Cancelled
    );
    h.backend
        .retry(leases[&5].job.job_id, None)
        .await
        .expect("retry a failed job");
    h.backend
        .cancel(leases[&3].job.job_id)
        .await
        .expect("request a cancel");
    assert_eq!(
        finish(h, &leases[&3], Outcome::Cancelled).await,
        JobStatus::Cancelled
    );
    let list = h.backend.groups(10).await.unwrap();
    assert_eq!(shown(&list), want(&[("a", 1), ("c", 1)]));
    assert_eq!(list.groups[1].ready, 1, "c's retried job is ready");
    let err = h
        .backend
        .groups(queue_core::backend::MAX_GROUPS_LISTED + 1)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert!(err.to_string().contains("groups limit"), "{err}");
}

/// A group's rate limit holds its starts to the limit in every window, whatever the
/// number of fetches, while other groups run on; a fetch held back by it wakes as soon as
/// the window allows, without polling.
pub async fn group_rate_limit_holds_and_wakes(h: &Harness) {
    let limit = queue_core::RateLimit::new(2, Duration::from_secs(10)).unwrap();
    h.backend
        .set_group_rate_limit("g", Some(limit))
        .await
        .expect("set the limit");
    assert_eq!(h.backend.group("g").await.unwrap().rate_limit, Some(limit));
    for n in 0..7 {
        enqueue(h, in_group(n, "g")).await;
    }
    for n in 10..13 {
        enqueue(h, in_group(n, "h")).await;
    }
    let first = fetch(h, 10).await;
    let in_g = first
        .iter()
        .filter(|l| l.job.group.as_deref() == Some("g"))
        .count();
    assert_eq!((in_g, first.len()), (2, 5), "two of g, every job of h");
    assert!(fetch(h, 10).await.is_empty(), "g's window is full");
    h.advance(Duration::from_secs(9));
    assert!(fetch(h, 10).await.is_empty(), "still within the window");
    let backend = Arc::clone(&h.backend);
    let waiter =
        tokio::spawn(async move { backend.fetch(&req("w2", 10), Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "held back by the group's limit");
    h.advance(Duration::from_secs(1));
    let woke = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the fetch must wake when the group's window allows")
        .unwrap()
        .unwrap();
    assert_eq!(woke.len(), 2, "the next two of g");
    // Over many windows: never more than two starts of g in any 10 s.
    let mut starts = vec![0i64; 0];
    for _ in 0..30 {
        let now = h.clock.now_ms();
        starts.extend(fetch(h, 10).await.iter().map(|_| now));
        h.advance(Duration::from_secs(3));
    }
    for (i, t) in starts.iter().enumerate() {
        let in_window = starts[i..].iter().filter(|u| **u < t + 10_000).count();
        assert!(in_window <= 2, "{starts:?}");
    }
    assert_eq!(starts.len(), 3, "the last three of g");
    h.backend.set_group_rate_limit("g", None).await.unwrap();
    assert_eq!(h.backend.group("g").await.unwrap().rate_limit, None);
}

/// A job's cost counts against the queue's and its group's rate limits: a job starts only
/// when its cost fits what is left of the window (a cheaper job behind it does not
/// overtake it), a job costing more than a whole window starts alone in an empty one, and
/// a fetch held back by a cost wakes when the window has room for it.
pub async fn job_cost_counts_against_rate_limits(h: &Harness) {
    let ids = |leases: &[Lease]| -> Vec<u64> { leases.iter().map(|l| n_of(&l.job)).collect() };
    for bad in [0, queue_core::backend::MAX_COST + 1] {
        let err = h.backend.enqueue(job(0).cost(bad)).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        assert!(err.to_string().contains("cost"), "{err}");
    }
    let limit = queue_core::RateLimit::new(10, Duration::from_secs(10)).unwrap();
    h.backend.set_rate_limit(Some(limit)).await.unwrap();
    let a = enqueue(h, job(1).cost(6)).await;
    assert_eq!(a.cost, Some(6));
    assert_eq!(get(h, a.job_id).await.cost, Some(6));
    enqueue(h, job(2).cost(5)).await;
    let c = enqueue(h, job(3)).await;
    assert_eq!(c.cost, None, "cost 1 is the default");
    assert_eq!(
        ids(&fetch(h, 10).await),
        vec![1],
        "5 more do not fit after 6"
    );
    assert!(
        fetch(h, 10).await.is_empty(),
        "job 3 does not overtake job 2"
    );
    h.advance(Duration::from_secs(10));
    assert_eq!(
        ids(&fetch(h, 10).await),
        vec![2, 3],
        "5 + 1 fit a fresh window"
    );
    // More than a whole window: it waits for an empty window, then starts alone.
    enqueue(h, job(4).cost(25)).await;
    enqueue(h, job(5)).await;
    assert!(fetch(h, 10).await.is_empty());
    h.advance(Duration::from_secs(10));
    assert_eq!(
        ids(&fetch(h, 10).await),
        vec![4],
        "alone in an empty window"
    );
    h.advance(Duration::from_secs(9));
    assert!(
        fetch(h, 10).await.is_empty(),
        "25 counted for the whole window"
    );
    let backend = Arc::clone(&h.backend);
    let waiter =
        tokio::spawn(async move { backend.fetch(&req("w2", 10), Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "held back by the cost in the window");
    h.advance(Duration::from_secs(1));
    let woke = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the fetch must wake when the window has room")
        .unwrap()
        .unwrap();
    assert_eq!(ids(&woke), vec![5]);
    h.backend.set_rate_limit(None).await.unwrap();
    // A group's limit: its next job waits for room; others run on.
    let glimit = queue_core::RateLimit::new(4, Duration::from_secs(10)).unwrap();
    h.backend
        .set_group_rate_limit("g", Some(glimit))
        .await
        .unwrap();
    enqueue(h, in_group(6, "g").cost(3)).await;
    enqueue(h, in_group(7, "g").cost(2)).await;
    enqueue(h, in_group(8, "g")).await;
    enqueue(h, job(9)).await;
    let mut first = ids(&fetch(h, 10).await);
    first.sort_unstable();
    assert_eq!(first, vec![6, 9], "3 + 2 > 4: job 7 waits, job 8 behind it");
    h.advance(Duration::from_secs(10));
    assert_eq!(ids(&fetch(h, 10).await), vec![7, 8], "2 + 1 fit");
    assert!(fetch(h, 10).await.is_empty());
    // Over many windows: the costs started in any 10 s stay within the limit.
    for n in 10..20 {
        enqueue(h, in_group(n, "g").cost(1 + n % 3)).await;
    }
    let mut starts: Vec<(i64, u32)> = Vec::new();
    for _ in 0..40 {
        let now = h.clock.now_ms();
        starts.extend(
            fetch(h, 10)
                .await
                .iter()
                .map(|l| (now, l.job.cost.unwrap_or(1))),
        );
        h.advance(Duration::from_secs(2));
    }
    assert_eq!(starts.len(), 10, "every job of g started: {starts:?}");
    for (i, (t, _)) in starts.iter().enumerate() {
        let in_window: u32 = starts[i..]
            .iter()
            .filter(|(u, _)| *u < t + 10_000)
            .map(|(_, c)| c)
            .sum();
        assert!(in_window <= 4, "{starts:?}");
    }
    h.backend.set_group_rate_limit("g", None).await.unwrap();
}

/// A handler of a job in a group that reports a limit hit holds that group's starts until
/// then, on every worker; other groups and jobs without a group run on.
pub async fn a_rate_limited_job_holds_only_its_group(h: &Harness) {
    let a = enqueue(h, in_group(1, "g")).await;
    let b = enqueue(h, in_group(2, "g")).await;
    let lease = claim_one(h).await;
    assert_eq!(lease.job.job_id, a.job_id);
    let t0 = h.clock.now_ms();
    let status = finish(
        h,
        &lease,
        Outcome::RateLimited {
            retry_after: Duration::from_secs(60),
        },
    )
    .await;
    assert_eq!(status, JobStatus::Queued);
    let g = h.backend.group("g").await.unwrap();
    assert_eq!(g.held_until.map(to_millis), Some(t0 + 60_000));
    assert_eq!(
        h.backend.stats().await.unwrap().held_until,
        None,
        "not the queue"
    );
    let other = enqueue(h, in_group(3, "other")).await;
    let plain = enqueue(h, job(4)).await;
    let mut ids: Vec<JobId> = fetch(h, 10).await.iter().map(|l| l.job.job_id).collect();
    ids.sort();
    let mut want = vec![other.job_id, plain.job_id];
    want.sort();
    assert_eq!(ids, want, "only group g waits");
    h.advance(Duration::from_secs(60));
    let ids: Vec<JobId> = fetch(h, 10).await.iter().map(|l| l.job.job_id).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&a.job_id) && ids.contains(&b.job_id));
    assert_eq!(h.backend.group("g").await.unwrap().held_until, None);
}

fn flow(n: u32) -> Flow {
    Flow::new(job(n))
}

async fn enqueue_flow(h: &Harness, flow: Flow) -> JobRecord {
    h.backend.enqueue_flow(flow).await.expect("enqueue_flow")
}

/// The `n` of every job claimable now (claimed and then released, so they stay queued in
/// place).
async fn claimable(h: &Harness) -> Vec<u64> {
    let leases = fetch(h, 100).await;
    let mut out: Vec<u64> = leases.iter().map(|l| n_of(&l.job)).collect();
    for lease in &leases {
        finish(h, lease, Outcome::Released).await;
    }
    out.sort_unstable();
    out
}

/// Claims the job whose payload is `n` (it must be claimable now), releasing the others.
async fn claim_n(h: &Harness, n: u64) -> Lease {
    let leases = fetch(h, 100).await;
    let mut found = None;
    for lease in leases {
        if n_of(&lease.job) == n && found.is_none() {
            found = Some(lease);
        } else {
            finish(h, &lease, Outcome::Released).await;
        }
    }
    found.unwrap_or_else(|| panic!("job {n} is not claimable"))
}

/// A flow (any depth) is created in one step; a parent is queued but not claimable until
/// every child ended, in any order; it is released exactly once and reads its children's
/// outcomes and results. A refused flow creates nothing; an enqueue repeated with the
/// root's id returns the root.
pub async fn a_flow_releases_its_parent_once(h: &Harness) {
    let root_id = JobId::new();
    let root = enqueue_flow(
        h,
        Flow::new(job(0).job_id(root_id).unique_key("book-7"))
            .child(flow(1))
            .child(flow(2).child(Flow::new(job(4).priority(Priority::High))))
            .child(flow(3).on_failure(ChildPolicy::Continue)),
    )
    .await;
    assert_eq!((root.job_id, root.status), (root_id, JobStatus::Queued));
    let counts = root.children.expect("a parent has counts");
    assert_eq!((counts.waiting, counts.total()), (3, 3));
    assert!(root.waits_on_children());
    let kids = h.backend.children(root_id).await.unwrap();
    let ns: Vec<u64> = kids.iter().map(n_of).collect();
    assert_eq!(ns, [1, 2, 3], "children oldest first");
    assert!(kids.iter().all(|k| k.parent == Some(root_id)));
    assert_eq!(kids[2].child_policy, Some(ChildPolicy::Continue));
    assert_eq!(
        kids[0].child_policy, None,
        "the default policy is not stored"
    );
    let two = kids[1].job_id;
    assert_eq!(kids[1].children.map(|c| c.waiting), Some(1));
    let stats = h.backend.stats().await.unwrap();
    assert_eq!(
        (stats.total, stats.queued, stats.waiting_on_children),
        (5, 5, 2)
    );
    let waiting = h
        .backend
        .list(&ListQuery::new().waiting_on_children())
        .await
        .unwrap();
    let mut ids: Vec<JobId> = waiting.jobs.iter().map(|r| r.job_id).collect();
    ids.sort();
    let mut want = vec![root_id, two];
    want.sort();
    assert_eq!(ids, want, "the listing of parents waiting on children");

    // Only leaves are claimable.
    assert_eq!(claimable(h).await, [1, 3, 4]);
    // Repeating the enqueue with the root's id creates nothing.
    let again = enqueue_flow(h, Flow::new(job(0).job_id(root_id)).child(flow(9))).await;
    assert_eq!(again.job_id, root_id);
    assert_eq!(h.backend.stats().await.unwrap().total, 5);
    // A flow with a held unique key is refused whole.
    let err = h
        .backend
        .enqueue_flow(
            flow(10)
                .child(flow(11))
                .child(Flow::new(job(12).unique_key("book-7"))),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyExists { job_id, .. } if *job_id == root_id),
        "{err}"
    );
    assert_eq!(h.backend.stats().await.unwrap().total, 5, "nothing created");

    // Children end in some order; the parent waits for the last.
    let three = claim_n(h, 3).await;
    let result = json!({ "pages": 30 });
    finish(
        h,
        &three,
        Outcome::Completed {
            result: Some(result.clone()),
        },
    )
    .await;
    assert_eq!(
        get(h, root_id).await.progress,
        33,
        "a third of the children ended"
    );
    let four = claim_n(h, 4).await;
    finish(h, &four, completed()).await;
    assert_eq!(
        claimable(h).await,
        [1, 2],
        "2 is released by its only child"
    );
    let one = claim_n(h, 1).await;
    finish(
        h,
        &one,
        Outcome::Partial {
            result: None,
            error: "one figure missing".into(),
        },
    )
    .await;
    assert_eq!(claimable(h).await, [2]);
    let two_lease = claim_n(h, 2).await;
    finish(h, &two_lease, completed()).await;
    let parent = get(h, root_id).await;
    assert!(!parent.waits_on_children());
    let counts = parent.children.unwrap();
    assert_eq!(
        (counts.waiting, counts.completed, counts.partial),
        (0, 2, 1)
    );
    assert_eq!(h.backend.stats().await.unwrap().waiting_on_children, 0);
    // Released once: one claim gets it, the next nothing.
    let lease = claim_one(h).await;
    assert_eq!(lease.job.job_id, root_id);
    assert!(fetch(h, 10).await.is_empty());
    let seen = h.backend.children_of(root_id, None).await.unwrap().jobs;
    let outcomes: Vec<(u64, JobStatus)> = seen.iter().map(|k| (n_of(k), k.status)).collect();
    assert_eq!(
        outcomes,
        [
            (1, JobStatus::Partial),
            (2, JobStatus::Completed),
            (3, JobStatus::Completed)
        ]
    );
    assert_eq!(seen[2].result, Some(result));
    finish(h, &lease, completed()).await;
    assert_eq!(get(h, root_id).await.status, JobStatus::Completed);
    let err = h.backend.children(JobId::new()).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

/// What a failed child does to its parent, by policy: `fail_parent` fails the waiting
/// parent at once (naming the child; the siblings run on) and a retry of the child
/// re-opens the wait; `ignore` and `continue` count it as done. A child whose worker
/// crashes goes back to the queue and does not release its parent.
pub async fn flow_failure_policies(h: &Harness) {
    let strict = enqueue_flow(
        h,
        flow(0)
            .child(Flow::new(job(1).max_retries(0)))
            .child(flow(2)),
    )
    .await;
    let lenient = enqueue_flow(
        h,
        flow(10)
            .child(Flow::new(job(11).max_retries(0)).on_failure(ChildPolicy::Ignore))
            .child(Flow::new(job(12).max_retries(0)).on_failure(ChildPolicy::Continue)),
    )
    .await;
    assert_eq!(claimable(h).await, [1, 2, 11, 12]);

    // A crashed worker: the child goes back to the queue, the parent keeps waiting.
    let one = claim_n(h, 1).await;
    h.advance(LEASE + Duration::from_secs(1));
    assert_eq!(h.backend.reap(10).await.unwrap(), vec![one.job.job_id]);
    let one_rec = get(h, one.job.job_id).await;
    assert_eq!(one_rec.status, JobStatus::Failed, "no retries were left");
    let parent = get(h, strict.job_id).await;
    assert_eq!(parent.status, JobStatus::Failed, "fail_parent");
    let message = parent.error_message.clone().unwrap();
    assert!(
        message.contains(&one.job.job_id.to_string()) && message.contains("failed"),
        "{message}"
    );
    assert_eq!(parent.started_at, None, "the parent never ran");
    assert_eq!(claimable(h).await, [2, 11, 12], "the sibling runs on");
    let stats = h.backend.stats().await.unwrap();
    assert_eq!((stats.failed, stats.waiting_on_children), (2, 1));

    // Retrying the failed child re-opens the parent's wait.
    h.backend.retry(one.job.job_id, None).await.unwrap();
    let parent = get(h, strict.job_id).await;
    assert_eq!(parent.status, JobStatus::Queued);
    assert_eq!(parent.error_message, None);
    let counts = parent.children.unwrap();
    assert_eq!((counts.waiting, counts.failed), (2, 0));
    for n in [1, 2] {
        let lease = claim_n(h, n).await;
        finish(h, &lease, completed()).await;
    }
    let lease = claim_n(h, 0).await;
    assert_eq!(lease.job.job_id, strict.job_id);
    finish(h, &lease, completed()).await;

    // ignore / continue: the failures count as done.
    let eleven = claim_n(h, 11).await;
    finish(
        h,
        &eleven,
        Outcome::Failed {
            error: "bad scan".into(),
        },
    )
    .await;
    assert_eq!(get(h, lenient.job_id).await.status, JobStatus::Queued);
    assert!(get(h, lenient.job_id).await.waits_on_children());
    let twelve = claim_n(h, 12).await;
    assert_eq!(
        h.backend.cancel(twelve.job.job_id).await.unwrap(),
        CancelOutcome::Requested
    );
    finish(h, &twelve, Outcome::Cancelled).await;
    let parent = get(h, lenient.job_id).await;
    let counts = parent.children.unwrap();
    assert_eq!((counts.waiting, counts.failed, counts.cancelled), (0, 1, 1));
    assert_eq!(counts.batch_status(), JobStatus::Partial);
    assert_eq!(claimable(h).await, [10]);
}

/// Cancelling a parent cancels its unfinished children (queued ones at once, running ones
/// by request, grandchildren too); a child retried while its parent waits is waited on
/// again; a parent that ran is not re-opened by a child's retry.
pub async fn cancel_and_retry_inside_a_flow(h: &Harness) {
    let root = enqueue_flow(
        h,
        flow(0)
            .child(flow(1))
            .child(flow(2).child(flow(3)))
            .child(flow(4)),
    )
    .await;
    let running = claim_n(h, 1).await;
    let four = claim_n(h, 4).await;
    finish(h, &four, completed()).await;
    assert_eq!(
        h.backend.cancel(root.job_id).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let kids = h.backend.children(root.job_id).await.unwrap();
    let statuses: Vec<JobStatus> = kids.iter().map(|k| k.status).collect();
    assert_eq!(
        statuses,
        [
            JobStatus::Processing,
            JobStatus::Cancelled,
            JobStatus::Completed
        ]
    );
    assert!(get(h, running.job.job_id).await.cancel_requested);
    let grandchild = h.backend.children(kids[1].job_id).await.unwrap();
    assert_eq!(grandchild[0].status, JobStatus::Cancelled);
    finish(h, &running, completed()).await;
    assert_eq!(
        get(h, running.job.job_id).await.status,
        JobStatus::Cancelled
    );
    assert!(fetch(h, 10).await.is_empty(), "nothing of the flow runs");
    let parent = get(h, root.job_id).await;
    assert_eq!(parent.status, JobStatus::Cancelled);
    let counts = parent.children.unwrap();
    assert_eq!(
        (counts.waiting, counts.cancelled, counts.completed),
        (0, 2, 1)
    );
    assert_eq!(h.backend.stats().await.unwrap().waiting_on_children, 0);

    // Retry of a child while the parent waits: the parent waits for it again.
    let p = enqueue_flow(
        h,
        flow(10)
            .child(flow(11).on_failure(ChildPolicy::Continue))
            .child(flow(12)),
    )
    .await;
    let eleven = claim_n(h, 11).await;
    finish(h, &eleven, Outcome::Failed { error: "x".into() }).await;
    let twelve = claim_n(h, 12).await;
    finish(h, &twelve, completed()).await;
    assert_eq!(claimable(h).await, [10], "released");
    h.backend.retry(eleven.job.job_id, None).await.unwrap();
    assert_eq!(claimable(h).await, [11], "the parent waits again");
    assert_eq!(get(h, p.job_id).await.children.unwrap().waiting, 1);
    let eleven = claim_n(h, 11).await;
    finish(h, &eleven, Outcome::Failed { error: "y".into() }).await;
    let lease = claim_n(h, 10).await;
    finish(h, &lease, completed()).await;
    // The parent ran: a later retry of a child leaves it alone.
    h.backend.retry(eleven.job.job_id, None).await.unwrap();
    assert_eq!(get(h, p.job_id).await.status, JobStatus::Completed);
    assert_eq!(claimable(h).await, [11]);
    let twelve_id = twelve.job.job_id;
    assert!(h.backend.retry(twelve_id, None).await.is_err(), "completed");
    assert_eq!(get(h, p.job_id).await.status, JobStatus::Completed);
}

/// A batch: a callback that runs once every member ended, whatever they became, with the
/// counts per status; members can be added while it waits (also by a running member), not
/// once it started. When its last two members end at the same instant on two workers the
/// callback is released exactly once (repeated).
pub async fn a_batch_takes_members_while_it_waits(h: &Harness) {
    let batch = enqueue_flow(h, Flow::batch(job(0), [job(1), job(2)])).await;
    let one = claim_n(h, 1).await;
    // A running member adds a member.
    let added = h
        .backend
        .add_children(batch.job_id, vec![flow(3)])
        .await
        .unwrap();
    assert_eq!(added.len(), 1);
    assert_eq!(added[0].parent, Some(batch.job_id));
    assert_eq!(get(h, batch.job_id).await.children.unwrap().waiting, 3);
    // Children added together are checked together: one unique key twice refuses them all.
    let twice = |n: u32| Flow::new(job(n).unique_key("page-9"));
    let err = h
        .backend
        .add_children(batch.job_id, vec![twice(7), twice(8)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`page-9`"), "{err}");
    assert_eq!(get(h, batch.job_id).await.children.unwrap().waiting, 3);
    finish(h, &one, Outcome::Failed { error: "x".into() }).await;
    for n in [2, 3] {
        let lease = claim_n(h, n).await;
        finish(h, &lease, completed()).await;
    }
    let callback = claim_one(h).await;
    assert_eq!(callback.job.job_id, batch.job_id);
    let counts = callback.job.children.unwrap();
    assert_eq!((counts.completed, counts.failed), (2, 1));
    assert_eq!(counts.batch_status(), JobStatus::Partial);
    let err = h
        .backend
        .add_children(batch.job_id, vec![flow(4)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("only while it is queued"), "{err}");
    let err = h
        .backend
        .add_children(JobId::new(), vec![flow(4)])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    finish(h, &callback, completed()).await;
    // A ready job becomes a parent when children are added to it.
    let plain = enqueue(h, job(5)).await;
    h.backend
        .add_children(plain.job_id, vec![flow(6)])
        .await
        .unwrap();
    assert_eq!(claimable(h).await, [6]);

    // The race: the last two members end at once on two workers.
    let six = claim_n(h, 6).await;
    finish(h, &six, completed()).await;
    let five = claim_n(h, 5).await;
    finish(h, &five, completed()).await;
    for round in 0..20u32 {
        let b = enqueue_flow(
            h,
            Flow::batch(job(100 + round), [job(1000 + round), job(2000 + round)]),
        )
        .await;
        let leases = fetch(h, 2).await;
        assert_eq!(leases.len(), 2);
        let (a, c) = (leases[0].clone(), leases[1].clone());
        let (ba, bc) = (Arc::clone(&h.backend), Arc::clone(&h.backend));
        let ta = tokio::spawn(async move { ba.finish(&a.to_ref(), completed(), None).await });
        let tc = tokio::spawn(async move { bc.finish(&c.to_ref(), completed(), None).await });
        ta.await.unwrap().unwrap();
        tc.await.unwrap().unwrap();
        let (r1, r2) = (req("w1", 5), req("w2", 5));
        let (x, y) = tokio::join!(
            h.backend.fetch(&r1, Duration::ZERO),
            h.backend.fetch(&r2, Duration::ZERO)
        );
        let got: Vec<Lease> = x.unwrap().into_iter().chain(y.unwrap()).collect();
        let ids: Vec<JobId> = got.iter().map(|l| l.job.job_id).collect();
        assert_eq!(ids, vec![b.job_id], "round {round}: the callback, once");
        let counts = got[0].job.children.unwrap();
        assert_eq!((counts.waiting, counts.completed), (0, 2), "round {round}");
        finish(h, &got[0], completed()).await;
    }
}

/// Retention keeps a finished child while its parent is unfinished (the parent's handler
/// will read it), its retention counted again from then; once the parent ended, the whole
/// flow goes.
pub async fn retention_keeps_a_waiting_parents_children(h: &Harness) {
    let root = enqueue_flow(h, flow(0).child(flow(1)).child(flow(2))).await;
    let plain = enqueue(h, job(3)).await;
    for n in [1, 3] {
        let lease = claim_n(h, n).await;
        let result = Some(json!({ "n": n }));
        finish(h, &lease, Outcome::Completed { result }).await;
    }
    h.advance(Duration::from_secs(3601));
    assert_eq!(h.backend.sweep(100).await.unwrap(), 1, "only the plain job");
    assert!(matches!(
        h.backend.get(plain.job_id).await,
        Err(Error::NotFound { .. })
    ));
    let kids = h.backend.children(root.job_id).await.unwrap();
    assert_eq!(kids.len(), 2, "the finished child is kept");
    assert_eq!(kids[0].result, Some(json!({ "n": 1 })));
    h.advance(Duration::from_secs(600));
    let two = claim_n(h, 2).await;
    finish(h, &two, completed()).await;
    let parent = claim_n(h, 0).await;
    let seen = h.backend.children_of(root.job_id, None).await.unwrap().jobs;
    assert_eq!(seen.len(), 2, "the parent reads both");
    finish(h, &parent, completed()).await;
    // Child 1 was kept at the last sweep, ten minutes before child 2 and the parent ended.
    h.advance(Duration::from_secs(1800));
    assert_eq!(h.backend.sweep(100).await.unwrap(), 0);
    h.advance(Duration::from_secs(1201));
    assert_eq!(
        h.backend.sweep(100).await.unwrap(),
        1,
        "the kept child, its hour over"
    );
    h.advance(Duration::from_secs(600));
    assert_eq!(h.backend.sweep(100).await.unwrap(), 2);
    assert_eq!(h.backend.stats().await.unwrap().total, 0);
}

// ---------------------------------------------------------------------------------------
// Job schedulers.

fn scheduled(n: u32) -> NewJob {
    NewJob::new("scheduled", &json!({ "n": n })).expect("encodes")
}

/// Every job a schedule created, oldest tick first (from its `tick` metadata).
async fn jobs_of_schedule(h: &Harness, name: &str) -> Vec<JobRecord> {
    let mut out = Vec::new();
    let mut query = ListQuery::new().limit(1000);
    loop {
        let page = h.backend.list(&query).await.expect("list");
        out.extend(
            page.jobs
                .into_iter()
                .filter(|j| j.metadata.get("schedule").and_then(|v| v.as_str()) == Some(name)),
        );
        match page.next_cursor {
            Some(c) => query = query.cursor(c),
            None => break,
        }
    }
    out.sort_by_key(|j| j.metadata["tick"].as_str().map(str::to_owned));
    out
}

fn tick_of(record: &JobRecord) -> i64 {
    let tick = record.metadata["tick"].as_str().expect("tick metadata");
    to_millis(
        chrono::DateTime::parse_from_rfc3339(tick)
            .expect("RFC 3339")
            .with_timezone(&chrono::Utc),
    )
}

/// A schedule's tick enqueues exactly one job however many schedulers race for it; a
/// scheduler whose read is stale (another fired since) creates nothing; one that read and
/// crashed before writing changed nothing, so the next scheduler fires the tick.
pub async fn a_tick_enqueues_exactly_once(h: &Harness) {
    use queue_core::backend::{ScheduleRead, ScheduleWrite, ScheduleWritten, tick_job_id};
    use queue_core::{Schedule, Schedules};
    let start = h.clock.now_ms();
    let put = h
        .backend
        .put_schedule(Schedule::every("tick", Duration::from_secs(10), scheduled(1)).unwrap())
        .await
        .expect("put");
    assert_eq!(put.next_run.map(to_millis), Some(start + 10_000));
    // Not due yet: nothing happens.
    let report = h.backend.run_due_schedules().await.expect("run");
    assert!(report.fired.is_empty());
    assert_eq!(report.next_due.map(to_millis), Some(start + 10_000));

    const ROUNDS: i64 = 12;
    for round in 1..=ROUNDS {
        // A scheduler reads, then crashes before writing: it leaves no trace.
        let _crashed = h
            .backend
            .read_schedules(&ScheduleRead::One("tick".into()))
            .await
            .expect("read");
        h.advance(Duration::from_secs(10));
        let racers: Vec<_> = (0..6)
            .map(|_| {
                let b = h.backend.clone();
                tokio::spawn(async move { b.run_due_schedules().await })
            })
            .collect();
        let mut fired = Vec::new();
        let mut conflicts = 0;
        for r in racers {
            let report = r.await.expect("joins").expect("run");
            assert!(report.errors.is_empty(), "{:?}", report.errors);
            conflicts += report.conflicts;
            fired.extend(report.fired.into_iter().flat_map(|(_, ids)| ids));
        }
        let tick = start + round * 10_000;
        assert_eq!(
            fired,
            vec![tick_job_id("tick", tick)],
            "round {round}: one job for the tick ({conflicts} racers lost)"
        );
    }
    let jobs = jobs_of_schedule(h, "tick").await;
    assert_eq!(jobs.len(), ROUNDS as usize, "one job per tick, no more");
    for (i, j) in jobs.iter().enumerate() {
        let tick = start + (i as i64 + 1) * 10_000;
        assert_eq!(tick_of(j), tick);
        assert_eq!(j.job_id, tick_job_id("tick", tick));
        assert_eq!(j.task, "scheduled");
        assert_eq!(j.status, JobStatus::Queued);
    }
    let record = h.backend.schedule("tick").await.expect("schedule");
    assert_eq!(record.ticks_run, ROUNDS as u64);
    assert_eq!(record.ticks_skipped, 0);
    assert_eq!(
        record.last_job,
        Some(tick_job_id("tick", start + ROUNDS * 10_000))
    );
    assert_eq!(
        record.next_run.map(to_millis),
        Some(start + (ROUNDS + 1) * 10_000)
    );

    // A write based on a stale read is refused and creates nothing.
    let stale = h
        .backend
        .read_schedules(&ScheduleRead::One("tick".into()))
        .await
        .expect("read");
    h.advance(Duration::from_secs(10));
    let report = h.backend.run_due_schedules().await.expect("run");
    assert_eq!(report.fired.len(), 1);
    let late = NewJob::new("late", &json!({}))
        .unwrap()
        .job_id(JobId::new());
    let late_id = late.options.job_id.unwrap();
    let written = h
        .backend
        .write_schedule(ScheduleWrite {
            name: "tick".into(),
            expected: Some(stale.schedules[0].1.clone()),
            new: Some((stale.schedules[0].1.clone(), Some(0))),
            jobs: vec![late],
        })
        .await
        .expect("write");
    assert!(matches!(written, ScheduleWritten::Conflict));
    assert!(matches!(
        h.backend.get(late_id).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(jobs_of_schedule(h, "tick").await.len(), ROUNDS as usize + 1);
    // The jobs run like any other, oldest tick first.
    let first = claim_one(h).await;
    assert_eq!(first.job.job_id, tick_job_id("tick", start + 10_000));
}

/// Ticks missed while nothing ran (later than the grace) follow the schedule's policy:
/// skipped, run once for the latest, or each of the latest N; the next run is the first
/// tick after now either way.
pub async fn missed_ticks_follow_the_policy(h: &Harness) {
    use queue_core::{MissedTicks, Schedule, Schedules};
    let start = h.clock.now_ms();
    let hour = Duration::from_secs(3600);
    for (name, policy) in [
        ("skip", MissedTicks::Skip),
        ("once", MissedTicks::RunOnce),
        ("each", MissedTicks::RunEach { max: 3 }),
    ] {
        let s = Schedule::every(name, hour, scheduled(0))
            .unwrap()
            .missed(policy);
        h.backend.put_schedule(s).await.expect("put");
    }
    // Everything down for five hours and two minutes: five ticks due, none within the
    // one-minute grace.
    h.advance(5 * hour + Duration::from_secs(120));
    let report = h.backend.run_due_schedules().await.expect("run");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.fired.len(), 3, "each due schedule was handled");
    let h_ms = 3_600_000;
    let ticks = |jobs: Vec<JobRecord>| jobs.iter().map(tick_of).collect::<Vec<_>>();
    assert_eq!(ticks(jobs_of_schedule(h, "skip").await), Vec::<i64>::new());
    assert_eq!(ticks(jobs_of_schedule(h, "once").await), [start + 5 * h_ms]);
    assert_eq!(
        ticks(jobs_of_schedule(h, "each").await),
        [start + 3 * h_ms, start + 4 * h_ms, start + 5 * h_ms]
    );
    for (name, skipped) in [("skip", 5), ("once", 4), ("each", 2)] {
        let r = h.backend.schedule(name).await.expect("schedule");
        assert_eq!(r.ticks_skipped, skipped, "{name}");
        assert_eq!(r.next_run.map(to_millis), Some(start + 6 * h_ms), "{name}");
    }
    // Back to normal: the next tick runs on time under every policy.
    h.advance(hour - Duration::from_secs(100));
    h.backend.run_due_schedules().await.expect("run");
    for name in ["skip", "once", "each"] {
        let jobs = jobs_of_schedule(h, name).await;
        assert_eq!(jobs.last().map(tick_of), Some(start + 6 * h_ms), "{name}");
    }
    // Missed ticks ran oldest first.
    let mut order = Vec::new();
    for lease in fetch(h, 10).await {
        if lease.job.metadata["schedule"] == "each" {
            order.push(tick_of(&lease.job));
        }
    }
    assert_eq!(
        order,
        [
            start + 3 * h_ms,
            start + 4 * h_ms,
            start + 5 * h_ms,
            start + 6 * h_ms
        ]
    );
}

/// A cron schedule keeps its time zone in the backend: a daily 02:30 in Berlin runs at
/// 03:00 local on the night the clocks skip 02:00-03:00, and at 02:30 local after.
pub async fn cron_schedules_keep_their_time_zone(h: &Harness) {
    use queue_core::{Schedule, Schedules};
    let at = |s: &str| {
        to_millis(
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&chrono::Utc),
        )
    };
    let target = at("2027-03-27T12:00:00Z");
    let now = h.clock.now_ms();
    assert!(now < target, "the case moves the clock forward to 2027");
    h.advance(Duration::from_millis((target - now) as u64));
    let s = Schedule::cron("berlin", "30 2 * * *", scheduled(0))
        .unwrap()
        .time_zone("Europe/Berlin");
    let r = h.backend.put_schedule(s).await.expect("put");
    assert_eq!(r.next_run.map(to_millis), Some(at("2027-03-28T01:00:00Z")));
    h.advance(Duration::from_millis(
        (at("2027-03-28T01:00:00Z") - target) as u64,
    ));
    h.backend.run_due_schedules().await.expect("run");
    let r = h.backend.schedule("berlin").await.expect("schedule");
    assert_eq!(r.next_run.map(to_millis), Some(at("2027-03-29T00:30:00Z")));
    let jobs = jobs_of_schedule(h, "berlin").await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(tick_of(&jobs[0]), at("2027-03-28T01:00:00Z"));
}

/// Schedules are created, changed, paused, resumed, listed and deleted; bad input is
/// refused naming the field and stores nothing; a stored schedule that cannot be read
/// fails only itself.
pub async fn schedules_are_managed(h: &Harness) {
    use queue_core::backend::{ScheduleWrite, ScheduleWritten};
    use queue_core::{Schedule, Schedules};
    let start = h.clock.now_ms();
    let every =
        |name: &str, secs| Schedule::every(name, Duration::from_secs(secs), scheduled(1)).unwrap();
    h.backend.put_schedule(every("b", 60)).await.expect("put b");
    let a = h.backend.put_schedule(every("a", 30)).await.expect("put a");
    assert_eq!(a.revision, 1);
    let names: Vec<String> = h
        .backend
        .schedules()
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.schedule.name)
        .collect();
    assert_eq!(names, ["a", "b"]);

    // A new job keeps the next run; a new cadence starts from now.
    h.advance(Duration::from_secs(10));
    let mut changed = every("a", 30);
    changed.job = queue_core::ScheduledJob::try_from(scheduled(2)).unwrap();
    let a2 = h.backend.put_schedule(changed).await.expect("update");
    assert_eq!(a2.next_run, a.next_run);
    assert_eq!(a2.revision, 2);
    assert_eq!(a2.created_at, a.created_at);
    let faster = Schedule::every("a", Duration::from_secs(5), scheduled(2)).unwrap();
    let a3 = h.backend.put_schedule(faster).await.expect("new cadence");
    assert_eq!(a3.next_run.map(to_millis), Some(start + 15_000));

    // Paused: nothing fires; resumed: from the next tick after then.
    let p = h.backend.pause_schedule("a").await.expect("pause");
    assert!(p.schedule.paused && p.next_run.is_none());
    h.backend
        .pause_schedule("a")
        .await
        .expect("pausing twice is fine");
    h.advance(Duration::from_secs(50));
    let report = h.backend.run_due_schedules().await.expect("run");
    let fired: Vec<&str> = report.fired.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(fired, ["b"], "only the running schedule fired");
    assert!(jobs_of_schedule(h, "a").await.is_empty());
    let r = h.backend.resume_schedule("a").await.expect("resume");
    assert_eq!(r.next_run.map(to_millis), Some(start + 65_000));
    h.advance(Duration::from_secs(5));
    h.backend.run_due_schedules().await.expect("run");
    let jobs = jobs_of_schedule(h, "a").await;
    assert_eq!(jobs.len(), 1, "no tick of the paused time ran");
    assert_eq!(jobs[0].payload.to_value()["n"], 2);

    // Deleted: gone, its jobs stay.
    h.backend.delete_schedule("a").await.expect("delete");
    assert!(matches!(
        h.backend.schedule("a").await,
        Err(Error::ScheduleNotFound { name }) if name == "a"
    ));
    assert!(matches!(
        h.backend.delete_schedule("a").await,
        Err(Error::ScheduleNotFound { .. })
    ));
    assert!(matches!(
        h.backend.pause_schedule("nope").await,
        Err(Error::ScheduleNotFound { .. })
    ));
    assert_eq!(jobs_of_schedule(h, "a").await.len(), 1);

    // Bad input names what is wrong and stores nothing.
    let bad = [
        (
            Schedule::cron("c", "61 * * * *", scheduled(0)).unwrap(),
            "61 * * * *",
        ),
        (
            Schedule::cron("c", "0 2 * * *", scheduled(0))
                .unwrap()
                .time_zone("Mars/Olympus"),
            "Mars/Olympus",
        ),
        (every("", 60), "name"),
        (
            Schedule::every("c", Duration::from_millis(5), scheduled(0)).unwrap(),
            "every_ms",
        ),
    ];
    for (schedule, named) in bad {
        match h.backend.put_schedule(schedule).await {
            Err(Error::InvalidArgument { message }) => {
                assert!(message.contains(named), "{message} should name {named}")
            }
            other => panic!("expected InvalidArgument naming {named}, got {other:?}"),
        }
    }
    assert_eq!(h.backend.schedules().await.expect("list").len(), 1);

    // A stored form nobody can read fails only itself; it can still be deleted.
    let now = h.clock.now_ms();
    let garbage = h
        .backend
        .write_schedule(ScheduleWrite {
            name: "garbage".into(),
            expected: None,
            new: Some(("{not json".into(), Some(now))),
            jobs: Vec::new(),
        })
        .await
        .expect("write");
    assert!(matches!(garbage, ScheduleWritten::Applied(_)));
    h.advance(Duration::from_secs(60));
    let report = h.backend.run_due_schedules().await.expect("run");
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert_eq!(report.errors[0].0, "garbage");
    assert!(matches!(report.errors[0].1, Error::Corrupt { .. }));
    assert_eq!(report.fired.len(), 1, "the other schedule still fired");
    assert!(matches!(
        h.backend.schedule("garbage").await,
        Err(Error::Corrupt { .. })
    ));
    h.backend
        .delete_schedule("garbage")
        .await
        .expect("delete garbage");
    assert_eq!(h.backend.schedules().await.expect("list").len(), 1);
}

async fn next_event(events: &mut queue_core::EventStream) -> queue_core::JobEvent {
    tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an event arrives")
        .expect("the stream goes on")
}

/// A subscriber that lost its connection resumes after the last event it saw: every event
/// in between comes from the log, in order, none twice, then the live ones; ids increase.
pub async fn a_subscriber_resumes_after_the_last_event_it_saw(h: &Harness) {
    use queue_core::parse_event_id;
    let mut first = h.backend.subscribe().await.expect("subscribe");
    let a = enqueue(h, job(1)).await;
    let lease = claim_one(h).await;
    let seen = [next_event(&mut first).await, next_event(&mut first).await];
    assert!(seen.iter().all(|e| e.job_id == a.job_id));
    let last = seen[1].id.clone().expect("events carry their log id");
    assert!(
        parse_event_id(seen[0].id.as_deref().unwrap()) < parse_event_id(&last),
        "ids increase"
    );
    // The connection drops; the queue goes on.
    drop(first);
    h.backend
        .progress(&lease.to_ref(), 40, None)
        .await
        .expect("progress");
    finish(h, &lease, completed()).await;
    let b = enqueue(h, job(2)).await;
    h.backend.cancel(b.job_id).await.expect("cancel");

    let mut resumed = h.backend.subscribe_from(&last).await.expect("resume");
    use JobStatus::*;
    let t = |from: Option<JobStatus>, to| EventKind::Transition { from, to };
    let want = [
        (
            a.job_id,
            EventKind::Progress {
                progress: 40,
                step: None,
            },
        ),
        (a.job_id, t(Some(Processing), Completed)),
        (b.job_id, t(None, Queued)),
        (b.job_id, t(Some(Queued), Cancelled)),
    ];
    let mut ids = vec![parse_event_id(&last).unwrap()];
    for (job, kind) in want {
        let e = next_event(&mut resumed).await;
        assert_eq!(
            (e.job_id, &e.kind),
            (job, &kind),
            "missed while disconnected"
        );
        ids.push(parse_event_id(e.id.as_deref().expect("an id")).expect("well formed"));
    }
    // Then live, once each.
    let c = enqueue(h, job(3)).await;
    let e = next_event(&mut resumed).await;
    assert_eq!((e.job_id, e.kind), (c.job_id, t(None, Queued)));
    ids.push(parse_event_id(e.id.as_deref().expect("an id")).expect("well formed"));
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let extra = tokio::time::timeout(Duration::from_millis(300), resumed.next()).await;
    assert!(extra.is_err(), "nothing twice: {extra:?}");

    // Resuming from the last id sees only what comes after it.
    let c_id = e.id.clone().unwrap();
    let mut again = h.backend.subscribe_from(&c_id).await.expect("resume");
    let d = enqueue(h, job(4)).await;
    assert_eq!(next_event(&mut again).await.job_id, d.job_id);

    assert!(matches!(
        h.backend.subscribe_from("yesterday").await.map(drop),
        Err(Error::InvalidArgument { .. })
    ));
}

/// Each job that finishes leaves one delivery per webhook that wants it, written with the
/// transition; deliveries are claimed (hidden for a lease), settled (removed, retried
/// after a wait, parked) only by their claimer, listed, and parked ones sent again.
pub async fn finished_jobs_leave_a_delivery_per_matching_webhook(h: &Harness) {
    use queue_core::backend::Settle;
    use queue_core::{Delivery, Webhook};
    let secret = "0123456789abcdef";
    let url = "http://127.0.0.1:9/hooks";
    let hooks = [
        Webhook::new("all", url, secret),
        Webhook::new("failures", url, secret).events([JobStatus::Failed]),
        Webhook::new("books", url, secret).task("book"),
        Webhook::new("p7", url, secret).group("pub-7"),
    ];
    for hook in &hooks {
        h.backend.put_webhook(hook).await.expect("put webhook");
    }
    match h
        .backend
        .put_webhook(&Webhook::new("bad", "ftp://x", secret))
        .await
    {
        Err(Error::InvalidArgument { message }) => assert!(message.contains("url"), "{message}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let listed: Vec<String> = h
        .backend
        .webhooks()
        .await
        .expect("webhooks")
        .into_iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(listed, ["all", "books", "failures", "p7"]);

    let done = enqueue(h, job(1)).await;
    let lease = claim_one(h).await;
    finish(h, &lease, completed()).await;
    let book = enqueue(
        h,
        NewJob::new("book", &json!({ "n": 2 }))
            .unwrap()
            .group("pub-7")
            .unique_key("book-2"),
    )
    .await;
    let lease = claim_one(h).await;
    finish(
        h,
        &lease,
        Outcome::Failed {
            error: "bad".into(),
        },
    )
    .await;
    let gone = enqueue(h, job(3)).await;
    h.backend.cancel(gone.job_id).await.expect("cancel");
    let _waiting = enqueue(h, job(4)).await;

    let mut pending: Vec<(String, JobId, JobStatus)> = h
        .backend
        .deliveries(false, 100)
        .await
        .expect("deliveries")
        .into_iter()
        .map(|d| (d.webhook, d.job_id, d.event))
        .collect();
    pending.sort();
    let mut want = vec![
        ("all".to_owned(), done.job_id, JobStatus::Completed),
        ("all".to_owned(), book.job_id, JobStatus::Failed),
        ("all".to_owned(), gone.job_id, JobStatus::Cancelled),
        ("books".to_owned(), book.job_id, JobStatus::Failed),
        ("failures".to_owned(), book.job_id, JobStatus::Failed),
        ("p7".to_owned(), book.job_id, JobStatus::Failed),
    ];
    want.sort();
    assert_eq!(
        pending, want,
        "one delivery per (finished job, webhook that wants it)"
    );

    let claimed = h
        .backend
        .claim_deliveries(100, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 6);
    for c in &claimed {
        let d = &c.delivery;
        assert_eq!(d.id, Delivery::id_of(d.job_id, d.event, d.at, &d.webhook));
        assert_eq!(d.attempts, 0);
        assert_eq!(c.webhook.as_ref().map(|w| w.secret.as_str()), Some(secret));
        if d.job_id == book.job_id {
            assert_eq!(
                (d.task.as_str(), d.group.as_deref(), d.unique_key.as_deref()),
                ("book", Some("pub-7"), Some("book-2"))
            );
        }
    }
    assert!(
        h.backend
            .claim_deliveries(100, Duration::from_secs(60))
            .await
            .expect("claim")
            .is_empty(),
        "claimed deliveries are hidden for their lease"
    );
    let hook = &hooks[0];
    let (a, b, c) = (&claimed[0], &claimed[1], &claimed[2]);
    assert!(
        h.backend
            .settle_delivery(&a.delivery.id, &a.stored, Settle::Remove)
            .await
            .unwrap()
    );
    let (retried, wait) = b
        .delivery
        .failed(hook, "503 Service Unavailable", h.clock.now_ms());
    let wait = wait.expect("retried");
    let settled = Settle::Retry(retried.encode(), Duration::from_secs(10).max(wait));
    assert!(
        h.backend
            .settle_delivery(&b.delivery.id, &b.stored, settled)
            .await
            .unwrap()
    );
    let mut parked = c.delivery.clone();
    parked.attempts = hook.max_attempts;
    parked.parked = true;
    parked.last_error = Some("connection refused".into());
    assert!(
        h.backend
            .settle_delivery(&c.delivery.id, &c.stored, Settle::Park(parked.encode()))
            .await
            .unwrap()
    );
    // A settle based on a stale claim changes nothing.
    assert!(
        !h.backend
            .settle_delivery(&b.delivery.id, &b.stored, Settle::Remove)
            .await
            .unwrap()
    );

    // The lease ran out: the three unsettled deliveries come back; the retry after its wait.
    h.advance(Duration::from_secs(61));
    let again = h
        .backend
        .claim_deliveries(100, Duration::from_secs(60))
        .await
        .expect("claim");
    let ids: HashSet<String> = again.iter().map(|c| c.delivery.id.clone()).collect();
    assert_eq!(again.len(), 4, "three whose lease expired and the retry");
    assert!(
        ids.contains(&b.delivery.id)
            && !ids.contains(&a.delivery.id)
            && !ids.contains(&c.delivery.id)
    );
    let retry = again
        .iter()
        .find(|x| x.delivery.id == b.delivery.id)
        .unwrap();
    assert_eq!(retry.delivery.attempts, 1);
    assert_eq!(
        retry.delivery.last_error.as_deref(),
        Some("503 Service Unavailable")
    );

    let parked_list = h.backend.deliveries(true, 10).await.expect("parked");
    assert_eq!(parked_list.len(), 1);
    assert_eq!(parked_list[0].id, c.delivery.id);
    assert!(parked_list[0].parked);
    assert!(h.backend.resend_delivery(&c.delivery.id).await.unwrap());
    assert!(
        !h.backend.resend_delivery(&c.delivery.id).await.unwrap(),
        "no longer parked"
    );
    assert!(!h.backend.resend_delivery("no-such-delivery").await.unwrap());
    let resent = h
        .backend
        .claim_deliveries(100, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].delivery.id, c.delivery.id);
    assert_eq!(resent[0].delivery.attempts, 0, "counted from zero again");
    assert!(!resent[0].delivery.parked);

    // A deleted webhook's deliveries, pending and parked, go with it.
    let of_books = |ds: &[queue_core::Delivery]| ds.iter().filter(|d| d.webhook == "books").count();
    assert!(of_books(&h.backend.deliveries(false, 100).await.unwrap()) > 0);
    assert!(h.backend.delete_webhook("books").await.unwrap());
    assert!(!h.backend.delete_webhook("books").await.unwrap());
    h.advance(Duration::from_secs(61));
    for parked in [false, true] {
        let left = h.backend.deliveries(parked, 100).await.unwrap();
        assert_eq!(of_books(&left), 0, "parked {parked}: {left:?}");
    }
    let last = h
        .backend
        .claim_deliveries(100, Duration::from_secs(60))
        .await
        .expect("claim");
    assert!(last.iter().all(|c| c.delivery.webhook != "books"));
    // No webhook: no delivery.
    for name in ["all", "failures", "p7"] {
        h.backend.delete_webhook(name).await.unwrap();
    }
    let quiet = enqueue(h, job(5)).await;
    h.backend.cancel(quiet.job_id).await.unwrap();
    let pending = h.backend.deliveries(false, 100).await.unwrap();
    assert!(pending.iter().all(|d| d.job_id != quiet.job_id));
}
