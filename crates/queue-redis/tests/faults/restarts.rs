//! What survives a Redis restart or a dropped connection: settings, group slots, waiters,
//! flows, schedules, subscribers and webhook deliveries.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_rate_limit_survive_a_redis_restart() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("dcs-flow-restart-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    let aof = ["--appendonly yes", "--appendfsync always"];
    let mut server = RedisServer::start_in(port, dir.clone(), &aof);
    let cfg = config(&server.url());
    let backend = RedisBackend::connect(&cfg).await.unwrap();
    let limit = queue_core::RateLimit::new(2, Duration::from_secs(3600)).unwrap();
    backend.set_rate_limit(Some(limit)).await.unwrap();
    enqueue_n(&backend, 5).await;
    let req = || {
        queue_core::backend::ClaimRequest::new(
            queue_core::WorkerId::new("w"),
            10,
            Duration::from_secs(30),
        )
    };
    use queue_core::backend::Broker;
    assert_eq!(
        backend.fetch(&req(), Duration::ZERO).await.unwrap().len(),
        2
    );
    backend.pause().await.unwrap();

    server.kill();
    let _server = RedisServer::start_in(port, dir, &aof);
    let stats = loop {
        match backend.stats().await {
            Ok(stats) => break stats,
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{}", e.chain()),
        }
    };
    assert!(stats.paused, "still paused after the restart");
    assert_eq!(stats.rate_limit, Some(limit));
    assert!(
        backend
            .fetch(&req(), Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    backend.resume().await.unwrap();
    // The window's two starts survived too: nothing more starts within the hour.
    assert!(
        backend
            .fetch(&req(), Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    backend.set_rate_limit(None).await.unwrap();
    assert_eq!(
        backend.fetch(&req(), Duration::ZERO).await.unwrap().len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_limits_and_slots_survive_a_redis_restart() {
    use queue_core::backend::{Broker, ClaimRequest, Outcome};
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("dcs-group-restart-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    let aof = ["--appendonly yes", "--appendfsync always"];
    let mut server = RedisServer::start_in(port, dir.clone(), &aof);
    let cfg = config(&server.url());
    let backend = RedisBackend::connect(&cfg).await.unwrap();
    backend.set_group_concurrency("g", Some(1)).await.unwrap();
    backend.pause_group("h").await.unwrap();
    backend.set_group_weight("g", Some(2)).await.unwrap();
    let hour = queue_core::RateLimit::new(5, Duration::from_secs(3600)).unwrap();
    backend.set_group_rate_limit("r", Some(hour)).await.unwrap();
    let job = |n: u32, g: &str| NewJob::new("t", &n).unwrap().group(g);
    let g1 = backend.enqueue(job(1, "g")).await.unwrap();
    let g2 = backend.enqueue(job(2, "g")).await.unwrap();
    let h1 = backend.enqueue(job(3, "h")).await.unwrap();
    // Group r: 4 of its 5 an hour used by a costly start; the next (cost 2) must wait.
    let r1 = backend.enqueue(job(4, "r").cost(4)).await.unwrap();
    backend.enqueue(job(5, "r").cost(2)).await.unwrap();
    let req = || ClaimRequest::new(queue_core::WorkerId::new("w"), 10, Duration::from_secs(60));
    let mut leases = backend.fetch(&req(), Duration::ZERO).await.unwrap();
    leases.sort_by_key(|l| l.job.group.clone());
    let started: Vec<JobId> = leases.iter().map(|l| l.job.job_id).collect();
    assert_eq!(started, vec![g1.job_id, r1.job_id]);

    server.kill();
    let _server = RedisServer::start_in(port, dir, &aof);
    let g = loop {
        match backend.group("g").await {
            Ok(g) => break g,
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{}", e.chain()),
        }
    };
    assert_eq!((g.ready, g.running, g.concurrency), (1, 1, Some(1)));
    assert_eq!((g.weight, g.unfinished), (Some(2), 2));
    assert!(backend.group("h").await.unwrap().paused);
    let r = backend.group("r").await.unwrap();
    assert_eq!((r.rate_limit, r.unfinished), (Some(hour), 2));
    assert!(
        backend
            .fetch(&req(), Duration::ZERO)
            .await
            .unwrap()
            .is_empty(),
        "g is at its limit, h is paused and r's window has no room for a cost of 2, after the restart too"
    );
    // The running job's ending gives its slot back; the next job of g starts.
    let done = backend
        .finish(
            &leases[0].to_ref(),
            Outcome::Completed { result: None },
            Some(req()),
        )
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    let next: Vec<JobId> = done.next.iter().map(|l| l.job.job_id).collect();
    assert_eq!(next, vec![g2.job_id]);
    backend.resume_group("h").await.unwrap();
    let last = backend.fetch(&req(), Duration::ZERO).await.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].job.job_id, h1.job_id);
}

/// `wait` from another process (a second backend, its own connections) survives a Redis
/// restart while it waits: its subscription comes back and the job's ending wakes it
/// (at the latest at the re-read every `WAIT_RECHECK`).
#[tokio::test]
async fn a_waiter_in_another_process_rides_out_a_redis_restart() {
    use queue_core::backend::{Broker, ClaimRequest, Outcome};
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("dcs-wait-restart-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    let aof = ["--appendonly yes", "--appendfsync always"];
    let mut server = RedisServer::start_in(port, dir.clone(), &aof);
    let cfg = config(&server.url());
    let producer = RedisBackend::connect(&cfg).await.unwrap();
    let waiter_side = RedisBackend::connect(&cfg).await.unwrap();
    let job = producer
        .enqueue(NewJob::new("t", &1).unwrap())
        .await
        .unwrap();
    let id = job.job_id;
    let started = std::time::Instant::now();
    let waiter = tokio::spawn(async move { waiter_side.wait(id, Duration::from_secs(60)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    let _server = RedisServer::start_in(port, dir, &aof);
    let req = || ClaimRequest::new(queue_core::WorkerId::new("w"), 1, Duration::from_secs(60));
    let lease = loop {
        match producer.fetch(&req(), Duration::ZERO).await {
            Ok(mut leases) if !leases.is_empty() => break leases.remove(0),
            Ok(_) => panic!("the job survives the restart (AOF)"),
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{}", e.chain()),
        }
    };
    assert!(!waiter.is_finished(), "the job is running, not finished");
    let done = producer
        .finish(
            &lease.to_ref(),
            Outcome::Completed {
                result: Some(serde_json::json!({"pages": 3})),
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    let record = tokio::time::timeout(queue_core::WAIT_RECHECK * 2, waiter)
        .await
        .expect("the waiter wakes after the restart")
        .unwrap()
        .unwrap();
    assert_eq!(record.status, JobStatus::Completed);
    assert_eq!(record.result, Some(serde_json::json!({"pages": 3})));
    println!("waiter woke {:?} after it started", started.elapsed());
}

/// A flow across a Redis restart (AOF): the parent still waits, its counts and children
/// survive, a child finishing after the restart is counted, and the last one releases the
/// parent exactly once; a worker killed mid-child does not release the parent early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_survives_a_redis_restart() {
    use queue_core::backend::{Broker, ClaimRequest, Outcome};
    use queue_core::{ChildPolicy, Flow};
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("dcs-flow-restart-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    let aof = ["--appendonly yes", "--appendfsync always"];
    let mut server = RedisServer::start_in(port, dir.clone(), &aof);
    let cfg = config(&server.url());
    let backend = RedisBackend::connect(&cfg).await.unwrap();
    let job = |n: u32| NewJob::new("t", &n).unwrap();
    let parent = backend
        .enqueue_flow(
            Flow::new(job(0))
                .children((1..=3).map(|n| Flow::new(job(n))))
                .child(Flow::new(job(4).max_retries(0)).on_failure(ChildPolicy::Continue)),
        )
        .await
        .unwrap();
    let req = |w: &str| ClaimRequest::new(queue_core::WorkerId::new(w), 10, Duration::from_secs(2));
    let leases = backend.fetch(&req("w1"), Duration::ZERO).await.unwrap();
    assert_eq!(leases.len(), 4, "the children, not the parent");
    let by_n = |n: u64| {
        leases
            .iter()
            .find(|l| l.job.payload.to_value() == serde_json::json!(n))
            .unwrap()
            .clone()
    };
    backend
        .finish(&by_n(1).to_ref(), Outcome::Completed { result: None }, None)
        .await
        .unwrap();

    server.kill();
    let _server = RedisServer::start_in(port, dir, &aof);
    let record = loop {
        match backend.get(parent.job_id).await {
            Ok(r) => break r,
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{}", e.chain()),
        }
    };
    let counts = record.children.unwrap();
    assert_eq!((counts.waiting, counts.completed), (3, 1));
    assert_eq!(backend.stats().await.unwrap().waiting_on_children, 1);
    backend
        .finish(&by_n(2).to_ref(), Outcome::Completed { result: None }, None)
        .await
        .unwrap();
    // Worker w1 dies holding children 3 and 4: their leases expire; 3 goes back to the
    // queue (the parent keeps waiting), 4 had no retries left and fails (continue).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut reaped = backend.reap(10).await.unwrap();
    reaped.sort();
    assert_eq!(reaped.len(), 2);
    let record = backend.get(parent.job_id).await.unwrap();
    assert!(
        record.waits_on_children(),
        "a crashed child does not release its parent"
    );
    let counts = record.children.unwrap();
    assert_eq!((counts.waiting, counts.failed), (1, 1));
    let again = backend.fetch(&req("w2"), Duration::ZERO).await.unwrap();
    assert_eq!(again.len(), 1, "child 3, not the parent");
    assert_eq!(again[0].job.payload.to_value(), serde_json::json!(3));
    let done = backend
        .finish(
            &again[0].to_ref(),
            Outcome::Completed { result: None },
            Some(req("w2")),
        )
        .await
        .unwrap();
    let next: Vec<JobId> = done.next.iter().map(|l| l.job.job_id).collect();
    assert_eq!(
        next,
        vec![parent.job_id],
        "released by the last child, once"
    );
    assert!(
        backend
            .fetch(&req("w3"), Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    let kids = backend.children(parent.job_id).await.unwrap();
    assert_eq!(kids.len(), 4);
}

/// Three workers fire a one-second schedule while one of them is killed (its task dropped
/// mid-flight) and Redis restarts from its AOF: every tick from the first to the last has
/// exactly one job, with the tick's id, and the schedule survived the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_tick_once_across_a_worker_kill_and_a_redis_restart() {
    use queue_core::backend::tick_job_id;
    use queue_core::{ListQuery, Schedule, Schedules};
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("dcs-schedule-restart-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    let aof = ["--appendonly yes", "--appendfsync always"];
    let mut server = RedisServer::start_in(port, dir.clone(), &aof);
    let cfg = config(&server.url());
    let backend = RedisBackend::connect(&cfg).await.unwrap();
    let schedule = Schedule::every(
        "heartbeat",
        Duration::from_secs(1),
        NewJob::new("sleep", &1).unwrap(),
    )
    .unwrap();
    backend.put_schedule(schedule).await.unwrap();
    let stop = CancellationToken::new();
    let mut runs = Vec::new();
    for _ in 0..3 {
        let worker = sleeper(
            Worker::builder(Arc::new(backend.clone()))
                .config(&cfg)
                .concurrency(2)
                .fetch_wait(Duration::from_millis(300)),
            10,
        )
        .build()
        .unwrap();
        runs.push(tokio::spawn(worker.run(stop.clone())));
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    // One scheduler dies without a word, whatever it was doing.
    runs.remove(0).abort();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let _server = RedisServer::start_in(port, dir, &aof);
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    // Stop ticking, then let the workers finish.
    loop {
        match backend.pause_schedule("heartbeat").await {
            Ok(_) => break,
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{}", e.chain()),
        }
    }
    let record = backend.schedule("heartbeat").await.unwrap();
    let page = backend.list(&ListQuery::new().limit(1000)).await.unwrap();
    let mut ticks: Vec<i64> = page
        .jobs
        .iter()
        .map(|j| {
            let tick = j.metadata["tick"].as_str().unwrap();
            let tick = chrono::DateTime::parse_from_rfc3339(tick).unwrap();
            let ms = tick.timestamp_millis();
            assert_eq!(j.job_id, tick_job_id("heartbeat", ms), "the tick's own id");
            ms
        })
        .collect();
    ticks.sort();
    assert!(
        ticks.len() >= 5,
        "ticks fired before and after the restart: {ticks:?}"
    );
    let first = ticks[0];
    let expected: Vec<i64> = (0..ticks.len() as i64).map(|i| first + i * 1000).collect();
    assert_eq!(
        ticks, expected,
        "one job per tick, none missing, none twice"
    );
    assert_eq!(record.ticks_run, ticks.len() as u64);
    assert_eq!(
        record.last_tick.map(|t| t.timestamp_millis()),
        ticks.last().copied()
    );
    let ids: Vec<JobId> = page.jobs.iter().map(|j| j.job_id).collect();
    wait_all_done(&backend, &ids, Duration::from_secs(30)).await;
    stop.cancel();
    for run in runs {
        run.await.unwrap().unwrap();
    }
}

/// A subscriber whose connection is killed while other clients go on publishing misses
/// nothing and sees nothing twice: once subscribed again, what was published meanwhile is
/// read from the event log before the live events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_misses_nothing_across_a_dropped_connection() {
    use futures_util::StreamExt;
    use queue_core::{EventKind, JobStatus};
    let port = free_port();
    let server = RedisServer::start(port, &[]);
    let cfg = config(&server.url());
    let backend = RedisBackend::connect(&cfg).await.unwrap();
    let mut events = backend.subscribe(None).await.unwrap();
    let mut ids = enqueue_n(&backend, 1).await;
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.job_id, ids[0]);
    // The subscriber's connection goes; the queue does not wait for it.
    cli(port, &["CLIENT", "KILL", "TYPE", "pubsub"]).expect("killed");
    for _ in 0..10 {
        ids.extend(enqueue_n(&backend, 3).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut seen = vec![first.job_id];
    while seen.len() < ids.len() {
        let e = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {} events arrived", seen.len(), ids.len()))
            .unwrap();
        assert!(matches!(
            e.kind,
            EventKind::Transition {
                to: JobStatus::Queued,
                ..
            }
        ));
        seen.push(e.job_id);
    }
    assert_eq!(seen, ids, "every event once, in order");
    let extra = tokio::time::timeout(Duration::from_millis(300), events.next()).await;
    assert!(extra.is_err(), "nothing twice: {extra:?}");
}

/// Webhook deliveries are written with the transitions, so a Redis restart (AOF) loses none:
/// every finished job reaches a receiver that also fails its first requests, signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_survive_a_redis_restart() {
    use queue_core::{Webhook, verify_webhook_signature};
    use queue_testkit::receiver::Receiver;
    const SECRET: &str = "a-shared-secret-of-32-bytes-long";
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("dcs-webhook-restart-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    let aof = ["--appendonly yes", "--appendfsync always"];
    let mut server = RedisServer::start_in(port, dir.clone(), &aof);
    let cfg = config(&server.url());
    let backend = RedisBackend::connect(&cfg).await.unwrap();
    let receiver = Receiver::start(3).await;
    backend
        .put_webhook(
            &Webhook::new("books", receiver.url.as_str(), SECRET)
                .retries(20, Duration::from_millis(200)),
        )
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let worker = sleeper(
        Worker::builder(Arc::new(backend.clone()))
            .config(&cfg)
            .concurrency(4)
            .fetch_wait(Duration::from_millis(300))
            // The test's receiver listens on loopback, which deliveries may not reach
            // unless allowed.
            .webhook_egress(queue_worker::WebhookEgress::from_list("127.0.0.1").unwrap()),
        20,
    )
    .build()
    .unwrap();
    let run = tokio::spawn(worker.run(stop.clone()));
    let ids = enqueue_n(&backend, 30).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let _server = RedisServer::start_in(port, dir, &aof);
    wait_all_done(&backend, &ids, Duration::from_secs(60)).await;
    let want: std::collections::BTreeSet<String> = ids.iter().map(|i| i.to_string()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got: std::collections::BTreeSet<String> = receiver
            .received()
            .iter()
            .filter(|r| r.status == 200)
            .map(|r| {
                let ts: i64 = r.headers["x-dcs-timestamp"].parse().unwrap();
                assert!(verify_webhook_signature(
                    SECRET,
                    ts,
                    &r.body,
                    &r.headers["x-dcs-signature"]
                ));
                let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                body["job"]["job_id"].as_str().unwrap().to_owned()
            })
            .collect();
        if got == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} jobs delivered",
            got.len(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outbox = loop {
        match backend.deliveries(false, 100).await {
            Ok(d) => break d,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert!(outbox.is_empty(), "{outbox:?}");
    stop.cancel();
    run.await.unwrap().unwrap();
}
