//! Claims and leases: exclusive claims, fences, heartbeats, replays of a lost reply, finishes and the sweep of expired leases.

use super::*;

/// An expired lease puts the job back in its old place (counting an attempt), fails it
/// when no retries are left, and cancels it when a cancel was requested.
pub async fn expired_lease_requeues_in_place(h: &Harness) {
    let a = enqueue(h, ordered(h, 1)).await;
    enqueue(h, ordered(h, 2)).await;
    enqueue(h, ordered(h, 3)).await;
    let lease = claim_one(h).await;
    assert_eq!(lease.job.job_id, a.job_id);
    h.advance(LEASE - Duration::from_secs(1));
    assert!(
        h.backend.reap(100).await.unwrap().is_empty(),
        "lease not yet expired"
    );
    h.advance(Duration::from_secs(2));
    assert_eq!(h.backend.reap(100).await.unwrap(), vec![a.job_id]);
    let r = get(h, a.job_id).await;
    assert_eq!((r.status, r.retry_count), (JobStatus::Queued, 1));
    assert!(
        r.error_message
            .as_deref()
            .unwrap_or("")
            .contains("lease expired")
    );
    assert_eq!(r.worker_id, None);
    let order: Vec<u64> = fetch(h, 10).await.iter().map(|l| n_of(&l.job)).collect();
    assert_eq!(order, [1, 2, 3], "the recovered job keeps its place");
    assert_eq!(h.backend.stats().await.unwrap().totals.recovered, 1);

    // No retries left: failed. Cancel requested: cancelled.
    let b = enqueue(h, ordered(h, 4).max_retries(0)).await;
    let c = enqueue(h, ordered(h, 5)).await;
    let held = fetch(h, 2).await;
    assert_eq!(held.len(), 2);
    h.backend.cancel(c.job_id).await.unwrap();
    h.advance(LEASE * 2);
    let mut reaped = h.backend.reap(100).await.unwrap();
    reaped.sort();
    assert!(reaped.contains(&b.job_id) && reaped.contains(&c.job_id));
    let rb = get(h, b.job_id).await;
    assert_eq!(rb.status, JobStatus::Failed);
    assert!(rb.error_message.unwrap().contains("lease expired"));
    assert_eq!(get(h, c.job_id).await.status, JobStatus::Cancelled);
}

/// A holder whose lease expired (reaped or not) cannot finish, update or renew the job.
pub async fn expired_holder_cannot_write(h: &Harness) {
    let a = enqueue(h, job(1)).await;
    let lease = claim_one(h).await;
    let forged = LeaseRef {
        job_id: a.job_id,
        token: LeaseToken::new("forged"),
    };
    assert!(matches!(
        h.backend.progress(&forged, 5, None).await,
        Err(Error::LeaseLost { .. })
    ));
    h.advance(LEASE + Duration::from_secs(1));
    let lost = |r: Result<_, Error>| match r {
        Err(Error::LeaseLost { id }) => assert_eq!(id, a.job_id),
        Err(other) => panic!("expected LeaseLost, got {other:?}"),
        Ok(_) => panic!("expected LeaseLost, got Ok"),
    };
    lost(
        h.backend
            .progress(&lease.to_ref(), 50, None)
            .await
            .map(|_| ()),
    );
    lost(
        h.backend
            .finish(&lease.to_ref(), completed(), None)
            .await
            .map(|_| ()),
    );
    let reply = h
        .backend
        .heartbeat(&beat("w1"), &[lease.to_ref()])
        .await
        .unwrap();
    assert_eq!(reply.lost, vec![lease.to_ref()]);
    let r = get(h, a.job_id).await;
    assert_eq!(
        (r.status, r.progress),
        (JobStatus::Processing, 0),
        "nothing changed"
    );
    h.backend.reap(10).await.unwrap();
    let second = claim_one(h).await;
    lost(
        h.backend
            .finish(&lease.to_ref(), completed(), None)
            .await
            .map(|_| ()),
    );
    assert_eq!(finish(h, &second, completed()).await, JobStatus::Completed);
}

/// Heartbeats renew leases and register the worker.
pub async fn heartbeat_extends_lease(h: &Harness) {
    let a = enqueue(h, job(1)).await;
    let lease = claim_one(h).await;
    h.advance(Duration::from_secs(20));
    let reply = h
        .backend
        .heartbeat(&beat("w1"), &[lease.to_ref()])
        .await
        .unwrap();
    assert!(reply.lost.is_empty() && reply.cancel.is_empty());
    h.advance(Duration::from_secs(20));
    assert!(
        h.backend.reap(10).await.unwrap().is_empty(),
        "renewed lease must not expire"
    );
    let workers = h.backend.workers().await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].worker_id, "w1");
    assert_eq!(workers[0].jobs, vec![a.job_id]);
    assert_eq!((workers[0].pid, workers[0].concurrency), (42, 3));
    assert_eq!(
        (workers[0].version.as_str(), workers[0].tasks.as_slice()),
        ("1.2.3", ["model".to_owned()].as_slice()),
        "what it runs"
    );
    assert_eq!(
        workers[0].schemas,
        beat("w1").schemas,
        "the payload schemas it shares with operators"
    );
    assert_eq!(h.backend.stats().await.unwrap().active_workers, 1);
    assert_eq!(finish(h, &lease, completed()).await, JobStatus::Completed);
    h.backend.deregister(&WorkerId::new("w1")).await.unwrap();
    assert!(h.backend.workers().await.unwrap().is_empty());
    // A worker that stops beating drops out after three intervals: no longer counted,
    // listed as lost (with the job it still held) for an hour, then forgotten.
    let b = enqueue(h, job(2)).await;
    let held = h
        .backend
        .fetch(&req("w2", 1), Duration::ZERO)
        .await
        .unwrap();
    h.backend
        .heartbeat(&beat("w2"), &[held[0].to_ref()])
        .await
        .unwrap();
    h.advance(Duration::from_secs(31));
    assert_eq!(h.backend.stats().await.unwrap().active_workers, 0);
    h.backend.heartbeat(&beat("w3"), &[]).await.unwrap();
    let listed: Vec<(String, bool)> = h
        .backend
        .workers()
        .await
        .unwrap()
        .into_iter()
        .map(|w| (w.worker_id, w.lost))
        .collect();
    assert_eq!(listed, [("w2".to_owned(), true), ("w3".to_owned(), false)]);
    let lost = &h.backend.workers().await.unwrap()[0];
    assert_eq!(
        (lost.jobs.as_slice(), lost.version.as_str()),
        ([b.job_id].as_slice(), "1.2.3")
    );
    h.advance(Duration::from_secs(3600));
    h.backend.heartbeat(&beat("w3"), &[]).await.unwrap();
    let ids: Vec<String> = h
        .backend
        .workers()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.worker_id)
        .collect();
    assert_eq!(ids, ["w3"], "forgotten an hour later");
    assert_eq!(h.backend.stats().await.unwrap().active_workers, 1);
}

/// Progress never goes backwards within an attempt; the step is stored (an empty one clears it).
pub async fn progress_never_goes_backwards(h: &Harness) {
    let a = enqueue(h, job(1)).await;
    let lease = claim_one(h).await;
    h.backend
        .progress(&lease.to_ref(), 40, Some("segmentation".into()))
        .await
        .unwrap();
    h.backend
        .progress(&lease.to_ref(), 20, Some("topic_analysis".into()))
        .await
        .unwrap();
    let r = get(h, a.job_id).await;
    assert_eq!(r.progress, 40);
    assert_eq!(r.current_step.as_deref(), Some("topic_analysis"));
    h.backend.progress(&lease.to_ref(), 55, None).await.unwrap();
    let r = get(h, a.job_id).await;
    assert_eq!(
        (r.progress, r.current_step.as_deref()),
        (55, Some("topic_analysis"))
    );
    // An empty step name clears the step.
    h.backend
        .progress(&lease.to_ref(), 60, Some(String::new()))
        .await
        .unwrap();
    let r = get(h, a.job_id).await;
    assert_eq!((r.progress, r.current_step.as_deref()), (60, None));
    assert!(matches!(
        h.backend.progress(&lease.to_ref(), 101, None).await,
        Err(Error::InvalidArgument { .. })
    ));
}

/// Concurrent fetchers never lease the same job twice.
pub async fn claims_are_exclusive(h: &Harness) {
    let jobs: Vec<NewJob> = (0..200).map(job).collect();
    for r in h.backend.enqueue_many(jobs).await.unwrap() {
        r.unwrap();
    }
    let fetchers: Vec<_> = (0..8)
        .map(|w| {
            let backend = Arc::clone(&h.backend);
            tokio::spawn(async move {
                let mut ids = Vec::new();
                loop {
                    let leases = backend
                        .fetch(&req(&format!("w{w}"), 7), Duration::ZERO)
                        .await
                        .unwrap();
                    if leases.is_empty() {
                        return ids;
                    }
                    ids.extend(leases.into_iter().map(|l| l.job.job_id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for f in fetchers {
        all.extend(f.await.unwrap());
    }
    let unique: HashSet<JobId> = all.iter().copied().collect();
    assert_eq!(all.len(), 200);
    assert_eq!(unique.len(), 200, "a job was leased twice");
}

/// Finishing a job can lease the next one in the same call.
pub async fn finish_claims_next(h: &Harness) {
    enqueue(h, job(1)).await;
    let b = enqueue(h, job(2)).await;
    let lease = claim_one(h).await;
    let done = h
        .backend
        .finish(&lease.to_ref(), completed(), Some(req("w1", 5)))
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    let next = done.next.expect("the next job is leased");
    assert_eq!(next.job.job_id, b.job_id);
    assert_eq!(next.job.status, JobStatus::Processing);
    let done = h
        .backend
        .finish(&next.to_ref(), completed(), Some(req("w1", 5)))
        .await
        .unwrap();
    assert!(done.next.is_none());
}

/// Several attempts end in one call, each answered on its own, and up to `max` next jobs
/// are leased; sent again, the call answers the same.
pub async fn finish_many_ends_each_and_claims_next(h: &Harness) {
    for n in 0..6 {
        enqueue(h, ordered(h, n)).await;
    }
    let leases = fetch(h, 3).await;
    let forged = LeaseRef {
        job_id: leases[2].job.job_id,
        token: LeaseToken::new("forged"),
    };
    let endings = vec![
        queue_core::backend::Ending {
            lease: leases[0].to_ref(),
            outcome: completed(),
        },
        queue_core::backend::Ending {
            lease: leases[1].to_ref(),
            outcome: retry(10),
        },
        queue_core::backend::Ending {
            lease: forged,
            outcome: completed(),
        },
    ];
    let next = req("w1", 2);
    let done = h
        .backend
        .finish_many(endings.clone(), Some(next.clone()))
        .await
        .unwrap();
    let statuses: Vec<_> = done
        .statuses
        .iter()
        .map(|r| r.as_ref().map(|s| *s).map_err(|e| e.to_string()))
        .collect();
    assert_eq!(statuses[0], Ok(JobStatus::Completed));
    assert_eq!(statuses[1], Ok(JobStatus::Queued));
    assert!(
        matches!(&done.statuses[2], Err(Error::LeaseLost { .. })),
        "{:?}",
        statuses[2]
    );
    let took: Vec<u64> = done.next.iter().map(|l| n_of(&l.job)).collect();
    assert_eq!(took, [3, 4], "up to max, in order");
    let again = h.backend.finish_many(endings, Some(next)).await.unwrap();
    assert_eq!(
        again
            .statuses
            .iter()
            .map(|r| r.as_ref().ok().copied())
            .collect::<Vec<_>>(),
        [Some(JobStatus::Completed), Some(JobStatus::Queued), None]
    );
    let tokens = |l: &[Lease]| l.iter().map(|l| l.token.clone()).collect::<Vec<_>>();
    assert_eq!(tokens(&again.next), tokens(&done.next), "the same leases");
    let s = h.backend.stats().await.unwrap();
    assert_eq!((s.completed, s.processing, s.totals.completed), (1, 3, 1));
}

/// An idle fetch waits for work and returns as soon as a job arrives (no polling delay).
pub async fn fetch_waits_for_work(h: &Harness) {
    let waiter = waiting_fetch(h, req("w1", 1), Duration::from_secs(10)).await;
    let a = enqueue(h, job(1)).await;
    let leases = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("a waiting fetch must wake up when a job is enqueued")
        .unwrap()
        .unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].job.job_id, a.job_id);
    // With nothing to do, a fetch returns empty after its wait.
    let empty = h
        .backend
        .fetch(&req("w1", 1), Duration::from_millis(20))
        .await
        .unwrap();
    assert!(empty.is_empty());
}

/// A fetch dropped at any point (a worker stopping, a task aborted) strands nothing: what
/// its claim took is either returned or handed back, using no attempt. The abort lands
/// further into the call each round.
pub async fn a_dropped_fetch_strands_nothing(h: &Harness) {
    for n in 0..40 {
        enqueue(h, job(n)).await;
    }
    for round in 0..20u64 {
        let backend = Arc::clone(&h.backend);
        let task = tokio::spawn(async move { backend.fetch(&req("w1", 40), Duration::ZERO).await });
        tokio::time::sleep(Duration::from_micros(150 * round)).await;
        task.abort();
        if let Ok(Ok(leases)) = task.await {
            // It returned before the abort: what it took is this caller's to hand back.
            let endings = leases.iter().map(Ending::handed_back).collect();
            h.backend.finish_many(endings, None).await.unwrap();
        }
        all_queued_again(h, round, 40).await;
    }
    let page = h.backend.list(&ListQuery::new().limit(100)).await.unwrap();
    assert_eq!(page.jobs.len(), 40);
    assert!(
        page.jobs
            .iter()
            .all(|j| j.retry_count == 0 && j.attempts.is_empty()),
        "a handed-back job used no attempt"
    );
}

/// A claim sent again with the same request id (its reply was lost, or a client re-sent
/// it) answers the leases the first one took and still held, and takes nothing more.
pub async fn claim_sent_twice_takes_nothing_more(h: &Harness) {
    for n in 0..4 {
        enqueue(h, job(n)).await;
    }
    let request = req("w1", 2);
    let first = h.backend.fetch(&request, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), 2);
    let again = h.backend.fetch(&request, Duration::ZERO).await.unwrap();
    let tokens = |leases: &[Lease]| {
        let mut v: Vec<(JobId, LeaseToken)> = leases
            .iter()
            .map(|l| (l.job.job_id, l.token.clone()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        tokens(&again),
        tokens(&first),
        "the same leases, not new ones"
    );
    assert_eq!(h.backend.stats().await.unwrap().processing, 2);
    // Once one of them ended, the replay answers the other only.
    finish(h, &first[0], completed()).await;
    let again = h.backend.fetch(&request, Duration::ZERO).await.unwrap();
    assert_eq!(tokens(&again), tokens(&first[1..]));
    // A new request takes new jobs.
    assert_eq!(fetch(h, 10).await.len(), 2);
    assert_eq!(h.backend.stats().await.unwrap().processing, 3);
}

/// A worker's request history is forgotten when it deregisters; an old request id it then
/// sends again may have claimed twice. Sent again once more, it answers deterministically:
/// what it holds, oldest first, at most what it asks for (found by the model check).
pub async fn claim_replay_answers_oldest_first(h: &Harness) {
    let a = enqueue(h, ordered(h, 1)).await;
    let b = enqueue(h, ordered(h, 2)).await;
    let request = req("w1", 1);
    let first = h.backend.fetch(&request, Duration::ZERO).await.unwrap();
    assert_eq!(first[0].job.job_id, a.job_id);
    h.backend.deregister(&WorkerId::new("w1")).await.unwrap();
    h.advance(Duration::from_secs(1));
    let again = h.backend.fetch(&request, Duration::ZERO).await.unwrap();
    assert_eq!(
        again[0].job.job_id, b.job_id,
        "history forgotten: a new claim"
    );
    for _ in 0..3 {
        let replay = h.backend.fetch(&request, Duration::ZERO).await.unwrap();
        assert_eq!(replay.len(), 1, "at most what it asks for");
        assert_eq!(replay[0].token, first[0].token, "the oldest lease");
    }
}

/// A lost worker's request history goes once, at the first heartbeat after its liveness
/// ended; a claim it makes after that (it is alive, only not beating) keeps its history
/// through later beats of other workers, so sending that claim again answers the lease it
/// took (found by the model check).
pub async fn lost_worker_keeps_a_later_claim(h: &Harness) {
    let a = enqueue(h, job(1)).await;
    enqueue(h, job(2)).await;
    h.backend.heartbeat(&beat("w1"), &[]).await.unwrap();
    h.advance(Duration::from_secs(31));
    h.backend.heartbeat(&beat("w0"), &[]).await.unwrap();
    let request = req("w1", 1);
    let first = h.backend.fetch(&request, Duration::ZERO).await.unwrap();
    assert_eq!(first[0].job.job_id, a.job_id);
    h.advance(Duration::from_secs(1));
    h.backend.heartbeat(&beat("w0"), &[]).await.unwrap();
    let again = h.backend.fetch(&request, Duration::ZERO).await.unwrap();
    assert_eq!(
        (again.len(), again[0].token.clone()),
        (1, first[0].token.clone()),
        "the claim made while lost is still answered"
    );
    assert_eq!(h.backend.stats().await.unwrap().processing, 1);
}

/// A finish sent again after it was applied answers the same status (and the same next
/// lease) instead of `LeaseLost`; a different token still gets `LeaseLost`.
pub async fn finish_sent_twice_is_answered_once(h: &Harness) {
    let a = enqueue(h, job(1)).await;
    let b = enqueue(h, job(2)).await;
    let lease = claim_one(h).await;
    let next = req("w1", 1);
    let first = h
        .backend
        .finish(&lease.to_ref(), completed(), Some(next.clone()))
        .await
        .unwrap();
    assert_eq!(first.status, JobStatus::Completed);
    let next_lease = first.next.expect("the next job is leased");
    assert_eq!(next_lease.job.job_id, b.job_id);
    let again = h
        .backend
        .finish(&lease.to_ref(), completed(), Some(next))
        .await
        .unwrap();
    assert_eq!(again.status, JobStatus::Completed);
    let replayed = again.next.expect("the same next lease");
    assert_eq!(
        (replayed.job.job_id, replayed.token.clone()),
        (b.job_id, next_lease.token.clone())
    );
    let s = h.backend.stats().await.unwrap();
    assert_eq!((s.completed, s.processing, s.totals.completed), (1, 1, 1));
    let forged = LeaseRef {
        job_id: a.job_id,
        token: LeaseToken::new("forged"),
    };
    assert!(matches!(
        h.backend.finish(&forged, completed(), None).await,
        Err(Error::LeaseLost { .. })
    ));
}

/// A heartbeat's reply names leases, not jobs: a stale lease of a job that the same worker
/// holds again under a new lease is reported lost without touching the new one.
pub async fn heartbeat_reply_names_leases(h: &Harness) {
    let a = enqueue(h, job(1)).await;
    let old = claim_one(h).await;
    assert_eq!(finish(h, &old, retry(0)).await, JobStatus::Queued);
    let new = claim_one(h).await;
    assert_eq!(new.job.job_id, a.job_id);
    let reply = h
        .backend
        .heartbeat(&beat("w1"), &[old.to_ref(), new.to_ref()])
        .await
        .unwrap();
    assert_eq!(reply.lost, vec![old.to_ref()]);
    assert!(reply.cancel.is_empty());
    h.backend.cancel(a.job_id).await.unwrap();
    let reply = h
        .backend
        .heartbeat(&beat("w1"), &[old.to_ref(), new.to_ref()])
        .await
        .unwrap();
    assert_eq!(
        (reply.lost, reply.cancel),
        (vec![old.to_ref()], vec![new.to_ref()])
    );
}

/// The sweep deletes any number of due records in bounded batches, never a live job,
/// and an id whose record was swept starts afresh.
pub async fn sweep_keeps_up_and_spares_live_jobs(h: &Harness) {
    let mut ids = Vec::new();
    for n in 0..25 {
        let r = enqueue(h, job(n).unique_key(format!("book-{n}"))).await;
        ids.push(r.job_id);
    }
    while let Some(lease) = fetch(h, 1).await.pop() {
        finish(h, &lease, completed()).await;
    }
    h.advance(Duration::from_secs(3601));
    let live = enqueue(h, job(99).unique_key("book-0")).await;
    let mut batches = Vec::new();
    loop {
        let n = h.backend.sweep(10).await.unwrap();
        batches.push(n);
        if n < 10 {
            break;
        }
    }
    assert_eq!(batches, [10, 10, 5]);
    let s = h.backend.stats().await.unwrap();
    assert_eq!((s.total, s.completed, s.queued), (1, 0, 1));
    assert_eq!(get(h, live.job_id).await.status, JobStatus::Queued);
    // A swept id can be used again: a new job, not the old record.
    let reused = enqueue(h, job(7).job_id(ids[3])).await;
    assert_eq!(
        (reused.status, reused.unique_key.as_deref()),
        (JobStatus::Queued, None)
    );
    assert_eq!(n_of(&reused), 7);
    h.advance(Duration::from_secs(7200));
    assert_eq!(h.backend.sweep(100).await.unwrap(), 0, "live jobs stay");
    assert_eq!(get(h, ids[3]).await.status, JobStatus::Queued);
    let history = h
        .backend
        .list(&ListQuery::new().unique_key("book-3"))
        .await
        .unwrap();
    assert!(
        history.jobs.is_empty(),
        "no index entry outlives its record"
    );
}
