//! Database errors as the queue's errors, with every secret cut out.

use queue_core::Error;

/// What `sqlx` reported, as a queue error: transport failures, timeouts and an exhausted
/// pool are `Unavailable` (a retry may succeed); the rest is `Backend`. `secrets` (the
/// URL's password) are replaced by `***` wherever they appear.
pub(crate) fn db_error(err: sqlx::Error, secrets: &[String]) -> Error {
    let scrub = |text: String| {
        secrets
            .iter()
            .filter(|s| !s.is_empty())
            .fold(text, |t, s| t.replace(s.as_str(), "***"))
    };
    let message = scrub(err.to_string());
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Error::Unavailable {
            backend: "postgres",
            source: message.into(),
        },
        _ => Error::backend("postgres", message),
    }
}

/// The passwords in a database URL (the user part and a `password=` parameter), by the
/// same URL rule as Redis URLs (the scheme aside).
pub(crate) fn secrets_of(url: &str) -> Vec<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    queue_core::RedisUrl::parse(&format!("redis://{rest}"))
        .map(|u| u.secrets())
        .unwrap_or_default()
}
