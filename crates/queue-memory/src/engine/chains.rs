//! Chains: a job waiting for another to end before it is placed (`queue_core::backend::
//! released_due` says where it goes then).

use queue_core::backend::released_due;

use super::*;

impl Tables {
    /// Job `id`, just created, waits for `ahead` to end: off the ready and delayed jobs.
    pub(super) fn chain(&mut self, id: JobId, ahead: JobId) {
        let entry = self.jobs.get_mut(&id).expect("just created");
        entry.record.after = Some(ahead);
        let (ready_position, due) = (entry.ready_position, entry.record.run_at.map(to_millis));
        if !due.is_some_and(|due| self.delayed.remove(&(due, id))) {
            self.remove_ready(id, ready_position);
        }
        self.chained.insert(ahead, id);
    }

    /// Job `id` ended (`waited`: the job it waited for, if it still did): one that ended
    /// while waiting is no longer chained, the job waiting for it now waits for `waited`,
    /// and its unique key goes back to `waited` while that one is unfinished; else the job
    /// waiting for it is placed (a sequence's tail: `sequences.rs`).
    pub(super) fn unchain(&mut self, id: JobId, waited: Option<JobId>, now: Millis) {
        self.tail_ended(id, waited);
        if let Some(ahead) = waited {
            if self.chained.get(&ahead) == Some(&id) {
                self.chained.remove(&ahead);
            }
            let key = self.jobs[&id].record.unique_key.clone();
            if let (Some(key), Some(a)) = (key, self.jobs.get(&ahead))
                && a.record.status.is_active()
                && a.record.unique_key.as_ref() == Some(&key)
                && !self.dedup.contains_key(&key)
            {
                self.dedup.insert(key, ahead);
            }
        }
        let Some(waiter) = self.chained.remove(&id) else {
            return;
        };
        if let Some(ahead) = waited {
            self.jobs
                .get_mut(&waiter)
                .expect("a chained job exists")
                .record
                .after = Some(ahead);
            self.chained.insert(ahead, waiter);
            return;
        }
        let entry = self.jobs.get_mut(&waiter).expect("a chained job exists");
        entry.record.after = None;
        match released_due(entry.record.run_at.map(to_millis), now) {
            Some(due) => {
                self.delayed.insert((due, waiter));
                self.woken = true;
            }
            None => {
                let band = entry.record.priority.band();
                let seq = self.next_seq();
                let ready_position = (band, seq);
                self.jobs.get_mut(&waiter).expect("exists").ready_position = ready_position;
                self.push_ready(waiter, ready_position);
            }
        }
    }
}
