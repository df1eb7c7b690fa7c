//! Unique keys and their modes: what an enqueue does when another job holds its key
//! (`queue_core::backend::on_key_held` decides; this keeps the tables in step).

use queue_core::backend::{Holder, KeyAction, on_key_held};

use super::*;

impl Tables {
    /// Applies the new job's key mode to its key's holder, if any: whether the job is to be
    /// created (and waits for another job to end), the holder cancelled first, or answered.
    pub(super) fn keyed(&mut self, job: &NewJob, now: Millis) -> Keyed {
        let create = Keyed::Create { after: None };
        let Some(key) = &job.options.unique_key else {
            return create;
        };
        let mode = job.options.key_mode;
        let active = self.dedup.get(key).map(|id| {
            let entry = &self.jobs[id];
            (*id, Holder::of(&entry.record, entry.lease.is_some()))
        });
        let held = active.or_else(|| {
            let window = duration_ms(mode.window()?);
            let &(created, id) = self.by_key.get(key)?.iter().next_back()?;
            (now - created < window).then_some((id, Holder::Recent))
        });
        let Some((holder, state)) = held else {
            return create;
        };
        let answer = match on_key_held(mode.kind(), state) {
            KeyAction::Create => return create,
            KeyAction::Chain => {
                return Keyed::Create {
                    after: Some(holder),
                };
            }
            KeyAction::Supersede => return Keyed::Supersede(holder),
            KeyAction::Refuse => Err(Error::AlreadyExists {
                unique_key: key.clone(),
                job_id: holder,
            }),
            KeyAction::Answer => Ok((shown(&self.jobs[&holder].record), false)),
            KeyAction::Replace => Ok((self.replace(holder, job, now), false)),
        };
        Keyed::Answer(Box::new(answer))
    }

    /// A replacement: the pending `holder` takes `job`'s payload; a debounce moves its start
    /// to its delay from now (one waiting for another job to end keeps waiting).
    fn replace(&mut self, holder: JobId, job: &NewJob, now: Millis) -> JobRecord {
        let entry = self.jobs.get_mut(&holder).expect("the key's holder exists");
        let (ready_position, due) = (entry.ready_position, entry.record.run_at.map(to_millis));
        entry.record.payload = job.payload.clone();
        entry.record.replaced += 1;
        let Some(delay) = job.options.key_mode.restart_delay().map(duration_ms) else {
            return shown(&entry.record);
        };
        entry.record.run_at = (delay > 0).then(|| from_millis(now + delay));
        if entry.record.after.is_some() {
            return shown(&entry.record);
        }
        // A job keeps its `run_at` after it became ready: the delayed set says where it is.
        if !due.is_some_and(|due| self.delayed.remove(&(due, holder))) {
            self.remove_ready(holder, ready_position);
        }
        if delay > 0 {
            self.delayed.insert((now + delay, holder));
            self.woken = true;
        } else {
            self.push_ready(holder, ready_position);
        }
        shown(&self.jobs[&holder].record)
    }
}

/// What a keyed enqueue does: create the job (`after`: the job it waits for), cancel the
/// holder and then create it (behind the holder while that one still runs), or answer.
pub(super) enum Keyed {
    Create { after: Option<JobId> },
    Supersede(JobId),
    Answer(Box<Result<(JobRecord, bool)>>),
}
