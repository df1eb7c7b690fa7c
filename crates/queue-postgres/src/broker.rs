//! The `Broker` contract on Postgres: each method is the engine's, in its concept file.

use std::time::Duration;

use async_trait::async_trait;
use queue_core::backend::{
    Broker, CancelStream, ClaimRequest, ClaimedDelivery, Ending, FinishedMany, HeartbeatReply,
    Lease, LeaseRef, ProgressReply, ScheduleRead, ScheduleWrite, ScheduleWritten, Settle,
    StoredSchedules, WorkerBeat, finish_guarded,
};
use queue_core::{JobId, Result, WorkerId};

use crate::PostgresBackend;

#[async_trait]
impl Broker for PostgresBackend {
    async fn fetch(&self, req: &ClaimRequest, wait: Duration) -> Result<Vec<Lease>> {
        PostgresBackend::fetch(self, req, wait).await
    }

    async fn heartbeat(&self, beat: &WorkerBeat, leases: &[LeaseRef]) -> Result<HeartbeatReply> {
        PostgresBackend::heartbeat(self, beat, leases).await
    }

    async fn progress(
        &self,
        lease: &LeaseRef,
        progress: u8,
        step: Option<String>,
    ) -> Result<ProgressReply> {
        PostgresBackend::progress(self, lease, progress, step).await
    }

    async fn finish_many(
        &self,
        endings: Vec<Ending>,
        next: Option<ClaimRequest>,
    ) -> Result<FinishedMany> {
        let call = PostgresBackend::finish_many(self, endings, next.clone());
        finish_guarded(self, next.as_ref(), call).await
    }

    async fn reap(&self, limit: usize) -> Result<Vec<JobId>> {
        PostgresBackend::reap(self, limit).await
    }

    async fn deregister(&self, worker: &WorkerId) -> Result<()> {
        PostgresBackend::deregister(self, worker).await
    }

    async fn sweep(&self, limit: usize) -> Result<usize> {
        PostgresBackend::sweep(self, limit).await
    }

    async fn cancellations(&self) -> Result<CancelStream> {
        let rx = self.inner.cancels.subscribe();
        Ok(Box::pin(futures_util::stream::unfold(
            rx,
            |mut rx| async move {
                loop {
                    match rx.recv().await {
                        Ok(id) => return Some((id, rx)),
                        // Missed requests reach their holders in the heartbeat replies.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        )))
    }

    async fn read_schedules(&self, read: &ScheduleRead) -> Result<StoredSchedules> {
        PostgresBackend::read_schedules(self, read).await
    }

    async fn write_schedule(&self, write: ScheduleWrite) -> Result<ScheduleWritten> {
        PostgresBackend::write_schedule(self, write).await
    }

    async fn claim_deliveries(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedDelivery>> {
        PostgresBackend::claim_deliveries(self, limit, lease).await
    }

    async fn settle_delivery(&self, id: &str, claimed: &str, settle: Settle) -> Result<bool> {
        PostgresBackend::settle_delivery(self, id, claimed, settle).await
    }
}

impl std::fmt::Display for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "postgres {} schema {} queue {}",
            self.inner.config.redacted_url(),
            self.inner.config.schema_name(),
            self.inner.queue.queue_name
        )
    }
}
