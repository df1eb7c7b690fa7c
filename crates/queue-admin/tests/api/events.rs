//! `/events`.

use super::*;

/// `/events` streams job transitions as server-sent events.
async fn events_stream(backend: SharedBackend) {
    let s = Server::start(backend.clone(), Some(TOKEN)).await;
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(
            format!(
                "GET /events?token={TOKEN} HTTP/1.1\r\nHost: {}\r\n\r\n",
                s.addr
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    assert!(seen.contains("text/event-stream"), "{seen}");
    let job = backend
        .enqueue(queue_core::NewJob::new("t", &1).unwrap())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.contains(&job.job_id.to_string()) {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("event arrives")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        seen.contains("event: transition") && seen.contains("\"to\":\"queued\""),
        "{seen}"
    );
    // Each event carries its log id; a client that reconnects with the last one gets what
    // happened while it was away.
    let last_id = seen
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
        .expect("events have ids")
        .trim()
        .to_owned();
    drop(stream);
    let missed = backend
        .enqueue(queue_core::NewJob::new("t", &2).unwrap())
        .await
        .unwrap();
    for how in ["header", "query"] {
        let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let request = match how {
            "header" => format!(
                "GET /events?token={TOKEN} HTTP/1.1\r\nHost: {}\r\nLast-Event-ID: {last_id}\r\n\r\n",
                s.addr
            ),
            _ => format!(
                "GET /events?token={TOKEN}&since={last_id} HTTP/1.1\r\nHost: {}\r\n\r\n",
                s.addr
            ),
        };
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut resumed = String::new();
        while !resumed.contains(&missed.job_id.to_string()) {
            let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{how}: the missed event is replayed: {resumed}"))
                .unwrap();
            resumed.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(
            !resumed.contains(&job.job_id.to_string()),
            "{how}: nothing before the last id is sent again: {resumed}"
        );
    }
    let (status, err) = s.json("GET", "/events?since=yesterday", None).await;
    assert_eq!(status, 400, "{err}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_memory() {
    events_stream(shared(MemoryBackend::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_redis() {
    let b = redis().await;
    events_stream(shared(b.clone())).await;
    b.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_postgres() {
    let (b, _schema) = crate::postgres().await;
    events_stream(shared(b)).await;
}
