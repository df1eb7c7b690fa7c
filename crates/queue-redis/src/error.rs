//! Redis errors mapped into the queue's error, classified precisely.

use queue_core::Error;
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// Maps a client error: transport trouble is `Unavailable` (retryable), anything the server
/// refused for a reason a retry will not fix is `Backend`. `secret` (a password) is cut out
/// of every message.
pub(crate) fn map(err: RedisError, secret: Option<&str>) -> Error {
    let transient = err.is_io_error()
        || err.is_connection_dropped()
        || err.is_timeout()
        || err.is_connection_refusal()
        || err.is_cluster_error()
        || matches!(
            err.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::TryAgain
                )
        );
    let message = redact(&err.to_string(), secret);
    if transient {
        Error::Unavailable {
            backend: "redis",
            source: message.into(),
        }
    } else {
        Error::Backend {
            backend: "redis",
            message,
        }
    }
}

pub(crate) fn redact(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() => text.replace(s, "***"),
        _ => text.to_owned(),
    }
}

/// The password of a `redis://user:password@host` URL, if any.
pub(crate) fn password_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then(|| password.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_found_and_cut() {
        assert_eq!(
            password_of("redis://:s3cret@h:1/0").as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            password_of("redis://u:p%40ss@h:1").as_deref(),
            Some("p%40ss")
        );
        assert_eq!(password_of("redis://h:1"), None);
        assert_eq!(
            redact("auth s3cret failed", Some("s3cret")),
            "auth *** failed"
        );
    }
}
