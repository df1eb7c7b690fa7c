//! `/metrics` (issue 24): behind the token when one is set, every label value escaped
//! (a queue name may hold `"` or `\`).

mod support;

use queue_core::QueueConfig;
use queue_memory::MemoryBackend;
use support::{Server, TOKEN, shared};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_token_and_escape_the_queue_name() {
    let config = QueueConfig::builder()
        .queue_name(r#"books"2\x"#)
        .build()
        .unwrap();
    let s = Server::start(shared(MemoryBackend::with_config(config)), Some(TOKEN)).await;
    let (status, _) = s.call("GET", "/metrics", None, false).await;
    assert_eq!(status, 401, "no token, no metrics");
    let (status, text) = s.call("GET", "/metrics", None, true).await;
    assert_eq!(status, 200, "{text}");
    let sample = text
        .lines()
        .find(|l| l.starts_with("dcs_queue_paused{"))
        .expect("the paused gauge");
    assert_eq!(sample, r#"dcs_queue_paused{queue="books\"2\\x"} 0"#);
    s.stop().await;
}
