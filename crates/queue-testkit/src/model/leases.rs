//! Claims and leases in the model: fetch, heartbeats, progress, finishes, the end of an attempt and the reap.

use super::*;

impl Model {
    /// Claim: due delayed jobs join the back of their priority (in order of due time,
    /// then id), then the ready jobs are taken, strict priority then FIFO. A request sent
    /// again returns what it took the first time that is still held (oldest first, at most
    /// what it asks for) and takes nothing. A paused queue takes nothing new.
    pub fn fetch(&mut self, req: &ClaimRequest, now: Millis) -> Vec<ModelLease> {
        self.now = now;
        let worker = req.worker.as_str().to_owned();
        let replay = self
            .last_claim
            .get(&worker)
            .is_some_and(|last| req.id <= *last);
        if !replay {
            self.last_claim.insert(worker.clone(), req.id);
        } else if self.partitions == 1 {
            let again = self.replayed(req, None, req.max, now);
            if !again.is_empty() {
                self.plan = None;
                return again;
            }
        }
        if self.partitions == 1 {
            self.promote(now, None);
        }
        let mut out = Vec::new();
        // Paused: nothing starts (the replay above still answers). Rate limited: no more
        // than the starts left in the window that ends now.
        // One claim takes at most MAX_CLAIM jobs, whatever it asks for.
        let mut max = req.max.min(queue_core::backend::MAX_CLAIM);
        if now < self.held_until {
            max = 0;
        }
        let mut used = 0;
        if let Some((limit, per)) = self.rate {
            // A claim that may start jobs forgets the starts that have left the window
            // (a wider limit set later does not bring them back).
            if !self.paused && now >= self.held_until {
                self.starts.retain(|(t, _)| *t > now - per);
            }
            used = used_since(&self.starts, now - per);
            max = max.min(limit.saturating_sub(used) as usize);
        }
        self.refresh_lanes();
        match (self.partitions > 1, self.plan.take()) {
            (false, _) => self.take(req, None, max, &mut used, &mut out),
            // Told nothing of the backend's split: the completeness check
            // (`Model::claimable`) says whether it should have taken something.
            (true, None) => {}
            (true, Some(plan)) => {
                // Each partition asked answers what it took for this request that is still
                // held (a request sent again), or promotes its due jobs and starts what it
                // gave.
                for (p, asked, gave) in plan {
                    if replay {
                        let again = self.replayed(req, Some(p), asked, now);
                        if !again.is_empty() {
                            out.extend(again);
                            continue;
                        }
                    }
                    self.promote(now, Some(p));
                    self.refresh_lanes();
                    let until = (out.len() + gave).min(max);
                    self.take(req, Some(p), until, &mut used, &mut out);
                    if gave < asked.min(queue_core::backend::MAX_CLAIM) {
                        self.short.push(p);
                    }
                }
            }
        }
        out
    }

    /// What request `req` took (in `partition` only, when given) that its worker still
    /// holds: oldest first, at most `max`.
    fn replayed(
        &self,
        req: &ClaimRequest,
        partition: Option<u32>,
        max: usize,
        now: Millis,
    ) -> Vec<ModelLease> {
        let worker = req.worker.as_str();
        let mut again: Vec<usize> = (0..self.jobs.len())
            .filter(|i| {
                let j = &self.jobs[*i];
                partition.is_none_or(|p| j.partition == p)
                    && j.lease
                        .as_ref()
                        .is_some_and(|h| h.claim == req.id && h.expires > now)
                    && j.record.worker_id.as_deref() == Some(worker)
            })
            .collect();
        again.sort_by_key(|i| (self.jobs[*i].record.started_at, self.jobs[*i].record.job_id));
        again.truncate(max.min(queue_core::backend::MAX_CLAIM));
        again
            .into_iter()
            .map(|i| {
                let h = self.jobs[i].lease.as_ref().expect("filtered");
                ModelLease {
                    job: self.view(i),
                    token: h.token.clone(),
                    expires_at: h.expires,
                }
            })
            .collect()
    }

    /// Starts jobs (of `partition` only, when given) until `out` holds `max` leases.
    pub(super) fn take(
        &mut self,
        req: &ClaimRequest,
        partition: Option<u32>,
        max: usize,
        used: &mut u64,
        out: &mut Vec<ModelLease>,
    ) {
        let now = self.now;
        let worker = req.worker.as_str().to_owned();
        while !self.paused && out.len() < max {
            let Some((i, band, lane)) = self.next_job(partition) else {
                break;
            };
            // Under the queue's rate limit the next job's cost must fit; else nothing more
            // starts (a cheaper job behind it does not overtake it).
            let cost = cost_of(&self.jobs[i]);
            if let Some((limit, _)) = self.rate {
                if !fits(limit, *used, cost) {
                    break;
                }
                *used += u64::from(cost);
                self.starts.push((now, cost));
            }
            self.stamp(band, lane, cost, self.jobs[i].partition);
            self.next_token += 1;
            let token = LeaseToken::new(format!("model-{}", self.next_token));
            let lease_ms = duration_ms(req.lease);
            let job = &mut self.jobs[i];
            job.lease = Some(HeldBy {
                token: token.clone(),
                expires: now + lease_ms,
                lease_ms,
                claim: req.id,
            });
            let r = &mut job.record;
            r.status = JobStatus::Processing;
            r.started_at = Some(from_millis(now));
            r.progress = 0;
            r.current_step = None;
            r.run_at = None;
            r.worker_id = Some(worker.clone());
            out.push(ModelLease {
                job: self.view(i),
                token,
                expires_at: now + lease_ms,
            });
            self.refresh_lanes();
        }
    }

    /// The next job to start (of `partition` only, when given), with its band and lane: in
    /// the highest band with ready jobs, the lane with the lowest ticket (jobs without a
    /// group first on a tie, then groups by name), then that lane's first job.
    pub(super) fn next_job(&self, partition: Option<u32>) -> Option<(usize, u8, Option<String>)> {
        let p = partition.unwrap_or(0);
        let here = |j: &Job| partition.is_none_or(|p| j.partition == p);
        for band in 0..3u8 {
            let mut lanes: Vec<(u64, Option<String>)> = self
                .lanes
                .iter()
                .filter(|((b, g), _)| {
                    *b == band && partition.is_none_or(|p| self.group_partition(g) == p)
                })
                .map(|((_, g), t)| (*t, Some(g.clone())))
                .collect();
            if self.ready_in(None, band).any(here) {
                lanes.push((self.ungrouped_ticket[p as usize][usize::from(band)], None));
            }
            // `None` sorts before every group name.
            let Some((_, lane)) = lanes.into_iter().min() else {
                continue;
            };
            let i = self
                .jobs
                .iter()
                .enumerate()
                .filter(|(i, j)| {
                    j.record.status == JobStatus::Queued
                        && here(j)
                        && j.due.is_none()
                        && j.record.group == lane
                        && j.record.priority.band() == band
                        && !self.waits(*i)
                        && !self.chained(*i)
                })
                .min_by_key(|(_, j)| j.place)
                .map(|(i, _)| i)
                .expect("a lane has a ready job");
            return Some((i, band, lane));
        }
        None
    }

    pub(super) fn held_index(&self, lease: &LeaseRef, now: Millis) -> Option<usize> {
        self.jobs.iter().position(|j| {
            j.record.job_id == lease.job_id
                && j.lease
                    .as_ref()
                    .is_some_and(|h| h.token == lease.token && h.expires > now)
        })
    }

    /// Heartbeat.
    pub fn heartbeat(
        &mut self,
        beat: &WorkerBeat,
        leases: &[LeaseRef],
        now: Millis,
    ) -> HeartbeatReply {
        // Workers silent for three of their intervals are lost: their claim history goes,
        // once, at the first beat after their liveness ended (a lost worker that claims
        // again keeps that claim's history); listed as lost for an hour more, then
        // forgotten.
        let dead: Vec<(String, Millis)> = self
            .workers
            .iter()
            .map(|(w, (b, seen))| (w.clone(), seen + 3 * duration_ms(b.interval)))
            .filter(|(_, alive_until)| *alive_until < now)
            .collect();
        for (w, alive_until) in dead {
            if alive_until >= self.lost_seen {
                self.last_claim.remove(&w);
            }
            if alive_until + 3_600_000 < now {
                self.workers.remove(&w);
            }
        }
        self.lost_seen = self.lost_seen.max(now);
        self.workers
            .insert(beat.worker.as_str().to_owned(), (beat.clone(), now));
        let mut reply = HeartbeatReply::default();
        for lease in leases {
            match self.held_index(lease, now) {
                Some(i) => {
                    let job = &mut self.jobs[i];
                    job.lease.as_mut().expect("held").expires = now + duration_ms(beat.lease);
                    if job.record.cancel_requested {
                        reply.cancel.push(lease.clone());
                    }
                }
                None => reply.lost.push(lease.clone()),
            }
        }
        reply
    }

    /// Progress.
    pub fn progress(
        &mut self,
        lease: &LeaseRef,
        progress: u8,
        step: Option<String>,
        now: Millis,
    ) -> Result<bool> {
        if progress > 100 {
            return Err(Error::invalid(format!("progress {progress} is above 100")));
        }
        let i = self
            .held_index(lease, now)
            .ok_or_else(|| lost(lease.job_id))?;
        let job = &mut self.jobs[i];
        let h = job.lease.as_mut().expect("held");
        h.expires = now + h.lease_ms;
        job.record.progress = job.record.progress.max(progress);
        if let Some(step) = step {
            // An empty step name clears the step; a long one is cut to its bound.
            let step = queue_core::backend::bound_text(&step, queue_core::backend::MAX_STEP_BYTES);
            job.record.current_step = Some(step.into_owned()).filter(|s| !s.is_empty());
        }
        Ok(job.record.cancel_requested)
    }

    /// Finish (and maybe claim the next job).
    pub fn finish(
        &mut self,
        lease: &LeaseRef,
        outcome: Outcome,
        next: Option<&ClaimRequest>,
        now: Millis,
    ) -> Result<(JobStatus, Option<ModelLease>)> {
        self.now = now;
        let Some(i) = self.held_index(lease, now) else {
            // Sent again after it was applied: the same answer.
            let replay = self.find(lease.job_id).and_then(|j| j.ended.clone());
            return match replay {
                Some((token, status)) if token == lease.token => {
                    let next = next.and_then(|req| self.fetch(&one(req), now).pop());
                    Ok((status, next))
                }
                _ => Err(lost(lease.job_id)),
            };
        };
        let status = self.end(i, outcome, now);
        self.refresh_lanes();
        self.jobs[i].ended = Some((lease.token.clone(), status));
        let next = next.and_then(|req| self.fetch(&one(req), now).pop());
        Ok((status, next))
    }

    /// Several finishes, each on its own, then one claim of up to `next.max`.
    pub fn finish_many(
        &mut self,
        endings: &[(LeaseRef, Outcome)],
        next: Option<&ClaimRequest>,
        now: Millis,
    ) -> (Vec<Result<JobStatus>>, Vec<ModelLease>) {
        let statuses: Vec<Result<JobStatus>> = endings
            .iter()
            .map(|(lease, outcome)| {
                self.finish(lease, outcome.clone(), None, now)
                    .map(|(status, _)| status)
            })
            .collect();
        // Only a call that ended something claims more.
        let leases = next
            .filter(|_| statuses.iter().any(Result::is_ok))
            .map(|req| self.fetch(req, now))
            .unwrap_or_default();
        (statuses, leases)
    }

    /// Ends the attempt of the job at `i`; returns its new status.
    pub(super) fn end(&mut self, i: usize, outcome: Outcome, now: Millis) -> JobStatus {
        let max_delay = self.config.limits.delay;
        // Error text is stored cut to its bound (saying so); a handler's hold (and its own
        // snooze) is at most the hold limit.
        let cut = |e: String| {
            queue_core::backend::bound_text(&e, self.config.limits.error_bytes).into_owned()
        };
        let outcome = match outcome {
            Outcome::Retry { error, delay } => Outcome::Retry {
                error: cut(error),
                delay,
            },
            Outcome::Failed { error } => Outcome::Failed { error: cut(error) },
            Outcome::Partial { result, error } => Outcome::Partial {
                result,
                error: cut(error),
            },
            Outcome::RateLimited { retry_after } => Outcome::RateLimited {
                retry_after: retry_after.min(self.config.limits.hold),
            },
            other => other,
        };
        if let Outcome::RateLimited { retry_after } = &outcome {
            // The limit stands, whatever this job becomes: for its group when it has one,
            // else for the whole queue.
            let until = now.saturating_add(duration_ms((*retry_after).min(max_delay)));
            match self.jobs[i].record.group.clone() {
                Some(g) => {
                    let set = self.group_settings.entry(g).or_default();
                    set.held_until = set.held_until.max(until);
                }
                None => self.held_until = self.held_until.max(until),
            }
        }
        let job = &mut self.jobs[i];
        job.lease = None;
        let worker = job.record.worker_id.take().unwrap_or_default();
        if job.record.cancel_requested {
            // The requested cancel wins, whatever the handler reported.
            return self.terminal(i, JobStatus::Cancelled, now);
        }
        let retries_left = job.record.retry_count < job.record.max_retries;
        let r = &mut job.record;
        let terminal = match outcome {
            Outcome::Completed { result } => {
                r.progress = 100;
                r.error_message = None;
                r.result = result;
                JobStatus::Completed
            }
            Outcome::Partial { result, error } => {
                r.progress = 100;
                r.error_message = Some(error);
                r.result = result;
                JobStatus::Partial
            }
            Outcome::Retry { error, delay } if retries_left => {
                r.status = JobStatus::Queued;
                r.error_message = Some(error);
                note_attempt(r, &worker, now);
                r.retry_count += 1;
                r.progress = 0;
                r.current_step = None;
                let due = now.saturating_add(duration_ms(delay.min(max_delay)));
                r.run_at = Some(from_millis(due));
                job.due = Some(due);
                self.totals.retried += 1;
                return JobStatus::Queued;
            }
            Outcome::Retry { error, .. } | Outcome::Failed { error } => {
                r.error_message = Some(error);
                note_attempt(r, &worker, now);
                JobStatus::Failed
            }
            Outcome::Cancelled => JobStatus::Cancelled,
            Outcome::Snoozed { delay } | Outcome::RateLimited { retry_after: delay } => {
                // Waits like a retry, but uses no attempt and keeps the last error.
                r.status = JobStatus::Queued;
                r.progress = 0;
                r.current_step = None;
                let due = now.saturating_add(duration_ms(delay.min(max_delay)));
                r.run_at = Some(from_millis(due));
                job.due = Some(due);
                return JobStatus::Queued;
            }
            Outcome::Released => {
                // Back to the place it had, no attempt used.
                r.status = JobStatus::Queued;
                r.progress = 0;
                r.current_step = None;
                r.run_at = None;
                return JobStatus::Queued;
            }
        };
        self.terminal(i, terminal, now)
    }

    pub(super) fn terminal(&mut self, i: usize, status: JobStatus, now: Millis) -> JobStatus {
        self.jobs[i].kept = None;
        let r = &mut self.jobs[i].record;
        r.status = status;
        r.completed_at = Some(from_millis(now));
        r.run_at = None;
        r.worker_id = None;
        match status {
            JobStatus::Completed => self.totals.completed += 1,
            JobStatus::Failed => self.totals.failed += 1,
            JobStatus::Partial => self.totals.partial += 1,
            JobStatus::Cancelled => self.totals.cancelled += 1,
            _ => unreachable!("not terminal"),
        }
        self.child_ended(i, status, now);
        self.unchain(i, now);
        status
    }

    /// Recover expired leases, oldest expiry first.
    pub fn reap(&mut self, limit: usize, now: Millis) -> Vec<JobId> {
        self.now = now;
        let mut expired: Vec<(Millis, JobId)> = self
            .jobs
            .iter()
            .filter_map(|j| {
                j.lease
                    .as_ref()
                    .filter(|h| h.expires <= now)
                    .map(|h| (h.expires, j.record.job_id))
            })
            .collect();
        expired.sort();
        expired.truncate(limit);
        let ids: Vec<JobId> = expired.into_iter().map(|(_, id)| id).collect();
        self.recover(&ids, now);
        ids
    }

    /// Recovers the expired leases of `ids`, as the reap does.
    pub(super) fn recover(&mut self, ids: &[JobId], now: Millis) {
        for id in ids {
            let i = self
                .jobs
                .iter()
                .position(|j| j.record.job_id == *id)
                .expect("listed");
            self.totals.recovered += 1;
            let job = &mut self.jobs[i];
            job.lease = None;
            let worker = job.record.worker_id.take().unwrap_or_default();
            let r = &mut job.record;
            if r.cancel_requested {
                self.terminal(i, JobStatus::Cancelled, now);
            } else if r.retry_count < r.max_retries {
                r.status = JobStatus::Queued;
                r.retry_count += 1;
                r.progress = 0;
                r.current_step = None;
                r.run_at = None;
                r.error_message = Some(format!(
                    "lease expired: worker {worker} stopped renewing it"
                ));
                note_attempt(r, &worker, now);
            } else {
                r.error_message = Some(format!(
                    "lease expired: worker {worker} was lost and no retries are left"
                ));
                note_attempt(r, &worker, now);
                self.terminal(i, JobStatus::Failed, now);
            }
        }
        self.refresh_lanes();
    }
}
