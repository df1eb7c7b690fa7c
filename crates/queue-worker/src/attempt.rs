//! One attempt: run the handler under its timeout, turn what it did into an outcome,
//! report it.

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use futures_util::FutureExt;
use queue_core::backend::{Lease, LeaseRef, Outcome};
use queue_core::{JobError, JobRecord};
use tokio::{sync::oneshot, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, error, info, info_span, warn};

use crate::{
    JobContext,
    handler::panic_message,
    running::{Running, StopReason},
    shared::{Report, Shared},
};

/// Runs one leased job and sends its outcome to be stored (claiming the slot's next job
/// with it, unless shutdown began); returns what answers once the outcome is stored. The
/// slot goes on meanwhile: its next job comes from what is claimed ahead (`ahead`).
pub(crate) async fn run_one(
    shared: &Arc<Shared>,
    lease: Lease,
    shutdown: &CancellationToken,
) -> Option<Stored> {
    let started = Instant::now();
    // The lease runs from when the call that took it was sent (the fence counts from there,
    // not from when a waiting fetch began: queue_core::backend::fence_margin).
    let renewed_until = lease.claimed_at + shared.settings.config.lease;
    let record = lease.job;
    let lease_ref = LeaseRef {
        job_id: record.job_id,
        token: lease.token,
    };
    let span = info_span!("job", job_id = %record.job_id, task = %record.task, attempt = record.retry_count);
    #[cfg(feature = "opentelemetry")]
    continue_trace(&span, &record.metadata);
    // The entry stays until the outcome is stored, so heartbeats keep renewing the lease
    // while a report is retried.
    let running = shared.running.insert(lease_ref.clone(), renewed_until);
    if record.cancel_requested {
        running.stop(StopReason::Cancelled);
    }
    let handling = Instant::now();
    let outcome = execute(shared, &record, &lease_ref, &running)
        .instrument(span.clone())
        .await;
    let handled = handling.elapsed();
    // Blocking work started through the context holds the slot until it has ended.
    running.blocking.close();
    running.blocking.wait().await;
    let turn = match outcome {
        None => {
            shared.counts.lost.fetch_add(1, Ordering::Relaxed);
            span.in_scope(|| {
                warn!("lease lost or not renewed in time: the outcome is not reported")
            });
            shared.running.remove(&lease_ref);
            None
        }
        Some(outcome) => {
            shared.counts.count(&outcome);
            span.in_scope(|| log(&outcome, started.elapsed()));
            let claim_next = !shutdown.is_cancelled();
            span.in_scope(|| send_report(shared, &lease_ref, outcome, claim_next))
        }
    };
    // What a job held ahead waits behind: this whole turn, not the handler alone.
    shared.ahead.ran(started.elapsed(), handled);
    turn
}

fn log(outcome: &Outcome, elapsed: Duration) {
    match outcome {
        Outcome::Retry { error, delay } => {
            warn!(error = %error, retry_in = ?delay, ?elapsed, "attempt failed, will retry")
        }
        Outcome::Failed { error } => warn!(error = %error, ?elapsed, "job failed"),
        Outcome::Snoozed { delay } => info!(run_in = ?delay, ?elapsed, "job snoozed"),
        Outcome::RateLimited { retry_after } => warn!(
            hold = ?retry_after,
            ?elapsed,
            "rate limited: the job snoozes and its group (or the queue) holds its starts"
        ),
        Outcome::Partial { error, .. } => {
            info!(error = %error, ?elapsed, "job partially completed")
        }
        other => debug!(outcome = other.name(), ?elapsed, "job finished"),
    }
}

/// The handler's outcome, or `None` when the lease was lost (nothing must be reported).
async fn execute(
    shared: &Arc<Shared>,
    record: &JobRecord,
    lease: &LeaseRef,
    running: &Arc<Running>,
) -> Option<Outcome> {
    let policy = &shared.settings.config.retry;
    let Some(handler) = shared.registry.get(&record.task) else {
        // Retried with the normal backoff: during a rolling deploy a worker that knows
        // the task may take it.
        let error = JobError::retry(format!(
            "no handler registered for task `{}` (this worker handles: {})",
            record.task,
            shared.registry.tasks().join(", ")
        ));
        return Some(policy.decide(record, &error));
    };
    let timeout = record.timeout_or(shared.settings.config.job_timeout);
    let ctx = JobContext::new(
        record.clone(),
        lease.clone(),
        Arc::clone(running),
        Arc::clone(&shared.broker),
        Arc::clone(&shared.store),
        shared.settings.config.lease,
    );
    // Calling the handler may panic before it returns a future, as polling it may.
    let run = match std::panic::catch_unwind(AssertUnwindSafe(|| {
        handler(record.payload.clone(), ctx)
    })) {
        Ok(run) => run,
        Err(panic) => {
            let error = JobError::retry(format!("handler panicked: {}", panic_message(&*panic)));
            return Some(policy.decide(record, &error));
        }
    };
    let guarded = AssertUnwindSafe(tokio::time::timeout(timeout, run)).catch_unwind();
    tokio::select! {
        biased;
        () = running.token().cancelled() => {}
        result = guarded => {
            return Some(match result {
                Ok(Ok(Ok(done))) => match done.partial_error {
                    Some(error) => Outcome::Partial { result: done.result, error },
                    None => Outcome::Completed { result: done.result },
                },
                Ok(Ok(Err(err))) => policy.decide(record, &err),
                Ok(Err(_elapsed)) => policy.decide(record, &JobError::retry(format!("timed out after {timeout:?}"))),
                Err(panic) => policy.decide(
                    record,
                    &JobError::retry(format!("handler panicked: {}", panic_message(&*panic))),
                ),
            });
        }
    }
    match running.reason() {
        Some(StopReason::Cancelled) => Some(Outcome::Cancelled),
        Some(StopReason::Shutdown) => Some(Outcome::Released),
        Some(StopReason::LeaseLost) | None => None,
    }
}

/// Answers once an outcome is stored (or could not be: the reporter has logged why).
pub(crate) type Stored = oneshot::Receiver<()>;

/// Sends an outcome to the worker's reporter (which groups it with others and retries
/// while the backend is unreachable), with a claim for the slot's next job (and for jobs
/// ahead, `ahead::Ahead::reserve`) when `claim_next`.
fn send_report(
    shared: &Arc<Shared>,
    lease: &LeaseRef,
    outcome: Outcome,
    claim_next: bool,
) -> Option<Stored> {
    let (reply, stored) = oneshot::channel();
    let want = if claim_next {
        shared.ahead.reserve(1, true)
    } else {
        0
    };
    let report = Report {
        lease: lease.clone(),
        outcome,
        want,
        span: Span::current(),
        reply,
    };
    if let Err(unsent) = shared.reports.send(report) {
        error!(
            "the worker no longer reports outcomes; the lease will expire and the job run again"
        );
        shared.ahead.answered(unsent.0.want, Vec::new());
        shared.running.remove(lease);
        return None;
    }
    Some(stored)
}

/// Makes `span` a child of the trace the job was enqueued in, when it carries one.
#[cfg(feature = "opentelemetry")]
fn continue_trace(span: &tracing::Span, metadata: &queue_core::Metadata) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if let Some(carrier) = queue_core::backend::trace_carrier(metadata) {
        let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
        // Fails only when no OpenTelemetry layer is installed: nothing to continue then.
        let _ = span.set_parent(parent);
    }
}
