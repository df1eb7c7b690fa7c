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

    /// The job at `i` ended: it no longer waits, and the job waiting for it is placed (its
    /// unique key's holder is the newest unfinished job of the key: the one it waited for,
    /// when it ended while waiting).
    pub(super) fn unchain(&mut self, i: usize, now: Millis) {
        self.jobs[i].record.after = None;
        let id = self.jobs[i].record.job_id;
        let Some(w) = self
            .jobs
            .iter()
            .position(|j| j.record.after == Some(id) && j.record.status == JobStatus::Queued)
        else {
            return;
        };
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
