//! Key modes: what an enqueue does when another job holds its unique key (debounce,
//! throttle, keep-latest), beside the default refusal (`jobs.rs`).

use super::*;

const QUIET: Duration = Duration::from_secs(5);

fn debounced(n: u32, key: &str) -> NewJob {
    job(n).unique_key(key).debounce(QUIET)
}

/// A burst of debounced enqueues of one key is one job, run once the burst has been quiet
/// for the delay, with the last payload; each answer names that job and counts the
/// replacements. Once it runs, the next enqueue is a new job that takes the key (the
/// running one keeps running), and the running one's end does not free the new one's key.
pub async fn a_debounced_burst_runs_once_with_the_last_payload(h: &Harness) {
    let first = enqueue(h, debounced(1, "doc-1")).await;
    assert_eq!(first.replaced, 0);
    let t0 = to_millis(first.run_at.expect("a debounced job waits its delay"));
    for n in 2..=4 {
        h.advance(Duration::from_secs(1));
        let answer = enqueue(h, debounced(n, "doc-1")).await;
        assert_eq!(answer.job_id, first.job_id, "the burst is one job");
        assert_eq!(
            answer.replaced,
            n - 1,
            "each answer counts the replacements"
        );
        assert_eq!(n_of(&answer), u64::from(n), "the last payload wins");
    }
    let record = get(h, first.job_id).await;
    assert_eq!(
        to_millis(record.run_at.unwrap()),
        t0 + 3_000,
        "moved with each enqueue"
    );
    assert!(
        fetch(h, 10).await.is_empty(),
        "not before the burst is quiet"
    );
    h.advance(QUIET);
    let lease = claim_one(h).await;
    assert_eq!(lease.job.job_id, first.job_id);
    assert_eq!(n_of(&lease.job), 4);
    assert_eq!(h.backend.stats().await.unwrap().totals.enqueued, 1);
    // While it runs, the next enqueue is the next run: a new job, which takes the key.
    let next = enqueue(h, debounced(5, "doc-1")).await;
    assert_ne!(next.job_id, first.job_id);
    assert_eq!(next.replaced, 0);
    let again = enqueue(h, debounced(6, "doc-1")).await;
    assert_eq!((again.job_id, again.replaced), (next.job_id, 1));
    assert_eq!(finish(h, &lease, completed()).await, JobStatus::Completed);
    // The first one's end left the key with the next run.
    let refused = h
        .backend
        .enqueue(job(7).unique_key("doc-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::AlreadyExists { job_id, .. } if job_id == next.job_id),
        "{refused:?}"
    );
    h.advance(QUIET);
    let lease = claim_one(h).await;
    assert_eq!((lease.job.job_id, n_of(&lease.job)), (next.job_id, 6));
    finish(h, &lease, completed()).await;
    // Free again: a debounce creates.
    let fresh = enqueue(h, debounced(8, "doc-1")).await;
    assert!(![first.job_id, next.job_id].contains(&fresh.job_id));
}

/// A throttled enqueue creates at most one job of its key per window: within it, it is
/// answered with that job (running or finished), creating nothing; after it, a new job.
/// The window counts from the job's creation.
pub async fn a_throttle_creates_one_job_per_window(h: &Harness) {
    let window = Duration::from_secs(60);
    let throttled = |n: u32| job(n).unique_key("feed-1").throttle(window);
    let first = enqueue(h, throttled(1)).await;
    let answer = enqueue(h, throttled(2)).await;
    assert_eq!(
        answer.job_id, first.job_id,
        "answered with the job of the window"
    );
    assert_eq!(n_of(&answer), 1, "nothing replaced");
    let lease = claim_one(h).await;
    finish(h, &lease, completed()).await;
    h.advance(Duration::from_secs(59));
    let answer = enqueue(h, throttled(3)).await;
    assert_eq!(
        answer.job_id, first.job_id,
        "finished, but within the window"
    );
    assert_eq!(answer.status, JobStatus::Completed);
    // Another key is throttled on its own.
    let other = enqueue(h, job(4).unique_key("feed-2").throttle(window)).await;
    assert_ne!(other.job_id, first.job_id);
    h.advance(Duration::from_secs(1));
    let second = enqueue(h, throttled(5)).await;
    assert_ne!(second.job_id, first.job_id, "a new window");
    assert_eq!(second.status, JobStatus::Queued);
    assert_eq!(h.backend.stats().await.unwrap().totals.enqueued, 3);
    // The default mode still refuses while the key is held.
    let refused = h.backend.enqueue(job(6).unique_key("feed-1")).await;
    assert!(
        matches!(refused, Err(Error::AlreadyExists { .. })),
        "{refused:?}"
    );
}

/// Key modes are refused where they cannot apply, naming why: without a unique key, with a
/// debounce and another delay, in a flow, past the longest delay; at the longest delay they
/// are accepted.
pub async fn key_modes_are_checked(h: &Harness) {
    let longest = queue_core::Limits::default().delay;
    invalid(
        h.backend.enqueue(job(1).debounce(QUIET)).await,
        "needs a unique key",
    );
    invalid(
        h.backend.enqueue(job(1).keep_latest()).await,
        "key mode `keep_latest` needs a unique key",
    );
    invalid(
        h.backend
            .enqueue(debounced(2, "k").delay(Duration::from_secs(1)))
            .await,
        "set no other delay",
    );
    invalid(
        h.backend
            .enqueue(
                job(3)
                    .unique_key("k")
                    .throttle(longest + Duration::from_millis(1)),
            )
            .await,
        "key mode `throttle`",
    );
    invalid(
        h.backend
            .enqueue_flow(Flow::new(job(4)).children([Flow::new(debounced(5, "k"))]))
            .await,
        "take no key mode",
    );
    enqueue(h, job(6).unique_key("k1").throttle(longest)).await;
    enqueue(h, job(7).unique_key("k2").debounce(longest)).await;
    assert_eq!(h.backend.stats().await.unwrap().totals.enqueued, 2);
}

/// How many enqueues a burst case sends, from [`BURST_TASKS`] tasks at once.
pub const BURST: u32 = 10_000;
/// The tasks a burst comes from.
pub const BURST_TASKS: u32 = 50;

/// `BURST` enqueues of one key from `BURST_TASKS` tasks at once, each made by `new(n)`:
/// every answer, in the order each task got them.
async fn burst(h: &Harness, new: fn(u32) -> NewJob) -> Vec<JobRecord> {
    let per = BURST / BURST_TASKS;
    let tasks: Vec<_> = (0..BURST_TASKS)
        .map(|t| {
            let backend = Arc::clone(&h.backend);
            tokio::spawn(async move {
                let mut answers = Vec::with_capacity(per as usize);
                for i in 0..per {
                    answers.push(backend.enqueue(new(t * per + i)).await.expect("enqueue"));
                }
                answers
            })
        })
        .collect();
    let mut out = Vec::with_capacity(BURST as usize);
    for task in tasks {
        out.extend(task.await.expect("the task ran"));
    }
    out
}

/// A burst of debounced enqueues of one key from many tasks at once is one job: every
/// answer names it, each payload but the first replaced the one before (no replacement is
/// lost), and it runs once, with the payload the last replacement wrote.
pub async fn a_debounced_burst_from_many_tasks_is_one_job(h: &Harness) {
    let answers = burst(h, |n| debounced(n, "burst")).await;
    let id = answers[0].job_id;
    assert!(
        answers.iter().all(|a| a.job_id == id),
        "every answer names the one job"
    );
    let record = get(h, id).await;
    assert_eq!(record.replaced, BURST - 1, "no replacement is lost");
    let last: Vec<u64> = answers
        .iter()
        .filter(|a| a.replaced == BURST - 1)
        .map(n_of)
        .collect();
    assert!(
        last.contains(&n_of(&record)),
        "the stored payload is the last replacement's ({} not in {last:?})",
        n_of(&record)
    );
    assert_eq!(h.backend.stats().await.unwrap().totals.enqueued, 1);
    h.advance(QUIET);
    let leases = fetch(h, 10).await;
    assert_eq!(leases.len(), 1, "one run");
    assert_eq!(n_of(&leases[0].job), n_of(&record));
    finish(h, &leases[0], completed()).await;
    assert!(fetch(h, 10).await.is_empty());
}

/// A burst of throttled enqueues of one key from many tasks at once creates one job, and
/// every answer names it.
pub async fn a_throttled_burst_from_many_tasks_is_one_job(h: &Harness) {
    let answers = burst(h, |n| {
        job(n).unique_key("burst").throttle(Duration::from_secs(60))
    })
    .await;
    let id = answers[0].job_id;
    assert!(
        answers.iter().all(|a| a.job_id == id),
        "every answer names the one job"
    );
    let stats = h.backend.stats().await.unwrap();
    assert_eq!((stats.totals.enqueued, stats.total), (1, 1));
}

fn latest(n: u32, key: &str) -> NewJob {
    job(n).unique_key(key).keep_latest()
}

/// Keep-latest: while the key's job has not started, an enqueue replaces its payload in
/// place; while it runs, the enqueue creates one job that waits for it to end (and takes
/// the key), whose payload later enqueues replace. The waiting job never starts beside the
/// running one, also while that one is retried; once it ends for good, the waiting one runs
/// with the last payload.
pub async fn keep_latest_keeps_one_running_and_one_waiting(h: &Harness) {
    let first = enqueue(h, latest(1, "book-1")).await;
    let again = enqueue(h, latest(2, "book-1")).await;
    assert_eq!(
        (again.job_id, again.replaced, n_of(&again)),
        (first.job_id, 1, 2),
        "not started: replaced in place"
    );
    let running = claim_one(h).await;
    assert_eq!((running.job.job_id, n_of(&running.job)), (first.job_id, 2));
    let next = enqueue(h, latest(3, "book-1")).await;
    assert_ne!(next.job_id, first.job_id, "a new job while the first runs");
    assert_eq!(
        (next.after, next.status),
        (Some(first.job_id), JobStatus::Queued)
    );
    for n in 4..=6 {
        let answer = enqueue(h, latest(n, "book-1")).await;
        assert_eq!(
            (answer.job_id, answer.replaced, n_of(&answer)),
            (next.job_id, n - 3, u64::from(n)),
            "the waiting job takes the newest payload"
        );
    }
    assert!(
        fetch(h, 10).await.is_empty(),
        "it waits for the running one"
    );
    let stats = h.backend.stats().await.unwrap();
    assert_eq!((stats.total, stats.processing, stats.queued), (2, 1, 1));
    assert_eq!(
        stats.depth.values().sum::<u64>(),
        0,
        "the waiting job is not ready"
    );
    // A retry of the running one keeps the waiting one waiting.
    assert_eq!(finish(h, &running, retry(1)).await, JobStatus::Queued);
    h.advance(Duration::from_secs(1));
    let retried = claim_one(h).await;
    assert_eq!(retried.job.job_id, first.job_id, "the retry runs first");
    assert!(fetch(h, 10).await.is_empty());
    assert_eq!(finish(h, &retried, completed()).await, JobStatus::Completed);
    let last = claim_one(h).await;
    assert_eq!((last.job.job_id, n_of(&last.job)), (next.job_id, 6));
    assert_eq!(last.job.after, None, "placed: it waits for nothing");
    finish(h, &last, completed()).await;
    assert!(fetch(h, 10).await.is_empty());
}

/// Cancelling the job that waits for the running one gives the key back to the running
/// one: a plain enqueue of the key is refused naming it, and the next keep-latest enqueue
/// waits for it again.
pub async fn keep_latest_cancel_of_the_waiting_job_gives_the_key_back(h: &Harness) {
    enqueue(h, latest(1, "book-2")).await;
    let running = claim_one(h).await;
    let waiting = enqueue(h, latest(2, "book-2")).await;
    assert_eq!(waiting.after, Some(running.job.job_id));
    assert_eq!(
        h.backend.cancel(waiting.job_id).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let cancelled = get(h, waiting.job_id).await;
    assert_eq!(
        (cancelled.status, cancelled.after),
        (JobStatus::Cancelled, None)
    );
    let refused = h.backend.enqueue(job(3).unique_key("book-2")).await;
    assert!(
        matches!(refused, Err(Error::AlreadyExists { job_id, .. }) if job_id == running.job.job_id),
        "{refused:?}"
    );
    let next = enqueue(h, latest(4, "book-2")).await;
    assert_eq!(next.after, Some(running.job.job_id));
    assert!(fetch(h, 10).await.is_empty());
    finish(h, &running, completed()).await;
    let last = claim_one(h).await;
    assert_eq!((last.job.job_id, n_of(&last.job)), (next.job_id, 4));
}

/// A burst of keep-latest enqueues of one key from many tasks at once while its job runs
/// leaves one running and one waiting job: every answer names the waiting one, no
/// replacement is lost, and it runs once after the running one, with the last payload.
pub async fn a_keep_latest_burst_leaves_one_running_and_one_waiting(h: &Harness) {
    enqueue(h, latest(0, "burst")).await;
    let running = claim_one(h).await;
    let answers = burst(h, |n| latest(n + 1, "burst")).await;
    let id = answers[0].job_id;
    assert_ne!(id, running.job.job_id);
    assert!(
        answers.iter().all(|a| a.job_id == id),
        "every answer names the one waiting job"
    );
    let record = get(h, id).await;
    assert_eq!(record.replaced, BURST - 1, "no replacement is lost");
    let stats = h.backend.stats().await.unwrap();
    assert_eq!((stats.total, stats.processing, stats.queued), (2, 1, 1));
    assert!(fetch(h, 10).await.is_empty(), "never two at once");
    finish(h, &running, completed()).await;
    let leases = fetch(h, 10).await;
    assert_eq!(leases.len(), 1, "one run");
    assert_eq!(
        (leases[0].job.job_id, n_of(&leases[0].job)),
        (id, n_of(&record))
    );
    finish(h, &leases[0], completed()).await;
    assert!(fetch(h, 10).await.is_empty());
}

/// Replace-running: an enqueue while the key's job runs asks it to stop (a cancel its
/// heartbeat reports) and creates the replacement, which waits for that attempt to end
/// (never beside it) and takes the key; later enqueues replace the replacement's payload.
/// The stopped job ends cancelled even if its handler then reports success.
pub async fn replace_running_stops_the_running_job(h: &Harness) {
    let running_job = enqueue(h, job(1).unique_key("feed").replace_running()).await;
    let again = enqueue(h, job(2).unique_key("feed").replace_running()).await;
    assert_eq!(
        (again.job_id, again.replaced, n_of(&again)),
        (running_job.job_id, 1, 2),
        "not started: replaced in place"
    );
    let running = claim_one(h).await;
    let next = enqueue(h, job(3).unique_key("feed").replace_running()).await;
    assert_eq!(next.after, Some(running_job.job_id));
    assert!(
        get(h, running_job.job_id).await.cancel_requested,
        "asked to stop"
    );
    let reply = h
        .backend
        .heartbeat(&beat("w1"), &[running.to_ref()])
        .await
        .unwrap();
    assert_eq!(
        reply.cancel,
        vec![running.to_ref()],
        "its heartbeat says stop"
    );
    let latest = enqueue(h, job(4).unique_key("feed").replace_running()).await;
    assert_eq!(
        (latest.job_id, latest.replaced, n_of(&latest)),
        (next.job_id, 1, 4)
    );
    assert!(
        fetch(h, 10).await.is_empty(),
        "never beside the running one"
    );
    assert_eq!(
        finish(h, &running, completed()).await,
        JobStatus::Cancelled,
        "the stop wins over a late success"
    );
    let replacement = claim_one(h).await;
    assert_eq!(
        (replacement.job.job_id, n_of(&replacement.job)),
        (next.job_id, 4)
    );
    finish(h, &replacement, completed()).await;
    assert!(fetch(h, 10).await.is_empty());
}
