//! One step of a run: an operation sent to the backend and to the model, their answers
//! compared.

use super::*;

impl<'a> Run<'a> {
    pub(super) async fn step(&mut self, op: &Op) -> Check {
        let now = self.now();
        let b = self.backend;
        match op.clone() {
            Op::Enqueue {
                job,
                key,
                priority,
                delay,
                retries,
            } => {
                let mut j = self
                    .new_job(job, key)
                    .priority(priority)
                    .max_retries(u32::from(retries));
                if delay > 0 {
                    j = j.delay(Duration::from_secs(u64::from(delay)));
                }
                let got = b.enqueue(j.clone()).await;
                let want = self.model.enqueue(j, now);
                expect_eq(
                    "enqueue",
                    norm(&got, Clone::clone),
                    norm(&want, Clone::clone),
                )
            }
            Op::EnqueueFlow {
                root,
                key,
                kids,
                nested,
            } => {
                let mut used = vec![root];
                let kids: Vec<(u8, u8)> = kids
                    .into_iter()
                    .filter(|(k, _)| {
                        let new = !used.contains(k);
                        used.push(*k);
                        new
                    })
                    .collect();
                let child = |(slot, policy): (u8, u8)| {
                    Flow::new(self.new_job(slot, None)).on_failure(policy_of(policy))
                };
                let mut children: Vec<Flow> = kids.iter().copied().map(child).collect();
                if nested && children.len() > 1 {
                    let last = children.pop().expect("two or more");
                    children[0].children.push(last);
                }
                let flow = Flow::new(self.new_job(root, key)).children(children);
                let got = b.enqueue_flow(flow.clone()).await;
                let flat = flow.flatten().map_err(|e| e.chain())?;
                let want = self.model.enqueue_flow(flat, None, now);
                expect_eq(
                    "enqueue_flow",
                    norm(&got, Clone::clone),
                    norm(&want, |v| v[0].clone()),
                )
            }
            Op::AddChildren { parent, kids } => {
                let mut used = vec![parent];
                let flows: Vec<Flow> = kids
                    .into_iter()
                    .filter(|(k, _)| {
                        let new = !used.contains(k);
                        used.push(*k);
                        new
                    })
                    .map(|(slot, policy)| {
                        Flow::new(self.new_job(slot, None)).on_failure(policy_of(policy))
                    })
                    .collect();
                let id = self.ids[usize::from(parent)];
                let got = b.add_children(id, flows.clone()).await;
                let flat = queue_core::backend::flatten_all(flows).map_err(|e| e.chain())?;
                let want = self.model.enqueue_flow(flat, Some(id), now);
                expect_eq(
                    "add_children",
                    norm(&got, Clone::clone),
                    norm(&want, Clone::clone),
                )
            }
            Op::Flood { jobs } => {
                let jobs: Vec<NewJob> = (0..jobs).map(anonymous).collect();
                self.big
                    .extend(jobs.iter().filter_map(|j| j.options.job_id));
                let got = b.enqueue_many(jobs.clone()).await.map_err(|e| e.chain())?;
                let want = self.model.enqueue_many(jobs, now);
                let got: Vec<_> = got.iter().map(|r| norm(r, Clone::clone)).collect();
                let want: Vec<_> = want.iter().map(|r| norm(r, Clone::clone)).collect();
                expect_eq("enqueue_many (big)", got, want)
            }
            Op::FetchAll { worker } => {
                let req = ClaimRequest::new(Self::worker(worker), MAX_CONCURRENCY, LEASE);
                self.fetch(worker, req, false).await
            }
            Op::BigFlow { root, members } => {
                let members: Vec<NewJob> = (0..members).map(anonymous).collect();
                self.big
                    .extend(members.iter().filter_map(|j| j.options.job_id));
                let flow = Flow::batch(self.new_job(root, None), members);
                let got = b.enqueue_flow(flow.clone()).await;
                let flat = flow.flatten().map_err(|e| e.chain())?;
                let want = self.model.enqueue_flow(flat, None, now);
                expect_eq(
                    "enqueue_flow (big)",
                    norm(&got, Clone::clone),
                    norm(&want, |v| v[0].clone()),
                )
            }
            Op::EnqueueMany(jobs) => {
                let jobs: Vec<NewJob> = jobs.iter().map(|(j, k)| self.new_job(*j, *k)).collect();
                let got = b.enqueue_many(jobs.clone()).await.map_err(|e| e.chain())?;
                let want = self.model.enqueue_many(jobs, now);
                let got: Vec<_> = got.iter().map(|r| norm(r, Clone::clone)).collect();
                let want: Vec<_> = want.iter().map(|r| norm(r, Clone::clone)).collect();
                expect_eq("enqueue_many", got, want)
            }
            Op::Fetch { worker, max, long } => {
                let lease = if long { Duration::from_secs(45) } else { LEASE };
                let req = ClaimRequest::new(Self::worker(worker), usize::from(max), lease);
                self.fetch(worker, req, false).await
            }
            Op::FetchAgain => match self.last_fetch.clone() {
                Some(req) => {
                    let worker = req.worker.as_str()[1..].parse().expect("w<n>");
                    self.fetch(worker, req, true).await
                }
                None => Ok(()),
            },
            Op::Heartbeat { worker } => {
                if self.vanished[usize::from(worker)] {
                    return Ok(());
                }
                let mine: Vec<usize> = (0..self.leases.len())
                    .filter(|i| self.leases[*i].worker == worker)
                    .collect();
                let beat = beat(worker);
                let sent_b: Vec<LeaseRef> = mine
                    .iter()
                    .map(|i| self.leases[*i].backend.clone())
                    .collect();
                let sent_m: Vec<LeaseRef> =
                    mine.iter().map(|i| self.leases[*i].model.clone()).collect();
                let got = b.heartbeat(&beat, &sent_b).await.map_err(|e| e.chain())?;
                let want = self.model.heartbeat(&beat, &sent_m, now);
                let slots = |refs: &[LeaseRef], sent: &[LeaseRef]| -> Vec<usize> {
                    let mut v: Vec<usize> = refs
                        .iter()
                        .filter_map(|r| sent.iter().position(|s| s == r).map(|p| mine[p]))
                        .collect();
                    v.sort();
                    v
                };
                expect_eq(
                    "heartbeat lost",
                    slots(&got.lost, &sent_b),
                    slots(&want.lost, &sent_m),
                )?;
                expect_eq(
                    "heartbeat cancel",
                    slots(&got.cancel, &sent_b),
                    slots(&want.cancel, &sent_m),
                )
            }
            Op::Progress {
                lease,
                percent,
                step,
            } => {
                let Some(i) = self.lease(lease) else {
                    return Ok(());
                };
                let step = step.then(|| format!("step-{percent}"));
                let got = b
                    .progress(&self.leases[i].backend, percent, step.clone())
                    .await;
                let want = self
                    .model
                    .progress(&self.leases[i].model, percent, step, now);
                expect_eq(
                    "progress",
                    norm(&got, |s| s.cancel_requested),
                    norm(&want, |c| *c),
                )
            }
            Op::Finish {
                lease,
                outcome,
                delay,
                next,
            } => {
                let Some(i) = self.lease(lease) else {
                    return Ok(());
                };
                let outcome = outcome_of(outcome, i, delay);
                let next =
                    next.then(|| ClaimRequest::new(Self::worker(self.leases[i].worker), 1, LEASE));
                self.finish(i, outcome, next).await
            }
            Op::FinishAgain => match self.last_finish.clone() {
                Some((i, outcome, next)) => self.finish(i, outcome, next).await,
                None => Ok(()),
            },
            Op::FinishMany { endings, next } => {
                let endings: Vec<(usize, Outcome)> = endings
                    .iter()
                    .filter_map(|(lease, outcome)| {
                        let i = self.lease(*lease)?;
                        Some((i, outcome_of(*outcome, i, 5)))
                    })
                    .collect();
                if endings.is_empty() {
                    return Ok(());
                }
                let worker = self.leases[endings[0].0].worker;
                let req = (next > 0)
                    .then(|| ClaimRequest::new(Self::worker(worker), usize::from(next), LEASE));
                self.finish_many(endings, worker, req).await
            }
            Op::FinishManyAgain => match self.last_finish_many.clone() {
                Some((endings, worker, req)) => self.finish_many(endings, worker, req).await,
                None => Ok(()),
            },
            Op::Cancel { job } => {
                let id = self.ids[usize::from(job)];
                let got = b.cancel(id).await;
                let want = self.model.cancel(id, now);
                expect_eq("cancel", norm(&got, |o| *o), norm(&want, |o| *o))
            }
            Op::Retry { job, priority } => {
                let id = self.ids[usize::from(job)];
                let got = b.retry(id, priority).await;
                let want = self.model.retry(id, priority, now);
                expect_eq("retry", norm(&got, Clone::clone), norm(&want, Clone::clone))
            }
            Op::Advance { secs } => {
                self.clock.advance(Duration::from_secs(u64::from(secs)));
                Ok(())
            }
            Op::PutSchedule {
                slot,
                every,
                policy,
            } => {
                use queue_core::{Schedule, Schedules};
                let name = format!("s{slot}");
                let secs = SCHEDULE_EVERY[usize::from(every) % 3];
                let job = NewJob::new("model", &json!({ "schedule": name })).expect("encodes");
                let schedule = Schedule::every(&name, Duration::from_secs(u64::from(secs)), job)
                    .map_err(|e| e.chain())?
                    .missed(missed_of(policy));
                b.put_schedule(schedule).await.map_err(|e| e.chain())?;
                self.model
                    .put_schedule(&name, i64::from(secs) * 1000, policy % 3, now);
                Ok(())
            }
            Op::PauseSchedule { slot, paused } => {
                use queue_core::Schedules;
                let name = format!("s{slot}");
                let got = if paused {
                    b.pause_schedule(&name).await
                } else {
                    b.resume_schedule(&name).await
                };
                let want = self.model.pause_schedule(&name, paused, now);
                expect_eq("pause_schedule", norm(&got, |_| ()), norm(&want, |_| ()))
            }
            Op::DeleteSchedule { slot } => {
                use queue_core::Schedules;
                let name = format!("s{slot}");
                let got = b.delete_schedule(&name).await;
                let want = self.model.delete_schedule(&name);
                expect_eq("delete_schedule", norm(&got, |_| ()), norm(&want, |_| ()))
            }
            Op::RunSchedules => {
                use queue_core::Schedules;
                let report = b.run_due_schedules().await.map_err(|e| e.chain())?;
                if let Some((name, e)) = report.errors.first() {
                    return Err(format!("schedule {name}: {}", e.chain()));
                }
                let mut got = report.fired;
                got.sort();
                let mut want = self.model.run_schedules(now);
                want.sort();
                expect_eq("run_due_schedules", got, want)
            }
            Op::Reap => {
                let got = b.reap(100).await.map_err(|e| e.chain())?;
                if self.trace.is_some() {
                    // Partitions are reaped in turn: the model checks the choice.
                    return self.model.reap_these(&got, 100, now);
                }
                let want = self.model.reap(100, now);
                expect_eq("reap", got, want)
            }
            Op::EnqueueKeyed {
                job,
                key,
                mode,
                secs,
                v,
            } => {
                let mut j = self.new_job(job, Some(key));
                j.payload =
                    queue_core::Payload::encode(&json!({ "job": job, "v": v })).expect("encodes");
                let span = Duration::from_secs(u64::from(secs));
                j = match mode % 4 {
                    0 => j.debounce(span),
                    1 => j.throttle(span),
                    2 => j.keep_latest(),
                    _ => j.replace_running(),
                };
                let got = b.enqueue(j.clone()).await;
                let want = self.model.enqueue(j, now);
                expect_eq(
                    "keyed enqueue",
                    norm(&got, Clone::clone),
                    norm(&want, Clone::clone),
                )
            }
            Op::EnqueueSequenced { job, seq, delay } => {
                let mut j = self.new_job(job, None).sequence(format!("s{seq}"));
                if delay > 0 {
                    j = j.delay(Duration::from_secs(u64::from(delay)));
                }
                let got = b.enqueue(j.clone()).await;
                let want = self.model.enqueue(j, now);
                expect_eq(
                    "sequenced enqueue",
                    norm(&got, Clone::clone),
                    norm(&want, Clone::clone),
                )
            }
            Op::Series => {
                if now - self.begun >= 23 * 3600 * 1000 {
                    return Ok(());
                }
                let series = b
                    .series(queue_core::SeriesSpan::Day)
                    .await
                    .map_err(|e| e.chain())?;
                let totals = self.model.stats(now).totals;
                let want = [
                    totals.enqueued,
                    totals.completed,
                    totals.partial,
                    totals.failed,
                    totals.cancelled,
                    totals.retried,
                    totals.recovered,
                ];
                let got: Vec<u64> = queue_core::series::COUNTERS
                    .iter()
                    .map(|c| series.points.iter().map(|p| p.count(c)).sum())
                    .collect();
                expect_eq("series counters (day)", got, want.to_vec())
            }
            Op::Delete { job } => {
                let id = self.ids[usize::from(job)];
                let got = b.delete(id).await;
                let want = self.model.delete(id, now);
                // A job created later under the deleted one's id is not its children's
                // parent (`is_parent_of`: created later); a real clock has moved on by then.
                self.clock.advance(Duration::from_millis(1));
                expect_eq(
                    "delete",
                    norm(&got, Clone::clone),
                    norm(&want, Clone::clone),
                )
            }
            Op::Sweep => {
                let got = b.sweep(100).await.map_err(|e| e.chain())?;
                let want = self.model.sweep(100, now);
                // As after a delete: a reused id is a job created later.
                self.clock.advance(Duration::from_millis(1));
                expect_eq("sweep", got, want)
            }
            Op::Vanish { worker } => {
                self.vanished[usize::from(worker)] = true;
                Ok(())
            }
            Op::Pause => {
                b.pause().await.map_err(|e| e.chain())?;
                self.model.set_paused(true);
                Ok(())
            }
            Op::Resume => {
                b.resume().await.map_err(|e| e.chain())?;
                self.model.set_paused(false);
                Ok(())
            }
            Op::RateLimit { max, secs } => {
                let limit = (max > 0).then(|| queue_core::RateLimit {
                    max: u32::from(max),
                    per: Duration::from_secs(u64::from(secs)),
                });
                let got = b.set_rate_limit(limit).await;
                let want = self.model.set_rate_limit(limit);
                expect_eq("set_rate_limit", norm(&got, |_| ()), norm(&want, |_| ()))
            }
            Op::PauseGroup { group, paused } => {
                let g = GROUPS[usize::from(group)];
                if paused {
                    b.pause_group(g).await.map_err(|e| e.chain())?;
                } else {
                    b.resume_group(g).await.map_err(|e| e.chain())?;
                }
                self.model.set_group_paused(g, paused, now);
                Ok(())
            }
            Op::GroupLimit { group, max } => {
                let g = GROUPS[usize::from(group)];
                let limit = (max > 0).then_some(u32::from(max));
                b.set_group_concurrency(g, limit)
                    .await
                    .map_err(|e| e.chain())?;
                self.model.set_group_concurrency(g, limit, now);
                Ok(())
            }
            Op::GroupWeight { group, weight } => {
                let g = GROUPS[usize::from(group)];
                let weight = (weight > 0).then_some(u32::from(weight));
                b.set_group_weight(g, weight).await.map_err(|e| e.chain())?;
                self.model.set_group_weight(g, weight, now);
                Ok(())
            }
            Op::GroupRate { group, max, secs } => {
                let g = GROUPS[usize::from(group)];
                let limit = (max > 0).then(|| queue_core::RateLimit {
                    max: u32::from(max),
                    per: Duration::from_secs(u64::from(secs)),
                });
                b.set_group_rate_limit(g, limit)
                    .await
                    .map_err(|e| e.chain())?;
                self.model.set_group_rate_limit(g, limit, now);
                Ok(())
            }
            Op::Deregister { worker } => {
                b.deregister(&Self::worker(worker))
                    .await
                    .map_err(|e| e.chain())?;
                self.model.deregister(&format!("w{worker}"));
                Ok(())
            }
            Op::Pages => {
                let mut got = Vec::new();
                let mut query = ListQuery::new().limit(2);
                loop {
                    let page = b.list(&query).await.map_err(|e| e.chain())?;
                    got.extend(page.jobs.iter().map(|r| r.job_id));
                    match page.next_cursor {
                        Some(c) if got.len() <= self.model.ids().len() + 2 => {
                            query = query.cursor(c)
                        }
                        _ => break,
                    }
                }
                let mut want = Vec::new();
                let mut query = ListQuery::new().limit(2);
                loop {
                    let page = self.model.list(&query).map_err(|e| e.chain())?;
                    want.extend(page.jobs.iter().map(|r| r.job_id));
                    match page.next_cursor {
                        Some(c) => query = query.cursor(c),
                        None => break,
                    }
                }
                expect_eq("pages", got, want)
            }
        }
    }
}
