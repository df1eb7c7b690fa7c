//! Job schedulers: named schedules, a cron expression in a time zone or a fixed interval,
//! stored in the backend, each tick of which enqueues exactly one job however many
//! schedulers run and however they crash.
//!
//! Exactly once comes from one compare-and-set: a scheduler reads a schedule, decides
//! here (pure functions, no I/O) which ticks are due and what the schedule becomes, then
//! asks the backend to write the new schedule *only if it is still the one it read*, in
//! the same atomic step as the tick's jobs (see [`crate::backend::Broker::write_schedule`]).
//! Of two schedulers racing for one tick one write applies; the other's is refused and
//! creates nothing. A scheduler that crashes before its write changed nothing, so the next
//! one fires the tick; one that crashes after it fired it. A tick's job also has an id
//! derived from the schedule's name and the tick ([`tick_job_id`]), so even a tick fired a
//! second time by some other path would return the first job instead of a second one.
//!
//! Time comes from the backend (its clock, the Redis server's `TIME`), so the schedulers of
//! many hosts agree on it.
//!
//! ```
//! use std::time::Duration;
//! use queue_core::{MissedTicks, NewJob, Schedule};
//! # fn main() -> queue_core::Result<()> {
//! let nightly = Schedule::cron("nightly", "0 2 * * *", NewJob::new("reprocess", &"all")?)?
//!     .time_zone("Europe/Berlin")
//!     .missed(MissedTicks::RunOnce);
//! let often = Schedule::every("poll-feeds", Duration::from_secs(300), NewJob::new("poll", &())?)?;
//! nightly.check()?;
//! often.check()?;
//! # Ok(()) }
//! ```

use std::{fmt, str::FromStr, time::Duration};

use chrono::{DateTime, Offset, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::{Millis, duration_ms, from_millis, to_millis};
use crate::{Error, JobId, Metadata, NewJob, Payload, Priority, Result};

/// Schedule names are 1 to this many bytes.
pub const MAX_SCHEDULE_NAME_BYTES: usize = 128;

/// The most schedules one queue may have (listing them reads them all): a new one past it
/// is refused, saying so; changing or deleting an existing one is not.
pub const MAX_SCHEDULES: usize = 1_000;
/// [`MissedTicks::RunEach`] runs at most this many missed ticks; on-time ticks of one
/// firing are capped at the same number.
pub const MAX_CATCH_UP: u32 = 1_000;
/// The shortest interval of [`Schedule::every`] (and what a cron expression can resolve:
/// seconds).
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// How late a tick may be fired and still count as on time, unless the schedule sets its
/// own [`Schedule::grace`].
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);
/// How often a worker's scheduler looks for due schedules (besides waking at the earliest
/// known next run).
pub const SCHEDULE_POLL: Duration = Duration::from_secs(1);
/// Due schedules fired per backend read.
pub const SCHEDULES_PER_READ: usize = 100;
/// Ticks counted when a schedule catches up (beyond this the skipped count saturates).
const MAX_COUNTED: u64 = 100_000;

/// When a schedule ticks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Cadence {
    /// A cron expression (5 fields, or 6 with seconds first; `@daily` and friends), read in
    /// an IANA time zone. Across a daylight-saving change a fixed time that falls in the
    /// skipped hour runs at the first valid time after it, and one that falls in the
    /// repeated hour runs once (the first); an expression with a wildcard hour ticks in
    /// both repeated hours.
    Cron {
        /// The expression, e.g. `0 2 * * *`.
        expr: String,
        /// An IANA time zone name, e.g. `Europe/Berlin` (default `UTC`).
        #[serde(default = "utc_name")]
        tz: String,
    },
    /// Every `every_ms` milliseconds from the schedule's anchor (its creation, or the last
    /// change of its cadence): the first tick is one interval after it.
    Every {
        /// The interval, at least [`MIN_INTERVAL`].
        every_ms: u64,
    },
}

fn utc_name() -> String {
    "UTC".into()
}

impl fmt::Display for Cadence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cron { expr, tz } => write!(f, "cron `{expr}` ({tz})"),
            Self::Every { every_ms } => write!(f, "every {every_ms} ms"),
        }
    }
}

/// A parsed cadence: what the pure tick functions work with.
enum Parsed {
    Cron(Box<croner::Cron>, chrono_tz::Tz),
    Every(Millis),
}

impl Cadence {
    fn parse(&self) -> Result<Parsed> {
        match self {
            Self::Cron { expr, tz } => {
                let cron = croner::Cron::from_str(expr).map_err(|e| {
                    Error::invalid(format!("cron expression `{expr}` is not valid: {e}"))
                })?;
                let zone = chrono_tz::Tz::from_str(tz).map_err(|_| {
                    Error::invalid(format!("time zone `{tz}` is not an IANA time zone name"))
                })?;
                // An expression that never matches (30 February) is refused now, not at
                // its first tick.
                cron.find_next_occurrence(&Utc::now().with_timezone(&zone), false)
                    .map_err(|e| {
                        Error::invalid(format!("cron expression `{expr}` never ticks: {e}"))
                    })?;
                Ok(Parsed::Cron(Box::new(cron), zone))
            }
            Self::Every { every_ms } => {
                if (*every_ms as u128) < MIN_INTERVAL.as_millis() {
                    return Err(Error::invalid(format!(
                        "every_ms {every_ms} is shorter than {} ms",
                        MIN_INTERVAL.as_millis()
                    )));
                }
                let every = Millis::try_from(*every_ms)
                    .map_err(|_| Error::invalid(format!("every_ms {every_ms} is too large")))?;
                Ok(Parsed::Every(every))
            }
        }
    }
}

impl Parsed {
    /// The first tick strictly after `t`, or `None` when there is none.
    fn after(&self, anchor: Millis, t: Millis) -> Option<Millis> {
        match self {
            Self::Every(every) => {
                if t < anchor {
                    return Some(anchor + every);
                }
                let k = (t - anchor) / every + 1;
                anchor.checked_add(k.checked_mul(*every)?)
            }
            Self::Cron(cron, tz) => {
                // Cron resolves whole seconds: from the second `t` is in, exclusive.
                let from = t.div_euclid(1000) * 1000;
                let start = tz.timestamp_millis_opt(from).single()?;
                let next = cron.find_next_occurrence(&start, false).ok()?;
                let offset = next.offset().fix();
                let next = to_millis(next.with_timezone(&Utc));
                if cron.determine_job_type() == croner::JobType::IntervalWildcard {
                    // The search walks local time, so it does not see the second pass of
                    // an hour that daylight saving repeats; a search at the offset after
                    // the change does. (A fixed time runs once, in the first pass.)
                    let fixed = offset.timestamp_millis_opt(from).single()?;
                    if let Ok(other) = cron.find_next_occurrence(&fixed, false) {
                        let other = to_millis(other.with_timezone(&Utc));
                        let real = tz.timestamp_millis_opt(other).single()?.offset().fix();
                        if other < next && other > t && real == offset {
                            return Some(other);
                        }
                    }
                }
                Some(next)
            }
        }
    }

    /// The last tick at or before `t` and strictly after `floor`, or `None`.
    fn at_or_before(&self, anchor: Millis, t: Millis, floor: Millis) -> Option<Millis> {
        let found = match self {
            Self::Every(every) => {
                if t < anchor + every {
                    return None;
                }
                anchor + (t - anchor) / every * every
            }
            Self::Cron(cron, tz) => {
                // A backward search can land inside a daylight-saving gap where the forward
                // one snaps past it: each candidate is taken as the forward search finds
                // it, so both directions agree on every tick.
                let mut at = t.div_euclid(1000) * 1000;
                let mut found = None;
                for _ in 0..8 {
                    let start = tz.timestamp_millis_opt(at).single()?;
                    let back = cron.find_previous_occurrence(&start, true).ok()?;
                    let back = to_millis(back.with_timezone(&Utc));
                    let mut tick = self.after(anchor, back - 1)?;
                    if tick <= t {
                        // The backward search also misses a repeated hour's second pass.
                        while let Some(later) = self.after(anchor, tick).filter(|&l| l <= t) {
                            tick = later;
                        }
                        found = Some(tick);
                        break;
                    }
                    at = back - 1000;
                }
                found?
            }
        };
        (found > floor).then_some(found)
    }

    /// The ticks in `[from, to]`: how many (saturating at [`MAX_COUNTED`]) and the last
    /// `keep` of them, oldest first.
    fn ticks_in(
        &self,
        anchor: Millis,
        from: Millis,
        to: Millis,
        keep: usize,
    ) -> (u64, Vec<Millis>) {
        if from > to {
            return (0, Vec::new());
        }
        let mut last = Vec::new();
        let mut at = to;
        while last.len() < keep {
            match self.at_or_before(anchor, at, from - 1) {
                Some(t) => {
                    last.push(t);
                    at = t - 1;
                }
                None => break,
            }
        }
        last.reverse();
        let count = match self {
            Self::Every(every) => {
                let first = self.after(anchor, from - 1);
                match first {
                    Some(first) if first <= to => ((to - first) / every + 1) as u64,
                    _ => 0,
                }
            }
            Self::Cron(..) => {
                if last.len() < keep {
                    last.len() as u64
                } else {
                    let mut n = 0u64;
                    let mut t = from - 1;
                    while n < MAX_COUNTED {
                        match self.after(anchor, t) {
                            Some(next) if next <= to => {
                                n += 1;
                                t = next;
                            }
                            _ => break,
                        }
                    }
                    n
                }
            }
        };
        (count.max(last.len() as u64), last)
    }
}

/// What happens to ticks that were missed: due longer ago than the schedule's grace (every
/// scheduler was down, the schedule's backend unreachable). Ticks within the grace always
/// run, one job each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "policy")]
pub enum MissedTicks {
    /// Missed ticks are dropped (counted in `ticks_skipped`).
    Skip,
    /// However many ticks were missed, one job runs for the latest of them (unless a tick
    /// within the grace runs anyway): what a nightly job wants after an outage.
    #[default]
    RunOnce,
    /// Each missed tick runs, the latest `max` of them (at most [`MAX_CATCH_UP`]), oldest
    /// first.
    RunEach {
        /// How many missed ticks run at most.
        max: u32,
    },
}

impl fmt::Display for MissedTicks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Skip => f.write_str("skip"),
            Self::RunOnce => f.write_str("once"),
            Self::RunEach { max } => write!(f, "each:{max}"),
        }
    }
}

impl FromStr for MissedTicks {
    type Err = Error;

    /// `skip`, `once`, or `each:N`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "skip" => Ok(Self::Skip),
            "once" | "run_once" => Ok(Self::RunOnce),
            other => other
                .strip_prefix("each:")
                .and_then(|n| n.parse().ok())
                .map(|max| Self::RunEach { max })
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "missed-tick policy `{s}` is not one of skip, once, each:N"
                    ))
                }),
        }
    }
}

/// The job a schedule enqueues at each tick: a [`NewJob`] without the options that belong
/// to one job (a unique key, a delay, an id: the tick gives each job its own id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduledJob {
    /// The task (handler name).
    pub task: String,
    /// Its input (default `null`).
    #[serde(default)]
    pub payload: Payload,
    /// Priority (default: the queue's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Retries after the first attempt (default: the queue's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Per-job timeout in milliseconds (default: the worker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Free metadata; each job also gets `schedule` (the name) and `tick` (RFC 3339).
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
    /// The job's group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// What a start counts against rate limits (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<u32>,
}

impl TryFrom<NewJob> for ScheduledJob {
    type Error = Error;

    fn try_from(job: NewJob) -> Result<Self> {
        let o = job.options;
        let refuse = |field: &str| {
            Err(Error::invalid(format!(
                "a scheduled job cannot set {field}: each tick's job gets its own id and runs when its tick is due"
            )))
        };
        if o.unique_key.is_some() {
            return refuse("unique_key");
        }
        if o.delay.is_some() {
            return refuse("delay");
        }
        if o.job_id.is_some() {
            return refuse("job_id");
        }
        Ok(Self {
            task: job.task,
            payload: job.payload,
            priority: o.priority,
            max_retries: o.max_retries,
            timeout_ms: o.timeout.map(|t| duration_ms(t) as u64),
            metadata: o.metadata,
            group: o.group,
            cost: o.cost,
        })
    }
}

impl ScheduledJob {
    /// The job of tick `tick` (epoch ms) of schedule `name`.
    pub fn new_job(&self, name: &str, tick: Millis) -> NewJob {
        let mut job = NewJob::with_payload(self.task.clone(), self.payload.clone());
        let o = &mut job.options;
        o.priority = self.priority;
        o.max_retries = self.max_retries;
        o.timeout = self.timeout_ms.map(Duration::from_millis);
        o.metadata.extend(self.metadata.clone());
        o.metadata.insert("schedule".into(), name.into());
        o.metadata
            .insert("tick".into(), from_millis(tick).to_rfc3339().into());
        o.group = self.group.clone();
        o.cost = self.cost;
        o.job_id = Some(tick_job_id(name, tick));
        job
    }
}

/// The id of tick `tick` of schedule `name`: the same in every process (a UUID v5 of the
/// name and the tick), so one tick can never create two jobs.
pub fn tick_job_id(name: &str, tick: Millis) -> JobId {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6463_735f_7363_6865_6475_6c65_5f74_6963);
    JobId::from_uuid(uuid::Uuid::new_v5(
        &NAMESPACE,
        format!("{name}\n{tick}").as_bytes(),
    ))
}

/// A schedule as its owner writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Its name: 1 to [`MAX_SCHEDULE_NAME_BYTES`] bytes, no control character.
    pub name: String,
    /// When it ticks.
    pub cadence: Cadence,
    /// What each tick enqueues.
    pub job: ScheduledJob,
    /// What happens to missed ticks.
    #[serde(default)]
    pub missed: MissedTicks,
    /// How late a tick may be fired and still be on time, in ms (default 60 s).
    #[serde(default = "default_grace_ms")]
    pub grace_ms: u64,
    /// A paused schedule does not tick; resuming it starts from the next tick after then
    /// (ticks while paused are not missed ticks: nobody wanted them).
    #[serde(default)]
    pub paused: bool,
}

fn default_grace_ms() -> u64 {
    DEFAULT_GRACE.as_millis() as u64
}

impl Schedule {
    /// A schedule on a cron expression (in UTC; see [`Schedule::time_zone`]).
    pub fn cron(name: impl Into<String>, expr: impl Into<String>, job: NewJob) -> Result<Self> {
        Self::with(
            name.into(),
            Cadence::Cron {
                expr: expr.into(),
                tz: utc_name(),
            },
            job,
        )
    }

    /// A schedule ticking every `every` from its creation.
    pub fn every(name: impl Into<String>, every: Duration, job: NewJob) -> Result<Self> {
        Self::with(
            name.into(),
            Cadence::Every {
                every_ms: duration_ms(every) as u64,
            },
            job,
        )
    }

    fn with(name: String, cadence: Cadence, job: NewJob) -> Result<Self> {
        Ok(Self {
            name,
            cadence,
            job: job.try_into()?,
            missed: MissedTicks::default(),
            grace_ms: default_grace_ms(),
            paused: false,
        })
    }

    /// Reads a cron cadence in an IANA time zone (checked by [`Schedule::check`]).
    pub fn time_zone(mut self, tz: impl Into<String>) -> Self {
        if let Cadence::Cron { tz: zone, .. } = &mut self.cadence {
            *zone = tz.into();
        }
        self
    }

    /// Sets the missed-tick policy.
    pub fn missed(mut self, missed: MissedTicks) -> Self {
        self.missed = missed;
        self
    }

    /// Sets how late a tick may be fired and still be on time.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace_ms = duration_ms(grace) as u64;
        self
    }

    /// Creates it paused.
    pub fn paused(mut self, paused: bool) -> Self {
        self.paused = paused;
        self
    }

    /// Checks every field, naming the one that is wrong.
    pub fn check(&self) -> Result<()> {
        check_schedule_name(&self.name)?;
        self.cadence.parse()?;
        if self.job.task.trim().is_empty() {
            return Err(Error::invalid("job.task is empty"));
        }
        if let Some(group) = &self.job.group {
            crate::group::check_group_name(group)?;
        }
        if let Some(cost) = self.job.cost {
            crate::rate::check_cost(cost)?;
        }
        if let MissedTicks::RunEach { max } = self.missed
            && !(1..=MAX_CATCH_UP).contains(&max)
        {
            return Err(Error::invalid(format!(
                "missed.max {max} is not in 1..={MAX_CATCH_UP}"
            )));
        }
        if self.grace_ms < 1_000 {
            return Err(Error::invalid(format!(
                "grace_ms {} is shorter than 1000",
                self.grace_ms
            )));
        }
        Ok(())
    }
}

/// Checks a schedule's name.
pub fn check_schedule_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_SCHEDULE_NAME_BYTES {
        return Err(Error::invalid(format!(
            "schedule name must be 1 to {MAX_SCHEDULE_NAME_BYTES} bytes"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "schedule name `{}` holds a control character",
            name.escape_debug()
        )));
    }
    Ok(())
}

/// A stored schedule: what its owner wrote and where it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// The schedule as written.
    pub schedule: Schedule,
    /// Its next tick; `None` while paused or when the cadence has no tick left.
    pub next_run: Option<DateTime<Utc>>,
    /// The last tick that enqueued a job.
    #[serde(default)]
    pub last_tick: Option<DateTime<Utc>>,
    /// That tick's job.
    #[serde(default)]
    pub last_job: Option<JobId>,
    /// Ticks that enqueued a job.
    #[serde(default)]
    pub ticks_run: u64,
    /// Ticks that were missed and dropped by the policy.
    #[serde(default)]
    pub ticks_skipped: u64,
    /// Where an interval counts from (creation, or the last change of the cadence).
    pub anchor: DateTime<Utc>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its owner last changed it.
    pub updated_at: DateTime<Utc>,
    /// Raised by every write: a scheduler's write applies only to the revision it read.
    pub revision: u64,
}

/// What firing a schedule does: the jobs of the ticks that run, and the schedule after.
#[derive(Clone, Debug, PartialEq)]
pub struct Firing {
    /// The ticks that run, oldest first, each with its job.
    pub jobs: Vec<(Millis, NewJob)>,
    /// The schedule after firing.
    pub record: ScheduleRecord,
}

impl ScheduleRecord {
    /// A new schedule, written at `now` (checked first).
    pub fn create(schedule: Schedule, now: Millis) -> Result<Self> {
        schedule.check()?;
        let mut record = Self {
            schedule,
            next_run: None,
            last_tick: None,
            last_job: None,
            ticks_run: 0,
            ticks_skipped: 0,
            anchor: from_millis(now),
            created_at: from_millis(now),
            updated_at: from_millis(now),
            revision: 1,
        };
        record.next_run = record.next_after(now)?;
        Ok(record)
    }

    /// This schedule rewritten by its owner at `now`: a new cadence (or a resume) starts
    /// from the next tick after `now`; a new job, policy or grace keeps the next run.
    pub fn update(&self, schedule: Schedule, now: Millis) -> Result<Self> {
        schedule.check()?;
        if schedule.name != self.schedule.name {
            return Err(Error::invalid(format!(
                "schedule name `{}` cannot change to `{}`",
                self.schedule.name, schedule.name
            )));
        }
        let mut next = self.clone();
        let recompute = schedule.cadence != self.schedule.cadence
            || schedule.paused != self.schedule.paused
            || (self.next_run.is_none() && !schedule.paused);
        if schedule.cadence != self.schedule.cadence {
            next.anchor = from_millis(now);
        }
        next.schedule = schedule;
        next.updated_at = from_millis(now);
        next.revision += 1;
        if recompute {
            next.next_run = next.next_after(now)?;
        }
        Ok(next)
    }

    /// The first tick strictly after `now` (`None` when paused or none is left).
    fn next_after(&self, now: Millis) -> Result<Option<DateTime<Utc>>> {
        if self.schedule.paused {
            return Ok(None);
        }
        let cadence = self.schedule.cadence.parse()?;
        Ok(cadence.after(to_millis(self.anchor), now).map(from_millis))
    }

    /// Whether a tick is due at `now`.
    pub fn is_due(&self, now: Millis) -> bool {
        !self.schedule.paused && self.next_run.is_some_and(|t| to_millis(t) <= now)
    }

    /// What firing this schedule at `now` does, or `None` when no tick is due. Every due
    /// tick within the grace runs (at most [`MAX_CATCH_UP`]); older ones as the
    /// [`MissedTicks`] policy says; the next run becomes the first tick after `now`.
    pub fn fire(&self, now: Millis) -> Result<Option<Firing>> {
        let Some(due) = self.next_run.map(to_millis).filter(|_| self.is_due(now)) else {
            return Ok(None);
        };
        let cadence = self.schedule.cadence.parse()?;
        let anchor = to_millis(self.anchor);
        let grace = Millis::try_from(self.schedule.grace_ms).unwrap_or(Millis::MAX);
        let on_time_from = due.max(now.saturating_sub(grace));
        let (on_time_count, mut ticks) =
            cadence.ticks_in(anchor, on_time_from, now, MAX_CATCH_UP as usize);
        let keep_missed = match self.schedule.missed {
            MissedTicks::Skip => 0,
            MissedTicks::RunOnce => usize::from(ticks.is_empty()),
            MissedTicks::RunEach { max } => max as usize,
        };
        let (missed_count, missed) = cadence.ticks_in(anchor, due, on_time_from - 1, keep_missed);
        let run = missed.len() + ticks.len();
        let skipped = (missed_count + on_time_count).saturating_sub(run as u64);
        let mut all = missed;
        all.append(&mut ticks);

        let mut record = self.clone();
        record.next_run = cadence.after(anchor, now).map(from_millis);
        record.revision += 1;
        record.ticks_run += all.len() as u64;
        record.ticks_skipped = record.ticks_skipped.saturating_add(skipped);
        if let Some(&last) = all.last() {
            record.last_tick = Some(from_millis(last));
            record.last_job = Some(tick_job_id(&self.schedule.name, last));
        }
        let jobs = all
            .into_iter()
            .map(|t| (t, self.schedule.job.new_job(&self.schedule.name, t)))
            .collect();
        Ok(Some(Firing { jobs, record }))
    }

    /// The stored form (JSON): what a backend keeps and compares.
    pub fn encode(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::codec("schedule could not be encoded", e))
    }

    /// Reads the stored form.
    pub fn decode(name: &str, text: &str) -> Result<Self> {
        serde_json::from_str(text)
            .map_err(|e| Error::corrupt(format!("schedule `{name}` cannot be decoded: {e}")))
    }
}

/// Which schedules [`crate::backend::Broker::read_schedules`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScheduleRead {
    /// Every schedule.
    All,
    /// Those whose next run is due at the backend's now, earliest first, at most `limit`.
    Due {
        /// At most this many.
        limit: usize,
    },
    /// The one of this name (none when it does not exist).
    One(String),
}

/// What a backend holds: stored forms, compared byte for byte by the next write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredSchedules {
    /// The backend's now, in epoch ms (every scheduler decides on the backend's clock).
    pub now_ms: Millis,
    /// `(name, stored form)` of each schedule read.
    pub schedules: Vec<(String, String)>,
    /// The earliest next run of any schedule (paused ones have none), to sleep until.
    pub next_due_ms: Option<Millis>,
}

/// A compare-and-set of one schedule, with the jobs it enqueues in the same atomic step.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleWrite {
    /// The schedule.
    pub name: String,
    /// The stored form the writer read (`None`: the schedule must not exist). When the
    /// backend holds anything else, nothing is written and no job is created.
    pub expected: Option<String>,
    /// The new stored form and its next run (`None`: delete the schedule).
    pub new: Option<(String, Option<Millis>)>,
    /// Jobs created with the write (each as [`crate::JobStore::enqueue`] would: an id that
    /// exists returns that job).
    pub jobs: Vec<NewJob>,
}

/// What a [`ScheduleWrite`] did.
#[derive(Debug)]
pub enum ScheduleWritten {
    /// Written; each job's id, or why it was refused.
    Applied(Vec<Result<JobId>>),
    /// The schedule changed since it was read: nothing happened.
    Conflict,
}

/// What one pass of [`Schedules::run_due_schedules`] did.
#[derive(Debug)]
pub struct TickReport {
    /// Per schedule that fired: its name and the jobs its ticks created.
    pub fired: Vec<(String, Vec<JobId>)>,
    /// Schedules another scheduler changed between this one's read and write.
    pub conflicts: usize,
    /// Schedules or jobs that could not be handled, with why (the others went on).
    pub errors: Vec<(String, Error)>,
    /// The earliest next run of any schedule after this pass.
    pub next_due: Option<DateTime<Utc>>,
    /// The backend's now when the pass read the schedules.
    pub now: DateTime<Utc>,
}

/// What [`Schedules::change_schedule`] may do.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Create or overwrite.
    Put,
    /// Change an existing, readable schedule.
    Change,
    /// Delete an existing schedule, readable or not.
    Delete,
}

/// How many times an owner's change of a schedule is tried against racing schedulers.
const WRITE_ATTEMPTS: usize = 16;

/// Job schedulers on any backend: create, change, pause, delete, list, and fire due
/// ticks. Implemented for every [`crate::backend::Broker`] (so for every backend); do not
/// implement it yourself. Each method reads the schedule, decides with the pure functions
/// of [`ScheduleRecord`], and writes with one compare-and-set.
#[async_trait::async_trait]
pub trait Schedules: crate::backend::Broker {
    /// Creates the schedule, or changes the one of that name (an upsert): a new cadence
    /// starts from the next tick after now; a new job, policy or grace keeps the next run.
    /// Checked first (an invalid cron expression, time zone or interval names the field).
    async fn put_schedule(&self, schedule: Schedule) -> Result<ScheduleRecord> {
        schedule.check()?;
        let name = schedule.name.clone();
        self.change_schedule(&name, Mode::Put, |old, now| match old {
            None => ScheduleRecord::create(schedule.clone(), now).map(Some),
            Some(old) => old.update(schedule.clone(), now).map(Some),
        })
        .await
        .map(|r| r.expect("a put writes a schedule"))
    }

    /// The schedule of this name, or `Error::ScheduleNotFound`.
    async fn schedule(&self, name: &str) -> Result<ScheduleRecord> {
        let snap = self.read_schedules(&ScheduleRead::One(name.into())).await?;
        match snap.schedules.first() {
            Some((n, text)) => ScheduleRecord::decode(n, text),
            None => Err(Error::ScheduleNotFound { name: name.into() }),
        }
    }

    /// Every schedule, by name.
    async fn schedules(&self) -> Result<Vec<ScheduleRecord>> {
        let snap = self.read_schedules(&ScheduleRead::All).await?;
        let mut out = snap
            .schedules
            .iter()
            .map(|(n, text)| ScheduleRecord::decode(n, text))
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.schedule.name.cmp(&b.schedule.name));
        Ok(out)
    }

    /// Pauses a schedule: it does not tick until resumed. Idempotent.
    async fn pause_schedule(&self, name: &str) -> Result<ScheduleRecord> {
        self.set_schedule_paused(name, true).await
    }

    /// Resumes a schedule from the next tick after now (ticks while it was paused do not
    /// run). Idempotent.
    async fn resume_schedule(&self, name: &str) -> Result<ScheduleRecord> {
        self.set_schedule_paused(name, false).await
    }

    /// Deletes a schedule (the jobs it enqueued stay). `Error::ScheduleNotFound` when there
    /// is none of that name.
    async fn delete_schedule(&self, name: &str) -> Result<()> {
        check_schedule_name(name)?;
        self.change_schedule(name, Mode::Delete, |_, _| Ok(None))
            .await
            .map(|_| ())
    }

    /// Fires every due schedule once (at most [`SCHEDULES_PER_READ`] per pass): each due
    /// tick enqueues its job exactly once, whatever else runs this at the same time. What
    /// a worker's scheduler runs every [`SCHEDULE_POLL`]; call it yourself to run schedules
    /// without a worker.
    async fn run_due_schedules(&self) -> Result<TickReport> {
        let snap = self
            .read_schedules(&ScheduleRead::Due {
                limit: SCHEDULES_PER_READ,
            })
            .await?;
        let mut report = TickReport {
            fired: Vec::new(),
            conflicts: 0,
            errors: Vec::new(),
            next_due: snap.next_due_ms.map(from_millis),
            now: from_millis(snap.now_ms),
        };
        for (name, text) in snap.schedules {
            let firing =
                ScheduleRecord::decode(&name, &text).and_then(|record| record.fire(snap.now_ms));
            let firing = match firing {
                Ok(Some(firing)) => firing,
                Ok(None) => continue,
                Err(e) => {
                    report.errors.push((name, e));
                    continue;
                }
            };
            let next_run = firing.record.next_run.map(to_millis);
            let write = ScheduleWrite {
                name: name.clone(),
                expected: Some(text),
                new: Some((firing.record.encode()?, next_run)),
                jobs: firing.jobs.into_iter().map(|(_, job)| job).collect(),
            };
            match self.write_schedule(write).await? {
                ScheduleWritten::Conflict => report.conflicts += 1,
                ScheduleWritten::Applied(results) => {
                    let mut ids = Vec::new();
                    for r in results {
                        match r {
                            Ok(id) => ids.push(id),
                            Err(e) => report.errors.push((name.clone(), e)),
                        }
                    }
                    report.fired.push((name, ids));
                }
            }
            if let Some(t) = next_run {
                let t = from_millis(t);
                report.next_due = Some(report.next_due.map_or(t, |d| d.min(t)));
            }
        }
        Ok(report)
    }

    #[doc(hidden)]
    async fn set_schedule_paused(&self, name: &str, paused: bool) -> Result<ScheduleRecord> {
        check_schedule_name(name)?;
        self.change_schedule(name, Mode::Change, |old, now| {
            let old = old.expect("a change reads the schedule first");
            if old.schedule.paused == paused {
                return Ok(Some(old.clone()));
            }
            let mut schedule = old.schedule.clone();
            schedule.paused = paused;
            old.update(schedule, now).map(Some)
        })
        .await
        .map(|r| r.expect("pausing keeps the schedule"))
    }

    #[doc(hidden)]
    async fn change_schedule<F>(
        &self,
        name: &str,
        mode: Mode,
        change: F,
    ) -> Result<Option<ScheduleRecord>>
    where
        F: Fn(Option<&ScheduleRecord>, Millis) -> Result<Option<ScheduleRecord>> + Send + Sync,
    {
        for _ in 0..WRITE_ATTEMPTS {
            let snap = self.read_schedules(&ScheduleRead::One(name.into())).await?;
            let stored = snap.schedules.into_iter().next().map(|(_, t)| t);
            let old = stored
                .as_deref()
                .map(|t| ScheduleRecord::decode(name, t))
                .transpose();
            if stored.is_none() && mode != Mode::Put {
                return Err(Error::ScheduleNotFound { name: name.into() });
            }
            // A stored form that cannot be decoded can still be overwritten or deleted.
            let old = match old {
                Ok(old) => old,
                Err(_) if mode != Mode::Change => None,
                Err(e) => return Err(e),
            };
            let new = change(old.as_ref(), snap.now_ms)?;
            if new.is_some() && new == old {
                return Ok(new);
            }
            let encoded = match &new {
                Some(r) => Some((r.encode()?, r.next_run.map(to_millis))),
                None => None,
            };
            let write = ScheduleWrite {
                name: name.into(),
                expected: stored,
                new: encoded,
                jobs: Vec::new(),
            };
            if let ScheduleWritten::Applied(_) = self.write_schedule(write).await? {
                return Ok(new);
            }
        }
        Err(Error::backend(
            "schedules",
            format!("schedule `{name}` kept changing under {WRITE_ATTEMPTS} attempts to write it"),
        ))
    }
}

impl<T: crate::backend::Broker + ?Sized> Schedules for T {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> Millis {
        to_millis(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
    }

    fn job() -> NewJob {
        NewJob::new("t", &1).unwrap()
    }

    fn ticks(f: &Firing) -> Vec<String> {
        f.jobs
            .iter()
            .map(|(t, _)| from_millis(*t).to_rfc3339())
            .collect()
    }

    #[test]
    fn an_interval_ticks_from_its_anchor() {
        let s = Schedule::every("s", Duration::from_secs(10), job()).unwrap();
        let r = ScheduleRecord::create(s, 1_000).unwrap();
        assert_eq!(r.next_run.map(to_millis), Some(11_000));
        assert!(r.fire(10_999).unwrap().is_none());
        let f = r.fire(11_000).unwrap().unwrap();
        assert_eq!(f.jobs.len(), 1);
        assert_eq!(f.jobs[0].0, 11_000);
        assert_eq!(f.record.next_run.map(to_millis), Some(21_000));
        assert_eq!(f.record.revision, r.revision + 1);
        assert_eq!(f.jobs[0].1.options.job_id, Some(tick_job_id("s", 11_000)));
        // Within the grace (60 s) every due tick runs: 11, 21, 31 s.
        let f = r.fire(35_000).unwrap().unwrap();
        assert_eq!(
            f.jobs.iter().map(|j| j.0).collect::<Vec<_>>(),
            [11_000, 21_000, 31_000]
        );
        assert_eq!(f.record.ticks_run, 3);
        assert_eq!(f.record.ticks_skipped, 0);
    }

    #[test]
    fn missed_tick_policies() {
        // Ticks every 10 s from 0; everything down until 1000 s: 100 ticks due, those at
        // 950..=1000 s within the 60 s grace.
        let base = |missed| {
            let s = Schedule::every("s", Duration::from_secs(10), job())
                .unwrap()
                .missed(missed);
            ScheduleRecord::create(s, 0).unwrap()
        };
        let now = 1_000_500;
        let f = base(MissedTicks::Skip).fire(now).unwrap().unwrap();
        assert_eq!(f.jobs.len(), 6, "the on-time ticks 950..=1000 s");
        assert_eq!(f.record.ticks_skipped, 94);
        assert_eq!(f.record.next_run.map(to_millis), Some(1_010_000));
        let f = base(MissedTicks::RunOnce).fire(now).unwrap().unwrap();
        assert_eq!(
            f.jobs.len(),
            6,
            "on-time ticks run; the missed ones are covered by them"
        );
        let f = base(MissedTicks::RunEach { max: 3 })
            .fire(now)
            .unwrap()
            .unwrap();
        assert_eq!(
            f.jobs.iter().map(|j| j.0 / 1000).collect::<Vec<_>>(),
            [920, 930, 940, 950, 960, 970, 980, 990, 1000]
        );
        assert_eq!(f.record.ticks_skipped, 91);
        // An hourly job down for a day: nothing within the grace.
        let hourly = |missed| {
            let s = Schedule::every("h", Duration::from_secs(3600), job())
                .unwrap()
                .missed(missed);
            ScheduleRecord::create(s, 0).unwrap()
        };
        let day = 86_400_000 + 120_000;
        assert!(
            hourly(MissedTicks::Skip)
                .fire(day)
                .unwrap()
                .unwrap()
                .jobs
                .is_empty()
        );
        let once = hourly(MissedTicks::RunOnce).fire(day).unwrap().unwrap();
        assert_eq!(
            once.jobs.iter().map(|j| j.0).collect::<Vec<_>>(),
            [86_400_000]
        );
        assert_eq!(once.record.ticks_skipped, 23);
        assert_eq!(once.record.last_tick.map(to_millis), Some(86_400_000));
        let each = hourly(MissedTicks::RunEach { max: 2 })
            .fire(day)
            .unwrap()
            .unwrap();
        assert_eq!(
            each.jobs.iter().map(|j| j.0).collect::<Vec<_>>(),
            [82_800_000, 86_400_000]
        );
    }

    #[test]
    fn cron_follows_its_time_zone_across_daylight_saving() {
        let at = |expr: &str, start: &str, now: &str| {
            let s = Schedule::cron("c", expr, job())
                .unwrap()
                .time_zone("Europe/Berlin")
                .missed(MissedTicks::RunEach { max: 100 });
            let r = ScheduleRecord::create(s, ms(start)).unwrap();
            r.fire(ms(now))
                .unwrap()
                .map(|f| ticks(&f))
                .unwrap_or_default()
        };
        // 02:30 does not exist on 2027-03-28 (02:00 -> 03:00): it runs at 03:00 local.
        assert_eq!(
            at("30 2 * * *", "2027-03-26T12:00:00Z", "2027-03-29T12:00:00Z"),
            [
                "2027-03-27T01:30:00+00:00",
                "2027-03-28T01:00:00+00:00",
                "2027-03-29T00:30:00+00:00"
            ]
        );
        // 02:30 happens twice on 2027-10-31 (03:00 -> 02:00): it runs once, the first.
        assert_eq!(
            at("30 2 * * *", "2027-10-30T12:00:00Z", "2027-11-01T12:00:00Z"),
            ["2027-10-31T00:30:00+00:00", "2027-11-01T01:30:00+00:00"]
        );
        // Every hour at :15 ticks in both repeated hours.
        assert_eq!(
            at("15 * * * *", "2027-10-30T23:30:00Z", "2027-10-31T02:30:00Z"),
            [
                "2027-10-31T00:15:00+00:00",
                "2027-10-31T01:15:00+00:00",
                "2027-10-31T02:15:00+00:00"
            ]
        );
        // And in UTC a daily job is simply daily.
        let s = Schedule::cron("u", "0 2 * * *", job()).unwrap();
        let r = ScheduleRecord::create(s, ms("2027-03-27T12:00:00Z")).unwrap();
        assert_eq!(
            r.next_run.map(|t| t.to_rfc3339()).as_deref(),
            Some("2027-03-28T02:00:00+00:00")
        );
    }

    #[test]
    fn updates_pauses_and_checks() {
        let s = Schedule::every("s", Duration::from_secs(10), job()).unwrap();
        let r = ScheduleRecord::create(s.clone(), 0).unwrap();
        // A new job keeps the next run; a new cadence starts from now.
        let mut other = s.clone();
        other.job.task = "u".into();
        let u = r.update(other, 5_000).unwrap();
        assert_eq!(u.next_run, r.next_run);
        assert_eq!(u.revision, 2);
        let faster = Schedule::every("s", Duration::from_secs(3), job()).unwrap();
        let u = r.update(faster, 5_000).unwrap();
        assert_eq!(u.next_run.map(to_millis), Some(8_000));
        // Paused: never due; resumed: from the next tick after then, nothing missed.
        let p = r.update(s.clone().paused(true), 5_000).unwrap();
        assert_eq!(p.next_run, None);
        assert!(p.fire(1_000_000).unwrap().is_none());
        let back = p.update(s.clone(), 1_000_000).unwrap();
        assert_eq!(back.next_run.map(to_millis), Some(1_010_000));
        assert!(back.fire(1_010_000).unwrap().unwrap().record.ticks_skipped == 0);

        let bad = |s: Schedule| s.check().unwrap_err().to_string();
        assert!(bad(Schedule::cron("c", "61 * * * *", job()).unwrap()).contains("cron expression"));
        assert!(
            bad(Schedule::cron("c", "0 2 * * *", job())
                .unwrap()
                .time_zone("Mars/Olympus"))
            .contains("Mars/Olympus")
        );
        assert!(
            bad(Schedule::every("c", Duration::from_millis(10), job()).unwrap())
                .contains("every_ms")
        );
        assert!(bad(Schedule::every("", Duration::from_secs(1), job()).unwrap()).contains("name"));
        assert!(bad(s.clone().missed(MissedTicks::RunEach { max: 0 })).contains("missed.max"));
        let e = Schedule::every("k", Duration::from_secs(1), job().unique_key("x")).unwrap_err();
        assert!(e.to_string().contains("unique_key"), "{e}");
        assert_eq!(
            "each:5".parse::<MissedTicks>().unwrap(),
            MissedTicks::RunEach { max: 5 }
        );
        assert!("sometimes".parse::<MissedTicks>().is_err());
    }

    #[test]
    fn the_stored_form_round_trips() {
        let s = Schedule::cron("n", "0 2 * * *", job())
            .unwrap()
            .time_zone("Europe/Berlin")
            .missed(MissedTicks::RunEach { max: 3 });
        let r = ScheduleRecord::create(s, 1_000).unwrap();
        let text = r.encode().unwrap();
        assert_eq!(ScheduleRecord::decode("n", &text).unwrap(), r);
        assert!(
            ScheduleRecord::decode("n", "{")
                .unwrap_err()
                .to_string()
                .contains("`n`")
        );
        assert_ne!(tick_job_id("n", 1), tick_job_id("n", 2));
        assert_ne!(tick_job_id("n", 1), tick_job_id("m", 1));
        assert_eq!(tick_job_id("n", 1), tick_job_id("n", 1));
    }
}
