//! Handlers by task name, erased to one boxed closure each.

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc};

use queue_core::{Completion, IntoOutput, Job, JobError, Payload};
use serde::de::DeserializeOwned;

use crate::{
    Handler as TypedHandler, JobContext,
    batch::{Batch, BatchJob, Batcher},
};

pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = Result<Completion, JobError>> + Send>>;
pub(crate) type Handler = Arc<dyn Fn(Payload, JobContext) -> HandlerFuture + Send + Sync>;

/// Task name -> handler, and what the builder refuses: a task registered twice, a name no
/// job can carry.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    handlers: HashMap<String, Handler>,
    /// The payload schema of each typed task that shares one.
    schemas: std::collections::BTreeMap<String, serde_json::Value>,
    refused: Vec<String>,
    /// The batch handlers' tasks and batches (checked against the concurrency at build).
    batches: Vec<(String, Batch)>,
}

impl Registry {
    /// Registers the typed `handler` for `J::NAME`; its output becomes the result.
    pub(crate) fn insert_typed<J: Job, H: TypedHandler<J>>(&mut self, handler: H) {
        let handler = Arc::new(handler);
        self.insert(J::NAME, move |job: J, ctx: JobContext| {
            let handler = Arc::clone(&handler);
            async move { handler.call(job, ctx).await?.into_completion() }
        });
        if let Some(schema) = J::schema() {
            match queue_core::backend::check_task_schema(&schema) {
                Ok(()) => {
                    self.schemas.insert(J::NAME.to_owned(), schema);
                }
                Err(e) => tracing::warn!(task = J::NAME, "{e}"),
            }
        }
    }

    /// Registers the batch handler `handler` for `task`: each job decodes into `P` and
    /// joins the batch forming; `done` turns one job's output into its completion.
    pub(crate) fn insert_batch<P, F, Fut, R>(
        &mut self,
        task: &str,
        batch: Batch,
        handler: F,
        done: fn(R) -> Result<Completion, JobError>,
    ) where
        P: DeserializeOwned + Send + 'static,
        F: Fn(Vec<BatchJob<P>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<R, JobError>>> + Send + 'static,
        R: Send + 'static,
    {
        let batcher = Batcher::new(batch, handler);
        self.batches.push((task.to_owned(), batch));
        self.insert(task, move |input: P, ctx: JobContext| {
            let batcher = Arc::clone(&batcher);
            async move { batcher.run(BatchJob { input, ctx }, done).await }
        });
    }

    /// Why a batch cannot form on a worker running `concurrency` jobs at once, if so.
    pub(crate) fn batch_problem(&self, concurrency: usize) -> Option<String> {
        self.batches
            .iter()
            .find_map(|(task, batch)| batch.problem(task, concurrency))
    }

    /// Registers `handler` for `task`, decoding the payload into `P` first. A payload that
    /// does not decode fails the job permanently, naming the task and the field.
    pub(crate) fn insert<P, F, Fut, R>(&mut self, task: &str, handler: F)
    where
        P: DeserializeOwned + Send + 'static,
        F: Fn(P, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, JobError>> + Send + 'static,
        R: Into<Completion>,
    {
        let name = task.to_owned();
        let erased: Handler =
            Arc::new(
                move |payload: Payload, ctx: JobContext| match payload.decode::<P>() {
                    Ok(input) => {
                        let fut = handler(input, ctx);
                        Box::pin(async move { fut.await.map(Into::into) }) as HandlerFuture
                    }
                    Err(err) => {
                        let message = format!(
                            "payload for task `{name}` could not be decoded: {}",
                            err.chain()
                        );
                        Box::pin(async move { Err(JobError::permanent(message)) })
                    }
                },
            );
        if let Err(e) = queue_core::backend::check_task_name(task) {
            self.refused.push(format!("task `{task}`: {e}"));
        }
        if self.handlers.insert(task.to_owned(), erased).is_some() {
            self.refused.push(format!(
                "task `{task}` is registered twice: one handler per task name (a typed job's \
                 task name is its `Job::NAME`)"
            ));
        }
    }

    /// Why the worker may not be built with these handlers, if it may not.
    pub(crate) fn refused(&self) -> Option<String> {
        (!self.refused.is_empty()).then(|| self.refused.join("; "))
    }

    pub(crate) fn get(&self, task: &str) -> Option<&Handler> {
        self.handlers.get(task)
    }

    /// The payload schemas of the typed tasks that share one.
    pub(crate) fn schemas(&self) -> &std::collections::BTreeMap<String, serde_json::Value> {
        &self.schemas
    }

    pub(crate) fn tasks(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}
