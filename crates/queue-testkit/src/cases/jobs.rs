//! Enqueue, unique keys, cancel and manual retry: a job's life as producers and operators see it.

use super::*;

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
        enqueue(h, ordered(h, n).priority(p)).await;
    }
    let mut order = Vec::new();
    for lease in fetch(h, 3).await.into_iter().chain(fetch(h, 10).await) {
        assert_eq!(lease.job.status, JobStatus::Processing);
        order.push(n_of(&lease.job));
    }
    assert_eq!(order, [3, 5, 2, 4, 7, 1, 6]);
    // A default-priority job is `normal`.
    let r = enqueue(h, ordered(h, 8)).await;
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
    let first = enqueue(h, ordered(h, 1).unique_key("book-1")).await;
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
            .enqueue(ordered(h, 2).unique_key("book-1"))
            .await
            .unwrap_err(),
    );
    enqueue(h, ordered(h, 3).unique_key("book-2")).await;
    let lease = claim_one(h).await;
    assert_eq!(lease.job.job_id, first.job_id);
    refused(
        h.backend
            .enqueue(ordered(h, 4).unique_key("book-1"))
            .await
            .unwrap_err(),
    );
    finish(h, &lease, completed()).await;
    let second = enqueue(h, ordered(h, 5).unique_key("book-1")).await;
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
    enqueue(h, ordered(h, 6).unique_key("book-1")).await;
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
            ordered(h, 1).unique_key("k"),
            ordered(h, 2).unique_key("k"),
            ordered(h, 3).priority(Priority::High),
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

/// Manual retry of failed, partial and cancelled jobs, with a new priority; refused for
/// completed and active jobs, and while another job holds the unique key.
pub async fn manual_retry(h: &Harness) {
    let a = enqueue(h, ordered(h, 1).unique_key("book-m").max_retries(0)).await;
    let lease = claim_one(h).await;
    finish(h, &lease, retry(1)).await;
    assert_eq!(get(h, a.job_id).await.status, JobStatus::Failed);
    enqueue(h, ordered(h, 2)).await; // normal, queued before the retry
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
    let c = enqueue(h, ordered(h, 3).unique_key("book-c")).await;
    h.backend.cancel(c.job_id).await.unwrap();
    // Someone else took the key meanwhile: refused, naming them.
    let taker = enqueue(h, ordered(h, 4).unique_key("book-c")).await;
    match h.backend.retry(c.job_id, None).await.unwrap_err() {
        Error::AlreadyExists { job_id, .. } => assert_eq!(job_id, taker.job_id),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert!(matches!(
        h.backend.retry(JobId::new(), None).await,
        Err(Error::NotFound { .. })
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
    let mut events = h.backend.subscribe(None).await.unwrap();
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
    // A wait follows the queue's events: once its stream is open, an ending wakes it. That
    // it did not return while the job ran shows in what it returns: the completed record.
    let blocked = h.blocked();
    let waiter = spawn_wait(a.job_id);
    h.until_blocked(blocked + 1).await;
    let lease = claim_one(h).await;
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
    let blocked = h.blocked();
    let waiter_b = spawn_wait(b.job_id);
    let waiter_c = spawn_wait(c.job_id);
    h.until_blocked(blocked + 2).await;
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
    // Job 3's waiter was not woken by job 2's ending: it returns only when job 3 ends,
    // with job 3's record.
    assert!(!waiter_c.is_finished(), "job 3 is still queued");
    assert_eq!(
        h.backend.cancel(c.job_id).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let cancelled = tokio::time::timeout(Duration::from_secs(3), waiter_c)
        .await
        .expect("job 3's cancel wakes its waiter")
        .unwrap()
        .unwrap();
    assert_eq!(
        (cancelled.job_id, cancelled.status),
        (c.job_id, JobStatus::Cancelled)
    );
}
