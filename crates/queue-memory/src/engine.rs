//! The in-memory engine: the tables and every state change, under one lock held by the
//! caller. This file holds the tables; each concept's changes live in `engine/<concept>.rs`
//! under the same name as in core, the Redis prelude, the conformance cases and the
//! reference model (jobs, leases, groups, rate, flows, schedules, webhooks, listing,
//! workers, retention, control, cascade).
//!
//! Decisions come from `queue_core::backend::rules` (what an outcome, a cancel or an expired lease
//! becomes, what each event writes, where the job goes); the engine only keeps the indexes
//! in step with them.

use queue_core::backend::worker_listing;
use queue_core::series::{SeriesBook, latency_field};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

mod cascade;
mod chains;
mod control;
mod flows;
mod groups;
mod jobs;
mod keys;
mod leases;
mod listing;
mod rate;
mod retention;
mod schedules;
mod sequences;
mod webhooks;
mod workers;

use groups::GroupState;
use rate::StartLog;

use queue_core::backend::{
    ClaimId, ClaimRequest, ClaimedDelivery, Event, FlatJob, HeartbeatReply, Lease, LeaseRef,
    MAX_SCHEDULES, MAX_WEBHOOKS, Millis, Outcome, ParentAction, ProgressReply, Reopen,
    ScheduleRead, ScheduleWrite, ScheduleWritten, Settle, StoredSchedules, WorkerBeat,
    accepts_children, child_failed_message, duration_ms, encode_cursor, from_millis, is_parent_of,
    listed_at, on_child_ended, on_child_reopened, on_delete, retention_keeps_child,
    rules::{self, AttemptFacts, CancelAction, EffectInput, Placement},
    to_millis, unfinished_change, weighted_turn,
};
use queue_core::{
    ChildCounts, ChildPolicy, Delivery, Error, EventKind, GroupList, GroupStats, JobEvent, JobId,
    JobRecord, JobStatus, LeaseToken, LifetimeTotals, Limits, NewJob, Page, Priority, QueueConfig,
    QueueStats, RateLimit, Result, Webhook, WorkerInfo,
};

/// Index key ordering jobs by creation: (created ms, id).
type ByCreated = (Millis, JobId);
/// Index key of the listings of every job and of one status: ([`listed_at`] ms, id).
type ByListed = (Millis, JobId);

pub(crate) struct Entry {
    record: JobRecord,
    created_ms: Millis,
    /// The job's ready_position in `ready`; kept while it runs so a recovered or released job goes
    /// back to where it was.
    ready_position: (u8, u64),
    lease: Option<ActiveLease>,
    /// The last ended attempt: its token and the status it produced (a finish sent again
    /// gets the same answer).
    ended: Option<(LeaseToken, JobStatus)>,
    /// Its time in `finished` while it is finished (its completion, or when retention last
    /// kept it for its unfinished parent).
    finished_ms: Option<Millis>,
}

impl Entry {
    /// Its place in the listings of every job and of its status.
    fn listed_ms(&self) -> Millis {
        listed_at(self.record.status, self.created_ms, self.finished_ms)
    }
}

struct ActiveLease {
    token: LeaseToken,
    expires_ms: Millis,
    lease_ms: Millis,
    claim: ClaimId,
}

/// Job ids are UUIDv7 with 62 random low bits: hashing them again is wasted work.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
}

type IdMap<V> = HashMap<JobId, V, std::hash::BuildHasherDefault<IdHasher>>;

/// What `Tables::pop_ready` found.
pub(crate) enum Pop {
    /// This job (with its cost) is taken.
    Job(JobId, u32),
    /// Nothing ready in the band.
    Empty,
    /// The next job's cost does not fit the queue's rate limit: nothing starts.
    Blocked,
}

#[derive(Default)]
pub(crate) struct Tables {
    /// Boxed so growing the map moves pointers, not records.
    jobs: IdMap<Box<Entry>>,
    /// Ready jobs without a group, by (band, seq).
    ready: BTreeMap<(u8, u64), JobId>,
    /// Ready jobs of every lane, per band.
    ready_by_band: [u64; 3],
    /// Groups with ready or running jobs or settings.
    groups: HashMap<String, GroupState>,
    /// Per band, the groups that have ready jobs there and admit a start, by (ticket,
    /// name): the first is served next (unless the jobs without a group go first).
    lanes: [BTreeSet<(u64, String)>; 3],
    /// Raised by every start; a served lane takes its new value.
    tick: u64,
    /// The ticket of the last start of a job without a group, per band.
    ungrouped_ticket: [u64; 3],
    /// A job became ready or delayed, or a group's lane opened, since the last
    /// `take_woken`: waiting fetches look again (their wait may end sooner now).
    woken: bool,
    /// Groups held back only by time (a rate window or a hold), by when they may start
    /// again: a claim from then on looks at them again.
    timed_groups: BTreeSet<(Millis, String)>,
    /// The time of the operation under way (group admission depends on it).
    now: Millis,
    /// Delayed jobs by (due, id): the order in which they join the ready jobs.
    delayed: BTreeSet<(Millis, JobId)>,
    active: BTreeSet<(Millis, JobId)>,
    by_status: [BTreeSet<ByListed>; 6],
    all: BTreeSet<ByListed>,
    by_key: HashMap<String, BTreeSet<ByCreated>>,
    dedup: HashMap<String, JobId>,
    finished: BTreeSet<(Millis, JobId)>,
    workers: HashMap<String, (WorkerBeat, Millis)>,
    /// The last claim request of each worker: an older or equal one is a replay.
    last_claim: HashMap<String, ClaimId>,
    /// Chains: the job waiting for each job to end (`chains.rs`).
    chained: HashMap<JobId, JobId>,
    /// Sequences: each one's newest unfinished member (`sequences.rs`).
    tails: HashMap<String, JobId>,
    /// The time of the last heartbeat: a worker's claim history goes at the first beat
    /// after its liveness ended (those that ended since this time).
    lost_seen: Millis,
    totals: LifetimeTotals,
    /// The charts' buckets (`queue_core::series`).
    pub(crate) series: SeriesBook,
    seq: u64,
    /// No job starts while set (`JobStore::pause`).
    paused: bool,
    /// The rate limit, and the starts within its window (oldest first).
    rate: Option<RateLimit>,
    starts: StartLog,
    /// The last claim stopped at the rate limit with jobs waiting (a fetch looks again
    /// when the oldest start leaves the window).
    rate_blocked: bool,
    /// No job starts before this time (a handler hit a limit outside the queue).
    held_until: Millis,
    /// Each parent's children, by creation.
    kids: IdMap<BTreeSet<ByCreated>>,
    /// Queued parents waiting on their children (not ready, not delayed).
    waiting: BTreeSet<ByCreated>,
    /// Running children whose cancel a parent's cancel requested (see
    /// `take_cancel_requests`).
    cancel_requested: Vec<JobId>,
    /// Cancelled jobs whose descendants are still to be cancelled, oldest first, each with
    /// where its walk through its children stands (`cascade.rs`).
    cascade: VecDeque<(JobId, Option<ByCreated>)>,
    /// The jobs in `cascade`: a claim that meets one of their descendants cancels it.
    cascading: HashSet<JobId>,
    /// The leases each claim request took, by (worker, claim): a replay reads only its own.
    claimed: HashMap<(String, ClaimId), Vec<JobId>>,
    /// Every delivery of the outbox by (webhook, delivery id): a deleted webhook's go with it.
    deliveries_by_hook: BTreeSet<(String, String)>,
    /// Schedules: name -> (stored form, next run).
    schedules: BTreeMap<String, (String, Option<Millis>)>,
    /// Webhooks by name.
    hooks: BTreeMap<String, Webhook>,
    /// The outbox: delivery id -> (stored form, due ms; `Err(parked at)` when parked).
    outbox: HashMap<String, (String, std::result::Result<Millis, Millis>)>,
    /// Pending deliveries by (due, id).
    due_deliveries: BTreeSet<(Millis, String)>,
    /// Parked deliveries by (parked at, id).
    parked: BTreeSet<(Millis, String)>,
}

/// Where `emit` sends events; `None` when nobody listens (no event is built).
pub(crate) type EventSender<'a> = Option<&'a crate::events::Events>;

fn status_index(status: JobStatus) -> usize {
    status as usize
}

fn emit(events: EventSender<'_>, job_id: JobId, now: Millis, kind: EventKind) {
    if let Some(tx) = events {
        tx.send(
            JobEvent {
                id: None,
                job_id,
                at: from_millis(now),
                kind,
            },
            now,
        );
    }
}

/// A record as readers see it: a parent waiting on its children shows their progress.
fn shown(record: &JobRecord) -> JobRecord {
    let mut out = record.clone();
    out.show_flow_progress();
    out
}

fn bump(totals: &mut LifetimeTotals, series: &mut SeriesBook, now: Millis, counter: &str) {
    series.add(now, counter, 1);
    let n = match counter {
        "enqueued" => &mut totals.enqueued,
        "completed" => &mut totals.completed,
        "failed" => &mut totals.failed,
        "partial" => &mut totals.partial,
        "cancelled" => &mut totals.cancelled,
        "retried" => &mut totals.retried,
        "recovered" => &mut totals.recovered,
        other => unreachable!("no counter {other}"),
    };
    *n = n.saturating_add(1);
}

impl Tables {}
