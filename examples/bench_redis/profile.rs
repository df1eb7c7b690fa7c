//! The low-concurrency profile: where a job's time goes at concurrency 1, 3 and 10
//! (`--profile 1,3,10`, the default; `--profile 0` skips it; `--profile-n` jobs each,
//! default 3,000). The worker runs on a broker that notes when each call to Redis was sent
//! and answered, and the handler notes when it started and ended, all on one clock:
//!
//! - claim -> start: the reply that leased a job (a fetch, or the finish that claimed it
//!   next) to its handler's start;
//! - end -> stored: the handler's end to the reply of the finish that stored its outcome;
//! - Redis share: the part of the run with at least one call to Redis in flight;
//! - cycle: what one slot spends per job (concurrency / rate), against the three above;
//! - call: how long a call to Redis took (sent to answered), and calls per job.
//!
//! `--claim-ahead-us` sets the worker's budget for jobs claimed ahead (default 1000, the
//! worker's default; 0 turns it off, so both can be compared in one run).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use queue_core::backend::{
    Broker, CancelStream, ClaimRequest, ClaimedDelivery, Ending, FinishedMany, HeartbeatReply,
    Lease, LeaseRef, ProgressReply, ScheduleRead, ScheduleWrite, ScheduleWritten, Settle,
    StoredSchedules, WorkerBeat,
};
use queue_core::{JobId, JobStore, WorkerId};

use super::*;

/// What the timed broker and the handler noted.
#[derive(Default)]
struct Notes {
    leased: HashMap<JobId, Instant>,
    stored: HashMap<JobId, Instant>,
    started: HashMap<JobId, Instant>,
    ended: HashMap<JobId, Instant>,
    /// Every call to Redis: (sent, answered).
    calls: Vec<(Instant, Instant)>,
}

/// A broker that notes the time of every call and of every lease it hands out.
struct Timed {
    inner: RedisBackend,
    notes: Arc<Mutex<Notes>>,
}

impl std::fmt::Debug for Timed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timed").finish_non_exhaustive()
    }
}

impl Timed {
    fn call(&self, sent: Instant) -> Instant {
        let answered = Instant::now();
        self.notes.lock().unwrap().calls.push((sent, answered));
        answered
    }
}

#[async_trait]
impl Broker for Timed {
    async fn fetch(&self, req: &ClaimRequest, wait: Duration) -> queue_core::Result<Vec<Lease>> {
        let sent = Instant::now();
        let leases = self.inner.fetch(req, wait).await?;
        let at = self.call(sent);
        let mut notes = self.notes.lock().unwrap();
        for lease in &leases {
            notes.leased.insert(lease.job.job_id, at);
        }
        Ok(leases)
    }

    async fn heartbeat(
        &self,
        beat: &WorkerBeat,
        leases: &[LeaseRef],
    ) -> queue_core::Result<HeartbeatReply> {
        let sent = Instant::now();
        let reply = self.inner.heartbeat(beat, leases).await;
        self.call(sent);
        reply
    }

    async fn progress(
        &self,
        lease: &LeaseRef,
        progress: u8,
        step: Option<String>,
    ) -> queue_core::Result<ProgressReply> {
        let sent = Instant::now();
        let reply = self.inner.progress(lease, progress, step).await;
        self.call(sent);
        reply
    }

    async fn finish_many(
        &self,
        endings: Vec<Ending>,
        next: Option<ClaimRequest>,
    ) -> queue_core::Result<FinishedMany> {
        let ids: Vec<JobId> = endings.iter().map(|e| e.lease.job_id).collect();
        let sent = Instant::now();
        let done = self.inner.finish_many(endings, next).await?;
        let at = self.call(sent);
        let mut notes = self.notes.lock().unwrap();
        for id in ids {
            notes.stored.insert(id, at);
        }
        for lease in &done.next {
            notes.leased.insert(lease.job.job_id, at);
        }
        Ok(done)
    }

    async fn reap(&self, limit: usize) -> queue_core::Result<Vec<JobId>> {
        self.inner.reap(limit).await
    }

    async fn deregister(&self, worker: &WorkerId) -> queue_core::Result<()> {
        self.inner.deregister(worker).await
    }

    async fn sweep(&self, limit: usize) -> queue_core::Result<usize> {
        self.inner.sweep(limit).await
    }

    async fn cancellations(&self) -> queue_core::Result<CancelStream> {
        self.inner.cancellations().await
    }

    async fn read_schedules(&self, read: &ScheduleRead) -> queue_core::Result<StoredSchedules> {
        self.inner.read_schedules(read).await
    }

    async fn write_schedule(&self, write: ScheduleWrite) -> queue_core::Result<ScheduleWritten> {
        self.inner.write_schedule(write).await
    }

    async fn claim_deliveries(
        &self,
        limit: usize,
        lease: Duration,
    ) -> queue_core::Result<Vec<ClaimedDelivery>> {
        self.inner.claim_deliveries(limit, lease).await
    }

    async fn settle_delivery(
        &self,
        id: &str,
        claimed: &str,
        settle: Settle,
    ) -> queue_core::Result<bool> {
        self.inner.settle_delivery(id, claimed, settle).await
    }
}

/// The median and p99 of `values` (µs).
fn spread(mut values: Vec<f64>) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    values.sort_by(f64::total_cmp);
    let at =
        |p: f64| values[((p * (values.len() as f64 - 1.0)).round() as usize).min(values.len() - 1)];
    (at(0.5), at(0.99))
}

/// The part of `[from, to]` covered by at least one of `calls`.
fn covered(mut calls: Vec<(Instant, Instant)>, from: Instant, to: Instant) -> f64 {
    calls.sort_by_key(|c| c.0);
    let mut busy = Duration::ZERO;
    let mut reach = from;
    for (sent, answered) in calls {
        let (sent, answered) = (sent.max(reach), answered.min(to));
        if answered > sent {
            busy += answered - sent;
            reach = answered;
        }
    }
    busy.as_secs_f64() / (to - from).as_secs_f64()
}

/// Runs the profile at each concurrency of `--profile`, printing a line each and adding
/// `p{c}_*` figures to `out`.
pub(super) async fn low_concurrency(
    url: &str,
    out: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    let list = arg("--profile", "1,3,10");
    let count: usize = arg("--profile-n", "3000").parse()?;
    // The worker's budget for jobs claimed ahead (`--claim-ahead-us`, default the worker's
    // 1 ms; 0 claims none ahead, one job per slot per call as before).
    let ahead = Duration::from_micros(arg("--claim-ahead-us", "1000").parse()?);
    for c in list.split(',') {
        let concurrency: usize = c.trim().parse().context("--profile: a list of numbers")?;
        if concurrency == 0 {
            continue;
        }
        let queue = format!("bench-profile-{concurrency}-{}", std::process::id());
        let b = backend(url, &queue).await?;
        prefill(&b, count).await?;
        let notes: Arc<Mutex<Notes>> = Arc::default();
        let timed = Arc::new(Timed {
            inner: b.clone(),
            notes: Arc::clone(&notes),
        });
        let seen = Arc::new(AtomicUsize::new(0));
        let all_done = Arc::new(Notify::new());
        let (n2, s2, d2) = (Arc::clone(&notes), Arc::clone(&seen), Arc::clone(&all_done));
        let stop = CancellationToken::new();
        let worker = Worker::with_parts(timed, Arc::new(b.clone()) as Arc<dyn JobStore>)
            .concurrency(concurrency)
            .claim_ahead(ahead)
            .register("noop", move |_: serde_json::Value, ctx: JobContext| {
                let started = Instant::now();
                let id = ctx.job_id();
                let notes = Arc::clone(&n2);
                let (seen, done) = (Arc::clone(&s2), Arc::clone(&d2));
                async move {
                    let mut n = notes.lock().unwrap();
                    n.started.insert(id, started);
                    n.ended.insert(id, Instant::now());
                    drop(n);
                    if seen.fetch_add(1, Ordering::Relaxed) + 1 == count {
                        done.notify_one();
                    }
                    Ok(())
                }
            })
            .build()?;
        let run = tokio::spawn(worker.run(stop.clone()));
        tokio::time::timeout(Duration::from_secs(600), all_done.notified())
            .await
            .context("the profile's jobs did not all run")?;
        // The last outcomes are stored once the worker stops (it drains its reports).
        stop.cancel();
        run.await??;
        b.destroy().await?;
        let notes = std::mem::take(&mut *notes.lock().unwrap());
        let first = notes
            .started
            .values()
            .min()
            .copied()
            .context("no job ran")?;
        let last = notes
            .stored
            .values()
            .max()
            .copied()
            .context("nothing stored")?;
        let wall = (last - first).as_secs_f64();
        let rate = count as f64 / wall;
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let gaps = |from: &HashMap<JobId, Instant>, to: &HashMap<JobId, Instant>| {
            from.iter()
                .filter_map(|(id, a)| to.get(id).map(|b| us(b.saturating_duration_since(*a))))
                .collect::<Vec<f64>>()
        };
        let (to_start, to_start_99) = spread(gaps(&notes.leased, &notes.started));
        let (handler, _) = spread(gaps(&notes.started, &notes.ended));
        let (to_stored, to_stored_99) = spread(gaps(&notes.ended, &notes.stored));
        let calls = notes.calls.len() as f64 / count as f64;
        let (call, call_99) = spread(notes.calls.iter().map(|(s, a)| us(*a - *s)).collect());
        let share = covered(notes.calls, first, last);
        let cycle = concurrency as f64 / rate * 1e6;
        println!(
            "profile c{concurrency:<3} (ahead {ahead:?}): {rate:>7.0} jobs/s  cycle/slot {cycle:>6.0} µs  \
             claim->start p50 {to_start:.0} p99 {to_start_99:.0} µs  handler {handler:.0} µs  \
             end->stored p50 {to_stored:.0} p99 {to_stored_99:.0} µs  \
             call p50 {call:.0} p99 {call_99:.0} µs  \
             Redis in flight {:.0}% of the run  calls/job {calls:.2}",
            share * 100.0
        );
        let p = format!("p{concurrency}_");
        for (k, v) in [
            ("process_jobs_s", rate),
            ("cycle_us", cycle),
            ("claim_to_start_us_p50", to_start),
            ("claim_to_start_us_p99", to_start_99),
            ("end_to_stored_us_p50", to_stored),
            ("end_to_stored_us_p99", to_stored_99),
            ("redis_in_flight_share", share),
            ("calls_per_job", calls),
            ("call_us_p50", call),
            ("call_us_p99", call_99),
        ] {
            out.insert(
                format!("{p}{k}"),
                serde_json::json!((v * 100.0).round() / 100.0),
            );
        }
    }
    Ok(())
}
