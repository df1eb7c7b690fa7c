//! `Broker` for Redis: claims (blocking wake-up, idempotent per request), leases,
//! outcomes, recovery and retention.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use queue_core::backend::{
    Broker, CancelStream, ClaimRequest, Ending, FinishedMany, HeartbeatReply, Lease, LeaseRef,
    MAX_ENDINGS, Millis, ProgressReply, ScheduleRead, ScheduleWrite, ScheduleWritten,
    StoredSchedules, WorkerBeat, duration_ms, from_millis,
};
use queue_core::backend::{Handoff, detached, finish_guarded};
use queue_core::{Error, JobId, JobStatus, LeaseToken, Result, WorkerId};
use redis::Value;

use crate::{
    RedisBackend, codec,
    conn::MAX_BLOCK,
    wire::{self, Claimed, LeaseEntry, array, int, text},
};

/// When and how a claim was sent, for the leases it answers ([`Lease::claimed_at_from`]).
#[derive(Clone, Copy)]
struct Sent {
    /// When the call that answered was sent (this process's clock).
    at: tokio::time::Instant,
    /// The server's now when it answered.
    now: Millis,
    /// The lease length asked for.
    lease_ms: Millis,
}

impl RedisBackend {
    /// One step of `finish_many`: `endings` in one script call, then the claim `next` when
    /// one of them (or of an earlier step: `accepted_before`) was accepted.
    async fn finish_step(
        &self,
        endings: &[Ending],
        next: Option<&ClaimRequest>,
        accepted_before: bool,
    ) -> Result<(Vec<Result<JobStatus>>, Vec<Lease>)> {
        if endings.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let keys: Vec<String> = endings
            .iter()
            .map(|e| self.inner.keys.job(e.lease.job_id))
            .collect();
        let args = wire::finish_args(endings, &self.inner.config.limits, next, accepted_before);
        let at = tokio::time::Instant::now();
        let (statuses, claimed, now) =
            wire::finished(self.run(&self.inner.scripts.finish, &keys, args).await?);
        self.replicated().await?;
        if statuses.len() != endings.len() {
            return Err(Error::backend(
                "redis",
                format!(
                    "finish answered {} statuses for {} endings",
                    statuses.len(),
                    endings.len()
                ),
            ));
        }
        let statuses = endings
            .iter()
            .zip(statuses)
            .map(|(e, status)| match status.as_str() {
                "lost" => Err(Error::LeaseLost { id: e.lease.job_id }),
                s if s.starts_with('!') => Err(Error::backend(
                    "redis",
                    format!("finish of job {}: {}", e.lease.job_id, &s[1..]),
                )),
                s => s.parse::<JobStatus>(),
            })
            .collect();
        let leases = match next {
            Some(req) => {
                let sent = Sent {
                    at,
                    now: now.unwrap_or_else(|| self.now_ms()),
                    lease_ms: duration_ms(req.lease),
                };
                self.leases(claimed, &req.worker, sent).await?
            }
            None => Vec::new(),
        };
        Ok((statuses, leases))
    }

    /// Leases from a claim reply, with the records the claim read (the lease is the one
    /// the claim just wrote; a cancel arriving meanwhile comes by push or heartbeat); a job
    /// whose record cannot be read is failed at once, saying why.
    async fn leases(
        &self,
        claimed: Vec<Claimed>,
        worker: &WorkerId,
        sent: Sent,
    ) -> Result<Vec<Lease>> {
        let mut out = Vec::with_capacity(claimed.len());
        for c in claimed {
            let problem = match &c.record {
                None => "corrupt job record: not stored as a hash".to_owned(),
                Some(fields) if fields.is_empty() => "corrupt job record: it is missing".to_owned(),
                Some(fields) => {
                    let lease = LeaseEntry {
                        token: c.token.as_str().to_owned(),
                        expires: c.expires,
                        started: c.started,
                        cancel: c.cancel,
                        worker: worker.as_str().to_owned(),
                    };
                    match codec::decode_leased(c.id.parse().ok(), fields, Some(&lease)) {
                        Ok(job) => {
                            // The lease was last set at its expiry less its length.
                            let set = c.expires - sent.lease_ms;
                            out.push(Lease {
                                job,
                                token: c.token,
                                expires_at: from_millis(c.expires),
                                claimed_at: Lease::claimed_at_from(sent.at, sent.now, set),
                            });
                            continue;
                        }
                        Err(e) => format!("corrupt job record: {e}"),
                    }
                }
            };
            self.fail_corrupt(&c.id, &c.token, problem).await;
        }
        Ok(out)
    }

    async fn fail_corrupt(&self, id: &str, token: &LeaseToken, message: String) {
        tracing::warn!(job_id = id, error = %message, "failing a job whose record cannot be read");
        let key = self.inner.keys.job_named(id);
        let args = wire::corrupt_args(id, token, message);
        if let Err(e) = self.run(&self.inner.scripts.finish, &[key], args).await {
            tracing::warn!(job_id = id, error = %e.chain(), "could not fail the corrupt job; its lease will expire");
        }
    }

    async fn claim_now(&self, req: &ClaimRequest) -> Result<(Vec<Lease>, Option<Millis>, Millis)> {
        let args = wire::claim_args(req).to_vec();
        // Sent again under the same id while no send is answered: a send that was applied
        // is answered by the next one (a replay), so a lost reply never strands leases.
        let (reply, at) = self
            .run_until_answered(&self.inner.scripts.claim, &[], args, req.lease)
            .await?;
        let mut it = array(reply).into_iter();
        let now = it
            .next()
            .as_ref()
            .and_then(int)
            .unwrap_or_else(|| self.now_ms());
        let next_due = it.next().as_ref().and_then(int);
        let claimed = wire::claimed(it.next().unwrap_or(Value::Nil));
        let sent = Sent {
            at,
            now,
            lease_ms: duration_ms(req.lease),
        };
        let leases = self.leases(claimed, &req.worker, sent).await?;
        Ok((leases, next_due, now))
    }

    /// Runs a claim on its own task, so a caller that goes away (a dropped `fetch`) cannot
    /// lose leased jobs: they come in a [`Handoff`], handed back unless taken.
    pub(crate) async fn claim_detached(
        &self,
        req: &ClaimRequest,
    ) -> Result<(Handoff<RedisBackend>, Option<Millis>, Millis)> {
        let (this, req) = (self.clone(), req.clone());
        detached("redis", async move {
            let (leases, due, now) = this.claim_now(&req).await?;
            Ok((Handoff::new(this, leases), due, now))
        })
        .await
    }

    /// Ends `endings` in steps of at most `MAX_ENDINGS`, each one script call; the claim
    /// goes with the last (only when some ending was accepted: the script of the last step
    /// cannot see the earlier ones, so an accepted earlier step is passed on by asking
    /// anyway).
    async fn finish_now(
        &self,
        endings: Vec<Ending>,
        next: Option<&ClaimRequest>,
    ) -> Result<FinishedMany> {
        let mut out = FinishedMany {
            statuses: Vec::with_capacity(endings.len()),
            next: Vec::new(),
        };
        let steps: Vec<&[Ending]> = endings.chunks(MAX_ENDINGS).collect();
        let count = steps.len();
        for (i, step) in steps.into_iter().enumerate() {
            let last = i + 1 == count;
            let accepted_before = out.statuses.iter().any(Result::is_ok);
            let claim = next.filter(|_| last);
            let (statuses, leases) = self.finish_step(step, claim, accepted_before).await?;
            out.statuses.extend(statuses);
            out.next = leases;
        }
        Ok(out)
    }

    /// Blocks on the wake-up marker for up to `timeout`, on a dedicated connection.
    pub(crate) async fn wait_for_work(&self, timeout: Duration) -> Result<()> {
        let pooled = self
            .inner
            .blocking
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => self
                .inner
                .deployment
                .connect_blocking()
                .await
                .map_err(|e| self.err(e))?,
        };
        let secs = format!(
            "{:.3}",
            timeout.max(Duration::from_millis(10)).as_secs_f64()
        );
        let result: redis::RedisResult<Value> = redis::cmd("BZPOPMIN")
            .arg(self.inner.keys.marker())
            .arg(secs)
            .query_async(&mut conn)
            .await;
        match result {
            Ok(_) => {
                self.inner
                    .blocking
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(conn);
                Ok(())
            }
            // The connection is dropped: the next wait opens a fresh one.
            Err(e) => Err(self.err(e)),
        }
    }
}

/// How long a fetch that found nothing blocks: what is left of its wait, at most
/// [`MAX_BLOCK`], and no later than the earliest delayed job falls due.
pub(crate) fn block_for(remaining: Duration, next_due: Option<Millis>, now: Millis) -> Duration {
    let block = remaining.min(MAX_BLOCK);
    match next_due {
        Some(due) => block.min(Duration::from_millis((due - now).max(1) as u64)),
        None => block,
    }
}

#[async_trait]
impl Broker for RedisBackend {
    async fn fetch(&self, req: &ClaimRequest, wait: Duration) -> Result<Vec<Lease>> {
        self.check_whole().await?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (leases, next_due, now) = self.claim_detached(req).await?;
            let leases = leases.take();
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !leases.is_empty() || remaining.is_zero() {
                return Ok(leases);
            }
            let block = block_for(remaining, next_due, now);
            let blocked = self.inner.blocked.enter();
            self.wait_for_work(block).await?;
            drop(blocked);
            // The earlier sends took nothing, so the same id claims as new: a worker that
            // sends this request again after an error is answered what any send took.
        }
    }

    async fn heartbeat(&self, beat: &WorkerBeat, leases: &[LeaseRef]) -> Result<HeartbeatReply> {
        let key = self.inner.keys.worker(beat.worker.as_str());
        let reply = array(
            self.run(
                &self.inner.scripts.heartbeat,
                &[key],
                wire::heartbeat_args(beat, leases),
            )
            .await?,
        );
        let mut it = reply.into_iter();
        let pick = |positions: Vec<usize>| -> Vec<LeaseRef> {
            positions
                .into_iter()
                .filter_map(|p| leases.get(p.checked_sub(1)?).cloned())
                .collect()
        };
        let lost = pick(wire::positions(it.next()));
        let cancel = pick(wire::positions(it.next()));
        Ok(HeartbeatReply { lost, cancel })
    }

    async fn progress(
        &self,
        lease: &LeaseRef,
        progress: u8,
        step: Option<String>,
    ) -> Result<ProgressReply> {
        queue_core::backend::check_progress(progress)?;
        let step = queue_core::Limits::bound_step(step);
        let args = vec![
            lease.job_id.to_string(),
            lease.token.as_str().to_owned(),
            progress.to_string(),
            if step.is_some() { "1" } else { "0" }.to_owned(),
            step.unwrap_or_default(),
        ];
        let reply = array(
            self.run(
                &self.inner.scripts.progress,
                &[self.inner.keys.job(lease.job_id)],
                args,
            )
            .await?,
        );
        match reply.first().and_then(text).as_deref() {
            Some("ok") => Ok(ProgressReply {
                cancel_requested: reply.get(1).and_then(int) == Some(1),
            }),
            _ => Err(Error::LeaseLost { id: lease.job_id }),
        }
    }

    async fn finish_many(
        &self,
        endings: Vec<Ending>,
        next: Option<ClaimRequest>,
    ) -> Result<FinishedMany> {
        finish_guarded(self, next.as_ref(), self.finish_now(endings, next.as_ref())).await
    }

    async fn reap(&self, limit: usize) -> Result<Vec<JobId>> {
        let mut reply = array(
            self.run(&self.inner.scripts.expired, &[], vec![limit.to_string()])
                .await?,
        )
        .into_iter();
        let expired: Vec<String> = reply
            .next()
            .map(array)
            .unwrap_or_default()
            .iter()
            .filter_map(text)
            .collect();
        // A cancel's cascade its caller left unfinished goes on here.
        if reply.next().as_ref().and_then(int) == Some(1) {
            self.finish_cascades().await?;
        }
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = expired
            .iter()
            .map(|id| self.inner.keys.job_named(id))
            .collect();
        let mut args = vec![expired.len().to_string()];
        args.extend(expired);
        let reply = self.run(&self.inner.scripts.reap, &keys, args).await?;
        Ok(array(reply)
            .iter()
            .filter_map(|v| text(v)?.parse().ok())
            .collect())
    }

    async fn deregister(&self, worker: &WorkerId) -> Result<()> {
        self.run(
            &self.inner.scripts.deregister,
            &[self.inner.keys.worker(worker.as_str())],
            vec![worker.as_str().to_owned()],
        )
        .await
        .map(drop)
    }

    async fn sweep(&self, limit: usize) -> Result<usize> {
        // Parked webhook deliveries expire with the queue's retention too.
        self.run(
            &self.inner.scripts.delivery,
            &[],
            vec!["prune".into(), self.retention_ms(), limit.to_string()],
        )
        .await?;
        let due: Vec<String> = array(
            self.run(
                &self.inner.scripts.due,
                &[],
                vec![self.retention_ms(), limit.to_string()],
            )
            .await?,
        )
        .iter()
        .filter_map(text)
        .collect();
        if due.is_empty() {
            return Ok(0);
        }
        // The unique key of each (its history index is a key the script must declare);
        // the script checks it is still the record's.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for id in &due {
            pipe.cmd("HGET")
                .arg(self.inner.keys.job_named(id))
                .arg("unique_key");
        }
        let mut conn = self.conn();
        let keys_of: Vec<Value> = pipe.query_async(&mut conn).await.map_err(|e| self.err(e))?;
        let first = self.inner.scripts.sweep.static_keys();
        let mut dynamic = Vec::with_capacity(due.len() * 2);
        let mut args = vec![self.retention_ms(), due.len().to_string()];
        for (id, uk) in due.iter().zip(keys_of) {
            let uk = text(&uk).unwrap_or_default();
            dynamic.push(self.inner.keys.job_named(id));
            let job_index = first + dynamic.len();
            let history_index = if uk.is_empty() {
                0
            } else {
                dynamic.push(self.inner.keys.unique(&uk));
                first + dynamic.len()
            };
            args.extend([
                id.clone(),
                job_index.to_string(),
                uk,
                history_index.to_string(),
            ]);
        }
        let reply = self.run(&self.inner.scripts.sweep, &dynamic, args).await?;
        Ok(int(&reply).unwrap_or(0).max(0) as usize)
    }

    async fn read_schedules(&self, read: &ScheduleRead) -> Result<StoredSchedules> {
        let args = match read {
            ScheduleRead::All => vec!["all".to_owned(), String::new()],
            ScheduleRead::Due { limit } => vec!["due".to_owned(), limit.to_string()],
            ScheduleRead::One(name) => vec!["one".to_owned(), name.clone()],
        };
        let reply = self
            .run(&self.inner.scripts.schedule_read, &[], args)
            .await?;
        let mut parts = array(reply).into_iter();
        let now_ms = parts
            .next()
            .as_ref()
            .and_then(int)
            .unwrap_or_else(|| self.now_ms());
        let next_due_ms = parts.next().as_ref().and_then(text).and_then(|t| {
            // A score comes back as text, possibly in float notation.
            t.parse::<f64>().ok().map(|f| f as Millis)
        });
        let schedules = parts
            .next()
            .map(array)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|pair| {
                let mut pair = array(pair).into_iter();
                Some((text(&pair.next()?)?, text(&pair.next()?)?))
            })
            .collect();
        Ok(StoredSchedules {
            now_ms,
            schedules,
            next_due_ms,
        })
    }

    async fn write_schedule(&self, write: ScheduleWrite) -> Result<ScheduleWritten> {
        // A job past the queue's limits is refused on its own, like an enqueue; the write
        // and the other jobs go on.
        let mut results: Vec<Option<Result<JobId>>> = Vec::with_capacity(write.jobs.len());
        let mut sent = Vec::new();
        for job in write.jobs {
            match self.inner.config.limits.check(&job) {
                Ok(()) => {
                    let id = job.options.job_id.unwrap_or_default();
                    sent.push((results.len(), job, id));
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let first_key = self.inner.scripts.schedule.static_keys();
        let (dynamic, mut job_args) =
            wire::enqueue_args(&self.inner.keys, &self.inner.config, &sent, first_key);
        let mut args = vec![
            write.name,
            write.expected.unwrap_or_default(),
            write.new.as_ref().map(|n| n.0.clone()).unwrap_or_default(),
            write
                .new
                .as_ref()
                .and_then(|n| n.1)
                .map(|t| t.to_string())
                .unwrap_or_default(),
        ];
        args.append(&mut job_args);
        // Not sent again when the reply is lost: the write may have applied, and sent
        // again it would answer `conflict`; the caller reads the schedule again instead.
        let reply = self
            .run(&self.inner.scripts.schedule, &dynamic, args)
            .await?;
        let mut parts = array(reply).into_iter();
        let now = parts
            .next()
            .as_ref()
            .and_then(int)
            .unwrap_or_else(|| self.now_ms());
        match parts.next().as_ref().and_then(text).as_deref() {
            Some("ok") => {}
            Some("full") => {
                return Err(queue_core::backend::too_many(
                    "schedules",
                    queue_core::backend::MAX_SCHEDULES,
                ));
            }
            _ => return Ok(ScheduleWritten::Conflict),
        }
        let answers = parts.next().map(array).unwrap_or_default();
        for ((slot, job, id), answer) in sent.iter().zip(answers) {
            let answer = array(answer);
            let code = answer.first().and_then(text).unwrap_or_default();
            let other = answer.get(1).and_then(text).unwrap_or_default();
            results[*slot] = Some(
                self.enqueue_result(job, *id, now, &code, &other, true)
                    .await
                    .map(|r| r.job_id),
            );
        }
        Ok(ScheduleWritten::Applied(
            results
                .into_iter()
                .map(|r| {
                    r.unwrap_or_else(|| {
                        Err(Error::backend("redis", "no answer for a scheduled job"))
                    })
                })
                .collect(),
        ))
    }

    async fn claim_deliveries(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<queue_core::backend::ClaimedDelivery>> {
        self.claim_outbox(limit, lease).await
    }

    async fn settle_delivery(
        &self,
        id: &str,
        claimed: &str,
        settle: queue_core::backend::Settle,
    ) -> Result<bool> {
        self.settle_outbox(id, claimed, settle).await
    }

    async fn cancellations(&self) -> Result<CancelStream> {
        let messages = self
            .inner
            .subscriptions
            .stream(&self.inner.keys.cancel(), None)
            .await?;
        Ok(Box::pin(messages.filter_map(|m| {
            std::future::ready(m.parse::<JobId>().ok())
        })))
    }
}
