//! What a worker does besides running jobs: renew its leases, stop attempts whose lease
//! it could not renew in time, recover and sweep, listen for cancels.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{running::StopReason, shared::Shared};

/// Renews every held lease each heartbeat interval (and at once when a pushed cancel may
/// concern a job just claimed); after a failed renewal, again sooner
/// ([`queue_core::backend::heartbeat_retry`]) until one succeeds. A reply names leases by
/// token, so it never touches a later attempt of the same job.
pub(crate) async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let s = &shared.settings;
    let mut ticks = tokio::time::interval(s.config.heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shared.running.beat_now.notified() => {}
            () = stop.cancelled() => return,
        }
        let leases = shared.running.leases();
        let sent = Instant::now();
        let result = tokio::select! {
            result = shared.broker.heartbeat(&shared.beat, &leases) => result,
            () = stop.cancelled() => return,
        };
        match result {
            Ok(reply) => {
                for lease in &leases {
                    if !reply.lost.contains(lease)
                        && let Some(running) = shared.running.get(lease)
                    {
                        running.renewed(sent, s.config.lease);
                    }
                }
                for lease in &reply.lost {
                    shared.running.stop_lease(lease, StopReason::LeaseLost);
                }
                for lease in &reply.cancel {
                    if shared.running.stop_lease(lease, StopReason::Cancelled) {
                        info!(job_id = %lease.job_id, "cancel requested");
                    }
                }
            }
            Err(err) => {
                warn!(error = %err.chain(), "heartbeat failed");
                ticks.reset_after(queue_core::backend::heartbeat_retry(s.config.heartbeat));
            }
        }
    }
}

/// Stops attempts whose lease may expire on the server soon because no renewal
/// succeeded (Redis unreachable, a partition): measured from when the last successful
/// renewal was sent, so the attempt has stopped before another worker can take the job.
pub(crate) async fn fence_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let margin = queue_core::backend::fence_margin(shared.settings.config.lease);
    let mut ticks = tokio::time::interval(margin / 2);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let fenced = shared.running.fence(Instant::now() + margin);
        if !fenced.is_empty() {
            warn!(jobs = ?fenced, "leases not renewed in time: stopping these jobs before another worker may take them");
        }
    }
}

/// Recovers expired leases and deletes expired records, each in bounded batches, as many
/// batches as it takes to catch up.
pub(crate) async fn maintenance_loop(shared: Arc<Shared>, stop: CancellationToken) {
    const REAP_BATCH: usize = 100;
    const SWEEP_BATCH: usize = 500;
    let s = &shared.settings;
    let mut reap = tokio::time::interval(s.config.reap_interval);
    let mut sweep = tokio::time::interval(s.config.sweep_interval);
    reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = reap.tick() => loop {
                let batch = tokio::select! {
                    r = shared.broker.reap(REAP_BATCH) => r,
                    () = stop.cancelled() => return,
                };
                match batch {
                    Ok(ids) => {
                        if !ids.is_empty() {
                            info!(jobs = ?ids, "recovered jobs whose lease expired");
                        }
                        if ids.len() < REAP_BATCH {
                            break;
                        }
                    }
                    Err(err) => {
                        warn!(error = %err.chain(), "recovering expired leases failed");
                        break;
                    }
                }
            },
            _ = sweep.tick() => {
                let mut removed = 0;
                loop {
                    let batch = tokio::select! {
                        r = shared.broker.sweep(SWEEP_BATCH) => r,
                        () = stop.cancelled() => return,
                    };
                    match batch {
                        Ok(n) => {
                            removed += n;
                            if n < SWEEP_BATCH {
                                break;
                            }
                        }
                        Err(err) => {
                            warn!(error = %err.chain(), "sweeping expired records failed");
                            break;
                        }
                    }
                }
                if removed > 0 {
                    debug!(removed, "swept expired records");
                }
            },
            () = stop.cancelled() => return,
        }
    }
}

/// Fires due job schedules: at the earliest next run the backend knows of, and at least
/// every `SCHEDULE_POLL` (a schedule created elsewhere is seen within that). Every worker
/// runs this; the compare-and-set in the backend makes each tick enqueue one job.
pub(crate) async fn schedule_loop(shared: Arc<Shared>, stop: CancellationToken) {
    use queue_core::Schedules;
    use queue_core::backend::SCHEDULE_POLL;
    loop {
        let pass = tokio::select! {
            r = shared.broker.run_due_schedules() => r,
            () = stop.cancelled() => return,
        };
        let wait = match pass {
            Ok(report) => {
                for (name, jobs) in &report.fired {
                    if !jobs.is_empty() {
                        info!(schedule = %name, jobs = ?jobs, "schedule ticked");
                    }
                }
                for (name, err) in &report.errors {
                    warn!(schedule = %name, error = %err.chain(), "schedule could not fire");
                }
                report
                    .next_due
                    .and_then(|due| (due - report.now).to_std().ok())
                    .map_or(SCHEDULE_POLL, |until| until.min(SCHEDULE_POLL))
            }
            Err(err) => {
                warn!(error = %err.chain(), "reading due schedules failed");
                SCHEDULE_POLL
            }
        };
        // Workers started together spread their reads.
        let jitter = Duration::from_millis(fastrand::u64(0..50));
        tokio::select! {
            () = tokio::time::sleep(wait + jitter) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Follows the backend's cancel push: stops the job at once when it runs here, and
/// remembers it a moment otherwise (it may have been claimed an instant ago).
pub(crate) async fn cancel_listener(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        match shared.broker.cancellations().await {
            Ok(mut ids) => loop {
                tokio::select! {
                    id = ids.next() => match id {
                        Some(id) => {
                            if shared.running.cancel_job(id) {
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

/// Hands back jobs held ahead longer than their patience (`ahead::GIVE_BACK` budgets: a
/// handler in front of them ran long), until `stop`.
pub(crate) async fn keeper_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let ahead = &shared.ahead;
    loop {
        let changed = ahead.changed();
        let (overdue, next) = ahead.overdue(Instant::now());
        if !overdue.is_empty() {
            crate::reporter::hand_back(&shared, overdue).await;
            continue;
        }
        tokio::select! {
            () = changed, if next.is_none() => {}
            () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {}
            () = stop.cancelled() => return,
        }
    }
}
