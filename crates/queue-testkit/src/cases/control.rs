//! Pause and resume of a queue (`Control`).

use super::*;

/// A paused queue starts nothing: claims (also the next claim of a finish) answer nothing,
/// while enqueue, cancel, finish and lease expiry go on; resume lets jobs start again.
pub async fn pause_stops_starts_until_resume(h: &Harness) {
    let running = enqueue(h, ordered(h, 1)).await;
    let lease = claim_one(h).await;
    assert_eq!(lease.job.job_id, running.job_id);
    let queued = enqueue(h, ordered(h, 2)).await;
    assert!(!h.backend.stats().await.unwrap().paused);

    h.backend.pause().await.expect("pause");
    h.backend.pause().await.expect("pausing twice is fine");
    assert!(h.backend.stats().await.unwrap().paused);
    assert!(
        fetch(h, 10).await.is_empty(),
        "a paused queue starts nothing"
    );
    // Enqueues and cancels work while paused.
    let later = enqueue(h, ordered(h, 3)).await;
    let cancelled = enqueue(h, ordered(h, 4)).await;
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
    let waiter = waiting_fetch(h, req("w1", 1), Duration::from_secs(30)).await;
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
