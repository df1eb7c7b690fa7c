//! The cases. Each takes a fresh [`Harness`] and panics on a broken contract.

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures_util::StreamExt;
use queue_core::backend::{ClaimRequest, Ending, Lease, LeaseRef, Outcome, WorkerBeat, to_millis};
use queue_core::{
    CancelOutcome, ChildPolicy, Clock, Error, EventKind, Flow, JobId, JobRecord, JobStatus,
    LeaseToken, ListQuery, NewJob, Page, Priority, WorkerId,
};
use serde_json::json;

use crate::Harness;

mod bulk;
mod control;
mod events;
mod flows;
mod groups;
mod jobs;
mod keys;
mod leases;
mod limits;
mod listing;
mod outcomes;
mod partitions;
mod rate;
mod retention;
mod schedules;
mod sequences;
mod series;
mod webhooks;

pub use bulk::*;
pub use control::*;
pub use events::*;
pub use flows::*;
pub use groups::*;
pub use jobs::*;
pub use keys::*;
pub use leases::*;
pub use limits::*;
pub use listing::*;
pub use outcomes::*;
pub use partitions::*;
pub use rate::*;
pub use retention::*;
pub use schedules::*;
pub use sequences::*;
pub use series::*;
pub use webhooks::*;

const LEASE: Duration = Duration::from_secs(30);

fn job(n: u32) -> NewJob {
    NewJob::new("conformance", &json!({ "n": n })).expect("encodes")
}

fn req(worker: &str, max: usize) -> ClaimRequest {
    ClaimRequest::new(WorkerId::new(worker), max, LEASE)
}

fn beat(worker: &str) -> WorkerBeat {
    WorkerBeat {
        worker: WorkerId::new(worker),
        host: "test-host".into(),
        pid: 42,
        concurrency: 3,
        version: "1.2.3".into(),
        tasks: vec!["model".into()],
        schemas: [(
            "model".to_owned(),
            json!({"type": "object", "properties": {"n": {"type": "integer"}}}),
        )]
        .into(),
        started_at: queue_core::backend::from_millis(0),
        lease: LEASE,
        interval: Duration::from_secs(10),
    }
}

fn n_of(record: &JobRecord) -> u64 {
    record.payload.to_value()["n"]
        .as_u64()
        .expect("conformance payload")
}

async fn enqueue(h: &Harness, job: NewJob) -> JobRecord {
    h.backend.enqueue(job).await.expect("enqueue")
}

async fn fetch(h: &Harness, max: usize) -> Vec<Lease> {
    h.backend
        .fetch(&req("w1", max), Duration::ZERO)
        .await
        .expect("fetch")
}

async fn claim_one(h: &Harness) -> Lease {
    let mut leases = fetch(h, 1).await;
    assert_eq!(leases.len(), 1, "expected one due job");
    leases.pop().unwrap()
}

async fn finish(h: &Harness, lease: &Lease, outcome: Outcome) -> JobStatus {
    h.backend
        .finish(&lease.to_ref(), outcome, None)
        .await
        .expect("finish")
        .status
}

/// Waits until no job is leased and `queued` are queued: what a dropped call took was handed
/// back (on its own task; the clock stands still, so a stranded lease never expires).
async fn all_queued_again(h: &Harness, round: u64, queued: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = h.backend.stats().await.unwrap();
        if stats.processing == 0 {
            assert_eq!(
                stats.queued, queued,
                "round {round}: every job queued again"
            );
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "round {round}: {} leases stranded",
            stats.processing
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn get(h: &Harness, id: JobId) -> JobRecord {
    h.backend.get(id).await.expect("get")
}

/// A fetch spawned to wait for work, handed back once it is blocked (it found nothing and
/// waits): what should wake it can then be tested, and that it keeps waiting until then.
async fn waiting_fetch(
    h: &Harness,
    req: ClaimRequest,
    wait: Duration,
) -> tokio::task::JoinHandle<queue_core::Result<Vec<Lease>>> {
    let blocked = h.blocked();
    let backend = Arc::clone(&h.backend);
    let waiter = tokio::spawn(async move { backend.fetch(&req, wait).await });
    h.until_blocked(blocked + 1).await;
    waiter
}

/// Asserts `r` is refused as invalid, with a message containing `words`.
fn invalid<T: std::fmt::Debug>(r: queue_core::Result<T>, words: &str) {
    match r {
        Err(Error::InvalidArgument { message }) => assert!(message.contains(words), "{message}"),
        other => panic!("expected InvalidArgument ({words}), got {other:?}"),
    }
}

fn completed() -> Outcome {
    Outcome::Completed { result: None }
}

fn retry(delay_secs: u64) -> Outcome {
    Outcome::Retry {
        error: "flaky".into(),
        delay: Duration::from_secs(delay_secs),
    }
}

/// Job `n`, in the case's one partition on a partitioned backend: for cases that check
/// start order, which holds per partition ([`Harness::in_order`]).
fn ordered(h: &Harness, n: u32) -> NewJob {
    h.in_order(job(n))
}

fn in_group(n: u32, group: &str) -> NewJob {
    job(n).group(group)
}

fn flow(n: u32) -> Flow {
    Flow::new(job(n))
}

async fn enqueue_flow(h: &Harness, flow: Flow) -> JobRecord {
    h.backend.enqueue_flow(flow).await.expect("enqueue_flow")
}

/// The `n` of every job claimable now (claimed and then released, so they stay queued in
/// place).
async fn claimable(h: &Harness) -> Vec<u64> {
    let leases = fetch(h, 100).await;
    let mut out: Vec<u64> = leases.iter().map(|l| n_of(&l.job)).collect();
    for lease in &leases {
        finish(h, lease, Outcome::Released).await;
    }
    out.sort_unstable();
    out
}

/// Claims the job whose payload is `n` (it must be claimable now), releasing the others.
async fn claim_n(h: &Harness, n: u64) -> Lease {
    let leases = fetch(h, 100).await;
    let mut found = None;
    for lease in leases {
        if n_of(&lease.job) == n && found.is_none() {
            found = Some(lease);
        } else {
            finish(h, &lease, Outcome::Released).await;
        }
    }
    found.unwrap_or_else(|| panic!("job {n} is not claimable"))
}
