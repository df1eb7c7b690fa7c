//! Schedules in the model: each tick once, missed ticks by policy.

use super::*;

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
    pub(super) fn after(&self, t: Millis) -> Millis {
        let mut k = (t - self.anchor).div_euclid(self.every_ms) + 1;
        if k < 1 {
            k = 1;
        }
        self.anchor + k * self.every_ms
    }
}

impl Model {
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
                // A schedule's ticks are created in partition 0.
                self.placing = Some(0);
                let made = self.enqueue(job, now);
                self.placing = None;
                if let Ok(r) = made {
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
}
