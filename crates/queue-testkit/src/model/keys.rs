//! Unique keys and their modes in the model: what an enqueue does when another job holds
//! its key (`on_key_held`, as every backend).

use queue_core::backend::{Holder, KeyAction, on_key_held};

use super::*;

impl Model {
    /// The job holding `key` in `partition`: the active (queued or processing) job with it
    /// that did not let it go (a debounce's next run and a keep-latest's waiting job take
    /// the key from the one that runs).
    pub(super) fn holder(&self, key: &str, partition: u32) -> Option<JobId> {
        self.jobs
            .iter()
            .rev()
            .find(|j| {
                j.record.unique_key.as_deref() == Some(key)
                    && j.partition == partition
                    && !j.key_let_go
                    && matches!(j.record.status, JobStatus::Queued | JobStatus::Processing)
            })
            .map(|j| j.record.job_id)
    }

    /// Applies the new job's key mode to its key's holder, if any: `Ok(after)` when the job
    /// is to be created (chained behind `after`), else its answer.
    pub(super) fn keyed(
        &mut self,
        job: &NewJob,
        partition: u32,
        now: Millis,
    ) -> std::result::Result<Option<JobId>, Box<Result<JobRecord>>> {
        match self.key_answer(job, partition, now) {
            None => Ok(None),
            Some(Ok(ahead)) => Ok(Some(ahead)),
            Some(Err(answer)) => Err(Box::new(answer)),
        }
    }

    fn key_answer(
        &mut self,
        job: &NewJob,
        partition: u32,
        now: Millis,
    ) -> Option<std::result::Result<JobId, Result<JobRecord>>> {
        let Some(key) = &job.options.unique_key else {
            return None;
        };
        let mode = job.options.key_mode;
        let active = self.holder(key, partition).map(|id| {
            let i = self.index(id);
            (id, Holder::of(&self.view(i), self.jobs[i].lease.is_some()))
        });
        let held = active.or_else(|| {
            let window = duration_ms(mode.window()?);
            // The newest job of the key, by creation then id (as every backend).
            let newest = self
                .jobs
                .iter()
                .filter(|j| j.record.unique_key.as_deref() == Some(key) && j.partition == partition)
                .max_by_key(|j| (j.record.created_at, j.record.job_id))?;
            let created = to_millis(newest.record.created_at);
            (now - created < window).then_some((newest.record.job_id, Holder::Recent))
        });
        let (holder, state) = held?;
        let i = self.index(holder);
        let action = on_key_held(mode.kind(), state);
        if matches!(
            action,
            KeyAction::Create | KeyAction::Chain | KeyAction::Supersede
        ) && state == Holder::Started
        {
            // The running holder goes on without the key; the new job takes it.
            self.jobs[i].key_let_go = true;
        }
        Some(Err(match action {
            KeyAction::Create => return None,
            KeyAction::Chain => return Some(Ok(holder)),
            KeyAction::Supersede => {
                // The holder is asked to stop (a parent waiting on children ends at once).
                self.cancel(holder, now).expect("the holder exists");
                let i = self.index(holder);
                return self.jobs[i].record.status.is_active().then_some(Ok(holder));
            }
            KeyAction::Refuse => Err(Error::AlreadyExists {
                unique_key: key.clone(),
                job_id: holder,
            }),
            KeyAction::Answer => Ok(self.view(i)),
            KeyAction::Replace => {
                let j = &mut self.jobs[i];
                j.record.payload = job.payload.clone();
                j.record.replaced += 1;
                let Some(delay) = job.options.key_mode.restart_delay().map(duration_ms) else {
                    return Some(Err(Ok(self.view(i))));
                };
                j.record.run_at = (delay > 0).then(|| from_millis(now + delay));
                if delay > 0 && j.record.after.is_none() {
                    j.due = Some(now + delay);
                    j.place = 0;
                }
                if j.record.group.is_some() {
                    self.refresh_lanes();
                }
                Ok(self.view(i))
            }
        }))
    }

    fn index(&self, id: JobId) -> usize {
        self.jobs
            .iter()
            .position(|j| j.record.job_id == id)
            .expect("the holder exists")
    }
}
