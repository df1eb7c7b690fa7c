//! A queue of P partitions ([`PartitionedBackend`]): P ordinary queues under one name,
//! each with its own hash tag (so on Redis Cluster each in its own slot, spread over the
//! masters), routed by the rules of `queue_core::backend::route` and shown to operators
//! as one queue. Partition 0 is the queue itself: a queue of one partition is an ordinary
//! queue, and growing one keeps its jobs where they are.
//!
//! The layout (`layout` hash of partition 0: `partitions`, `span`, `salt:<i>`) is the one
//! shared truth: `partitions` is where new jobs go, `span` every partition that may still
//! hold a job (the most there ever were), so claims, listings and counts cover `span`
//! and a resize loses nothing: new jobs follow the new layout, old partitions drain.

mod broker;
mod layout;
mod merge;
mod store;

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use queue_core::backend::{Blocked, check_partitions};
use queue_core::{Error, JobId, QueueStats, Result};

pub use layout::Layout;

use crate::RedisBackend;

/// What a [`RedisBackend`] is to a partitioned queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Role {
    /// Its queue has one partition: it is the whole queue.
    Whole = 0,
    /// Its queue has more (a stored layout): opened plainly, it would see and feed
    /// partition 0 only, so it refuses to enqueue and to claim, naming the fix.
    Stray = 1,
    /// One partition of a [`PartitionedBackend`], which routes to it.
    Partition = 2,
}

impl RedisBackend {
    /// Reads the layout when connecting: a backend built plainly on a partitioned queue
    /// is a [`Role::Stray`].
    pub(crate) async fn note_layout(&self) -> Result<()> {
        if layout::read(self).await?.span > 1 {
            self.set_role(Role::Stray);
        }
        Ok(())
    }

    /// Whether the role was checked longer than [`LAYOUT_REFRESH`] ago (then it counts as
    /// checked now).
    fn role_stale(&self) -> bool {
        let mut read = self
            .inner
            .role_read
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let stale = read.elapsed() >= LAYOUT_REFRESH;
        if stale {
            *read = tokio::time::Instant::now();
        }
        stale
    }

    fn set_role(&self, role: Role) {
        self.inner.role.store(role as u8, Ordering::Relaxed);
    }

    /// Refuses a producer's or a worker's call on a [`Role::Stray`] backend. One that is
    /// the whole queue reads the layout again every [`LAYOUT_REFRESH`]: a queue given
    /// partitions after it connected makes it a stray then (serving partition 0 only, it
    /// would leave the other partitions' jobs unclaimed).
    pub(crate) async fn check_whole(&self) -> Result<()> {
        if self.inner.role.load(Ordering::Relaxed) == Role::Whole as u8 && self.role_stale() {
            // Unreadable now (the call itself will say why): read again next time.
            if let Ok(layout) = layout::read(self).await
                && layout.span > 1
            {
                self.set_role(Role::Stray);
            }
        }
        if self.inner.role.load(Ordering::Relaxed) == Role::Stray as u8 {
            return Err(Error::config(format!(
                "queue {} has partitions: open it with RedisBackendBuilder::open (or \
                 RedisBackend::partitioned), not as one partition",
                self.inner.config.queue_name
            )));
        }
        Ok(())
    }
}

/// How often a process reads the layout again (a resize reaches every process within it).
pub const LAYOUT_REFRESH: Duration = Duration::from_secs(1);

/// One queue over P partitions (see the module docs and README "Partitions"). Clones
/// share connections.
#[derive(Clone)]
pub struct PartitionedBackend {
    inner: Arc<Shared>,
}

struct Shared {
    /// Partition 0: owns the connections the others share.
    base: RedisBackend,
    root: String,
    parts: RwLock<Parts>,
    /// The next partition a job without a routing key goes to.
    turn: AtomicU32,
    /// The partition a claim tries first.
    claim_turn: AtomicU32,
    /// Where the leases this process holds, or held lately, live (a job with a chosen id
    /// may live elsewhere than its id names).
    leases: Mutex<Leases>,
    /// The last claims answered, so a claim sent again asks the same partitions.
    rounds: Mutex<std::collections::VecDeque<broker::Round>>,
    /// Per partition, what this process's claims took from it (see `broker::Served`).
    served: Mutex<Vec<broker::Served>>,
    /// Where the deliveries this process claimed live.
    deliveries: Mutex<HashMap<String, u32>>,
    blocked: Blocked,
    /// The partition claims made since the trace was last read, when traced.
    claims: Mutex<Option<Vec<ClaimStep>>>,
}

/// One partition's part of a claim: which partition was asked, for how many jobs, and how
/// many it gave (see [`PartitionedBackend::claim_trace`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClaimStep {
    /// The partition asked.
    pub partition: u32,
    /// How many jobs it was asked for.
    pub asked: usize,
    /// How many it gave.
    pub gave: usize,
}

/// A lease this process holds: where, and whether its job has a group (a handler's hold
/// of a job without one holds the whole queue).
#[derive(Clone, Debug)]
struct Held {
    partition: u32,
    grouped: bool,
    /// The lease's token: only its own ending ends it.
    token: queue_core::LeaseToken,
    /// Its attempt ended (kept a while, so an ending sent again finds its partition).
    ended: bool,
}

/// The leases this process holds, and the latest [`ENDED_KEPT`] that ended.
#[derive(Default)]
struct Leases {
    held: HashMap<JobId, Held>,
    ended: std::collections::VecDeque<JobId>,
}

/// How many ended leases a process keeps the partition of: an ending sent again after a
/// lost reply (the worker's reporter resends within seconds) goes where the first one went,
/// also for a job that lives elsewhere than its id names.
const ENDED_KEPT: usize = 4096;

impl Leases {
    fn hold(&mut self, lease: &queue_core::backend::Lease, partition: u32) {
        self.held.insert(
            lease.job.job_id,
            Held {
                partition,
                grouped: lease.job.group.is_some(),
                token: lease.token.clone(),
                ended: false,
            },
        );
    }

    /// The attempt of `token` on job `id` ended (a later lease of the job stays held).
    fn end(&mut self, id: JobId, token: &queue_core::LeaseToken) {
        let Some(h) = self
            .held
            .get_mut(&id)
            .filter(|h| !h.ended && h.token == *token)
        else {
            return;
        };
        h.ended = true;
        self.ended.push_back(id);
        while self.ended.len() > ENDED_KEPT {
            let old = self.ended.pop_front().expect("longer than kept");
            if self.held.get(&old).is_some_and(|h| h.ended) {
                self.held.remove(&old);
            }
        }
    }
}

struct Parts {
    layout: Layout,
    backends: Vec<RedisBackend>,
    read_at: tokio::time::Instant,
}

impl crate::RedisBackendBuilder {
    /// Connects to the queue as it is laid out, and follows it: a [`PartitionedBackend`]
    /// of the stored layout, or of one created now with [`RedisConfig::partitions`]
    /// (`DCS_REDIS_PARTITIONS`, default one partition: today's queue). A later resize,
    /// from one partition too, reaches it within [`LAYOUT_REFRESH`]. What operators and
    /// workers use (a plain backend serves partition 0 only: on a queue with partitions
    /// it refuses to enqueue and to claim).
    ///
    /// [`RedisConfig::partitions`]: crate::RedisConfig::partitions
    pub async fn open(self) -> Result<queue_core::SharedBackend> {
        let asked = self.partitions_asked();
        let plain = self.build().await?;
        Ok(Arc::new(plain.partitioned(asked).await?))
    }
}

impl RedisBackend {
    /// This queue as a queue of `partitions` partitions (created with that many when it
    /// has no layout yet; an existing layout is kept: change it with
    /// [`PartitionedBackend::resize`]).
    pub async fn partitioned(self, partitions: u32) -> Result<PartitionedBackend> {
        check_partitions(partitions)?;
        self.set_role(Role::Partition);
        let root = self.root_prefix();
        let layout = layout::create(&self, partitions).await?;
        let backends = layout::backends(&self, &root, &layout, &[])?;
        // Processes start their turns at different partitions.
        let start = u32::from(JobId::new().as_uuid().as_bytes()[15]);
        Ok(PartitionedBackend {
            inner: Arc::new(Shared {
                base: self,
                root,
                parts: RwLock::new(Parts {
                    layout,
                    backends,
                    read_at: tokio::time::Instant::now(),
                }),
                turn: AtomicU32::new(start),
                claim_turn: AtomicU32::new(start),
                leases: Mutex::default(),
                rounds: Mutex::default(),
                served: Mutex::default(),
                deliveries: Mutex::default(),
                blocked: Blocked::default(),
                claims: Mutex::default(),
            }),
        })
    }
}

impl PartitionedBackend {
    /// The layout as this process last read it.
    pub fn layout(&self) -> Layout {
        self.parts().layout.clone()
    }

    /// Where new jobs go from now on: `partitions` partitions (1 to
    /// [`queue_core::backend::MAX_PARTITIONS`]). Nothing moves: jobs stay in the partition
    /// they were enqueued to and are claimed, listed and counted there until they are
    /// gone (the layout's `span` keeps every partition there ever was). Every process
    /// follows within [`LAYOUT_REFRESH`]. Partitions new to the span get the queue's
    /// settings before any job can go there: its webhooks, its pause, and the rate limit,
    /// split again over every partition (a limit below one start per partition refuses the
    /// resize).
    pub async fn resize(&self, partitions: u32) -> Result<Layout> {
        use queue_core::{Control, JobStore};
        check_partitions(partitions)?;
        let stats = self.stats().await?;
        let span = self.all().await?.len() as u32;
        if let Some(limit) = stats.rate_limit {
            queue_core::backend::split_rate(limit, span.max(partitions))?;
        }
        let base = self.inner.base.clone();
        let hooks = base.webhooks().await?;
        let shares = match stats.rate_limit {
            Some(limit) => Some(queue_core::backend::split_rate(
                limit,
                span.max(partitions),
            )?),
            None => None,
        };
        let layout = layout::resize(&base, &self.inner.root, partitions, |new| async move {
            for (i, backend) in new.iter().enumerate() {
                if let Some(shares) = &shares {
                    let share = shares[span as usize + i];
                    backend.control(Control::RateLimit(Some(share))).await?;
                }
                for hook in &hooks {
                    backend.put_webhook(hook).await?;
                }
                if stats.paused {
                    backend.control(Control::Pause).await?;
                }
            }
            Ok(())
        })
        .await?;
        self.install(layout.clone())?;
        if let Some(limit) = stats.rate_limit.filter(|_| layout.span > span) {
            self.control(Control::RateLimit(Some(limit))).await?;
        }
        Ok(layout)
    }

    /// Each partition's counts, in partition order (the per-partition view for diagnosis;
    /// `stats` adds them up).
    pub async fn partition_stats(&self) -> Result<Vec<QueueStats>> {
        use queue_core::JobStore;
        let backends = self.all().await?;
        futures_util::future::try_join_all(backends.iter().map(|b| b.stats())).await
    }

    /// Each partition's hash tag, in partition order (`CLUSTER KEYSLOT <tag>` names its
    /// slot, so its master): the per-partition view of where the queue lives.
    pub fn partition_tags(&self) -> Vec<String> {
        self.parts()
            .backends
            .iter()
            .map(|b| b.inner.keys.tag().to_owned())
            .collect()
    }

    /// Deletes every key of every partition and the layout. Returns how many.
    pub async fn destroy(&self) -> Result<u64> {
        let mut removed = 0;
        for backend in self.all().await? {
            removed += backend.destroy().await?;
        }
        Ok(removed)
    }

    /// Every partition claim since the last call, in order (a fetch's round, the claim a
    /// finish rode on and its top-up), for tests and diagnosis: the first call starts the
    /// trace, so a process that never asks keeps none.
    pub fn claim_trace(&self) -> Vec<ClaimStep> {
        let mut trace = self.inner.claims.lock().unwrap_or_else(|p| p.into_inner());
        trace.replace(Vec::new()).unwrap_or_default()
    }

    /// How many fetches are blocked now, waiting for work.
    pub fn blocked_fetches(&self) -> usize {
        self.inner.blocked.count()
    }

    /// How many event streams are open (one per partition per stream).
    pub fn subscribers(&self) -> usize {
        self.parts()
            .backends
            .first()
            .map_or(0, RedisBackend::subscribers)
    }

    /// Partition `index` as an ordinary backend (diagnosis, tests).
    pub async fn partition(&self, index: u32) -> Result<RedisBackend> {
        self.all()
            .await?
            .get(index as usize)
            .cloned()
            .ok_or_else(|| Error::invalid(format!("no partition {index}")))
    }

    fn parts(&self) -> std::sync::RwLockReadGuard<'_, Parts> {
        self.inner.parts.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The known layout serves until the next refresh.
    fn keep_layout(&self) {
        let mut parts = self.inner.parts.write().unwrap_or_else(|p| p.into_inner());
        parts.read_at = tokio::time::Instant::now();
    }

    fn install(&self, layout: Layout) -> Result<()> {
        let mut parts = self.inner.parts.write().unwrap_or_else(|p| p.into_inner());
        if layout != parts.layout {
            let backends =
                layout::backends(&self.inner.base, &self.inner.root, &layout, &parts.backends)?;
            parts.backends = backends;
            parts.layout = layout;
        }
        parts.read_at = tokio::time::Instant::now();
        Ok(())
    }

    /// The layout and every partition's backend, read again when older than
    /// [`LAYOUT_REFRESH`]. A read that fails (partition 0 failing over) keeps the known
    /// layout until the next refresh: the other partitions serve on meanwhile. So does a
    /// stored span below the known one (a span never shrinks: that layout was lost), which
    /// is written back, so processes opened later find it.
    async fn current(&self) -> Result<(u32, Vec<RedisBackend>)> {
        let stale = self.parts().read_at.elapsed() >= LAYOUT_REFRESH;
        if stale {
            let known = self.parts().layout.clone();
            match layout::read(&self.inner.base).await {
                Ok(layout) if layout.span >= known.span => self.install(layout)?,
                Ok(layout) => {
                    tracing::error!(
                        stored = layout.span,
                        known = known.span,
                        "the stored layout spans fewer partitions than this process knows; writing the known one back"
                    );
                    if let Err(e) = layout::restore(&self.inner.base, &known).await {
                        tracing::warn!(error = %e.chain(), "could not write the layout back");
                    }
                    self.keep_layout();
                }
                Err(e) => {
                    tracing::warn!(error = %e.chain(), "could not read the layout; keeping the known one");
                    self.keep_layout();
                }
            }
        }
        let parts = self.parts();
        Ok((parts.layout.partitions, parts.backends.clone()))
    }

    /// Every partition's backend (`span` of them).
    async fn all(&self) -> Result<Vec<RedisBackend>> {
        Ok(self.current().await?.1)
    }

    fn next_turn(&self) -> u32 {
        self.inner.turn.fetch_add(1, Ordering::Relaxed)
    }

    fn held(&self, id: JobId) -> Option<Held> {
        self.inner
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .held
            .get(&id)
            .cloned()
    }

    /// The partition of a job this process holds a lease of (else the one its id names).
    fn lease_partition(&self, id: JobId, span: usize) -> usize {
        self.held(id)
            .map_or(id.home() as usize % span.max(1), |h| h.partition as usize)
    }

    /// The partitions in the order to look for job `id`: the one it is known or named to
    /// be in first.
    async fn candidates(&self, id: JobId) -> Result<Vec<(u32, RedisBackend)>> {
        let backends = self.all().await?;
        let first = self.lease_partition(id, backends.len()) as u32;
        let mut out: Vec<(u32, RedisBackend)> = backends
            .into_iter()
            .enumerate()
            .map(|(i, b)| (i as u32, b))
            .collect();
        out.sort_by_key(|(i, _)| *i != first);
        Ok(out)
    }

    /// Runs `call` on the partition that holds job `id`: the one its id names, else each
    /// other in turn while the answer is `NotFound`.
    async fn on_job<T, F, Fut>(&self, id: JobId, call: F) -> Result<(u32, T)>
    where
        F: Fn(RedisBackend) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut last = Error::NotFound { id };
        for (i, backend) in self.candidates(id).await? {
            match call(backend).await {
                Err(e @ Error::NotFound { .. }) => last = e,
                other => return other.map(|v| (i, v)),
            }
        }
        Err(last)
    }
}

impl RedisBackend {
    /// The key root this backend was built with (`dcs` by default).
    fn root_prefix(&self) -> String {
        let prefix = self.inner.keys.prefix();
        prefix
            .split_once(":{")
            .map_or(prefix, |(root, _)| root)
            .to_owned()
    }
}

impl fmt::Debug for PartitionedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for PartitionedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let layout = self.layout();
        write!(
            f,
            "{}, partitions={} (span {})",
            self.inner.base, layout.partitions, layout.span
        )
    }
}
