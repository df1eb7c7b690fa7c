//! Claiming ahead: while handlers run short, the calls that store outcomes (and the
//! fetches) also claim jobs for later, held here until a slot is free. A slot that ends a
//! job then starts the next at once instead of waiting a round trip to the backend, and
//! each call stores and claims several jobs, so a worker at concurrency 1 runs many jobs
//! per round trip (a round trip costs more than a short handler: on loopback Redis about
//! 0.3 ms, most of it the script's fixed cost).
//!
//! What a job claimed ahead may wait is bounded by the worker's budget
//! ([`WorkerConfig::claim_ahead`](crate::WorkerConfig::claim_ahead), 1 ms by default):
//!
//! - how many are held is sized from the handlers' recent run time: at most
//!   `concurrency × budget / run time` (and [`MOST_AHEAD`]), so the jobs held ahead take
//!   about one budget to reach a slot; none before a handler has run, none once handlers
//!   run longer than the budget (the worker then claims a job per free slot, as without);
//! - a job held longer than [`GIVE_BACK`] budgets (a handler ran long after short ones), or
//!   a quarter of the lease if that is shorter, is handed back in its place, no attempt
//!   used, for any worker to take (`upkeep`'s keeper).
//!
//! The run time is a slot's whole turn per job (handler, bookkeeping, sending its outcome),
//! which is what a held job waits behind.
//!
//! A held job has its lease (it is `processing` on the backend, its claim counted by group
//! limits and rate limits); its renewal and fence begin when its attempt starts, which is
//! long before the lease could expire. A cancel pushed for it is remembered and applies
//! when it starts. On shutdown the held jobs are handed back at once.

use std::{collections::VecDeque, sync::Mutex, time::Duration};

use queue_core::backend::{Lease, MAX_CLAIM};
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

/// The most jobs a worker holds ahead.
pub const MOST_AHEAD: usize = 32;

/// A job held ahead longer than this many budgets is handed back (50 ms at the default 1 ms:
/// long next to what held jobs wait while handlers stay short, so a loaded machine's
/// scheduling delays hand little back; short next to a handler that runs long).
pub const GIVE_BACK: u32 = 50;

/// The jobs held ahead and the claims that may still bring some.
#[derive(Debug)]
pub(crate) struct Ahead {
    budget: Duration,
    /// How long a job may be held before it is handed back: [`GIVE_BACK`] budgets, and at
    /// most a quarter of the lease (a held job's lease is not renewed).
    patience: Duration,
    concurrency: usize,
    state: Mutex<State>,
    /// Jobs arrived, or a claim was answered.
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Leases held, with when each arrived.
    jobs: VecDeque<(Lease, Instant)>,
    /// Leases asked for by calls still in flight (slots wait for them).
    expected: usize,
    /// A slot's turn per job, averaged (`ran`; none before the first turn has ended).
    run_time: Option<Duration>,
    /// Shutdown began: nothing more is held.
    stopped: bool,
}

impl Ahead {
    /// Holds jobs for `concurrency` slots within `budget`, each leased for `lease`.
    pub(crate) fn new(budget: Duration, concurrency: usize, lease: Duration) -> Self {
        Self {
            budget,
            // A held job's lease is not renewed: it goes back long before the lease ends.
            patience: (budget * GIVE_BACK).min(lease / 4),
            concurrency,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes how long a slot's turn with one job took, `handler` of it in the handler.
    pub(crate) fn ran(&self, turn: Duration, handler: Duration) {
        let mut state = self.lock();
        // A handler that ran longer than the average stops claiming ahead at once; other
        // turns move it by a quarter (a turn a loaded machine slowed moves it a little,
        // short turns bring it back after a few).
        state.run_time = Some(match state.run_time {
            None => turn,
            Some(avg) if handler > avg => handler,
            Some(avg) => (avg * 3 + turn) / 4,
        });
    }

    /// How many jobs to hold ahead now.
    fn target(&self, state: &State) -> usize {
        let Some(run_time) = state.run_time else {
            return 0;
        };
        if state.stopped || self.budget.is_zero() {
            return 0;
        }
        let budget = self.budget.as_nanos() * self.concurrency as u128;
        let fits = budget / run_time.as_nanos().max(1);
        usize::try_from(fits).unwrap_or(usize::MAX).min(MOST_AHEAD)
    }

    /// A claim for `own` jobs (a slot's next, or a fetch's slots) plus what tops up the jobs
    /// held ahead; the whole of it is expected until [`Ahead::answered`] when `wait_for_it`.
    pub(crate) fn reserve(&self, own: usize, wait_for_it: bool) -> usize {
        let mut state = self.lock();
        let held = state.jobs.len() + state.expected;
        let top_up = self.target(&state).saturating_sub(held);
        let n = (own + top_up).min(MAX_CLAIM);
        if wait_for_it {
            state.expected += n;
        }
        n
    }

    /// A claim for `reserved` jobs (counted as expected) was answered with `leases`.
    /// Returns the leases to hand back (shutdown began).
    pub(crate) fn answered(&self, reserved: usize, leases: Vec<Lease>) -> Vec<Lease> {
        let mut state = self.lock();
        state.expected = state.expected.saturating_sub(reserved);
        let back = self.hold(&mut state, leases);
        drop(state);
        self.changed.notify_waiters();
        back
    }

    /// Holds `leases` (a fetch's beyond its slots). Returns those to hand back.
    pub(crate) fn add(&self, leases: Vec<Lease>) -> Vec<Lease> {
        let back = self.hold(&mut self.lock(), leases);
        self.changed.notify_waiters();
        back
    }

    fn hold(&self, state: &mut State, leases: Vec<Lease>) -> Vec<Lease> {
        if state.stopped {
            return leases;
        }
        let now = Instant::now();
        state.jobs.extend(leases.into_iter().map(|l| (l, now)));
        Vec::new()
    }

    /// A job held ahead, as soon as one is; `None` when none is held and no claim in flight
    /// may bring one, or on shutdown.
    pub(crate) async fn next(&self, shutdown: &CancellationToken) -> Option<Lease> {
        loop {
            let changed = self.changed.notified();
            {
                let mut state = self.lock();
                if state.stopped || shutdown.is_cancelled() {
                    return None;
                }
                if let Some((lease, _)) = state.jobs.pop_front() {
                    return Some(lease);
                }
                if state.expected == 0 {
                    return None;
                }
            }
            tokio::select! {
                () = changed => {}
                () = shutdown.cancelled() => return None,
            }
        }
    }

    /// Stops holding jobs; returns those held.
    pub(crate) fn stop(&self) -> Vec<Lease> {
        let mut state = self.lock();
        state.stopped = true;
        let held = state.jobs.drain(..).map(|(l, _)| l).collect();
        drop(state);
        self.changed.notify_waiters();
        held
    }

    /// Resolves when jobs arrive or a claim is answered (created before looking, so no
    /// change between the look and the wait is missed).
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// The jobs held past their patience at `now`, taken out; and when the oldest left
    /// will be.
    pub(crate) fn overdue(&self, now: Instant) -> (Vec<Lease>, Option<Instant>) {
        let mut state = self.lock();
        let mut out = Vec::new();
        while state
            .jobs
            .front()
            .is_some_and(|(_, at)| *at + self.patience <= now)
        {
            out.extend(state.jobs.pop_front().map(|(l, _)| l));
        }
        (out, state.jobs.front().map(|(_, at)| *at + self.patience))
    }
}
