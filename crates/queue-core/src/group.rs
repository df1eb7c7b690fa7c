//! Groups: fair share between the producers of one queue, and limits per group.
//!
//! A job may carry a group key ([`crate::NewJob::group`]; for books the publisher). Within
//! one priority, the ready jobs form *lanes*: one per group with ready jobs, plus one for
//! the jobs without a group. The queue keeps a ticket counter that every start raises by
//! one. Each start serves the lane with the lowest ticket and stamps that lane with the new
//! ticket; a group's lane that appears (its first ready job of that priority, or the group
//! admits starts again) gets the current ticket; the lane of jobs without a group keeps
//! the ticket of its last start (0 at first). On a tie the lane without a group goes
//! first, then groups by name ([`ungrouped_goes_first`]). The lane's first job starts
//! (FIFO; a job returned by an expired lease keeps its place as before). So the lanes take
//! turns: a group with 10,000 queued jobs and a group with 3 both progress, and a queue
//! without groups runs exactly as before, strict priority then FIFO. Priorities stay
//! strict: every lane of a higher priority is served before any lane of a lower one.
//!
//! A group may have a weight `w` ([`crate::JobStore::set_group_weight`]; default 1): its
//! lane then keeps its ticket for `w` starts in a row before it takes a new one
//! ([`weighted_turn`]), so it gets `w` starts for every one of a group of weight 1
//! (weighted round-robin). The count of starts within the turn is kept per group.
//!
//! A group that is paused, or that runs as many jobs as its concurrency limit allows,
//! has no lane until that changes ([`group_admits`]); its jobs stay queued. The choice
//! costs the same with 1 or 10,000 groups: lanes are kept ordered by ticket, nothing is
//! scanned.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The longest group key, in bytes.
pub const MAX_GROUP_BYTES: usize = 128;

/// Checks a group key: 1 to 128 bytes, no control characters and no `|` (the Redis
/// backend keeps the group in its lease entries, which `|` separates).
///
/// ```
/// use queue_core::backend::check_group_name;
///
/// assert!(check_group_name("publisher-42").is_ok());
/// assert!(check_group_name("").is_err());
/// assert!(check_group_name("a|b").is_err());
/// ```
pub fn check_group_name(group: &str) -> Result<()> {
    if group.is_empty() {
        return Err(Error::invalid("group is empty"));
    }
    if group.len() > MAX_GROUP_BYTES {
        return Err(Error::invalid(format!(
            "group is longer than {MAX_GROUP_BYTES} bytes"
        )));
    }
    if group.chars().any(|c| c.is_control() || c == '|') {
        return Err(Error::invalid(format!(
            "group `{}` holds a control character or `|`",
            group.escape_debug()
        )));
    }
    Ok(())
}

/// Checks a group concurrency limit: 1 to 1,000,000 (`None` removes the limit).
pub fn check_group_concurrency(limit: Option<u32>) -> Result<()> {
    match limit {
        Some(n) if !(1..=1_000_000).contains(&n) => Err(Error::invalid(format!(
            "group concurrency: {n} is not between 1 and 1000000"
        ))),
        _ => Ok(()),
    }
}

/// The heaviest weight a group may have.
pub const MAX_GROUP_WEIGHT: u32 = 1_000;

/// Checks a group's weight: 1 to [`MAX_GROUP_WEIGHT`] (`None` removes it: weight 1).
pub fn check_group_weight(weight: Option<u32>) -> Result<()> {
    match weight {
        Some(w) if !(1..=MAX_GROUP_WEIGHT).contains(&w) => Err(Error::invalid(format!(
            "group weight: {w} is not between 1 and {MAX_GROUP_WEIGHT}"
        ))),
        _ => Ok(()),
    }
}

/// A start of a group with `turn` starts already in its current turn and weight `weight`:
/// the group's count after this start, and whether its lane takes a new ticket now (the
/// turn is over: `weight` starts in a row) or keeps its ticket (it is served again next).
///
/// ```
/// use queue_core::backend::weighted_turn;
///
/// assert_eq!(weighted_turn(0, None), (0, true)); // weight 1: a new ticket every start
/// assert_eq!(weighted_turn(0, Some(3)), (1, false));
/// assert_eq!(weighted_turn(1, Some(3)), (2, false));
/// assert_eq!(weighted_turn(2, Some(3)), (0, true));
/// assert_eq!(weighted_turn(5, Some(2)), (0, true)); // a weight lowered mid-turn
/// ```
pub fn weighted_turn(turn: u32, weight: Option<u32>) -> (u32, bool) {
    let next = turn.saturating_add(1);
    if next >= weight.unwrap_or(1) {
        (0, true)
    } else {
        (next, false)
    }
}

/// True when a group may start one more job: it is not paused and runs fewer jobs than
/// its concurrency limit. A limit lowered below what runs stops nothing: running jobs
/// finish, and starts resume once fewer than the limit run.
///
/// ```
/// use queue_core::backend::group_admits;
///
/// assert!(group_admits(false, 1, Some(2)));
/// assert!(!group_admits(false, 2, Some(2)));
/// assert!(!group_admits(true, 0, None));
/// ```
pub fn group_admits(paused: bool, running: u64, concurrency: Option<u32>) -> bool {
    !paused && concurrency.is_none_or(|max| running < u64::from(max))
}

/// Whether the lane of jobs without a group (last started at ticket `ungrouped`) serves
/// the next start rather than the group lane with the lowest ticket (`group`): the lower
/// ticket goes first, and on a tie the jobs without a group.
pub fn ungrouped_goes_first(ungrouped: u64, group: u64) -> bool {
    ungrouped <= group
}

/// True when a group under `limit` may start its next job (of `next_cost`: its first of
/// the highest priority) at `now`, with `used` counted in the window ending now (the
/// costs of its starts after `limit.window_floor(now)`; see [`crate::RateLimit::admits`]),
/// and it is not held by a handler's rate-limit report until `held_until`. A group whose
/// next job does not fit waits as a whole (a cheaper job behind it does not overtake it).
///
/// ```
/// use std::time::Duration;
/// use queue_core::{RateLimit, backend::group_rate_admits};
///
/// let limit = Some(RateLimit::new(10, Duration::from_secs(60)).unwrap());
/// assert!(group_rate_admits(limit, 7, 3, None, 0));
/// assert!(!group_rate_admits(limit, 8, 3, None, 0));
/// assert!(!group_rate_admits(None, 0, 1, Some(5), 4));
/// ```
pub fn group_rate_admits(
    limit: Option<crate::RateLimit>,
    used: u64,
    next_cost: u32,
    held_until: Option<crate::backend::Millis>,
    now: crate::backend::Millis,
) -> bool {
    held_until.is_none_or(|until| now >= until) && limit.is_none_or(|l| l.admits(used, next_cost))
}

/// How a transition from `from` (`None`: the job is new) to `to` moves its group's count
/// of unfinished jobs (queued, delayed or running): `+1` into it, `-1` out of it, `0`
/// within. The backends keep that count per group so that `JobStore::groups` lists the
/// busiest groups without scanning jobs.
///
/// ```
/// use queue_core::JobStatus;
/// use queue_core::backend::unfinished_change;
///
/// assert_eq!(unfinished_change(None, JobStatus::Queued), 1);
/// assert_eq!(unfinished_change(Some(JobStatus::Queued), JobStatus::Processing), 0);
/// assert_eq!(unfinished_change(Some(JobStatus::Processing), JobStatus::Failed), -1);
/// assert_eq!(unfinished_change(Some(JobStatus::Failed), JobStatus::Queued), 1);
/// ```
pub fn unfinished_change(from: Option<crate::JobStatus>, to: crate::JobStatus) -> i64 {
    let counts = |s: crate::JobStatus| i64::from(!s.is_terminal());
    counts(to) - from.map_or(0, counts)
}

/// The most groups `JobStore::groups` lists in one answer.
pub const MAX_GROUPS_LISTED: usize = 1_000;

/// Checks how many groups a listing may show in full: at most [`MAX_GROUPS_LISTED`].
pub fn check_groups_limit(limit: usize) -> Result<()> {
    if limit > MAX_GROUPS_LISTED {
        return Err(Error::invalid(format!(
            "groups limit: {limit} is above {MAX_GROUPS_LISTED}"
        )));
    }
    Ok(())
}

/// The groups with unfinished jobs, busiest first (`JobStore::groups`): the first `limit`
/// in full, the rest summed, so a metric per group stays bounded (top N plus "other").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GroupList {
    /// The groups with the most unfinished jobs (ties by name), at most the limit asked.
    pub groups: Vec<GroupStats>,
    /// How many other groups have unfinished jobs.
    pub other_groups: u64,
    /// Their unfinished jobs, together.
    pub other_unfinished: u64,
}

/// One group's state, as operators see it (`JobStore::group`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GroupStats {
    /// The group key.
    pub group: String,
    /// Its jobs ready to run now (every priority; delayed ones not counted).
    pub ready: u64,
    /// Its jobs running now.
    pub running: u64,
    /// Its jobs not finished: ready, delayed (or waiting for a retry) and running.
    #[serde(default)]
    pub unfinished: u64,
    /// The group is paused: none of its jobs starts until it is resumed.
    pub paused: bool,
    /// At most this many of its jobs run at once, across all workers.
    pub concurrency: Option<u32>,
    /// Its weight in the fair share (`None`: 1): this many starts in a row per turn.
    #[serde(default)]
    pub weight: Option<u32>,
    /// At most this many of its jobs start per window, across all workers.
    #[serde(default)]
    pub rate_limit: Option<crate::RateLimit>,
    /// None of its jobs starts before this time: one of its handlers reported a limit hit
    /// (`JobError::rate_limited`). Only while it is in the future.
    #[serde(default)]
    pub held_until: Option<chrono::DateTime<chrono::Utc>>,
}

impl GroupStats {
    /// A group with nothing ready or running and no settings.
    pub fn new(group: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            ..Self::default()
        }
    }
}
