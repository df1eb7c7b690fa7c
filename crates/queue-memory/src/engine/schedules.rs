//! Schedules: their stored forms and next runs, read and written by the scheduler.

use super::*;

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
            return Err(queue_core::backend::too_many("schedules", MAX_SCHEDULES));
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
}
