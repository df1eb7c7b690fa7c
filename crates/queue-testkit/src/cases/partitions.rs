//! Partitions (README "Partitions"): what holds across the partitions of one queue, and
//! how the guarantees that hold per partition are scoped. On a queue of one partition each
//! case checks the same behaviour, which there holds for the whole queue.

use queue_core::backend::{MAX_CLAIM, MAX_CONCURRENCY, MAX_PARTITION_KEY_BYTES, partition_of};

use super::*;

/// The partition a spread job (no routing key, no chosen id) went to: the one its id
/// names.
fn partition(h: &Harness, id: JobId) -> u32 {
    id.home() % h.partitions()
}

/// A claim serves the partitions in turn: with work in every partition, `P` claims of one
/// job each take one from each partition (none starved), and a `high` job waits at most
/// `P - 1` claims behind lower-priority jobs of other partitions (on one partition it goes
/// first).
pub async fn claims_serve_every_partition_in_turn(h: &Harness) {
    let p = h.partitions();
    for n in 0..4 * p {
        enqueue(h, job(n)).await;
    }
    let mut served = HashSet::new();
    for _ in 0..p {
        served.insert(partition(h, claim_one(h).await.job.job_id));
    }
    assert_eq!(served.len() as u32, p, "one claim per partition, in turn");

    let urgent = enqueue(h, job(100).priority(Priority::High)).await;
    let mut claims = 0;
    loop {
        let lease = claim_one(h).await;
        claims += 1;
        if lease.job.job_id == urgent.job_id {
            break;
        }
        assert_eq!(lease.job.priority, Priority::Normal);
        assert!(
            claims < p,
            "the high job waited {claims} claims, bound {}",
            p - 1
        );
    }
}

/// The queue's rate limit is split among the partitions, their shares adding up to it: it
/// is never exceeded whatever partition the jobs are in, and a limit below one start per
/// partition per window is refused, saying so.
pub async fn the_rate_limit_is_never_exceeded_across_partitions(h: &Harness) {
    let p = h.partitions();
    if p > 1 {
        let low = queue_core::RateLimit::new(p - 1, Duration::from_secs(10)).unwrap();
        invalid(h.backend.set_rate_limit(Some(low)).await, "partition");
    }
    let limit = queue_core::RateLimit::new(2 * p, Duration::from_secs(10)).unwrap();
    h.backend.set_rate_limit(Some(limit)).await.unwrap();
    assert_eq!(h.backend.stats().await.unwrap().rate_limit, Some(limit));
    for n in 0..4 * p {
        enqueue(h, job(n)).await;
    }
    let mut started = fetch(h, 100).await.len();
    started += fetch(h, 100).await.len();
    assert_eq!(started as u32, 2 * p, "the whole limit, no more");
    h.advance(Duration::from_secs(10));
    assert_eq!(fetch(h, 100).await.len() as u32, 2 * p, "the next window");
}

/// A handler's hold of a job without a group holds every partition: nothing starts
/// anywhere until it has passed.
pub async fn a_hold_holds_every_partition(h: &Harness) {
    for n in 0..3 * h.partitions() {
        enqueue(h, job(n)).await;
    }
    let lease = claim_one(h).await;
    let held = Outcome::RateLimited {
        retry_after: Duration::from_secs(60),
    };
    assert_eq!(finish(h, &lease, held).await, JobStatus::Queued);
    assert!(fetch(h, 100).await.is_empty(), "held in every partition");
    h.advance(Duration::from_secs(60));
    assert_eq!(
        fetch(h, 100).await.len() as u32,
        3 * h.partitions(),
        "every job starts once the hold has passed"
    );
}

/// A chosen id names one job on the whole queue: enqueued again with another group (so on
/// a partitioned queue routed elsewhere), it answers the job it names.
pub async fn a_chosen_id_names_one_job_whatever_its_routing(h: &Harness) {
    let id = JobId::new();
    let first = enqueue(h, job(1).job_id(id).group("route-a")).await;
    let again = enqueue(h, job(2).job_id(id).group("route-b")).await;
    assert_eq!((again.job_id, n_of(&again)), (first.job_id, 1));
    let plain = enqueue(h, job(3).job_id(id)).await;
    assert_eq!(n_of(&plain), 1);
    assert_eq!(h.backend.stats().await.unwrap().total, 1);
    assert_eq!(n_of(&get(h, id).await), 1);

    // A flow (in another partition) whose child takes that id is refused: nothing created.
    let taken = Flow::new(in_group(4, "route-c")).child(Flow::new(job(5).job_id(id)));
    invalid(h.backend.enqueue_flow(taken).await, "is taken");
    assert_eq!(h.backend.stats().await.unwrap().total, 1, "nothing created");

    // One new id twice in a batch, routed two ways: one job, both answers name it.
    let twice = JobId::new();
    let answers = h
        .backend
        .enqueue_many(vec![
            job(6).job_id(twice),
            job(7).job_id(twice).group("route-d"),
        ])
        .await
        .unwrap();
    let answers: Vec<(JobId, u64)> = answers
        .into_iter()
        .map(|r| r.map(|r| (r.job_id, n_of(&r))).unwrap())
        .collect();
    assert_eq!(answers, [(twice, 6), (twice, 6)]);
    assert_eq!(h.backend.stats().await.unwrap().total, 2);
}

/// One claim takes at most [`MAX_CLAIM`] jobs however many partitions have work: a fetch
/// and the claim of a `finish_many` asking for [`MAX_CONCURRENCY`] each get exactly
/// `MAX_CLAIM`, and the rest stays ready.
pub async fn a_claim_takes_at_most_its_bound_from_every_partition(h: &Harness) {
    let extra = 2 * h.partitions() as usize;
    let jobs: Vec<NewJob> = (0..MAX_CLAIM + extra).map(|n| job(n as u32)).collect();
    for r in h.backend.enqueue_many(jobs).await.unwrap() {
        r.unwrap();
    }
    let wide = req("w-wide", MAX_CONCURRENCY);
    let first = h.backend.fetch(&wide, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), MAX_CLAIM, "one fetch takes MAX_CLAIM");
    let endings: Vec<Ending> = first.iter().map(Ending::handed_back).collect();
    let done = h
        .backend
        .finish_many(endings, Some(req("w-wide", MAX_CONCURRENCY)))
        .await
        .unwrap();
    assert_eq!(
        done.next.len(),
        MAX_CLAIM,
        "one finish's claim takes MAX_CLAIM"
    );
    let stats = h.backend.stats().await.unwrap();
    assert_eq!(
        (stats.processing, stats.queued),
        (MAX_CLAIM as u64, extra as u64),
        "the rest stays ready"
    );
}

/// An ending sent again (its reply was lost) answers as the first did, also for a job that
/// lives elsewhere than its chosen id names (its group routes it).
pub async fn an_ending_sent_again_answers_the_same_wherever_its_job_lives(h: &Harness) {
    let p = h.partitions();
    let id = JobId::new();
    let group = (0..)
        .map(|i| format!("elsewhere-{i}"))
        .find(|g| p == 1 || partition_of(&format!("g:{g}"), p) != id.home() % p)
        .expect("a group routed away from the id");
    enqueue(h, job(1).job_id(id).group(group)).await;
    let lease = claim_one(h).await;
    assert_eq!(lease.job.job_id, id);
    assert_eq!(finish(h, &lease, completed()).await, JobStatus::Completed);
    assert_eq!(finish(h, &lease, completed()).await, JobStatus::Completed);
    let again = h
        .backend
        .finish_many(
            vec![Ending {
                lease: lease.to_ref(),
                outcome: completed(),
            }],
            None,
        )
        .await
        .unwrap();
    assert!(
        matches!(again.statuses[..], [Ok(JobStatus::Completed)]),
        "{again:?}"
    );
    assert_eq!(get(h, id).await.status, JobStatus::Completed);
}

/// A flow lives in one partition: on a partitioned queue a flow whose jobs' groups route
/// to two partitions is refused, naming the job and its group, and nothing is created; a
/// flow whose groups share a partition (or a queue of one partition) takes it.
pub async fn a_flow_lives_in_one_partition(h: &Harness) {
    let p = h.partitions();
    let home = h.group_name("parent");
    let away = (0..)
        .map(|i| format!("away-{i}"))
        .find(|g| {
            p == 1 || partition_of(&format!("g:{g}"), p) != partition_of(&format!("g:{home}"), p)
        })
        .expect("a group routed elsewhere");
    let mixed = Flow::new(in_group(1, &home)).child(Flow::new(in_group(2, &away)));
    if p > 1 {
        let err = h.backend.enqueue_flow(mixed).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("share a partition") && text.contains(&away),
            "{text}"
        );
        assert_eq!(h.backend.stats().await.unwrap().total, 0, "nothing created");
    } else {
        enqueue_flow(h, mixed).await;
        assert_eq!(h.backend.stats().await.unwrap().total, 2);
    }
    let together = Flow::new(in_group(3, &home)).child(flow(4)).child(flow(5));
    let root = enqueue_flow(h, together).await;
    let kids = h.backend.children(root.job_id).await.unwrap();
    assert_eq!(kids.len(), 2);
    let added = h
        .backend
        .add_children(root.job_id, vec![flow(6)])
        .await
        .unwrap();
    assert_eq!(added[0].parent, Some(root.job_id));
}

/// A partition key at its bound is taken; one byte past it, or with a group, is refused by
/// name (on every backend: a queue of one partition ignores the key, not its bound).
pub async fn a_partition_key_at_its_bound(h: &Harness) {
    let most = "k".repeat(MAX_PARTITION_KEY_BYTES);
    let r = enqueue(h, job(1).partition_key(most)).await;
    assert_eq!(n_of(&get(h, r.job_id).await), 1);
    let past = "k".repeat(MAX_PARTITION_KEY_BYTES + 1);
    invalid(
        h.backend.enqueue(job(2).partition_key(past)).await,
        "partition key",
    );
    invalid(
        h.backend
            .enqueue(job(3).group("g").partition_key("k"))
            .await,
        "no partition key",
    );
    assert_eq!(h.backend.stats().await.unwrap().total, 1);
}

/// A sequence and a group each live in one partition, and the two may hash to different
/// ones: on a partitioned queue a sequenced job with a group is refused, saying so (a
/// queue of one partition takes it).
pub async fn a_sequenced_job_takes_no_group_when_partitioned(h: &Harness) {
    let both = job(1).sequence("s").group("g");
    if h.partitions() > 1 {
        invalid(h.backend.enqueue(both).await, "sequence takes no group");
        assert_eq!(h.backend.stats().await.unwrap().total, 0);
    } else {
        enqueue(h, both).await;
    }
    enqueue(h, job(2).sequence("s")).await;
}
