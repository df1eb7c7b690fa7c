//! Listings and stats in the model.

use super::*;

impl Model {
    /// A page of a listing.
    pub fn list(&self, query: &ListQuery) -> Result<Page> {
        let position = query.position()?;
        if let Some(parent) = query.parent {
            // A parent's children, oldest first, after the cursor.
            let p = self
                .jobs
                .iter()
                .position(|j| j.record.job_id == parent)
                .ok_or_else(|| not_found(parent))?;
            let kids: Vec<usize> = self
                .children_of(p)
                .into_iter()
                .filter(|c| {
                    let r = &self.jobs[*c].record;
                    position.is_none_or(|pos| (to_millis(r.created_at), r.job_id) > pos)
                })
                .collect();
            let more = kids.len() > query.limit;
            let jobs: Vec<JobRecord> = kids
                .into_iter()
                .take(query.limit)
                .map(|c| self.view(c))
                .collect();
            let next_cursor = more.then(|| {
                let last = jobs.last().expect("limit is at least 1");
                encode_cursor(to_millis(last.created_at), last.job_id)
            });
            return Ok(Page { jobs, next_cursor });
        }
        // One unique key's history and the waiting parents go by creation; every job and
        // one status by `listed_at` (a finished job by when it finished, or was last kept).
        // The filters read the stored record (a view differs only in progress and counts).
        let by_creation = query.unique_key.is_some() || query.waiting_on_children;
        let mut matching: Vec<(Millis, JobId, usize)> = (0..self.jobs.len())
            .filter(|i| !query.waiting_on_children || self.waits(*i))
            .filter_map(|i| {
                let r = &self.jobs[i].record;
                if query.status.is_some_and(|s| r.status != s)
                    || query
                        .unique_key
                        .as_deref()
                        .is_some_and(|k| r.unique_key.as_deref() != Some(k))
                {
                    return None;
                }
                let created = to_millis(r.created_at);
                let finished = self.jobs[i].kept.or(r.completed_at.map(to_millis));
                let at = if by_creation {
                    created
                } else {
                    listed_at(r.status, created, finished)
                };
                position
                    .is_none_or(|p| (at, r.job_id) < p)
                    .then_some((at, r.job_id, i))
            })
            .collect();
        matching.sort_by_key(|(at, id, _)| std::cmp::Reverse((*at, *id)));
        let more = matching.len() > query.limit;
        matching.truncate(query.limit);
        let next_cursor = more.then(|| {
            let (at, last, _) = matching.last().expect("limit is at least 1");
            encode_cursor(*at, *last)
        });
        Ok(Page {
            jobs: matching.into_iter().map(|(_, _, i)| self.view(i)).collect(),
            next_cursor,
        })
    }

    /// Counts.
    pub fn stats(&self, now: Millis) -> QueueStats {
        let count = |s: JobStatus| self.jobs.iter().filter(|j| j.record.status == s).count() as u64;
        let queued = |j: &Job| j.record.status == JobStatus::Queued;
        QueueStats {
            total: self.jobs.len() as u64,
            queued: count(JobStatus::Queued),
            processing: count(JobStatus::Processing),
            completed: count(JobStatus::Completed),
            failed: count(JobStatus::Failed),
            partial: count(JobStatus::Partial),
            cancelled: count(JobStatus::Cancelled),
            scheduled: self
                .jobs
                .iter()
                .enumerate()
                .filter(|(i, j)| queued(j) && !self.waits(*i))
                .filter(|(_, j)| j.due.is_some())
                .count() as u64,
            waiting_on_children: (0..self.jobs.len()).filter(|i| self.waits(*i)).count() as u64,
            active_workers: self.live_workers(now).count() as u64,
            depth: Priority::ALL
                .into_iter()
                .map(|p| {
                    let n = self
                        .jobs
                        .iter()
                        .enumerate()
                        .filter(|(i, j)| queued(j) && !self.waits(*i) && !self.chained(*i))
                        .filter(|(_, j)| j.due.is_none() && j.record.priority == p)
                        .count() as u64;
                    (p, n)
                })
                .collect(),
            totals: self.totals.clone(),
            paused: self.paused,
            held_until: (self.held_until > now).then(|| from_millis(self.held_until)),
            rate_limit: self.rate.map(|(max, per)| queue_core::RateLimit {
                max: max as u32,
                per: std::time::Duration::from_millis(per as u64),
            }),
        }
    }
}
