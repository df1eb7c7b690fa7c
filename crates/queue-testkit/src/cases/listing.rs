//! Stats and listings: what an operator reads, paged and ordered.

use super::*;

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
    let old = enqueue(h, ordered(h, 1).unique_key("book-f")).await;
    h.advance(Duration::from_secs(3000));
    let young = enqueue(h, ordered(h, 2)).await;
    h.advance(Duration::from_millis(5));
    let queued = enqueue(h, ordered(h, 3).priority(Priority::Low)).await;
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
