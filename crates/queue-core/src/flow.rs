//! Flows and batches: a parent job that runs once its children have finished.
//!
//! A [`Flow`] is a job with children (each a flow itself, to any depth), enqueued in one
//! atomic call ([`crate::JobStore::enqueue_flow`]): every job of it is created, or none.
//! A parent is `queued` from the start but is not claimable while any child is unfinished
//! (its record's [`ChildCounts::waiting`] is above 0; listings find such jobs with
//! [`crate::ListQuery::waiting_on_children`]). Each child ending moves its parent's counts
//! and, by the child's [`ChildPolicy`], either fails the parent at once or counts down;
//! the last child to end releases the parent to the back of its priority. The parent's
//! handler then reads its children's records (results, errors) with
//! `JobContext::children` or [`crate::JobStore::children`].
//!
//! A *batch* is the same thing seen from the other side: the parent is the batch's
//! callback, its children the batch's members ([`Flow::batch`]: every member with
//! [`ChildPolicy::Continue`]), members may be added while the batch is open
//! ([`crate::JobStore::add_children`], also from inside a running member), and the callback
//! runs exactly once, when the last member ends, with the counts per status on its record
//! ([`ChildCounts::batch_status`]).
//!
//! Every decision is a pure function here ([`on_child_ended`], [`on_child_reopened`],
//! [`accepts_children`]); the backends call them and the Redis scripts carry tables
//! generated from them.

use serde::{Deserialize, Serialize};

use crate::{Error, JobStatus, NewJob, Result};

/// The most jobs one flow (or one `add_children` call) may hold, parent included.
pub const MAX_FLOW_JOBS: usize = 10_000;

/// The deepest a flow may nest (a parent with children is depth 2).
pub const MAX_FLOW_DEPTH: usize = 32;

/// The most children one atomic step of a cancel's cascade visits. A cancelled parent's
/// descendants (any number: a batch grows with every `add_children`) are cancelled in
/// steps of this many, each leaving every index consistent; the caller of `cancel` runs
/// the steps until none is left (a cascade a crash interrupted is finished by the next
/// `reap`), and while one is under way no descendant of the cancelled job starts: a claim
/// that meets one cancels it instead ([`is_parent_of`] up to [`MAX_FLOW_DEPTH`] levels).
pub const CANCEL_STEP: usize = 500;

/// What a child's failure (it ends `failed` or `cancelled`) does to its parent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildPolicy {
    /// The parent fails at once, naming the child (it does not run). The default: a merge
    /// job should not run on a missing chapter. Retrying the child re-opens the wait.
    #[default]
    FailParent,
    /// The failure counts as the child being done, and the parent's handler does not see
    /// the child among its children's outcomes (`JobContext::children`).
    Ignore,
    /// The failure counts as the child being done, and the parent's handler sees it (with
    /// its error) among its children's outcomes.
    Continue,
}

impl ChildPolicy {
    /// Every policy.
    pub const ALL: [ChildPolicy; 3] = [Self::FailParent, Self::Ignore, Self::Continue];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailParent => "fail_parent",
            Self::Ignore => "ignore",
            Self::Continue => "continue",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown child policy `{s}` (expected fail_parent, ignore or continue)"
                ))
            })
    }

    /// Whether a parent's handler is shown a child that ended `status` under this policy.
    pub fn shows(self, status: JobStatus) -> bool {
        !(self == Self::Ignore && is_child_failure(status))
    }
}

/// A child that ended this way failed (for its [`ChildPolicy`]): `failed` or `cancelled`.
/// A `partial` child did its work.
pub fn is_child_failure(status: JobStatus) -> bool {
    matches!(status, JobStatus::Failed | JobStatus::Cancelled)
}

/// A parent's counts of its children: how many are unfinished, and how the others ended.
/// Kept by the backends as children end and are retried (no scan).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildCounts {
    /// Children queued or processing: the parent does not start while this is above 0.
    pub waiting: u32,
    /// Children completed.
    pub completed: u32,
    /// Children failed.
    pub failed: u32,
    /// Children partial.
    pub partial: u32,
    /// Children cancelled.
    pub cancelled: u32,
}

impl ChildCounts {
    /// Every child.
    pub fn total(&self) -> u32 {
        self.waiting + self.completed + self.failed + self.partial + self.cancelled
    }

    /// Children that ended.
    pub fn finished(&self) -> u32 {
        self.total() - self.waiting
    }

    /// The parent's progress while it waits: the share of its children that ended, 0 to
    /// 99 (100 is for the parent's own end).
    ///
    /// ```
    /// use queue_core::ChildCounts;
    ///
    /// let counts = ChildCounts { waiting: 3, completed: 1, ..ChildCounts::default() };
    /// assert_eq!(counts.progress(), 25);
    /// assert_eq!(ChildCounts { completed: 4, ..ChildCounts::default() }.progress(), 99);
    /// ```
    pub fn progress(&self) -> u8 {
        if self.total() == 0 {
            return 0;
        }
        let share = u64::from(self.finished()) * 100 / u64::from(self.total());
        share.min(99) as u8
    }

    /// What a batch amounts to once every member ended: `completed` when every member
    /// completed, else `partial` (some failed, were cancelled or partial); `queued` while
    /// members are unfinished.
    pub fn batch_status(&self) -> JobStatus {
        if self.waiting > 0 {
            JobStatus::Queued
        } else if self.failed + self.partial + self.cancelled == 0 {
            JobStatus::Completed
        } else {
            JobStatus::Partial
        }
    }

    /// The count of children that ended `status` (`waiting` for an active status).
    pub fn of(&mut self, status: JobStatus) -> &mut u32 {
        match status {
            JobStatus::Queued | JobStatus::Processing => &mut self.waiting,
            JobStatus::Completed => &mut self.completed,
            JobStatus::Failed => &mut self.failed,
            JobStatus::Partial => &mut self.partial,
            JobStatus::Cancelled => &mut self.cancelled,
        }
    }
}

/// What a child's end does to its parent ([`on_child_ended`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParentAction {
    /// Only the counts move (the parent still waits on others, or is no longer waiting).
    Count,
    /// The last child ended: the parent joins the back of its priority (or waits for its
    /// `run_at`).
    Release,
    /// The parent fails now, naming the child (`Event::ChildFailed`).
    Fail,
}

impl ParentAction {
    /// The wire name (used in the generated Lua).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Release => "release",
            Self::Fail => "fail",
        }
    }
}

/// What a child ending `child` (a terminal status) under `policy` does to a parent that is
/// `parent` and has `waiting_after` unfinished children once this one is counted out.
/// Only a queued parent (one waiting on its children) is affected; a parent that already
/// ended (failed by another child, cancelled) only has its counts moved.
///
/// ```
/// use queue_core::{ChildPolicy, JobStatus};
/// use queue_core::backend::{ParentAction, on_child_ended};
///
/// let failed = JobStatus::Failed;
/// assert_eq!(on_child_ended(ChildPolicy::FailParent, failed, JobStatus::Queued, 2), ParentAction::Fail);
/// assert_eq!(on_child_ended(ChildPolicy::Continue, failed, JobStatus::Queued, 0), ParentAction::Release);
/// assert_eq!(on_child_ended(ChildPolicy::FailParent, failed, JobStatus::Cancelled, 0), ParentAction::Count);
/// ```
pub fn on_child_ended(
    policy: ChildPolicy,
    child: JobStatus,
    parent: JobStatus,
    waiting_after: u32,
) -> ParentAction {
    if parent != JobStatus::Queued {
        ParentAction::Count
    } else if policy == ChildPolicy::FailParent && is_child_failure(child) {
        ParentAction::Fail
    } else if waiting_after == 0 {
        ParentAction::Release
    } else {
        ParentAction::Count
    }
}

/// What a child's manual retry (it is unfinished again) does to its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reopen {
    /// Only the counts move: the parent already ran (or is running), or it was cancelled.
    Count,
    /// The parent waits again (it was queued: ready if every other child had ended, then it
    /// leaves the ready jobs).
    Hold,
    /// The parent had failed without running (a child failed it): it is queued again, with
    /// a fresh retry budget (`Event::ManualRetry`), and waits on the child.
    Requeue,
}

impl Reopen {
    /// The wire name (used in the generated Lua).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Hold => "hold",
            Self::Requeue => "requeue",
        }
    }
}

/// What re-opening a child (a manual retry) does to a parent that is `parent`, and has run
/// (`started`) or not.
///
/// ```
/// use queue_core::JobStatus;
/// use queue_core::backend::{Reopen, on_child_reopened};
///
/// assert_eq!(on_child_reopened(JobStatus::Failed, false), Reopen::Requeue);
/// assert_eq!(on_child_reopened(JobStatus::Failed, true), Reopen::Count);
/// assert_eq!(on_child_reopened(JobStatus::Queued, false), Reopen::Hold);
/// ```
pub fn on_child_reopened(parent: JobStatus, started: bool) -> Reopen {
    match parent {
        JobStatus::Queued => Reopen::Hold,
        JobStatus::Failed if !started => Reopen::Requeue,
        _ => Reopen::Count,
    }
}

/// Whether a parent that is `status` with `counts` may take more children
/// ([`crate::JobStore::add_children`]): only while it is queued (it has not started), so a
/// batch's callback cannot run before a member added to it.
pub fn accepts_children(status: JobStatus) -> bool {
    status == JobStatus::Queued
}

/// Whether the job created at `parent_created` (ms) under the id a child names is that
/// child's parent: a parent is created no later than its children, so a job created later
/// under a reused id (its parent was deleted by retention) is not affected by the child.
pub fn is_parent_of(
    parent_created: crate::backend::Millis,
    child_created: crate::backend::Millis,
) -> bool {
    parent_created <= child_created
}

/// Whether retention keeps a finished child now: while its parent is unfinished (queued or
/// running), whose handler will read the child's result. A kept child's retention starts
/// again from the sweep that kept it.
///
/// ```
/// use queue_core::JobStatus;
/// use queue_core::backend::retention_keeps_child;
///
/// assert!(retention_keeps_child(Some(JobStatus::Queued)));
/// assert!(!retention_keeps_child(Some(JobStatus::Completed)));
/// assert!(!retention_keeps_child(None), "no parent, or it is gone");
/// ```
pub fn retention_keeps_child(parent: Option<JobStatus>) -> bool {
    parent.is_some_and(JobStatus::is_active)
}

/// What deleting a job's record does ([`crate::JobStore::delete`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteDecision {
    /// The record and every index entry naming it go, as retention would remove them.
    Delete,
    /// Refused: the job is queued or running (cancel it first).
    Active,
    /// Refused: a finished child of an unfinished parent, whose handler will read it.
    KeptForParent,
}

impl DeleteDecision {
    /// Why a refused delete was refused (`None` for [`DeleteDecision::Delete`]).
    pub fn refusal(self) -> Option<&'static str> {
        match self {
            Self::Delete => None,
            Self::Active => Some("it is not finished (cancel it first)"),
            Self::KeptForParent => Some("its parent is unfinished and will read its result"),
        }
    }
}

/// Whether a job in `status` whose parent is in `parent` (`None`: no parent, or it is
/// gone) may be deleted now: only a finished record, and not one retention keeps.
///
/// ```
/// use queue_core::JobStatus;
/// use queue_core::backend::{DeleteDecision, on_delete};
///
/// assert_eq!(on_delete(JobStatus::Failed, None), DeleteDecision::Delete);
/// assert_eq!(on_delete(JobStatus::Processing, None), DeleteDecision::Active);
/// assert_eq!(
///     on_delete(JobStatus::Completed, Some(JobStatus::Queued)),
///     DeleteDecision::KeptForParent
/// );
/// ```
pub fn on_delete(status: JobStatus, parent: Option<JobStatus>) -> DeleteDecision {
    if !status.is_terminal() {
        DeleteDecision::Active
    } else if retention_keeps_child(parent) {
        DeleteDecision::KeptForParent
    } else {
        DeleteDecision::Delete
    }
}

/// Whether a queued job waits on its children (not claimable).
pub fn waits_on_children(counts: Option<&ChildCounts>) -> bool {
    counts.is_some_and(|c| c.waiting > 0)
}

/// The message of a parent failed by a child.
///
/// ```
/// use queue_core::{JobId, JobStatus};
/// use queue_core::backend::child_failed_message;
///
/// let id = JobId::new();
/// assert_eq!(child_failed_message(id, JobStatus::Failed), format!("child {id} ended failed"));
/// ```
pub fn child_failed_message(child: crate::JobId, status: JobStatus) -> String {
    let (before, between) = child_failed_template();
    format!("{before}{child}{between}{status}")
}

/// [`child_failed_message`] around the child's id and its status (the Lua builds it so).
pub fn child_failed_template() -> (&'static str, &'static str) {
    ("child ", " ended ")
}

/// A job with its children: enqueue it with [`crate::JobStore::enqueue_flow`].
///
/// ```
/// use queue_core::{ChildPolicy, Flow, NewJob};
///
/// # fn main() -> queue_core::Result<()> {
/// let merge = NewJob::new("merge_book", &"b1")?;
/// let flow = Flow::new(merge)
///     .child(Flow::new(NewJob::new("chapter", &1)?))
///     .child(Flow::new(NewJob::new("chapter", &2)?).on_failure(ChildPolicy::Continue));
/// assert_eq!(flow.len(), 3);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Flow {
    /// The job.
    pub job: NewJob,
    /// What this job's failure does to its parent (ignored for the root).
    pub policy: ChildPolicy,
    /// Its children, which all end before it starts.
    pub children: Vec<Flow>,
}

impl Flow {
    /// A job without children yet.
    pub fn new(job: NewJob) -> Self {
        Self {
            job,
            policy: ChildPolicy::default(),
            children: Vec::new(),
        }
    }

    /// A typed job without children yet, with the failure policy of its type
    /// ([`crate::Job::on_failure`]) and the options it starts with.
    ///
    /// ```
    /// use queue_core::{ChildPolicy, Flow, Job};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Chapter { n: u32 }
    /// impl Job for Chapter {
    ///     const NAME: &'static str = "chapter";
    ///     type Output = u32;
    ///     fn on_failure() -> ChildPolicy { ChildPolicy::Continue }
    /// }
    ///
    /// # fn main() -> queue_core::Result<()> {
    /// let merge = queue_core::NewJob::new("merge_book", &"b1")?;
    /// let flow = Flow::new(merge).child(Flow::of(&Chapter { n: 1 })?);
    /// assert_eq!(flow.children[0].policy, ChildPolicy::Continue);
    /// assert_eq!(flow.children[0].job.task, "chapter");
    /// # Ok(()) }
    /// ```
    pub fn of<J: crate::Job>(job: &J) -> crate::Result<Self> {
        Ok(Self::new(crate::NewJob::typed(job)?).on_failure(J::on_failure()))
    }

    /// A batch: `callback` runs once every one of `members` ended, whatever they became
    /// (each member has [`ChildPolicy::Continue`]); the callback reads the counts per
    /// status from its record ([`crate::JobRecord::children`]).
    pub fn batch(callback: NewJob, members: impl IntoIterator<Item = NewJob>) -> Self {
        Self::new(callback).children(
            members
                .into_iter()
                .map(|m| Flow::new(m).on_failure(ChildPolicy::Continue)),
        )
    }

    /// Adds a child.
    pub fn child(mut self, child: Flow) -> Self {
        self.children.push(child);
        self
    }

    /// Adds children.
    pub fn children(mut self, children: impl IntoIterator<Item = Flow>) -> Self {
        self.children.extend(children);
        self
    }

    /// Sets what this job's failure does to its parent.
    pub fn on_failure(mut self, policy: ChildPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Every job of the flow.
    pub fn len(&self) -> usize {
        1 + self.children.iter().map(Flow::len).sum::<usize>()
    }

    /// Never true (a flow holds at least its root); for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// How deep it nests (1 without children).
    pub fn depth(&self) -> usize {
        1 + self.children.iter().map(Flow::depth).max().unwrap_or(0)
    }

    /// The jobs in creation order (a parent before its children, depth first), each with
    /// its parent's index in that order and its policy. Fails, naming the problem, when the
    /// flow is too large or too deep, or when two of its jobs share an id or a unique key.
    pub fn flatten(self) -> Result<Vec<FlatJob>> {
        flatten_all(vec![self])
    }
}

/// Several flows flattened into one list, as [`Flow::flatten`] does for one (the roots have
/// no parent index): what [`crate::JobStore::add_children`] creates in one step. The
/// bounds and the checks for a shared id or unique key hold across all of them.
///
/// ```
/// use queue_core::{Flow, NewJob};
/// use queue_core::backend::flatten_all;
///
/// # fn main() -> queue_core::Result<()> {
/// let chapter = |n: u32| Flow::new(NewJob::new("chapter", &n).unwrap().unique_key(format!("c{n}")));
/// let flat = flatten_all(vec![chapter(1), chapter(2).child(chapter(3))])?;
/// let parents: Vec<_> = flat.iter().map(|f| f.parent).collect();
/// assert_eq!(parents, [None, None, Some(1)]);
/// assert!(flatten_all(vec![chapter(1), chapter(1)]).is_err(), "one unique key twice");
/// # Ok(()) }
/// ```
pub fn flatten_all(flows: Vec<Flow>) -> Result<Vec<FlatJob>> {
    let len: usize = flows.iter().map(Flow::len).sum();
    if len > MAX_FLOW_JOBS {
        return Err(Error::invalid(format!(
            "a flow holds {len} jobs, above the limit of {MAX_FLOW_JOBS}"
        )));
    }
    let depth = flows.iter().map(Flow::depth).max().unwrap_or(0);
    if depth > MAX_FLOW_DEPTH {
        return Err(Error::invalid(format!(
            "a flow nests {depth} deep, above the limit of {MAX_FLOW_DEPTH}"
        )));
    }
    let mut out = Vec::with_capacity(len);
    let mut stack: Vec<(Flow, Option<usize>)> =
        flows.into_iter().rev().map(|f| (f, None)).collect();
    while let Some((flow, parent)) = stack.pop() {
        let index = out.len();
        out.push(FlatJob {
            job: flow.job,
            parent,
            policy: flow.policy,
            children: flow.children.len(),
        });
        for child in flow.children.into_iter().rev() {
            stack.push((child, Some(index)));
        }
    }
    let mut keys = std::collections::HashSet::new();
    let mut ids = std::collections::HashSet::new();
    for flat in &out {
        let o = &flat.job.options;
        if o.key_mode != crate::KeyMode::Refuse || o.sequence.is_some() {
            return Err(Error::invalid(
                "a flow's jobs take no key mode (debounce, throttle, keep-latest) and no sequence",
            ));
        }
        if let Some(key) = &flat.job.options.unique_key
            && !keys.insert(key.as_str())
        {
            return Err(Error::invalid(format!(
                "two jobs of the flow have the unique key `{key}`"
            )));
        }
        if let Some(id) = flat.job.options.job_id
            && !ids.insert(id)
        {
            return Err(Error::invalid(format!(
                "two jobs of the flow have the id {id}"
            )));
        }
    }
    Ok(out)
}

/// A job and its descendants as they stand ([`crate::JobStoreExt::flow_tree`]): what the
/// CLI, the admin API and the dashboard show.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowTree {
    /// The job.
    pub job: crate::JobRecord,
    /// Its children's trees, oldest first.
    pub children: Vec<FlowTree>,
    /// Descendants left out because the tree reached its size limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub truncated: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl FlowTree {
    /// Every job of the tree, depth first, with its depth (the root is 0).
    pub fn walk(&self) -> Vec<(usize, &crate::JobRecord)> {
        let mut out = Vec::new();
        let mut stack = vec![(0, self)];
        while let Some((depth, tree)) = stack.pop() {
            out.push((depth, &tree.job));
            for child in tree.children.iter().rev() {
                stack.push((depth + 1, child));
            }
        }
        out
    }
}

/// One job of a flattened [`Flow`].
#[derive(Clone, Debug, PartialEq)]
pub struct FlatJob {
    /// The job.
    pub job: NewJob,
    /// Its parent's index in the flattened order (`None`: the root, or a child of the
    /// parent given to `add_children`).
    pub parent: Option<usize>,
    /// What its failure does to its parent.
    pub policy: ChildPolicy,
    /// How many children it has (it waits on them).
    pub children: usize,
}

#[cfg(test)]
mod tests;
