//! Ordered sequences in the model: the tail is the unfinished member that joined last;
//! a new member (or one retried by hand) is chained behind it (`chains.rs`).

use super::*;

impl Model {
    /// The unfinished member of sequence `s` that joined it last (its tail), but `but`.
    pub(super) fn tail(&self, s: &str, but: Option<JobId>) -> Option<usize> {
        (0..self.jobs.len())
            .filter(|i| {
                let r = &self.jobs[*i].record;
                r.sequence.as_deref() == Some(s) && r.status.is_active() && Some(r.job_id) != but
            })
            .max_by_key(|i| self.jobs[*i].joined)
    }

    /// The job at `i` joins its sequence, if it has one: chained behind the tail.
    pub(super) fn join_sequence(&mut self, i: usize) -> Option<JobId> {
        let s = self.jobs[i].record.sequence.clone()?;
        let tail = self.tail(&s, Some(self.jobs[i].record.job_id));
        self.next_join += 1;
        self.jobs[i].joined = self.next_join;
        let ahead = self.jobs[tail?].record.job_id;
        self.chain(i, ahead);
        Some(ahead)
    }
}
