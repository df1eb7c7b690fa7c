//! Durability (issue 24): the settings a Redis needs for the queue's promise are read when
//! the backend connects, named when they fall short, and required on request; and a
//! drill kills a master without a coordinated failover (SIGKILL, its replica promoted by
//! hand) to count the acknowledged jobs lost, without and with waiting for the replica.

mod support;

use std::{sync::Arc, time::Duration};

use queue_core::{JobId, JobStore, NewJob, QueueConfig};
use queue_redis::RedisBackend;
use support::{RedisServer, cli, free_port, unique_queue};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinSet,
};

fn config(url: &str, queue: &str) -> QueueConfig {
    QueueConfig::builder()
        .redis_url(url)
        .unwrap()
        .queue_name(queue)
        .build()
        .unwrap()
}

/// Each setting that can lose acknowledged jobs is named; with `require_durability` the
/// backend refuses such a server, and accepts one that keeps what it acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_can_lose_jobs_are_named_and_refused_on_request() {
    let cases: [(&[&str], &[&str]); 3] = [
        (&["--appendonly no"], &["appendonly is no"]),
        (
            &["--appendonly yes", "--maxmemory-policy allkeys-lru"],
            &["maxmemory-policy is allkeys-lru"],
        ),
        (
            &[
                "--appendonly yes",
                "--appendfsync always",
                "--maxmemory-policy noeviction",
            ],
            &[],
        ),
    ];
    for (args, named) in cases {
        let server = RedisServer::start(free_port(), args);
        let cfg = config(&server.url(), &unique_queue());
        let lax = RedisBackend::builder(&cfg).build().await.unwrap();
        let problems = lax.durability().problems.join("; ");
        assert_eq!(lax.durability().problems.len(), named.len(), "{problems}");
        for name in named {
            assert!(problems.contains(name), "{problems}");
        }
        let strict = RedisBackend::builder(&cfg)
            .require_durability(true)
            .build()
            .await;
        match (named.is_empty(), strict) {
            (true, Ok(_)) => {}
            (false, Err(err)) => {
                let text = err.to_string();
                assert!(text.contains(named[0]), "{text}");
            }
            (ok, other) => panic!("{args:?}: expected refusal {}, got {other:?}", !ok),
        }
    }
}

/// A TCP proxy that delays what flows from `upstream` to the client (the replication
/// stream, when a replica connects through it) by `delay`; dropping the set of its tasks
/// drops whatever is in flight, as a partition would.
async fn delaying_proxy(upstream: u16, delay: Duration) -> (u16, JoinSet<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        let mut pairs = JoinSet::new();
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            pairs.spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            });
            let (tx, mut rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
            pairs.spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = server_read.read(&mut buf).await {
                    if n == 0
                        || tx
                            .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                            .is_err()
                    {
                        break;
                    }
                }
            });
            pairs.spawn(async move {
                while let Some((at, bytes)) = rx.recv().await {
                    tokio::time::sleep_until(at).await;
                    if client_write.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, tasks)
}

/// SIGKILLs the server on `port` (no shutdown, no last words to its replicas).
fn sigkill(port: u16) {
    let info = cli(port, &["INFO", "server"]).unwrap();
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .map(|p| p.trim().to_owned())
        .expect("the server says its pid");
    std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
}

/// Enqueues 60 jobs (three concurrent batches of 20) on a master whose replica receives
/// the replication stream `delay` late, then SIGKILLs the master, promotes the replica and
/// counts the acknowledged jobs it lacks.
async fn lost_after_unplanned_failover(delay: Duration, wait: Option<Duration>) -> usize {
    let master = RedisServer::start(free_port(), &["--appendonly no"]);
    let (proxy, tasks) = delaying_proxy(master.port, delay).await;
    let replica = RedisServer::start(
        free_port(),
        &["--appendonly no", &format!("--replicaof 127.0.0.1 {proxy}")],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cli(replica.port, &["INFO", "replication"])
        .unwrap_or_default()
        .contains("master_link_status:up")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never synced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let queue = unique_queue();
    let mut builder = RedisBackend::builder(&config(&master.url(), &queue));
    if let Some(timeout) = wait {
        builder = builder.wait_for_replicas(1, timeout);
    }
    let backend = Arc::new(builder.build().await.unwrap());
    let mut acknowledged: Vec<JobId> = Vec::new();
    for round in 0..3 {
        let mut batches = JoinSet::new();
        for batch in 0..20 {
            let backend = Arc::clone(&backend);
            batches.spawn(async move {
                let job = NewJob::new("t", &(round * 20 + batch)).unwrap();
                backend.enqueue(job).await
            });
        }
        while let Some(r) = batches.join_next().await {
            acknowledged.push(r.unwrap().expect("acknowledged").job_id);
        }
    }
    // The master dies at once, taking what its replica has not received yet.
    drop(tasks);
    sigkill(master.port);
    cli(replica.port, &["REPLICAOF", "NO", "ONE"]);
    let promoted = RedisBackend::builder(&config(&replica.url(), &queue))
        .build()
        .await
        .unwrap();
    let mut lost = 0;
    for id in acknowledged {
        if promoted.get(id).await.is_err() {
            lost += 1;
        }
    }
    lost
}

/// Without waiting, jobs acknowledged in the last moments before an unplanned failover
/// are lost with the master; waiting for one replica, none is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_replica_keeps_acknowledged_jobs_through_an_unplanned_failover() {
    let without = lost_after_unplanned_failover(Duration::from_secs(3), None).await;
    let with =
        lost_after_unplanned_failover(Duration::from_millis(200), Some(Duration::from_secs(5)))
            .await;
    println!(
        "acknowledged jobs lost of 60: without waiting {without}, waiting for a replica {with}"
    );
    assert!(
        without > 0,
        "the drill loses the replication backlog without WAIT"
    );
    assert_eq!(with, 0, "every acknowledged job reached the replica");
}
