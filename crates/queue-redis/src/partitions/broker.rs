//! `Broker` for a partitioned queue: claims serve the partitions in turn and wait on all
//! of them at once; every call about a lease goes to the partition that granted it.

use std::{collections::HashMap, sync::atomic::Ordering, time::Duration};

use async_trait::async_trait;
use futures_util::future::{join_all, select_all, try_join_all};
use queue_core::backend::{
    Broker, CancelStream, ClaimRequest, ClaimedDelivery, Ending, FinishedMany, HeartbeatReply,
    Lease, LeaseRef, MAX_CLAIM, Millis, ProgressReply, ScheduleRead, ScheduleWrite,
    ScheduleWritten, Settle, StoredSchedules, WorkerBeat, partition_of, routing_key,
};
use queue_core::{Error, JobId, Result, WorkerId};

use super::PartitionedBackend;
use crate::RedisBackend;
use queue_core::backend::{Handoff, detached};

/// A claim answered: which partitions gave it jobs, asked for how many, in order. The same
/// request sent again asks exactly those (each answers what it took: a replay), so it
/// takes nothing more; a partition that took nothing takes as new, as on one partition.
pub(super) struct Round {
    worker: WorkerId,
    id: queue_core::backend::ClaimId,
    gave: Vec<(usize, usize)>,
}

/// Claims remembered for replays (a worker re-sends only its latest).
const ROUNDS_KEPT: usize = 256;

/// What this process's claims took from one partition: the finish of attempts claims the
/// next jobs from the partition most of them came from (one call, as on one partition),
/// so a worker's jobs come from one partition at a time, while that partition is not ahead
/// of the others that may have work by more than [`SLACK`] jobs; else the next claim
/// serves the partitions in turn. So no partition waits behind another for long, and
/// most claims ride on a finish.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Served {
    taken: u64,
    /// Its last claim took fewer jobs than it asked for: until then it is not counted as
    /// having work (after it, it is again: new work there is found within [`DRY_FOR`]).
    dry_until: Option<tokio::time::Instant>,
}

/// How many more jobs one partition may have given this process than another with work.
const SLACK: u64 = 2000;

/// The most partition claims a trace keeps between two reads.
const TRACE_KEPT: usize = 4096;

/// How long a partition whose claim came back short is taken to have no work.
const DRY_FOR: Duration = Duration::from_millis(50);

impl PartitionedBackend {
    /// One claim of up to `req.max` jobs: each partition in turn (the first one moves on by
    /// one every round, so no partition waits behind the others), until the request is
    /// filled; a request sent again asks the partitions that answered it (see [`Round`]).
    /// Answers the leases and the earliest due time of a delayed job seen. `skip` leaves
    /// out a partition a finish's claim rode on already, under the same request id.
    async fn claim_round(
        &self,
        req: &ClaimRequest,
        skip: Option<usize>,
    ) -> Result<(Handoff<PartitionedBackend>, Option<Millis>, Millis)> {
        let backends = self.all().await?;
        let n = backends.len();
        let replay = self
            .rounds()
            .iter()
            .find(|r| r.id == req.id && r.worker == req.worker)
            .map(|r| r.gave.clone())
            .filter(|gave| !gave.is_empty());
        let first = self.inner.claim_turn.fetch_add(1, Ordering::Relaxed) as usize % n;
        let plan: Vec<(usize, Option<usize>)> = match &replay {
            Some(gave) => gave.iter().map(|(at, max)| (*at, Some(*max))).collect(),
            None => (0..n).map(|step| ((first + step) % n, None)).collect(),
        };
        // What the partitions asked first gave travels in a handoff: the round dropped half
        // way hands it back; a later partition's error keeps it leased (below).
        let mut leases = Handoff::new(self.clone(), Vec::new());
        let mut next_due: Option<Millis> = None;
        let mut now = 0;
        let mut gave = Vec::new();
        // One claim takes at most MAX_CLAIM jobs in all, however many partitions give.
        let want = req.max.min(MAX_CLAIM);
        for (at, max) in plan {
            if leases.len() >= want || at >= n {
                break;
            }
            if skip == Some(at) {
                continue;
            }
            let mut part = req.clone();
            part.max = max.unwrap_or(want - leases.len());
            let (got, due, at_now) = match backends[at].claim_detached(&part).await {
                Ok(answer) => answer,
                Err(e) => {
                    // The caller sends the request again (a worker does, on an error that
                    // may pass): what the partitions asked first gave stays leased for
                    // that replay to answer; handed back now, it could be taken from
                    // under the replay's caller. Else it expires.
                    if replay.is_none() {
                        self.note_round(req, gave);
                    }
                    leases.take();
                    return Err(e);
                }
            };
            let got = got.take();
            now = at_now;
            next_due = match (next_due, due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if !got.is_empty() {
                gave.push((at, part.max));
            }
            self.note_claim(at, part.max, got.len());
            self.remember(at as u32, &got);
            leases.extend(got);
        }
        if replay.is_none() {
            self.note_round(req, gave);
        }
        Ok((leases, next_due, now))
    }

    /// Remembers which partitions gave claim `req` jobs, for a replay (see [`Round`]).
    fn note_round(&self, req: &ClaimRequest, gave: Vec<(usize, usize)>) {
        let mut rounds = self.rounds();
        rounds.retain(|r| !(r.id == req.id && r.worker == req.worker));
        rounds.push_front(Round {
            worker: req.worker.clone(),
            id: req.id,
            gave,
        });
        rounds.truncate(ROUNDS_KEPT);
    }

    fn note_claim(&self, at: usize, asked: usize, got: usize) {
        let mut served = self.inner.served.lock().unwrap_or_else(|p| p.into_inner());
        if served.len() <= at {
            served.resize(at + 1, Served::default());
        }
        served[at].taken += got as u64;
        served[at].dry_until = (got < asked).then(|| tokio::time::Instant::now() + DRY_FOR);
        drop(served);
        let mut trace = self.inner.claims.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(trace) = trace.as_mut().filter(|t| t.len() < TRACE_KEPT) {
            trace.push(super::ClaimStep {
                partition: at as u32,
                asked: asked.min(MAX_CLAIM),
                gave: got,
            });
        }
    }

    /// Of `candidates` (partitions with the number of attempts ending there), the one the
    /// next claim may ride on: the one most of them came from, unless it is more than
    /// [`SLACK`] ahead of a partition that may have work.
    fn ride_on(&self, candidates: &[(usize, usize)], span: usize) -> Option<usize> {
        let served = self.inner.served.lock().unwrap_or_else(|p| p.into_inner());
        let taken = |at: usize| served.get(at).map_or(0, |s| s.taken);
        let now = tokio::time::Instant::now();
        let best = candidates.iter().max_by_key(|(_, n)| *n)?.0;
        let floor = (0..span)
            .filter(|j| *j != best)
            .filter(|j| {
                served
                    .get(*j)
                    .and_then(|s| s.dry_until)
                    .is_none_or(|t| t <= now)
            })
            .map(taken)
            .min();
        floor
            .is_none_or(|floor| taken(best) <= floor + SLACK)
            .then_some(best)
    }

    /// A claim round on its own task, so a caller that goes away (a dropped `fetch`)
    /// cannot strand what the round took from the partitions it asked first: the leases
    /// come in a [`Handoff`], handed back (no attempt used) unless taken.
    async fn claim_round_detached(
        &self,
        req: &ClaimRequest,
        skip: Option<usize>,
    ) -> Result<(Handoff<PartitionedBackend>, Option<Millis>, Millis)> {
        let (this, req) = (self.clone(), req.clone());
        detached("redis", async move { this.claim_round(&req, skip).await }).await
    }

    fn rounds(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Round>> {
        self.inner.rounds.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, partition: u32, leases: &[Lease]) {
        if leases.is_empty() {
            return;
        }
        let mut map = self.inner.leases.lock().unwrap_or_else(|p| p.into_inner());
        for lease in leases {
            map.hold(lease, partition);
        }
    }

    /// A handler's hold of a job without a group holds the whole queue: its own partition
    /// set it with the ending; the others get the same until (bounded the same way).
    async fn hold_others(&self, backends: &[RedisBackend], from: usize, retry_after: Duration) {
        let base = &backends[from];
        let hold = retry_after.min(base.inner.config.limits.hold);
        let until = base.now_ms() + queue_core::backend::duration_ms(hold);
        for (i, backend) in backends.iter().enumerate() {
            if i != from
                && let Err(e) = backend.hold_until(until).await
            {
                tracing::warn!(partition = i, error = %e.chain(), "could not hold a partition");
            }
        }
    }

    /// The attempts of `leases` ended (a lease of the same job claimed since stays held).
    fn forget(&self, leases: impl IntoIterator<Item = LeaseRef>) {
        let mut map = self.inner.leases.lock().unwrap_or_else(|p| p.into_inner());
        for lease in leases {
            map.end(lease.job_id, &lease.token);
        }
    }

    /// Blocks until any partition's wake-up marker is set, or `timeout`.
    async fn wait_any(&self, backends: &[RedisBackend], timeout: Duration) -> Result<()> {
        let waits = backends.iter().map(|b| Box::pin(b.wait_for_work(timeout)));
        select_all(waits).await.0
    }
}

#[async_trait]
impl Broker for PartitionedBackend {
    async fn fetch(&self, req: &ClaimRequest, wait: Duration) -> Result<Vec<Lease>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (leases, next_due, now) = self.claim_round_detached(req, None).await?;
            let leases = leases.take();
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !leases.is_empty() || remaining.is_zero() {
                return Ok(leases);
            }
            let block = crate::broker::block_for(remaining, next_due, now);
            let backends = self.all().await?;
            let blocked = self.inner.blocked.enter();
            self.wait_any(&backends, block).await?;
            drop(blocked);
        }
    }

    async fn heartbeat(&self, beat: &WorkerBeat, leases: &[LeaseRef]) -> Result<HeartbeatReply> {
        let backends = self.all().await?;
        let mut parts: Vec<Vec<LeaseRef>> = vec![Vec::new(); backends.len()];
        for lease in leases {
            parts[self.lease_partition(lease.job_id, backends.len())].push(lease.clone());
        }
        let replies = try_join_all(
            backends
                .iter()
                .zip(&parts)
                .map(|(b, mine)| b.heartbeat(beat, mine)),
        )
        .await?;
        let mut out = HeartbeatReply::default();
        for reply in replies {
            out.lost.extend(reply.lost);
            out.cancel.extend(reply.cancel);
        }
        self.forget(out.lost.iter().cloned());
        Ok(out)
    }

    async fn progress(
        &self,
        lease: &LeaseRef,
        progress: u8,
        step: Option<String>,
    ) -> Result<ProgressReply> {
        let backends = self.all().await?;
        let at = self.lease_partition(lease.job_id, backends.len());
        backends[at].progress(lease, progress, step).await
    }

    async fn finish_many(
        &self,
        endings: Vec<Ending>,
        next: Option<ClaimRequest>,
    ) -> Result<FinishedMany> {
        let backends = self.all().await?;
        let count = endings.len();
        let mut parts: Vec<(Vec<usize>, Vec<Ending>)> =
            (0..backends.len()).map(|_| Default::default()).collect();
        let mut holds = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, ending) in endings.into_iter().enumerate() {
            let at = self.lease_partition(ending.lease.job_id, backends.len());
            let first = seen.insert(ending.lease.token.clone());
            if let queue_core::backend::Outcome::RateLimited { retry_after } = &ending.outcome
                && first
                && self
                    .held(ending.lease.job_id)
                    .is_some_and(|h| !h.grouped && !h.ended && h.token == ending.lease.token)
            {
                // (An ending sent again, in this batch or after it, holds nothing more: the
                // attempt ended with the first.)
                holds.push((i, at, *retry_after));
            }
            parts[at].0.push(i);
            parts[at].1.push(ending);
        }
        let ending: Vec<(usize, usize)> = (0..parts.len())
            .map(|at| (at, parts[at].0.len()))
            .filter(|(_, n)| *n > 0)
            .collect();
        // An ending that holds the whole queue stops the claim from riding on a partition
        // (it would start jobs before the hold reaches it): the claim comes after the hold.
        let ride = next
            .as_ref()
            .filter(|_| holds.is_empty())
            .and_then(|_| self.ride_on(&ending, backends.len()));
        let calls = parts
            .into_iter()
            .zip(&backends)
            .enumerate()
            .filter(|(_, ((at, _), _))| !at.is_empty())
            .map(|(p, ((at, endings), backend))| {
                let next = next.clone().filter(|_| ride == Some(p));
                async move {
                    let ids: Vec<LeaseRef> = endings.iter().map(|e| e.lease.clone()).collect();
                    let asked = next.as_ref().map(|n| n.max);
                    let done = backend.finish_many(endings, next).await?;
                    // Known to come from `p` at once (a later hand-back or replay goes
                    // there, not where the id points).
                    self.remember(p as u32, &done.next);
                    let next = Handoff::new(self.clone(), done.next);
                    Ok::<_, Error>((p, at, ids, done.statuses, next, asked))
                }
            });
        let mut statuses: Vec<Option<Result<queue_core::JobStatus>>> =
            (0..count).map(|_| None).collect();
        let mut rode: Option<(usize, Handoff<PartitionedBackend>)> = None;
        // Every partition's call runs to its end (none is dropped half-way when another
        // fails). If one failed, the caller sends the whole request again: what the others
        // claimed stays leased for that replay to answer (handed back now, it could be
        // taken from under the replay's caller), else it expires.
        let mut answers = Vec::new();
        let mut failed = None;
        for answer in join_all(calls).await {
            match answer {
                Ok(answer) => answers.push(answer),
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            for (_, _, _, _, next, _) in answers {
                next.take();
            }
            return Err(e);
        }
        for (p, at, ids, done, next, asked) in answers {
            self.forget(ids);
            for (i, status) in at.into_iter().zip(done) {
                statuses[i] = Some(status);
            }
            if let Some(asked) = asked {
                self.note_claim(p, asked, next.len());
                rode = Some((p, next));
            }
        }
        let statuses: Vec<Result<queue_core::JobStatus>> = statuses
            .into_iter()
            .map(|s| s.unwrap_or_else(|| Err(Error::backend("redis", "no answer"))))
            .collect();
        // Only an ending its partition applied as a hold (not one of an attempt already
        // ended) holds the others.
        for (i, at, retry_after) in holds {
            if matches!(statuses[i], Ok(queue_core::JobStatus::Queued)) {
                self.hold_others(&backends, at, retry_after).await;
            }
        }
        let accepted = statuses.iter().any(Result::is_ok);
        let next = match (rode, next) {
            // The partition it rode on had fewer: the others in turn for the rest, as one
            // claim of the whole queue would.
            (Some((at, mut leases)), Some(mut req))
                if accepted && leases.len() < req.max.min(MAX_CLAIM) =>
            {
                req.max = req.max.min(MAX_CLAIM) - leases.len();
                let more = self.claim_round_detached(&req, Some(at)).await?.0;
                leases.extend(more.take());
                leases.take()
            }
            // The partition it rode on filled it: sent again, it asks that one only (which
            // answers what it took), and the others nothing.
            (Some((at, leases)), Some(req)) => {
                self.note_round(&req, vec![(at, req.max)]);
                leases.take()
            }
            (Some((_, leases)), None) => leases.take(),
            (None, Some(req)) if accepted => self.claim_round_detached(&req, None).await?.0.take(),
            _ => Vec::new(),
        };
        Ok(FinishedMany { statuses, next })
    }

    async fn reap(&self, limit: usize) -> Result<Vec<JobId>> {
        // At most `limit` in all: the partitions in turn, each with what is left.
        let backends = self.all().await?;
        let first = self.next_turn() as usize;
        let mut out = Vec::new();
        for step in 0..backends.len() {
            if out.len() >= limit {
                break;
            }
            let at = (first + step) % backends.len();
            out.extend(backends[at].reap(limit - out.len()).await?);
        }
        Ok(out)
    }

    async fn deregister(&self, worker: &WorkerId) -> Result<()> {
        // Its request history goes, here as in every partition.
        self.rounds().retain(|r| r.worker != *worker);
        let backends = self.all().await?;
        try_join_all(backends.iter().map(|b| b.deregister(worker))).await?;
        Ok(())
    }

    async fn sweep(&self, limit: usize) -> Result<usize> {
        // At most `limit` in all: the partitions in turn, each with what is left.
        let backends = self.all().await?;
        let first = self.next_turn() as usize;
        let mut swept = 0;
        for step in 0..backends.len() {
            if swept >= limit {
                break;
            }
            let at = (first + step) % backends.len();
            swept += backends[at].sweep(limit - swept).await?;
        }
        Ok(swept)
    }

    async fn cancellations(&self) -> Result<CancelStream> {
        let backends = self.all().await?;
        let streams = try_join_all(backends.iter().map(|b| b.cancellations())).await?;
        Ok(Box::pin(futures_util::stream::select_all(streams)))
    }

    async fn read_schedules(&self, read: &ScheduleRead) -> Result<StoredSchedules> {
        self.all().await?[0].read_schedules(read).await
    }

    async fn write_schedule(&self, write: ScheduleWrite) -> Result<ScheduleWritten> {
        // Schedules and their ticks live in partition 0: a tick whose group, sequence or
        // key routes elsewhere would break that key's guarantees there.
        let (partitions, backends) = self.current().await?;
        for job in &write.jobs {
            if let Some(key) = routing_key(job) {
                let at = partition_of(&key, partitions);
                if at != 0 {
                    return Err(Error::invalid(format!(
                        "schedule `{}`: its job's group, sequence or key routes to partition \
                         {at}, and a schedule's ticks are created in partition 0 of a \
                         partitioned queue: give its jobs none, or one that routes to 0",
                        write.name
                    )));
                }
            }
        }
        backends[0].write_schedule(write).await
    }

    async fn claim_deliveries(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedDelivery>> {
        let backends = self.all().await?;
        let mut out = Vec::new();
        let mut claimed: HashMap<String, u32> = HashMap::new();
        for (i, backend) in backends.iter().enumerate() {
            if out.len() >= limit {
                break;
            }
            let got = backend.claim_deliveries(limit - out.len(), lease).await?;
            for d in &got {
                claimed.insert(d.delivery.id.clone(), i as u32);
            }
            out.extend(got);
        }
        self.inner
            .deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(claimed);
        Ok(out)
    }

    async fn settle_delivery(&self, id: &str, claimed: &str, settle: Settle) -> Result<bool> {
        let backends = self.all().await?;
        let known = self
            .inner
            .deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        match known {
            Some(at) => {
                backends[at as usize]
                    .settle_delivery(id, claimed, settle)
                    .await
            }
            None => {
                for backend in &backends {
                    if backend.settle_delivery(id, claimed, settle.clone()).await? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    }
}

/// Raises a partition's queue-wide hold to `until` (never lowers it).
const HOLD: &str = r"
local held = tonumber(redis.call('HGET', KEYS[1], 'held_until') or '0') or 0
if tonumber(ARGV[1]) > held then redis.call('HSET', KEYS[1], 'held_until', ARGV[1]) end
return 1
";

impl RedisBackend {
    async fn hold_until(&self, until: Millis) -> Result<()> {
        let script = redis::Script::new(HOLD);
        let mut conn = self.conn();
        script
            .key(self.inner.keys.of(crate::keys::Static::Meta))
            .arg(until)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| self.err(e))
    }
}
