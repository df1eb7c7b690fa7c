//! Claims and leases on a real Postgres: exclusive claims under racing workers, priority
//! then FIFO, fenced finishes answered once, retries due on the clock, expired leases
//! recovered in place, heartbeats.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use queue_core::backend::{ClaimRequest, LeaseRef, Outcome, WorkerBeat};
use queue_core::{Error, JobStatus, LeaseToken, ManualClock, NewJob, Priority, WorkerId};
use support::TestSchema;

fn job(n: u32) -> NewJob {
    NewJob::new("pg", &serde_json::json!({ "n": n })).unwrap()
}

fn n_of(job: &queue_core::JobRecord) -> u64 {
    job.payload.to_value()["n"].as_u64().unwrap()
}

fn beat(worker: &str) -> WorkerBeat {
    WorkerBeat {
        worker: WorkerId::new(worker),
        host: "test-host".into(),
        pid: 42,
        concurrency: 3,
        version: "1.2.3".into(),
        tasks: vec!["pg".into()],
        schemas: Default::default(),
        started_at: queue_core::backend::from_millis(0),
        lease: Duration::from_secs(30),
        interval: Duration::from_secs(10),
    }
}

fn req(worker: &str, max: usize) -> ClaimRequest {
    ClaimRequest::new(WorkerId::new(worker), max, Duration::from_secs(30))
}

#[tokio::test]
async fn claims_are_exclusive_under_racing_workers() {
    let s = TestSchema::new();
    let q = s.backend().await;
    let out = q.enqueue_many((0..300).map(job).collect()).await.unwrap();
    assert!(out.iter().all(Result::is_ok));
    let mut racers = Vec::new();
    for w in 0..6 {
        let q = q.clone();
        racers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let leases = q
                    .fetch(&req(&format!("w{w}"), 7), Duration::ZERO)
                    .await
                    .unwrap();
                if leases.is_empty() {
                    return got;
                }
                got.extend(leases.into_iter().map(|l| l.job.job_id));
            }
        }));
    }
    let mut all = Vec::new();
    for r in racers {
        all.extend(r.await.unwrap());
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 300, "every job claimed");
    assert_eq!(distinct.len(), 300, "no job claimed twice");
}

#[tokio::test]
async fn priority_then_fifo_and_a_resent_claim_takes_nothing_more() {
    let s = TestSchema::new();
    let q = s.backend().await;
    q.enqueue(job(1).priority(Priority::Low)).await.unwrap();
    q.enqueue(job(2)).await.unwrap();
    q.enqueue(job(3).priority(Priority::High)).await.unwrap();
    q.enqueue(job(4)).await.unwrap();
    let first = req("w1", 3);
    let leases = q.fetch(&first, Duration::ZERO).await.unwrap();
    let order: Vec<u64> = leases.iter().map(|l| n_of(&l.job)).collect();
    assert_eq!(order, [3, 2, 4]);
    assert!(leases.iter().all(|l| l.job.status == JobStatus::Processing));
    // The reply was lost: the same request answers the same leases, takes no more.
    let again = q.fetch(&first, Duration::ZERO).await.unwrap();
    // Answered oldest first, by start then id: compared as sets here.
    let ids = |ls: &[queue_core::backend::Lease]| {
        let mut v: Vec<_> = ls.iter().map(|l| (l.job.job_id, l.token.clone())).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&again), ids(&leases));
    let rest = q.fetch(&req("w1", 10), Duration::ZERO).await.unwrap();
    assert_eq!(rest.iter().map(|l| n_of(&l.job)).collect::<Vec<_>>(), [1]);
}

#[tokio::test]
async fn a_finish_is_fenced_by_its_token_and_answered_once() {
    let s = TestSchema::new();
    let q = s.backend().await;
    let rec = q.enqueue(job(1).unique_key("k")).await.unwrap();
    let lease = q
        .fetch(&req("w1", 1), Duration::ZERO)
        .await
        .unwrap()
        .pop()
        .unwrap();
    let stranger = LeaseRef {
        job_id: rec.job_id,
        token: LeaseToken::new("not-the-token"),
    };
    let done = Outcome::Completed {
        result: Some(serde_json::json!({"pages": 3})),
    };
    assert!(matches!(
        q.finish(&stranger, done.clone()).await,
        Err(Error::LeaseLost { .. })
    ));
    assert_eq!(
        q.finish(&lease.to_ref(), done.clone()).await.unwrap(),
        JobStatus::Completed
    );
    // Sent again (its reply was lost): the status it produced, not LeaseLost.
    assert_eq!(
        q.finish(&lease.to_ref(), done).await.unwrap(),
        JobStatus::Completed
    );
    let stored = q.get(rec.job_id).await.unwrap();
    assert_eq!(stored.status, JobStatus::Completed);
    assert_eq!(stored.result, Some(serde_json::json!({"pages": 3})));
    assert_eq!(stored.progress, 100);
    // The finished job no longer holds its unique key.
    q.enqueue(job(2).unique_key("k")).await.unwrap();
}

#[tokio::test]
async fn a_retry_waits_for_its_time_then_runs_again() {
    let s = TestSchema::new();
    let clock = ManualClock::at(1_800_000_000_000);
    let q = s.backend_at(&clock).await;
    let rec = q.enqueue(job(1).max_retries(1)).await.unwrap();
    let lease = q
        .fetch(&req("w1", 1), Duration::ZERO)
        .await
        .unwrap()
        .pop()
        .unwrap();
    let retry = Outcome::Retry {
        error: "flaky".into(),
        delay: Duration::from_secs(60),
    };
    assert_eq!(
        q.finish(&lease.to_ref(), retry.clone()).await.unwrap(),
        JobStatus::Queued
    );
    assert!(
        q.fetch(&req("w1", 1), Duration::ZERO)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    clock.advance(Duration::from_secs(60));
    let lease = q
        .fetch(&req("w1", 1), Duration::ZERO)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(lease.job.job_id, rec.job_id);
    assert_eq!(lease.job.retry_count, 1);
    // No retries left: the next retry fails the job.
    assert_eq!(
        q.finish(&lease.to_ref(), retry).await.unwrap(),
        JobStatus::Failed
    );
    let stored = q.get(rec.job_id).await.unwrap();
    assert_eq!(stored.error_message.as_deref(), Some("flaky"));
    assert_eq!(stored.attempts.len(), 2);
}

#[tokio::test]
async fn an_expired_lease_is_recovered_in_place_and_its_holder_fenced_out() {
    let s = TestSchema::new();
    let clock = ManualClock::at(1_800_000_000_000);
    let q = s.backend_at(&clock).await;
    q.enqueue(job(1)).await.unwrap();
    q.enqueue(job(2)).await.unwrap();
    let old = q
        .fetch(&req("w1", 1), Duration::ZERO)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(n_of(&old.job), 1);
    // Renewed while alive.
    clock.advance(Duration::from_secs(20));
    let reply = q.heartbeat(&beat("w1"), &[old.to_ref()]).await.unwrap();
    assert!(reply.lost.is_empty() && reply.cancel.is_empty());
    clock.advance(Duration::from_secs(20));
    assert!(
        q.reap(100).await.unwrap().is_empty(),
        "renewed: not expired"
    );
    clock.advance(Duration::from_secs(11));
    assert_eq!(q.reap(100).await.unwrap(), vec![old.job.job_id]);
    let reply = q.heartbeat(&beat("w1"), &[old.to_ref()]).await.unwrap();
    assert_eq!(reply.lost, vec![old.to_ref()]);
    // Back at its old place: before job 2.
    let next = q
        .fetch(&req("w2", 1), Duration::ZERO)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!((n_of(&next.job), next.job.retry_count), (1, 1));
    let late = q
        .finish(&old.to_ref(), Outcome::Completed { result: None })
        .await;
    assert!(matches!(late, Err(Error::LeaseLost { .. })), "{late:?}");
    assert_eq!(
        q.get(next.job.job_id).await.unwrap().status,
        JobStatus::Processing
    );
}

/// A heartbeat and a finish that claims the next jobs, racing over the same leases, never
/// deadlock: both lock the jobs' rows (in id order) before the queue's row. (The heartbeat
/// used to lock the queue's row first: Postgres broke the cycle after its 1 s
/// `deadlock_timeout` by failing one of the two, which under load kept outcomes from being
/// stored in time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_and_a_finish_never_deadlock() {
    use queue_core::backend::Ending;
    let s = TestSchema::new();
    let q = s.backend().await;
    let out = q.enqueue_many((0..400).map(job).collect()).await.unwrap();
    assert!(out.iter().all(Result::is_ok));
    let mut leases = q.fetch(&req("w", 4), Duration::ZERO).await.unwrap();
    for round in 0..60 {
        assert!(!leases.is_empty(), "round {round}: jobs left to claim");
        let refs: Vec<LeaseRef> = leases.iter().map(|l| l.to_ref()).collect();
        let endings: Vec<Ending> = refs
            .iter()
            .map(|lease| Ending {
                lease: lease.clone(),
                outcome: Outcome::Completed { result: None },
            })
            .collect();
        let (beat_q, finish_q) = (q.clone(), q.clone());
        let beating = tokio::spawn(async move { beat_q.heartbeat(&beat("w"), &refs).await });
        let finishing =
            tokio::spawn(async move { finish_q.finish_many(endings, Some(req("w", 4))).await });
        let beat = beating.await.unwrap();
        assert!(beat.is_ok(), "round {round}: heartbeat: {beat:?}");
        let done = finishing.await.unwrap();
        let done = done.unwrap_or_else(|e| panic!("round {round}: finish: {}", e.chain()));
        assert!(done.statuses.iter().all(Result::is_ok), "round {round}");
        leases = done.next;
    }
}
