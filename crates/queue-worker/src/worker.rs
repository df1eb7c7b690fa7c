//! The run loop: fetch under a concurrency limit, run each job in its own task, renew
//! leases, recover and sweep, drain on shutdown.

use std::{
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{FutureExt, StreamExt};
use queue_core::{
    Broker, ClaimRequest, Clock, Error, JobError, JobRecord, Lease, LeaseRef, Outcome, Result,
    SystemClock, WorkerBeat, WorkerId, hostname,
};
use tokio::{sync::Semaphore, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::{
    JobContext, WorkerBuilder,
    builder::Settings,
    registry::Registry,
    running::{RunningJobs, StopReason},
};

/// Runs jobs from a broker. Not generic: it holds `Arc<dyn Broker>`.
#[derive(Debug)]
pub struct Worker {
    shared: Arc<Shared>,
}

struct Shared {
    broker: Arc<dyn Broker>,
    registry: Registry,
    settings: Settings,
    running: RunningJobs,
    counts: Counts,
    beat: WorkerBeat,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.settings.id)
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Counts {
    completed: AtomicU64,
    partial: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    cancelled: AtomicU64,
    released: AtomicU64,
    lost: AtomicU64,
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
    /// Jobs whose lease was lost (their outcome was not reported).
    pub lost: u64,
}

impl Worker {
    /// Starts building a worker on `broker` (any backend: `Arc<MemoryBackend>`,
    /// `Arc<RedisBackend>`, a `SharedBackend`).
    pub fn builder(broker: Arc<dyn Broker>) -> WorkerBuilder {
        WorkerBuilder::new(broker)
    }

    pub(crate) fn new(broker: Arc<dyn Broker>, registry: Registry, settings: Settings) -> Self {
        let beat = WorkerBeat {
            worker: settings.id.clone(),
            host: hostname(),
            pid: std::process::id(),
            concurrency: u32::try_from(settings.concurrency).unwrap_or(u32::MAX),
            started_at: SystemClock.now(),
            lease: settings.lease,
            interval: settings.heartbeat,
        };
        Self {
            shared: Arc::new(Shared {
                broker,
                registry,
                settings,
                running: RunningJobs::default(),
                counts: Counts::default(),
                beat,
            }),
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
    pub async fn run(self, shutdown: CancellationToken) -> Result<WorkerReport> {
        let shared = self.shared;
        let s = &shared.settings;
        info!(worker = %s.id, tasks = ?shared.registry.tasks(), concurrency = s.concurrency, "worker started");
        let background = CancellationToken::new();
        let helpers = TaskTracker::new();
        helpers.spawn(heartbeat_loop(Arc::clone(&shared), background.clone()));
        helpers.spawn(maintenance_loop(Arc::clone(&shared), background.clone()));
        helpers.spawn(cancel_listener(Arc::clone(&shared), background.clone()));
        helpers.close();

        let jobs = TaskTracker::new();
        fetch_loop(&shared, &jobs, &shutdown).await;

        jobs.close();
        if !jobs.is_empty() {
            info!(running = shared.running.len(), grace = ?s.shutdown_grace, "waiting for running jobs");
        }
        if tokio::time::timeout(s.shutdown_grace, jobs.wait())
            .await
            .is_err()
        {
            warn!(
                running = shared.running.len(),
                "grace period over: handing back unfinished jobs"
            );
            shared.running.stop_all(StopReason::Shutdown);
            jobs.wait().await;
        }
        background.cancel();
        helpers.wait().await;
        if let Err(err) = shared.broker.deregister(&s.id).await {
            warn!(error = %err.chain(), "could not deregister the worker");
        }
        let c = &shared.counts;
        let report = WorkerReport {
            completed: c.completed.load(Ordering::Relaxed),
            partial: c.partial.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            released: c.released.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
        };
        info!(?report, "worker stopped");
        Ok(report)
    }
}

async fn fetch_loop(shared: &Arc<Shared>, jobs: &TaskTracker, shutdown: &CancellationToken) {
    let s = &shared.settings;
    let permits = Arc::new(Semaphore::new(s.concurrency));
    let mut backoff = Duration::from_millis(100);
    loop {
        let first = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("never closed"),
            () = shutdown.cancelled() => return,
        };
        let mut held = vec![first];
        while let Ok(permit) = Arc::clone(&permits).try_acquire_owned() {
            held.push(permit);
        }
        let req = ClaimRequest {
            worker: s.id.clone(),
            max: held.len(),
            lease: s.lease,
        };
        // `fetch` is cancel-safe: dropping it on shutdown loses no lease.
        let result = tokio::select! {
            result = shared.broker.fetch(&req, s.fetch_wait) => result,
            () = shutdown.cancelled() => return,
        };
        match result {
            Ok(leases) => {
                backoff = Duration::from_millis(100);
                for lease in leases {
                    let Some(permit) = held.pop() else {
                        // A backend that leased more than asked: hand the extra job back.
                        warn!(job_id = %lease.job.job_id, "backend leased more jobs than asked for; releasing one");
                        finish(shared, &lease.to_ref(), Outcome::Released, false).await;
                        continue;
                    };
                    let shared = Arc::clone(shared);
                    let shutdown = shutdown.clone();
                    jobs.spawn(async move {
                        let mut lease = lease;
                        while let Some(next) = run_one(&shared, lease, &shutdown).await {
                            lease = next;
                        }
                        drop(permit);
                    });
                }
            }
            Err(err) => {
                warn!(error = %err.chain(), retry_in = ?backoff, "fetch failed");
                drop(held);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs one leased job and reports its outcome; returns the next lease when the finish
/// call leased one.
async fn run_one(
    shared: &Arc<Shared>,
    lease: Lease,
    shutdown: &CancellationToken,
) -> Option<Lease> {
    let record = lease.job;
    let lease_ref = LeaseRef {
        job_id: record.job_id,
        token: lease.token,
    };
    let span = info_span!("job", job_id = %record.job_id, task = %record.task, attempt = record.retry_count);
    let started = Instant::now();
    let outcome = execute(shared, record, &lease_ref)
        .instrument(span.clone())
        .await;
    shared.running.remove(lease_ref.job_id);
    let Some(outcome) = outcome else {
        shared.counts.lost.fetch_add(1, Ordering::Relaxed);
        span.in_scope(|| warn!("lease lost: the outcome is not reported"));
        return None;
    };
    let counter = match &outcome {
        Outcome::Completed { .. } => &shared.counts.completed,
        Outcome::Partial { .. } => &shared.counts.partial,
        Outcome::Retry { .. } => &shared.counts.retried,
        Outcome::Failed { .. } => &shared.counts.failed,
        Outcome::Cancelled => &shared.counts.cancelled,
        Outcome::Released => &shared.counts.released,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    span.in_scope(|| match &outcome {
        Outcome::Retry { error, delay } => warn!(error = %error, retry_in = ?delay, elapsed = ?started.elapsed(), "attempt failed, will retry"),
        Outcome::Failed { error } => warn!(error = %error, elapsed = ?started.elapsed(), "job failed"),
        Outcome::Partial { error, .. } => info!(error = %error, elapsed = ?started.elapsed(), "job partially completed"),
        other => debug!(outcome = other.name(), elapsed = ?started.elapsed(), "job finished"),
    });
    finish(shared, &lease_ref, outcome, !shutdown.is_cancelled())
        .instrument(span)
        .await
}

/// The handler's outcome, or `None` when the lease was lost (nothing must be reported).
async fn execute(shared: &Arc<Shared>, record: JobRecord, lease: &LeaseRef) -> Option<Outcome> {
    let running = shared.running.insert(lease.clone());
    let Some(handler) = shared.registry.get(&record.task) else {
        let error = format!(
            "no handler registered for task `{}` (this worker handles: {})",
            record.task,
            shared.registry.tasks().join(", ")
        );
        return Some(Outcome::Failed { error });
    };
    let timeout = record.timeout_or(shared.settings.job_timeout);
    let ctx = JobContext::new(
        record.clone(),
        lease.clone(),
        Arc::clone(&running),
        Arc::clone(&shared.broker),
    );
    let run = handler(record.payload.clone(), ctx);
    let guarded = AssertUnwindSafe(tokio::time::timeout(timeout, run)).catch_unwind();
    let policy = &shared.settings.retry;
    tokio::select! {
        biased;
        () = running.token().cancelled() => {}
        result = guarded => {
            return Some(match result {
                Ok(Ok(Ok(done))) => match done.partial_error {
                    Some(error) => Outcome::Partial { result: done.result, error },
                    None => Outcome::Completed { result: done.result },
                },
                Ok(Ok(Err(err))) => policy.decide(&record, &err),
                Ok(Err(_elapsed)) => policy.decide(&record, &JobError::retry(format!("timed out after {timeout:?}"))),
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".to_owned());
                    policy.decide(&record, &JobError::retry(format!("handler panicked: {message}")))
                }
            });
        }
    }
    match running.reason() {
        Some(StopReason::Cancelled) => Some(Outcome::Cancelled),
        Some(StopReason::Shutdown) => Some(Outcome::Released),
        Some(StopReason::LeaseLost) | None => None,
    }
}

/// Reports an outcome, retrying while the backend is unreachable (for up to one lease).
async fn finish(
    shared: &Arc<Shared>,
    lease: &LeaseRef,
    outcome: Outcome,
    claim_next: bool,
) -> Option<Lease> {
    let s = &shared.settings;
    let next = claim_next.then(|| ClaimRequest {
        worker: s.id.clone(),
        max: 1,
        lease: s.lease,
    });
    let deadline = Instant::now() + s.lease;
    let mut delay = Duration::from_millis(100);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match shared
            .broker
            .finish(lease, outcome.clone(), next.clone())
            .await
        {
            Ok(done) => return done.next,
            Err(Error::LeaseLost { .. }) if attempts > 1 => {
                // The earlier call most likely went through before its reply was lost.
                debug!("outcome already stored");
                return None;
            }
            Err(Error::LeaseLost { .. }) => {
                warn!("lease lost before the outcome was stored; the job runs again elsewhere");
                return None;
            }
            Err(err) if err.is_retryable() && Instant::now() < deadline => {
                warn!(error = %err.chain(), retry_in = ?delay, "could not store the outcome yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(err) => {
                error!(error = %err.chain(), outcome = outcome.name(), "could not store the outcome; the lease will expire and the job run again");
                return None;
            }
        }
    }
}

async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let s = &shared.settings;
    let mut ticks = tokio::time::interval(s.heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let leases = shared.running.leases();
        match shared.broker.heartbeat(&shared.beat, &leases).await {
            Ok(reply) => {
                last_ok = Instant::now();
                for id in reply.lost {
                    shared.running.stop(id, StopReason::LeaseLost);
                }
                for id in reply.cancel {
                    shared.running.stop(id, StopReason::Cancelled);
                }
            }
            Err(err) => {
                warn!(error = %err.chain(), "heartbeat failed");
                if last_ok.elapsed() >= s.lease && shared.running.len() > 0 {
                    // Our leases have expired by now: others may run these jobs. Stop ours.
                    warn!("leases not renewed for a whole lease period: stopping running jobs");
                    shared.running.stop_all(StopReason::LeaseLost);
                }
            }
        }
    }
}

async fn maintenance_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let s = &shared.settings;
    let mut reap = tokio::time::interval(s.reap_interval);
    let mut sweep = tokio::time::interval(s.sweep_interval);
    reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = reap.tick() => match shared.broker.reap(100).await {
                Ok(ids) if !ids.is_empty() => info!(jobs = ?ids, "recovered jobs whose lease expired"),
                Ok(_) => {}
                Err(err) => warn!(error = %err.chain(), "recovering expired leases failed"),
            },
            _ = sweep.tick() => match shared.broker.sweep(500).await {
                Ok(0) => {}
                Ok(n) => debug!(removed = n, "swept expired records"),
                Err(err) => warn!(error = %err.chain(), "sweeping expired records failed"),
            },
            () = stop.cancelled() => return,
        }
    }
}

async fn cancel_listener(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        match shared.broker.cancellations().await {
            Ok(mut ids) => loop {
                tokio::select! {
                    id = ids.next() => match id {
                        Some(id) => {
                            if shared.running.stop(id, StopReason::Cancelled) {
                                info!(job_id = %id, "cancel requested");
                            }
                        }
                        None => break,
                    },
                    () = stop.cancelled() => return,
                }
            },
            Err(err) => {
                warn!(error = %err.chain(), "cannot listen for cancellations; heartbeats still deliver them")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => return,
        }
    }
}
