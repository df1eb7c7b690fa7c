//! The typed job: what a producer enqueues and a handler decodes.

use serde::{Serialize, de::DeserializeOwned};

/// A job type with a fixed task name. Producers enqueue it with
/// [`crate::JobStoreExt::enqueue_job`]; the worker registers a handler for it by type.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct SendEmail { to: String }
///
/// impl queue_core::Job for SendEmail {
///     const NAME: &'static str = "send_email";
/// }
/// ```
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The task name stored on the record and used to find the handler.
    const NAME: &'static str;
}
