//! Every documented maximum, at its value and one past it: what is accepted is whole and
//! consistent in every index, what is past it is refused (or cut, saying so) and changes
//! nothing, and no call's work grows past its bound whatever it is asked.

use std::{sync::Arc, time::Duration};

use queue_core::backend::{
    ClaimRequest, Ending, MAX_CLAIM, MAX_CONCURRENCY, MAX_FLOW_JOBS, MAX_SCHEDULES, MAX_STEP_BYTES,
    MAX_WEBHOOKS, Outcome,
};
use queue_core::{
    Clock, Flow, JobId, JobStatus, JobStoreExt, Limits, ListQuery, NewJob, Schedule, Schedules,
    Search, Webhook, WorkerId,
};
use serde_json::json;

use super::{LEASE, completed, enqueue, fetch, finish, get, job, ordered, req};
use crate::Harness;

/// Enqueues `n` jobs in calls of 1,000 and returns their ids in order.
pub(super) async fn enqueue_n(h: &Harness, n: usize) -> Vec<JobId> {
    let mut ids = Vec::with_capacity(n);
    for start in (0..n).step_by(1000) {
        let batch: Vec<NewJob> = (start..n.min(start + 1000))
            .map(|i| ordered(h, i as u32))
            .collect();
        for r in h.backend.enqueue_many(batch).await.unwrap() {
            ids.push(r.unwrap().job_id);
        }
    }
    ids
}

/// One claim leases at most [`MAX_CLAIM`] jobs, however many it asks for (a worker at its
/// most concurrent asks for [`MAX_CONCURRENCY`]); the rest stay ready for the next claim,
/// none is left leased-but-unanswered, and a replay answers at most as many.
pub async fn a_claim_takes_at_most_its_bound(h: &Harness) {
    let ids = enqueue_n(h, MAX_CLAIM + 1).await;
    // At the bound: exactly MAX_CLAIM.
    let exact = ClaimRequest::new(WorkerId::new("w-exact"), MAX_CLAIM, LEASE);
    let leases = h.backend.fetch(&exact, Duration::ZERO).await.unwrap();
    assert_eq!(leases.len(), MAX_CLAIM);
    let taken: Vec<JobId> = leases.iter().map(|l| l.job.job_id).collect();
    assert_eq!(taken, ids[..MAX_CLAIM], "FIFO, the first MAX_CLAIM");
    let endings: Vec<Ending> = leases.iter().map(Ending::handed_back).collect();
    let done = h.backend.finish_many(endings, None).await.unwrap();
    assert!(
        done.statuses
            .iter()
            .all(|s| matches!(s, Ok(JobStatus::Queued)))
    );

    // Past it: a worker at its most concurrent asks for all its slots.
    let wide = ClaimRequest::new(WorkerId::new("w-wide"), MAX_CONCURRENCY, LEASE);
    let first = h.backend.fetch(&wide, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), MAX_CLAIM, "one call takes MAX_CLAIM");
    let stats = h.backend.stats().await.unwrap();
    assert_eq!(
        (stats.processing, stats.queued),
        (MAX_CLAIM as u64, 1),
        "the rest stays ready, nothing is stranded"
    );
    // Sent again (its reply was lost): the same leases, nothing more.
    let again = h.backend.fetch(&wide, Duration::ZERO).await.unwrap();
    assert_eq!(again.len(), MAX_CLAIM);
    assert_eq!(
        h.backend.stats().await.unwrap().processing,
        MAX_CLAIM as u64
    );
    // The next request takes what is left.
    let rest = fetch(h, MAX_CONCURRENCY).await;
    assert_eq!(rest.len(), 1);
    // Every ending of the full set at once (more than a step of MAX_ENDINGS), claiming
    // up to MAX_CONCURRENCY next: each answered, nothing stranded.
    let mut endings: Vec<Ending> = first
        .iter()
        .chain(&rest)
        .map(|l| Ending {
            lease: l.to_ref(),
            outcome: completed(),
        })
        .collect();
    endings.push(Ending::handed_back(&first[0]));
    let done = h
        .backend
        .finish_many(endings, Some(req("w-wide", MAX_CONCURRENCY)))
        .await
        .unwrap();
    assert_eq!(done.statuses.len(), MAX_CLAIM + 2);
    assert!(
        done.statuses[..MAX_CLAIM + 1]
            .iter()
            .all(|s| matches!(s, Ok(JobStatus::Completed)))
    );
    assert!(
        matches!(done.statuses[MAX_CLAIM + 1], Ok(JobStatus::Completed)),
        "sent again after it was applied: the same answer"
    );
    assert!(done.next.is_empty(), "nothing left to claim");
    let stats = h.backend.stats().await.unwrap();
    assert_eq!(
        (stats.completed, stats.processing, stats.queued),
        ((MAX_CLAIM + 1) as u64, 0, 0)
    );
}

/// A flow of [`MAX_FLOW_JOBS`] jobs is created whole (every record listed, counted and
/// claimable); one more is refused and stores nothing. Cancelling its root cancels every
/// descendant in bounded steps, asking the running ones to stop, and leaves every index
/// consistent: nothing queued, nothing ready, every job listed under its status.
pub async fn a_flow_at_its_bound_is_created_and_cancelled_whole(h: &Harness) {
    let members = |n: usize| (0..n).map(|i| job(i as u32)).collect::<Vec<_>>();
    let too_big = Flow::batch(job(0), members(MAX_FLOW_JOBS));
    let err = h.backend.enqueue_flow(too_big).await.unwrap_err();
    assert!(err.to_string().contains("limit of 10000"), "{err}");
    assert_eq!(h.backend.stats().await.unwrap().total, 0, "nothing stored");

    let root = h
        .backend
        .enqueue_flow(Flow::batch(job(0), members(MAX_FLOW_JOBS - 1)))
        .await
        .unwrap();
    let stats = h.backend.stats().await.unwrap();
    assert_eq!(
        (stats.total, stats.queued, stats.waiting_on_children),
        (MAX_FLOW_JOBS as u64, MAX_FLOW_JOBS as u64, 1)
    );
    let page = h
        .backend
        .list(&ListQuery::new().status(JobStatus::Queued).limit(1000))
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 1000, "every record is listed");
    // Some children start before the cancel.
    let running = fetch(h, 10).await;
    assert_eq!(running.len(), 10);

    assert_eq!(
        h.backend.cancel(root.job_id).await.unwrap(),
        queue_core::CancelOutcome::Cancelled
    );
    let stats = h.backend.stats().await.unwrap();
    assert_eq!(
        (stats.queued, stats.processing, stats.cancelled),
        (0, 10, (MAX_FLOW_JOBS - 10) as u64),
        "every queued descendant cancelled, the running ones asked to stop"
    );
    assert!(
        fetch(h, MAX_CLAIM).await.is_empty(),
        "nothing left to start"
    );
    for lease in &running {
        assert!(get(h, lease.job.job_id).await.cancel_requested);
        assert_eq!(finish(h, lease, completed()).await, JobStatus::Cancelled);
    }
    let mut listed = 0;
    let mut query = ListQuery::new().status(JobStatus::Cancelled).limit(1000);
    loop {
        let page = h.backend.list(&query).await.unwrap();
        assert!(page.jobs.iter().all(|r| r.status == JobStatus::Cancelled));
        listed += page.jobs.len();
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(listed, MAX_FLOW_JOBS, "each listed under its status");
    let root = get(h, root.job_id).await;
    let counts = root.children.expect("a parent");
    assert_eq!(
        (counts.waiting, counts.cancelled),
        (0, (MAX_FLOW_JOBS - 1) as u32)
    );

    // Children added at once: at the bound accepted, one past refused.
    let open = enqueue(h, job(1)).await;
    let flows = |n: usize| members(n).into_iter().map(Flow::new).collect::<Vec<_>>();
    let err = h
        .backend
        .add_children(open.job_id, flows(MAX_FLOW_JOBS + 1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("limit of 10000"), "{err}");
    let added = h
        .backend
        .add_children(open.job_id, flows(MAX_FLOW_JOBS))
        .await
        .unwrap();
    assert_eq!(added.len(), MAX_FLOW_JOBS);
}

/// A parent's children are read page by page, oldest first, however many there are (a
/// batch grows with every `add_children`): 20,000 children, two calls' worth, all there,
/// in creation order, a page never past its limit.
pub async fn children_page_past_any_size(h: &Harness) {
    let batch = |from: usize| (from..from + MAX_FLOW_JOBS).map(|i| Flow::new(job(i as u32)));
    let parent = enqueue(h, job(0)).await;
    let first = h
        .backend
        .add_children(parent.job_id, batch(0).collect())
        .await
        .unwrap();
    h.advance(Duration::from_millis(1));
    let second = h
        .backend
        .add_children(parent.job_id, batch(MAX_FLOW_JOBS).collect())
        .await
        .unwrap();
    let created: Vec<JobId> = first.iter().chain(&second).map(|r| r.job_id).collect();
    let mut query = ListQuery::new().children_of(parent.job_id).limit(1000);
    let mut paged = Vec::new();
    loop {
        let page = h.backend.list(&query).await.unwrap();
        assert!(page.jobs.len() <= 1000);
        paged.extend(page.jobs.iter().map(|r| r.job_id));
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => break,
        }
    }
    let mut oldest_first = created.clone();
    oldest_first.sort_by_key(|id| (created_ms(&first, &second, *id), *id));
    assert_eq!(paged.len(), 2 * MAX_FLOW_JOBS, "every child, past 10,000");
    assert_eq!(paged, oldest_first, "oldest first, by creation then id");
    let all = h.backend.children(parent.job_id).await.unwrap();
    assert_eq!(all.len(), 2 * MAX_FLOW_JOBS);
    let counts = get(h, parent.job_id).await.children.unwrap();
    assert_eq!(counts.waiting, 2 * MAX_FLOW_JOBS as u32);
    let missing = JobId::new();
    assert!(matches!(
        h.backend
            .list(&ListQuery::new().children_of(missing))
            .await
            .unwrap_err(),
        queue_core::Error::NotFound { id } if id == missing
    ));
}

fn created_ms(first: &[queue_core::JobRecord], second: &[queue_core::JobRecord], id: JobId) -> i64 {
    first
        .iter()
        .chain(second)
        .find(|r| r.job_id == id)
        .map(|r| r.created_at.timestamp_millis())
        .expect("created")
}

/// The sizes a job may ask for, each at its bound (accepted, whole) and one past it
/// (refused naming the field, nothing stored).
pub async fn sizes_at_their_bounds(h: &Harness) {
    let limits = Limits::default();
    let text = |n: usize| "x".repeat(n);
    // A JSON string of n characters is n + 2 bytes.
    let payload = |bytes: usize| NewJob::new("conformance", &json!(text(bytes - 2))).unwrap();
    let named = |len: usize| NewJob::new(text(len), &json!(1)).unwrap();
    let cases: Vec<(NewJob, NewJob, &str)> = vec![
        (
            payload(limits.payload_bytes),
            payload(limits.payload_bytes + 1),
            "payload",
        ),
        // `{"k":"…"}` is 8 bytes more than its text.
        (
            job(1).meta("k", text(limits.metadata_bytes - 8)),
            job(1).meta("k", text(limits.metadata_bytes - 7)),
            "metadata",
        ),
        (named(200), named(201), "task name"),
        (
            job(1).unique_key(text(512)),
            job(1).unique_key(text(513)),
            "unique key",
        ),
        (job(1).group(text(128)), job(1).group(text(129)), "group"),
        (
            job(1).delay(limits.delay),
            job(1).delay(limits.delay + Duration::from_secs(1)),
            "delay",
        ),
        (
            job(1).timeout(limits.timeout),
            job(1).timeout(limits.timeout + Duration::from_secs(1)),
            "timeout",
        ),
        (
            job(1).max_retries(limits.retries),
            job(1).max_retries(limits.retries + 1),
            "max_retries",
        ),
        (
            job(1).cost(queue_core::backend::MAX_COST),
            job(1).cost(queue_core::backend::MAX_COST + 1),
            "cost",
        ),
    ];
    for (at, past, field) in cases {
        let err = h.backend.enqueue(past).await.unwrap_err();
        assert!(
            matches!(err, queue_core::Error::InvalidArgument { .. }),
            "{field}: {err}"
        );
        let before = h.backend.stats().await.unwrap().total;
        let stored = h.backend.enqueue(at.clone()).await.unwrap();
        let read = get(h, stored.job_id).await;
        assert_eq!(read.payload, at.payload, "{field}: stored whole");
        assert_eq!(read.task, at.task);
        assert_eq!(read.unique_key, at.options.unique_key);
        assert_eq!(read.group, at.options.group);
        assert_eq!(h.backend.stats().await.unwrap().total, before + 1);
        h.backend.cancel(stored.job_id).await.unwrap();
    }
    // A result at its bound is stored; one byte past it fails the job, saying so.
    for (extra, status) in [(0, JobStatus::Completed), (1, JobStatus::Failed)] {
        enqueue(h, job(2)).await;
        let lease = fetch(h, 1).await.pop().expect("a job");
        let result = json!(text(limits.result_bytes - 2 + extra));
        let outcome = Outcome::Completed {
            result: Some(result.clone()),
        };
        assert_eq!(finish(h, &lease, outcome).await, status);
        let record = get(h, lease.job.job_id).await;
        match status {
            JobStatus::Completed => assert_eq!(record.result, Some(result)),
            _ => assert!(record.error_message.unwrap().contains("result")),
        }
    }
    // Listings and group listings at their bounds.
    assert!(h.backend.list(&ListQuery::new().limit(1000)).await.is_ok());
    assert!(h.backend.list(&ListQuery::new().limit(1001)).await.is_err());
    let most = queue_core::backend::MAX_GROUPS_LISTED;
    assert!(h.backend.groups(most).await.is_ok());
    assert!(h.backend.groups(most + 1).await.is_err());
    let weight = queue_core::backend::MAX_GROUP_WEIGHT;
    assert!(h.backend.set_group_weight("g", Some(weight)).await.is_ok());
    assert!(
        h.backend
            .set_group_weight("g", Some(weight + 1))
            .await
            .is_err()
    );
    // A flow as deep as it may nest, and one level more.
    let deep = |levels: usize| {
        let mut flow = Flow::new(job(0));
        for n in 1..levels {
            flow = Flow::new(job(n as u32)).child(flow);
        }
        flow
    };
    let depth = queue_core::backend::MAX_FLOW_DEPTH;
    let err = h.backend.enqueue_flow(deep(depth + 1)).await.unwrap_err();
    assert!(err.to_string().contains("nests"), "{err}");
    let root = h.backend.enqueue_flow(deep(depth)).await.unwrap();
    let tree = h.backend.flow_tree(root.job_id, 100).await.unwrap();
    assert_eq!(tree.walk().len(), depth, "every level stored");
    // A search (and a bulk step) looks at most MAX_BULK_STEP jobs.
    let filter = queue_core::BulkFilter::new().task("conformance");
    let most = queue_core::MAX_BULK_STEP;
    assert!(h.backend.search(&filter, None, None, most).await.is_ok());
    assert!(
        h.backend
            .search(&filter, None, None, most + 1)
            .await
            .is_err()
    );
}

/// An error message and a step name are stored whole up to their bound and cut past it,
/// saying so, on the record and in every attempt it keeps: a handler's 2 MiB error costs a
/// few KiB per attempt, not megabytes.
pub async fn text_is_cut_at_its_bound(h: &Harness) {
    let limits = Limits::default();
    let a = enqueue(h, job(1).max_retries(3)).await;
    let lease = fetch(h, 1).await.pop().unwrap();
    let at = "s".repeat(MAX_STEP_BYTES);
    h.backend
        .progress(&lease.to_ref(), 10, Some(at.clone()))
        .await
        .unwrap();
    assert_eq!(get(h, a.job_id).await.current_step, Some(at));
    h.backend
        .progress(&lease.to_ref(), 20, Some("s".repeat(MAX_STEP_BYTES + 1)))
        .await
        .unwrap();
    let step = get(h, a.job_id).await.current_step.unwrap();
    assert!(step.len() <= MAX_STEP_BYTES && step.ends_with("(truncated from 201 bytes)"));

    let exact = "e".repeat(limits.error_bytes);
    let retry = |error: String| Outcome::Retry {
        error,
        delay: Duration::ZERO,
    };
    assert_eq!(
        finish(h, &lease, retry(exact.clone())).await,
        JobStatus::Queued
    );
    assert_eq!(get(h, a.job_id).await.error_message, Some(exact));
    for _ in 0..2 {
        let lease = fetch(h, 1).await.pop().unwrap();
        finish(h, &lease, retry("e".repeat(2 << 20))).await;
    }
    let record = get(h, a.job_id).await;
    let error = record.error_message.unwrap();
    assert!(error.len() <= limits.error_bytes, "{}", error.len());
    assert!(error.ends_with(&format!("(truncated from {} bytes)", 2 << 20)));
    assert_eq!(record.attempts.len(), 3);
    for attempt in &record.attempts {
        let kept = attempt.error.as_deref().unwrap_or_default();
        assert!(kept.len() <= limits.error_bytes, "{}", kept.len());
    }
}

/// At most [`MAX_WEBHOOKS`] webhooks and [`MAX_SCHEDULES`] schedules: the last one fits,
/// the next is refused saying why, and changing (or deleting) an existing one still works.
pub async fn webhooks_and_schedules_at_their_bound(h: &Harness) {
    let hook = |n: usize| Webhook::new(format!("h{n}"), "https://example.com/hook", "s".repeat(32));
    for n in 0..MAX_WEBHOOKS {
        h.backend.put_webhook(&hook(n)).await.unwrap();
    }
    let err = h
        .backend
        .put_webhook(&hook(MAX_WEBHOOKS))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("webhooks"), "{err}");
    h.backend
        .put_webhook(&hook(0).events([JobStatus::Failed]))
        .await
        .expect("replacing one at the bound");
    assert_eq!(h.backend.webhooks().await.unwrap().len(), MAX_WEBHOOKS);
    h.backend.delete_webhook("h1").await.unwrap();
    h.backend.put_webhook(&hook(MAX_WEBHOOKS)).await.unwrap();

    let every = |n: usize| {
        Schedule::every(format!("s{n}"), Duration::from_secs(3600), job(n as u32))
            .expect("a schedule")
    };
    for n in 0..MAX_SCHEDULES {
        h.backend.put_schedule(every(n)).await.unwrap();
    }
    let err = h
        .backend
        .put_schedule(every(MAX_SCHEDULES))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("schedules"), "{err}");
    h.backend
        .put_schedule(Schedule::every("s0", Duration::from_secs(60), job(0)).unwrap())
        .await
        .expect("changing one at the bound");
    assert_eq!(h.backend.schedules().await.unwrap().len(), MAX_SCHEDULES);
    h.backend.delete_schedule("s1").await.unwrap();
    h.backend.put_schedule(every(MAX_SCHEDULES)).await.unwrap();
}

/// Parked webhook deliveries expire with the queue's retention (an hour in the harness),
/// a sweep's `limit` at a time, counted from when they were parked.
pub async fn parked_deliveries_expire_with_retention(h: &Harness) {
    use queue_core::backend::Settle;
    let hook = Webhook::new("parks", "https://example.com/hook", "s".repeat(32));
    h.backend.put_webhook(&hook).await.unwrap();
    for n in 0..3 {
        enqueue(h, job(n)).await;
    }
    for lease in fetch(h, 3).await {
        finish(h, &lease, completed()).await;
    }
    let claimed = h
        .backend
        .claim_deliveries(10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    for c in &claimed {
        let mut parked = c.delivery.clone();
        parked.parked = true;
        let settle = Settle::Park(parked.encode());
        let settled = h.backend.settle_delivery(&c.delivery.id, &c.stored, settle);
        assert!(settled.await.unwrap());
    }
    let parked = || async { h.backend.deliveries(true, 100).await.unwrap().len() };
    h.advance(Duration::from_secs(3599));
    h.backend.sweep(100).await.unwrap();
    assert_eq!(parked().await, 3, "younger than the retention");
    h.advance(Duration::from_secs(2));
    h.backend.sweep(2).await.unwrap();
    assert_eq!(parked().await, 1, "a sweep prunes at most its limit");
    h.backend.sweep(2).await.unwrap();
    assert_eq!(parked().await, 0);
}

/// A handler's `rate_limited` holds its group (or the queue) for at most the hold limit,
/// however long it asks; `resume` (`resume_group`) and removing the rate limit lift a hold
/// at once, and `stats` / `group` show it while it lasts.
pub async fn holds_are_bounded_and_lifted(h: &Harness) {
    let hold = Limits::default().hold;
    let month = Duration::from_secs(30 * 24 * 3600);
    enqueue(h, job(1)).await;
    let waiting = enqueue(h, job(2)).await;
    let lease = fetch(h, 1).await.pop().unwrap();
    let t0 = h.clock.now_ms();
    let held = Outcome::RateLimited { retry_after: month };
    assert_eq!(finish(h, &lease, held).await, JobStatus::Queued);
    let until = h.backend.stats().await.unwrap().held_until.expect("held");
    assert_eq!(
        until.timestamp_millis(),
        t0 + hold.as_millis() as i64,
        "at most the hold limit"
    );
    let snoozed = get(h, lease.job.job_id).await;
    assert_eq!(
        snoozed.run_at.map(|t| t.timestamp_millis()),
        Some(t0 + hold.as_millis() as i64),
        "the job's own snooze too"
    );
    assert!(fetch(h, 10).await.is_empty(), "held");
    h.backend.resume().await.unwrap();
    assert_eq!(h.backend.stats().await.unwrap().held_until, None, "lifted");
    let started = fetch(h, 10).await;
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].job.job_id, waiting.job_id);
    finish(h, &started[0], completed()).await;

    // Lifted by removing the rate limit as well.
    enqueue(h, job(3)).await;
    let lease = fetch(h, 1).await.pop().unwrap();
    finish(h, &lease, Outcome::RateLimited { retry_after: month }).await;
    assert!(h.backend.stats().await.unwrap().held_until.is_some());
    h.backend.set_rate_limit(None).await.unwrap();
    assert_eq!(h.backend.stats().await.unwrap().held_until, None);

    // A group's hold: bounded, shown, lifted by resuming the group, then forgotten.
    for n in 0..2 {
        enqueue(h, job(10 + n).group("g")).await;
    }
    let lease = fetch(h, 1).await.pop().expect("a grouped job");
    assert!(lease.job.group.is_some());
    let t1 = h.clock.now_ms();
    finish(h, &lease, Outcome::RateLimited { retry_after: month }).await;
    let group = h.backend.group("g").await.unwrap();
    assert_eq!(
        group.held_until.map(|t| t.timestamp_millis()),
        Some(t1 + hold.as_millis() as i64)
    );
    h.backend.resume_group("g").await.unwrap();
    assert_eq!(h.backend.group("g").await.unwrap().held_until, None);
    assert_eq!(fetch(h, 10).await.len(), 1, "the group starts again");
}

/// A job snoozed while a fetch waits wakes it when it falls due, as a delayed enqueue
/// does: here due at once, so the waiting fetch takes it without waiting out its wait.
pub async fn a_snoozed_job_wakes_a_waiting_fetch(h: &Harness) {
    enqueue(h, job(1)).await;
    let lease = fetch(h, 1).await.pop().unwrap();
    let backend = Arc::clone(&h.backend);
    let waiter =
        tokio::spawn(async move { backend.fetch(&req("w2", 1), Duration::from_secs(60)).await });
    let status = finish(
        h,
        &lease,
        Outcome::Snoozed {
            delay: Duration::ZERO,
        },
    )
    .await;
    assert_eq!(status, JobStatus::Queued);
    let leases = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the snooze must wake the waiting fetch")
        .unwrap()
        .unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].job.job_id, lease.job.job_id);
}
