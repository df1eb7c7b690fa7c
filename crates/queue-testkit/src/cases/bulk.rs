//! Bulk actions and deletes: resumable, each job acted on once.

use super::*;

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
