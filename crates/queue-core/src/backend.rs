//! The umbrella trait and typed conveniences.

use std::{fmt, sync::Arc};

use async_trait::async_trait;

use crate::{Broker, EnqueueOptions, Job, JobRecord, JobStore, NewJob, Payload, Result};

/// A complete backend: a [`JobStore`] and a [`Broker`] on one queue. `Display` names it
/// for logs (credentials redacted).
pub trait Backend: JobStore + Broker + fmt::Display {}

impl<T: JobStore + Broker + fmt::Display + ?Sized> Backend for T {}

/// What the worker and the binaries hold.
pub type SharedBackend = Arc<dyn Backend>;

/// Typed conveniences on every [`JobStore`]. Implemented for all stores; do not implement
/// it yourself.
#[async_trait]
pub trait JobStoreExt: JobStore {
    /// Enqueues a typed job under its `Job::NAME`.
    async fn enqueue_job<J: Job>(&self, job: &J, options: EnqueueOptions) -> Result<JobRecord> {
        let mut new = NewJob::with_payload(J::NAME, Payload::encode(job)?);
        new.options = options;
        self.enqueue(new).await
    }
}

impl<T: JobStore + ?Sized> JobStoreExt for T {}
