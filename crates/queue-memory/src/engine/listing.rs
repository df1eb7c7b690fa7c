//! Listings and stats: what an operator reads, paged.

use super::*;

impl Tables {
    /// Up to `limit` records from `index` that `keep` keeps, with the cursor after the
    /// last one shown when more follow.
    pub(super) fn page<'a>(
        &self,
        index: impl Iterator<Item = &'a ByCreated>,
        capacity: usize,
        limit: usize,
        keep: impl Fn(&JobRecord) -> bool,
    ) -> Page {
        let mut jobs = Vec::with_capacity(capacity);
        let mut next_cursor = None;
        let mut last = None;
        for &(at, id) in index {
            let Some(entry) = self.jobs.get(&id) else {
                continue;
            };
            if !keep(&entry.record) {
                continue;
            }
            if jobs.len() == limit {
                let (at, id) = last.expect("limit is at least 1");
                next_cursor = Some(encode_cursor(at, id));
                break;
            }
            jobs.push(shown(&entry.record));
            last = Some((at, id));
        }
        Page { jobs, next_cursor }
    }

    pub(crate) fn list(&self, query: &queue_core::ListQuery) -> Result<Page> {
        let position = query.position()?;
        if let Some(parent) = query.parent {
            return self.children_page(parent, position, query.limit);
        }
        let empty = BTreeSet::new();
        let index = match (&query.unique_key, query.status) {
            _ if query.waiting_on_children => &self.waiting,
            (Some(key), _) => self.by_key.get(key).unwrap_or(&empty),
            (None, Some(status)) => &self.by_status[status_index(status)],
            (None, None) => &self.all,
        };
        let iter: Box<dyn Iterator<Item = &ByCreated>> = match position {
            Some(pos) => Box::new(index.range(..pos).rev()),
            None => Box::new(index.iter().rev()),
        };
        let capacity = query.limit.min(index.len());
        Ok(self.page(iter, capacity, query.limit, |record| {
            query.status.is_none_or(|s| s == record.status)
                && query
                    .unique_key
                    .as_ref()
                    .is_none_or(|k| record.unique_key.as_ref() == Some(k))
        }))
    }

    pub(crate) fn stats(&self, now: Millis) -> QueueStats {
        let count = |s: JobStatus| self.by_status[status_index(s)].len() as u64;
        QueueStats {
            total: self.all.len() as u64,
            queued: count(JobStatus::Queued),
            processing: count(JobStatus::Processing),
            completed: count(JobStatus::Completed),
            failed: count(JobStatus::Failed),
            partial: count(JobStatus::Partial),
            cancelled: count(JobStatus::Cancelled),
            scheduled: self.delayed.len() as u64,
            waiting_on_children: self.waiting.len() as u64,
            active_workers: self.live_workers(now).count() as u64,
            depth: Priority::ALL
                .into_iter()
                .map(|p| (p, self.ready_by_band[usize::from(p.band())]))
                .collect(),
            totals: self.totals.clone(),
            paused: self.paused,
            rate_limit: self.rate,
            held_until: (self.held_until > now).then(|| from_millis(self.held_until)),
        }
    }
}
