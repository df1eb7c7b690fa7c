//! The in-memory tables and every state change, under one lock held by the caller.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use queue_core::{
    ClaimRequest, Error, Event, EventKind, HeartbeatReply, JobEvent, JobId, JobRecord, JobStatus,
    Lease, LeaseRef, LeaseStatus, LeaseToken, LifetimeTotals, Millis, NewJob, Outcome, Page,
    Priority, QueueConfig, QueueStats, Result, WorkerBeat, WorkerInfo, apply, duration_ms,
    encode_cursor, from_millis,
};

/// Index key ordering jobs by creation: (created ms, id).
type ByCreated = (Millis, JobId);

pub(crate) struct Entry {
    record: JobRecord,
    created_ms: Millis,
    /// The job's place in `ready`; kept while it runs so a recovered or released job goes
    /// back to where it was.
    place: (u8, u64),
    lease: Option<Held>,
}

struct Held {
    token: LeaseToken,
    expires_ms: Millis,
    lease_ms: Millis,
}

/// Job ids are UUIDv7 with 62 random low bits: hashing them again is wasted work.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
}

type IdMap<V> = HashMap<JobId, V, std::hash::BuildHasherDefault<IdHasher>>;

#[derive(Default)]
pub(crate) struct Tables {
    /// Boxed so growing the map moves pointers, not records.
    jobs: IdMap<Box<Entry>>,
    ready: BTreeMap<(u8, u64), JobId>,
    ready_by_band: [u64; 3],
    delayed: BTreeSet<(Millis, u64, JobId)>,
    active: BTreeSet<(Millis, JobId)>,
    by_status: [BTreeSet<ByCreated>; 6],
    all: BTreeSet<ByCreated>,
    by_key: HashMap<String, BTreeSet<ByCreated>>,
    dedup: HashMap<String, JobId>,
    finished: BTreeSet<(Millis, JobId)>,
    workers: HashMap<String, (WorkerBeat, Millis)>,
    totals: LifetimeTotals,
    seq: u64,
}

/// Where `emit` sends events; `None` when nobody listens (no event is built).
pub(crate) type Sink<'a> = Option<&'a tokio::sync::broadcast::Sender<JobEvent>>;

fn status_index(status: JobStatus) -> usize {
    status as usize
}

fn emit(sink: Sink<'_>, job_id: JobId, now: Millis, kind: EventKind) {
    if let Some(tx) = sink {
        let _ = tx.send(JobEvent {
            job_id,
            at: from_millis(now),
            kind,
        });
    }
}

fn step(id: JobId, from: JobStatus, event: Event) -> Result<JobStatus> {
    apply(from, event).map_err(|e| Error::InvalidTransition {
        id,
        from: e.from,
        event: e.event,
    })
}

impl Tables {
    /// The queued or processing job holding `key`, if any (a stale entry is ignored).
    fn active_holder(&self, key: &str) -> Option<JobId> {
        let holder = self.dedup.get(key)?;
        self.jobs
            .get(holder)
            .is_some_and(|e| e.record.status.is_active())
            .then_some(*holder)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Moves a job to `to` in the status index and emits the transition.
    fn set_status(&mut self, id: JobId, to: JobStatus, now: Millis, sink: Sink<'_>) {
        let entry = self
            .jobs
            .get_mut(&id)
            .expect("caller checked the job exists");
        let from = entry.record.status;
        let key = (entry.created_ms, id);
        self.by_status[status_index(from)].remove(&key);
        self.by_status[status_index(to)].insert(key);
        entry.record.status = to;
        emit(
            sink,
            id,
            now,
            EventKind::Transition {
                from: Some(from),
                to,
            },
        );
    }

    fn push_ready(&mut self, id: JobId, place: (u8, u64)) {
        self.ready.insert(place, id);
        self.ready_by_band[usize::from(place.0)] += 1;
    }

    fn pop_ready(&mut self) -> Option<JobId> {
        let (place, id) = self.ready.pop_first()?;
        self.ready_by_band[usize::from(place.0)] -= 1;
        Some(id)
    }

    fn remove_ready(&mut self, place: (u8, u64)) {
        if self.ready.remove(&place).is_some() {
            self.ready_by_band[usize::from(place.0)] -= 1;
        }
    }

    pub(crate) fn enqueue(
        &mut self,
        job: NewJob,
        cfg: &QueueConfig,
        now: Millis,
        sink: Sink<'_>,
    ) -> Result<(JobRecord, bool)> {
        job.validate()?;
        let NewJob {
            task,
            payload,
            options,
        } = job;
        if let Some(id) = options.job_id
            && let Some(existing) = self.jobs.get(&id)
        {
            return Ok((existing.record.clone(), false));
        }
        if let Some(key) = &options.unique_key
            && let Some(holder) = self.active_holder(key)
        {
            return Err(Error::AlreadyExists {
                unique_key: key.clone(),
                job_id: holder,
            });
        }
        let id = options.job_id.unwrap_or_default();
        let priority = options.priority.unwrap_or(cfg.default_priority);
        let delay_ms = options.delay.map(duration_ms).unwrap_or(0);
        let run_at = (delay_ms > 0).then(|| from_millis(now + delay_ms));
        let record = JobRecord {
            job_id: id,
            task,
            payload,
            unique_key: options.unique_key,
            status: JobStatus::Queued,
            priority,
            progress: 0,
            current_step: None,
            error_message: None,
            retry_count: 0,
            max_retries: options.max_retries.unwrap_or(cfg.max_retries),
            timeout_ms: options.timeout.map(|t| duration_ms(t) as u64),
            created_at: from_millis(now),
            started_at: None,
            completed_at: None,
            run_at,
            metadata: options.metadata,
            result: None,
            worker_id: None,
            cancel_requested: false,
        };
        let seq = self.next_seq();
        let place = (priority.band(), seq);
        if delay_ms > 0 {
            self.delayed.insert((now + delay_ms, seq, id));
        } else {
            self.push_ready(id, place);
        }
        let key = (now, id);
        self.by_status[status_index(JobStatus::Queued)].insert(key);
        self.all.insert(key);
        if let Some(unique) = &record.unique_key {
            self.by_key.entry(unique.clone()).or_default().insert(key);
            self.dedup.insert(unique.clone(), id);
        }
        self.totals.enqueued += 1;
        let out = record.clone();
        self.jobs.insert(
            id,
            Box::new(Entry {
                record,
                created_ms: now,
                place,
                lease: None,
            }),
        );
        emit(
            sink,
            id,
            now,
            EventKind::Transition {
                from: None,
                to: JobStatus::Queued,
            },
        );
        Ok((out, true))
    }

    pub(crate) fn get(&self, id: JobId) -> Result<JobRecord> {
        self.jobs
            .get(&id)
            .map(|e| e.record.clone())
            .ok_or(Error::NotFound { id })
    }

    /// Promotes due delayed jobs, then leases up to `req.max` ready jobs.
    pub(crate) fn claim(&mut self, req: &ClaimRequest, now: Millis, sink: Sink<'_>) -> Vec<Lease> {
        while let Some(&(due, seq, id)) = self.delayed.first() {
            if due > now {
                break;
            }
            self.delayed.pop_first();
            let Some(entry) = self.jobs.get_mut(&id) else {
                continue;
            };
            entry.record.run_at = None;
            let place = (entry.record.priority.band(), seq);
            entry.place = place;
            self.push_ready(id, place);
        }
        let lease_ms = duration_ms(req.lease);
        let mut out = Vec::with_capacity(req.max.min(self.ready.len()));
        while out.len() < req.max {
            let Some(id) = self.pop_ready() else { break };
            let Some(entry) = self.jobs.get_mut(&id) else {
                continue;
            };
            let token = LeaseToken::generate();
            let expires_ms = now + lease_ms;
            let r = &mut entry.record;
            r.started_at = Some(from_millis(now));
            r.progress = 0;
            r.current_step = None;
            r.worker_id = Some(req.worker.as_str().to_owned());
            entry.lease = Some(Held {
                token: token.clone(),
                expires_ms,
                lease_ms,
            });
            self.active.insert((expires_ms, id));
            self.set_status(id, JobStatus::Processing, now, sink);
            let job = self.jobs[&id].record.clone();
            out.push(Lease {
                job,
                token,
                expires_at: from_millis(expires_ms),
            });
        }
        out
    }

    /// The earliest due time of a delayed job.
    pub(crate) fn next_due(&self) -> Option<Millis> {
        self.delayed.first().map(|(due, _, _)| *due)
    }

    /// The entry when `lease` is current and unexpired.
    fn held(&self, lease: &LeaseRef, now: Millis) -> Result<&Entry> {
        let lost = Error::LeaseLost { id: lease.job_id };
        let entry = self.jobs.get(&lease.job_id).ok_or(lost)?;
        match &entry.lease {
            Some(h) if h.token == lease.token && h.expires_ms > now => Ok(entry),
            _ => Err(Error::LeaseLost { id: lease.job_id }),
        }
    }

    fn extend(&mut self, id: JobId, now: Millis, lease_ms: Option<Millis>) {
        let entry = self.jobs.get_mut(&id).expect("held");
        let held = entry.lease.as_mut().expect("held");
        self.active.remove(&(held.expires_ms, id));
        held.expires_ms = now + lease_ms.unwrap_or(held.lease_ms);
        self.active.insert((held.expires_ms, id));
    }

    pub(crate) fn heartbeat(
        &mut self,
        beat: &WorkerBeat,
        leases: &[LeaseRef],
        now: Millis,
    ) -> HeartbeatReply {
        self.workers
            .insert(beat.worker.as_str().to_owned(), (beat.clone(), now));
        let mut reply = HeartbeatReply::default();
        for lease in leases {
            match self.held(lease, now) {
                Ok(entry) => {
                    if entry.record.cancel_requested {
                        reply.cancel.push(lease.job_id);
                    }
                    self.extend(lease.job_id, now, Some(duration_ms(beat.lease)));
                }
                Err(_) => reply.lost.push(lease.job_id),
            }
        }
        reply
    }

    pub(crate) fn progress(
        &mut self,
        lease: &LeaseRef,
        progress: u8,
        step_name: Option<&str>,
        now: Millis,
        sink: Sink<'_>,
    ) -> Result<LeaseStatus> {
        queue_core::check_progress(progress)?;
        self.held(lease, now)?;
        self.extend(lease.job_id, now, None);
        let r = &mut self.jobs.get_mut(&lease.job_id).expect("held").record;
        r.progress = r.progress.max(progress);
        if let Some(s) = step_name {
            r.current_step = Some(s.to_owned());
        }
        let status = LeaseStatus {
            cancel_requested: r.cancel_requested,
        };
        let kind = EventKind::Progress {
            progress: r.progress,
            step: r.current_step.clone(),
        };
        emit(sink, lease.job_id, now, kind);
        Ok(status)
    }

    /// Ends a held job's attempt. The lease must already be checked.
    fn end_attempt(
        &mut self,
        id: JobId,
        outcome: Outcome,
        now: Millis,
        sink: Sink<'_>,
    ) -> Result<JobStatus> {
        let entry = self.jobs.get_mut(&id).expect("held");
        let held = entry.lease.take().expect("held");
        self.active.remove(&(held.expires_ms, id));
        let r = &mut entry.record;
        // A requested cancel wins over anything but success: the job is never retried.
        let outcome = match outcome {
            Outcome::Retry { .. } | Outcome::Failed { .. } | Outcome::Released
                if r.cancel_requested =>
            {
                Outcome::Cancelled
            }
            Outcome::Retry { error, .. } if !r.has_retries_left() => Outcome::Failed { error },
            other => other,
        };
        r.worker_id = None;
        let event = match outcome {
            Outcome::Completed { result } => {
                r.result = result;
                r.progress = 100;
                r.error_message = None;
                self.totals.completed += 1;
                Event::Complete
            }
            Outcome::Partial { result, error } => {
                r.result = result;
                r.progress = 100;
                r.error_message = Some(error);
                self.totals.partial += 1;
                Event::CompletePartial
            }
            Outcome::Failed { error } => {
                r.error_message = Some(error);
                self.totals.failed += 1;
                Event::Fail
            }
            Outcome::Cancelled => {
                self.totals.cancelled += 1;
                Event::Cancel
            }
            Outcome::Retry { error, delay } => {
                r.error_message = Some(error);
                r.retry_count += 1;
                r.progress = 0;
                r.current_step = None;
                let due = now + duration_ms(delay);
                r.run_at = Some(from_millis(due));
                self.totals.retried += 1;
                let seq = self.next_seq();
                self.delayed.insert((due, seq, id));
                Event::Retry
            }
            Outcome::Released => {
                r.progress = 0;
                r.current_step = None;
                let place = entry.place;
                self.push_ready(id, place);
                Event::Release
            }
        };
        let to = step(id, JobStatus::Processing, event)?;
        if to.is_terminal() {
            self.terminate(id, now);
        }
        self.set_status(id, to, now, sink);
        Ok(to)
    }

    /// Bookkeeping of a job reaching a terminal status.
    fn terminate(&mut self, id: JobId, now: Millis) {
        let entry = self.jobs.get_mut(&id).expect("exists");
        entry.record.completed_at = Some(from_millis(now));
        entry.record.run_at = None;
        self.finished.insert((now, id));
        if let Some(key) = &entry.record.unique_key
            && self.dedup.get(key) == Some(&id)
        {
            self.dedup.remove(key);
        }
    }

    pub(crate) fn finish(
        &mut self,
        lease: &LeaseRef,
        outcome: Outcome,
        now: Millis,
        sink: Sink<'_>,
    ) -> Result<JobStatus> {
        self.held(lease, now)?;
        self.end_attempt(lease.job_id, outcome, now, sink)
    }

    pub(crate) fn reap(&mut self, limit: usize, now: Millis, sink: Sink<'_>) -> Vec<JobId> {
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(&(expires, id)) = self.active.first() else {
                break;
            };
            if expires > now {
                break;
            }
            self.active.pop_first();
            let entry = self.jobs.get_mut(&id).expect("active jobs exist");
            entry.lease = None;
            let r = &mut entry.record;
            let worker = r.worker_id.take().unwrap_or_default();
            let event = if r.cancel_requested {
                self.totals.cancelled += 1;
                Event::Cancel
            } else if r.has_retries_left() {
                r.retry_count += 1;
                r.progress = 0;
                r.current_step = None;
                r.error_message = Some(format!(
                    "lease expired: worker {worker} stopped renewing it"
                ));
                let place = entry.place;
                self.push_ready(id, place);
                Event::LeaseExpired
            } else {
                r.error_message = Some(format!(
                    "lease expired: worker {worker} was lost and no retries are left"
                ));
                self.totals.failed += 1;
                Event::Fail
            };
            self.totals.recovered += 1;
            let to = apply(JobStatus::Processing, event).expect("processing jobs accept these");
            if to.is_terminal() {
                self.terminate(id, now);
            }
            self.set_status(id, to, now, sink);
            out.push(id);
        }
        out
    }

    pub(crate) fn cancel(
        &mut self,
        id: JobId,
        now: Millis,
        sink: Sink<'_>,
    ) -> Result<queue_core::CancelOutcome> {
        let entry = self.jobs.get_mut(&id).ok_or(Error::NotFound { id })?;
        match entry.record.status {
            JobStatus::Queued => {
                let place = entry.place;
                self.remove_ready(place);
                self.delayed.retain(|(_, _, d)| *d != id);
                self.totals.cancelled += 1;
                self.terminate(id, now);
                self.set_status(id, JobStatus::Cancelled, now, sink);
                Ok(queue_core::CancelOutcome::Cancelled)
            }
            JobStatus::Processing => {
                entry.record.cancel_requested = true;
                emit(sink, id, now, EventKind::CancelRequested);
                Ok(queue_core::CancelOutcome::Requested)
            }
            from => Err(Error::InvalidTransition {
                id,
                from,
                event: Event::Cancel,
            }),
        }
    }

    pub(crate) fn retry(
        &mut self,
        id: JobId,
        priority: Option<Priority>,
        now: Millis,
        sink: Sink<'_>,
    ) -> Result<JobRecord> {
        let entry = self.jobs.get(&id).ok_or(Error::NotFound { id })?;
        step(id, entry.record.status, Event::ManualRetry)?;
        if let Some(key) = &entry.record.unique_key
            && let Some(holder) = self.active_holder(key)
            && holder != id
        {
            return Err(Error::AlreadyExists {
                unique_key: key.clone(),
                job_id: holder,
            });
        }
        let seq = self.next_seq();
        let entry = self.jobs.get_mut(&id).expect("checked");
        self.finished.remove(&(
            entry
                .record
                .completed_at
                .map(queue_core::to_millis)
                .unwrap_or_default(),
            id,
        ));
        let r = &mut entry.record;
        if let Some(p) = priority {
            r.priority = p;
        }
        r.retry_count = 0;
        r.progress = 0;
        r.current_step = None;
        r.error_message = None;
        r.result = None;
        r.started_at = None;
        r.completed_at = None;
        r.run_at = None;
        r.cancel_requested = false;
        let place = (r.priority.band(), seq);
        entry.place = place;
        if let Some(key) = r.unique_key.clone() {
            self.dedup.insert(key, id);
        }
        self.push_ready(id, place);
        self.set_status(id, JobStatus::Queued, now, sink);
        Ok(self.jobs[&id].record.clone())
    }

    pub(crate) fn list(&self, query: &queue_core::ListQuery) -> Result<Page> {
        let position = query.position()?;
        let empty = BTreeSet::new();
        let index = match (&query.unique_key, query.status) {
            (Some(key), _) => self.by_key.get(key).unwrap_or(&empty),
            (None, Some(status)) => &self.by_status[status_index(status)],
            (None, None) => &self.all,
        };
        let iter: Box<dyn Iterator<Item = &ByCreated>> = match position {
            Some(pos) => Box::new(index.range(..pos).rev()),
            None => Box::new(index.iter().rev()),
        };
        let mut jobs = Vec::with_capacity(query.limit.min(index.len()));
        let mut next_cursor = None;
        for &(ms, id) in iter {
            let Some(entry) = self.jobs.get(&id) else {
                continue;
            };
            if query.status.is_some_and(|s| s != entry.record.status) {
                continue;
            }
            if jobs.len() == query.limit {
                let last: &JobRecord = jobs.last().expect("limit is at least 1");
                next_cursor = Some(encode_cursor(
                    queue_core::to_millis(last.created_at),
                    last.job_id,
                ));
                break;
            }
            let _ = ms;
            jobs.push(entry.record.clone());
        }
        Ok(Page { jobs, next_cursor })
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
            active_workers: self.live_workers(now).count() as u64,
            depth: Priority::ALL
                .into_iter()
                .map(|p| (p, self.ready_by_band[usize::from(p.band())]))
                .collect(),
            totals: self.totals.clone(),
        }
    }

    fn live_workers(&self, now: Millis) -> impl Iterator<Item = &(WorkerBeat, Millis)> {
        self.workers
            .values()
            .filter(move |(beat, seen)| *seen + 3 * duration_ms(beat.interval) >= now)
    }

    pub(crate) fn workers(&self, now: Millis) -> Vec<WorkerInfo> {
        let mut out: Vec<WorkerInfo> = self
            .live_workers(now)
            .map(|(beat, seen)| WorkerInfo {
                worker_id: beat.worker.as_str().to_owned(),
                host: beat.host.clone(),
                pid: beat.pid,
                concurrency: beat.concurrency,
                started_at: beat.started_at,
                last_seen: from_millis(*seen),
                jobs: self
                    .active
                    .iter()
                    .filter(|(_, id)| {
                        self.jobs[id].record.worker_id.as_deref() == Some(beat.worker.as_str())
                    })
                    .map(|(_, id)| *id)
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        out
    }

    pub(crate) fn deregister(&mut self, worker: &str) {
        self.workers.remove(worker);
    }

    pub(crate) fn sweep(&mut self, limit: usize, cutoff: Millis) -> usize {
        let mut removed = 0;
        while removed < limit {
            let Some(&(finished, id)) = self.finished.first() else {
                break;
            };
            if finished > cutoff {
                break;
            }
            self.finished.pop_first();
            let Some(entry) = self.jobs.remove(&id) else {
                continue;
            };
            let key = (entry.created_ms, id);
            self.all.remove(&key);
            self.by_status[status_index(entry.record.status)].remove(&key);
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
            removed += 1;
        }
        removed
    }
}
