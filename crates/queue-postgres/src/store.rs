//! The `JobStore` contract on Postgres: each method is the engine's, in its concept file.

use async_trait::async_trait;
use queue_core::{
    CancelOutcome, Control, EventStream, Flow, GroupList, GroupStats, JobId, JobRecord, JobStore,
    ListQuery, NewJob, Page, Priority, QueueStats, Result, Series, SeriesSpan, WorkerInfo,
};

use crate::PostgresBackend;

#[async_trait]
impl JobStore for PostgresBackend {
    async fn enqueue(&self, job: NewJob) -> Result<JobRecord> {
        PostgresBackend::enqueue(self, job).await
    }

    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Result<JobRecord>>> {
        PostgresBackend::enqueue_many(self, jobs).await
    }

    async fn enqueue_flow(&self, flow: Flow) -> Result<JobRecord> {
        PostgresBackend::enqueue_flow(self, flow).await
    }

    async fn add_children(&self, parent: JobId, children: Vec<Flow>) -> Result<Vec<JobRecord>> {
        PostgresBackend::add_children(self, parent, children).await
    }

    async fn get(&self, id: JobId) -> Result<JobRecord> {
        PostgresBackend::get(self, id).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        PostgresBackend::list(self, query).await
    }

    async fn cancel(&self, id: JobId) -> Result<CancelOutcome> {
        PostgresBackend::cancel(self, id).await
    }

    async fn retry(&self, id: JobId, priority: Option<Priority>) -> Result<JobRecord> {
        PostgresBackend::retry(self, id, priority).await
    }

    async fn delete(&self, id: JobId) -> Result<JobRecord> {
        PostgresBackend::delete(self, id).await
    }

    async fn stats(&self) -> Result<QueueStats> {
        PostgresBackend::stats(self).await
    }

    async fn series(&self, span: SeriesSpan) -> Result<Series> {
        PostgresBackend::series(self, span).await
    }

    async fn group(&self, group: &str) -> Result<GroupStats> {
        PostgresBackend::group(self, group).await
    }

    async fn groups(&self, limit: usize) -> Result<GroupList> {
        PostgresBackend::groups(self, limit).await
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        PostgresBackend::workers(self).await
    }

    async fn control(&self, change: Control) -> Result<()> {
        change.check()?;
        match change {
            Control::Pause => self.set_paused(true).await,
            Control::Resume => self.set_paused(false).await,
            Control::RateLimit(limit) => PostgresBackend::set_rate_limit(self, limit).await,
            Control::Group { group, change } => self.change_group(&group, change).await,
            Control::PutWebhook(hook) => self.put_webhook(&hook).await,
            Control::DeleteWebhook(name) => self.delete_webhook(&name).await.map(drop),
        }
    }

    async fn webhooks(&self) -> Result<Vec<queue_core::Webhook>> {
        PostgresBackend::webhooks(self).await
    }

    async fn deliveries(&self, parked: bool, limit: usize) -> Result<Vec<queue_core::Delivery>> {
        PostgresBackend::deliveries(self, parked, limit).await
    }

    async fn resend_delivery(&self, id: &str) -> Result<bool> {
        PostgresBackend::resend_delivery(self, id).await
    }

    async fn subscribe<'a>(&self, after: Option<&'a str>) -> Result<EventStream> {
        PostgresBackend::subscribe(self, after).await
    }
}
