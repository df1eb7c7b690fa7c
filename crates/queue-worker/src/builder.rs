//! `WorkerBuilder`: handlers and settings.

use std::{future::Future, sync::Arc, time::Duration};

#[cfg(doc)]
use queue_core::QueueConfig;
use queue_core::backend::Broker;
use queue_core::{Completion, Error, Job, JobError, JobStore, Result, RetryPolicy, WorkerId};
use serde::de::DeserializeOwned;

use crate::{Batch, BatchJob, Handler, JobContext, Worker, WorkerConfig, registry::Registry};

/// What a worker is built with.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) id: WorkerId,
    pub(crate) config: WorkerConfig,
    pub(crate) version: String,
}

/// Builds a [`Worker`]: register handlers by task name, then set limits.
///
/// ```
/// use queue_core::{JobError, QueueConfig};
/// use queue_memory::MemoryBackend;
/// use queue_worker::Worker;
/// use std::sync::Arc;
///
/// #[derive(serde::Deserialize)]
/// struct Resize { width: u32 }
///
/// let worker = Worker::builder(Arc::new(MemoryBackend::new()))
///     .config(&QueueConfig::default())
///     .register("resize", |input: Resize, _ctx| async move {
///         if input.width == 0 {
///             return Err(JobError::permanent("width must be positive"));
///         }
///         Ok(())
///     })
///     .concurrency(8)
///     .build()
///     .unwrap();
/// # drop(worker);
/// ```
#[derive(Clone)]
pub struct WorkerBuilder {
    broker: Arc<dyn Broker>,
    store: Arc<dyn JobStore>,
    registry: Registry,
    settings: Settings,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("tasks", &self.registry.tasks())
            .field("settings", &self.settings)
            .finish()
    }
}

impl WorkerBuilder {
    pub(crate) fn new(broker: Arc<dyn Broker>, store: Arc<dyn JobStore>) -> Self {
        Self {
            broker,
            store,
            registry: Registry::default(),
            settings: Settings {
                id: WorkerId::generate(),
                config: WorkerConfig::default(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            },
        }
    }

    /// Takes every setting from `config`: a [`WorkerConfig`], or a [`QueueConfig`]
    /// (`&QueueConfig::from_env()?`) for its concurrency, timeout, lease, heartbeat, grace
    /// and retry policy.
    pub fn config(mut self, config: impl Into<WorkerConfig>) -> Self {
        self.settings.config = config.into();
        self
    }

    /// Registers `handler` for jobs whose task is `task`; their payload is decoded into `P`.
    /// The handler returns `Ok(())`, `Ok(Completion::...)` or a [`JobError`].
    pub fn register<P, F, Fut, R>(mut self, task: &str, handler: F) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        F: Fn(P, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, JobError>> + Send + 'static,
        R: Into<Completion>,
    {
        self.registry.insert(task, handler);
        self
    }

    /// Registers `handler` for the typed job `J` (task `J::NAME`): its payload decodes into
    /// `J`, and what it returns is `J::Output` (or `Done<J::Output>`), stored as the
    /// job's result. The worker shares `J::schema()`, if any, with operators.
    ///
    /// ```
    /// use queue_core::{Job, JobError};
    /// use queue_worker::{JobContext, Worker};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Resize { width: u32 }
    /// impl Job for Resize {
    ///     const NAME: &'static str = "resize";
    ///     type Output = u32;
    /// }
    ///
    /// async fn resize(job: Resize, _ctx: JobContext) -> Result<u32, JobError> {
    ///     Ok(job.width / 2)
    /// }
    ///
    /// let worker = Worker::builder(std::sync::Arc::new(queue_memory::MemoryBackend::new()))
    ///     .handle::<Resize>(resize)
    ///     .build()
    ///     .unwrap();
    /// # drop(worker);
    /// ```
    pub fn handle<J: Job>(mut self, handler: impl Handler<J>) -> Self {
        self.registry.insert_typed::<J, _>(handler);
        self
    }

    /// Registers a batch handler for `task`: it is called once for up to `batch.size()` of
    /// the task's jobs running on this worker at once (or what arrived within the batch's
    /// wait), each decoded into `P`, and returns one outcome per job, in order. Each job
    /// stays its own attempt (its lease, timeout, cancel and outcome), so a failing member
    /// retries alone. The worker's concurrency must be at least the batch size.
    ///
    /// ```
    /// use queue_worker::{Batch, BatchJob, JobError, Worker};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Row { id: u64 }
    ///
    /// let worker = Worker::builder(std::sync::Arc::new(queue_memory::MemoryBackend::new()))
    ///     .concurrency(100)
    ///     .register_batch("index", Batch::of(100), |rows: Vec<BatchJob<Row>>| async move {
    ///         // One bulk write for the whole batch, then an outcome per row.
    ///         rows.iter().map(|_row| Ok::<_, JobError>(())).collect::<Vec<_>>()
    ///     })
    ///     .build()
    ///     .unwrap();
    /// # drop(worker);
    /// ```
    pub fn register_batch<P, F, Fut, R>(mut self, task: &str, batch: Batch, handler: F) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        F: Fn(Vec<BatchJob<P>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<R, JobError>>> + Send + 'static,
        R: Into<Completion> + Send + 'static,
    {
        self.registry
            .insert_batch(task, batch, handler, |r: R| Ok(r.into()));
        self
    }

    /// Registers a batch handler for the typed job `J` (task `J::NAME`), as
    /// [`WorkerBuilder::register_batch`]: each job decodes into `J`, and each outcome is
    /// `J::Output` (or `Done<J::Output>`), stored as that job's result.
    pub fn handle_batch<J, F, Fut, R>(mut self, batch: Batch, handler: F) -> Self
    where
        J: Job,
        F: Fn(Vec<BatchJob<J>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<R, JobError>>> + Send + 'static,
        R: queue_core::IntoOutput<J::Output> + Send + 'static,
    {
        self.registry
            .insert_batch(J::NAME, batch, handler, R::into_completion);
        self
    }

    /// Jobs run at once (default `DCS_QUEUE_MAX_CONCURRENCY`).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.settings.config.concurrency = n;
        self
    }

    /// Per-attempt timeout for jobs without their own (default 3600 s).
    pub fn job_timeout(mut self, timeout: Duration) -> Self {
        self.settings.config.job_timeout = timeout;
        self
    }

    /// Lease duration (default 30 s) and heartbeat interval (default 10 s).
    pub fn lease(mut self, lease: Duration, heartbeat: Duration) -> Self {
        self.settings.config.lease = lease;
        self.settings.config.heartbeat = heartbeat;
        self.settings.config.reap_interval = lease / 2;
        self
    }

    /// How long running jobs may finish after shutdown begins (default 30 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.settings.config.shutdown_grace = grace;
        self
    }

    /// Backoff of failed attempts.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.settings.config.retry = policy;
        self
    }

    /// How long a job claimed ahead may expect to wait in this worker (default 1 ms; zero
    /// turns claiming ahead off): see [`WorkerConfig::claim_ahead`](crate::WorkerConfig).
    pub fn claim_ahead(mut self, budget: Duration) -> Self {
        self.settings.config.claim_ahead = budget;
        self
    }

    /// The longest an idle fetch blocks before looking again (default 2 s); also bounds how
    /// long an idle worker takes to stop fetching on shutdown.
    pub fn fetch_wait(mut self, wait: Duration) -> Self {
        self.settings.config.fetch_wait = wait;
        self
    }

    /// How often expired leases are recovered (default lease / 2) and expired records
    /// swept (default 60 s).
    pub fn maintenance(mut self, reap: Duration, sweep: Duration) -> Self {
        self.settings.config.reap_interval = reap;
        self.settings.config.sweep_interval = sweep;
        self
    }

    /// Whether this worker fires due job schedules (default true; each tick runs once
    /// however many workers do).
    pub fn schedules(mut self, fire: bool) -> Self {
        self.settings.config.schedules = fire;
        self
    }

    /// Whether this worker delivers durable webhooks (default true; each delivery is sent
    /// by one worker at a time).
    pub fn webhooks(mut self, deliver: bool) -> Self {
        self.settings.config.webhooks = deliver;
        self
    }

    /// Where this worker's webhook deliveries may connect besides public addresses (default
    /// none: loopback, private, link-local and metadata addresses are refused).
    pub fn webhook_egress(mut self, egress: crate::WebhookEgress) -> Self {
        self.settings.config.webhook_egress = egress;
        self
    }

    /// How long a claimed webhook delivery is hidden from other workers (default 60 s;
    /// longer than a delivery's 10 s timeout).
    pub fn delivery_lease(mut self, lease: Duration) -> Self {
        self.settings.config.delivery_lease = lease;
        self
    }

    /// The version of the program the worker runs, shown to operators (default: this
    /// crate's version). Set it to your release (`env!("CARGO_PKG_VERSION")` of your
    /// binary) to see which workers run which release during a deploy.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.settings.version = version.into();
        self
    }

    /// Names the worker (default `<host>-<pid>-<random>`).
    pub fn worker_id(mut self, id: WorkerId) -> Self {
        self.settings.id = id;
        self
    }

    /// Checks the settings. A worker without handlers is refused (it would only fail or
    /// bounce every job it took), and so is one with a task registered twice (by name or
    /// by two `Job` types of one `Job::NAME`) or under a name no job can carry.
    pub fn build(self) -> Result<Worker> {
        if self.registry.tasks().is_empty() {
            return Err(Error::config(
                "the worker has no handlers: register at least one task before building it",
            ));
        }
        if let Some(why) = self.registry.refused() {
            return Err(Error::config(why));
        }
        self.settings.config.validate()?;
        if let Some(why) = self
            .registry
            .batch_problem(self.settings.config.concurrency)
        {
            return Err(Error::config(why));
        }
        Ok(Worker::new(
            self.broker,
            self.store,
            self.registry,
            self.settings,
        ))
    }
}
