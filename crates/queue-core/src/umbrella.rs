//! The umbrella trait and typed conveniences.

use std::{fmt, sync::Arc};

use async_trait::async_trait;

use crate::backend::Broker;
use crate::{Job, JobRecord, JobStore, NewJob, Result};

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
    /// Enqueues a typed job under its `Job::NAME` with the queue's defaults (use
    /// [`NewJob::typed`] to set options).
    async fn enqueue_job<J: Job>(&self, job: &J) -> Result<JobRecord> {
        self.enqueue(NewJob::typed(job)?).await
    }
}

impl<T: JobStore + ?Sized> JobStoreExt for T {}
