//! Retention and delete: finished jobs leave every index.

use super::*;

impl Tables {
    /// Deletes a finished record on request, as [`queue_core::backend::on_delete`] decides.
    pub(crate) fn delete(&mut self, id: JobId) -> Result<JobRecord> {
        let entry = self.jobs.get(&id).ok_or(Error::NotFound { id })?;
        let decision = on_delete(entry.record.status, self.parent_status(id));
        if let Some(reason) = decision.refusal() {
            return Err(Error::NotDeletable {
                id,
                reason: reason.into(),
            });
        }
        let record = shown(&entry.record);
        self.remove(id);
        Ok(record)
    }

    /// Removes a finished record and every index entry naming it.
    pub(super) fn remove(&mut self, id: JobId) {
        let entry = self.jobs.remove(&id).expect("checked");
        if let Some(finished) = entry.finished_ms {
            self.finished.remove(&(finished, id));
        }

        let key = (entry.created_ms, id);
        let listed = (entry.listed_ms(), id);
        self.kids.remove(&id);
        if let Some(parent) = entry.record.parent
            && let Some(kids) = self.kids.get_mut(&parent)
        {
            kids.remove(&key);
        }
        self.all.remove(&listed);
        self.by_status[status_index(entry.record.status)].remove(&listed);
        if let Some(unique) = &entry.record.unique_key {
            if let Some(set) = self.by_key.get_mut(unique) {
                set.remove(&key);
                if set.is_empty() {
                    self.by_key.remove(unique);
                }
            }
            if self.dedup.get(unique) == Some(&id) {
                self.dedup.remove(unique);
            }
        }
    }

    /// Looks at up to `limit` finished records whose completion is at or before `cutoff`,
    /// oldest first, and deletes them, except a child whose parent is unfinished: it is
    /// kept, its retention started again at `now`, and counts against `limit` too (as on
    /// Redis and in the model), so a parent with a million finished children costs a sweep
    /// `limit` records, not a million.
    /// Parked webhook deliveries parked at or before `cutoff` go too (up to `limit`).
    pub(crate) fn sweep(&mut self, limit: usize, cutoff: Millis, now: Millis) -> usize {
        let old: Vec<String> = self
            .parked
            .iter()
            .take_while(|(at, _)| *at <= cutoff)
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect();
        for id in old {
            self.remove_delivery(&id);
        }
        let mut removed = 0;
        let mut kept = Vec::new();
        while removed + kept.len() < limit {
            let Some(&(finished, id)) = self.finished.first() else {
                break;
            };
            if finished > cutoff {
                break;
            }
            self.finished.pop_first();
            // Only a finished record is ever deleted (the index cannot say otherwise,
            // but the rule is the record's, not the index's).
            if !self
                .jobs
                .get(&id)
                .is_some_and(|e| e.record.status.is_terminal())
            {
                continue;
            }
            if retention_keeps_child(self.parent_status(id)) {
                kept.push(id);
                continue;
            }
            self.remove(id);
            removed += 1;
        }
        for id in kept {
            self.finished.insert((now, id));
            let entry = self.jobs.get_mut(&id).expect("kept");
            let before = (entry.listed_ms(), id);
            entry.finished_ms = Some(now);
            let after = (entry.listed_ms(), id);
            let status = status_index(entry.record.status);
            for index in [&mut self.all, &mut self.by_status[status]] {
                index.remove(&before);
                index.insert(after);
            }
        }
        removed
    }
}
