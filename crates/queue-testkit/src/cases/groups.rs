//! Groups: fair share by weight, concurrency, pause and the busiest-first listing.

use super::*;

/// Fair share: within a priority the lanes (each group, and the jobs without one) take
/// turns, least recently served first (queue_core::GroupStats docs); a group with 1,000
/// queued jobs does not hold back a group with 3; batch fetches follow the same order;
/// priorities stay strict.
pub async fn groups_share_fairly(h: &Harness) {
    let big = h.group_name("big");
    let small = h.group_name("small");
    let big_jobs: Vec<NewJob> = (0..1000).map(|n| in_group(n, &big)).collect();
    for r in h.backend.enqueue_many(big_jobs).await.unwrap() {
        assert_eq!(r.unwrap().group.as_deref(), Some(big.as_str()));
    }
    for n in 1000..1003 {
        enqueue(h, in_group(n, &small)).await;
    }
    enqueue(h, ordered(h, 2000)).await;
    enqueue(h, ordered(h, 2001)).await;
    let stats = h.backend.stats().await.unwrap();
    assert_eq!(stats.depth[&Priority::Normal], 1005);
    let big_stats = h.backend.group(&big).await.unwrap();
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
    assert_eq!(lease.job.group.as_deref(), Some(big.as_str()));
    assert_eq!(
        get(h, lease.job.job_id).await.group.as_deref(),
        Some(big.as_str())
    );

    // Strict priority between bands, whatever the groups.
    let urgent = enqueue(h, in_group(3000, &small).priority(Priority::High)).await;
    assert_eq!(claim_one(h).await.job.job_id, urgent.job_id);
    let big_stats = h.backend.group(&big).await.unwrap();
    assert_eq!((big_stats.ready, big_stats.running), (991, 9));
    let small = h.backend.group(&small).await.unwrap();
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
    let waiter = waiting_fetch(h, req("w2", 1), Duration::from_secs(30)).await;
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
    let ga = h.group_name("a");
    let gb = h.group_name("b");
    let a1 = enqueue(h, in_group(1, &ga)).await;
    let running = claim_one(h).await;
    assert_eq!(running.job.job_id, a1.job_id);
    let a2 = enqueue(h, in_group(2, &ga)).await;
    let a3 = enqueue(h, in_group(3, &ga)).await;
    let b1 = enqueue(h, in_group(4, &gb)).await;
    let u1 = enqueue(h, ordered(h, 5)).await;
    h.backend.pause_group(&ga).await.expect("pause a group");
    h.backend
        .pause_group(&ga)
        .await
        .expect("pausing twice is fine");
    let a = h.backend.group(&ga).await.unwrap();
    assert_eq!((a.paused, a.ready, a.running), (true, 2, 1));
    let ids: Vec<JobId> = fetch(h, 10).await.iter().map(|l| l.job.job_id).collect();
    assert_eq!(ids, vec![u1.job_id, b1.job_id], "only group `a` waits");
    assert_eq!(finish(h, &running, completed()).await, JobStatus::Completed);
    assert!(fetch(h, 10).await.is_empty());
    let waiter = waiting_fetch(h, req("w2", 5), Duration::from_secs(30)).await;
    assert!(!waiter.is_finished(), "group `a` is paused");
    h.backend.resume_group(&ga).await.expect("resume");
    h.backend
        .resume_group(&ga)
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
    assert!(!h.backend.group(&ga).await.unwrap().paused);
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

/// A group's weight: within a priority its lane is served `weight` times in a row per
/// turn, so a group of weight 3 gets three starts for each start of a group of weight 1,
/// in one batch fetch as in single ones; without the weight they alternate again.
pub async fn weighted_groups_share_in_proportion(h: &Harness) {
    let ga = h.group_name("a");
    let gb = h.group_name("b");
    for bad in [0, queue_core::backend::MAX_GROUP_WEIGHT + 1] {
        let err = h
            .backend
            .set_group_weight(&ga, Some(bad))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        assert!(err.to_string().contains("weight"), "{err}");
    }
    h.backend.set_group_weight(&ga, Some(3)).await.unwrap();
    assert_eq!(h.backend.group(&ga).await.unwrap().weight, Some(3));
    for n in 0..12 {
        enqueue(h, in_group(n, &ga)).await;
    }
    for n in 100..106 {
        enqueue(h, in_group(n, &gb)).await;
    }
    // Each group by its first letter (its name may carry a suffix: `Harness::group_name`).
    let group_of = |l: &Lease| l.job.group.clone().unwrap_or_default()[..1].to_owned();
    let mut singles = String::new();
    for _ in 0..8 {
        singles += &group_of(&claim_one(h).await);
    }
    assert_eq!(singles, "aaabaaab", "three of a for each of b");
    let batch: String = fetch(h, 4).await.iter().map(group_of).collect();
    assert_eq!(batch, "aaab", "a batch follows the same turns");
    h.backend.set_group_weight(&ga, None).await.unwrap();
    assert_eq!(h.backend.group(&ga).await.unwrap().weight, None);
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

/// A group keeps its turn across one call that takes its last ready job away and gives it
/// another: cancelling a queued child releases its parent of the same group, and the
/// group, waiting since before the jobs without a group last started, still goes next.
pub async fn a_group_keeps_its_turn_when_a_cancel_releases_its_parent(h: &Harness) {
    let gb = h.group_name("b");
    enqueue(h, ordered(h, 1)).await;
    enqueue(h, ordered(h, 2)).await;
    assert_eq!(n_of(&claim_one(h).await.job), 1);
    let child_id = JobId::new();
    let child = job(11).group(&gb).job_id(child_id);
    let parent = enqueue_flow(
        h,
        Flow::new(in_group(10, &gb)).child(Flow::new(child).on_failure(ChildPolicy::Ignore)),
    )
    .await;
    assert_eq!(
        n_of(&claim_one(h).await.job),
        2,
        "on a tie the jobs without a group go first"
    );
    enqueue(h, ordered(h, 3)).await;
    assert_eq!(
        h.backend.cancel(child_id).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(get(h, parent.job_id).await.status, JobStatus::Queued);
    let next = claim_one(h).await;
    assert_eq!(
        next.job.job_id, parent.job_id,
        "group b has waited since before job 2 started: its turn comes before job 3"
    );
    assert_eq!(n_of(&claim_one(h).await.job), 3);
}

/// A group is read by a name a job could carry: an empty name, one past
/// `MAX_GROUP_BYTES` or one holding `|` or a control character is refused by name; one at
/// the limit is read (an unknown group reads as empty).
pub async fn a_group_is_read_only_by_a_name_a_job_could_carry(h: &Harness) {
    let most = queue_core::backend::MAX_GROUP_BYTES;
    let long = "g".repeat(most);
    let stats = h.backend.group(&long).await.unwrap();
    assert_eq!((stats.ready, stats.running, stats.unfinished), (0, 0, 0));
    for bad in [
        String::new(),
        "g".repeat(most + 1),
        "a|b".into(),
        "a\nb".into(),
    ] {
        let err = h.backend.group(&bad).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { .. }),
            "{bad:?}: {err}"
        );
        assert!(err.to_string().contains("group"), "{err}");
    }
}
