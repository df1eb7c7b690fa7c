//! The reference model: the queue of the spec, written plainly (lists and linear scans, no
//! indexes) so that it is obviously right. The property suite (`proptest.rs`) drives a
//! backend and this model with the same operations and compares every answer and the
//! whole observable state after each step.
//!
//! It shares with the backends only the types and the validation of inputs; every rule
//! (what an outcome, a cancel or an expired lease becomes, what a record looks like after
//! each transition) is written here again, from `shared/SPEC.md`, on purpose: two
//! independent versions that must agree.

use std::collections::BTreeMap;

mod chains;
mod control;
mod flows;
mod groups;
mod jobs;
mod keys;
mod leases;
mod listing;
mod partitions;
mod rate;
mod retention;
mod schedules;
mod sequences;
mod workers;

use schedules::ModelSchedule;

use queue_core::backend::{
    ClaimId, ClaimRequest, HeartbeatReply, LeaseRef, Millis, Outcome, WorkerBeat, duration_ms,
    encode_cursor, from_millis, listed_at, to_millis,
};
use queue_core::{
    CancelOutcome, Error, JobId, JobRecord, JobStatus, LeaseToken, LifetimeTotals, ListQuery,
    NewJob, Page, Priority, QueueConfig, QueueStats, Result, WorkerInfo,
};

/// A job as the model keeps it.
#[derive(Clone, Debug)]
struct Job {
    record: JobRecord,
    /// Its place among ready jobs of its priority (smaller runs first).
    place: u64,
    /// Waiting for its due time (not yet moved among the ready jobs).
    due: Option<Millis>,
    lease: Option<HeldBy>,
    /// The last ended attempt: its token and the status it produced.
    ended: Option<(LeaseToken, JobStatus)>,
    /// It was created with children or was given some: it has child counts.
    is_parent: bool,
    /// When retention last kept it (a finished child of an unfinished parent): its
    /// retention counts from then.
    kept: Option<Millis>,
    /// It let its unique key go to a newer job while it ran (a debounce's next run, a
    /// keep-latest's waiting job): no longer the key's holder.
    key_let_go: bool,
    /// When it joined its sequence (the newest unfinished member is the tail).
    joined: u64,
    /// The partition it lives in (0 on a queue of one partition).
    partition: u32,
}

/// Who holds a running job in the model: the lease's token, expiry and claim.
#[derive(Clone, Debug)]
struct HeldBy {
    token: LeaseToken,
    expires: Millis,
    lease_ms: Millis,
    claim: ClaimId,
}

/// One group's settings and rate state in the model.
#[derive(Clone, Debug, Default)]
struct GroupSet {
    paused: bool,
    concurrency: Option<u32>,
    /// Its weight, and its starts in the current turn: its lane keeps its ticket until
    /// `weight` starts in a row.
    weight: Option<u32>,
    turn: u32,
    rate: Option<queue_core::RateLimit>,
    /// Its starts while it has a rate limit, with their costs (each start forgets those
    /// out of the window).
    starts: Vec<(Millis, u32)>,
    held_until: Millis,
}

/// A leased job, as the model hands it out.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelLease {
    /// The record at the claim.
    pub job: JobRecord,
    /// The model's token.
    pub token: LeaseToken,
    /// When the lease expires.
    pub expires_at: Millis,
}

/// The queue of the spec.
#[derive(Clone, Debug)]
pub struct Model {
    config: QueueConfig,
    /// How many partitions the queue has (README "Partitions"): each partition orders its
    /// own starts (its tick and lanes), and a unique key is unique within its partition.
    partitions: u32,
    /// The partition the jobs being created go to whatever their routes (a flow's, a
    /// schedule's ticks').
    placing: Option<u32>,
    /// How the backend under comparison split the claim under way among the partitions
    /// (partition, jobs, in order): a claim of several partitions may take from them in
    /// any order, each in its own start order ([`Model::follow`]).
    plan: Option<Vec<(u32, usize, usize)>>,
    /// The partitions that gave the claim under way fewer jobs than it asked them for.
    short: Vec<u32>,
    jobs: Vec<Job>,
    next_place: u64,
    next_token: u64,
    totals: LifetimeTotals,
    workers: BTreeMap<String, (WorkerBeat, Millis)>,
    last_claim: BTreeMap<String, ClaimId>,
    /// The time of the last heartbeat: a worker's claim history goes at the first beat
    /// after its liveness ended (those that ended since this time).
    lost_seen: Millis,
    /// The last `joined` given.
    next_join: u64,
    paused: bool,
    /// The rate limit (max, window ms) and every start since it was set, with its cost.
    rate: Option<(u64, Millis)>,
    starts: Vec<(Millis, u32)>,
    /// No job starts before this time (a handler reported a rate limit).
    held_until: Millis,
    /// Group settings and rate state.
    group_settings: BTreeMap<String, GroupSet>,
    /// The time of the operation under way.
    now: Millis,
    /// The lanes of groups, by (band, group), with their tickets: a group has a lane in a
    /// band while it has ready jobs there and admits a start.
    lanes: BTreeMap<(u8, String), u64>,
    /// Raised by every start, per partition.
    tick: Vec<u64>,
    /// The ticket of the last start of a job without a group, per partition and band.
    ungrouped_ticket: Vec<[u64; 3]>,
    /// Per parent, the final statuses of its children that retention deleted (they still
    /// count).
    swept_children: BTreeMap<JobId, Vec<JobStatus>>,
    /// Interval schedules by name.
    schedules: BTreeMap<String, ModelSchedule>,
}

/// What a job's start counts against rate limits.
fn cost_of(job: &Job) -> u32 {
    job.record.cost.unwrap_or(1)
}

/// The costs of the starts after `floor`.
fn used_since(starts: &[(Millis, u32)], floor: Millis) -> u64 {
    starts
        .iter()
        .filter(|(t, _)| *t > floor)
        .map(|(_, c)| u64::from(*c))
        .sum()
}

/// A start of `cost` fits a limit of `max` with `used` in the window: it fits what is left,
/// or the window is empty.
fn fits(max: u64, used: u64, cost: u32) -> bool {
    used == 0 || used + u64::from(cost) <= max
}

fn not_found(id: JobId) -> Error {
    Error::NotFound { id }
}

fn lost(id: JobId) -> Error {
    Error::LeaseLost { id }
}

impl Model {
    /// An empty queue with `config`'s defaults.
    pub fn new(config: QueueConfig) -> Self {
        Self {
            config,
            partitions: 1,
            placing: None,
            plan: None,
            short: Vec::new(),
            jobs: Vec::new(),
            next_place: 0,
            next_token: 0,
            totals: LifetimeTotals::default(),
            workers: BTreeMap::new(),
            last_claim: BTreeMap::new(),
            lost_seen: 0,
            next_join: 0,
            paused: false,
            rate: None,
            starts: Vec::new(),
            held_until: 0,
            group_settings: BTreeMap::new(),
            now: 0,
            lanes: BTreeMap::new(),
            tick: vec![0],
            ungrouped_ticket: vec![[0; 3]],
            swept_children: BTreeMap::new(),
            schedules: BTreeMap::new(),
        }
    }

    /// Ids of every retained job.
    pub fn ids(&self) -> Vec<JobId> {
        self.jobs.iter().map(|j| j.record.job_id).collect()
    }
}

fn one(req: &ClaimRequest) -> ClaimRequest {
    ClaimRequest {
        max: 1,
        ..req.clone()
    }
}

/// Notes the unsuccessful attempt that ends now on `r` (its error already set): numbered
/// on from the last one kept, the last 20 kept.
fn note_attempt(r: &mut JobRecord, worker: &str, now: Millis) {
    let attempt = r.attempts.last().map_or(1, |a| a.attempt + 1);
    r.attempts.push(queue_core::Attempt {
        attempt,
        started_at: r.started_at,
        ended_at: from_millis(now),
        worker_id: (!worker.is_empty()).then(|| worker.to_owned()),
        error: r.error_message.clone(),
    });
    if r.attempts.len() > 20 {
        r.attempts.remove(0);
    }
}
