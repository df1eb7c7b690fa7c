//! The scheduler's side: reading the schedules, firing what is due, writing each one back
//! only if it is still the one read (the compare-and-set that makes each tick fire once).

use super::*;

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
pub(super) const WRITE_ATTEMPTS: usize = 16;

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
