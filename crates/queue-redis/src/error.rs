//! Redis errors mapped into the queue's error, classified precisely, naming where Redis was
//! and never what the password is.

use queue_core::{Error, RedisUrl};
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// What Redis answered when it refused a command: the source of an [`Error::Backend`]
/// (find it with `std::error::Error::source` and `downcast_ref`). Passwords are cut out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerError {
    code: Option<String>,
    message: String,
}

impl ServerError {
    /// The error code Redis sent (`NOSCRIPT`, `WRONGTYPE`, `ERR`...), when it sent one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServerError {}

/// Maps client errors for one deployment: transport trouble is `Unavailable` (retryable)
/// and names the endpoints; anything the server refused for a reason a retry will not fix
/// is `Backend`. Every password of the URL is cut out of every message.
#[derive(Clone, Debug)]
pub(crate) struct Errors {
    secrets: Vec<String>,
    endpoints: String,
}

impl Errors {
    pub(crate) fn new(url: &RedisUrl) -> Self {
        Self {
            secrets: url.secrets(),
            endpoints: url.endpoints().join(","),
        }
    }

    pub(crate) fn map(&self, err: RedisError) -> Error {
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
        let message = self.redact(&err.to_string());
        if transient {
            Error::Unavailable {
                backend: "redis",
                source: format!("{}: {message}", self.endpoints).into(),
            }
        } else {
            let source = ServerError {
                code: err.code().map(str::to_owned),
                message,
            };
            Error::Backend {
                backend: "redis",
                message: match &source.code {
                    Some(code) => format!("the server refused the command ({code})"),
                    None => "the command failed".to_owned(),
                },
                source: Some(Box::new(source)),
            }
        }
    }

    /// The endpoints this deployment talks to (no credentials).
    pub(crate) fn endpoints(&self) -> &str {
        &self.endpoints
    }

    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            out = out.replace(secret.as_str(), "***");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_password_is_cut_and_the_endpoint_named() {
        let url =
            RedisUrl::parse("redis://:s3cret@h:1,redis://u:other@h:2/0?password=third").unwrap();
        let errors = Errors::new(&url);
        assert_eq!(
            errors.redact("auth s3cret other third failed"),
            "auth *** *** *** failed"
        );
        let refused = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused (password s3cret)",
        ));
        let err = errors.map(refused);
        assert!(err.is_retryable());
        let chain = err.chain();
        assert!(chain.contains("h:1,h:2"), "{chain}");
        assert!(!chain.contains("s3cret"), "{chain}");
    }
}
