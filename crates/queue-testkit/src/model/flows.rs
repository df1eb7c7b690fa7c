//! Flows in the model: parents, their children's counts, and what a child's ending does.

use super::*;

impl Model {
    /// Whether the job at `c` is a child of the job at `p`: it names it, and was created no
    /// earlier (a job created later under a reused id is not the parent).
    pub(super) fn is_child_of(&self, c: usize, p: usize) -> bool {
        let (child, parent) = (&self.jobs[c].record, &self.jobs[p].record);
        child.parent == Some(parent.job_id) && child.created_at >= parent.created_at
    }

    /// The children of the job at `p`, oldest first.
    pub(super) fn children_of(&self, p: usize) -> Vec<usize> {
        let mut kids: Vec<usize> = (0..self.jobs.len())
            .filter(|c| self.is_child_of(*c, p))
            .collect();
        kids.sort_by_key(|c| (self.jobs[*c].record.created_at, self.jobs[*c].record.job_id));
        kids
    }

    /// The parent of the job at `c`, when it is still there.
    pub(super) fn parent_of(&self, c: usize) -> Option<usize> {
        (0..self.jobs.len()).find(|p| self.is_child_of(c, *p))
    }

    /// The child counts of the job at `p`: its children now, and those retention deleted.
    pub(super) fn counts(&self, p: usize) -> queue_core::ChildCounts {
        let mut counts = queue_core::ChildCounts::default();
        let swept = self
            .swept_children
            .get(&self.jobs[p].record.job_id)
            .into_iter()
            .flatten()
            .copied();
        for status in self
            .children_of(p)
            .into_iter()
            .map(|c| self.jobs[c].record.status)
            .chain(swept)
        {
            match status {
                JobStatus::Queued | JobStatus::Processing => counts.waiting += 1,
                JobStatus::Completed => counts.completed += 1,
                JobStatus::Failed => counts.failed += 1,
                JobStatus::Partial => counts.partial += 1,
                JobStatus::Cancelled => counts.cancelled += 1,
            }
        }
        counts
    }

    /// The job at `i` is queued and waits on an unfinished child.
    pub(super) fn waits(&self, i: usize) -> bool {
        let job = &self.jobs[i];
        job.is_parent
            && job.record.status == JobStatus::Queued
            && self
                .children_of(i)
                .into_iter()
                .any(|c| self.jobs[c].record.status.is_active())
    }

    /// The job at `c` just ended (`status`): its parent, when it waits, fails at once if the
    /// child failed (failed or cancelled) and its policy is to fail the parent, else it is
    /// released once no child is unfinished (at the back of its priority, or at its due
    /// time).
    pub(super) fn child_ended(&mut self, c: usize, status: JobStatus, now: Millis) {
        let Some(p) = self.parent_of(c) else {
            return;
        };
        if self.jobs[p].record.status != JobStatus::Queued {
            return;
        }
        let policy = self.jobs[c].record.child_policy.unwrap_or_default();
        if policy == queue_core::ChildPolicy::FailParent
            && matches!(status, JobStatus::Failed | JobStatus::Cancelled)
        {
            let child = self.jobs[c].record.job_id;
            self.jobs[p].record.error_message = Some(format!("child {child} ended {status}"));
            self.jobs[p].due = None;
            self.terminal(p, JobStatus::Failed, now);
        } else if !self.waits(p) {
            match self.jobs[p].due {
                Some(due) if due > now => {}
                _ => {
                    let place = self.place();
                    self.jobs[p].due = None;
                    self.jobs[p].place = place;
                }
            }
        }
    }

    /// The job at `c` was retried by hand: a parent that failed because of a child without
    /// running is retried too (unless another job holds its unique key); a queued parent
    /// waits for it again by itself.
    pub(super) fn child_reopened(&mut self, c: usize, now: Millis) {
        let Some(p) = self.parent_of(c) else {
            return;
        };
        let r = &self.jobs[p].record;
        if r.status == JobStatus::Failed && r.started_at.is_none() {
            let _ = self.retry(r.job_id, None, now);
        }
    }

    /// Creates a flow (`target` None: `jobs[0]` is its root) or adds children to `target`,
    /// all or nothing.
    pub fn enqueue_flow(
        &mut self,
        jobs: Vec<queue_core::backend::FlatJob>,
        target: Option<JobId>,
        now: Millis,
    ) -> Result<Vec<JobRecord>> {
        self.now = now;
        let partition = match target {
            None => self.route_flow(&jobs, None)?,
            Some(t) => {
                let at = self.find(t).ok_or_else(|| not_found(t))?.partition;
                self.route_flow(&jobs, Some(at))?
            }
        };
        match target {
            None => {
                if let Some(i) = jobs
                    .first()
                    .and_then(|f| f.job.options.job_id)
                    .and_then(|id| self.jobs.iter().position(|j| j.record.job_id == id))
                {
                    return Ok(vec![self.view(i)]);
                }
            }
            Some(t) => {
                let job = self.find(t).ok_or_else(|| not_found(t))?;
                if job.record.status != JobStatus::Queued {
                    return Err(Error::invalid(
                        "children can be added only while it is queued",
                    ));
                }
                queue_core::backend::check_takes_children(t, job.record.after)?;
            }
        }
        // On several partitions a child's chosen id taken in another partition is refused
        // first (looked for there before the flow's partition checks its jobs in order).
        let children = usize::from(target.is_none());
        for flat in jobs.iter().skip(children) {
            if let Some(id) = flat.job.options.job_id
                && self.find(id).is_some_and(|j| j.partition != partition)
            {
                return Err(Error::invalid(format!(
                    "job id {id} of the flow is taken by an existing job"
                )));
            }
        }
        for flat in &jobs {
            self.config.limits.check(&flat.job)?;
            if let Some(id) = flat.job.options.job_id
                && self.find(id).is_some()
            {
                return Err(Error::invalid(format!("job id {id} is taken")));
            }
            if let Some(key) = &flat.job.options.unique_key
                && let Some(holder) = self.holder(key, partition)
            {
                return Err(Error::AlreadyExists {
                    unique_key: key.clone(),
                    job_id: holder,
                });
            }
        }
        if let Some(t) = target
            && !jobs.is_empty()
        {
            self.find_mut(t).expect("checked").is_parent = true;
        }
        let mut ids = Vec::new();
        let mut top = Vec::new();
        for flat in jobs {
            let parent = flat.parent.map(|i| ids[i]).or(target);
            self.placing = Some(partition);
            let made = self.enqueue(flat.job, now);
            self.placing = None;
            let mut record = made?;
            let i = self.jobs.len() - 1;
            record.parent = parent;
            record.child_policy = parent
                .and((flat.policy != queue_core::ChildPolicy::default()).then_some(flat.policy));
            self.jobs[i].record.parent = record.parent;
            self.jobs[i].record.child_policy = record.child_policy;
            self.jobs[i].is_parent = flat.children > 0;
            ids.push(record.job_id);
            if flat.parent.is_none() {
                top.push(i);
            }
        }
        self.refresh_lanes();
        Ok(top.into_iter().map(|i| self.view(i)).collect())
    }

    /// A parent's children, oldest first.
    pub fn children(&self, id: JobId) -> Result<Vec<JobRecord>> {
        let p = self
            .jobs
            .iter()
            .position(|j| j.record.job_id == id)
            .ok_or_else(|| not_found(id))?;
        Ok(self
            .children_of(p)
            .into_iter()
            .map(|c| self.view(c))
            .collect())
    }
}
