//! The operations of a run and how proptest draws them.

use super::*;

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
    /// Enqueue job slot `job` into ordered sequence `s<seq>`, delayed `delay` seconds.
    EnqueueSequenced {
        /// Job slot.
        job: u8,
        /// Sequence slot.
        seq: u8,
        /// Its delay, in seconds (0: none).
        delay: u16,
    },
    /// Enqueue several job slots in one call.
    EnqueueMany(Vec<(u8, Option<u8>)>),
    /// Enqueue job slot `job` with unique key slot `key` in a key mode: debounced (`secs`
    /// of quiet) or throttled (a window of `secs`), with payload version `v`.
    EnqueueKeyed {
        /// Job slot.
        job: u8,
        /// Unique key slot.
        key: u8,
        /// The key mode: 0 debounce, 1 throttle, 2 keep-latest, 3 replace-running.
        mode: u8,
        /// The debounce's delay or the throttle's window, in seconds.
        secs: u16,
        /// Payload version (a debounce's replacement shows).
        v: u8,
    },
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
            Op::EnqueueKeyed {
                job,
                key,
                mode,
                secs,
                v,
            } => {
                let mode = ["debounce", "throttle", "keep-latest", "replace-running"]
                    [usize::from(*mode % 4)];
                write!(f, "enqueue job#{job} key=k{key} {mode} {secs}s v{v}")
            }
            Op::EnqueueSequenced { job, seq, delay } => {
                write!(f, "enqueue job#{job} in sequence s{seq} delay={delay}s")
            }
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

/// The intervals a schedule of the run may have, in seconds.
pub(super) const SCHEDULE_EVERY: [u32; 3] = [5, 20, 3600];

pub(super) fn missed_of(policy: u8) -> queue_core::MissedTicks {
    match policy % 3 {
        0 => queue_core::MissedTicks::Skip,
        1 => queue_core::MissedTicks::RunOnce,
        _ => queue_core::MissedTicks::RunEach { max: 2 },
    }
}

pub(super) fn policy_of(n: u8) -> queue_core::ChildPolicy {
    queue_core::ChildPolicy::ALL[usize::from(n % 3)]
}

/// The groups of the run, by slot; job slots take turns: no group, `a`, `b`.
pub(super) const GROUPS: [&str; 2] = ["a", "b"];

pub(super) fn group_of(job: u8) -> Option<&'static str> {
    match job % 3 {
        0 => None,
        n => Some(GROUPS[usize::from(n - 1)]),
    }
}

/// The cost against rate limits of a job slot's jobs (`NewJob::cost`): slots take turns
/// 1, 2, 1, 3, so with limits of 1 to 3 a cost fits, waits for room, or exceeds a window.
pub(super) fn cost_of(job: u8) -> u32 {
    [1, 2, 1, 3][usize::from(job % 4)]
}

/// A job of a big batch: no slot, no key, its own id (the same for backend and model).
pub(super) fn anonymous(n: u16) -> NewJob {
    NewJob::new("model", &json!({ "big": n }))
        .expect("encodes")
        .job_id(JobId::new())
}

pub(super) fn outcome_name(n: u8) -> &'static str {
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

pub(super) fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![
        Just(Priority::High),
        Just(Priority::Normal),
        Just(Priority::Low)
    ]
}

pub(super) fn op() -> impl Strategy<Value = Op> {
    let key = proptest::option::of(0..KEYS);
    prop_oneof![
        6 => (0..JOBS, key.clone(), priority(), prop_oneof![3 => Just(0u16), 1 => 1u16..90], 0u8..3)
            .prop_map(|(job, key, priority, delay, retries)| Op::Enqueue { job, key, priority, delay, retries }),
        1 => proptest::collection::vec((0..JOBS, key), 1..4).prop_map(Op::EnqueueMany),
        4 => (0..JOBS, 0..KEYS, 0u8..4, prop_oneof![Just(1u16), Just(10), Just(60)], any::<u8>())
            .prop_map(|(job, key, mode, secs, v)| Op::EnqueueKeyed { job, key, mode, secs, v }),
        3 => (0..JOBS, 0u8..2, prop_oneof![3 => Just(0u16), 1 => 1u16..30])
            .prop_map(|(job, seq, delay)| Op::EnqueueSequenced { job, seq, delay }),
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
