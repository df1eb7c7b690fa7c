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
#[derive(Debug)]
pub struct Model {
    config: QueueConfig,
    jobs: Vec<Job>,
    next_place: u64,
    next_token: u64,
    totals: LifetimeTotals,
    workers: BTreeMap<String, (WorkerBeat, Millis)>,
    last_claim: BTreeMap<String, ClaimId>,
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
    /// Raised by every start.
    tick: u64,
    /// The ticket of the last start of a job without a group, per band.
    ungrouped_ticket: [u64; 3],
    /// Per parent, the final statuses of its children that retention deleted (they still
    /// count).
    swept_children: BTreeMap<JobId, Vec<JobStatus>>,
    /// Interval schedules by name.
    schedules: BTreeMap<String, ModelSchedule>,
}

/// An interval schedule as the model keeps it (cron arithmetic is the conformance cases'
/// and the unit tests' business; the model checks how schedules interleave with jobs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSchedule {
    /// Its interval.
    pub every_ms: Millis,
    /// Ticks are `anchor + k * every_ms`, k >= 1.
    pub anchor: Millis,
    /// Its next tick (`None` while paused).
    pub next: Option<Millis>,
    /// Paused.
    pub paused: bool,
    /// 0 skip, 1 once, 2 each of the latest 2.
    pub policy: u8,
    /// The last tick that ran.
    pub last_tick: Option<Millis>,
    /// Ticks that ran.
    pub ticks_run: u64,
    /// Missed ticks dropped.
    pub ticks_skipped: u64,
}

impl ModelSchedule {
    /// The first tick after `t`.
    fn after(&self, t: Millis) -> Millis {
        let mut k = (t - self.anchor).div_euclid(self.every_ms) + 1;
        if k < 1 {
            k = 1;
        }
        self.anchor + k * self.every_ms
    }
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
            jobs: Vec::new(),
            next_place: 0,
            next_token: 0,
            totals: LifetimeTotals::default(),
            workers: BTreeMap::new(),
            last_claim: BTreeMap::new(),
            paused: false,
            rate: None,
            starts: Vec::new(),
            held_until: 0,
            group_settings: BTreeMap::new(),
            now: 0,
            lanes: BTreeMap::new(),
            tick: 0,
            ungrouped_ticket: [0; 3],
            swept_children: BTreeMap::new(),
            schedules: BTreeMap::new(),
        }
    }

    /// Whether the job at `c` is a child of the job at `p`: it names it, and was created no
    /// earlier (a job created later under a reused id is not the parent).
    fn is_child_of(&self, c: usize, p: usize) -> bool {
        let (child, parent) = (&self.jobs[c].record, &self.jobs[p].record);
        child.parent == Some(parent.job_id) && child.created_at >= parent.created_at
    }

    /// The children of the job at `p`, oldest first.
    fn children_of(&self, p: usize) -> Vec<usize> {
        let mut kids: Vec<usize> = (0..self.jobs.len())
            .filter(|c| self.is_child_of(*c, p))
            .collect();
        kids.sort_by_key(|c| (self.jobs[*c].record.created_at, self.jobs[*c].record.job_id));
        kids
    }

    /// The parent of the job at `c`, when it is still there.
    fn parent_of(&self, c: usize) -> Option<usize> {
        (0..self.jobs.len()).find(|p| self.is_child_of(c, *p))
    }

    /// The child counts of the job at `p`: its children now, and those retention deleted.
    fn counts(&self, p: usize) -> queue_core::ChildCounts {
        let mut counts = queue_core::ChildCounts::default();
        let swept = self
            .swept_children
            .get(&self.jobs[p].record.job_id)
            .into_iter()
            .flatten()
            .copied();
        for status in self
            .children_of(p)
            .into_iter()
            .map(|c| self.jobs[c].record.status)
            .chain(swept)
        {
            match status {
                JobStatus::Queued | JobStatus::Processing => counts.waiting += 1,
                JobStatus::Completed => counts.completed += 1,
                JobStatus::Failed => counts.failed += 1,
                JobStatus::Partial => counts.partial += 1,
                JobStatus::Cancelled => counts.cancelled += 1,
            }
        }
        counts
    }

    /// The job at `i` is queued and waits on an unfinished child.
    fn waits(&self, i: usize) -> bool {
        let job = &self.jobs[i];
        job.is_parent
            && job.record.status == JobStatus::Queued
            && self
                .children_of(i)
                .into_iter()
                .any(|c| self.jobs[c].record.status.is_active())
    }

    /// The job at `i` as a reader sees it: a parent with its counts, and while it waits (or
    /// has not run) the share of its children that ended as its progress.
    fn view(&self, i: usize) -> JobRecord {
        let job = &self.jobs[i];
        let mut r = job.record.clone();
        if job.is_parent {
            let counts = self.counts(i);
            let total = counts.waiting
                + counts.completed
                + counts.failed
                + counts.partial
                + counts.cancelled;
            if r.status == JobStatus::Queued && (counts.waiting > 0 || r.started_at.is_none()) {
                r.progress = if total == 0 {
                    0
                } else {
                    (u64::from(total - counts.waiting) * 100 / u64::from(total)).min(99) as u8
                };
            }
            r.children = Some(counts);
        }
        r
    }

    /// The job at `c` just ended (`status`): its parent, when it waits, fails at once if the
    /// child failed (failed or cancelled) and its policy is to fail the parent, else it is
    /// released once no child is unfinished (at the back of its priority, or at its due
    /// time).
    fn child_ended(&mut self, c: usize, status: JobStatus, now: Millis) {
        let Some(p) = self.parent_of(c) else {
            return;
        };
        if self.jobs[p].record.status != JobStatus::Queued {
            return;
        }
        let policy = self.jobs[c].record.child_policy.unwrap_or_default();
        if policy == queue_core::ChildPolicy::FailParent
            && matches!(status, JobStatus::Failed | JobStatus::Cancelled)
        {
            let child = self.jobs[c].record.job_id;
            self.jobs[p].record.error_message = Some(format!("child {child} ended {status}"));
            self.jobs[p].due = None;
            self.terminal(p, JobStatus::Failed, now);
        } else if !self.waits(p) {
            match self.jobs[p].due {
                Some(due) if due > now => {}
                _ => {
                    let place = self.place();
                    self.jobs[p].due = None;
                    self.jobs[p].place = place;
                }
            }
        }
    }

    /// The job at `c` was retried by hand: a parent that failed because of a child without
    /// running is retried too (unless another job holds its unique key); a queued parent
    /// waits for it again by itself.
    fn child_reopened(&mut self, c: usize, now: Millis) {
        let Some(p) = self.parent_of(c) else {
            return;
        };
        let r = &self.jobs[p].record;
        if r.status == JobStatus::Failed && r.started_at.is_none() {
            let _ = self.retry(r.job_id, None, now);
        }
    }

    /// Creates a flow (`target` None: `jobs[0]` is its root) or adds children to `target`,
    /// all or nothing.
    pub fn enqueue_flow(
        &mut self,
        jobs: Vec<queue_core::backend::FlatJob>,
        target: Option<JobId>,
        now: Millis,
    ) -> Result<Vec<JobRecord>> {
        self.now = now;
        match target {
            None => {
                if let Some(i) = jobs
                    .first()
                    .and_then(|f| f.job.options.job_id)
                    .and_then(|id| self.jobs.iter().position(|j| j.record.job_id == id))
                {
                    return Ok(vec![self.view(i)]);
                }
            }
            Some(t) => {
                let job = self.find(t).ok_or_else(|| not_found(t))?;
                if job.record.status != JobStatus::Queued {
                    return Err(Error::invalid(
                        "children can be added only while it is queued",
                    ));
                }
            }
        }
        for flat in &jobs {
            self.config.limits.check(&flat.job)?;
            if let Some(id) = flat.job.options.job_id
                && self.find(id).is_some()
            {
                return Err(Error::invalid(format!("job id {id} is taken")));
            }
            if let Some(key) = &flat.job.options.unique_key
                && let Some(holder) = self.holder(key)
            {
                return Err(Error::AlreadyExists {
                    unique_key: key.clone(),
                    job_id: holder,
                });
            }
        }
        if let Some(t) = target
            && !jobs.is_empty()
        {
            self.find_mut(t).expect("checked").is_parent = true;
        }
        let mut ids = Vec::new();
        let mut top = Vec::new();
        for flat in jobs {
            let parent = flat.parent.map(|i| ids[i]).or(target);
            let mut record = self.enqueue(flat.job, now)?;
            let i = self.jobs.len() - 1;
            record.parent = parent;
            record.child_policy = parent
                .and((flat.policy != queue_core::ChildPolicy::default()).then_some(flat.policy));
            self.jobs[i].record.parent = record.parent;
            self.jobs[i].record.child_policy = record.child_policy;
            self.jobs[i].is_parent = flat.children > 0;
            ids.push(record.job_id);
            if flat.parent.is_none() {
                top.push(i);
            }
        }
        self.refresh_lanes();
        Ok(top.into_iter().map(|i| self.view(i)).collect())
    }

    /// A parent's children, oldest first.
    pub fn children(&self, id: JobId) -> Result<Vec<JobRecord>> {
        let p = self
            .jobs
            .iter()
            .position(|j| j.record.job_id == id)
            .ok_or_else(|| not_found(id))?;
        Ok(self
            .children_of(p)
            .into_iter()
            .map(|c| self.view(c))
            .collect())
    }

    /// Pauses or resumes a group; resuming lifts a handler's hold on it.
    pub fn set_group_paused(&mut self, group: &str, paused: bool, now: Millis) {
        self.now = now;
        let set = self.group_settings.entry(group.to_owned()).or_default();
        set.paused = paused;
        if !paused {
            set.held_until = 0;
        }
        self.refresh_lanes();
    }

    /// Sets or removes a group's concurrency limit.
    pub fn set_group_concurrency(&mut self, group: &str, limit: Option<u32>, now: Millis) {
        self.now = now;
        self.group_settings
            .entry(group.to_owned())
            .or_default()
            .concurrency = limit;
        self.refresh_lanes();
    }

    /// Sets or removes a group's weight (a removed one ends its turn).
    pub fn set_group_weight(&mut self, group: &str, weight: Option<u32>, now: Millis) {
        self.now = now;
        let set = self.group_settings.entry(group.to_owned()).or_default();
        set.weight = weight;
        if weight.is_none() {
            set.turn = 0;
        }
        self.refresh_lanes();
    }

    /// Sets or removes a group's rate limit (a removed one forgets the starts and lifts a
    /// handler's hold).
    pub fn set_group_rate_limit(
        &mut self,
        group: &str,
        limit: Option<queue_core::RateLimit>,
        now: Millis,
    ) {
        self.now = now;
        let set = self.group_settings.entry(group.to_owned()).or_default();
        set.rate = limit;
        if limit.is_none() {
            set.starts.clear();
            set.held_until = 0;
        }
        self.refresh_lanes();
    }

    fn ready_in(&self, group: Option<&str>, band: u8) -> impl Iterator<Item = &Job> {
        self.jobs.iter().enumerate().filter_map(move |(i, j)| {
            (j.record.status == JobStatus::Queued
                && j.due.is_none()
                && j.record.group.as_deref() == group
                && j.record.priority.band() == band
                && !self.waits(i))
            .then_some(j)
        })
    }

    fn running_in(&self, group: &str) -> u64 {
        self.jobs
            .iter()
            .filter(|j| {
                j.record.status == JobStatus::Processing && j.record.group.as_deref() == Some(group)
            })
            .count() as u64
    }

    fn admits(&self, group: &str) -> bool {
        let set = self.group_settings.get(group).cloned().unwrap_or_default();
        let now = self.now;
        // Its next job: the first of its highest priority with ready jobs.
        let next_cost = (0..3u8)
            .find_map(|b| self.ready_in(Some(group), b).min_by_key(|j| j.place))
            .map_or(1, cost_of);
        !set.paused
            && set
                .concurrency
                .is_none_or(|max| self.running_in(group) < u64::from(max))
            && now >= set.held_until
            && set.rate.is_none_or(|l| {
                fits(
                    u64::from(l.max),
                    used_since(&set.starts, now - duration_ms(l.per)),
                    next_cost,
                )
            })
    }

    /// Gives each group a lane (at the current ticket) in every band where it has ready
    /// jobs and admits a start, and takes away the others.
    fn refresh_lanes(&mut self) {
        let mut groups: Vec<String> = self
            .jobs
            .iter()
            .filter_map(|j| j.record.group.clone())
            .collect();
        groups.extend(self.lanes.keys().map(|(_, g)| g.clone()));
        groups.sort();
        groups.dedup();
        for g in groups {
            for band in 0..3u8 {
                let wanted = self.admits(&g) && self.ready_in(Some(&g), band).next().is_some();
                let key = (band, g.clone());
                if !wanted {
                    self.lanes.remove(&key);
                } else if !self.lanes.contains_key(&key) {
                    self.lanes.insert(key, self.tick);
                }
            }
        }
    }

    /// One group's counts and settings.
    pub fn group(&self, group: &str, now: Millis) -> queue_core::GroupStats {
        let set = self.group_settings.get(group).cloned().unwrap_or_default();
        let mut stats = queue_core::GroupStats::new(group);
        stats.ready = (0..3)
            .map(|b| self.ready_in(Some(group), b).count() as u64)
            .sum();
        stats.running = self.running_in(group);
        stats.unfinished = self
            .jobs
            .iter()
            .filter(|j| j.record.group.as_deref() == Some(group) && !j.record.status.is_terminal())
            .count() as u64;
        stats.paused = set.paused;
        stats.concurrency = set.concurrency;
        stats.weight = set.weight;
        stats.rate_limit = set.rate;
        stats.held_until = (set.held_until > now).then(|| from_millis(set.held_until));
        stats
    }

    /// The groups with unfinished jobs, the `limit` busiest in full (most first, ties by
    /// name), the rest summed.
    pub fn groups(&self, limit: usize, now: Millis) -> queue_core::GroupList {
        let mut names: Vec<String> = self
            .jobs
            .iter()
            .filter_map(|j| j.record.group.clone())
            .collect();
        names.sort();
        names.dedup();
        let mut busy: Vec<queue_core::GroupStats> = names
            .iter()
            .map(|g| self.group(g, now))
            .filter(|s| s.unfinished > 0)
            .collect();
        busy.sort_by(|a, b| {
            b.unfinished
                .cmp(&a.unfinished)
                .then_with(|| a.group.cmp(&b.group))
        });
        let mut list = queue_core::GroupList::default();
        for (i, stats) in busy.into_iter().enumerate() {
            if i < limit {
                list.groups.push(stats);
            } else {
                list.other_groups += 1;
                list.other_unfinished += stats.unfinished;
            }
        }
        list
    }

    fn find(&self, id: JobId) -> Option<&Job> {
        self.jobs.iter().find(|j| j.record.job_id == id)
    }

    fn find_mut(&mut self, id: JobId) -> Option<&mut Job> {
        self.jobs.iter_mut().find(|j| j.record.job_id == id)
    }

    fn place(&mut self) -> u64 {
        self.next_place += 1;
        self.next_place
    }

    /// Sets or removes the rate limit: at most `max` starts in any window of `per`. Starts
    /// are counted while a limit is set; each claim forgets those that have left the
    /// window, and a changed limit counts the ones still kept; a removed limit forgets
    /// them all.
    pub fn set_rate_limit(&mut self, limit: Option<queue_core::RateLimit>) {
        self.rate = limit.map(|l| (u64::from(l.max), duration_ms(l.per)));
        if limit.is_none() {
            self.starts.clear();
            self.held_until = 0;
        }
    }

    /// Pauses (`true`) or resumes the queue: while paused, claims take nothing new.
    /// Resuming also lifts a handler's hold (`rate_limited`).
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
        if !paused {
            self.held_until = 0;
        }
    }

    /// The active (queued or processing) job holding `key`.
    fn holder(&self, key: &str) -> Option<JobId> {
        self.jobs
            .iter()
            .find(|j| {
                j.record.unique_key.as_deref() == Some(key)
                    && matches!(j.record.status, JobStatus::Queued | JobStatus::Processing)
            })
            .map(|j| j.record.job_id)
    }

    /// Creates or changes an interval schedule: a new interval starts from now; the same
    /// one keeps its next tick (a paused one resumes from the first tick after now).
    pub fn put_schedule(&mut self, name: &str, every_ms: Millis, policy: u8, now: Millis) {
        let s = self
            .schedules
            .entry(name.to_owned())
            .or_insert(ModelSchedule {
                every_ms,
                anchor: now,
                next: None,
                paused: false,
                policy,
                last_tick: None,
                ticks_run: 0,
                ticks_skipped: 0,
            });
        if s.every_ms != every_ms || s.next.is_none() {
            if s.every_ms != every_ms {
                s.anchor = now;
            }
            s.every_ms = every_ms;
            s.next = Some(s.after(now));
        }
        s.paused = false;
        s.policy = policy;
    }

    /// Pauses (no next tick) or resumes (the first tick after now) a schedule.
    pub fn pause_schedule(&mut self, name: &str, paused: bool, now: Millis) -> Result<()> {
        let s = self
            .schedules
            .get_mut(name)
            .ok_or_else(|| Error::ScheduleNotFound { name: name.into() })?;
        if s.paused != paused {
            s.paused = paused;
            s.next = (!paused).then(|| s.after(now));
        }
        Ok(())
    }

    /// Deletes a schedule.
    pub fn delete_schedule(&mut self, name: &str) -> Result<()> {
        self.schedules
            .remove(name)
            .map(drop)
            .ok_or_else(|| Error::ScheduleNotFound { name: name.into() })
    }

    /// The schedules by name.
    pub fn schedules(&self) -> &BTreeMap<String, ModelSchedule> {
        &self.schedules
    }

    /// Fires every due schedule: each tick within the 60 s grace runs, missed ones as the
    /// policy says; the ticks' jobs are enqueued with the tick's id. Returns the jobs per
    /// schedule that fired.
    pub fn run_schedules(&mut self, now: Millis) -> Vec<(String, Vec<JobId>)> {
        const GRACE: Millis = 60_000;
        let mut fired = Vec::new();
        // The earliest due first (then by name): their jobs take their places in that order.
        let mut due_order: Vec<(Millis, String)> = self
            .schedules
            .iter()
            .filter_map(|(n, s)| s.next.filter(|&t| t <= now).map(|t| (t, n.clone())))
            .collect();
        due_order.sort();
        let names: Vec<String> = due_order.into_iter().map(|(_, n)| n).collect();
        for name in names {
            let s = self.schedules[&name].clone();
            let Some(first) = s.next.filter(|&t| t <= now) else {
                continue;
            };
            let due: Vec<Millis> = (0..)
                .map(|k| first + k * s.every_ms)
                .take_while(|&t| t <= now)
                .collect();
            let (missed, on_time): (Vec<Millis>, Vec<Millis>) =
                due.iter().partition(|&&t| t < now - GRACE);
            let keep = match s.policy {
                0 => 0,
                1 => usize::from(on_time.is_empty()),
                _ => 2,
            };
            let mut run: Vec<Millis> = missed[missed.len().saturating_sub(keep)..].to_vec();
            run.extend(&on_time);
            let mut ids = Vec::new();
            for &tick in &run {
                let mut job = NewJob::new("model", &serde_json::json!({ "schedule": name }))
                    .expect("encodes");
                job.options
                    .metadata
                    .insert("schedule".into(), name.clone().into());
                job.options.metadata.insert(
                    "tick".into(),
                    queue_core::backend::from_millis(tick).to_rfc3339().into(),
                );
                let id = queue_core::backend::tick_job_id(&name, tick);
                job.options.job_id = Some(id);
                if let Ok(r) = self.enqueue(job, now) {
                    ids.push(r.job_id);
                }
            }
            let s = self.schedules.get_mut(&name).expect("listed");
            s.ticks_run += run.len() as u64;
            s.ticks_skipped += (due.len() - run.len()) as u64;
            if let Some(&last) = run.last() {
                s.last_tick = Some(last);
            }
            s.next = Some(s.after(now));
            fired.push((name, ids));
        }
        fired
    }

    /// Enqueue one job.
    pub fn enqueue(&mut self, job: NewJob, now: Millis) -> Result<JobRecord> {
        self.now = now;
        self.config.limits.check(&job)?;
        let o = job.options;
        if let Some(id) = o.job_id
            && let Some(i) = self.jobs.iter().position(|j| j.record.job_id == id)
        {
            return Ok(self.view(i));
        }
        if let Some(key) = &o.unique_key
            && let Some(holder) = self.holder(key)
        {
            return Err(Error::AlreadyExists {
                unique_key: key.clone(),
                job_id: holder,
            });
        }
        let delay = o.delay.map(duration_ms).unwrap_or(0);
        let due = (delay > 0).then_some(now + delay);
        let record = JobRecord {
            job_id: o.job_id.unwrap_or_default(),
            task: job.task,
            payload: job.payload,
            unique_key: o.unique_key,
            status: JobStatus::Queued,
            priority: o.priority.unwrap_or(self.config.default_priority),
            progress: 0,
            current_step: None,
            error_message: None,
            retry_count: 0,
            max_retries: o.max_retries.unwrap_or(self.config.max_retries),
            timeout_ms: o.timeout.map(|t| duration_ms(t) as u64),
            created_at: from_millis(now),
            started_at: None,
            completed_at: None,
            run_at: due.map(from_millis),
            metadata: o.metadata,
            result: None,
            worker_id: None,
            cancel_requested: false,
            group: o.group,
            cost: o.cost.filter(|c| *c != 1),
            parent: None,
            child_policy: None,
            children: None,
            attempts: Vec::new(),
        };
        let place = if due.is_some() { 0 } else { self.place() };
        self.jobs.push(Job {
            record: record.clone(),
            place,
            due,
            lease: None,
            ended: None,
            is_parent: false,
            kept: None,
        });
        self.totals.enqueued += 1;
        // A job without a group opens or closes no group's lane.
        if record.group.is_some() {
            self.refresh_lanes();
        }
        Ok(record)
    }

    /// Enqueue several jobs, each on its own.
    pub fn enqueue_many(&mut self, jobs: Vec<NewJob>, now: Millis) -> Vec<Result<JobRecord>> {
        jobs.into_iter().map(|j| self.enqueue(j, now)).collect()
    }

    /// One record.
    pub fn get(&self, id: JobId) -> Result<JobRecord> {
        self.jobs
            .iter()
            .position(|j| j.record.job_id == id)
            .map(|i| self.view(i))
            .ok_or_else(|| not_found(id))
    }

    /// A page of a listing.
    pub fn list(&self, query: &ListQuery) -> Result<Page> {
        let position = query.position()?;
        if let Some(parent) = query.parent {
            // A parent's children, oldest first, after the cursor.
            let p = self
                .jobs
                .iter()
                .position(|j| j.record.job_id == parent)
                .ok_or_else(|| not_found(parent))?;
            let kids: Vec<usize> = self
                .children_of(p)
                .into_iter()
                .filter(|c| {
                    let r = &self.jobs[*c].record;
                    position.is_none_or(|pos| (to_millis(r.created_at), r.job_id) > pos)
                })
                .collect();
            let more = kids.len() > query.limit;
            let jobs: Vec<JobRecord> = kids
                .into_iter()
                .take(query.limit)
                .map(|c| self.view(c))
                .collect();
            let next_cursor = more.then(|| {
                let last = jobs.last().expect("limit is at least 1");
                encode_cursor(to_millis(last.created_at), last.job_id)
            });
            return Ok(Page { jobs, next_cursor });
        }
        // One unique key's history and the waiting parents go by creation; every job and
        // one status by `listed_at` (a finished job by when it finished, or was last kept).
        // The filters read the stored record (a view differs only in progress and counts).
        let by_creation = query.unique_key.is_some() || query.waiting_on_children;
        let mut matching: Vec<(Millis, JobId, usize)> = (0..self.jobs.len())
            .filter(|i| !query.waiting_on_children || self.waits(*i))
            .filter_map(|i| {
                let r = &self.jobs[i].record;
                if query.status.is_some_and(|s| r.status != s)
                    || query
                        .unique_key
                        .as_deref()
                        .is_some_and(|k| r.unique_key.as_deref() != Some(k))
                {
                    return None;
                }
                let created = to_millis(r.created_at);
                let finished = self.jobs[i].kept.or(r.completed_at.map(to_millis));
                let at = if by_creation {
                    created
                } else {
                    listed_at(r.status, created, finished)
                };
                position
                    .is_none_or(|p| (at, r.job_id) < p)
                    .then_some((at, r.job_id, i))
            })
            .collect();
        matching.sort_by_key(|(at, id, _)| std::cmp::Reverse((*at, *id)));
        let more = matching.len() > query.limit;
        matching.truncate(query.limit);
        let next_cursor = more.then(|| {
            let (at, last, _) = matching.last().expect("limit is at least 1");
            encode_cursor(*at, *last)
        });
        Ok(Page {
            jobs: matching.into_iter().map(|(_, _, i)| self.view(i)).collect(),
            next_cursor,
        })
    }

    /// Counts.
    pub fn stats(&self, now: Millis) -> QueueStats {
        let count = |s: JobStatus| self.jobs.iter().filter(|j| j.record.status == s).count() as u64;
        let queued = |j: &Job| j.record.status == JobStatus::Queued;
        QueueStats {
            total: self.jobs.len() as u64,
            queued: count(JobStatus::Queued),
            processing: count(JobStatus::Processing),
            completed: count(JobStatus::Completed),
            failed: count(JobStatus::Failed),
            partial: count(JobStatus::Partial),
            cancelled: count(JobStatus::Cancelled),
            scheduled: self
                .jobs
                .iter()
                .enumerate()
                .filter(|(i, j)| queued(j) && !self.waits(*i))
                .filter(|(_, j)| j.due.is_some())
                .count() as u64,
            waiting_on_children: (0..self.jobs.len()).filter(|i| self.waits(*i)).count() as u64,
            active_workers: self.live_workers(now).count() as u64,
            depth: Priority::ALL
                .into_iter()
                .map(|p| {
                    let n = self
                        .jobs
                        .iter()
                        .enumerate()
                        .filter(|(i, j)| queued(j) && !self.waits(*i))
                        .filter(|(_, j)| j.due.is_none() && j.record.priority == p)
                        .count() as u64;
                    (p, n)
                })
                .collect(),
            totals: self.totals.clone(),
            paused: self.paused,
            held_until: (self.held_until > now).then(|| from_millis(self.held_until)),
            rate_limit: self.rate.map(|(max, per)| queue_core::RateLimit {
                max: max as u32,
                per: std::time::Duration::from_millis(per as u64),
            }),
        }
    }

    fn live_workers(&self, now: Millis) -> impl Iterator<Item = &(WorkerBeat, Millis)> {
        self.workers
            .values()
            .filter(move |(beat, seen)| seen + 3 * duration_ms(beat.interval) >= now)
    }

    /// Workers with the jobs they hold: live ones, and for an hour those that stopped
    /// beating (lost).
    pub fn workers(&self, now: Millis) -> Vec<WorkerInfo> {
        self.workers
            .values()
            .filter(|(beat, seen)| seen + 3 * duration_ms(beat.interval) + 3_600_000 >= now)
            .map(|(beat, seen)| {
                let lost = seen + 3 * duration_ms(beat.interval) < now;
                let mut jobs: Vec<JobId> = self
                    .jobs
                    .iter()
                    .filter(|j| {
                        j.record.status == JobStatus::Processing
                            && j.record.worker_id.as_deref() == Some(beat.worker.as_str())
                    })
                    .map(|j| j.record.job_id)
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
            .collect()
    }

    /// Claim: due delayed jobs join the back of their priority (in order of due time,
    /// then id), then the ready jobs are taken, strict priority then FIFO. A request sent
    /// again returns what it took the first time that is still held (oldest first, at most
    /// what it asks for) and takes nothing. A paused queue takes nothing new.
    pub fn fetch(&mut self, req: &ClaimRequest, now: Millis) -> Vec<ModelLease> {
        self.now = now;
        let worker = req.worker.as_str().to_owned();
        if self
            .last_claim
            .get(&worker)
            .is_some_and(|last| req.id <= *last)
        {
            let mut again: Vec<&Job> = self
                .jobs
                .iter()
                .filter(|j| {
                    j.lease
                        .as_ref()
                        .is_some_and(|h| h.claim == req.id && h.expires > now)
                        && j.record.worker_id.as_deref() == Some(worker.as_str())
                })
                .collect();
            if !again.is_empty() {
                // Oldest first, at most what the request asked for.
                again.sort_by_key(|j| (j.record.started_at, j.record.job_id));
                again.truncate(req.max.min(queue_core::backend::MAX_CLAIM));
                return again
                    .into_iter()
                    .map(|j| {
                        let h = j.lease.as_ref().expect("filtered");
                        let i = self
                            .jobs
                            .iter()
                            .position(|k| k.record.job_id == j.record.job_id)
                            .expect("held");
                        ModelLease {
                            job: self.view(i),
                            token: h.token.clone(),
                            expires_at: h.expires,
                        }
                    })
                    .collect();
            }
        } else {
            self.last_claim.insert(worker.clone(), req.id);
        }
        self.promote(now);
        let mut out = Vec::new();
        // Paused: nothing starts (the replay above still answers). Rate limited: no more
        // than the starts left in the window that ends now.
        // One claim takes at most MAX_CLAIM jobs, whatever it asks for.
        let mut max = req.max.min(queue_core::backend::MAX_CLAIM);
        if now < self.held_until {
            max = 0;
        }
        let mut used = 0;
        if let Some((limit, per)) = self.rate {
            // A claim that may start jobs forgets the starts that have left the window
            // (a wider limit set later does not bring them back).
            if !self.paused && now >= self.held_until {
                self.starts.retain(|(t, _)| *t > now - per);
            }
            used = used_since(&self.starts, now - per);
            max = max.min(limit.saturating_sub(used) as usize);
        }
        self.refresh_lanes();
        while !self.paused && out.len() < max {
            let Some((i, band, lane)) = self.next_job() else {
                break;
            };
            // Under the queue's rate limit the next job's cost must fit; else nothing more
            // starts (a cheaper job behind it does not overtake it).
            let cost = cost_of(&self.jobs[i]);
            if let Some((limit, _)) = self.rate {
                if !fits(limit, used, cost) {
                    break;
                }
                used += u64::from(cost);
                self.starts.push((now, cost));
            }
            self.stamp(band, lane, cost);
            self.next_token += 1;
            let token = LeaseToken::new(format!("model-{}", self.next_token));
            let lease_ms = duration_ms(req.lease);
            let job = &mut self.jobs[i];
            job.lease = Some(HeldBy {
                token: token.clone(),
                expires: now + lease_ms,
                lease_ms,
                claim: req.id,
            });
            let r = &mut job.record;
            r.status = JobStatus::Processing;
            r.started_at = Some(from_millis(now));
            r.progress = 0;
            r.current_step = None;
            r.run_at = None;
            r.worker_id = Some(worker.clone());
            out.push(ModelLease {
                job: self.view(i),
                token,
                expires_at: now + lease_ms,
            });
            self.refresh_lanes();
        }
        out
    }

    /// The next job to start, with its band and lane: in the highest band with ready jobs,
    /// the lane with the lowest ticket (jobs without a group first on a tie, then groups by
    /// name), then that lane's first job.
    fn next_job(&self) -> Option<(usize, u8, Option<String>)> {
        for band in 0..3u8 {
            let mut lanes: Vec<(u64, Option<String>)> = self
                .lanes
                .iter()
                .filter(|((b, _), _)| *b == band)
                .map(|((_, g), t)| (*t, Some(g.clone())))
                .collect();
            if self.ready_in(None, band).next().is_some() {
                lanes.push((self.ungrouped_ticket[usize::from(band)], None));
            }
            // `None` sorts before every group name.
            let Some((_, lane)) = lanes.into_iter().min() else {
                continue;
            };
            let i = self
                .jobs
                .iter()
                .enumerate()
                .filter(|(i, j)| {
                    j.record.status == JobStatus::Queued
                        && j.due.is_none()
                        && j.record.group == lane
                        && j.record.priority.band() == band
                        && !self.waits(*i)
                })
                .min_by_key(|(_, j)| j.place)
                .map(|(i, _)| i)
                .expect("a lane has a ready job");
            return Some((i, band, lane));
        }
        None
    }

    /// A start from `lane` of `band` (of `cost`): the lane takes the next ticket, a
    /// group's rate log the start.
    fn stamp(&mut self, band: u8, lane: Option<String>, cost: u32) {
        self.tick += 1;
        match lane {
            None => self.ungrouped_ticket[usize::from(band)] = self.tick,
            Some(g) => {
                let now = self.now;
                let mut turn_over = true;
                if let Some(set) = self.group_settings.get_mut(&g) {
                    if let Some(limit) = set.rate {
                        set.starts
                            .retain(|(t, _)| *t > now - duration_ms(limit.per));
                        set.starts.push((now, cost));
                    }
                    // A weighted group keeps its ticket for `weight` starts in a row.
                    set.turn += 1;
                    turn_over = set.turn >= set.weight.unwrap_or(1);
                    if turn_over {
                        set.turn = 0;
                    }
                }
                if turn_over {
                    self.lanes.remove(&(band, g));
                }
            }
        }
    }

    fn promote(&mut self, now: Millis) {
        let mut due: Vec<(Millis, JobId)> = self
            .jobs
            .iter()
            .enumerate()
            .filter(|(i, j)| j.record.status == JobStatus::Queued && !self.waits(*i))
            .filter_map(|(_, j)| j.due.filter(|d| *d <= now).map(|d| (d, j.record.job_id)))
            .collect();
        due.sort();
        for (_, id) in due {
            let place = self.place();
            let job = self.find_mut(id).expect("listed");
            job.due = None;
            job.place = place;
        }
    }

    fn held_index(&self, lease: &LeaseRef, now: Millis) -> Option<usize> {
        self.jobs.iter().position(|j| {
            j.record.job_id == lease.job_id
                && j.lease
                    .as_ref()
                    .is_some_and(|h| h.token == lease.token && h.expires > now)
        })
    }

    /// Heartbeat.
    pub fn heartbeat(
        &mut self,
        beat: &WorkerBeat,
        leases: &[LeaseRef],
        now: Millis,
    ) -> HeartbeatReply {
        // Workers silent for three of their intervals are lost: their claim history goes;
        // listed as lost for an hour more, then forgotten.
        let dead: Vec<(String, bool)> = self
            .workers
            .iter()
            .filter(|(_, (b, seen))| seen + 3 * duration_ms(b.interval) < now)
            .map(|(w, (b, seen))| {
                (
                    w.clone(),
                    seen + 3 * duration_ms(b.interval) + 3_600_000 < now,
                )
            })
            .collect();
        for (w, forgotten) in dead {
            self.last_claim.remove(&w);
            if forgotten {
                self.workers.remove(&w);
            }
        }
        self.workers
            .insert(beat.worker.as_str().to_owned(), (beat.clone(), now));
        let mut reply = HeartbeatReply::default();
        for lease in leases {
            match self.held_index(lease, now) {
                Some(i) => {
                    let job = &mut self.jobs[i];
                    job.lease.as_mut().expect("held").expires = now + duration_ms(beat.lease);
                    if job.record.cancel_requested {
                        reply.cancel.push(lease.clone());
                    }
                }
                None => reply.lost.push(lease.clone()),
            }
        }
        reply
    }

    /// Progress.
    pub fn progress(
        &mut self,
        lease: &LeaseRef,
        progress: u8,
        step: Option<String>,
        now: Millis,
    ) -> Result<bool> {
        if progress > 100 {
            return Err(Error::invalid(format!("progress {progress} is above 100")));
        }
        let i = self
            .held_index(lease, now)
            .ok_or_else(|| lost(lease.job_id))?;
        let job = &mut self.jobs[i];
        let h = job.lease.as_mut().expect("held");
        h.expires = now + h.lease_ms;
        job.record.progress = job.record.progress.max(progress);
        if let Some(step) = step {
            // An empty step name clears the step; a long one is cut to its bound.
            let step = queue_core::backend::bound_text(&step, queue_core::backend::MAX_STEP_BYTES);
            job.record.current_step = Some(step.into_owned()).filter(|s| !s.is_empty());
        }
        Ok(job.record.cancel_requested)
    }

    /// Finish (and maybe claim the next job).
    pub fn finish(
        &mut self,
        lease: &LeaseRef,
        outcome: Outcome,
        next: Option<&ClaimRequest>,
        now: Millis,
    ) -> Result<(JobStatus, Option<ModelLease>)> {
        self.now = now;
        let Some(i) = self.held_index(lease, now) else {
            // Sent again after it was applied: the same answer.
            let replay = self.find(lease.job_id).and_then(|j| j.ended.clone());
            return match replay {
                Some((token, status)) if token == lease.token => {
                    let next = next.and_then(|req| self.fetch(&one(req), now).pop());
                    Ok((status, next))
                }
                _ => Err(lost(lease.job_id)),
            };
        };
        let status = self.end(i, outcome, now);
        self.refresh_lanes();
        self.jobs[i].ended = Some((lease.token.clone(), status));
        let next = next.and_then(|req| self.fetch(&one(req), now).pop());
        Ok((status, next))
    }

    /// Several finishes, each on its own, then one claim of up to `next.max`.
    pub fn finish_many(
        &mut self,
        endings: &[(LeaseRef, Outcome)],
        next: Option<&ClaimRequest>,
        now: Millis,
    ) -> (Vec<Result<JobStatus>>, Vec<ModelLease>) {
        let statuses: Vec<Result<JobStatus>> = endings
            .iter()
            .map(|(lease, outcome)| {
                self.finish(lease, outcome.clone(), None, now)
                    .map(|(status, _)| status)
            })
            .collect();
        // Only a call that ended something claims more.
        let leases = next
            .filter(|_| statuses.iter().any(Result::is_ok))
            .map(|req| self.fetch(req, now))
            .unwrap_or_default();
        (statuses, leases)
    }

    /// Ends the attempt of the job at `i`; returns its new status.
    fn end(&mut self, i: usize, outcome: Outcome, now: Millis) -> JobStatus {
        let max_delay = self.config.limits.delay;
        // Error text is stored cut to its bound (saying so); a handler's hold (and its own
        // snooze) is at most the hold limit.
        let cut = |e: String| {
            queue_core::backend::bound_text(&e, self.config.limits.error_bytes).into_owned()
        };
        let outcome = match outcome {
            Outcome::Retry { error, delay } => Outcome::Retry {
                error: cut(error),
                delay,
            },
            Outcome::Failed { error } => Outcome::Failed { error: cut(error) },
            Outcome::Partial { result, error } => Outcome::Partial {
                result,
                error: cut(error),
            },
            Outcome::RateLimited { retry_after } => Outcome::RateLimited {
                retry_after: retry_after.min(self.config.limits.hold),
            },
            other => other,
        };
        if let Outcome::RateLimited { retry_after } = &outcome {
            // The limit stands, whatever this job becomes: for its group when it has one,
            // else for the whole queue.
            let until = now.saturating_add(duration_ms((*retry_after).min(max_delay)));
            match self.jobs[i].record.group.clone() {
                Some(g) => {
                    let set = self.group_settings.entry(g).or_default();
                    set.held_until = set.held_until.max(until);
                }
                None => self.held_until = self.held_until.max(until),
            }
        }
        let job = &mut self.jobs[i];
        job.lease = None;
        let worker = job.record.worker_id.take().unwrap_or_default();
        if job.record.cancel_requested {
            // The requested cancel wins, whatever the handler reported.
            return self.terminal(i, JobStatus::Cancelled, now);
        }
        let retries_left = job.record.retry_count < job.record.max_retries;
        let r = &mut job.record;
        let terminal = match outcome {
            Outcome::Completed { result } => {
                r.progress = 100;
                r.error_message = None;
                r.result = result;
                JobStatus::Completed
            }
            Outcome::Partial { result, error } => {
                r.progress = 100;
                r.error_message = Some(error);
                r.result = result;
                JobStatus::Partial
            }
            Outcome::Retry { error, delay } if retries_left => {
                r.status = JobStatus::Queued;
                r.error_message = Some(error);
                note_attempt(r, &worker, now);
                r.retry_count += 1;
                r.progress = 0;
                r.current_step = None;
                let due = now.saturating_add(duration_ms(delay.min(max_delay)));
                r.run_at = Some(from_millis(due));
                job.due = Some(due);
                self.totals.retried += 1;
                return JobStatus::Queued;
            }
            Outcome::Retry { error, .. } | Outcome::Failed { error } => {
                r.error_message = Some(error);
                note_attempt(r, &worker, now);
                JobStatus::Failed
            }
            Outcome::Cancelled => JobStatus::Cancelled,
            Outcome::Snoozed { delay } | Outcome::RateLimited { retry_after: delay } => {
                // Waits like a retry, but uses no attempt and keeps the last error.
                r.status = JobStatus::Queued;
                r.progress = 0;
                r.current_step = None;
                let due = now.saturating_add(duration_ms(delay.min(max_delay)));
                r.run_at = Some(from_millis(due));
                job.due = Some(due);
                return JobStatus::Queued;
            }
            Outcome::Released => {
                // Back to the place it had, no attempt used.
                r.status = JobStatus::Queued;
                r.progress = 0;
                r.current_step = None;
                r.run_at = None;
                return JobStatus::Queued;
            }
        };
        self.terminal(i, terminal, now)
    }

    fn terminal(&mut self, i: usize, status: JobStatus, now: Millis) -> JobStatus {
        self.jobs[i].kept = None;
        let r = &mut self.jobs[i].record;
        r.status = status;
        r.completed_at = Some(from_millis(now));
        r.run_at = None;
        r.worker_id = None;
        match status {
            JobStatus::Completed => self.totals.completed += 1,
            JobStatus::Failed => self.totals.failed += 1,
            JobStatus::Partial => self.totals.partial += 1,
            JobStatus::Cancelled => self.totals.cancelled += 1,
            _ => unreachable!("not terminal"),
        }
        self.child_ended(i, status, now);
        status
    }

    /// Recover expired leases, oldest expiry first.
    pub fn reap(&mut self, limit: usize, now: Millis) -> Vec<JobId> {
        self.now = now;
        let mut expired: Vec<(Millis, JobId)> = self
            .jobs
            .iter()
            .filter_map(|j| {
                j.lease
                    .as_ref()
                    .filter(|h| h.expires <= now)
                    .map(|h| (h.expires, j.record.job_id))
            })
            .collect();
        expired.sort();
        expired.truncate(limit);
        for (_, id) in &expired {
            let i = self
                .jobs
                .iter()
                .position(|j| j.record.job_id == *id)
                .expect("listed");
            self.totals.recovered += 1;
            let job = &mut self.jobs[i];
            job.lease = None;
            let worker = job.record.worker_id.take().unwrap_or_default();
            let r = &mut job.record;
            if r.cancel_requested {
                self.terminal(i, JobStatus::Cancelled, now);
            } else if r.retry_count < r.max_retries {
                r.status = JobStatus::Queued;
                r.retry_count += 1;
                r.progress = 0;
                r.current_step = None;
                r.run_at = None;
                r.error_message = Some(format!(
                    "lease expired: worker {worker} stopped renewing it"
                ));
                note_attempt(r, &worker, now);
            } else {
                r.error_message = Some(format!(
                    "lease expired: worker {worker} was lost and no retries are left"
                ));
                note_attempt(r, &worker, now);
                self.terminal(i, JobStatus::Failed, now);
            }
        }
        self.refresh_lanes();
        expired.into_iter().map(|(_, id)| id).collect()
    }

    /// Delete finished records older than the retention, oldest first; a child whose
    /// parent is unfinished is kept instead, its retention counted again from now.
    pub fn sweep(&mut self, limit: usize, now: Millis) -> usize {
        let cutoff = now - duration_ms(self.config.retention);
        let mut due: Vec<(Millis, JobId)> = self
            .jobs
            .iter()
            .filter(|j| j.record.status.is_terminal())
            .filter_map(|j| {
                j.kept
                    .or(j.record.completed_at.map(to_millis))
                    .filter(|at| *at <= cutoff)
                    .map(|at| (at, j.record.job_id))
            })
            .collect();
        due.sort();
        due.truncate(limit);
        let (kept, due): (Vec<_>, Vec<_>) = due.into_iter().partition(|(_, id)| {
            let c = self
                .jobs
                .iter()
                .position(|j| j.record.job_id == *id)
                .expect("listed");
            self.parent_of(c)
                .is_some_and(|p| self.jobs[p].record.status.is_active())
        });
        for (_, id) in &kept {
            self.find_mut(*id).expect("listed").kept = Some(now);
        }
        for (_, id) in &due {
            self.remove(*id);
        }
        due.len()
    }

    /// Removes a finished record (retention, or a delete).
    fn remove(&mut self, id: JobId) {
        let c = self
            .jobs
            .iter()
            .position(|j| j.record.job_id == id)
            .expect("listed");
        // A deleted child still counts for its parent; a deleted parent's count goes.
        if let Some(p) = self.parent_of(c) {
            let parent = self.jobs[p].record.job_id;
            let status = self.jobs[c].record.status;
            self.swept_children.entry(parent).or_default().push(status);
        }
        self.swept_children.remove(&id);
        self.jobs.remove(c);
    }

    /// Delete a finished record on request (`on_delete` written out: only a finished job,
    /// not a child whose parent is unfinished).
    pub fn delete(&mut self, id: JobId, now: Millis) -> Result<JobRecord> {
        self.now = now;
        let c = self
            .jobs
            .iter()
            .position(|j| j.record.job_id == id)
            .ok_or_else(|| not_found(id))?;
        let status = self.jobs[c].record.status;
        let reason = if !matches!(
            status,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Partial | JobStatus::Cancelled
        ) {
            Some("it is not finished (cancel it first)")
        } else if self.parent_of(c).is_some_and(|p| {
            matches!(
                self.jobs[p].record.status,
                JobStatus::Queued | JobStatus::Processing
            )
        }) {
            Some("its parent is unfinished and will read its result")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(Error::NotDeletable {
                id,
                reason: reason.into(),
            });
        }
        let record = self.get(id)?;
        self.remove(id);
        Ok(record)
    }

    /// Cancel.
    pub fn cancel(&mut self, id: JobId, now: Millis) -> Result<CancelOutcome> {
        self.now = now;
        let i = self
            .jobs
            .iter()
            .position(|j| j.record.job_id == id)
            .ok_or_else(|| not_found(id))?;
        let r = &mut self.jobs[i].record;
        match r.status {
            JobStatus::Queued => {
                self.jobs[i].due = None;
                self.terminal(i, JobStatus::Cancelled, now);
                // Its unfinished children are cancelled too (and theirs).
                let kids: Vec<JobId> = self
                    .children_of(i)
                    .into_iter()
                    .filter(|c| self.jobs[*c].record.status.is_active())
                    .map(|c| self.jobs[c].record.job_id)
                    .collect();
                for kid in kids {
                    let _ = self.cancel(kid, now);
                }
                self.refresh_lanes();
                Ok(CancelOutcome::Cancelled)
            }
            JobStatus::Processing => {
                r.cancel_requested = true;
                Ok(CancelOutcome::Requested)
            }
            from => Err(Error::InvalidTransition {
                id,
                from,
                event: queue_core::backend::Event::Cancel,
            }),
        }
    }

    /// Manual retry.
    pub fn retry(
        &mut self,
        id: JobId,
        priority: Option<Priority>,
        now: Millis,
    ) -> Result<JobRecord> {
        self.now = now;
        let job = self.find(id).ok_or_else(|| not_found(id))?;
        let from = job.record.status;
        if !matches!(
            from,
            JobStatus::Failed | JobStatus::Partial | JobStatus::Cancelled
        ) {
            return Err(Error::InvalidTransition {
                id,
                from,
                event: queue_core::backend::Event::ManualRetry,
            });
        }
        if let Some(key) = job.record.unique_key.clone()
            && let Some(holder) = self.holder(&key)
        {
            return Err(Error::AlreadyExists {
                unique_key: key,
                job_id: holder,
            });
        }
        let place = self.place();
        let job = self.find_mut(id).expect("found");
        job.place = place;
        job.due = None;
        let r = &mut job.record;
        if let Some(p) = priority {
            r.priority = p;
        }
        r.status = JobStatus::Queued;
        r.progress = 0;
        r.current_step = None;
        r.error_message = None;
        r.result = None;
        r.retry_count = 0;
        r.started_at = None;
        r.completed_at = None;
        r.run_at = None;
        r.worker_id = None;
        r.cancel_requested = false;
        let i = self
            .jobs
            .iter()
            .position(|j| j.record.job_id == id)
            .expect("found");
        self.child_reopened(i, now);
        self.refresh_lanes();
        Ok(self.view(i))
    }

    /// Deregister a worker: forgotten, with its claim history.
    pub fn deregister(&mut self, worker: &str) {
        self.workers.remove(worker);
        self.last_claim.remove(worker);
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
