//! Ordered sequences: members start one at a time, in enqueue order, retries included;
//! different sequences run in parallel (`queue_core::sequences`, built on chains).

use super::*;

fn member(n: u32, sequence: &str) -> NewJob {
    job(n).sequence(sequence)
}

fn failed() -> Outcome {
    Outcome::Failed {
        error: "bad input".into(),
    }
}

/// Members start in enqueue order, one at a time: a retrying member holds the next back
/// until it succeeds, and one that fails for good lets the next start. Another sequence
/// and plain jobs run beside them.
pub async fn a_sequence_starts_in_order_retries_included(h: &Harness) {
    let s1 = enqueue(h, member(1, "acct-1")).await;
    let s2 = enqueue(h, member(2, "acct-1")).await;
    let s3 = enqueue(h, member(3, "acct-1")).await;
    let other = enqueue(h, member(4, "acct-2")).await;
    enqueue(h, job(5)).await;
    assert_eq!(
        (s1.after, s2.after, s3.after, other.after),
        (None, Some(s1.job_id), Some(s2.job_id), None),
        "each member waits for the one before it"
    );
    assert_eq!(
        claimable(h).await,
        [1, 4, 5],
        "one member per sequence at a time"
    );
    let stats = h.backend.stats().await.unwrap();
    assert_eq!(
        (stats.queued, stats.depth.values().sum::<u64>()),
        (5, 3),
        "the waiting members are queued, not ready"
    );
    // The first member retries: the second still waits, until the first succeeds.
    let first = claim_n(h, 1).await;
    assert_eq!(finish(h, &first, retry(1)).await, JobStatus::Queued);
    assert_eq!(claimable(h).await, [4, 5], "the second waits for the retry");
    h.advance(Duration::from_secs(1));
    let again = claim_n(h, 1).await;
    assert_eq!(finish(h, &again, completed()).await, JobStatus::Completed);
    // Now the second starts; it fails for good, and the third follows.
    assert_eq!(claimable(h).await, [2, 4, 5]);
    let second = claim_n(h, 2).await;
    assert_eq!(finish(h, &second, failed()).await, JobStatus::Failed);
    let third = claim_n(h, 3).await;
    assert_eq!(third.job.after, None, "placed: it waits for nothing");
    finish(h, &third, completed()).await;
}

/// A member cancelled while it waits keeps the order around the gap: the one behind it
/// now waits for the one before it (a waiting member takes no children). A cancelled tail leaves the tail to the member
/// before it, so the next member waits for that one.
pub async fn a_cancelled_member_keeps_the_order(h: &Harness) {
    let s1 = enqueue(h, member(1, "acct-1")).await;
    let s2 = enqueue(h, member(2, "acct-1")).await;
    let s3 = enqueue(h, member(3, "acct-1")).await;
    let running = claim_n(h, 1).await;
    let refused = h.backend.add_children(s2.job_id, vec![flow(9)]).await;
    assert!(
        matches!(&refused, Err(Error::InvalidArgument { message }) if message.contains("takes no children")),
        "a waiting member takes no children: {refused:?}"
    );
    assert_eq!(
        h.backend.cancel(s2.job_id).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(get(h, s3.job_id).await.after, Some(s1.job_id));
    assert!(fetch(h, 10).await.is_empty(), "the third still waits");
    assert_eq!(
        h.backend.cancel(s3.job_id).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let s4 = enqueue(h, member(4, "acct-1")).await;
    assert_eq!(s4.after, Some(s1.job_id), "the tail went back to the first");
    finish(h, &running, completed()).await;
    let next = claim_one(h).await;
    assert_eq!(next.job.job_id, s4.job_id);
    finish(h, &next, completed()).await;
    // The sequence is empty: a new member starts at once.
    let s5 = enqueue(h, member(5, "acct-1")).await;
    assert_eq!(s5.after, None);
    assert_eq!(claim_one(h).await.job.job_id, s5.job_id);
}

/// A member retried by hand joins the back of its sequence: it starts after every member
/// enqueued before the retry.
pub async fn a_retried_member_joins_the_back(h: &Harness) {
    enqueue(h, member(1, "acct-1")).await;
    let s2 = enqueue(h, member(2, "acct-1")).await;
    let first = claim_n(h, 1).await;
    assert_eq!(finish(h, &first, failed()).await, JobStatus::Failed);
    let second = claim_n(h, 2).await;
    let s3 = enqueue(h, member(3, "acct-1")).await;
    assert_eq!(s3.after, Some(s2.job_id));
    let retried = h.backend.retry(first.job.job_id, None).await.unwrap();
    assert_eq!(
        (retried.status, retried.after),
        (JobStatus::Queued, Some(s3.job_id))
    );
    finish(h, &second, completed()).await;
    let third = claim_one(h).await;
    assert_eq!(third.job.job_id, s3.job_id);
    assert!(fetch(h, 10).await.is_empty());
    finish(h, &third, completed()).await;
    assert_eq!(claim_one(h).await.job.job_id, first.job.job_id);
}

/// Sequence names are checked on every backend: at most `MAX_SEQUENCE_BYTES`, at the
/// limit accepted and one past refused; a sequenced job takes no key mode, a flow's jobs
/// no sequence.
pub async fn sequence_names_are_checked(h: &Harness) {
    let max = queue_core::MAX_SEQUENCE_BYTES;
    enqueue(h, member(1, &"s".repeat(max))).await;
    invalid(
        h.backend.enqueue(member(2, &"s".repeat(max + 1))).await,
        "longer than 128 bytes",
    );
    invalid(
        h.backend
            .enqueue(member(3, "s").unique_key("k").keep_latest())
            .await,
        "takes no key mode",
    );
    invalid(
        h.backend
            .enqueue_flow(Flow::new(job(4)).children([Flow::new(member(5, "s"))]))
            .await,
        "no sequence",
    );
    assert_eq!(h.backend.stats().await.unwrap().totals.enqueued, 1);
}

/// Members enqueued into one sequence from many tasks at once form one line: each waits
/// for exactly one other, the first for none; run with retries in between, they start
/// exactly in that order, one at a time.
pub async fn a_concurrent_sequence_runs_in_one_line(h: &Harness) {
    const TASKS: u32 = 20;
    const PER: u32 = 25;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let backend = Arc::clone(&h.backend);
            tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..PER {
                    out.push(backend.enqueue(member(t * PER + i, "line")).await.unwrap());
                }
                out
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.expect("the task ran"));
    }
    let firsts: Vec<&JobRecord> = answers.iter().filter(|a| a.after.is_none()).collect();
    assert_eq!(firsts.len(), 1, "one member waits for nothing");
    let behind: std::collections::HashMap<JobId, JobId> = answers
        .iter()
        .filter_map(|a| Some((a.after?, a.job_id)))
        .collect();
    assert_eq!(behind.len(), answers.len() - 1, "no two wait for one");
    let mut line = vec![firsts[0].job_id];
    while let Some(next) = behind.get(line.last().unwrap()) {
        line.push(*next);
    }
    assert_eq!(line.len(), answers.len(), "one line through every member");
    for (k, id) in line.iter().enumerate() {
        let leases = fetch(h, 10).await;
        assert_eq!(leases.len(), 1, "one at a time (member {k})");
        assert_eq!(leases[0].job.job_id, *id, "in line (member {k})");
        if k % 7 == 3 {
            // A retry in between: it comes back first, the next still waits.
            assert_eq!(finish(h, &leases[0], retry(0)).await, JobStatus::Queued);
            let again = fetch(h, 10).await;
            assert_eq!(
                again.iter().map(|l| l.job.job_id).collect::<Vec<_>>(),
                [*id]
            );
            finish(h, &again[0], completed()).await;
        } else {
            finish(h, &leases[0], completed()).await;
        }
    }
    assert!(fetch(h, 10).await.is_empty());
}
