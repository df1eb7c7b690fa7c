//! Jobs in the model: enqueue, unique keys, cancel, manual retry, and the record as read.

use super::*;

impl Model {
    pub(super) fn find(&self, id: JobId) -> Option<&Job> {
        self.jobs.iter().find(|j| j.record.job_id == id)
    }

    pub(super) fn find_mut(&mut self, id: JobId) -> Option<&mut Job> {
        self.jobs.iter_mut().find(|j| j.record.job_id == id)
    }

    pub(super) fn place(&mut self) -> u64 {
        self.next_place += 1;
        self.next_place
    }

    /// Enqueue one job.
    pub fn enqueue(&mut self, job: NewJob, now: Millis) -> Result<JobRecord> {
        self.now = now;
        let partition = self.route_of(&job)?;
        self.config.limits.check(&job)?;
        if let Some(id) = job.options.job_id
            && let Some(i) = self.jobs.iter().position(|j| j.record.job_id == id)
        {
            return Ok(self.view(i));
        }
        let after = match self.keyed(&job, partition, now) {
            Ok(after) => after,
            Err(answer) => return *answer,
        };
        let o = job.options;
        let delay = o.delay.map(duration_ms).unwrap_or(0);
        let due = (delay > 0).then_some(now + delay);
        let record = JobRecord {
            job_id: o.job_id.unwrap_or_default(),
            task: job.task,
            payload: job.payload,
            unique_key: o.unique_key,
            status: JobStatus::Queued,
            priority: o.priority.unwrap_or(self.config.default_priority),
            progress: 0,
            current_step: None,
            error_message: None,
            retry_count: 0,
            max_retries: o.max_retries.unwrap_or(self.config.max_retries),
            timeout_ms: o.timeout.map(|t| duration_ms(t) as u64),
            created_at: from_millis(now),
            started_at: None,
            completed_at: None,
            run_at: due.map(from_millis),
            metadata: o.metadata,
            result: None,
            worker_id: None,
            cancel_requested: false,
            group: o.group,
            cost: o.cost.filter(|c| *c != 1),
            replaced: 0,
            sequence: o.sequence.clone(),
            after: None,
            parent: None,
            child_policy: None,
            children: None,
            attempts: Vec::new(),
        };
        let place = if due.is_some() { 0 } else { self.place() };
        self.jobs.push(Job {
            record: record.clone(),
            place,
            due,
            lease: None,
            ended: None,
            is_parent: false,
            kept: None,
            key_let_go: false,
            joined: 0,
            partition,
        });
        self.totals.enqueued += 1;
        let mut record = record;
        let i = self.jobs.len() - 1;
        if let Some(ahead) = after {
            self.chain(i, ahead);
            record.after = Some(ahead);
        }
        if let Some(ahead) = self.join_sequence(i) {
            record.after = Some(ahead);
        }
        // A job without a group opens or closes no group's lane.
        if record.group.is_some() {
            self.refresh_lanes();
        }
        Ok(record)
    }

    /// Enqueue several jobs, each on its own.
    pub fn enqueue_many(&mut self, jobs: Vec<NewJob>, now: Millis) -> Vec<Result<JobRecord>> {
        jobs.into_iter().map(|j| self.enqueue(j, now)).collect()
    }

    /// One record.
    pub fn get(&self, id: JobId) -> Result<JobRecord> {
        self.jobs
            .iter()
            .position(|j| j.record.job_id == id)
            .map(|i| self.view(i))
            .ok_or_else(|| not_found(id))
    }

    /// The job at `i` as a reader sees it: a parent with its counts, and while it waits (or
    /// has not run) the share of its children that ended as its progress.
    pub(super) fn view(&self, i: usize) -> JobRecord {
        let job = &self.jobs[i];
        let mut r = job.record.clone();
        if job.is_parent {
            let counts = self.counts(i);
            let total = counts.waiting
                + counts.completed
                + counts.failed
                + counts.partial
                + counts.cancelled;
            if r.status == JobStatus::Queued && (counts.waiting > 0 || r.started_at.is_none()) {
                r.progress = if total == 0 {
                    0
                } else {
                    (u64::from(total - counts.waiting) * 100 / u64::from(total)).min(99) as u8
                };
            }
            r.children = Some(counts);
        }
        r
    }

    /// A start from `lane` of `band` (of `cost`): the lane takes the next ticket, a
    /// group's rate log the start.
    pub(super) fn stamp(&mut self, band: u8, lane: Option<String>, cost: u32, partition: u32) {
        let p = partition as usize;
        self.tick[p] += 1;
        match lane {
            None => self.ungrouped_ticket[p][usize::from(band)] = self.tick[p],
            Some(g) => {
                let now = self.now;
                let mut turn_over = true;
                if let Some(set) = self.group_settings.get_mut(&g) {
                    if let Some(limit) = set.rate {
                        set.starts
                            .retain(|(t, _)| *t > now - duration_ms(limit.per));
                        set.starts.push((now, cost));
                    }
                    // A weighted group keeps its ticket for `weight` starts in a row.
                    set.turn += 1;
                    turn_over = set.turn >= set.weight.unwrap_or(1);
                    if turn_over {
                        set.turn = 0;
                    }
                }
                if turn_over {
                    self.lanes.remove(&(band, g));
                }
            }
        }
    }

    /// Due delayed jobs (of `partition` only, when given) join the back of their priority.
    pub(super) fn promote(&mut self, now: Millis, partition: Option<u32>) {
        let mut due: Vec<(Millis, JobId)> = self
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| partition.is_none_or(|p| j.partition == p))
            .filter(|(i, j)| j.record.status == JobStatus::Queued && !self.waits(*i))
            .filter_map(|(_, j)| j.due.filter(|d| *d <= now).map(|d| (d, j.record.job_id)))
            .collect();
        due.sort();
        for (_, id) in due {
            let place = self.place();
            let job = self.find_mut(id).expect("listed");
            job.due = None;
            job.place = place;
        }
    }

    /// Cancel.
    pub fn cancel(&mut self, id: JobId, now: Millis) -> Result<CancelOutcome> {
        self.now = now;
        let i = self
            .jobs
            .iter()
            .position(|j| j.record.job_id == id)
            .ok_or_else(|| not_found(id))?;
        let r = &mut self.jobs[i].record;
        match r.status {
            JobStatus::Queued => {
                self.jobs[i].due = None;
                self.terminal(i, JobStatus::Cancelled, now);
                // Its unfinished children are cancelled too (and theirs).
                let kids: Vec<JobId> = self
                    .children_of(i)
                    .into_iter()
                    .filter(|c| self.jobs[*c].record.status.is_active())
                    .map(|c| self.jobs[c].record.job_id)
                    .collect();
                for kid in kids {
                    let _ = self.cancel(kid, now);
                }
                self.refresh_lanes();
                Ok(CancelOutcome::Cancelled)
            }
            JobStatus::Processing => {
                r.cancel_requested = true;
                Ok(CancelOutcome::Requested)
            }
            from => Err(Error::InvalidTransition {
                id,
                from,
                event: queue_core::backend::Event::Cancel,
            }),
        }
    }

    /// Manual retry.
    pub fn retry(
        &mut self,
        id: JobId,
        priority: Option<Priority>,
        now: Millis,
    ) -> Result<JobRecord> {
        self.now = now;
        let job = self.find(id).ok_or_else(|| not_found(id))?;
        let from = job.record.status;
        if !matches!(
            from,
            JobStatus::Failed | JobStatus::Partial | JobStatus::Cancelled
        ) {
            return Err(Error::InvalidTransition {
                id,
                from,
                event: queue_core::backend::Event::ManualRetry,
            });
        }
        if let Some(key) = job.record.unique_key.clone()
            && let Some(holder) = self.holder(&key, job.partition)
        {
            return Err(Error::AlreadyExists {
                unique_key: key,
                job_id: holder,
            });
        }
        let place = self.place();
        let job = self.find_mut(id).expect("found");
        job.place = place;
        job.due = None;
        job.key_let_go = false;
        let r = &mut job.record;
        if let Some(p) = priority {
            r.priority = p;
        }
        r.status = JobStatus::Queued;
        r.progress = 0;
        r.current_step = None;
        r.error_message = None;
        r.result = None;
        r.retry_count = 0;
        r.started_at = None;
        r.completed_at = None;
        r.run_at = None;
        r.worker_id = None;
        r.cancel_requested = false;
        let i = self
            .jobs
            .iter()
            .position(|j| j.record.job_id == id)
            .expect("found");
        self.child_reopened(i, now);
        self.join_sequence(i);
        self.refresh_lanes();
        Ok(self.view(i))
    }
}
