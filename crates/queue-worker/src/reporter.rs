//! Outcomes reach the backend in groups (group commit): one task sends them with
//! [`Broker::finish_many`], a few calls in flight at once. While every call is in flight,
//! the outcomes that arrive meanwhile wait and leave together in the next call, so a busy
//! worker sends one call for many jobs and an idle one sends each outcome at once.
//! Each call also claims what its reports want (a slot's next job and jobs ahead); the
//! leases it brings are held by `ahead` for whichever slot is free first.

use std::{sync::Arc, time::Duration};

use queue_core::Error;
use queue_core::backend::{ClaimRequest, Ending, FinishedMany, Lease, MAX_CLAIM};
use tokio::{
    sync::{Semaphore, mpsc},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{error, warn};

use crate::shared::{Report, Shared};

/// The most endings one call carries.
const GROUP: usize = 128;
/// Calls in flight at once. Two keep Redis busy while a reply travels and let groups
/// grow: measured on one host, concurrency 10 ran 17.7k-19.5k jobs/s with 2 against
/// 16.5k-16.9k with 4 (fewer, larger calls cost Redis less per job); concurrency 100 did
/// not move beyond noise.
const IN_FLIGHT: usize = 2;

/// Sends reports until `stop` (the worker stops it once no attempt can report any more).
pub(crate) async fn reporter_loop(
    shared: Arc<Shared>,
    mut reports: mpsc::UnboundedReceiver<Report>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let calls = TaskTracker::new();
    loop {
        let first = tokio::select! {
            report = reports.recv() => match report {
                Some(report) => report,
                None => break,
            },
            () = stop.cancelled() => break,
        };
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("never closed"),
            () = stop.cancelled() => break,
        };
        // Whatever arrived while every call was in flight goes with this one.
        let mut group = vec![first];
        while group.len() < GROUP {
            match reports.try_recv() {
                Ok(report) => group.push(report),
                Err(_) => break,
            }
        }
        let shared = Arc::clone(&shared);
        calls.spawn(async move {
            send(&shared, group).await;
            drop(slot);
        });
    }
    calls.close();
    calls.wait().await;
}

/// Stores a group of outcomes, retrying the same call (same endings, same claim request:
/// a call sent again after it was applied gets the same answer) while the backend is
/// unreachable: for up to one lease, and never past the worker's stop deadline.
async fn send(shared: &Arc<Shared>, group: Vec<Report>) {
    let s = &shared.settings;
    let wanted: usize = group.iter().map(|r| r.want).sum();
    let next = (wanted > 0)
        .then(|| ClaimRequest::new(s.id.clone(), wanted.min(MAX_CLAIM), s.config.lease));
    let endings: Vec<Ending> = group
        .iter()
        .map(|r| Ending {
            lease: r.lease.clone(),
            outcome: r.outcome.clone(),
        })
        .collect();
    // Leases the call takes expire one lease after the first try was sent at the latest.
    let deadline = Instant::now() + s.config.lease;
    let leases = match store(shared, &group, endings, next, deadline).await {
        Some(done) => {
            settled(&group, done.statuses);
            done.next
        }
        None => Vec::new(),
    };
    let mut leases = leases;
    let extra = leases.split_off(leases.len().min(wanted.min(MAX_CLAIM)));
    // The slots waiting for these leases take them at once.
    let back = shared.ahead.answered(wanted, leases);
    for r in group {
        shared.running.remove(&r.lease);
        let _ = r.reply.send(());
    }
    if !extra.is_empty() {
        warn!(
            count = extra.len(),
            "backend leased more jobs than asked for; handing them back"
        );
    }
    hand_back(shared, back.into_iter().chain(extra).collect()).await;
}

/// The call that stores `endings` (and claims `next`), sent again while the backend is
/// unreachable; `None` when it could not be stored in time (logged per outcome).
async fn store(
    shared: &Arc<Shared>,
    group: &[Report],
    endings: Vec<Ending>,
    next: Option<ClaimRequest>,
    deadline: Instant,
) -> Option<FinishedMany> {
    let mut delay = Duration::from_millis(100);
    loop {
        let until = shared.bounded(deadline);
        let call = shared.broker.finish_many(endings.clone(), next.clone());
        let result = match tokio::time::timeout_at(until, call).await {
            Ok(result) => result,
            Err(_) => {
                for r in group {
                    r.span.in_scope(|| {
                        error!(
                            outcome = r.outcome.name(),
                            "could not confirm the outcome in time (the call goes on and may still store it, and any jobs it claims are handed back); if it is not stored, the lease will expire and the job run again"
                        )
                    });
                }
                return None;
            }
        };
        match result {
            Ok(done) => return Some(done),
            Err(err) if err.is_retryable() && Instant::now() + delay < shared.bounded(deadline) => {
                warn!(error = %err.chain(), outcomes = group.len(), retry_in = ?delay, "could not store outcomes yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(err) => {
                for r in group {
                    r.span.in_scope(|| {
                        error!(error = %err.chain(), outcome = r.outcome.name(), "could not store the outcome; the lease will expire and the job run again")
                    });
                }
                return None;
            }
        }
    }
}

/// Logs the outcomes the backend refused.
fn settled(group: &[Report], statuses: Vec<queue_core::Result<queue_core::JobStatus>>) {
    for (r, status) in group.iter().zip(statuses) {
        match status {
            Ok(_) => {}
            Err(Error::LeaseLost { .. }) => r.span.in_scope(|| {
                warn!("lease lost before the outcome was stored; the job runs again elsewhere")
            }),
            Err(err) => r.span.in_scope(|| {
                error!(error = %err.chain(), outcome = r.outcome.name(), "the outcome was refused; the lease will expire and the job run again")
            }),
        }
    }
}

/// Hands leased jobs back unrun (no attempt used): they keep their place.
pub(crate) async fn hand_back(shared: &Shared, leases: Vec<Lease>) {
    if leases.is_empty() {
        return;
    }
    let endings = leases.iter().map(Ending::handed_back).collect();
    let until = shared.bounded(Instant::now() + shared.settings.config.lease);
    match tokio::time::timeout_at(until, shared.broker.finish_many(endings, None)).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => {
            warn!(error = %err.chain(), "could not hand jobs back; their leases will expire")
        }
        Err(_) => warn!("could not hand jobs back in time; their leases will expire"),
    }
}
