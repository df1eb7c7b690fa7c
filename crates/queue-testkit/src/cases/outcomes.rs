//! What each outcome of an attempt makes of the job: retries, backoff, snooze, release, results and the attempt history.

use super::*;

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
    let a = enqueue(h, ordered(h, 1)).await;
    enqueue(h, ordered(h, 2)).await;
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

/// A finish dropped at any point (a reporter giving up at its deadline, a task aborted)
/// strands nothing: its endings apply whole, and the jobs its claim took are either
/// returned or handed back, using no attempt. The abort lands further into the call each
/// round.
pub async fn a_dropped_finish_strands_nothing(h: &Harness) {
    for n in 0..40 {
        enqueue(h, job(n)).await;
    }
    for round in 0..20u64 {
        // A finish given up on goes on, on its own task, and may claim (and hand back) after
        // its caller moved on: wait for a job to be free.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let lease = loop {
            if let Some(lease) = fetch(h, 1).await.pop() {
                break lease;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: no job free"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let ending = Ending::handed_back(&lease);
        let (backend, sent) = (Arc::clone(&h.backend), ending.clone());
        let task =
            tokio::spawn(async move { backend.finish_many(vec![sent], Some(req("w1", 40))).await });
        tokio::time::sleep(Duration::from_micros(150 * round)).await;
        task.abort();
        match task.await {
            // It returned before the abort: what it took is this caller's to hand back.
            Ok(Ok(done)) => {
                let endings = done.next.iter().map(Ending::handed_back).collect();
                h.backend.finish_many(endings, None).await.unwrap();
            }
            // No answer: the caller sends its ending again, without a claim. Applied
            // before, it answers the same, or that the attempt is over when its claim took
            // the job again and handed it back since.
            _ => {
                let again = h.backend.finish_many(vec![ending], None).await.unwrap();
                assert!(
                    matches!(
                        again.statuses[..],
                        [Ok(JobStatus::Queued) | Err(Error::LeaseLost { .. })]
                    ),
                    "round {round}: {:?}",
                    again.statuses
                );
            }
        }
        all_queued_again(h, round, 40).await;
    }
    let page = h.backend.list(&ListQuery::new().limit(100)).await.unwrap();
    assert!(
        page.jobs
            .iter()
            .all(|j| j.retry_count == 0 && j.attempts.is_empty()),
        "a handed-back job used no attempt"
    );
}
