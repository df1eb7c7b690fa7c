//! The model-checked suite: random sequences of operations, run against a backend and the
//! reference [`Model`] side by side; every answer and the whole observable state (every
//! record, the counts, the listings, the workers) must agree after every step. A failure
//! is shrunk by proptest to a short list of steps and printed as such.
//!
//! Stamped into a backend's tests by [`crate::model_tests!`]; the number of cases comes from
//! `DCS_MODEL_CASES` (default: the macro's argument), so a longer run is one variable away:
//!
//! ```text
//! DCS_MODEL_CASES=2000 cargo test -p queue-memory --test model
//! ```

mod compare;
mod ops;
mod step;

use compare::*;
pub use ops::Op;
use ops::*;

use std::{fmt, future::Future, time::Duration};

use proptest::{prelude::*, test_runner::TestCaseError};
use queue_core::backend::{
    CANCEL_STEP, ClaimRequest, Ending, LeaseRef, MAX_CLAIM, MAX_CONCURRENCY, Outcome, WorkerBeat,
    from_millis, to_millis,
};
use queue_core::{
    Error, Flow, JobId, JobRecord, JobStatus, ListQuery, ManualClock, NewJob, Priority,
    SharedBackend, WorkerId,
};
use serde_json::json;

use crate::{Harness, Model, model::ModelLease, suite_config};

const JOBS: u8 = 6;
const KEYS: u8 = 3;
const WORKERS: u8 = 2;
const LEASE: Duration = Duration::from_secs(30);

/// A run: printed one numbered step per line.
#[derive(Clone)]
pub struct Steps(pub Vec<Op>);

impl fmt::Debug for Steps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} steps:", self.0.len())?;
        for (i, op) in self.0.iter().enumerate() {
            writeln!(f, "  {:>2}. {op:?}", i + 1)?;
        }
        Ok(())
    }
}

/// Random runs of up to `max_steps` steps.
pub fn steps(max_steps: usize) -> impl Strategy<Value = Steps> {
    proptest::collection::vec(op(), 1..=max_steps).prop_map(Steps)
}

/// How many cases to run: `DCS_MODEL_CASES` when set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("DCS_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `cases` random runs against backends from `factory`, each on a fresh namespace,
/// and panics with the shrunk failing run if a backend and the model disagree.
pub fn check<F, Fut>(factory: F, cases: u32, max_steps: usize)
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Harness>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let config = proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..proptest::test_runner::Config::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&steps(max_steps), |steps| {
        runtime.block_on(async {
            let clock = ManualClock::new();
            let harness = factory(clock).await;
            let outcome = Run::new(&harness).play(&steps.0).await;
            harness.cleanup().await;
            outcome.map_err(TestCaseError::fail)
        })
    });
    if let Err(err) = result {
        panic!("the backend and the model disagree\n{err}");
    }
}

/// Runs one given sequence (a counterexample to study, typed from a failure's step list)
/// against a fresh backend; run it many times to tell a deterministic disagreement from
/// one that depends on random tokens or timing.
pub async fn replay<F, Fut>(factory: F, steps: &[Op]) -> Result<(), String>
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Harness>,
{
    let harness = factory(ManualClock::new()).await;
    let outcome = Run::new(&harness).play(steps).await;
    harness.cleanup().await;
    outcome
}

struct HeldLease {
    worker: u8,
    backend: LeaseRef,
    model: LeaseRef,
}

struct Run<'a> {
    /// When the run began (ms).
    begun: i64,
    backend: &'a SharedBackend,
    clock: &'a ManualClock,
    model: Model,
    ids: Vec<JobId>,
    /// A partitioned backend's claims (see [`Model::follow`]).
    trace: Option<crate::ClaimTrace>,
    /// The last claim's split, as the trace gave it (for failure messages).
    plan: String,
    leases: Vec<HeldLease>,
    vanished: [bool; WORKERS as usize],
    last_fetch: Option<ClaimRequest>,
    last_finish: Option<(usize, Outcome, Option<ClaimRequest>)>,
    last_finish_many: Option<SentGroup>,
    /// The anonymous jobs of big batches: compared through listings, counts and claims,
    /// not one by one after every step.
    big: std::collections::HashSet<JobId>,
}

/// A `finish_many` as sent: (held lease index, outcome) pairs, the worker, the claim.
type SentGroup = (Vec<(usize, Outcome)>, u8, Option<ClaimRequest>);

type Check = Result<(), String>;

impl<'a> Run<'a> {
    fn new(h: &'a Harness) -> Self {
        let mut ids: Vec<JobId> = (0..JOBS).map(|_| JobId::new()).collect();
        ids.sort();
        Self {
            backend: &h.backend,
            clock: &h.clock,
            model: Model::new(suite_config("model")).with_partitions(h.partitions()),
            ids,
            trace: h.claim_trace(),
            plan: String::new(),
            leases: Vec::new(),
            vanished: [false; WORKERS as usize],
            last_fetch: None,
            last_finish: None,
            last_finish_many: None,
            big: std::collections::HashSet::new(),
            begun: {
                use queue_core::Clock;
                h.clock.now_ms()
            },
        }
    }

    fn now(&self) -> i64 {
        use queue_core::Clock;
        self.clock.now_ms()
    }

    async fn play(mut self, steps: &[Op]) -> Check {
        for (i, op) in steps.iter().enumerate() {
            let at = |e: String| format!("step {} ({op:?}): {e}", i + 1);
            self.step(op).await.map_err(at)?;
            self.compare_state().await.map_err(at)?;
        }
        Ok(())
    }

    fn new_job(&self, job: u8, key: Option<u8>) -> NewJob {
        let mut j = NewJob::new("model", &json!({ "job": job }))
            .expect("encodes")
            .job_id(self.ids[usize::from(job)]);
        if let Some(k) = key {
            j = j.unique_key(format!("k{k}"));
        }
        if let Some(g) = group_of(job) {
            j = j.group(g);
        }
        if cost_of(job) > 1 {
            j = j.cost(cost_of(job));
        }
        j
    }

    /// The lease slot `n` among leases of workers still alive.
    fn lease(&self, n: u8) -> Option<usize> {
        let live: Vec<usize> = (0..self.leases.len())
            .filter(|i| !self.vanished[usize::from(self.leases[*i].worker)])
            .collect();
        (!live.is_empty()).then(|| live[usize::from(n) % live.len()])
    }

    fn worker(n: u8) -> WorkerId {
        WorkerId::new(format!("w{n}"))
    }

    /// Adds leases the backend handed out (once each); checks them against the model's.
    fn adopt(
        &mut self,
        worker: u8,
        backend: &[queue_core::backend::Lease],
        model: &[ModelLease],
        replay: bool,
    ) -> Check {
        let mut b: Vec<(JobRecord, i64)> = backend
            .iter()
            .map(|l| (l.job.clone(), to_millis(l.expires_at)))
            .collect();
        let mut m: Vec<(JobRecord, i64)> = model
            .iter()
            .map(|l| (l.job.clone(), l.expires_at))
            .collect();
        if replay {
            // A replayed claim answers what it took, in no particular order.
            b.sort_by_key(|(r, _)| r.job_id);
            m.sort_by_key(|(r, _)| r.job_id);
        }
        expect_eq("leased jobs", &b, &m)?;
        for (bl, ml) in backend.iter().zip(model) {
            let known = self
                .leases
                .iter()
                .any(|l| l.backend.token == bl.token && l.backend.job_id == bl.job.job_id);
            if !known {
                let ml = model
                    .iter()
                    .find(|m| m.job.job_id == bl.job.job_id)
                    .unwrap_or(ml);
                self.leases.push(HeldLease {
                    worker,
                    backend: bl.to_ref(),
                    model: LeaseRef {
                        job_id: ml.job.job_id,
                        token: ml.token.clone(),
                    },
                });
            }
        }
        Ok(())
    }

    async fn fetch(&mut self, worker: u8, req: ClaimRequest, replay: bool) -> Check {
        if self.vanished[usize::from(worker)] {
            return Ok(());
        }
        let now = self.now();
        let got = self
            .backend
            .fetch(&req, Duration::ZERO)
            .await
            .map_err(|e| e.chain())?;
        self.follow();
        let want = self.model.fetch(&req, now);
        self.last_fetch = Some(req.clone());
        self.adopt(worker, &got, &want, replay)?;
        self.filled(got.len(), &req)
    }

    /// Tells the model how the backend split the claim it just answered among its
    /// partitions (a backend of one partition has no trace: nothing to tell).
    fn follow(&mut self) {
        if let Some(trace) = &self.trace {
            let plan = trace();
            self.plan = format!("{plan:?}");
            self.model.follow(plan);
        }
    }

    /// A claim that took `taken` jobs left no partition that gave it fewer than asked with
    /// a job to start.
    fn filled(&self, taken: usize, req: &ClaimRequest) -> Check {
        if self.trace.is_none() {
            return Ok(());
        }
        match self.model.claimable(req) {
            Some((id, p)) => Err(format!(
                "a claim of up to {} took {taken} jobs while job {id} could start in partition \
                 {p}, which gave fewer than asked (partition, asked, gave: {})",
                req.max, self.plan,
            )),
            None => Ok(()),
        }
    }

    async fn finish(&mut self, i: usize, outcome: Outcome, next: Option<ClaimRequest>) -> Check {
        let now = self.now();
        let got = self
            .backend
            .finish(&self.leases[i].backend, outcome.clone(), next.clone())
            .await;
        let taken = got.as_ref().map_or(0, |f| usize::from(f.next.is_some()));
        self.follow();
        let want = self
            .model
            .finish(&self.leases[i].model, outcome.clone(), next.as_ref(), now);
        let worker = self.leases[i].worker;
        self.last_finish = Some((i, outcome, next.clone()));
        expect_eq("finish", norm(&got, |f| f.status), norm(&want, |(s, _)| *s))?;
        if let (Ok(f), Ok((_, m))) = (&got, &want) {
            let b: Vec<queue_core::backend::Lease> = f.next.iter().cloned().collect();
            let m: Vec<ModelLease> = m.iter().cloned().collect();
            self.adopt(worker, &b, &m, false)?;
        }
        match &next {
            Some(req) => self.filled(taken, req),
            None => Ok(()),
        }
    }

    async fn finish_many(
        &mut self,
        endings: Vec<(usize, Outcome)>,
        worker: u8,
        next: Option<ClaimRequest>,
    ) -> Check {
        let now = self.now();
        let backend_endings: Vec<Ending> = endings
            .iter()
            .map(|(i, outcome)| Ending {
                lease: self.leases[*i].backend.clone(),
                outcome: outcome.clone(),
            })
            .collect();
        let model_endings: Vec<(LeaseRef, Outcome)> = endings
            .iter()
            .map(|(i, outcome)| (self.leases[*i].model.clone(), outcome.clone()))
            .collect();
        let got = self
            .backend
            .finish_many(backend_endings, next.clone())
            .await
            .map_err(|e| e.chain())?;
        self.follow();
        let (want, leases) = self.model.finish_many(&model_endings, next.as_ref(), now);
        self.last_finish_many = Some((endings, worker, next.clone()));
        let got_statuses: Vec<_> = got.statuses.iter().map(|r| norm(r, |s| *s)).collect();
        let want_statuses: Vec<_> = want.iter().map(|r| norm(r, |s| *s)).collect();
        expect_eq("finish_many", got_statuses, want_statuses)?;
        self.adopt(worker, &got.next, &leases, false)?;
        match &next {
            Some(req) => self.filled(got.next.len(), req),
            None => Ok(()),
        }
    }
}

fn outcome_of(n: u8, lease: usize, delay: u16) -> Outcome {
    match n % 8 {
        0 => Outcome::Completed {
            result: Some(json!({ "lease": lease })),
        },
        1 => Outcome::Partial {
            result: Some(json!({ "failed": "audio" })),
            error: "audio failed".into(),
        },
        2 => Outcome::Retry {
            error: format!("flaky {lease}"),
            delay: Duration::from_secs(u64::from(delay)),
        },
        3 => Outcome::Failed {
            error: "bad input".into(),
        },
        4 => Outcome::Cancelled,
        5 => Outcome::Released,
        6 => Outcome::Snoozed {
            delay: Duration::from_secs(u64::from(delay)),
        },
        _ => Outcome::RateLimited {
            retry_after: Duration::from_secs(u64::from(delay)),
        },
    }
}

fn beat(worker: u8) -> WorkerBeat {
    WorkerBeat {
        worker: WorkerId::new(format!("w{worker}")),
        host: "model-host".into(),
        pid: 7,
        concurrency: 3,
        version: "1.2.3".into(),
        tasks: vec!["model".into()],
        schemas: [("model".to_owned(), serde_json::json!({"type": "object"}))].into(),
        started_at: from_millis(1_700_000_000_000),
        lease: LEASE,
        interval: Duration::from_secs(10),
    }
}
