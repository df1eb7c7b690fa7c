//! The conformance suite on a queue of four partitions over the 3-master Redis Cluster
//! that this test binary starts (the fifth deployment: README "Partitions").

mod support;

async fn fresh(clock: queue_core::ManualClock) -> queue_testkit::Harness {
    let url = tokio::task::spawn_blocking(support::cluster_url)
        .await
        .unwrap();
    support::partitioned_harness(&url, clock, 4).await
}

queue_testkit::conformance_tests!(fresh);

/// The layout tests: a queue of its own on the cluster.
async fn partitioned(partitions: u32) -> queue_redis::PartitionedBackend {
    let url = tokio::task::spawn_blocking(support::cluster_url)
        .await
        .unwrap();
    support::backend(&url, None)
        .await
        .partitioned(partitions)
        .await
        .expect("a partitioned queue")
}

/// Which master owns each of `tags` (by `CLUSTER SLOTS` on the first node).
async fn masters_of(tags: &[String]) -> Vec<String> {
    let url = tokio::task::spawn_blocking(support::cluster_url)
        .await
        .unwrap();
    let first = url.split(',').next().unwrap().to_owned();
    let client = redis::Client::open(first).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let slots: Vec<(i64, i64, Vec<redis::Value>)> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async::<Vec<redis::Value>>(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .map(|range| match range {
            redis::Value::Array(parts) => {
                let int = |v: &redis::Value| match v {
                    redis::Value::Int(i) => *i,
                    _ => -1,
                };
                let node = match &parts[2] {
                    redis::Value::Array(node) => node.clone(),
                    _ => Vec::new(),
                };
                (int(&parts[0]), int(&parts[1]), node)
            }
            _ => (0, -1, Vec::new()),
        })
        .collect();
    let mut out = Vec::new();
    for tag in tags {
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(format!("{{{tag}}}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        let (_, _, node) = slots
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&slot))
            .expect("every slot is served");
        out.push(format!("{node:?}"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_spread_over_the_masters() {
    let queue = partitioned(3).await;
    let tags = queue.partition_tags();
    assert_eq!(tags.len(), 3);
    let masters = masters_of(&tags).await;
    let distinct: std::collections::HashSet<_> = masters.iter().collect();
    assert_eq!(
        distinct.len(),
        3,
        "one partition per master: {tags:?} on {masters:?}"
    );
    queue.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partition_count_is_bounded() {
    use queue_core::backend::MAX_PARTITIONS;
    let at_most = partitioned(MAX_PARTITIONS).await;
    assert_eq!(at_most.layout().partitions, MAX_PARTITIONS);
    assert_eq!(at_most.partition_tags().len(), MAX_PARTITIONS as usize);
    let err = at_most.resize(MAX_PARTITIONS + 1).await.unwrap_err();
    assert!(err.to_string().contains("1..=64"), "{err}");
    let url = tokio::task::spawn_blocking(support::cluster_url)
        .await
        .unwrap();
    let err = support::backend(&url, None)
        .await
        .partitioned(MAX_PARTITIONS + 1)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("65"), "{err}");
    at_most.destroy().await.unwrap();
}

/// Growing and shrinking while jobs are queued and running loses nothing: new jobs follow
/// the new layout, old partitions drain, and every process reads the stored layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resizing_loses_nothing() {
    use queue_core::backend::{Broker, ClaimRequest, Ending, Outcome};
    use queue_core::{JobStore, NewJob, WorkerId};
    use std::time::Duration;
    let queue = partitioned(2).await;
    let enqueue = |n: u32| {
        let queue = queue.clone();
        async move {
            let mut ids = Vec::new();
            for i in 0..n {
                ids.push(
                    queue
                        .enqueue(NewJob::new("t", &i).unwrap())
                        .await
                        .unwrap()
                        .job_id,
                );
            }
            ids
        }
    };
    let homes = |ids: &[queue_core::JobId]| -> std::collections::BTreeSet<u32> {
        ids.iter().map(|id| id.home()).collect()
    };
    let first = enqueue(20).await;
    assert_eq!(homes(&first), [0, 1].into());
    let req = ClaimRequest::new(WorkerId::new("w"), 5, Duration::from_secs(60));
    let running = queue.fetch(&req, Duration::ZERO).await.unwrap();
    assert_eq!(running.len(), 5);
    // Settings of the whole queue reach the partitions a resize adds.
    let hook = queue_core::Webhook::new(
        "h",
        "https://example.com/hook",
        "a-secret-of-16-bytes-or-more",
    );
    queue.put_webhook(&hook).await.unwrap();
    let limit = queue_core::RateLimit::new(1000, Duration::from_secs(1)).unwrap();
    queue.set_rate_limit(Some(limit)).await.unwrap();

    let grown = queue.resize(4).await.unwrap();
    assert_eq!((grown.partitions, grown.span), (4, 4));
    let added = queue.partition(3).await.unwrap();
    assert_eq!(
        added.webhooks().await.unwrap().len(),
        1,
        "the webhook is there"
    );
    let shares: Vec<u32> = queue
        .partition_stats()
        .await
        .unwrap()
        .iter()
        .map(|s| s.rate_limit.map_or(0, |r| r.max))
        .collect();
    assert_eq!(shares, [250, 250, 250, 250], "the limit split again");
    assert_eq!(queue.stats().await.unwrap().rate_limit, Some(limit));
    queue.set_rate_limit(None).await.unwrap();
    let second = enqueue(20).await;
    assert_eq!(homes(&second), [0, 1, 2, 3].into());

    let shrunk = queue.resize(1).await.unwrap();
    assert_eq!(
        (shrunk.partitions, shrunk.span),
        (1, 4),
        "old partitions drain"
    );
    let third = enqueue(10).await;
    assert_eq!(homes(&third), [0].into());

    // Another process, built asking for 3 partitions, follows the stored layout.
    let other = {
        builder_for(&queue)
            .await
            .build()
            .await
            .unwrap()
            .partitioned(3)
            .await
            .unwrap()
    };
    assert_eq!(other.layout(), shrunk);
    let stats = other.stats().await.unwrap();
    assert_eq!((stats.total, stats.processing), (50, 5));
    let per: u64 = other
        .partition_stats()
        .await
        .unwrap()
        .iter()
        .map(|s| s.total)
        .sum();
    assert_eq!(per, 50);

    // The running jobs finish; the other process drains the rest from every partition.
    let endings = running
        .iter()
        .map(|l| Ending {
            lease: l.to_ref(),
            outcome: Outcome::Completed { result: None },
        })
        .collect();
    queue.finish_many(endings, None).await.unwrap();
    let mut done = 5;
    loop {
        let req = ClaimRequest::new(WorkerId::new("w2"), 10, Duration::from_secs(60));
        let leases = other.fetch(&req, Duration::ZERO).await.unwrap();
        if leases.is_empty() {
            break;
        }
        done += leases.len();
        let endings = leases
            .iter()
            .map(|l| Ending {
                lease: l.to_ref(),
                outcome: Outcome::Completed { result: None },
            })
            .collect();
        other.finish_many(endings, None).await.unwrap();
    }
    assert_eq!(done, 50, "every job ran once");
    let stats = other.stats().await.unwrap();
    assert_eq!(
        (stats.completed, stats.queued, stats.processing),
        (50, 0, 0)
    );
    queue.destroy().await.unwrap();
}

/// A builder of a plain backend on `queue` (what another process would build).
async fn builder_for(queue: &queue_redis::PartitionedBackend) -> queue_redis::RedisBackendBuilder {
    let url = tokio::task::spawn_blocking(support::cluster_url)
        .await
        .unwrap();
    let name = queue.partition_tags()[0].clone();
    let config = queue_testkit::suite_config(&name)
        .to_builder()
        .redis_url(&url)
        .unwrap()
        .build()
        .unwrap();
    queue_redis::RedisBackend::builder(&config).key_prefix(support::testing::TEST_KEY_PREFIX)
}

/// A partitioned queue opened plainly would see and feed partition 0 only: it refuses to
/// enqueue and to claim, naming the fix; `open` opens it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_queue_is_opened_whole() {
    use queue_core::backend::{Broker, ClaimRequest};
    use queue_core::{JobStore, NewJob, WorkerId};
    use std::time::Duration;
    let queue = partitioned(4).await;
    let builder = builder_for(&queue).await;
    let plain = builder.clone().build().await.unwrap();
    let err = plain
        .enqueue(NewJob::new("t", &1).unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has partitions") && err.contains("open"),
        "{err}"
    );
    let req = ClaimRequest::new(WorkerId::new("w"), 1, Duration::from_secs(30));
    assert!(plain.fetch(&req, Duration::ZERO).await.is_err());
    let whole = builder.open().await.unwrap();
    assert!(whole.to_string().contains("partitions=4"), "{whole}");
    whole.enqueue(NewJob::new("t", &1).unwrap()).await.unwrap();
    assert_eq!(queue.stats().await.unwrap().total, 1);
    queue.destroy().await.unwrap();
}

/// The layout lost (deleted here; a failover that lost its write, an operator's mistake):
/// a process that knows the queue's partitions keeps serving all of them, since a span
/// never shrinks, and writes the layout back for processes opened later. Without that, the
/// next refresh would see one partition and strand the jobs of the other three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_layout_strands_nothing() {
    use queue_core::backend::ClaimRequest;
    use queue_core::{JobStore, NewJob, WorkerId};
    use std::time::Duration;
    let queue = partitioned(4).await;
    for i in 0..40 {
        queue.enqueue(NewJob::new("t", &i).unwrap()).await.unwrap();
    }
    let url = tokio::task::spawn_blocking(support::cluster_url)
        .await
        .unwrap();
    let nodes: Vec<String> = url.split(',').map(str::to_owned).collect();
    let mut conn = redis::cluster::ClusterClient::new(nodes)
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    let key = format!(
        "{}:{{{}}}:layout",
        queue_redis::testing::TEST_KEY_PREFIX,
        queue.partition_tags()[0]
    );
    let deleted: u64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(deleted, 1, "{key} was the layout");
    // Past two refreshes, every call still sees the four partitions.
    let until = tokio::time::Instant::now() + queue_redis::LAYOUT_REFRESH * 2;
    while tokio::time::Instant::now() < until {
        assert_eq!(queue.stats().await.unwrap().queued, 40);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // It was written back: a process opened now finds the four partitions and their tags.
    let stored: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(stored.contains(&("span".into(), "4".into())), "{stored:?}");
    let later = builder_for(&queue).await.open().await.unwrap();
    assert_eq!(later.stats().await.unwrap().queued, 40);
    let req = ClaimRequest::new(WorkerId::new("w"), 40, Duration::from_secs(60));
    assert_eq!(later.fetch(&req, Duration::ZERO).await.unwrap().len(), 40);
    queue.destroy().await.unwrap();
}

/// Processes connected before the queue had partitions (a queue grown from one with
/// `queuectl partitions --resize`): one opened with `open` follows the new layout and
/// claims from every partition; a plain one stops enqueuing and claiming, naming the fix,
/// instead of serving partition 0 only and leaving the others' jobs unclaimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_follow_a_queue_given_partitions_later() {
    use queue_core::backend::ClaimRequest;
    use queue_core::{JobStore, NewJob, WorkerId};
    use std::collections::HashSet;
    use std::time::Duration;
    let url = tokio::task::spawn_blocking(support::cluster_url)
        .await
        .unwrap();
    let config = queue_testkit::suite_config(&support::unique_queue())
        .to_builder()
        .redis_url(&url)
        .unwrap()
        .build()
        .unwrap();
    let builder =
        queue_redis::RedisBackend::builder(&config).key_prefix(support::testing::TEST_KEY_PREFIX);
    let opened = builder.clone().open().await.unwrap();
    let plain = builder.clone().build().await.unwrap();
    plain.enqueue(NewJob::new("t", &0).unwrap()).await.unwrap();
    let grower = builder.build().await.unwrap().partitioned(1).await.unwrap();
    grower.resize(4).await.unwrap();
    for i in 1..40 {
        grower.enqueue(NewJob::new("t", &i).unwrap()).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut claimed = HashSet::new();
    while claimed.len() < 40 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "claimed {} of 40",
            claimed.len()
        );
        let req = ClaimRequest::new(WorkerId::new("w"), 40, Duration::from_secs(60));
        let leases = opened
            .fetch(&req, Duration::from_millis(200))
            .await
            .unwrap();
        claimed.extend(leases.into_iter().map(|l| l.job.job_id));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match plain.enqueue(NewJob::new("t", &99).unwrap()).await {
            Err(e) => {
                assert!(e.to_string().contains("has partitions"), "{e}");
                break;
            }
            Ok(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "a plain backend still enqueues to partition 0"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    grower.destroy().await.unwrap();
}
