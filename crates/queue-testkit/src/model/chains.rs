//! Chains in the model: a job waiting for another to end before it is placed
//! (`released_due` says where it goes then).

use queue_core::backend::released_due;

use super::*;

impl Model {
    /// Whether the job at `i` waits for another job to end.
    pub(super) fn chained(&self, i: usize) -> bool {
        self.jobs[i].record.after.is_some()
    }

    /// The job at `i`, just created, waits for `ahead` to end.
    pub(super) fn chain(&mut self, i: usize, ahead: JobId) {
        let job = &mut self.jobs[i];
        job.record.after = Some(ahead);
        job.due = None;
        job.place = 0;
    }

    /// The job at `i` ended: one that ended while waiting no longer waits, the job waiting
    /// for it now waits for the one it waited for, and its unique key goes back to that
    /// one while it is unfinished and the key is free; else the job waiting for it is
    /// placed.
    pub(super) fn unchain(&mut self, i: usize, now: Millis) {
        let waited = self.jobs[i].record.after.take();
        if let Some(ahead) = waited
            && let Some(key) = self.jobs[i].record.unique_key.clone()
            && self.holder(&key, self.jobs[i].partition).is_none()
            && let Some(a) = self.jobs.iter_mut().find(|j| j.record.job_id == ahead)
            && a.record.status.is_active()
            && a.record.unique_key.as_deref() == Some(key.as_str())
        {
            a.key_let_go = false;
        }
        let id = self.jobs[i].record.job_id;
        let Some(w) = self
            .jobs
            .iter()
            .position(|j| j.record.after == Some(id) && j.record.status == JobStatus::Queued)
        else {
            return;
        };
        if let Some(ahead) = waited {
            self.jobs[w].record.after = Some(ahead);
            return;
        }
        let place = self.place();
        let job = &mut self.jobs[w];
        job.record.after = None;
        match released_due(job.record.run_at.map(to_millis), now) {
            Some(due) => job.due = Some(due),
            None => {
                job.due = None;
                job.place = place;
            }
        }
        if job.record.group.is_some() {
            self.refresh_lanes();
        }
    }
}
