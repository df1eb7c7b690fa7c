//! The typed handler: what runs a [`Job`] type, with its payload and output checked by the
//! compiler.

use std::future::Future;

use queue_core::{IntoOutput, Job, JobError};

use crate::JobContext;

/// Runs jobs of type `J`: a closure or `async fn` taking `(J, JobContext)` and returning
/// `Result<J::Output, JobError>` (or `Result<Done<J::Output>, JobError>`), or a type of
/// your own that holds what its runs share.
///
/// ```
/// use queue_core::{Job, JobError};
/// use queue_worker::{Handler, JobContext};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Resize { width: u32 }
/// impl Job for Resize {
///     const NAME: &'static str = "resize";
///     type Output = u32;
/// }
///
/// struct Resizer { max_width: u32 }
///
/// impl Handler<Resize> for Resizer {
///     type Returns = u32;
///
///     async fn call(&self, job: Resize, _ctx: JobContext) -> Result<u32, JobError> {
///         Ok(job.width.min(self.max_width))
///     }
/// }
///
/// let worker = queue_worker::Worker::builder(std::sync::Arc::new(queue_memory::MemoryBackend::new()))
///     .handle::<Resize>(Resizer { max_width: 800 })
///     .build()
///     .unwrap();
/// # drop(worker);
/// ```
pub trait Handler<J: Job>: Send + Sync + 'static {
    /// What a successful run gives: `J::Output`, or `Done<J::Output>`.
    type Returns: IntoOutput<J::Output>;

    /// Runs one job.
    fn call(
        &self,
        job: J,
        ctx: JobContext,
    ) -> impl Future<Output = Result<Self::Returns, JobError>> + Send;
}

impl<J, F, Fut, R> Handler<J> for F
where
    J: Job,
    F: Fn(J, JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, JobError>> + Send + 'static,
    R: IntoOutput<J::Output>,
{
    type Returns = R;

    fn call(
        &self,
        job: J,
        ctx: JobContext,
    ) -> impl Future<Output = Result<Self::Returns, JobError>> + Send {
        self(job, ctx)
    }
}

/// What a handler's panic says (its message, when it is a string).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}
