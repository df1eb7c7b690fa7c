//! Unique keys and their modes in the model: what an enqueue does when another job holds
//! its key (`on_key_held`, as every backend).

use queue_core::backend::{Holder, KeyAction, on_key_held};

use super::*;

impl Model {
    /// The job holding `key`: the newest active (queued or processing) job with it (a
    /// debounce's new run takes the key from the one that runs).
    pub(super) fn holder(&self, key: &str) -> Option<JobId> {
        self.jobs
            .iter()
            .rev()
            .find(|j| {
                j.record.unique_key.as_deref() == Some(key)
                    && matches!(j.record.status, JobStatus::Queued | JobStatus::Processing)
            })
            .map(|j| j.record.job_id)
    }

    /// Applies the new job's key mode to its key's holder, if any: `None` when the job is
    /// to be created, else its answer.
    pub(super) fn keyed(&mut self, job: &NewJob, now: Millis) -> Option<Result<JobRecord>> {
        let Some(key) = &job.options.unique_key else {
            return None;
        };
        let mode = job.options.key_mode;
        let active = self.holder(key).map(|id| {
            let i = self.index(id);
            (id, Holder::of(&self.view(i), self.jobs[i].lease.is_some()))
        });
        let held = active.or_else(|| {
            let window = duration_ms(mode.window()?);
            // The newest job of the key, by creation then id (as every backend).
            let newest = self
                .jobs
                .iter()
                .filter(|j| j.record.unique_key.as_deref() == Some(key))
                .max_by_key(|j| (j.record.created_at, j.record.job_id))?;
            let created = to_millis(newest.record.created_at);
            (now - created < window).then_some((newest.record.job_id, Holder::Recent))
        });
        let (holder, state) = held?;
        let i = self.index(holder);
        Some(match on_key_held(mode.kind(), state) {
            KeyAction::Create => return None,
            KeyAction::Refuse => Err(Error::AlreadyExists {
                unique_key: key.clone(),
                job_id: holder,
            }),
            KeyAction::Answer => Ok(self.view(i)),
            KeyAction::Replace => {
                let delay = job.options.delay.map(duration_ms).unwrap_or(0);
                let j = &mut self.jobs[i];
                j.record.payload = job.payload.clone();
                j.record.replaced += 1;
                j.record.run_at = (delay > 0).then(|| from_millis(now + delay));
                if delay > 0 {
                    j.due = Some(now + delay);
                    j.place = 0;
                }
                if j.record.group.is_some() {
                    self.refresh_lanes();
                }
                Ok(self.view(i))
            }
        })
    }

    fn index(&self, id: JobId) -> usize {
        self.jobs
            .iter()
            .position(|j| j.record.job_id == id)
            .expect("the holder exists")
    }
}
