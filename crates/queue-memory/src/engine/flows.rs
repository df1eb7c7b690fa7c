//! Flows: parents held for their children, children pages, and what a child's ending does to its parent.

use super::*;

impl Tables {
    /// Checks every job of a flattened flow (limits, ids, unique keys) before any is
    /// created: a flow is created whole or not at all.
    pub(super) fn check_flow(&self, jobs: &[FlatJob], cfg: &QueueConfig) -> Result<()> {
        for flat in jobs {
            cfg.limits.check(&flat.job)?;
            if let Some(id) = flat.job.options.job_id
                && self.jobs.contains_key(&id)
            {
                return Err(Error::invalid(format!(
                    "job id {id} of the flow is taken by an existing job"
                )));
            }
            self.check_key_free(&flat.job)?;
        }
        Ok(())
    }

    /// Creates a flow (`parent` None) or adds children to `parent`: every job of `jobs`,
    /// parents before their children. Returns the records of the jobs without a parent in
    /// `jobs` (the root, or the new direct children of `parent`).
    pub(crate) fn enqueue_flow(
        &mut self,
        jobs: Vec<FlatJob>,
        parent: Option<JobId>,
        cfg: &QueueConfig,
        now: Millis,
        events: EventSender<'_>,
    ) -> Result<Vec<JobRecord>> {
        self.now = now;
        if parent.is_none()
            && let Some(id) = jobs.first().and_then(|f| f.job.options.job_id)
            && let Some(existing) = self.jobs.get(&id)
        {
            return Ok(vec![shown(&existing.record)]);
        }
        if let Some(p) = parent {
            let entry = self.jobs.get(&p).ok_or(Error::NotFound { id: p })?;
            if !accepts_children(entry.record.status) {
                return Err(Error::invalid(format!(
                    "job {p} is {}: children can be added only while it is queued",
                    entry.record.status
                )));
            }
            queue_core::backend::check_takes_children(p, entry.record.after)?;
        }
        self.check_flow(&jobs, cfg)?;
        let added = jobs.iter().filter(|f| f.parent.is_none()).count() as u32;
        let mut ids = Vec::with_capacity(jobs.len());
        let mut out = Vec::new();
        for flat in jobs {
            let up = flat.parent.map(|i| ids[i]).or(parent);
            let record = self.insert_job(
                flat.job,
                cfg,
                now,
                up,
                flat.policy,
                flat.children as u32,
                events,
            );
            ids.push(record.job_id);
            if flat.parent.is_none() {
                out.push(record);
            }
        }
        // Held once its new children are ready: a group whose ready job becomes a parent
        // and that gains a ready child meanwhile keeps its lane (and its turn), as if in
        // one step.
        if let Some(p) = parent {
            self.hold_for_children(p, added);
        }
        Ok(out)
    }

    /// `parent` gets `n` more unfinished children: it waits on them (leaving the ready or
    /// delayed jobs if it was there).
    pub(super) fn hold_for_children(&mut self, parent: JobId, n: u32) {
        if n == 0 {
            return;
        }
        let entry = self.jobs.get_mut(&parent).expect("checked by the caller");
        let counts = entry
            .record
            .children
            .get_or_insert_with(ChildCounts::default);
        let was_waiting = counts.waiting > 0;
        counts.waiting += n;
        if was_waiting || entry.record.status != JobStatus::Queued {
            return;
        }
        let ready_position = entry.ready_position;
        let due = entry.record.run_at.map(queue_core::backend::to_millis);
        let key = (entry.created_ms, parent);
        self.remove_ready(parent, ready_position);
        if let Some(due) = due {
            self.delayed.remove(&(due, parent));
        }
        self.waiting.insert(key);
    }

    /// A page of a parent's children, oldest first, after `position`.
    pub(super) fn children_page(
        &self,
        parent: JobId,
        position: Option<ByCreated>,
        limit: usize,
    ) -> Result<Page> {
        if !self.jobs.contains_key(&parent) {
            return Err(Error::NotFound { id: parent });
        }
        let empty = BTreeSet::new();
        let kids = self.kids.get(&parent).unwrap_or(&empty);
        let iter: Box<dyn Iterator<Item = &ByCreated>> = match position {
            Some(pos) => {
                Box::new(kids.range((std::ops::Bound::Excluded(pos), std::ops::Bound::Unbounded)))
            }
            None => Box::new(kids.iter()),
        };
        Ok(self.page(iter, limit.min(kids.len()), limit, |_| true))
    }

    /// The entry of `parent`, when it is still `child`'s parent (`is_parent_of`: a job
    /// created later under a reused id is not).
    pub(super) fn parent_entry(&mut self, parent: JobId, child: JobId) -> Option<&mut Entry> {
        let child_created = self.jobs[&child].created_ms;
        self.jobs
            .get_mut(&parent)
            .map(|e| &mut **e)
            .filter(|e| is_parent_of(e.created_ms, child_created))
    }

    /// Child `child` of `parent` ended `status`: the parent's counts, then what
    /// `on_child_ended` says (release it, or fail it).
    pub(super) fn child_ended(
        &mut self,
        parent: JobId,
        child: JobId,
        status: JobStatus,
        policy: ChildPolicy,
        events: EventSender<'_>,
    ) {
        let now = self.now;
        let Some(entry) = self.parent_entry(parent, child) else {
            return; // retention removed the parent
        };
        let counts = entry
            .record
            .children
            .get_or_insert_with(ChildCounts::default);
        counts.waiting = counts.waiting.saturating_sub(1);
        *counts.of(status) += 1;
        match on_child_ended(policy, status, entry.record.status, counts.waiting) {
            ParentAction::Count => {}
            ParentAction::Release => {
                let key = (entry.created_ms, parent);
                let due = entry
                    .record
                    .run_at
                    .map(queue_core::backend::to_millis)
                    .filter(|due| *due > now);
                self.waiting.remove(&key);
                match due {
                    Some(due) => {
                        self.delayed.insert((due, parent));
                        self.woken = true;
                    }
                    None => {
                        let seq = self.next_seq();
                        let entry = self.jobs.get_mut(&parent).expect("exists");
                        entry.ready_position = (entry.record.priority.band(), seq);
                        let position = entry.ready_position;
                        self.push_ready(parent, position);
                        self.woken = true;
                    }
                }
            }
            ParentAction::Fail => {
                let input = EffectInput {
                    now,
                    error: Some(child_failed_message(child, status)),
                    ..EffectInput::default()
                };
                self.transition(parent, Event::ChildFailed, &input, events)
                    .expect("a queued parent accepts child_failed");
            }
        }
    }

    /// Child `child` of `parent`, which had ended `was`, is queued again (a manual retry):
    /// the parent's counts, then what `on_child_reopened` says.
    pub(super) fn child_reopened(
        &mut self,
        parent: JobId,
        child: JobId,
        was: JobStatus,
        events: EventSender<'_>,
    ) {
        let Some(entry) = self.parent_entry(parent, child) else {
            return;
        };
        let counts = entry
            .record
            .children
            .get_or_insert_with(ChildCounts::default);
        let count = counts.of(was);
        *count = count.saturating_sub(1);
        let action = on_child_reopened(entry.record.status, entry.record.started_at.is_some());
        match action {
            Reopen::Count => entry.record.children.as_mut().expect("set").waiting += 1,
            Reopen::Hold => self.hold_for_children(parent, 1),
            Reopen::Requeue => {
                entry.record.children.as_mut().expect("set").waiting += 1;
                // The parent cannot come back while another job holds its unique key: it
                // stays failed, and its counts say the child runs again.
                let now = self.now;
                let _ = self.reopen(parent, None, now, events);
            }
        }
    }

    /// The status of the job `id` names as its parent, when that job is its parent.
    pub(super) fn parent_status(&self, id: JobId) -> Option<JobStatus> {
        let entry = &self.jobs[&id];
        entry
            .record
            .parent
            .and_then(|p| self.jobs.get(&p))
            .filter(|p| is_parent_of(p.created_ms, entry.created_ms))
            .map(|p| p.record.status)
    }
}
