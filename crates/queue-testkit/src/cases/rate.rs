//! Rate limits of a queue and of a group, with job costs.

use super::*;

/// At most `max` starts in any window, over many windows and every way a job starts (a
/// fetch or a finish's next claim); held-back jobs start as the window slides; removing
/// the limit lets everything start.
pub async fn rate_limit_holds_over_many_windows(h: &Harness) {
    // On a partitioned queue the limit is split evenly among the partitions (README
    // "Partitions"): the case sets P times its limit, so the one partition its jobs share
    // (`ordered`) starts at most the limit below.
    let limit = queue_core::RateLimit::new(3 * h.partitions(), Duration::from_secs(10)).unwrap();
    h.backend.set_rate_limit(Some(limit)).await.unwrap();
    assert_eq!(h.backend.stats().await.unwrap().rate_limit, Some(limit));
    for n in 0..40 {
        enqueue(h, ordered(h, n)).await;
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
    // On a partitioned queue the limit is split evenly among the partitions (README
    // "Partitions"): the case sets P times its limit, so the one partition its jobs share
    // (`ordered`) starts at most the limit below.
    let limit = queue_core::RateLimit::new(h.partitions(), Duration::from_millis(400)).unwrap();
    h.backend.set_rate_limit(Some(limit)).await.unwrap();
    enqueue(h, ordered(h, 1)).await;
    let b = enqueue(h, ordered(h, 2)).await;
    assert_eq!(fetch(h, 10).await.len(), 1, "one start per window");
    let waiter = waiting_fetch(h, req("w2", 1), Duration::from_secs(20)).await;
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
    let a = enqueue(h, ordered(h, 1)).await;
    enqueue(h, ordered(h, 2)).await;
    let c = enqueue(h, ordered(h, 3)).await;
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

/// A job's cost counts against the queue's and its group's rate limits: a job starts only
/// when its cost fits what is left of the window (a cheaper job behind it does not
/// overtake it), a job costing more than a whole window starts alone in an empty one, and
/// a fetch held back by a cost wakes when the window has room for it.
pub async fn job_cost_counts_against_rate_limits(h: &Harness) {
    let ids = |leases: &[Lease]| -> Vec<u64> { leases.iter().map(|l| n_of(&l.job)).collect() };
    for bad in [0, queue_core::backend::MAX_COST + 1] {
        let err = h
            .backend
            .enqueue(ordered(h, 0).cost(bad))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        assert!(err.to_string().contains("cost"), "{err}");
    }
    // On a partitioned queue the limit is split evenly among the partitions (README
    // "Partitions"): the case sets P times its limit, so the one partition its jobs share
    // (`ordered`) starts at most the limit below.
    let limit = queue_core::RateLimit::new(10 * h.partitions(), Duration::from_secs(10)).unwrap();
    h.backend.set_rate_limit(Some(limit)).await.unwrap();
    let a = enqueue(h, ordered(h, 1).cost(6)).await;
    assert_eq!(a.cost, Some(6));
    assert_eq!(get(h, a.job_id).await.cost, Some(6));
    enqueue(h, ordered(h, 2).cost(5)).await;
    let c = enqueue(h, ordered(h, 3)).await;
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
    enqueue(h, ordered(h, 4).cost(25)).await;
    enqueue(h, ordered(h, 5)).await;
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
    let waiter = waiting_fetch(h, req("w2", 10), Duration::from_secs(30)).await;
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
    enqueue(h, ordered(h, 9)).await;
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
    let waiter = waiting_fetch(h, req("w2", 10), Duration::from_secs(30)).await;
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
