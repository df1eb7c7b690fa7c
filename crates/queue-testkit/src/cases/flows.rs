//! Flows and batches: a parent released once by its children, failure policies, cancel and retry inside a flow.

use super::*;

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
    let seen = h.backend.children(root_id).await.unwrap();
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
    let batch = enqueue_flow(
        h,
        Flow::batch(ordered(h, 0), [ordered(h, 1), ordered(h, 2)]),
    )
    .await;
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
    // Children added together are checked together: one unique key twice refuses them all
    // (on a partitioned queue a member joins its batch's partition, so keyed members share
    // its partition key: `ordered`).
    let twice = |n: u32| Flow::new(ordered(h, n).unique_key("page-9"));
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
    let plain = enqueue(h, ordered(h, 5)).await;
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
            Flow::batch(
                ordered(h, 100 + round),
                [ordered(h, 1000 + round), ordered(h, 2000 + round)],
            ),
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

/// A parent and its child ending in one call (the child retried by hand while its parent
/// ran, then both ending in one `finish_many`), in either order, end as if one after the
/// other: the parent, retried, is released by its child's ending, never left waiting with
/// no child unfinished (a Redis finish of many once left it so, and listed it twice).
pub async fn a_parent_and_its_child_ending_in_one_call(h: &Harness) {
    for parent_first in [true, false] {
        let base = if parent_first { 100 } else { 200 };
        let child = Flow::new(job(base + 1).max_retries(0)).on_failure(ChildPolicy::Continue);
        let parent = enqueue_flow(h, Flow::new(job(base).max_retries(3)).child(child)).await;
        let failed = || Outcome::Failed {
            error: "asked to fail".into(),
        };
        let c = claim_n(h, u64::from(base + 1)).await;
        let child_id = c.job.job_id;
        assert_eq!(finish(h, &c, failed()).await, JobStatus::Failed);
        // Released by its only child's ending (policy `continue`): it runs.
        let p = claim_n(h, u64::from(base)).await;
        h.backend
            .retry(child_id, None)
            .await
            .expect("retry the child");
        let c = claim_n(h, u64::from(base + 1)).await;
        let (p_end, c_end) = (
            queue_core::backend::Ending {
                lease: p.to_ref(),
                outcome: retry(0),
            },
            queue_core::backend::Ending {
                lease: c.to_ref(),
                outcome: failed(),
            },
        );
        let endings = if parent_first {
            vec![p_end, c_end]
        } else {
            vec![c_end, p_end]
        };
        let done = h.backend.finish_many(endings, None).await.unwrap();
        let statuses: Vec<JobStatus> = done.statuses.into_iter().map(Result::unwrap).collect();
        let expected = if parent_first {
            [JobStatus::Queued, JobStatus::Failed]
        } else {
            [JobStatus::Failed, JobStatus::Queued]
        };
        assert_eq!(statuses, expected, "parent first: {parent_first}");
        let record = get(h, parent.job_id).await;
        assert_eq!(record.status, JobStatus::Queued);
        assert!(
            !record.waits_on_children(),
            "parent first: {parent_first}: {:?}",
            record.children
        );
        let waiting = h
            .backend
            .list(&ListQuery::default().waiting_on_children())
            .await
            .unwrap();
        assert!(waiting.jobs.is_empty(), "parent first: {parent_first}");
        assert_eq!(h.backend.stats().await.unwrap().waiting_on_children, 0);
        // Claimable once, and only once.
        let again = claim_n(h, u64::from(base)).await;
        assert_eq!(again.job.job_id, parent.job_id);
        assert_eq!(finish(h, &again, completed()).await, JobStatus::Completed);
        assert!(fetch(h, 10).await.is_empty(), "nothing else to run");
    }
}
