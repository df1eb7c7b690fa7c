//! Work per call, seen from the server (issue 24): on private servers, whose command
//! counters (`INFO commandstats`, which counts the commands scripts run) only these tests
//! move. A claim replay reads only its own leases; a heartbeat reads only the workers lost
//! since the last one; an enqueue with Redis gone answers within the response timeout.

mod support;

use std::time::Duration;

use queue_core::backend::{Broker, ClaimRequest, WorkerBeat};
use queue_core::{JobStore, ManualClock, NewJob, WorkerId};
use support::{RedisServer, cli, free_port};

/// How many times the server ran `command` (from scripts too).
fn calls(port: u16, command: &str) -> u64 {
    let stats = cli(port, &["INFO", "commandstats"]).expect("INFO answers");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn beat(worker: &str) -> WorkerBeat {
    WorkerBeat {
        worker: WorkerId::new(worker),
        host: "h".into(),
        pid: 1,
        concurrency: 1,
        started_at: queue_core::backend::from_millis(0),
        version: "1".into(),
        tasks: Vec::new(),
        schemas: Default::default(),
        lease: Duration::from_secs(30),
        interval: Duration::from_secs(10),
    }
}

/// A claim sent again (its reply was lost) reads only the leases that claim took, however
/// many leases other claims hold: never every lease of the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_replay_reads_only_its_own_leases() {
    let server = RedisServer::start(free_port(), &["--appendonly no"]);
    let backend = support::backend(&server.url(), Some(ManualClock::new())).await;
    let jobs: Vec<NewJob> = (0..2001).map(|n| NewJob::new("t", &n).unwrap()).collect();
    for r in backend.enqueue_many(jobs).await.unwrap() {
        r.unwrap();
    }
    let lease = Duration::from_secs(30);
    for _ in 0..2 {
        let others = ClaimRequest::new(WorkerId::new("busy"), 1000, lease);
        assert_eq!(
            backend.fetch(&others, Duration::ZERO).await.unwrap().len(),
            1000
        );
    }
    let mine = ClaimRequest::new(WorkerId::new("mine"), 1, lease);
    let first = backend.fetch(&mine, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), 1);
    let hgetall = calls(server.port, "hgetall");
    let hget = calls(server.port, "hget");
    let again = backend.fetch(&mine, Duration::ZERO).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].job.job_id, first[0].job.job_id);
    assert_eq!(
        calls(server.port, "hgetall") - hgetall,
        1,
        "one HGETALL: the record it answers, no scan of the 2,000 other leases"
    );
    assert!(calls(server.port, "hget") - hget < 10, "its own lease only");
}

/// A heartbeat reads the workers lost since the last heartbeat looked, not every worker
/// lost in the last hour, beat after beat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_reads_only_newly_lost_workers() {
    let server = RedisServer::start(free_port(), &["--appendonly no"]);
    let clock = ManualClock::new();
    let backend = support::backend(&server.url(), Some(clock.clone())).await;
    for n in 0..200 {
        backend
            .heartbeat(&beat(&format!("gone-{n}")), &[])
            .await
            .unwrap();
    }
    // They stop beating: lost after three intervals, listed as lost for an hour.
    clock.advance(Duration::from_secs(60));
    backend.heartbeat(&beat("alive"), &[]).await.unwrap();
    let lost = backend.workers().await.unwrap();
    assert_eq!(lost.iter().filter(|w| w.lost).count(), 200);
    let hdel = calls(server.port, "hdel");
    for _ in 0..5 {
        clock.advance(Duration::from_secs(1));
        backend.heartbeat(&beat("alive"), &[]).await.unwrap();
    }
    assert_eq!(
        calls(server.port, "hdel") - hdel,
        0,
        "no beat walks the 200 lost workers again"
    );
}

/// With Redis gone, an enqueue fails within the response timeout (here 1 s) with a
/// retryable error naming the server, instead of hanging the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_with_redis_gone_answers_in_bounded_time() {
    let mut server = RedisServer::start(free_port(), &["--appendonly no"]);
    let config = queue_testkit::suite_config(&support::unique_queue())
        .to_builder()
        .redis_url(&server.url())
        .unwrap()
        .build()
        .unwrap();
    let backend = queue_redis::RedisBackend::builder(&config)
        .key_prefix(support::testing::TEST_KEY_PREFIX)
        .response_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    backend
        .enqueue(NewJob::new("t", &1).unwrap())
        .await
        .unwrap();
    server.kill();
    for _ in 0..3 {
        let asked = std::time::Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(20),
            backend.enqueue(NewJob::new("t", &2).unwrap()),
        )
        .await
        .expect("an answer, not a hang");
        let took = asked.elapsed();
        let err = answer.unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        assert!(
            err.chain().contains(&format!("127.0.0.1:{}", server.port)),
            "{}",
            err.chain()
        );
        assert!(
            took < Duration::from_secs(5),
            "answered after {took:?}, past the response timeout of 1 s and its margin"
        );
    }
}

/// A group's hold is forgotten once it has passed: its `held:` field goes with the first
/// claim after, so the `groups` hash does not grow with every tenant ever held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_hold_is_forgotten_once_past() {
    use queue_core::backend::Outcome;
    let server = RedisServer::start(free_port(), &["--appendonly no"]);
    let clock = ManualClock::new();
    let backend = support::backend(&server.url(), Some(clock.clone())).await;
    for n in 0..2 {
        backend
            .enqueue(NewJob::new("t", &n).unwrap().group("tenant-7"))
            .await
            .unwrap();
    }
    let lease = ClaimRequest::new(WorkerId::new("w"), 1, Duration::from_secs(30));
    let leased = backend
        .fetch(&lease, Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    backend
        .finish(
            &leased.to_ref(),
            Outcome::RateLimited {
                retry_after: Duration::from_secs(60),
            },
            None,
        )
        .await
        .unwrap();
    let groups = format!(
        "{}:{{{}}}:groups",
        support::testing::TEST_KEY_PREFIX,
        backend.config().queue_name
    );
    let held = |port| cli(port, &["HEXISTS", &groups, "held:tenant-7"]).unwrap();
    assert_eq!(held(server.port).trim(), "1");
    clock.advance(Duration::from_secs(61));
    let again = ClaimRequest::new(WorkerId::new("w"), 1, Duration::from_secs(30));
    assert_eq!(
        backend.fetch(&again, Duration::ZERO).await.unwrap().len(),
        1
    );
    assert_eq!(held(server.port).trim(), "0", "the passed hold is gone");
}
