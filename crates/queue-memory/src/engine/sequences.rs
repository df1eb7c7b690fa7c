//! Ordered sequences (`queue_core::sequences`): each sequence's tail, its newest unfinished
//! member; members are chained behind it (`chains.rs`).

use super::*;

impl Tables {
    /// Job `id`, retried by hand, joins the back of its sequence (`queue_core::sequences`).
    pub(super) fn rejoin_sequence(&mut self, id: JobId) {
        let Some(s) = self.jobs[&id].record.sequence.clone() else {
            return;
        };
        if let Some(&tail) = self.tails.get(&s)
            && tail != id
        {
            self.chain(id, tail);
        }
        self.tails.insert(s, id);
    }

    /// Job `id` ended (`waited`: the job it still waited for): a sequence whose tail it was
    /// has `waited` as its tail, or none.
    pub(super) fn tail_ended(&mut self, id: JobId, waited: Option<JobId>) {
        if let Some(s) = self.jobs[&id].record.sequence.clone()
            && self.tails.get(&s) == Some(&id)
        {
            match waited {
                Some(ahead) => self.tails.insert(s, ahead),
                None => self.tails.remove(&s),
            };
        }
    }
}
