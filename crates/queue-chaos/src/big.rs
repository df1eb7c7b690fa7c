//! The drill's big-batch phase (issue 24): the documented maximums under faults. While the
//! faults go on, a flow of `MAX_FLOW_JOBS` jobs is enqueued and cancelled once some of its
//! members ran (its cascade runs in bounded steps, racing the workers' claims and the
//! faults), and a batch grows to 20,000 members in two `add_children` calls; one worker
//! process runs at `MAX_CONCURRENCY`, so its claims ask for far more than one call takes.
//! Every job of both goes into the final check: none lost, stranded or run twice at once.

use std::time::{Duration, Instant};

use queue_core::backend::MAX_FLOW_JOBS;
use queue_core::{Error, Flow, JobId, NewJob};
use serde::Serialize;

use crate::worker::Task;

/// Members of the batch that grows past one call's limit.
const BATCH_MEMBERS: usize = 2 * MAX_FLOW_JOBS;
const _: () = assert!(BATCH_MEMBERS == (MAX_FLOW_JOBS - 1) + MAX_FLOW_JOBS + 1);

/// What the phase did.
#[derive(Debug, Default, Serialize)]
pub(crate) struct BigReport {
    /// Jobs of the flow (its root included).
    pub(crate) flow_jobs: usize,
    /// Members of the flow that had finished when its root was cancelled.
    pub(crate) finished_before_cancel: u32,
    /// Members of the batch.
    pub(crate) batch_members: usize,
    /// Calls sent again after a fault.
    pub(crate) retried_calls: u32,
}

fn quick(n: usize) -> NewJob {
    NewJob::new(
        "work",
        &Task {
            ms: 1 + (n % 5) as u64,
            fail: false,
            progress: false,
        },
    )
    .expect("encodes")
    .job_id(JobId::new())
}

/// Runs the phase; returns its report and the ids of every job it created.
pub(crate) async fn run(
    backend: queue_core::SharedBackend,
) -> anyhow::Result<(BigReport, Vec<JobId>)> {
    let mut report = BigReport::default();
    let mut ids = Vec::new();

    // A flow at its maximum, cancelled mid-run.
    let members: Vec<NewJob> = (0..MAX_FLOW_JOBS - 1).map(quick).collect();
    let root = quick(0);
    let root_id = root.options.job_id.expect("an id");
    ids.push(root_id);
    ids.extend(members.iter().filter_map(|m| m.options.job_id));
    let flow = Flow::batch(root, members);
    report.flow_jobs = flow.len();
    // Sent again with the same root id until stored (a stored root answers as it is).
    until_done(&mut report, || backend.enqueue_flow(flow.clone())).await?;
    let started = Instant::now();
    loop {
        let counts = backend.get(root_id).await.ok().and_then(|r| r.children);
        if counts.is_some_and(|c| c.finished() >= 200)
            || started.elapsed() > Duration::from_secs(20)
        {
            report.finished_before_cancel = counts.map_or(0, |c| c.finished());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until_done(&mut report, || async {
        match backend.cancel(root_id).await {
            // Cancelled by an earlier send whose answer was lost: its cascade goes on (the
            // workers' reap finishes one its caller left).
            Err(Error::InvalidTransition { .. }) => Ok(queue_core::CancelOutcome::Cancelled),
            other => other,
        }
    })
    .await?;

    // A batch that grows to 20,000 members: created with 9,999 (a flow of 10,000 jobs),
    // then 10,000 and 1 more added while it waits.
    let first: Vec<NewJob> = (0..MAX_FLOW_JOBS - 1).map(quick).collect();
    let callback = quick(1);
    let callback_id = callback.options.job_id.expect("an id");
    ids.push(callback_id);
    ids.extend(first.iter().filter_map(|m| m.options.job_id));
    let batch = Flow::batch(callback, first);
    until_done(&mut report, || backend.enqueue_flow(batch.clone())).await?;
    for (part, count) in [MAX_FLOW_JOBS, 1].into_iter().enumerate() {
        let members: Vec<Flow> = (0..count)
            .map(|n| Flow::new(quick(part * MAX_FLOW_JOBS + n)))
            .collect();
        let first = members[0].job.options.job_id.expect("an id");
        ids.extend(members.iter().filter_map(|m| m.job.options.job_id));
        until_done(&mut report, || async {
            match backend.add_children(callback_id, members.clone()).await {
                // An earlier send was applied and its answer lost: its first member exists.
                Err(e) if backend.get(first).await.is_ok() => {
                    tracing::info!(error = %e.chain(), "the members were added by an earlier send");
                    Ok(Vec::new())
                }
                other => other,
            }
        })
        .await?;
    }
    report.batch_members = BATCH_MEMBERS;
    Ok((report, ids))
}

/// Sends `call` until it succeeds, for up to two minutes (faults come and go meanwhile).
async fn until_done<T, F, Fut>(report: &mut BigReport, mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = queue_core::Result<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match call().await {
            Ok(done) => return Ok(done),
            Err(e) if Instant::now() < deadline => {
                tracing::info!(error = %e.chain(), "a big-batch call failed; sending it again");
                report.retried_calls += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
