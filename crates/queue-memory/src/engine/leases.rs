//! Claims and leases: the ready queue, claims, fences, heartbeats, progress, finishes and the reap of expired leases.

use super::*;

impl Tables {
    pub(super) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub(super) fn push_ready(&mut self, id: JobId, ready_position: (u8, u64)) {
        self.woken = true;
        self.ready_by_band[usize::from(ready_position.0)] += 1;
        match self.jobs.get(&id).and_then(|e| e.record.group.clone()) {
            None => {
                self.ready.insert(ready_position, id);
            }
            Some(group) => {
                let cost = self.jobs[&id].record.cost.unwrap_or(1);
                self.groups
                    .entry(group.clone())
                    .or_default()
                    .ready
                    .insert(ready_position, (id, cost));
                self.refresh_group(&group);
            }
        }
    }

    /// Takes the next ready job of `band` (`queue_core::backend` group rules: the lane with
    /// the lowest ticket, the jobs without a group first on a tie), stamping its lane with
    /// a new ticket, if `fits` its cost (the queue's rate limit); else takes nothing.
    pub(super) fn pop_ready(&mut self, band: u8, fits: impl Fn(u32) -> bool) -> Pop {
        let b = usize::from(band);
        // Bands are served in order, so a job without a group of this band comes first.
        let ungrouped = self
            .ready
            .first_key_value()
            .map(|(p, id)| (*p, *id))
            .filter(|(p, _)| p.0 == band);
        let lane = self.lanes[b].first().cloned();
        let take_ungrouped = match (ungrouped, &lane) {
            (None, None) => return Pop::Empty,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(_), Some((ticket, _))) => {
                queue_core::backend::ungrouped_goes_first(self.ungrouped_ticket[b], *ticket)
            }
        };
        if take_ungrouped {
            let (place, id) = ungrouped.expect("checked");
            let cost = self.jobs.get(&id).and_then(|e| e.record.cost).unwrap_or(1);
            if !fits(cost) {
                return Pop::Blocked;
            }
            self.ready.remove(&place);
            self.tick += 1;
            self.ready_by_band[b] -= 1;
            self.ungrouped_ticket[b] = self.tick;
            return Pop::Job(id, cost);
        }
        let (ticket, group) = lane.expect("checked");
        let state = self.groups.get_mut(&group).expect("a lane's group exists");
        let (&first, &(id, cost)) = state
            .ready
            .range((band, 0)..=(band, u64::MAX))
            .next()
            .expect("a lane has ready jobs");
        if !fits(cost) {
            return Pop::Blocked;
        }
        state.ready.remove(&first);
        let (turn, new_ticket) = weighted_turn(state.turn, state.weight);
        state.turn = turn;
        if new_ticket {
            state.lane[b] = None;
        }
        state.running += 1;
        if let Some(limit) = state.rate {
            state.starts.prune(limit.window_floor(self.now));
            state.starts.push(self.now, cost);
        }
        if new_ticket {
            self.lanes[b].remove(&(ticket, group.clone()));
        }
        self.tick += 1;
        self.ready_by_band[b] -= 1;
        self.refresh_group(&group);
        Pop::Job(id, cost)
    }

    pub(super) fn remove_ready(&mut self, id: JobId, ready_position: (u8, u64)) {
        let group = self.jobs.get(&id).and_then(|e| e.record.group.clone());
        let removed = match &group {
            None => {
                let here = self.ready.get(&ready_position) == Some(&id);
                if here {
                    self.ready.remove(&ready_position);
                }
                here
            }
            Some(g) => {
                let state = self.groups.get_mut(g);
                let here = state
                    .as_ref()
                    .is_some_and(|s| s.ready.get(&ready_position).map(|r| r.0) == Some(id));
                if here {
                    state.expect("checked").ready.remove(&ready_position);
                    self.refresh_group(g);
                }
                here
            }
        };
        if removed {
            self.ready_by_band[usize::from(ready_position.0)] -= 1;
        }
    }

    /// True when a job became ready or delayed, or a lane opened, since the last call.
    pub(crate) fn take_woken(&mut self) -> bool {
        std::mem::take(&mut self.woken)
    }

    /// Sets the time of the operation under way.
    pub(crate) fn at(&mut self, now: Millis) -> &mut Self {
        self.now = now;
        self
    }

    /// The lease `entry` holds, answered to a claim sent at `sent` and applied at `now`.
    pub(super) fn lease_of(entry: &Entry, sent: tokio::time::Instant, now: Millis) -> Lease {
        let held = entry.lease.as_ref().expect("leased");
        // When the lease was last set: its expiry less its length.
        let started = held.expires_ms - held.lease_ms;
        Lease {
            job: entry.record.clone(),
            token: held.token.clone(),
            expires_at: from_millis(held.expires_ms),
            claimed_at: Lease::claimed_at_from(sent, now, started),
        }
    }

    /// Promotes due delayed jobs, then leases up to `req.size()` ready jobs. A request seen
    /// before (same or older id of the same worker) answers the leases it took that are
    /// still held instead (oldest first, at most `req.size()`), read from its own entry of
    /// `claimed`; one that took nothing claims as new. A job a cancel's cascade is about to
    /// reach is cancelled instead of started.
    pub(crate) fn claim(
        &mut self,
        req: &ClaimRequest,
        now: Millis,
        events: EventSender<'_>,
    ) -> Vec<Lease> {
        let worker = req.worker.as_str();
        let size = req.size();
        let sent = tokio::time::Instant::now();
        match self.last_claim.get(worker) {
            Some(last) if req.id <= *last => {
                let key = (worker.to_owned(), req.id);
                let mut replay: Vec<Lease> = self
                    .claimed
                    .get(&key)
                    .into_iter()
                    .flatten()
                    .filter_map(|id| self.jobs.get(id))
                    .filter(|e| {
                        e.lease
                            .as_ref()
                            .is_some_and(|h| h.claim == req.id && h.expires_ms > now)
                            && e.record.worker_id.as_deref() == Some(worker)
                    })
                    .map(|e| Self::lease_of(e, sent, now))
                    .collect();
                if !replay.is_empty() {
                    // Oldest first, at most what the request asked for.
                    replay.sort_by_key(|l| (l.job.started_at, l.job.job_id));
                    replay.truncate(size);
                    return replay;
                }
            }
            _ => {
                self.last_claim.insert(worker.to_owned(), req.id);
            }
        }
        while let Some(&(due, id)) = self.delayed.first() {
            if due > now {
                break;
            }
            self.delayed.pop_first();
            let seq = self.next_seq();
            let Some(entry) = self.jobs.get_mut(&id) else {
                continue;
            };
            let ready_position = (entry.record.priority.band(), seq);
            entry.ready_position = ready_position;
            self.push_ready(id, ready_position);
        }
        self.now = now;
        self.wake_timed_groups();
        if self.paused || now < self.held_until {
            return Vec::new();
        }
        let mut max = size;
        self.rate_blocked = false;
        let mut used = 0;
        if let Some(limit) = self.rate {
            self.starts.prune(limit.window_floor(now));
            used = self.starts.used;
            max = max.min(limit.room(used as usize));
            if max == 0 {
                self.rate_blocked = true;
                return Vec::new();
            }
        }
        let lease_ms = duration_ms(req.lease);
        let input = EffectInput {
            now,
            worker: Some(worker.to_owned()),
            ..EffectInput::default()
        };
        let mut out = Vec::with_capacity(max.min(self.ready_by_band.iter().sum::<u64>() as usize));
        let mut band = 0u8;
        while out.len() < max && band < 3 {
            let rate = self.rate;
            let id = match self.pop_ready(band, |cost| rate.is_none_or(|l| l.admits(used, cost))) {
                Pop::Job(id, cost) => {
                    if rate.is_some() {
                        used += u64::from(cost);
                        self.starts.push(now, cost);
                    }
                    id
                }
                Pop::Empty => {
                    band += 1;
                    continue;
                }
                Pop::Blocked => {
                    self.rate_blocked = true;
                    break;
                }
            };
            if self.doomed(id) {
                self.cancel_popped(id, now, events);
                continue;
            }
            if self.transition(id, Event::Start, &input, events).is_err() {
                continue;
            }
            let expires_ms = now + lease_ms;
            let entry = self.jobs.get_mut(&id).expect("started");
            entry.lease = Some(ActiveLease {
                token: LeaseToken::generate(),
                expires_ms,
                lease_ms,
                claim: req.id,
            });
            self.active.insert((expires_ms, id));
            self.claimed
                .entry((worker.to_owned(), req.id))
                .or_default()
                .push(id);
            out.push(Self::lease_of(&self.jobs[&id], sent, now));
        }
        out
    }

    /// Forgets the lease `held` of job `id` in its claim's entry of `claimed`.
    pub(super) fn forget_claimed(&mut self, id: JobId, held: &ActiveLease) {
        let worker = self.jobs[&id].record.worker_id.clone().unwrap_or_default();
        let key = (worker, held.claim);
        if let Some(ids) = self.claimed.get_mut(&key) {
            ids.retain(|j| *j != id);
            if ids.is_empty() {
                self.claimed.remove(&key);
            }
        }
    }

    /// When a fetch that took nothing at `now` should look again: the earliest due time of
    /// a delayed job, or when a hold ends or the rate limit next allows a start.
    pub(crate) fn next_wake(&self, now: Millis) -> Option<Millis> {
        let rate_next = match (self.rate, self.starts.starts.front()) {
            _ if now < self.held_until => Some(self.held_until),
            (Some(limit), Some((oldest, _))) if self.rate_blocked => {
                Some(limit.next_start(*oldest))
            }
            _ => None,
        };
        let group_next = self.timed_groups.first().map(|(at, _)| *at);
        [self.next_due(), rate_next, group_next]
            .into_iter()
            .flatten()
            .min()
    }

    /// The earliest due time of a delayed job.
    pub(crate) fn next_due(&self) -> Option<Millis> {
        self.delayed.first().map(|(due, _)| *due)
    }

    /// True when `lease` is current and unexpired.
    pub(super) fn holds(&self, lease: &LeaseRef, now: Millis) -> bool {
        let held = self.jobs.get(&lease.job_id).and_then(|e| e.lease.as_ref());
        queue_core::backend::lease_holds(
            held.map(|h| (h.token.as_str(), h.expires_ms)),
            lease.token.as_str(),
            now,
        )
    }

    pub(super) fn extend(&mut self, id: JobId, now: Millis, lease_ms: Option<Millis>) {
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
        // Workers silent for three of their intervals are lost: their claim history goes,
        // once, at the first beat after their liveness ended (a lost worker that claims
        // again keeps that claim's history); they stay listed as lost for a while, then
        // are forgotten (`worker_listing`).
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
            if worker_listing(alive_until, now).is_none() {
                self.workers.remove(&w);
            }
        }
        self.lost_seen = self.lost_seen.max(now);
        self.workers
            .insert(beat.worker.as_str().to_owned(), (beat.clone(), now));
        let mut reply = HeartbeatReply::default();
        for lease in leases {
            if self.holds(lease, now) {
                self.extend(lease.job_id, now, Some(duration_ms(beat.lease)));
                if self.jobs[&lease.job_id].record.cancel_requested {
                    reply.cancel.push(lease.clone());
                }
            } else {
                reply.lost.push(lease.clone());
            }
        }
        let gauges = queue_core::series::gauges(&self.stats(now));
        self.series.sample(now, &gauges);
        reply
    }

    pub(crate) fn progress(
        &mut self,
        lease: &LeaseRef,
        progress: u8,
        step_name: Option<&str>,
        now: Millis,
        events: EventSender<'_>,
    ) -> Result<ProgressReply> {
        queue_core::backend::check_progress(progress)?;
        if !self.holds(lease, now) {
            return Err(Error::LeaseLost { id: lease.job_id });
        }
        self.extend(lease.job_id, now, None);
        let r = &mut self.jobs.get_mut(&lease.job_id).expect("held").record;
        r.progress = r.progress.max(progress);
        if let Some(s) = Limits::bound_step(step_name.map(str::to_owned)) {
            // An empty step name clears the step.
            r.current_step = (!s.is_empty()).then_some(s);
        }
        let status = ProgressReply {
            cancel_requested: r.cancel_requested,
        };
        let kind = EventKind::Progress {
            progress: r.progress,
            step: r.current_step.clone(),
        };
        emit(events, lease.job_id, now, kind);
        Ok(status)
    }

    /// Ends a held attempt with `outcome`, as `rules::settle` decides. A finish sent again
    /// after it was applied answers the status it produced.
    pub(crate) fn finish(
        &mut self,
        lease: &LeaseRef,
        outcome: Outcome,
        cfg: &QueueConfig,
        now: Millis,
        events: EventSender<'_>,
    ) -> Result<JobStatus> {
        self.now = now;
        let outcome = cfg.limits.bound_outcome(outcome);
        let id = lease.job_id;
        if !self.holds(lease, now) {
            return match self.jobs.get(&id).and_then(|e| e.ended.as_ref()) {
                Some((token, status)) if *token == lease.token => Ok(*status),
                _ => Err(Error::LeaseLost { id }),
            };
        }
        let entry = self.jobs.get_mut(&id).expect("held");
        let held = entry.lease.take().expect("held");
        let group = entry.record.group.clone();
        self.forget_claimed(id, &held);
        self.active.remove(&(held.expires_ms, id));
        self.release_group_slot(group.as_deref());
        let entry = self.jobs.get_mut(&id).expect("held");
        let event = rules::settle(outcome.kind(), AttemptFacts::of(&entry.record));
        let holds_queue = rules::holds_queue(outcome.kind());
        let input = EffectInput::of_outcome(outcome, now, &cfg.limits);
        if holds_queue {
            // Whatever the job became, the limit it hit stands: for its group when it has
            // one, else for the whole queue.
            let until = input.due.unwrap_or(now);
            match &group {
                Some(g) => {
                    let state = self.groups.entry(g.clone()).or_default();
                    state.held_until = state.held_until.max(until);
                    self.refresh_group(g);
                }
                None => self.held_until = self.held_until.max(until),
            }
        }
        let status = self.transition(id, event, &input, events)?;
        self.jobs.get_mut(&id).expect("exists").ended = Some((held.token, status));
        Ok(status)
    }

    pub(crate) fn reap(
        &mut self,
        limit: usize,
        now: Millis,
        events: EventSender<'_>,
    ) -> Vec<JobId> {
        self.now = now;
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(&(expires, id)) = self.active.first() else {
                break;
            };
            if expires > now {
                break;
            }
            self.active.pop_first();
            let held = self
                .jobs
                .get_mut(&id)
                .expect("active jobs exist")
                .lease
                .take();
            if let Some(held) = held {
                self.forget_claimed(id, &held);
            }
            let group = self.jobs[&id].record.group.clone();
            self.release_group_slot(group.as_deref());
            let entry = &self.jobs[&id];
            let facts = AttemptFacts::of(&entry.record);
            let worker = entry.record.worker_id.clone().unwrap_or_default();
            let input = EffectInput {
                now,
                error: Some(rules::lease_expired_message(&worker, facts.retries_left)),
                ..EffectInput::default()
            };
            bump(&mut self.totals, &mut self.series, now, "recovered");
            let event = rules::on_lease_expired(facts);
            self.transition(id, event, &input, events)
                .expect("a processing job accepts what its expired lease becomes");
            out.push(id);
        }
        out
    }
}
