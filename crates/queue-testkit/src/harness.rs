use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use queue_core::{ManualClock, QueueConfig, SharedBackend};

type Cleanup = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One backend on a fresh namespace, with the clock that drives it.
pub struct Harness {
    /// The backend under test.
    pub backend: SharedBackend,
    /// Its clock: cases move time with `advance`.
    pub clock: ManualClock,
    cleanup: Mutex<Option<Cleanup>>,
    blocked: Option<Blocked>,
    partitions: u32,
    claims: Option<ClaimTrace>,
}

/// The partition claims a partitioned backend made since the last call: (partition, jobs
/// asked, jobs given), in order.
pub type ClaimTrace = Arc<dyn Fn() -> Vec<(u32, usize, usize)> + Send + Sync>;

/// How many calls are blocked on the backend now: fetches waiting for work plus open event
/// streams (what a `wait` follows).
type Blocked = Arc<dyn Fn() -> usize + Send + Sync>;

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("backend", &self.backend.to_string())
            .finish()
    }
}

impl Harness {
    /// Wraps a backend built with `clock`.
    pub fn new(backend: SharedBackend, clock: ManualClock) -> Self {
        Self {
            backend,
            clock,
            cleanup: Mutex::new(None),
            blocked: None,
            partitions: 1,
            claims: None,
        }
    }

    /// How to read a partitioned backend's claims (the model suite follows how it split
    /// each claim among its partitions: see `Model::follow`).
    pub fn with_claim_trace(
        mut self,
        trace: impl Fn() -> Vec<(u32, usize, usize)> + Send + Sync + 'static,
    ) -> Self {
        self.claims = Some(Arc::new(trace));
        self
    }

    /// How to read the backend's partition claims, if it is partitioned.
    pub fn claim_trace(&self) -> Option<ClaimTrace> {
        self.claims.clone()
    }

    /// A backend of `partitions` partitions (README "Partitions"): the cases that check
    /// start order, or fair share between groups, keep their jobs in one partition (see
    /// [`Harness::in_order`], [`Harness::group_name`]), since those hold per partition.
    pub fn with_partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions;
        self
    }

    /// How many partitions the backend has (1 for an unpartitioned one).
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// `job` routed to the case's one partition on a partitioned backend: start order
    /// (priority, then FIFO) holds among the jobs of one partition, so a case that checks
    /// it gives its jobs one partition key. Unchanged on one partition, and for a job with
    /// a group or a sequence (routed by it; see [`Harness::group_name`]).
    pub fn in_order(&self, job: queue_core::NewJob) -> queue_core::NewJob {
        let o = &job.options;
        if self.partitions > 1 && o.group.is_none() && o.sequence.is_none() {
            job.partition_key(ORDER_KEY)
        } else {
            job
        }
    }

    /// A group name that routes to the partition of [`Harness::in_order`]'s jobs: `name`
    /// itself on one partition, else `name` followed by `~` and the first number that
    /// does (fair share between groups holds among the groups of one partition).
    pub fn group_name(&self, name: &str) -> String {
        use queue_core::backend::partition_of;
        if self.partitions <= 1 {
            return name.to_owned();
        }
        let at = partition_of(&format!("p:{ORDER_KEY}"), self.partitions);
        (0..)
            .map(|i| format!("{name}~{i}"))
            .find(|g| partition_of(&format!("g:{g}"), self.partitions) == at)
            .expect("some suffix routes there")
    }

    /// How the cases see that a fetch or a wait is blocked (see [`Harness::until_blocked`]):
    /// the backend's blocked fetches plus its open event streams.
    pub fn with_blocked(mut self, blocked: impl Fn() -> usize + Send + Sync + 'static) -> Self {
        self.blocked = Some(Arc::new(blocked));
        self
    }

    /// How many calls are blocked on the backend now (see [`Harness::until_blocked`]).
    pub fn blocked(&self) -> usize {
        self.blocked.as_ref().map_or(0, |blocked| blocked())
    }

    /// Waits until at least `n` calls are blocked on the backend (fetches waiting for
    /// work, event streams open): a state, not a time. A fetch counted here found nothing
    /// and waits, so a case may then assert it keeps waiting and that what should wake it
    /// does.
    pub async fn until_blocked(&self, n: usize) {
        let blocked = self
            .blocked
            .as_ref()
            .expect("this deployment's harness has no blocked probe (Harness::with_blocked)");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while blocked() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} calls blocked after 10 s, {n} expected",
                blocked()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Runs `cleanup` after the case (pass or fail): remove the namespace here.
    pub fn with_cleanup(self, cleanup: impl Future<Output = ()> + Send + 'static) -> Self {
        *self.cleanup.lock().unwrap() = Some(Box::pin(cleanup));
        self
    }

    /// Runs the cleanup.
    pub async fn cleanup(&self) {
        let cleanup = self.cleanup.lock().unwrap().take();
        if let Some(cleanup) = cleanup {
            cleanup.await;
        }
    }

    /// Moves the backend's clock.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

/// The partition key of the jobs whose order a case checks ([`Harness::in_order`]).
const ORDER_KEY: &str = "conformance-order";

/// The configuration every suite backend is built with (the cases rely on it): the
/// defaults of the story (3 retries, `normal` priority) and one hour of retention.
pub fn suite_config(queue_name: &str) -> QueueConfig {
    QueueConfig::builder()
        .queue_name(queue_name)
        .retention(Duration::from_secs(3600))
        .build()
        .expect("suite configuration is valid")
}
