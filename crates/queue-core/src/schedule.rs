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

mod cadence;
mod driver;

pub use cadence::Cadence;
use cadence::utc_name;
pub use driver::{Schedules, TickReport};

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
                "a scheduled job cannot set {field}: each tick's job gets its own id and runs when its tick is due (a typed job's {field} comes from its type: clear it with `NewJob::without_{field}`)"
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

#[cfg(test)]
mod tests;
