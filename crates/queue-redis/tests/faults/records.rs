//! Damaged records, credentials and refused commands: each fails what it touches and
//! nothing else.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_job_records_fail_their_job_and_nothing_else() {
    let url = support::redis_url();
    let cfg = config(&url);
    let backend = RedisBackend::connect(&cfg).await.unwrap();
    let port: u16 = url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let prefix = format!("dcs:{{{}}}:", cfg.queue_name);
    let good = enqueue_n(&backend, 1).await[0];
    let wrong_types = enqueue_n(&backend, 1).await[0];
    let missing = enqueue_n(&backend, 1).await[0];
    let not_a_hash = enqueue_n(&backend, 1).await[0];
    let key = |id: JobId| format!("{prefix}job:{id}");
    cli(
        port,
        &[
            "HSET",
            &key(wrong_types),
            "retry_count",
            "abc",
            "max_retries",
            "x",
            "payload",
            "{not json",
        ],
    );
    cli(
        port,
        &["HDEL", &key(missing), "task", "created_at", "priority"],
    );
    cli(port, &["DEL", &key(not_a_hash)]);
    cli(port, &["SET", &key(not_a_hash), "garbage"]);
    assert!(matches!(
        backend.get(not_a_hash).await,
        Err(queue_core::Error::Corrupt { .. })
    ));
    let err = backend.get(wrong_types).await.unwrap_err().to_string();
    assert!(
        err.contains("field `") && err.contains(&wrong_types.to_string()),
        "{err}"
    );

    let stop = CancellationToken::new();
    let worker = sleeper(
        Worker::builder(Arc::new(backend.clone()))
            .config(&cfg)
            .concurrency(2),
        1,
    )
    .build()
    .unwrap();
    let run = tokio::spawn(worker.run(stop.clone()));
    let statuses = wait_all_done(
        &backend,
        &[good, wrong_types, missing, not_a_hash],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        statuses,
        [
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Failed,
            JobStatus::Failed
        ]
    );
    for id in [wrong_types, missing] {
        let r = backend.get(id).await.unwrap();
        let msg = r.error_message.unwrap();
        assert!(
            msg.starts_with("corrupt job record") && msg.contains("field `"),
            "{msg}"
        );
    }
    let r = backend.get(not_a_hash).await.unwrap();
    assert!(r.error_message.unwrap().contains("stored as a string"));
    // The worker is still alive and working.
    let after = enqueue_n(&backend, 3).await;
    let statuses = wait_all_done(&backend, &after, Duration::from_secs(20)).await;
    assert!(statuses.iter().all(|s| *s == JobStatus::Completed));
    stop.cancel();
    run.await.unwrap().unwrap();
    backend.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked_and_never_shown() {
    let server = RedisServer::start(free_port(), &["--appendonly no", "--requirepass s3cret-pw"]);
    let url = |auth: &str| format!("redis://{auth}127.0.0.1:{}", server.port);
    let good = RedisBackend::connect(&config(&url(":s3cret-pw@")))
        .await
        .expect("right password");
    good.enqueue(NewJob::new("t", &1).unwrap()).await.unwrap();
    assert!(!format!("{good} {good:?}").contains("s3cret-pw"));
    for auth in ["", ":wrong-pw@"] {
        let err = RedisBackend::connect(&config(&url(auth)))
            .await
            .unwrap_err()
            .chain();
        assert!(
            err.contains("NOAUTH") || err.contains("WRONGPASS") || err.contains("authentication"),
            "{auth}: {err}"
        );
        assert!(
            !err.contains("s3cret-pw") && !err.contains("wrong-pw"),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_command_keeps_the_servers_answer_as_its_source() {
    let url = support::redis_url();
    let cfg = config(&url);
    let backend = RedisBackend::connect(&cfg).await.unwrap();
    let port: u16 = url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    // The priority index an enqueue writes to, replaced by a string: the script's write is
    // refused by the server (WRONGTYPE), a fault no retry will fix.
    let prefix = format!("dcs:{{{}}}:", cfg.queue_name);
    let ready: Vec<String> = (0..3).map(|p| format!("{prefix}ready:{p}")).collect();
    for key in &ready {
        cli(port, &["SET", key, "garbage"]);
    }
    let err = backend
        .enqueue(NewJob::new("t", &1).unwrap())
        .await
        .unwrap_err();
    for key in &ready {
        cli(port, &["DEL", key]);
    }
    backend.destroy().await.unwrap();
    assert!(!err.is_retryable(), "{}", err.chain());
    let queue_core::Error::Backend { ref message, .. } = err else {
        panic!("expected Error::Backend, got {}", err.chain());
    };
    // The server's answer is kept whole in the source chain, for `downcast_ref`.
    let mut source = std::error::Error::source(&err);
    let server = loop {
        let Some(s) = source else {
            panic!("no ServerError in the chain: {}", err.chain());
        };
        if let Some(server) = s.downcast_ref::<queue_redis::ServerError>() {
            break server;
        }
        source = s.source();
    };
    assert!(server.to_string().contains("WRONGTYPE"), "{}", err.chain());
    assert!(
        !message.contains("WRONGTYPE Operation"),
        "the message does not repeat its source"
    );
    assert!(server.code().is_some(), "{}", err.chain());
}
