//! Retention and delete in the model.

use super::*;

impl Model {
    /// Delete finished records older than the retention, oldest first; a child whose
    /// parent is unfinished is kept instead, its retention counted again from now.
    pub fn sweep(&mut self, limit: usize, now: Millis) -> usize {
        let cutoff = now - duration_ms(self.config.retention);
        let mut due: Vec<(Millis, JobId)> = self
            .jobs
            .iter()
            .filter(|j| j.record.status.is_terminal())
            .filter_map(|j| {
                j.kept
                    .or(j.record.completed_at.map(to_millis))
                    .filter(|at| *at <= cutoff)
                    .map(|at| (at, j.record.job_id))
            })
            .collect();
        due.sort();
        due.truncate(limit);
        let (kept, due): (Vec<_>, Vec<_>) = due.into_iter().partition(|(_, id)| {
            let c = self
                .jobs
                .iter()
                .position(|j| j.record.job_id == *id)
                .expect("listed");
            self.parent_of(c)
                .is_some_and(|p| self.jobs[p].record.status.is_active())
        });
        for (_, id) in &kept {
            self.find_mut(*id).expect("listed").kept = Some(now);
        }
        for (_, id) in &due {
            self.remove(*id);
        }
        due.len()
    }

    /// Removes a finished record (retention, or a delete).
    pub(super) fn remove(&mut self, id: JobId) {
        let c = self
            .jobs
            .iter()
            .position(|j| j.record.job_id == id)
            .expect("listed");
        // A deleted child still counts for its parent; a deleted parent's count goes.
        if let Some(p) = self.parent_of(c) {
            let parent = self.jobs[p].record.job_id;
            let status = self.jobs[c].record.status;
            self.swept_children.entry(parent).or_default().push(status);
        }
        self.swept_children.remove(&id);
        self.jobs.remove(c);
    }

    /// Delete a finished record on request (`on_delete` written out: only a finished job,
    /// not a child whose parent is unfinished).
    pub fn delete(&mut self, id: JobId, now: Millis) -> Result<JobRecord> {
        self.now = now;
        let c = self
            .jobs
            .iter()
            .position(|j| j.record.job_id == id)
            .ok_or_else(|| not_found(id))?;
        let status = self.jobs[c].record.status;
        let reason = if !matches!(
            status,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Partial | JobStatus::Cancelled
        ) {
            Some("it is not finished (cancel it first)")
        } else if self.parent_of(c).is_some_and(|p| {
            matches!(
                self.jobs[p].record.status,
                JobStatus::Queued | JobStatus::Processing
            )
        }) {
            Some("its parent is unfinished and will read its result")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(Error::NotDeletable {
                id,
                reason: reason.into(),
            });
        }
        let record = self.get(id)?;
        self.remove(id);
        Ok(record)
    }
}
