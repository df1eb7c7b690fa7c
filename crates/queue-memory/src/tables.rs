//! The in-memory tables and every state change, under one lock held by the caller.
//!
//! Decisions come from `queue_core::backend::rules` (what an outcome, a cancel or an expired lease
//! becomes, what each event writes, where the job goes); this file only keeps the indexes
//! in step with them.

use queue_core::backend::worker_listing;
use queue_core::series::{SeriesBook, latency_field};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

mod cascade;

use queue_core::backend::{
    ClaimId, ClaimRequest, ClaimedDelivery, Event, FlatJob, HeartbeatReply, Lease, LeaseRef,
    MAX_SCHEDULES, MAX_WEBHOOKS, Millis, Outcome, ParentAction, ProgressReply, Reopen,
    ScheduleRead, ScheduleWrite, ScheduleWritten, Settle, StoredSchedules, WorkerBeat,
    accepts_children, child_failed_message, duration_ms, encode_cursor, from_millis, is_parent_of,
    listed_at, on_child_ended, on_child_reopened, on_delete, retention_keeps_child,
    rules::{self, AttemptFacts, CancelAction, EffectInput, Placement},
    unfinished_change, weighted_turn,
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

/// The starts within a rate limit's window, oldest first, with their costs
/// (`queue_core::RateLimit::admits`).
#[derive(Default)]
struct StartLog {
    starts: VecDeque<(Millis, u32)>,
    /// The sum of the costs in `starts`.
    used: u64,
}

impl StartLog {
    /// Forgets the starts at or before `floor` (out of the window).
    fn prune(&mut self, floor: Millis) {
        while let Some(&(at, cost)) = self.starts.front() {
            if at > floor {
                break;
            }
            self.starts.pop_front();
            self.used -= u64::from(cost);
        }
    }

    /// The costs counted in the window of `limit` at `now`.
    fn used(&self, limit: RateLimit, now: Millis) -> u64 {
        let floor = limit.window_floor(now);
        let gone: u64 = self
            .starts
            .iter()
            .take_while(|(at, _)| *at <= floor)
            .map(|(_, c)| u64::from(*c))
            .sum();
        self.used - gone
    }

    fn push(&mut self, now: Millis, cost: u32) {
        self.starts.push_back((now, cost));
        self.used += u64::from(cost);
    }

    /// When a job of `cost` that `limit` does not admit at `now` will be admitted: once
    /// enough of the oldest starts leave the window.
    fn admits_at(&self, limit: RateLimit, now: Millis, cost: u32) -> Option<Millis> {
        let floor = limit.window_floor(now);
        let mut used = self.used(limit, now);
        for &(at, c) in self.starts.iter().skip_while(|(at, _)| *at <= floor) {
            used -= u64::from(c);
            if limit.admits(used, cost) {
                return Some(limit.next_start(at));
            }
        }
        None
    }

    fn clear(&mut self) {
        self.starts.clear();
        self.used = 0;
    }
}

/// One group's ready jobs, running count and settings (`queue_core::backend` group rules).
/// Dropped when it has nothing left to remember.
#[derive(Default)]
struct GroupState {
    /// Its ready jobs by (band, seq), with their costs.
    ready: BTreeMap<(u8, u64), (JobId, u32)>,
    running: u64,
    /// Its jobs not finished (`queue_core::backend::unfinished_change`).
    unfinished: u64,
    paused: bool,
    concurrency: Option<u32>,
    /// Its weight, and its starts in the current turn (`queue_core::backend::weighted_turn`).
    weight: Option<u32>,
    turn: u32,
    /// Its rate limit, and its starts since (pruned at each start to the window).
    rate: Option<RateLimit>,
    starts: StartLog,
    /// None of its jobs starts before this time (a handler reported a limit hit).
    held_until: Millis,
    /// Its lane's ticket per band, while it has one (see `Tables::lanes`).
    lane: [Option<u64>; 3],
}

impl GroupState {
    /// The cost of the job it would start next (its first of the highest priority).
    fn next_cost(&self) -> u32 {
        self.ready.first_key_value().map_or(1, |(_, (_, c))| *c)
    }

    fn admits(&self, now: Millis) -> bool {
        queue_core::backend::group_admits(self.paused, self.running, self.concurrency)
            && queue_core::backend::group_rate_admits(
                self.rate,
                self.rate.map_or(0, |l| self.starts.used(l, now)),
                self.next_cost(),
                (self.held_until > 0).then_some(self.held_until),
                now,
            )
    }

    /// When a group that does not admit a start now may again by the passing of time (its
    /// rate window or a hold), if that is what holds it back.
    fn admits_again_at(&self, now: Millis) -> Option<Millis> {
        if now < self.held_until {
            return Some(self.held_until);
        }
        let limit = self.rate?;
        let cost = self.next_cost();
        if limit.admits(self.starts.used(limit, now), cost) {
            return None;
        }
        self.starts.admits_at(limit, now, cost)
    }

    fn has_ready(&self, band: u8) -> bool {
        self.ready
            .range((band, 0)..=(band, u64::MAX))
            .next()
            .is_some()
    }

    fn forgettable(&self) -> bool {
        self.ready.is_empty()
            && self.running == 0
            && self.unfinished == 0
            && !self.paused
            && self.concurrency.is_none()
            && self.weight.is_none()
            && self.rate.is_none()
            && self.held_until == 0
            && self.lane.iter().all(Option::is_none)
    }
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
pub(crate) type EventSender<'a> = Option<&'a crate::builder::Events>;

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

impl Tables {
    /// The stored schedules a read asks for, with the earliest next run of all.
    pub(crate) fn read_schedules(&self, read: &ScheduleRead, now: Millis) -> StoredSchedules {
        let pick: Vec<(String, String)> = match read {
            ScheduleRead::All => self
                .schedules
                .iter()
                .map(|(n, (t, _))| (n.clone(), t.clone()))
                .collect(),
            ScheduleRead::One(name) => self
                .schedules
                .get(name)
                .map(|(t, _)| (name.clone(), t.clone()))
                .into_iter()
                .collect(),
            ScheduleRead::Due { limit } => {
                let mut due: Vec<(Millis, &String)> = self
                    .schedules
                    .iter()
                    .filter_map(|(n, (_, next))| next.filter(|&t| t <= now).map(|t| (t, n)))
                    .collect();
                due.sort();
                due.into_iter()
                    .take(*limit)
                    .map(|(_, n)| (n.clone(), self.schedules[n].0.clone()))
                    .collect()
            }
        };
        StoredSchedules {
            now_ms: now,
            schedules: pick,
            next_due_ms: self.schedules.values().filter_map(|(_, next)| *next).min(),
        }
    }

    /// One compare-and-set of a schedule with its jobs (see `Broker::write_schedule`).
    pub(crate) fn write_schedule(
        &mut self,
        write: ScheduleWrite,
        cfg: &QueueConfig,
        now: Millis,
        events: EventSender<'_>,
    ) -> Result<ScheduleWritten> {
        let held = self.schedules.get(&write.name).map(|(t, _)| t);
        if held != write.expected.as_ref() {
            return Ok(ScheduleWritten::Conflict);
        }
        if held.is_none() && write.new.is_some() && self.schedules.len() >= MAX_SCHEDULES {
            return Err(Error::invalid(format!(
                "the queue has {MAX_SCHEDULES} schedules, the most it may have: delete one first"
            )));
        }
        match write.new {
            Some(new) => {
                self.schedules.insert(write.name, new);
            }
            None => {
                self.schedules.remove(&write.name);
            }
        }
        Ok(ScheduleWritten::Applied(
            write
                .jobs
                .into_iter()
                .map(|job| self.enqueue(job, cfg, now, events).map(|(r, _)| r.job_id))
                .collect(),
        ))
    }

    /// The outbox entries of job `id` reaching finished status `to` at `now`: one per
    /// webhook that wants it, in the same step as the transition.
    fn leave_deliveries(&mut self, id: JobId, to: JobStatus, now: Millis) {
        if self.hooks.is_empty() {
            return;
        }
        let record = &self.jobs[&id].record;
        let wanted: Vec<String> = self
            .hooks
            .values()
            .filter(|h| h.wants(&record.task, record.group.as_deref(), to))
            .map(|h| h.name.clone())
            .collect();
        for hook in wanted {
            let record = &self.jobs[&id].record;
            let delivery = Delivery {
                id: Delivery::id_of(id, to, now, &hook),
                webhook: hook,
                job_id: id,
                event: to,
                at: now,
                task: record.task.clone(),
                group: record.group.clone(),
                unique_key: record.unique_key.clone(),
                attempts: 0,
                last_attempt_at: None,
                last_error: None,
                parked: false,
            };
            self.due_deliveries.insert((now, delivery.id.clone()));
            self.deliveries_by_hook
                .insert((delivery.webhook.clone(), delivery.id.clone()));
            self.outbox
                .insert(delivery.id.clone(), (delivery.encode(), Ok(now)));
        }
    }

    pub(crate) fn put_webhook(&mut self, hook: &Webhook) -> Result<()> {
        hook.check()?;
        if self.hooks.len() >= MAX_WEBHOOKS && !self.hooks.contains_key(&hook.name) {
            return Err(Error::invalid(format!(
                "the queue has {MAX_WEBHOOKS} webhooks, the most it may have: delete one first"
            )));
        }
        self.hooks.insert(hook.name.clone(), hook.clone());
        Ok(())
    }

    /// Deletes a webhook (true when there was one) and up to `limit` of its deliveries;
    /// the caller repeats [`Tables::drop_deliveries`] while some are left.
    pub(crate) fn delete_webhook(&mut self, name: &str) -> bool {
        self.hooks.remove(name).is_some()
    }

    /// Drops up to `limit` deliveries (pending or parked) of a webhook that no longer
    /// exists; returns whether any are left.
    pub(crate) fn drop_deliveries(&mut self, name: &str, limit: usize) -> bool {
        if self.hooks.contains_key(name) {
            return false;
        }
        let ids: Vec<String> = self
            .deliveries_by_hook
            .range((name.to_owned(), String::new())..)
            .take_while(|(hook, _)| hook == name)
            .take(limit + 1)
            .map(|(_, id)| id.clone())
            .collect();
        let more = ids.len() > limit;
        for id in ids.into_iter().take(limit) {
            self.remove_delivery(&id);
        }
        more
    }

    /// Removes a delivery from the outbox and its indexes.
    fn remove_delivery(&mut self, id: &str) {
        if let Some((stored, due)) = self.outbox.remove(id) {
            match due {
                Ok(t) => self.due_deliveries.remove(&(t, id.to_owned())),
                Err(at) => self.parked.remove(&(at, id.to_owned())),
            };
            if let Ok(d) = Delivery::decode(&stored) {
                self.deliveries_by_hook.remove(&(d.webhook, id.to_owned()));
            } else {
                self.deliveries_by_hook.retain(|(_, i)| i != id);
            }
        }
    }

    pub(crate) fn webhooks(&self) -> Vec<Webhook> {
        self.hooks.values().cloned().collect()
    }

    /// Stores a delivery due at `due`, or parked (`None`, as of now).
    fn set_due(&mut self, id: &str, stored: String, due: Option<Millis>) {
        match self.outbox.get(id).map(|(_, due)| *due) {
            Some(Ok(t)) => {
                self.due_deliveries.remove(&(t, id.to_owned()));
            }
            Some(Err(at)) => {
                self.parked.remove(&(at, id.to_owned()));
            }
            None => {}
        }
        let due = match due {
            Some(t) => {
                self.due_deliveries.insert((t, id.to_owned()));
                Ok(t)
            }
            None => {
                self.parked.insert((self.now, id.to_owned()));
                Err(self.now)
            }
        };
        self.outbox.insert(id.to_owned(), (stored, due));
    }

    pub(crate) fn claim_deliveries(
        &mut self,
        limit: usize,
        lease: Millis,
        now: Millis,
    ) -> Vec<ClaimedDelivery> {
        self.now = now;
        let due: Vec<String> = self
            .due_deliveries
            .iter()
            .take_while(|(t, _)| *t <= now)
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect();
        let mut out = Vec::new();
        for id in due {
            let stored = self.outbox[&id].0.clone();
            self.set_due(&id, stored.clone(), Some(now + lease));
            match Delivery::decode(&stored) {
                Ok(delivery) => out.push(ClaimedDelivery {
                    webhook: self.hooks.get(&delivery.webhook).cloned(),
                    stored,
                    delivery,
                }),
                // A record nobody can read cannot be sent: it is parked, as it is.
                Err(_) => self.set_due(&id, stored, None),
            }
        }
        out
    }

    pub(crate) fn settle_delivery(
        &mut self,
        id: &str,
        claimed: &str,
        settle: Settle,
        now: Millis,
    ) -> bool {
        self.now = now;
        if self.outbox.get(id).map(|(s, _)| s.as_str()) != Some(claimed) {
            return false;
        }
        match settle {
            Settle::Remove => self.remove_delivery(id),
            Settle::Retry(stored, wait) => self.set_due(id, stored, Some(now + duration_ms(wait))),
            Settle::Park(stored) => self.set_due(id, stored, None),
        }
        true
    }

    pub(crate) fn deliveries(&self, parked: bool, limit: usize) -> Vec<Delivery> {
        let ids: Box<dyn Iterator<Item = &(Millis, String)>> = if parked {
            Box::new(self.parked.iter())
        } else {
            Box::new(self.due_deliveries.iter())
        };
        ids.take(limit)
            .filter_map(|(_, id)| Delivery::decode(&self.outbox[id].0).ok())
            .collect()
    }

    pub(crate) fn resend_delivery(&mut self, id: &str, now: Millis) -> bool {
        self.now = now;
        match self.outbox.get(id) {
            Some((stored, Err(_))) => {
                let mut d = match Delivery::decode(stored) {
                    Ok(d) => d,
                    Err(_) => return false,
                };
                d.attempts = 0;
                d.parked = false;
                self.set_due(id, d.encode(), Some(now));
                true
            }
            _ => false,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn push_ready(&mut self, id: JobId, ready_position: (u8, u64)) {
        self.woken = true;
        self.ready_by_band[usize::from(ready_position.0)] += 1;
        match self.jobs.get(&id).and_then(|e| e.record.group.clone()) {
            None => {
                self.ready.insert(ready_position, id);
            }
            Some(group) => {
                let cost = self.jobs[&id].record.cost.unwrap_or(1);
                self.groups
                    .entry(group.clone())
                    .or_default()
                    .ready
                    .insert(ready_position, (id, cost));
                self.refresh_group(&group);
            }
        }
    }

    /// Takes the next ready job of `band` (`queue_core::backend` group rules: the lane with
    /// the lowest ticket, the jobs without a group first on a tie), stamping its lane with
    /// a new ticket, if `fits` its cost (the queue's rate limit); else takes nothing.
    fn pop_ready(&mut self, band: u8, fits: impl Fn(u32) -> bool) -> Pop {
        let b = usize::from(band);
        // Bands are served in order, so a job without a group of this band comes first.
        let ungrouped = self
            .ready
            .first_key_value()
            .map(|(p, id)| (*p, *id))
            .filter(|(p, _)| p.0 == band);
        let lane = self.lanes[b].first().cloned();
        let take_ungrouped = match (ungrouped, &lane) {
            (None, None) => return Pop::Empty,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(_), Some((ticket, _))) => {
                queue_core::backend::ungrouped_goes_first(self.ungrouped_ticket[b], *ticket)
            }
        };
        if take_ungrouped {
            let (place, id) = ungrouped.expect("checked");
            let cost = self.jobs.get(&id).and_then(|e| e.record.cost).unwrap_or(1);
            if !fits(cost) {
                return Pop::Blocked;
            }
            self.ready.remove(&place);
            self.tick += 1;
            self.ready_by_band[b] -= 1;
            self.ungrouped_ticket[b] = self.tick;
            return Pop::Job(id, cost);
        }
        let (ticket, group) = lane.expect("checked");
        let state = self.groups.get_mut(&group).expect("a lane's group exists");
        let (&first, &(id, cost)) = state
            .ready
            .range((band, 0)..=(band, u64::MAX))
            .next()
            .expect("a lane has ready jobs");
        if !fits(cost) {
            return Pop::Blocked;
        }
        state.ready.remove(&first);
        let (turn, new_ticket) = weighted_turn(state.turn, state.weight);
        state.turn = turn;
        if new_ticket {
            state.lane[b] = None;
        }
        state.running += 1;
        if let Some(limit) = state.rate {
            state.starts.prune(limit.window_floor(self.now));
            state.starts.push(self.now, cost);
        }
        if new_ticket {
            self.lanes[b].remove(&(ticket, group.clone()));
        }
        self.tick += 1;
        self.ready_by_band[b] -= 1;
        self.refresh_group(&group);
        Pop::Job(id, cost)
    }

    fn remove_ready(&mut self, id: JobId, ready_position: (u8, u64)) {
        let group = self.jobs.get(&id).and_then(|e| e.record.group.clone());
        let removed = match &group {
            None => {
                let here = self.ready.get(&ready_position) == Some(&id);
                if here {
                    self.ready.remove(&ready_position);
                }
                here
            }
            Some(g) => {
                let state = self.groups.get_mut(g);
                let here = state
                    .as_ref()
                    .is_some_and(|s| s.ready.get(&ready_position).map(|r| r.0) == Some(id));
                if here {
                    state.expect("checked").ready.remove(&ready_position);
                    self.refresh_group(g);
                }
                here
            }
        };
        if removed {
            self.ready_by_band[usize::from(ready_position.0)] -= 1;
        }
    }

    /// A running job of `group` stopped: its slot is free again.
    fn release_group_slot(&mut self, group: Option<&str>) {
        if let Some(g) = group
            && let Some(state) = self.groups.get_mut(g)
        {
            state.running = state.running.saturating_sub(1);
            self.refresh_group(g);
        }
    }

    /// Gives `group` a lane in each band where it has ready jobs and admits a start (a new
    /// lane gets the current ticket), takes away the others, and forgets the group when
    /// nothing is left to remember.
    fn refresh_group(&mut self, group: &str) {
        let Some(state) = self.groups.get_mut(group) else {
            return;
        };
        if state.held_until != 0 && state.held_until <= self.now {
            // A hold that has passed is forgotten.
            state.held_until = 0;
        }
        let admits = state.admits(self.now);
        if !admits
            && !state.ready.is_empty()
            && let Some(at) = state.admits_again_at(self.now)
        {
            self.timed_groups.insert((at, group.to_owned()));
        }
        for band in 0..3u8 {
            let b = usize::from(band);
            let wanted = admits && state.has_ready(band);
            match (state.lane[b], wanted) {
                (None, true) => {
                    self.woken = true;
                    state.lane[b] = Some(self.tick);
                    self.lanes[b].insert((self.tick, group.to_owned()));
                }
                (Some(ticket), false) => {
                    state.lane[b] = None;
                    self.lanes[b].remove(&(ticket, group.to_owned()));
                }
                _ => {}
            }
        }
        if state.forgettable() {
            self.groups.remove(group);
        }
    }

    /// True when a job became ready or delayed, or a lane opened, since the last call.
    pub(crate) fn take_woken(&mut self) -> bool {
        std::mem::take(&mut self.woken)
    }

    /// Sets the time of the operation under way.
    pub(crate) fn at(&mut self, now: Millis) -> &mut Self {
        self.now = now;
        self
    }

    /// Groups held back only by time whose time has come get their lanes.
    fn wake_timed_groups(&mut self) {
        while let Some((at, group)) = self.timed_groups.first().cloned() {
            if at > self.now {
                break;
            }
            self.timed_groups.pop_first();
            self.refresh_group(&group);
        }
    }

    /// Sets or removes a group's rate limit (its start log goes with a removed one).
    pub(crate) fn set_group_rate_limit(&mut self, group: &str, limit: Option<RateLimit>) {
        if limit.is_none() && !self.groups.contains_key(group) {
            return;
        }
        let state = self.groups.entry(group.to_owned()).or_default();
        if limit.is_none() {
            state.starts.clear();
            state.held_until = 0;
        }
        state.rate = limit;
        self.refresh_group(group);
    }

    /// Pauses or resumes a group; resuming also lifts a handler's hold on it.
    pub(crate) fn set_group_paused(&mut self, group: &str, paused: bool) {
        if !paused && !self.groups.contains_key(group) {
            return;
        }
        let state = self.groups.entry(group.to_owned()).or_default();
        state.paused = paused;
        if !paused {
            state.held_until = 0;
        }
        self.refresh_group(group);
    }

    /// Sets or removes a group's weight (a removed one ends its turn).
    pub(crate) fn set_group_weight(&mut self, group: &str, weight: Option<u32>) {
        if weight.is_none() && !self.groups.contains_key(group) {
            return;
        }
        let state = self.groups.entry(group.to_owned()).or_default();
        state.weight = weight;
        if weight.is_none() {
            state.turn = 0;
        }
        self.refresh_group(group);
    }

    /// Sets or removes a group's concurrency limit.
    pub(crate) fn set_group_concurrency(&mut self, group: &str, limit: Option<u32>) {
        if limit.is_none() && !self.groups.contains_key(group) {
            return;
        }
        self.groups.entry(group.to_owned()).or_default().concurrency = limit;
        self.refresh_group(group);
    }

    /// One group's counts and settings.
    pub(crate) fn group(&self, group: &str) -> GroupStats {
        let mut stats = GroupStats::new(group);
        if let Some(state) = self.groups.get(group) {
            stats.ready = state.ready.len() as u64;
            stats.running = state.running;
            stats.unfinished = state.unfinished;
            stats.paused = state.paused;
            stats.concurrency = state.concurrency;
            stats.weight = state.weight;
            stats.rate_limit = state.rate;
            stats.held_until = (state.held_until > self.now).then(|| from_millis(state.held_until));
        }
        stats
    }

    /// The groups with unfinished jobs, the `limit` busiest in full.
    pub(crate) fn groups(&self, limit: usize) -> GroupList {
        let mut busy: Vec<(u64, &str)> = self
            .groups
            .iter()
            .filter(|(_, s)| s.unfinished > 0)
            .map(|(g, s)| (s.unfinished, g.as_str()))
            .collect();
        busy.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let mut list = GroupList::default();
        for (i, (n, g)) in busy.into_iter().enumerate() {
            if i < limit {
                list.groups.push(self.group(g));
            } else {
                list.other_groups += 1;
                list.other_unfinished += n;
            }
        }
        list
    }

    /// Moves `group`'s count of unfinished jobs by `change`.
    fn count_unfinished(&mut self, group: &str, change: i64) {
        if change == 0 {
            return;
        }
        if !self.groups.contains_key(group) {
            self.groups.insert(group.to_owned(), GroupState::default());
        }
        let state = self.groups.get_mut(group).expect("inserted above");
        state.unfinished = state.unfinished.saturating_add_signed(change);
        if state.forgettable() {
            self.groups.remove(group);
        }
    }

    /// Applies `event` to job `id`: the record (status and fields, by the rules of core),
    /// the status index, the event, then the job's next ready_position and counters.
    fn transition(
        &mut self,
        id: JobId,
        event: Event,
        input: &EffectInput,
        events: EventSender<'_>,
    ) -> Result<JobStatus> {
        let entry = self.jobs.get_mut(&id).ok_or(Error::NotFound { id })?;
        let from = entry.record.status;
        let listed_before = (entry.listed_ms(), id);
        if let Some(field) = latency_field(&entry.record, event, input.now) {
            self.series.add(input.now, &field, 1);
        }
        let entry = self.jobs.get_mut(&id).expect("found above");
        entry
            .record
            .apply_event(event, input)
            .map_err(|e| Error::InvalidTransition {
                id,
                from: e.from,
                event: e.event,
            })?;
        let to = entry.record.status;
        let change = unfinished_change(Some(from), to);
        if change != 0
            && let Some(group) = entry.record.group.clone()
        {
            self.count_unfinished(&group, change);
        }
        let entry = &self.jobs[&id];
        let key = (entry.created_ms, id);
        let ready_position = entry.ready_position;
        let unique_key = entry.record.unique_key.clone();
        let parent = entry.record.parent;
        let policy = entry.record.policy();
        let waits = entry.record.waits_on_children();
        if entry.record.children.is_some() && from == JobStatus::Queued {
            self.waiting.remove(&key);
        }
        let placement = rules::placement(event);
        match placement {
            Placement::ReadyInPlace | Placement::ReadyAtBack | Placement::Delayed if waits => {
                self.waiting.insert(key);
            }
            Placement::Leased => {}
            Placement::ReadyInPlace => self.push_ready(id, ready_position),
            Placement::ReadyAtBack => {
                let seq = self.next_seq();
                let ready_position = (self.jobs[&id].record.priority.band(), seq);
                self.jobs.get_mut(&id).expect("exists").ready_position = ready_position;
                self.push_ready(id, ready_position);
            }
            Placement::Delayed => {
                let due = input.due.expect("a delayed event carries its due time");
                self.delayed.insert((due, id));
                self.woken = true;
            }
            Placement::Finished => {
                self.finished.insert((input.now, id));
                self.leave_deliveries(id, to, input.now);
                if let Some(key) = &unique_key
                    && self.dedup.get(key) == Some(&id)
                {
                    self.dedup.remove(key);
                }
            }
        }
        let entry = self.jobs.get_mut(&id).expect("exists");
        entry.finished_ms = (placement == Placement::Finished).then_some(input.now);
        let listed_after = (entry.listed_ms(), id);
        if from != to || listed_before != listed_after {
            self.by_status[status_index(from)].remove(&listed_before);
            self.by_status[status_index(to)].insert(listed_after);
        }
        if listed_before != listed_after {
            self.all.remove(&listed_before);
            self.all.insert(listed_after);
        }
        if let Some(counter) = rules::counter(event) {
            bump(&mut self.totals, &mut self.series, input.now, counter);
        }
        emit(
            events,
            id,
            input.now,
            EventKind::Transition {
                from: Some(from),
                to,
            },
        );
        if let Some(parent) = parent {
            if to.is_terminal() && from.is_active() {
                self.child_ended(parent, id, to, policy, events);
            } else if from.is_terminal() && to.is_active() {
                self.child_reopened(parent, id, from, events);
            }
        }
        Ok(to)
    }

    pub(crate) fn enqueue(
        &mut self,
        job: NewJob,
        cfg: &QueueConfig,
        now: Millis,
        events: EventSender<'_>,
    ) -> Result<(JobRecord, bool)> {
        self.now = now;
        cfg.limits.check(&job)?;
        if let Some(id) = job.options.job_id
            && let Some(existing) = self.jobs.get(&id)
        {
            return Ok((shown(&existing.record), false));
        }
        self.check_key_free(&job)?;
        let record = self.insert_job(job, cfg, now, None, ChildPolicy::default(), 0, events);
        Ok((record, true))
    }

    /// Refuses a job whose unique key an active job holds.
    fn check_key_free(&self, job: &NewJob) -> Result<()> {
        if let Some(key) = &job.options.unique_key
            && let Some(holder) = self.dedup.get(key)
        {
            return Err(Error::AlreadyExists {
                unique_key: key.clone(),
                job_id: *holder,
            });
        }
        Ok(())
    }

    /// Checks every job of a flattened flow (limits, ids, unique keys) before any is
    /// created: a flow is created whole or not at all.
    fn check_flow(&self, jobs: &[FlatJob], cfg: &QueueConfig) -> Result<()> {
        for flat in jobs {
            cfg.limits.check(&flat.job)?;
            if let Some(id) = flat.job.options.job_id
                && self.jobs.contains_key(&id)
            {
                return Err(Error::invalid(format!(
                    "job id {id} of the flow is taken by an existing job"
                )));
            }
            self.check_key_free(&flat.job)?;
        }
        Ok(())
    }

    /// Creates a flow (`parent` None) or adds children to `parent`: every job of `jobs`,
    /// parents before their children. Returns the records of the jobs without a parent in
    /// `jobs` (the root, or the new direct children of `parent`).
    pub(crate) fn enqueue_flow(
        &mut self,
        jobs: Vec<FlatJob>,
        parent: Option<JobId>,
        cfg: &QueueConfig,
        now: Millis,
        events: EventSender<'_>,
    ) -> Result<Vec<JobRecord>> {
        self.now = now;
        if parent.is_none()
            && let Some(id) = jobs.first().and_then(|f| f.job.options.job_id)
            && let Some(existing) = self.jobs.get(&id)
        {
            return Ok(vec![shown(&existing.record)]);
        }
        if let Some(p) = parent {
            let entry = self.jobs.get(&p).ok_or(Error::NotFound { id: p })?;
            if !accepts_children(entry.record.status) {
                return Err(Error::invalid(format!(
                    "job {p} is {}: children can be added only while it is queued",
                    entry.record.status
                )));
            }
        }
        self.check_flow(&jobs, cfg)?;
        let added = jobs.iter().filter(|f| f.parent.is_none()).count() as u32;
        let mut ids = Vec::with_capacity(jobs.len());
        let mut out = Vec::new();
        for flat in jobs {
            let up = flat.parent.map(|i| ids[i]).or(parent);
            let record = self.insert_job(
                flat.job,
                cfg,
                now,
                up,
                flat.policy,
                flat.children as u32,
                events,
            );
            ids.push(record.job_id);
            if flat.parent.is_none() {
                out.push(record);
            }
        }
        // Held once its new children are ready: a group whose ready job becomes a parent
        // and that gains a ready child meanwhile keeps its lane (and its turn), as if in
        // one step.
        if let Some(p) = parent {
            self.hold_for_children(p, added);
        }
        Ok(out)
    }

    /// `parent` gets `n` more unfinished children: it waits on them (leaving the ready or
    /// delayed jobs if it was there).
    fn hold_for_children(&mut self, parent: JobId, n: u32) {
        if n == 0 {
            return;
        }
        let entry = self.jobs.get_mut(&parent).expect("checked by the caller");
        let counts = entry
            .record
            .children
            .get_or_insert_with(ChildCounts::default);
        let was_waiting = counts.waiting > 0;
        counts.waiting += n;
        if was_waiting || entry.record.status != JobStatus::Queued {
            return;
        }
        let ready_position = entry.ready_position;
        let due = entry.record.run_at.map(queue_core::backend::to_millis);
        let key = (entry.created_ms, parent);
        self.remove_ready(parent, ready_position);
        if let Some(due) = due {
            self.delayed.remove(&(due, parent));
        }
        self.waiting.insert(key);
    }

    /// Creates one job: its record, indexes and place (waiting when it has children).
    #[allow(clippy::too_many_arguments)]
    fn insert_job(
        &mut self,
        job: NewJob,
        cfg: &QueueConfig,
        now: Millis,
        parent: Option<JobId>,
        policy: ChildPolicy,
        children: u32,
        events: EventSender<'_>,
    ) -> JobRecord {
        let NewJob {
            task,
            payload,
            options,
        } = job;
        let id = options.job_id.unwrap_or_default();
        let priority = options.priority.unwrap_or(cfg.default_priority);
        let delay_ms = options.delay.map(duration_ms).unwrap_or(0);
        let due = (delay_ms > 0).then(|| now + delay_ms);
        let counts = (children > 0).then(|| ChildCounts {
            waiting: children,
            ..ChildCounts::default()
        });
        let record = JobRecord {
            job_id: id,
            task,
            payload,
            unique_key: options.unique_key,
            status: JobStatus::Queued,
            priority,
            progress: 0,
            current_step: None,
            error_message: None,
            retry_count: 0,
            max_retries: options.max_retries.unwrap_or(cfg.max_retries),
            timeout_ms: options.timeout.map(|t| duration_ms(t) as u64),
            created_at: from_millis(now),
            started_at: None,
            completed_at: None,
            run_at: due.map(from_millis),
            metadata: options.metadata,
            result: None,
            worker_id: None,
            cancel_requested: false,
            group: options.group,
            cost: options.cost.filter(|c| *c != 1),
            parent,
            child_policy: parent.and((policy != ChildPolicy::default()).then_some(policy)),
            children: counts,
            attempts: Vec::new(),
        };
        let key = (now, id);
        let mut ready_position = (priority.band(), 0);
        let ready = if children > 0 {
            self.waiting.insert(key);
            false
        } else if let Some(due) = due {
            self.delayed.insert((due, id));
            self.woken = true;
            false
        } else {
            ready_position.1 = self.next_seq();
            true
        };
        self.by_status[status_index(JobStatus::Queued)].insert(key);
        self.all.insert(key);
        if let Some(unique) = &record.unique_key {
            self.by_key.entry(unique.clone()).or_default().insert(key);
            self.dedup.insert(unique.clone(), id);
        }
        if let Some(p) = parent {
            self.kids.entry(p).or_default().insert(key);
        }
        bump(&mut self.totals, &mut self.series, now, "enqueued");
        if let Some(group) = &record.group {
            self.count_unfinished(group, unfinished_change(None, JobStatus::Queued));
        }
        let out = record.clone();
        self.jobs.insert(
            id,
            Box::new(Entry {
                record,
                created_ms: now,
                ready_position,
                lease: None,
                ended: None,
                finished_ms: None,
            }),
        );
        if ready {
            self.push_ready(id, ready_position);
        }
        emit(
            events,
            id,
            now,
            EventKind::Transition {
                from: None,
                to: JobStatus::Queued,
            },
        );
        out
    }

    /// A page of a parent's children, oldest first, after `position`.
    fn children_page(
        &self,
        parent: JobId,
        position: Option<ByCreated>,
        limit: usize,
    ) -> Result<Page> {
        if !self.jobs.contains_key(&parent) {
            return Err(Error::NotFound { id: parent });
        }
        let empty = BTreeSet::new();
        let kids = self.kids.get(&parent).unwrap_or(&empty);
        let iter: Box<dyn Iterator<Item = &ByCreated>> = match position {
            Some(pos) => {
                Box::new(kids.range((std::ops::Bound::Excluded(pos), std::ops::Bound::Unbounded)))
            }
            None => Box::new(kids.iter()),
        };
        Ok(self.page(iter, limit.min(kids.len()), limit, |_| true))
    }

    /// Up to `limit` records from `index` that `keep` keeps, with the cursor after the
    /// last one shown when more follow.
    fn page<'a>(
        &self,
        index: impl Iterator<Item = &'a ByCreated>,
        capacity: usize,
        limit: usize,
        keep: impl Fn(&JobRecord) -> bool,
    ) -> Page {
        let mut jobs = Vec::with_capacity(capacity);
        let mut next_cursor = None;
        let mut last = None;
        for &(at, id) in index {
            let Some(entry) = self.jobs.get(&id) else {
                continue;
            };
            if !keep(&entry.record) {
                continue;
            }
            if jobs.len() == limit {
                let (at, id) = last.expect("limit is at least 1");
                next_cursor = Some(encode_cursor(at, id));
                break;
            }
            jobs.push(shown(&entry.record));
            last = Some((at, id));
        }
        Page { jobs, next_cursor }
    }

    /// The entry of `parent`, when it is still `child`'s parent (`is_parent_of`: a job
    /// created later under a reused id is not).
    fn parent_entry(&mut self, parent: JobId, child: JobId) -> Option<&mut Entry> {
        let child_created = self.jobs[&child].created_ms;
        self.jobs
            .get_mut(&parent)
            .map(|e| &mut **e)
            .filter(|e| is_parent_of(e.created_ms, child_created))
    }

    /// Child `child` of `parent` ended `status`: the parent's counts, then what
    /// `on_child_ended` says (release it, or fail it).
    fn child_ended(
        &mut self,
        parent: JobId,
        child: JobId,
        status: JobStatus,
        policy: ChildPolicy,
        events: EventSender<'_>,
    ) {
        let now = self.now;
        let Some(entry) = self.parent_entry(parent, child) else {
            return; // retention removed the parent
        };
        let counts = entry
            .record
            .children
            .get_or_insert_with(ChildCounts::default);
        counts.waiting = counts.waiting.saturating_sub(1);
        *counts.of(status) += 1;
        match on_child_ended(policy, status, entry.record.status, counts.waiting) {
            ParentAction::Count => {}
            ParentAction::Release => {
                let key = (entry.created_ms, parent);
                let due = entry
                    .record
                    .run_at
                    .map(queue_core::backend::to_millis)
                    .filter(|due| *due > now);
                self.waiting.remove(&key);
                match due {
                    Some(due) => {
                        self.delayed.insert((due, parent));
                        self.woken = true;
                    }
                    None => {
                        let seq = self.next_seq();
                        let entry = self.jobs.get_mut(&parent).expect("exists");
                        entry.ready_position = (entry.record.priority.band(), seq);
                        let position = entry.ready_position;
                        self.push_ready(parent, position);
                        self.woken = true;
                    }
                }
            }
            ParentAction::Fail => {
                let input = EffectInput {
                    now,
                    error: Some(child_failed_message(child, status)),
                    ..EffectInput::default()
                };
                self.transition(parent, Event::ChildFailed, &input, events)
                    .expect("a queued parent accepts child_failed");
            }
        }
    }

    /// Child `child` of `parent`, which had ended `was`, is queued again (a manual retry):
    /// the parent's counts, then what `on_child_reopened` says.
    fn child_reopened(
        &mut self,
        parent: JobId,
        child: JobId,
        was: JobStatus,
        events: EventSender<'_>,
    ) {
        let Some(entry) = self.parent_entry(parent, child) else {
            return;
        };
        let counts = entry
            .record
            .children
            .get_or_insert_with(ChildCounts::default);
        let count = counts.of(was);
        *count = count.saturating_sub(1);
        let action = on_child_reopened(entry.record.status, entry.record.started_at.is_some());
        match action {
            Reopen::Count => entry.record.children.as_mut().expect("set").waiting += 1,
            Reopen::Hold => self.hold_for_children(parent, 1),
            Reopen::Requeue => {
                entry.record.children.as_mut().expect("set").waiting += 1;
                // The parent cannot come back while another job holds its unique key: it
                // stays failed, and its counts say the child runs again.
                let now = self.now;
                let _ = self.reopen(parent, None, now, events);
            }
        }
    }

    pub(crate) fn get(&self, id: JobId) -> Result<JobRecord> {
        self.jobs
            .get(&id)
            .map(|e| shown(&e.record))
            .ok_or(Error::NotFound { id })
    }

    /// The lease `entry` holds, answered to a claim sent at `sent` and applied at `now`.
    fn lease_of(entry: &Entry, sent: tokio::time::Instant, now: Millis) -> Lease {
        let held = entry.lease.as_ref().expect("leased");
        // When the lease was last set: its expiry less its length.
        let started = held.expires_ms - held.lease_ms;
        Lease {
            job: entry.record.clone(),
            token: held.token.clone(),
            expires_at: from_millis(held.expires_ms),
            claimed_at: Lease::claimed_at_from(sent, now, started),
        }
    }

    /// Promotes due delayed jobs, then leases up to `req.size()` ready jobs. A request seen
    /// before (same or older id of the same worker) answers the leases it took that are
    /// still held instead (oldest first, at most `req.size()`), read from its own entry of
    /// `claimed`; one that took nothing claims as new. A job a cancel's cascade is about to
    /// reach is cancelled instead of started.
    pub(crate) fn claim(
        &mut self,
        req: &ClaimRequest,
        now: Millis,
        events: EventSender<'_>,
    ) -> Vec<Lease> {
        let worker = req.worker.as_str();
        let size = req.size();
        let sent = tokio::time::Instant::now();
        match self.last_claim.get(worker) {
            Some(last) if req.id <= *last => {
                let key = (worker.to_owned(), req.id);
                let mut replay: Vec<Lease> = self
                    .claimed
                    .get(&key)
                    .into_iter()
                    .flatten()
                    .filter_map(|id| self.jobs.get(id))
                    .filter(|e| {
                        e.lease
                            .as_ref()
                            .is_some_and(|h| h.claim == req.id && h.expires_ms > now)
                            && e.record.worker_id.as_deref() == Some(worker)
                    })
                    .map(|e| Self::lease_of(e, sent, now))
                    .collect();
                if !replay.is_empty() {
                    // Oldest first, at most what the request asked for.
                    replay.sort_by_key(|l| (l.job.started_at, l.job.job_id));
                    replay.truncate(size);
                    return replay;
                }
            }
            _ => {
                self.last_claim.insert(worker.to_owned(), req.id);
            }
        }
        while let Some(&(due, id)) = self.delayed.first() {
            if due > now {
                break;
            }
            self.delayed.pop_first();
            let seq = self.next_seq();
            let Some(entry) = self.jobs.get_mut(&id) else {
                continue;
            };
            let ready_position = (entry.record.priority.band(), seq);
            entry.ready_position = ready_position;
            self.push_ready(id, ready_position);
        }
        self.now = now;
        self.wake_timed_groups();
        if self.paused || now < self.held_until {
            return Vec::new();
        }
        let mut max = size;
        self.rate_blocked = false;
        let mut used = 0;
        if let Some(limit) = self.rate {
            self.starts.prune(limit.window_floor(now));
            used = self.starts.used;
            max = max.min(limit.room(used as usize));
            if max == 0 {
                self.rate_blocked = true;
                return Vec::new();
            }
        }
        let lease_ms = duration_ms(req.lease);
        let input = EffectInput {
            now,
            worker: Some(worker.to_owned()),
            ..EffectInput::default()
        };
        let mut out = Vec::with_capacity(max.min(self.ready_by_band.iter().sum::<u64>() as usize));
        let mut band = 0u8;
        while out.len() < max && band < 3 {
            let rate = self.rate;
            let id = match self.pop_ready(band, |cost| rate.is_none_or(|l| l.admits(used, cost))) {
                Pop::Job(id, cost) => {
                    if rate.is_some() {
                        used += u64::from(cost);
                        self.starts.push(now, cost);
                    }
                    id
                }
                Pop::Empty => {
                    band += 1;
                    continue;
                }
                Pop::Blocked => {
                    self.rate_blocked = true;
                    break;
                }
            };
            if self.doomed(id) {
                self.cancel_popped(id, now, events);
                continue;
            }
            if self.transition(id, Event::Start, &input, events).is_err() {
                continue;
            }
            let expires_ms = now + lease_ms;
            let entry = self.jobs.get_mut(&id).expect("started");
            entry.lease = Some(ActiveLease {
                token: LeaseToken::generate(),
                expires_ms,
                lease_ms,
                claim: req.id,
            });
            self.active.insert((expires_ms, id));
            self.claimed
                .entry((worker.to_owned(), req.id))
                .or_default()
                .push(id);
            out.push(Self::lease_of(&self.jobs[&id], sent, now));
        }
        out
    }

    /// Forgets the lease `held` of job `id` in its claim's entry of `claimed`.
    fn forget_claimed(&mut self, id: JobId, held: &ActiveLease) {
        let worker = self.jobs[&id].record.worker_id.clone().unwrap_or_default();
        let key = (worker, held.claim);
        if let Some(ids) = self.claimed.get_mut(&key) {
            ids.retain(|j| *j != id);
            if ids.is_empty() {
                self.claimed.remove(&key);
            }
        }
    }

    /// When a fetch that took nothing at `now` should look again: the earliest due time of
    /// a delayed job, or when a hold ends or the rate limit next allows a start.
    pub(crate) fn next_wake(&self, now: Millis) -> Option<Millis> {
        let rate_next = match (self.rate, self.starts.starts.front()) {
            _ if now < self.held_until => Some(self.held_until),
            (Some(limit), Some((oldest, _))) if self.rate_blocked => {
                Some(limit.next_start(*oldest))
            }
            _ => None,
        };
        let group_next = self.timed_groups.first().map(|(at, _)| *at);
        [self.next_due(), rate_next, group_next]
            .into_iter()
            .flatten()
            .min()
    }

    /// Sets or removes the rate limit (the start log and a handler's hold go with a removed
    /// one).
    pub(crate) fn set_rate_limit(&mut self, limit: Option<RateLimit>) {
        if limit.is_none() {
            self.starts.clear();
            self.held_until = 0;
        }
        self.rate = limit;
    }

    /// The earliest due time of a delayed job.
    pub(crate) fn next_due(&self) -> Option<Millis> {
        self.delayed.first().map(|(due, _)| *due)
    }

    /// True when `lease` is current and unexpired.
    fn holds(&self, lease: &LeaseRef, now: Millis) -> bool {
        self.jobs.get(&lease.job_id).is_some_and(|e| {
            e.lease
                .as_ref()
                .is_some_and(|h| h.token == lease.token && h.expires_ms > now)
        })
    }

    fn extend(&mut self, id: JobId, now: Millis, lease_ms: Option<Millis>) {
        let entry = self.jobs.get_mut(&id).expect("held");
        let held = entry.lease.as_mut().expect("held");
        self.active.remove(&(held.expires_ms, id));
        held.expires_ms = now + lease_ms.unwrap_or(held.lease_ms);
        self.active.insert((held.expires_ms, id));
    }

    pub(crate) fn heartbeat(
        &mut self,
        beat: &WorkerBeat,
        leases: &[LeaseRef],
        now: Millis,
    ) -> HeartbeatReply {
        // Workers silent for three of their intervals are lost: their claim history goes,
        // they stay listed as lost for a while, then are forgotten (`worker_listing`).
        let dead: Vec<(String, Option<bool>)> = self
            .workers
            .iter()
            .filter(|(_, (b, seen))| seen + 3 * duration_ms(b.interval) < now)
            .map(|(w, (b, seen))| {
                (
                    w.clone(),
                    worker_listing(seen + 3 * duration_ms(b.interval), now),
                )
            })
            .collect();
        for (w, listed) in dead {
            self.last_claim.remove(&w);
            if listed.is_none() {
                self.workers.remove(&w);
            }
        }
        self.workers
            .insert(beat.worker.as_str().to_owned(), (beat.clone(), now));
        let mut reply = HeartbeatReply::default();
        for lease in leases {
            if self.holds(lease, now) {
                self.extend(lease.job_id, now, Some(duration_ms(beat.lease)));
                if self.jobs[&lease.job_id].record.cancel_requested {
                    reply.cancel.push(lease.clone());
                }
            } else {
                reply.lost.push(lease.clone());
            }
        }
        let gauges = queue_core::series::gauges(&self.stats(now));
        self.series.sample(now, &gauges);
        reply
    }

    pub(crate) fn progress(
        &mut self,
        lease: &LeaseRef,
        progress: u8,
        step_name: Option<&str>,
        now: Millis,
        events: EventSender<'_>,
    ) -> Result<ProgressReply> {
        queue_core::backend::check_progress(progress)?;
        if !self.holds(lease, now) {
            return Err(Error::LeaseLost { id: lease.job_id });
        }
        self.extend(lease.job_id, now, None);
        let r = &mut self.jobs.get_mut(&lease.job_id).expect("held").record;
        r.progress = r.progress.max(progress);
        if let Some(s) = Limits::bound_step(step_name.map(str::to_owned)) {
            // An empty step name clears the step.
            r.current_step = (!s.is_empty()).then_some(s);
        }
        let status = ProgressReply {
            cancel_requested: r.cancel_requested,
        };
        let kind = EventKind::Progress {
            progress: r.progress,
            step: r.current_step.clone(),
        };
        emit(events, lease.job_id, now, kind);
        Ok(status)
    }

    /// Ends a held attempt with `outcome`, as `rules::settle` decides. A finish sent again
    /// after it was applied answers the status it produced.
    pub(crate) fn finish(
        &mut self,
        lease: &LeaseRef,
        outcome: Outcome,
        cfg: &QueueConfig,
        now: Millis,
        events: EventSender<'_>,
    ) -> Result<JobStatus> {
        self.now = now;
        let outcome = cfg.limits.bound_outcome(outcome);
        let id = lease.job_id;
        if !self.holds(lease, now) {
            return match self.jobs.get(&id).and_then(|e| e.ended.as_ref()) {
                Some((token, status)) if *token == lease.token => Ok(*status),
                _ => Err(Error::LeaseLost { id }),
            };
        }
        let entry = self.jobs.get_mut(&id).expect("held");
        let held = entry.lease.take().expect("held");
        let group = entry.record.group.clone();
        self.forget_claimed(id, &held);
        self.active.remove(&(held.expires_ms, id));
        self.release_group_slot(group.as_deref());
        let entry = self.jobs.get_mut(&id).expect("held");
        let event = rules::settle(outcome.kind(), AttemptFacts::of(&entry.record));
        let holds_queue = rules::holds_queue(outcome.kind());
        let mut input = EffectInput {
            now,
            ..EffectInput::default()
        };
        match outcome {
            Outcome::Completed { result } => input.result = result,
            Outcome::Partial { result, error } => {
                input.result = result;
                input.error = Some(error);
            }
            Outcome::Retry { error, delay } => {
                input.error = Some(error);
                input.due = Some(cfg.limits.due(now, delay));
            }
            Outcome::Failed { error } => input.error = Some(error),
            Outcome::Snoozed { delay }
            | Outcome::RateLimited {
                retry_after: delay, ..
            } => input.due = Some(cfg.limits.due(now, delay)),
            Outcome::Cancelled | Outcome::Released => {}
        }
        if holds_queue {
            // Whatever the job became, the limit it hit stands: for its group when it has
            // one, else for the whole queue.
            let until = input.due.unwrap_or(now);
            match &group {
                Some(g) => {
                    let state = self.groups.entry(g.clone()).or_default();
                    state.held_until = state.held_until.max(until);
                    self.refresh_group(g);
                }
                None => self.held_until = self.held_until.max(until),
            }
        }
        let status = self.transition(id, event, &input, events)?;
        self.jobs.get_mut(&id).expect("exists").ended = Some((held.token, status));
        Ok(status)
    }

    pub(crate) fn reap(
        &mut self,
        limit: usize,
        now: Millis,
        events: EventSender<'_>,
    ) -> Vec<JobId> {
        self.now = now;
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(&(expires, id)) = self.active.first() else {
                break;
            };
            if expires > now {
                break;
            }
            self.active.pop_first();
            let held = self
                .jobs
                .get_mut(&id)
                .expect("active jobs exist")
                .lease
                .take();
            if let Some(held) = held {
                self.forget_claimed(id, &held);
            }
            let group = self.jobs[&id].record.group.clone();
            self.release_group_slot(group.as_deref());
            let entry = &self.jobs[&id];
            let facts = AttemptFacts::of(&entry.record);
            let worker = entry.record.worker_id.clone().unwrap_or_default();
            let input = EffectInput {
                now,
                error: Some(rules::lease_expired_message(&worker, facts.retries_left)),
                ..EffectInput::default()
            };
            bump(&mut self.totals, &mut self.series, now, "recovered");
            let event = rules::on_lease_expired(facts);
            self.transition(id, event, &input, events)
                .expect("a processing job accepts what its expired lease becomes");
            out.push(id);
        }
        out
    }

    pub(crate) fn cancel(
        &mut self,
        id: JobId,
        now: Millis,
        events: EventSender<'_>,
    ) -> Result<queue_core::CancelOutcome> {
        self.now = now;
        let entry = self.jobs.get_mut(&id).ok_or(Error::NotFound { id })?;
        let r = &entry.record;
        match rules::on_cancel(r.status, r.cancel_requested) {
            CancelAction::Cancel => {
                let ready_position = entry.ready_position;
                let due = r.run_at.map(queue_core::backend::to_millis);
                self.remove_ready(id, ready_position);
                if let Some(due) = due {
                    self.delayed.remove(&(due, id));
                }
                let input = EffectInput {
                    now,
                    ..EffectInput::default()
                };
                self.transition(id, Event::Cancel, &input, events)?;
                self.start_cascade(id);
                Ok(queue_core::CancelOutcome::Cancelled)
            }
            CancelAction::Request => {
                entry.record.cancel_requested = true;
                emit(events, id, now, EventKind::CancelRequested);
                Ok(queue_core::CancelOutcome::Requested)
            }
            CancelAction::AlreadyRequested => Ok(queue_core::CancelOutcome::Requested),
            CancelAction::Refuse => Err(Error::InvalidTransition {
                id,
                from: r.status,
                event: Event::Cancel,
            }),
        }
    }

    /// The running jobs whose cancel a cascade requested since the last call (the caller
    /// tells their holders).
    pub(crate) fn take_cancel_requests(&mut self) -> Vec<JobId> {
        std::mem::take(&mut self.cancel_requested)
    }

    pub(crate) fn retry(
        &mut self,
        id: JobId,
        priority: Option<Priority>,
        now: Millis,
        events: EventSender<'_>,
    ) -> Result<JobRecord> {
        self.now = now;
        self.reopen(id, priority, now, events)?;
        Ok(shown(&self.jobs[&id].record))
    }

    /// A manual retry: checks, then `Event::ManualRetry` (a parent with unfinished
    /// children waits on them again).
    fn reopen(
        &mut self,
        id: JobId,
        priority: Option<Priority>,
        now: Millis,
        events: EventSender<'_>,
    ) -> Result<()> {
        let entry = self.jobs.get(&id).ok_or(Error::NotFound { id })?;
        queue_core::backend::apply(entry.record.status, Event::ManualRetry).map_err(|e| {
            Error::InvalidTransition {
                id,
                from: e.from,
                event: e.event,
            }
        })?;
        if let Some(key) = &entry.record.unique_key
            && let Some(holder) = self.dedup.get(key)
            && *holder != id
        {
            return Err(Error::AlreadyExists {
                unique_key: key.clone(),
                job_id: *holder,
            });
        }
        let completed = entry.finished_ms;
        let entry = self.jobs.get_mut(&id).expect("checked");
        if let Some(p) = priority {
            entry.record.priority = p;
        }
        if let Some(key) = entry.record.unique_key.clone() {
            self.dedup.insert(key, id);
        }
        if let Some(at) = completed {
            self.finished.remove(&(at, id));
        }
        let input = EffectInput {
            now,
            ..EffectInput::default()
        };
        self.transition(id, Event::ManualRetry, &input, events)?;
        Ok(())
    }

    pub(crate) fn list(&self, query: &queue_core::ListQuery) -> Result<Page> {
        let position = query.position()?;
        if let Some(parent) = query.parent {
            return self.children_page(parent, position, query.limit);
        }
        let empty = BTreeSet::new();
        let index = match (&query.unique_key, query.status) {
            _ if query.waiting_on_children => &self.waiting,
            (Some(key), _) => self.by_key.get(key).unwrap_or(&empty),
            (None, Some(status)) => &self.by_status[status_index(status)],
            (None, None) => &self.all,
        };
        let iter: Box<dyn Iterator<Item = &ByCreated>> = match position {
            Some(pos) => Box::new(index.range(..pos).rev()),
            None => Box::new(index.iter().rev()),
        };
        let capacity = query.limit.min(index.len());
        Ok(self.page(iter, capacity, query.limit, |record| {
            query.status.is_none_or(|s| s == record.status)
                && query
                    .unique_key
                    .as_ref()
                    .is_none_or(|k| record.unique_key.as_ref() == Some(k))
        }))
    }

    /// Pauses (`true`) or resumes the queue; resuming also lifts a handler's hold.
    pub(crate) fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
        if !paused {
            self.held_until = 0;
        }
    }

    pub(crate) fn stats(&self, now: Millis) -> QueueStats {
        let count = |s: JobStatus| self.by_status[status_index(s)].len() as u64;
        QueueStats {
            total: self.all.len() as u64,
            queued: count(JobStatus::Queued),
            processing: count(JobStatus::Processing),
            completed: count(JobStatus::Completed),
            failed: count(JobStatus::Failed),
            partial: count(JobStatus::Partial),
            cancelled: count(JobStatus::Cancelled),
            scheduled: self.delayed.len() as u64,
            waiting_on_children: self.waiting.len() as u64,
            active_workers: self.live_workers(now).count() as u64,
            depth: Priority::ALL
                .into_iter()
                .map(|p| (p, self.ready_by_band[usize::from(p.band())]))
                .collect(),
            totals: self.totals.clone(),
            paused: self.paused,
            rate_limit: self.rate,
            held_until: (self.held_until > now).then(|| from_millis(self.held_until)),
        }
    }

    fn live_workers(&self, now: Millis) -> impl Iterator<Item = &(WorkerBeat, Millis)> {
        self.workers
            .values()
            .filter(move |(beat, seen)| *seen + 3 * duration_ms(beat.interval) >= now)
    }

    pub(crate) fn workers(&self, now: Millis) -> Vec<WorkerInfo> {
        let mut out: Vec<WorkerInfo> = self
            .workers
            .values()
            .filter_map(|(beat, seen)| {
                let lost = worker_listing(seen + 3 * duration_ms(beat.interval), now)?;
                Some((beat, seen, lost))
            })
            .map(|(beat, seen, lost)| {
                let mut jobs: Vec<JobId> = self
                    .active
                    .iter()
                    .filter(|(_, id)| {
                        self.jobs[id].record.worker_id.as_deref() == Some(beat.worker.as_str())
                    })
                    .map(|(_, id)| *id)
                    .collect();
                jobs.sort();
                WorkerInfo {
                    worker_id: beat.worker.as_str().to_owned(),
                    host: beat.host.clone(),
                    pid: beat.pid,
                    concurrency: beat.concurrency,
                    started_at: beat.started_at,
                    last_seen: from_millis(*seen),
                    jobs,
                    version: beat.version.clone(),
                    tasks: beat.tasks.clone(),
                    lost,
                }
            })
            .collect();
        out.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        out
    }

    pub(crate) fn deregister(&mut self, worker: &str) {
        self.workers.remove(worker);
        self.last_claim.remove(worker);
    }

    /// The status of the job `id` names as its parent, when that job is its parent.
    fn parent_status(&self, id: JobId) -> Option<JobStatus> {
        let entry = &self.jobs[&id];
        entry
            .record
            .parent
            .and_then(|p| self.jobs.get(&p))
            .filter(|p| is_parent_of(p.created_ms, entry.created_ms))
            .map(|p| p.record.status)
    }

    /// Deletes a finished record on request, as [`queue_core::backend::on_delete`] decides.
    pub(crate) fn delete(&mut self, id: JobId) -> Result<JobRecord> {
        let entry = self.jobs.get(&id).ok_or(Error::NotFound { id })?;
        let decision = on_delete(entry.record.status, self.parent_status(id));
        if let Some(reason) = decision.refusal() {
            return Err(Error::NotDeletable {
                id,
                reason: reason.into(),
            });
        }
        let record = shown(&entry.record);
        self.remove(id);
        Ok(record)
    }

    /// Removes a finished record and every index entry naming it.
    fn remove(&mut self, id: JobId) {
        let entry = self.jobs.remove(&id).expect("checked");
        if let Some(finished) = entry.finished_ms {
            self.finished.remove(&(finished, id));
        }

        let key = (entry.created_ms, id);
        let listed = (entry.listed_ms(), id);
        self.kids.remove(&id);
        if let Some(parent) = entry.record.parent
            && let Some(kids) = self.kids.get_mut(&parent)
        {
            kids.remove(&key);
        }
        self.all.remove(&listed);
        self.by_status[status_index(entry.record.status)].remove(&listed);
        if let Some(unique) = &entry.record.unique_key {
            if let Some(set) = self.by_key.get_mut(unique) {
                set.remove(&key);
                if set.is_empty() {
                    self.by_key.remove(unique);
                }
            }
            if self.dedup.get(unique) == Some(&id) {
                self.dedup.remove(unique);
            }
        }
    }

    /// Deletes up to `limit` finished records whose completion is at or before `cutoff`; a
    /// child whose parent is unfinished is kept, its retention started again at `now`.
    /// Parked webhook deliveries parked at or before `cutoff` go too (up to `limit`).
    pub(crate) fn sweep(&mut self, limit: usize, cutoff: Millis, now: Millis) -> usize {
        let old: Vec<String> = self
            .parked
            .iter()
            .take_while(|(at, _)| *at <= cutoff)
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect();
        for id in old {
            self.remove_delivery(&id);
        }
        let mut removed = 0;
        let mut kept = Vec::new();
        while removed < limit {
            let Some(&(finished, id)) = self.finished.first() else {
                break;
            };
            if finished > cutoff {
                break;
            }
            self.finished.pop_first();
            // Only a finished record is ever deleted (the index cannot say otherwise,
            // but the rule is the record's, not the index's).
            if !self
                .jobs
                .get(&id)
                .is_some_and(|e| e.record.status.is_terminal())
            {
                continue;
            }
            if retention_keeps_child(self.parent_status(id)) {
                kept.push(id);
                continue;
            }
            self.remove(id);
            removed += 1;
        }
        for id in kept {
            self.finished.insert((now, id));
            let entry = self.jobs.get_mut(&id).expect("kept");
            let before = (entry.listed_ms(), id);
            entry.finished_ms = Some(now);
            let after = (entry.listed_ms(), id);
            let status = status_index(entry.record.status);
            for index in [&mut self.all, &mut self.by_status[status]] {
                index.remove(&before);
                index.insert(after);
            }
        }
        removed
    }
}
