//! Jobs: enqueue, every transition's index writes, cancel, manual retry and reopening.

use super::*;

impl Tables {
    /// Applies `event` to job `id`: the record (status and fields, by the rules of core),
    /// the status index, the event, then the job's next ready_position and counters.
    pub(super) fn transition(
        &mut self,
        id: JobId,
        event: Event,
        input: &EffectInput,
        events: EventSender<'_>,
    ) -> Result<JobStatus> {
        let entry = self.jobs.get_mut(&id).ok_or(Error::NotFound { id })?;
        let from = entry.record.status;
        let listed_before = (entry.listed_ms(), id);
        // The job it waited for, when it ends while waiting (its ending clears `after`).
        let waited = entry.record.after;
        if let Some(field) = latency_field(&entry.record, event, input.now) {
            self.series.add(input.now, &field, 1);
        }
        let entry = self.jobs.get_mut(&id).expect("found above");
        entry
            .record
            .apply_event(event, input)
            .map_err(|e| e.of(id))?;
        let to = entry.record.status;
        let change = unfinished_change(Some(from), to);
        if change != 0
            && let Some(group) = entry.record.group.clone()
        {
            self.count_unfinished(&group, change);
        }
        let entry = &self.jobs[&id];
        let key = (entry.created_ms, id);
        let ready_position = entry.ready_position;
        let unique_key = entry.record.unique_key.clone();
        let parent = entry.record.parent;
        let policy = entry.record.policy();
        let waits = entry.record.waits_on_children();
        if entry.record.children.is_some() && from == JobStatus::Queued {
            self.waiting.remove(&key);
        }
        let placement = rules::placement(event);
        match placement {
            Placement::ReadyInPlace | Placement::ReadyAtBack | Placement::Delayed if waits => {
                self.waiting.insert(key);
            }
            Placement::Leased => {}
            Placement::ReadyInPlace => self.push_ready(id, ready_position),
            Placement::ReadyAtBack => {
                let seq = self.next_seq();
                let ready_position = (self.jobs[&id].record.priority.band(), seq);
                self.jobs.get_mut(&id).expect("exists").ready_position = ready_position;
                self.push_ready(id, ready_position);
            }
            Placement::Delayed => {
                let due = input.due.expect("a delayed event carries its due time");
                self.delayed.insert((due, id));
                self.woken = true;
            }
            Placement::Finished => {
                self.finished.insert((input.now, id));
                self.leave_deliveries(id, to, input.now);
                if let Some(key) = &unique_key
                    && self.dedup.get(key) == Some(&id)
                {
                    self.dedup.remove(key);
                }
                self.unchain(id, waited, input.now);
            }
        }
        let entry = self.jobs.get_mut(&id).expect("exists");
        entry.finished_ms = (placement == Placement::Finished).then_some(input.now);
        let listed_after = (entry.listed_ms(), id);
        if from != to || listed_before != listed_after {
            self.by_status[status_index(from)].remove(&listed_before);
            self.by_status[status_index(to)].insert(listed_after);
        }
        if listed_before != listed_after {
            self.all.remove(&listed_before);
            self.all.insert(listed_after);
        }
        if let Some(counter) = rules::counter(event) {
            bump(&mut self.totals, &mut self.series, input.now, counter);
        }
        emit(
            events,
            id,
            input.now,
            EventKind::Transition {
                from: Some(from),
                to,
            },
        );
        if let Some(parent) = parent {
            if to.is_terminal() && from.is_active() {
                self.child_ended(parent, id, to, policy, events);
            } else if from.is_terminal() && to.is_active() {
                self.child_reopened(parent, id, from, events);
            }
        }
        Ok(to)
    }

    pub(crate) fn enqueue(
        &mut self,
        job: NewJob,
        cfg: &QueueConfig,
        now: Millis,
        events: EventSender<'_>,
    ) -> Result<(JobRecord, bool)> {
        self.now = now;
        cfg.limits.check(&job)?;
        if let Some(id) = job.options.job_id
            && let Some(existing) = self.jobs.get(&id)
        {
            return Ok((shown(&existing.record), false));
        }
        let after = match self.keyed(&job, now) {
            keys::Keyed::Create { after } => after,
            keys::Keyed::Supersede(holder) => {
                if self.cancel(holder, now, events)? == queue_core::CancelOutcome::Requested {
                    self.cancel_requested.push(holder);
                }
                self.jobs[&holder]
                    .record
                    .status
                    .is_active()
                    .then_some(holder)
            }
            keys::Keyed::Answer(answer) => return *answer,
        };
        let sequence = job.options.sequence.clone();
        let after = after.or_else(|| self.tails.get(sequence.as_ref()?).copied());
        let mut record = self.insert_job(job, cfg, now, None, ChildPolicy::default(), 0, events);
        if let Some(s) = sequence {
            self.tails.insert(s, record.job_id);
        }
        if let Some(ahead) = after {
            self.chain(record.job_id, ahead);
            record.after = Some(ahead);
        }
        Ok((record, true))
    }

    /// Refuses a job whose unique key an active job holds.
    pub(super) fn check_key_free(&self, job: &NewJob) -> Result<()> {
        if let Some(key) = &job.options.unique_key
            && let Some(holder) = self.dedup.get(key)
        {
            return Err(Error::AlreadyExists {
                unique_key: key.clone(),
                job_id: *holder,
            });
        }
        Ok(())
    }

    /// Creates one job: its record, indexes and place (waiting when it has children).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn insert_job(
        &mut self,
        job: NewJob,
        cfg: &QueueConfig,
        now: Millis,
        parent: Option<JobId>,
        policy: ChildPolicy,
        children: u32,
        events: EventSender<'_>,
    ) -> JobRecord {
        let id = job.options.job_id.unwrap_or_default();
        let record = JobRecord::born(job, id, now, cfg, parent.map(|p| (p, policy)), children);
        let priority = record.priority;
        let due = record.run_at.map(queue_core::backend::to_millis);
        let key = (now, id);
        let mut ready_position = (priority.band(), 0);
        let ready = if children > 0 {
            self.waiting.insert(key);
            false
        } else if let Some(due) = due {
            self.delayed.insert((due, id));
            self.woken = true;
            false
        } else {
            ready_position.1 = self.next_seq();
            true
        };
        self.by_status[status_index(JobStatus::Queued)].insert(key);
        self.all.insert(key);
        if let Some(unique) = &record.unique_key {
            self.by_key.entry(unique.clone()).or_default().insert(key);
            self.dedup.insert(unique.clone(), id);
        }
        if let Some(p) = parent {
            self.kids.entry(p).or_default().insert(key);
        }
        bump(&mut self.totals, &mut self.series, now, "enqueued");
        if let Some(group) = &record.group {
            self.count_unfinished(group, unfinished_change(None, JobStatus::Queued));
        }
        let out = record.clone();
        self.jobs.insert(
            id,
            Box::new(Entry {
                record,
                created_ms: now,
                ready_position,
                lease: None,
                ended: None,
                finished_ms: None,
            }),
        );
        if ready {
            self.push_ready(id, ready_position);
        }
        emit(
            events,
            id,
            now,
            EventKind::Transition {
                from: None,
                to: JobStatus::Queued,
            },
        );
        out
    }

    pub(crate) fn get(&self, id: JobId) -> Result<JobRecord> {
        self.jobs
            .get(&id)
            .map(|e| shown(&e.record))
            .ok_or(Error::NotFound { id })
    }

    pub(crate) fn cancel(
        &mut self,
        id: JobId,
        now: Millis,
        events: EventSender<'_>,
    ) -> Result<queue_core::CancelOutcome> {
        self.now = now;
        let entry = self.jobs.get_mut(&id).ok_or(Error::NotFound { id })?;
        let r = &entry.record;
        match rules::on_cancel(r.status, r.cancel_requested) {
            CancelAction::Cancel => {
                let ready_position = entry.ready_position;
                let due = r.run_at.map(queue_core::backend::to_millis);
                let input = EffectInput {
                    now,
                    ..EffectInput::default()
                };
                self.transition(id, Event::Cancel, &input, events)?;
                // Off the ready jobs after its parent (released by this cancel) joined
                // them: a group that has ready jobs before and after the call keeps its
                // lane's ticket, as the model's lanes are refreshed once per call.
                self.remove_ready(id, ready_position);
                if let Some(due) = due {
                    self.delayed.remove(&(due, id));
                }
                self.start_cascade(id);
                Ok(queue_core::CancelOutcome::Cancelled)
            }
            CancelAction::Request => {
                entry.record.cancel_requested = true;
                emit(events, id, now, EventKind::CancelRequested);
                Ok(queue_core::CancelOutcome::Requested)
            }
            CancelAction::AlreadyRequested => Ok(queue_core::CancelOutcome::Requested),
            CancelAction::Refuse => Err(Error::InvalidTransition {
                id,
                from: r.status,
                event: Event::Cancel,
            }),
        }
    }

    /// The running jobs whose cancel a cascade requested since the last call (the caller
    /// tells their holders).
    pub(crate) fn take_cancel_requests(&mut self) -> Vec<JobId> {
        std::mem::take(&mut self.cancel_requested)
    }

    pub(crate) fn retry(
        &mut self,
        id: JobId,
        priority: Option<Priority>,
        now: Millis,
        events: EventSender<'_>,
    ) -> Result<JobRecord> {
        self.now = now;
        self.reopen(id, priority, now, events)?;
        Ok(shown(&self.jobs[&id].record))
    }

    /// A manual retry: checks, then `Event::ManualRetry` (a parent with unfinished
    /// children waits on them again).
    pub(super) fn reopen(
        &mut self,
        id: JobId,
        priority: Option<Priority>,
        now: Millis,
        events: EventSender<'_>,
    ) -> Result<()> {
        let entry = self.jobs.get(&id).ok_or(Error::NotFound { id })?;
        queue_core::backend::apply(entry.record.status, Event::ManualRetry).map_err(|e| {
            Error::InvalidTransition {
                id,
                from: e.from,
                event: e.event,
            }
        })?;
        if let Some(key) = &entry.record.unique_key
            && let Some(holder) = self.dedup.get(key)
            && *holder != id
        {
            return Err(Error::AlreadyExists {
                unique_key: key.clone(),
                job_id: *holder,
            });
        }
        let completed = entry.finished_ms;
        let entry = self.jobs.get_mut(&id).expect("checked");
        if let Some(p) = priority {
            entry.record.priority = p;
        }
        if let Some(key) = entry.record.unique_key.clone() {
            self.dedup.insert(key, id);
        }
        if let Some(at) = completed {
            self.finished.remove(&(at, id));
        }
        let input = EffectInput {
            now,
            ..EffectInput::default()
        };
        self.transition(id, Event::ManualRetry, &input, events)?;
        self.rejoin_sequence(id);
        Ok(())
    }
}
