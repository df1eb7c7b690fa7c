//! Retention: finished jobs leave every index, never a waiting parent's children.

use super::*;

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
    let seen = h.backend.children(root.job_id).await.unwrap();
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

/// A sweep looks at no more than `limit` due records, kept children counted too: a parent
/// waiting on a million finished children costs each sweep `limit` records, not a million.
/// The records it did not reach keep their clock and go at a later sweep.
pub async fn a_sweep_counts_kept_children_against_its_limit(h: &Harness) {
    let root = enqueue_flow(
        h,
        flow(0)
            .child(flow(1))
            .child(flow(2))
            .child(flow(3))
            .child(flow(4)),
    )
    .await;
    // Children 1, 2 and 3 end a second apart; child 4 keeps the parent waiting.
    for n in [1, 2, 3] {
        let lease = claim_n(h, n).await;
        finish(h, &lease, completed()).await;
        h.advance(Duration::from_secs(1));
    }
    h.advance(Duration::from_secs(3600));
    assert_eq!(
        h.backend.sweep(2).await.unwrap(),
        0,
        "the two oldest are kept (their parent waits), nothing deleted"
    );
    // The parent ends: child 3, which the limit left alone, is due and goes; 1 and 2 had
    // their hour started again by the sweep that kept them.
    let four = claim_n(h, 4).await;
    finish(h, &four, completed()).await;
    let parent = claim_n(h, 0).await;
    finish(h, &parent, completed()).await;
    assert_eq!(
        h.backend.sweep(100).await.unwrap(),
        1,
        "child 3 only: the first sweep did not look at it"
    );
    let kids = h.backend.children(root.job_id).await.unwrap();
    let left: Vec<u64> = kids
        .iter()
        .map(n_of)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(left, [1, 2, 4]);
}

// ---------------------------------------------------------------------------------------
// Job schedulers.
