//! Configuration: defaults, environment, bad values named.

use super::*;

#[test]
fn defaults_match_the_story() {
    let c = QueueConfig::from_vars(Vec::<(String, String)>::new()).unwrap();
    assert_eq!(c.redis_url.expose(), "redis://localhost:6379");
    assert_eq!(c.queue_name, "ai_processing");
    assert_eq!(c.max_concurrency, 3);
    assert_eq!(c.max_retries, 3);
    assert_eq!(c.job_timeout, Duration::from_secs(3600));
    assert_eq!(c.retry_delay, Duration::from_secs(60));
    assert_eq!(c.default_priority, Priority::Normal);
    assert_eq!(c.retry_policy().backoff(0), Duration::from_secs(60));
}

#[test]
fn every_variable_is_read() {
    let c = QueueConfig::from_vars([
        ("DCS_REDIS_URL", "redis://:pw@10.0.0.1:6380/2"),
        ("DCS_QUEUE_NAME", "007"),
        ("DCS_QUEUE_MAX_CONCURRENCY", "9"),
        ("DCS_QUEUE_MAX_RETRIES", "0"),
        ("DCS_QUEUE_JOB_TIMEOUT_SECONDS", "5"),
        ("DCS_QUEUE_RETRY_DELAY_SECONDS", "2"),
        ("DCS_QUEUE_DEFAULT_PRIORITY", "LOW"),
        ("DCS_QUEUE_RETENTION_SECONDS", "60"),
        ("OTHER", "ignored"),
    ])
    .unwrap();
    assert_eq!(c.queue_name, "007");
    assert_eq!(c.max_concurrency, 9);
    assert_eq!(c.max_retries, 0);
    assert_eq!(c.job_timeout, Duration::from_secs(5));
    assert_eq!(c.retry_delay, Duration::from_secs(2));
    assert_eq!(c.default_priority, Priority::Low);
    assert_eq!(c.retention, Duration::from_secs(60));
}

#[test]
fn bad_values_name_the_variable_and_value() {
    for (var, value) in [
        ("DCS_QUEUE_MAX_CONCURRENCY", "abc"),
        ("DCS_QUEUE_MAX_CONCURRENCY", "0"),
        ("DCS_QUEUE_MAX_CONCURRENCY", "7.6"),
        ("DCS_QUEUE_MAX_RETRIES", "-1"),
        ("DCS_QUEUE_JOB_TIMEOUT_SECONDS", "0"),
        ("DCS_QUEUE_RETRY_DELAY_SECONDS", "soon"),
        ("DCS_QUEUE_DEFAULT_PRIORITY", "urgent"),
        ("DCS_QUEUE_NAME", "a{b}"),
        ("DCS_QUEUE_NAME", ""),
        ("DCS_QUEUE_RETRY_JITTER", "2"),
    ] {
        let err = QueueConfig::from_vars([(var, value)]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("{var}={value:?}")), "{msg}");
    }
}

#[test]
fn passwords_never_show() {
    let err = QueueConfig::from_vars([("DCS_REDIS_URL", "http://u:secret@h/")]).unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
    assert!(err.to_string().contains("DCS_REDIS_URL"), "{err}");
    let url = RedisUrl::parse("rediss://user:s3cret@host:6380/0").unwrap();
    assert_eq!(url.to_string(), "rediss://user:***@host:6380/0");
    assert!(!format!("{url:?}").contains("s3cret"));
    let cfg = QueueConfig::builder()
        .redis_url("redis://:pw@h:1,redis://:pw@h:2")
        .unwrap()
        .build()
        .unwrap();
    assert!(!format!("{cfg:?}").contains("pw@"));
    assert!(cfg.redis_url.is_cluster());
    assert!(!QueueConfig::default().redis_url.is_cluster());
    // Every node's password, and `?password=` too.
    let url = RedisUrl::parse(
        "redis://:first@h:1,redis://u:second@h:2,redis://h:3/0?password=third&db=1",
    )
    .unwrap();
    let shown = format!("{url} {url:?}");
    for secret in ["first", "second", "third"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert_eq!(url.secrets(), ["first", "second", "third"]);
    assert_eq!(url.endpoints(), ["h:1", "h:2", "h:3"]);
    assert_eq!(
        RedisUrl::redact("redis://h:3/0?password=third&db=1"),
        "redis://h:3/0?password=***&db=1"
    );
}

#[test]
fn urls_are_checked_at_start_up() {
    for (url, why) in [
        ("redis://localhost:63x9", "port `63x9` is not a number"),
        ("redis://:pw@localhost:99999", "port `99999`"),
        ("redis://:pw@:6379", "has no host"),
        ("redis://h:1/abc", "database `abc`"),
        ("http://h:1", "is not a Redis URL"),
    ] {
        let err = QueueConfig::from_vars([("DCS_REDIS_URL", url)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DCS_REDIS_URL") && err.contains(why),
            "{url}: {err}"
        );
        assert!(!err.contains("pw@"), "{err}");
    }
    RedisUrl::parse("redis://[::1]:6380/2").unwrap();
    RedisUrl::parse("unix:///tmp/redis.sock").unwrap();
    assert_eq!(
        RedisUrl::parse("redis://[::1]:6380").unwrap().endpoints(),
        ["::1:6380"]
    );
}

#[test]
fn builder_validates() {
    assert!(QueueConfig::builder().max_concurrency(0).build().is_err());
    assert!(QueueConfig::builder().queue_name("a:b").build().is_err());
    let err = QueueConfig::builder()
        .heartbeat(Duration::from_secs(60))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("heartbeat"));
    let c = QueueConfig::builder().max_concurrency(10).build().unwrap();
    assert_eq!(c.max_concurrency, 10);
}
