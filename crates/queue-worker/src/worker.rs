//! The run loop: fetch under a concurrency limit, run each job in its own task, drain on
//! shutdown within a bounded time.

use std::{
    sync::{Arc, OnceLock, atomic::Ordering},
    time::Duration,
};

use queue_core::backend::{Broker, ClaimRequest, Lease, MAX_CLAIM, WorkerBeat, hostname};
use queue_core::{Backend, Clock, JobStore, Result, SystemClock, WorkerId};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot::error::TryRecvError},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use crate::{
    ahead::Ahead,
    attempt,
    builder::Settings,
    registry::Registry,
    reporter,
    running::{RunningJobs, StopReason},
    shared::{Counts, Report, Shared},
    upkeep,
};

/// After the shutdown grace, how long handing jobs back and deregistering may take
/// before the worker stops anyway (their leases then expire on the server).
pub(crate) const STOP_MARGIN: Duration = Duration::from_secs(2);

/// Runs jobs from a backend. Not generic: it drives the backend's [`Broker`] side and
/// hands its handlers the [`JobStore`] side (`JobContext::children`, `JobContext::store`).
#[derive(Debug)]
pub struct Worker {
    shared: Arc<Shared>,
    reports: mpsc::UnboundedReceiver<Report>,
}

/// What a worker did before it stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Jobs completed.
    pub completed: u64,
    /// Jobs finished partial.
    pub partial: u64,
    /// Jobs failed for good.
    pub failed: u64,
    /// Attempts that failed and were scheduled for a retry.
    pub retried: u64,
    /// Jobs cancelled while running.
    pub cancelled: u64,
    /// Jobs handed back unfinished at shutdown.
    pub released: u64,
    /// Jobs whose handler snoozed them, or reported a rate limit (back to waiting, no
    /// attempt used).
    pub snoozed: u64,
    /// Attempts stopped because their lease was lost or could not be renewed in time
    /// (their outcome was not reported).
    pub lost: u64,
}

impl Worker {
    /// Starts building a worker on `backend` (any backend: `Arc<MemoryBackend>`,
    /// `Arc<RedisBackend>`, a `SharedBackend`).
    pub fn builder(backend: Arc<dyn Backend>) -> crate::WorkerBuilder {
        let broker: Arc<dyn Broker> = backend.clone();
        crate::WorkerBuilder::new(broker, backend)
    }

    /// Starts building a worker whose jobs come from `broker` and whose handlers read
    /// through `store`: for test doubles that wrap or mock one side of a backend.
    pub fn with_parts(broker: Arc<dyn Broker>, store: Arc<dyn JobStore>) -> crate::WorkerBuilder {
        crate::WorkerBuilder::new(broker, store)
    }

    pub(crate) fn new(
        broker: Arc<dyn Broker>,
        store: Arc<dyn JobStore>,
        registry: Registry,
        settings: Settings,
    ) -> Self {
        let beat = WorkerBeat {
            worker: settings.id.clone(),
            host: hostname(),
            pid: std::process::id(),
            concurrency: u32::try_from(settings.config.concurrency).unwrap_or(u32::MAX),
            started_at: SystemClock.now(),
            version: settings.version.clone(),
            tasks: registry.tasks().into_iter().map(str::to_owned).collect(),
            schemas: registry.schemas().clone(),
            lease: settings.config.lease,
            interval: settings.config.heartbeat,
        };
        let (tx, reports) = mpsc::unbounded_channel();
        let c = &settings.config;
        let ahead = Ahead::new(c.claim_ahead, c.concurrency, c.lease);
        Self {
            shared: Arc::new(Shared {
                broker,
                store,
                registry,
                settings,
                running: RunningJobs::default(),
                ahead,
                counts: Counts::default(),
                beat,
                reports: tx,
                stop_by: OnceLock::new(),
            }),
            reports,
        }
    }

    /// This worker's id.
    pub fn id(&self) -> &WorkerId {
        &self.shared.settings.id
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> Result<WorkerReport> {
        let token = CancellationToken::new();
        let trigger = token.clone();
        tokio::spawn(async move {
            crate::shutdown_signal().await;
            info!("shutdown signal received");
            trigger.cancel();
        });
        self.run(token).await
    }

    /// Runs until `shutdown` fires. Then it stops fetching, lets running jobs finish
    /// within the grace period, hands the rest back (no attempt used) and deregisters.
    /// Stopping takes at most the grace period plus a couple of seconds, whatever the
    /// backend does: what cannot be handed back by then is left to lease expiry.
    pub async fn run(self, shutdown: CancellationToken) -> Result<WorkerReport> {
        let shared = self.shared;
        let s = &shared.settings;
        info!(worker = %s.id, tasks = ?shared.registry.tasks(), concurrency = s.config.concurrency, "worker started");
        let background = CancellationToken::new();
        let helpers = TaskTracker::new();
        helpers.spawn(upkeep::heartbeat_loop(
            Arc::clone(&shared),
            background.clone(),
        ));
        helpers.spawn(upkeep::fence_loop(Arc::clone(&shared), background.clone()));
        helpers.spawn(upkeep::maintenance_loop(
            Arc::clone(&shared),
            background.clone(),
        ));
        if shared.settings.config.schedules {
            helpers.spawn(upkeep::schedule_loop(
                Arc::clone(&shared),
                background.clone(),
            ));
        }
        if shared.settings.config.webhooks {
            helpers.spawn(crate::webhooks::delivery_loop(
                Arc::clone(&shared),
                background.clone(),
            ));
        }
        helpers.spawn(upkeep::cancel_listener(
            Arc::clone(&shared),
            background.clone(),
        ));
        if !s.config.claim_ahead.is_zero() {
            helpers.spawn(upkeep::keeper_loop(Arc::clone(&shared), background.clone()));
        }
        helpers.spawn(reporter::reporter_loop(
            Arc::clone(&shared),
            self.reports,
            background.clone(),
        ));
        helpers.close();

        let jobs = TaskTracker::new();
        fetch_loop(&shared, &jobs, &shutdown).await;
        // Jobs held ahead go back at once (calls still in flight hand theirs back too).
        reporter::hand_back(&shared, shared.ahead.stop()).await;

        jobs.close();
        let grace_end = Instant::now() + s.config.shutdown_grace;
        let stop_by = grace_end + STOP_MARGIN;
        let _ = shared.stop_by.set(stop_by);
        if !jobs.is_empty() {
            info!(running = shared.running.len(), grace = ?s.config.shutdown_grace, "waiting for running jobs");
        }
        if tokio::time::timeout_at(grace_end, jobs.wait())
            .await
            .is_err()
        {
            warn!(
                running = shared.running.len(),
                "grace period over: handing back unfinished jobs"
            );
            shared.running.stop_all(StopReason::Shutdown);
            if tokio::time::timeout_at(stop_by, jobs.wait()).await.is_err() {
                warn!(
                    running = shared.running.len(),
                    "could not hand every job back in time; their leases will expire"
                );
            }
        }
        background.cancel();
        let _ = tokio::time::timeout_at(
            stop_by.max(Instant::now() + Duration::from_millis(500)),
            helpers.wait(),
        )
        .await;
        let deregister = tokio::time::timeout_at(
            stop_by.max(Instant::now() + Duration::from_millis(500)),
            shared.broker.deregister(&s.id),
        );
        match deregister.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!(error = %err.chain(), "could not deregister the worker"),
            Err(_) => warn!("could not deregister the worker in time"),
        }
        let c = &shared.counts;
        let report = WorkerReport {
            completed: c.completed.load(Ordering::Relaxed),
            partial: c.partial.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            released: c.released.load(Ordering::Relaxed),
            snoozed: c.snoozed.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
        };
        info!(?report, "worker stopped");
        Ok(report)
    }
}

async fn fetch_loop(shared: &Arc<Shared>, jobs: &TaskTracker, shutdown: &CancellationToken) {
    let s = &shared.settings;
    let permits = Arc::new(Semaphore::new(s.config.concurrency));
    let mut backoff = Duration::from_millis(100);
    // A request no send of which was answered, with the slots it asked for: it is sent
    // again, unchanged (same id, same size), until one send is answered, so leases an
    // unanswered send took come back to this worker instead of expiring.
    let mut unanswered: Option<(ClaimRequest, Vec<OwnedSemaphorePermit>)> = None;
    loop {
        let (req, mut held) = match unanswered.take() {
            Some(pending) => pending,
            None => {
                let first = tokio::select! {
                    permit = Arc::clone(&permits).acquire_owned() => permit.expect("never closed"),
                    () = shutdown.cancelled() => return,
                };
                let mut held = vec![first];
                // One claim takes at most MAX_CLAIM jobs: the other slots stay free for the
                // next one.
                while held.len() < MAX_CLAIM
                    && let Ok(permit) = Arc::clone(&permits).try_acquire_owned()
                {
                    held.push(permit);
                }
                // Jobs for the free slots, and jobs to hold ahead while handlers run short.
                let n = shared.ahead.reserve(held.len(), false);
                (ClaimRequest::new(s.id.clone(), n, s.config.lease), held)
            }
        };
        // `fetch` is cancel-safe: dropping it on shutdown loses no lease.
        let result = tokio::select! {
            result = shared.broker.fetch(&req, s.config.fetch_wait) => result,
            () = shutdown.cancelled() => return,
        };
        match result {
            Ok(leases) => {
                backoff = Duration::from_millis(100);
                let mut leases = leases;
                let extra = leases.split_off(leases.len().min(req.max));
                if !extra.is_empty() {
                    warn!(
                        count = extra.len(),
                        "backend leased more jobs than asked for; handing them back"
                    );
                }
                let mut leases = leases.into_iter();
                // The permits first: zip asks its first iterator before the second, so a
                // lease is never taken out for a slot that is not there.
                for (permit, lease) in held.drain(..).zip(leases.by_ref()) {
                    jobs.spawn(slot(Arc::clone(shared), lease, permit, shutdown.clone()));
                }
                // Beyond the free slots: held ahead for the slots just started.
                let back = shared.ahead.add(leases.collect());
                reporter::hand_back(shared, back.into_iter().chain(extra).collect()).await;
            }
            Err(err) => {
                warn!(error = %err.chain(), retry_in = ?backoff, "fetch failed; the same request goes again");
                if err.is_retryable() {
                    unanswered = Some((req, held));
                } else {
                    drop(held);
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => {
                        if let Some((req, _)) = unanswered.take() {
                            hand_back_unanswered(shared, req).await;
                        }
                        return;
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// One slot: runs `lease`, then jobs claimed ahead while there are (or are on their way),
/// then waits until its outcomes are stored and frees its permit.
async fn slot(
    shared: Arc<Shared>,
    lease: Lease,
    permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    let mut stored = Vec::new();
    let mut next = Some(lease);
    while let Some(lease) = next {
        stored.extend(attempt::run_one(&shared, lease, &shutdown).await);
        stored.retain_mut(|s| matches!(s.try_recv(), Err(TryRecvError::Empty)));
        next = shared.ahead.next(&shutdown).await;
    }
    for s in stored {
        let _ = s.await;
    }
    drop(permit);
}

/// Stopping with a request no send of which was answered: one last send (its replay answers
/// what an earlier send took) and those jobs go back unrun, no attempt used. Bounded: what
/// cannot be reached in a second is left to lease expiry.
async fn hand_back_unanswered(shared: &Arc<Shared>, req: ClaimRequest) {
    let replay = shared.broker.fetch(&req, Duration::ZERO);
    let Ok(Ok(leases)) = tokio::time::timeout(Duration::from_secs(1), replay).await else {
        return;
    };
    reporter::hand_back(shared, leases).await;
}
