//! The one public error type of the queue.

use crate::backend::state::Event;
use crate::{JobId, JobStatus};

/// A boxed error from a lower layer (a Redis client, a codec).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a backend, the worker runtime or the configuration can fail with.
///
/// Messages say what went wrong and where, never the text of their `source`: print the
/// chain (see [`Error::chain`]) to get both. No variant ever holds a credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No job with this id exists (or its record expired).
    #[error("job {id} not found")]
    NotFound {
        /// The id that was looked up.
        id: JobId,
    },
    /// No schedule of this name exists.
    #[error("schedule `{name}` not found")]
    ScheduleNotFound {
        /// The name that was looked up.
        name: String,
    },
    /// The unique key already has an active (queued or processing) job.
    #[error("unique key `{unique_key}` already has an active job: {job_id}")]
    AlreadyExists {
        /// The contested unique key.
        unique_key: String,
        /// The active job holding the key.
        job_id: JobId,
    },
    /// The state machine refuses this event in the job's current state.
    #[error("job {id}: cannot {event} a job that is {from}")]
    InvalidTransition {
        /// The job.
        id: JobId,
        /// Its current status.
        from: JobStatus,
        /// The refused event.
        event: Event,
    },
    /// The job's record cannot be deleted now ([`crate::JobStore::delete`]).
    #[error("job {id} cannot be deleted: {reason}")]
    NotDeletable {
        /// The job.
        id: JobId,
        /// Why ([`crate::backend::DeleteDecision::refusal`]).
        reason: String,
    },
    /// The caller's lease on the job expired or was taken over; it must not touch the job.
    #[error("lease on job {id} was lost")]
    LeaseLost {
        /// The job whose lease was lost.
        id: JobId,
    },
    /// The backend could not be reached or timed out; retrying later may succeed.
    #[error("{backend} is unavailable")]
    Unavailable {
        /// Which backend (`"redis"`, `"memory"`).
        backend: &'static str,
        /// The transport error.
        #[source]
        source: BoxError,
    },
    /// The backend answered with an error that retrying will not fix (a script error, a
    /// wrong type).
    #[error("{backend} failed: {message}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What failed.
        message: String,
        /// The backend's own error, when there is one (credentials cut out).
        #[source]
        source: Option<BoxError>,
    },
    /// A payload or a value could not be encoded or decoded.
    #[error("{context}")]
    Codec {
        /// What was being encoded or decoded, and what is wrong with it.
        context: String,
        /// The underlying codec error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// What the backend holds is not what the queue wrote: a stored record with a missing
    /// or malformed field, a key of the wrong type. The job it belongs to fails (or is
    /// skipped by listings); the worker and the other jobs go on.
    #[error("corrupt data: {context}")]
    Corrupt {
        /// Which record or key, and what is wrong with it.
        context: String,
    },
    /// A configuration value is invalid; the message names the variable (or builder field)
    /// and the value.
    #[error("invalid configuration: {message}")]
    Config {
        /// Names the setting, the bad value and what was expected.
        message: String,
    },
    /// An argument is out of its domain (a malformed cursor, a progress above 100).
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// What was wrong.
        message: String,
    },
}

impl Error {
    /// True when the same call may succeed later (the backend was unreachable).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// Builds a [`Error::Codec`] with a source.
    pub fn codec(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Codec {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// Builds a [`Error::Corrupt`].
    pub fn corrupt(context: impl Into<String>) -> Self {
        Self::Corrupt {
            context: context.into(),
        }
    }

    /// Builds a [`Error::Backend`] without a source.
    pub fn backend(backend: &'static str, message: impl Into<String>) -> Self {
        Self::Backend {
            backend,
            message: message.into(),
            source: None,
        }
    }

    /// Builds a [`Error::Config`].
    pub fn config(message: impl Into<String>) -> Self {
        Self::Config {
            message: message.into(),
        }
    }

    /// Builds a [`Error::InvalidArgument`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            message: message.into(),
        }
    }

    /// The message followed by every source, joined with `": "`: one line for a log or a
    /// command-line error.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(err) = source {
            out.push_str(": ");
            out.push_str(&err.to_string());
            source = err.source();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_prints_each_source_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let err = Error::Unavailable {
            backend: "redis",
            source: Box::new(io),
        };
        assert_eq!(err.to_string(), "redis is unavailable");
        assert_eq!(err.chain(), "redis is unavailable: connection refused");
        assert!(err.is_retryable());
        assert!(!Error::invalid("x").is_retryable());
    }

    #[test]
    fn each_constructor_builds_its_own_variant() {
        assert!(matches!(
            Error::corrupt("job x: field `status`"),
            Error::Corrupt { .. }
        ));
        assert!(matches!(
            Error::codec("payload", std::fmt::Error),
            Error::Codec {
                source: Some(_),
                ..
            }
        ));
        assert!(matches!(Error::config("x"), Error::Config { .. }));
        assert!(matches!(Error::invalid("x"), Error::InvalidArgument { .. }));
        let err = Error::backend("redis", "script failed");
        assert!(matches!(err, Error::Backend { source: None, .. }));
        assert_eq!(err.to_string(), "redis failed: script failed");
        assert_eq!(
            Error::corrupt("job x: field `status` is not a status").to_string(),
            "corrupt data: job x: field `status` is not a status"
        );
    }
}
