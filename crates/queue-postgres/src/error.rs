//! Database errors as the queue's errors, with every secret cut out.

use queue_core::Error;

/// What `sqlx` reported, as a queue error: transport failures, timeouts, an exhausted
/// pool and the server's own "try again" answers ([`retryable_state`]) are `Unavailable`
/// (a retry may succeed); the rest is `Backend`. `secrets` (the URL's password) are
/// replaced by `***` wherever they appear.
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
        sqlx::Error::Database(ref db) if db.code().is_some_and(|c| retryable_state(&c)) => {
            Error::Unavailable {
                backend: "postgres",
                source: message.into(),
            }
        }
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

/// SQLSTATEs after which the same call may succeed: a lost or refused connection (class
/// 08), a serialization failure or deadlock (40001, 40P01), the server short of resources
/// (class 53: too many connections, out of memory or disk), a statement cancelled or timed
/// out (57014), the server shutting down, restarting or starting (57P01-57P03), and a lock
/// not available in time (55P03).
pub(crate) fn retryable_state(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "40001" | "40P01" | "57014" | "57P01" | "57P02" | "57P03" | "55P03"
        )
}

#[cfg(test)]
mod tests {
    use super::retryable_state;

    #[test]
    fn the_servers_try_again_answers_are_retryable_and_the_rest_are_not() {
        for code in [
            "08006", "08001", "40001", "40P01", "53300", "57014", "57P01", "57P03", "55P03",
        ] {
            assert!(retryable_state(code), "{code}");
        }
        // Unique violation, undefined table, syntax error, check violation.
        for code in ["23505", "42P01", "42601", "23514"] {
            assert!(!retryable_state(code), "{code}");
        }
    }
}
