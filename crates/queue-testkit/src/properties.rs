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

/// One step of a run.
#[derive(Clone)]
pub enum Op {
    /// Enqueue job slot `job` (the same slot twice is the same id: idempotent).
    Enqueue {
        /// Job slot.
        job: u8,
        /// Unique key slot.
        key: Option<u8>,
        /// Priority.
        priority: Priority,
        /// Delay in seconds (0: none).
        delay: u16,
        /// Retry budget.
        retries: u8,
    },
    /// Read the charts' series: while the run is younger than a day, the day's buckets add
    /// up to the lifetime counters.
    Series,
    /// Delete a job's record (refused unless it is finished and retention would not keep it).
    Delete {
        /// Job slot.
        job: u8,
    },
    /// Enqueue several job slots in one call.
    EnqueueMany(Vec<(u8, Option<u8>)>),
    /// A worker claims up to `max` jobs.
    Fetch {
        /// Worker slot.
        worker: u8,
        /// At most this many.
        max: u8,
        /// A 45 s lease instead of 30 s (heartbeats renew for 30 s).
        long: bool,
    },
    /// The last claim is sent again (its reply was lost).
    FetchAgain,
    /// A worker renews the leases it holds.
    Heartbeat {
        /// Worker slot.
        worker: u8,
    },
    /// Progress on a lease.
    Progress {
        /// Lease slot.
        lease: u8,
        /// Percent.
        percent: u8,
        /// Whether a step name is sent.
        step: bool,
    },
    /// A lease holder ends the attempt.
    Finish {
        /// Lease slot.
        lease: u8,
        /// 0 completed, 1 partial, 2 retry, 3 failed, 4 cancelled, 5 released, 6 snoozed, 7 rate limited.
        outcome: u8,
        /// Retry delay in seconds.
        delay: u16,
        /// Claim the next job in the same call.
        next: bool,
    },
    /// The last finish is sent again (its reply was lost).
    FinishAgain,
    /// Several leases end in one call, which may claim up to `next` jobs.
    FinishMany {
        /// Lease slots and outcomes (as `Finish`).
        endings: Vec<(u8, u8)>,
        /// Claim up to this many next jobs (0: none).
        next: u8,
    },
    /// The last `FinishMany` is sent again (its reply was lost).
    FinishManyAgain,
    /// A caller cancels a job slot.
    Cancel {
        /// Job slot.
        job: u8,
    },
    /// An operator retries a job slot.
    Retry {
        /// Job slot.
        job: u8,
        /// New priority.
        priority: Option<Priority>,
    },
    /// Time passes.
    Advance {
        /// Seconds.
        secs: u32,
    },
    /// Expired leases are recovered.
    Reap,
    /// Expired records are deleted.
    Sweep,
    /// A worker dies: its leases are never used again.
    Vanish {
        /// Worker slot.
        worker: u8,
    },
    /// A worker deregisters.
    Deregister {
        /// Worker slot.
        worker: u8,
    },
    /// Pages through every job, two at a time.
    Pages,
    /// An operator pauses the queue.
    Pause,
    /// An operator resumes the queue.
    Resume,
    /// An operator sets (`max` > 0: `max` starts per `secs`) or removes (`max` 0) the rate
    /// limit.
    RateLimit {
        /// Starts per window; 0 removes the limit.
        max: u8,
        /// The window in seconds.
        secs: u8,
    },
    /// An operator pauses (`true`) or resumes a group.
    PauseGroup {
        /// Group slot.
        group: u8,
        /// Pause or resume.
        paused: bool,
    },
    /// An operator sets (`max` > 0: `max` starts per `secs`) or removes (`max` 0) a group's
    /// rate limit.
    GroupRate {
        /// Group slot.
        group: u8,
        /// Starts per window; 0 removes the limit.
        max: u8,
        /// The window in seconds.
        secs: u8,
    },
    /// An operator sets (`max` > 0) or removes (`max` 0) a group's concurrency limit.
    GroupLimit {
        /// Group slot.
        group: u8,
        /// Jobs of the group running at once; 0 removes the limit.
        max: u8,
    },
    /// An operator sets (`weight` > 0) or removes (`weight` 0) a group's weight.
    GroupWeight {
        /// Group slot.
        group: u8,
        /// Starts in a row per turn; 0 removes the weight.
        weight: u8,
    },
    /// A flow: job slot `root` with children (slot, policy 0 fail_parent / 1 ignore / 2
    /// continue); `nested` makes the last child a child of the first. Slots already used
    /// in the flow are skipped.
    EnqueueFlow {
        /// The root's slot.
        root: u8,
        /// The root's unique key slot.
        key: Option<u8>,
        /// Children: (slot, policy).
        kids: Vec<(u8, u8)>,
        /// The last child goes under the first.
        nested: bool,
    },
    /// Children (slot, policy) added to job slot `parent`.
    AddChildren {
        /// The parent's slot.
        parent: u8,
        /// Children: (slot, policy).
        kids: Vec<(u8, u8)>,
    },
    /// An operator creates or changes schedule `s<slot>`: every `SCHEDULE_EVERY[every]`
    /// seconds, missed ticks 0 skipped / 1 run once / 2 each of the latest 2.
    PutSchedule {
        /// Schedule slot.
        slot: u8,
        /// Interval choice.
        every: u8,
        /// Missed-tick policy.
        policy: u8,
    },
    /// An operator pauses (`true`) or resumes a schedule.
    PauseSchedule {
        /// Schedule slot.
        slot: u8,
        /// Pause or resume.
        paused: bool,
    },
    /// An operator deletes a schedule.
    DeleteSchedule {
        /// Schedule slot.
        slot: u8,
    },
    /// A scheduler fires the due schedules.
    RunSchedules,
    /// A big batch: `jobs` anonymous jobs in one `enqueue_many` (around
    /// [`queue_core::backend::MAX_CLAIM`], so claims meet their bound).
    Flood {
        /// How many.
        jobs: u16,
    },
    /// A worker at its most concurrent claims all its slots at once
    /// ([`queue_core::backend::MAX_CONCURRENCY`]): one call takes at most `MAX_CLAIM`.
    FetchAll {
        /// Worker slot.
        worker: u8,
    },
    /// A batch of `members` anonymous jobs under job slot `root` (past
    /// [`queue_core::backend::CANCEL_STEP`], so cancelling the root cascades in steps).
    BigFlow {
        /// The root's slot.
        root: u8,
        /// How many members.
        members: u16,
    },
}

/// The intervals a schedule of the run may have, in seconds.
const SCHEDULE_EVERY: [u32; 3] = [5, 20, 3600];

fn missed_of(policy: u8) -> queue_core::MissedTicks {
    match policy % 3 {
        0 => queue_core::MissedTicks::Skip,
        1 => queue_core::MissedTicks::RunOnce,
        _ => queue_core::MissedTicks::RunEach { max: 2 },
    }
}

fn policy_of(n: u8) -> queue_core::ChildPolicy {
    queue_core::ChildPolicy::ALL[usize::from(n % 3)]
}

/// The groups of the run, by slot; job slots take turns: no group, `a`, `b`.
const GROUPS: [&str; 2] = ["a", "b"];

fn group_of(job: u8) -> Option<&'static str> {
    match job % 3 {
        0 => None,
        n => Some(GROUPS[usize::from(n - 1)]),
    }
}

/// The cost against rate limits of a job slot's jobs (`NewJob::cost`): slots take turns
/// 1, 2, 1, 3, so with limits of 1 to 3 a cost fits, waits for room, or exceeds a window.
fn cost_of(job: u8) -> u32 {
    [1, 2, 1, 3][usize::from(job % 4)]
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Enqueue {
                job,
                key,
                priority,
                delay,
                retries,
            } => {
                write!(f, "enqueue job#{job} {priority} retries={retries}")?;
                if let Some(k) = key {
                    write!(f, " key=k{k}")?;
                }
                if *delay > 0 {
                    write!(f, " delay={delay}s")?;
                }
                Ok(())
            }
            Op::EnqueueMany(jobs) => {
                write!(f, "enqueue_many")?;
                for (job, key) in jobs {
                    write!(f, " job#{job}")?;
                    if let Some(k) = key {
                        write!(f, "(k{k})")?;
                    }
                }
                Ok(())
            }
            Op::Fetch { worker, max, long } => {
                write!(f, "w{worker} fetch max={max}")?;
                if *long {
                    write!(f, " lease=45s")?;
                }
                Ok(())
            }
            Op::FetchAgain => write!(f, "the last fetch is sent again"),
            Op::Heartbeat { worker } => write!(f, "w{worker} heartbeat"),
            Op::Progress {
                lease,
                percent,
                step,
            } => write!(f, "progress lease#{lease} {percent}% step={step}"),
            Op::Finish {
                lease,
                outcome,
                delay,
                next,
            } => write!(
                f,
                "finish lease#{lease} {} delay={delay}s next={next}",
                outcome_name(*outcome)
            ),
            Op::FinishAgain => write!(f, "the last finish is sent again"),
            Op::FinishMany { endings, next } => {
                write!(f, "finish_many")?;
                for (lease, outcome) in endings {
                    write!(f, " lease#{lease}:{}", outcome_name(*outcome))?;
                }
                write!(f, " next={next}")
            }
            Op::FinishManyAgain => write!(f, "the last finish_many is sent again"),
            Op::Cancel { job } => write!(f, "cancel job#{job}"),
            Op::Retry { job, priority } => write!(f, "retry job#{job} priority={priority:?}"),
            Op::Advance { secs } => write!(f, "advance {secs}s"),
            Op::Reap => write!(f, "reap"),
            Op::Sweep => write!(f, "sweep"),
            Op::Delete { job } => write!(f, "delete job#{job}"),
            Op::Series => write!(f, "read the series"),
            Op::Vanish { worker } => write!(f, "w{worker} vanishes"),
            Op::Deregister { worker } => write!(f, "w{worker} deregisters"),
            Op::Pages => write!(f, "page through every job"),
            Op::Pause => write!(f, "pause the queue"),
            Op::Resume => write!(f, "resume the queue"),
            Op::RateLimit { max: 0, .. } => write!(f, "remove the rate limit"),
            Op::RateLimit { max, secs } => write!(f, "rate limit {max} per {secs}s"),
            Op::PauseGroup { group, paused } => {
                let verb = if *paused { "pause" } else { "resume" };
                write!(f, "{verb} group {}", GROUPS[usize::from(*group)])
            }
            Op::GroupRate { group, max: 0, .. } => {
                write!(f, "no rate limit for group {}", GROUPS[usize::from(*group)])
            }
            Op::GroupRate { group, max, secs } => write!(
                f,
                "group {} starts at most {max} per {secs}s",
                GROUPS[usize::from(*group)]
            ),
            Op::GroupLimit { group, max: 0 } => {
                write!(
                    f,
                    "no concurrency limit for group {}",
                    GROUPS[usize::from(*group)]
                )
            }
            Op::GroupLimit { group, max } => {
                write!(
                    f,
                    "group {} runs at most {max}",
                    GROUPS[usize::from(*group)]
                )
            }
            Op::GroupWeight { group, weight: 0 } => {
                write!(f, "no weight for group {}", GROUPS[usize::from(*group)])
            }
            Op::GroupWeight { group, weight } => {
                write!(f, "group {} weighs {weight}", GROUPS[usize::from(*group)])
            }
            Op::EnqueueFlow {
                root,
                key,
                kids,
                nested,
            } => {
                write!(f, "flow job#{root}")?;
                if let Some(k) = key {
                    write!(f, "(k{k})")?;
                }
                write!(f, " children")?;
                for (kid, policy) in kids {
                    write!(f, " job#{kid}:{}", policy_of(*policy).as_str())?;
                }
                if *nested {
                    write!(f, " (the last under the first)")?;
                }
                Ok(())
            }
            Op::AddChildren { parent, kids } => {
                write!(f, "add to job#{parent}")?;
                for (kid, policy) in kids {
                    write!(f, " job#{kid}:{}", policy_of(*policy).as_str())?;
                }
                Ok(())
            }
            Op::PutSchedule {
                slot,
                every,
                policy,
            } => write!(
                f,
                "schedule s{slot} every {}s, missed {}",
                SCHEDULE_EVERY[usize::from(*every) % 3],
                missed_of(*policy)
            ),
            Op::PauseSchedule { slot, paused } => {
                let verb = if *paused { "pause" } else { "resume" };
                write!(f, "{verb} schedule s{slot}")
            }
            Op::DeleteSchedule { slot } => write!(f, "delete schedule s{slot}"),
            Op::RunSchedules => write!(f, "fire the due schedules"),
            Op::Flood { jobs } => write!(f, "enqueue_many of {jobs} jobs"),
            Op::FetchAll { worker } => write!(f, "w{worker} fetch max=MAX_CONCURRENCY"),
            Op::BigFlow { root, members } => write!(f, "batch job#{root} of {members} members"),
        }
    }
}

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

/// A job of a big batch: no slot, no key, its own id (the same for backend and model).
fn anonymous(n: u16) -> NewJob {
    NewJob::new("model", &json!({ "big": n }))
        .expect("encodes")
        .job_id(JobId::new())
}

fn outcome_name(n: u8) -> &'static str {
    [
        "completed",
        "partial",
        "retry",
        "failed",
        "cancelled",
        "released",
        "snoozed",
        "rate_limited",
    ][usize::from(n % 8)]
}

fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![
        Just(Priority::High),
        Just(Priority::Normal),
        Just(Priority::Low)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let key = proptest::option::of(0..KEYS);
    prop_oneof![
        6 => (0..JOBS, key.clone(), priority(), prop_oneof![3 => Just(0u16), 1 => 1u16..90], 0u8..3)
            .prop_map(|(job, key, priority, delay, retries)| Op::Enqueue { job, key, priority, delay, retries }),
        1 => proptest::collection::vec((0..JOBS, key), 1..4).prop_map(Op::EnqueueMany),
        6 => (0..WORKERS, 1u8..4, any::<bool>()).prop_map(|(worker, max, long)| Op::Fetch { worker, max, long }),
        1 => Just(Op::FetchAgain),
        2 => (0..WORKERS).prop_map(|worker| Op::Heartbeat { worker }),
        2 => (any::<u8>(), 0u8..=100, any::<bool>()).prop_map(|(lease, percent, step)| Op::Progress { lease, percent, step }),
        7 => (any::<u8>(), 0u8..8, prop_oneof![Just(0u16), 1u16..120], any::<bool>())
            .prop_map(|(lease, outcome, delay, next)| Op::Finish { lease, outcome, delay, next }),
        1 => Just(Op::FinishAgain),
        3 => (proptest::collection::vec((any::<u8>(), 0u8..8), 1..4), 0u8..3)
            .prop_map(|(endings, next)| Op::FinishMany { endings, next }),
        1 => Just(Op::FinishManyAgain),
        2 => (0..JOBS).prop_map(|job| Op::Cancel { job }),
        2 => (0..JOBS, proptest::option::of(priority())).prop_map(|(job, priority)| Op::Retry { job, priority }),
        4 => prop_oneof![Just(1u32), Just(5), Just(20), Just(31), Just(61), Just(3601)].prop_map(|secs| Op::Advance { secs }),
        2 => Just(Op::Reap),
        1 => Just(Op::Sweep),
        1 => (0..JOBS).prop_map(|job| Op::Delete { job }),
        1 => Just(Op::Series),
        1 => (0..WORKERS).prop_map(|worker| Op::Vanish { worker }),
        1 => (0..WORKERS).prop_map(|worker| Op::Deregister { worker }),
        1 => Just(Op::Pages),
        1 => Just(Op::Pause),
        2 => Just(Op::Resume),
        1 => (0u8..4, 1u8..40).prop_map(|(max, secs)| Op::RateLimit { max, secs }),
        2 => (0u8..2, any::<bool>()).prop_map(|(group, paused)| Op::PauseGroup { group, paused }),
        2 => (0u8..2, 0u8..3).prop_map(|(group, max)| Op::GroupLimit { group, max }),
        2 => (0u8..2, 0u8..4).prop_map(|(group, weight)| Op::GroupWeight { group, weight }),
        2 => (0u8..2, 0u8..3, 1u8..40).prop_map(|(group, max, secs)| Op::GroupRate { group, max, secs }),
        3 => (0..JOBS, proptest::option::of(0..KEYS), proptest::collection::vec((0..JOBS, 0u8..3), 1..4), any::<bool>())
            .prop_map(|(root, key, kids, nested)| Op::EnqueueFlow { root, key, kids, nested }),
        1 => (0..JOBS, proptest::collection::vec((0..JOBS, 0u8..3), 1..3))
            .prop_map(|(parent, kids)| Op::AddChildren { parent, kids }),
        2 => (0u8..2, 0u8..3, 0u8..3).prop_map(|(slot, every, policy)| Op::PutSchedule { slot, every, policy }),
        1 => (0u8..2, any::<bool>()).prop_map(|(slot, paused)| Op::PauseSchedule { slot, paused }),
        1 => (0u8..2).prop_map(|slot| Op::DeleteSchedule { slot }),
        3 => Just(Op::RunSchedules),
        1 => ((MAX_CLAIM as u16 - 5)..=(MAX_CLAIM as u16 + 20)).prop_map(|jobs| Op::Flood { jobs }),
        1 => (0..WORKERS).prop_map(|worker| Op::FetchAll { worker }),
        1 => (0..JOBS, (CANCEL_STEP as u16)..=(CANCEL_STEP as u16 + 30))
            .prop_map(|(root, members)| Op::BigFlow { root, members }),
    ]
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

fn expect_eq<T: PartialEq + fmt::Debug>(what: &str, backend: T, model: T) -> Check {
    if backend == model {
        Ok(())
    } else {
        Err(format!(
            "{what}:\n  backend: {backend:?}\n  model:   {model:?}"
        ))
    }
}

/// An error as it is compared: its kind and the fields a caller acts on.
fn norm_err(e: &Error) -> String {
    match e {
        Error::NotFound { id } => format!("NotFound({id})"),
        Error::AlreadyExists { unique_key, job_id } => {
            format!("AlreadyExists({unique_key}, {job_id})")
        }
        Error::InvalidTransition { id, from, event } => {
            format!("InvalidTransition({id}, {from}, {event:?})")
        }
        Error::LeaseLost { id } => format!("LeaseLost({id})"),
        Error::InvalidArgument { .. } => "InvalidArgument".into(),
        Error::ScheduleNotFound { name } => format!("ScheduleNotFound({name})"),
        Error::NotDeletable { id, reason } => format!("NotDeletable({id}, {reason})"),
        other => format!("unexpected: {}", other.chain()),
    }
}

fn norm<T, U>(r: &Result<T, Error>, f: impl FnOnce(&T) -> U) -> Result<U, String> {
    r.as_ref().map(f).map_err(norm_err)
}

impl<'a> Run<'a> {
    fn new(h: &'a Harness) -> Self {
        let mut ids: Vec<JobId> = (0..JOBS).map(|_| JobId::new()).collect();
        ids.sort();
        Self {
            backend: &h.backend,
            clock: &h.clock,
            model: Model::new(suite_config("model")),
            ids,
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

    async fn step(&mut self, op: &Op) -> Check {
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
                let want = self.model.reap(100, now);
                expect_eq("reap", got, want)
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
                expect_eq(
                    "delete",
                    norm(&got, Clone::clone),
                    norm(&want, Clone::clone),
                )
            }
            Op::Sweep => {
                let got = b.sweep(100).await.map_err(|e| e.chain())?;
                let want = self.model.sweep(100, now);
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
                b.set_rate_limit(limit).await.map_err(|e| e.chain())?;
                self.model.set_rate_limit(limit);
                Ok(())
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
        let want = self.model.fetch(&req, now);
        self.last_fetch = Some(req);
        self.adopt(worker, &got, &want, replay)
    }

    async fn finish(&mut self, i: usize, outcome: Outcome, next: Option<ClaimRequest>) -> Check {
        let now = self.now();
        let got = self
            .backend
            .finish(&self.leases[i].backend, outcome.clone(), next.clone())
            .await;
        let want = self
            .model
            .finish(&self.leases[i].model, outcome.clone(), next.as_ref(), now);
        let worker = self.leases[i].worker;
        self.last_finish = Some((i, outcome, next));
        expect_eq("finish", norm(&got, |f| f.status), norm(&want, |(s, _)| *s))?;
        if let (Ok(f), Ok((_, m))) = (&got, &want) {
            let b: Vec<queue_core::backend::Lease> = f.next.iter().cloned().collect();
            let m: Vec<ModelLease> = m.iter().cloned().collect();
            self.adopt(worker, &b, &m, false)?;
        }
        Ok(())
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
        let (want, leases) = self.model.finish_many(&model_endings, next.as_ref(), now);
        self.last_finish_many = Some((endings, worker, next));
        let got_statuses: Vec<_> = got.statuses.iter().map(|r| norm(r, |s| *s)).collect();
        let want_statuses: Vec<_> = want.iter().map(|r| norm(r, |s| *s)).collect();
        expect_eq("finish_many", got_statuses, want_statuses)?;
        self.adopt(worker, &got.next, &leases, false)
    }

    /// Everything a caller can observe, compared with the model.
    async fn compare_state(&mut self) -> Check {
        let now = self.now();
        let b = self.backend;
        for id in self.ids.clone() {
            let got = b.get(id).await;
            let want = self.model.get(id);
            expect_eq(
                &format!("record {id}"),
                norm(&got, Clone::clone),
                norm(&want, Clone::clone),
            )?;
            if want.as_ref().is_ok_and(|r| r.children.is_some()) {
                let ids = |r: &Vec<JobRecord>| r.iter().map(|k| k.job_id).collect::<Vec<_>>();
                expect_eq(
                    &format!("children of {id}"),
                    norm(&b.children(id).await, ids),
                    norm(&self.model.children(id), ids),
                )?;
            }
        }
        let got = b.stats().await.map_err(|e| e.chain())?;
        expect_eq("stats", got, self.model.stats(now))?;
        let mut queries = vec![ListQuery::new().limit(100)];
        queries.extend(
            JobStatus::ALL
                .into_iter()
                .map(|s| ListQuery::new().status(s).limit(100)),
        );
        queries.extend((0..KEYS).map(|k| ListQuery::new().unique_key(format!("k{k}")).limit(100)));
        queries.push(ListQuery::new().waiting_on_children().limit(100));
        for query in queries {
            let got = b.list(&query).await;
            let want = self.model.list(&query);
            expect_eq(
                &format!("list {query:?}"),
                norm(&got, |p| {
                    p.jobs.iter().map(|r| r.job_id).collect::<Vec<_>>()
                }),
                norm(&want, |p| {
                    p.jobs.iter().map(|r| r.job_id).collect::<Vec<_>>()
                }),
            )?;
        }
        for g in GROUPS {
            let got = b.group(g).await.map_err(|e| e.chain())?;
            expect_eq(&format!("group {g}"), got, self.model.group(g, now))?;
        }
        for limit in [0, 1, 10] {
            let got = b.groups(limit).await.map_err(|e| e.chain())?;
            expect_eq(
                &format!("groups({limit})"),
                got,
                self.model.groups(limit, now),
            )?;
        }
        let got = b.workers().await.map_err(|e| e.chain())?;
        expect_eq("workers", got, self.model.workers(now))?;
        self.compare_schedules().await
    }

    /// Every schedule (next run, last tick, counts, paused) and every job they created.
    async fn compare_schedules(&mut self) -> Check {
        use queue_core::Schedules;
        let b = self.backend;
        let got: Vec<_> = b
            .schedules()
            .await
            .map_err(|e| e.chain())?
            .into_iter()
            .map(|r| {
                (
                    r.schedule.name,
                    r.next_run.map(to_millis),
                    r.last_tick.map(to_millis),
                    r.ticks_run,
                    r.ticks_skipped,
                    r.schedule.paused,
                )
            })
            .collect();
        let want: Vec<_> = self
            .model
            .schedules()
            .iter()
            .map(|(name, s)| {
                (
                    name.clone(),
                    s.next,
                    s.last_tick,
                    s.ticks_run,
                    s.ticks_skipped,
                    s.paused,
                )
            })
            .collect();
        expect_eq("schedules", got, want)?;
        for id in self.model.ids() {
            if self.ids.contains(&id) || self.big.contains(&id) {
                continue;
            }
            expect_eq(
                &format!("scheduled job {id}"),
                norm(&b.get(id).await, Clone::clone),
                norm(&self.model.get(id), Clone::clone),
            )?;
        }
        Ok(())
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
        started_at: from_millis(1_700_000_000_000),
        lease: LEASE,
        interval: Duration::from_secs(10),
    }
}
