//! Bulk actions: retry, cancel or delete every job that matches a filter, in bounded steps that
//! resume from a cursor, so no call stalls the server however many jobs there are, and an
//! operator who stopped half-way (or lost the connection) goes on where it ended.
//!
//! Which jobs a step touches is decided here, by pure functions ([`BulkFilter::matches`],
//! [`BulkAction::applies_to`], the latter from the state machine); the step itself is one
//! listing page and one ordinary retry or cancel per job, through [`JobStore`], so every
//! backend gets it with the guarantees of those calls (case `bulk_actions_resume_and_act_once`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::{DeleteDecision, Event, apply, on_delete};
use crate::{Error, JobId, JobRecord, JobStatus, JobStore, ListQuery, Result};

/// The most jobs one step looks at (a listing page's limit).
pub const MAX_BULK_STEP: usize = 1000;

/// What a bulk action does to each job it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    /// [`JobStore::retry`]: a failed, partial or cancelled job is queued again.
    Retry,
    /// [`JobStore::cancel`]: a queued job is cancelled, a running one asked to stop.
    Cancel,
    /// [`JobStore::delete`]: a finished job's record is deleted (a child its unfinished
    /// parent will read is refused).
    Delete,
}

impl BulkAction {
    /// Whether the action applies to a job in `status`, as the state machine says (a
    /// running job's cancel is a request its holder acknowledges with `Cancel`).
    ///
    /// ```
    /// use queue_core::{BulkAction, JobStatus};
    ///
    /// assert!(BulkAction::Retry.applies_to(JobStatus::Failed));
    /// assert!(!BulkAction::Retry.applies_to(JobStatus::Completed));
    /// assert!(BulkAction::Cancel.applies_to(JobStatus::Processing));
    /// assert!(!BulkAction::Cancel.applies_to(JobStatus::Cancelled));
    /// assert!(BulkAction::Delete.applies_to(JobStatus::Completed));
    /// assert!(!BulkAction::Delete.applies_to(JobStatus::Queued));
    /// ```
    pub fn applies_to(self, status: JobStatus) -> bool {
        let event = match self {
            Self::Retry => Event::ManualRetry,
            Self::Cancel => Event::Cancel,
            Self::Delete => return on_delete(status, None) == DeleteDecision::Delete,
        };
        apply(status, event).is_ok()
    }

    /// The wire name (`retry`, `cancel`, `delete`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Cancel => "cancel",
            Self::Delete => "delete",
        }
    }
}

impl std::str::FromStr for BulkAction {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "retry" => Ok(Self::Retry),
            "cancel" => Ok(Self::Cancel),
            "delete" => Ok(Self::Delete),
            other => Err(Error::invalid(format!(
                "bulk action {other:?} is not one of retry, cancel, delete"
            ))),
        }
    }
}

/// Which jobs a bulk action touches: every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BulkFilter {
    /// Only jobs with this status (the step pages that status's listing).
    #[serde(default)]
    pub status: Option<JobStatus>,
    /// Only jobs of this task.
    #[serde(default)]
    pub task: Option<String>,
    /// Only jobs whose unique key starts with this.
    #[serde(default)]
    pub unique_key_prefix: Option<String>,
    /// Only jobs created at or after this time.
    #[serde(default)]
    pub created_after: Option<DateTime<Utc>>,
    /// Only jobs created before this time.
    #[serde(default)]
    pub created_before: Option<DateTime<Utc>>,
}

impl BulkFilter {
    /// Every job (narrow it with the other methods).
    pub fn new() -> Self {
        Self::default()
    }

    /// Only jobs with this status.
    pub fn status(mut self, status: JobStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Only jobs of this task.
    pub fn task(mut self, task: impl Into<String>) -> Self {
        self.task = Some(task.into());
        self
    }

    /// Only jobs whose unique key starts with `prefix`.
    pub fn unique_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.unique_key_prefix = Some(prefix.into());
        self
    }

    /// Only jobs created in `[after, before)` (either end may be open).
    pub fn created(mut self, after: Option<DateTime<Utc>>, before: Option<DateTime<Utc>>) -> Self {
        self.created_after = after;
        self.created_before = before;
        self
    }

    /// Refuses a filter that cannot match anything by mistake: an empty task or prefix, or
    /// a time range that ends before it starts.
    pub fn check(&self) -> Result<()> {
        if self.task.as_deref() == Some("") {
            return Err(Error::invalid("bulk filter: `task` is empty"));
        }
        if self.unique_key_prefix.as_deref() == Some("") {
            return Err(Error::invalid(
                "bulk filter: `unique_key_prefix` is empty (leave it out to match every key)",
            ));
        }
        if let (Some(a), Some(b)) = (self.created_after, self.created_before)
            && b <= a
        {
            return Err(Error::invalid(format!(
                "bulk filter: `created_before` ({b}) is not after `created_after` ({a})"
            )));
        }
        Ok(())
    }

    /// Whether `record` matches (a job without a unique key never matches a prefix).
    pub fn matches(&self, record: &JobRecord) -> bool {
        self.status.is_none_or(|s| record.status == s)
            && self.task.as_deref().is_none_or(|t| record.task == t)
            && self.unique_key_prefix.as_deref().is_none_or(|p| {
                record
                    .unique_key
                    .as_deref()
                    .is_some_and(|k| k.starts_with(p))
            })
            && self.created_after.is_none_or(|a| record.created_at >= a)
            && self.created_before.is_none_or(|b| record.created_at < b)
    }
}

/// One step of a bulk action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// What to do to each job.
    pub action: BulkAction,
    /// Which jobs.
    #[serde(default)]
    pub filter: BulkFilter,
    /// Where the previous step ended (`None`: from the newest job).
    #[serde(default)]
    pub cursor: Option<String>,
    /// How many jobs this step looks at, 1 to [`MAX_BULK_STEP`].
    #[serde(default = "default_step")]
    pub limit: usize,
    /// Count what would be done, do nothing (the count an operator confirms).
    #[serde(default)]
    pub dry_run: bool,
}

fn default_step() -> usize {
    200
}

impl BulkRequest {
    /// A step of `action` over the jobs `filter` matches, from the newest job, 200 at a time.
    pub fn new(action: BulkAction, filter: BulkFilter) -> Self {
        Self {
            action,
            filter,
            cursor: None,
            limit: default_step(),
            dry_run: false,
        }
    }
}

/// What one step did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkStep {
    /// Jobs looked at.
    pub examined: usize,
    /// Jobs that match the filter and to which the action applies.
    pub matched: usize,
    /// Jobs the action was done to (0 in a dry run).
    pub done: usize,
    /// Jobs it was refused for, and why (another job holds a retried job's unique key; the
    /// job changed between the listing and the action).
    pub refused: Vec<(JobId, String)>,
    /// Where the next step starts; `None` when every job was looked at.
    pub next_cursor: Option<String>,
}

/// Bulk actions on any backend: implemented for every [`JobStore`]; do not implement it
/// yourself.
#[async_trait::async_trait]
pub trait BulkActions: JobStore {
    /// Looks at up to `req.limit` jobs after `req.cursor` (newest first, as [`JobStore::list`]
    /// orders them) and does `req.action` to each that `req.filter` matches and the action
    /// applies to. Call it again with `next_cursor` until that is `None`; a job is never
    /// acted on twice by one pass (an acted job leaves the part still to be looked at, or
    /// no longer matches when it is looked at again).
    async fn bulk(&self, req: &BulkRequest) -> Result<BulkStep> {
        if !(1..=MAX_BULK_STEP).contains(&req.limit) {
            return Err(Error::invalid(format!(
                "bulk step limit {} is not in 1..={MAX_BULK_STEP}",
                req.limit
            )));
        }
        req.filter.check()?;
        let mut query = ListQuery::new().limit(req.limit);
        query.status = req.filter.status;
        query.cursor = req.cursor.clone();
        let page = self.list(&query).await?;
        let mut step = BulkStep {
            examined: page.jobs.len(),
            next_cursor: page.next_cursor,
            ..BulkStep::default()
        };
        for record in page.jobs {
            if !req.filter.matches(&record) || !req.action.applies_to(record.status) {
                continue;
            }
            step.matched += 1;
            if req.dry_run {
                continue;
            }
            let id = record.job_id;
            let acted = match req.action {
                BulkAction::Retry => self.retry(id, None).await.map(drop),
                BulkAction::Cancel => self.cancel(id).await.map(drop),
                BulkAction::Delete => self.delete(id).await.map(drop),
            };
            match acted {
                Ok(()) => step.done += 1,
                Err(
                    e @ (Error::AlreadyExists { .. }
                    | Error::InvalidTransition { .. }
                    | Error::NotDeletable { .. }
                    | Error::NotFound { .. }),
                ) => step.refused.push((id, e.to_string())),
                Err(e) => return Err(e),
            }
        }
        Ok(step)
    }
}

impl<T: JobStore + ?Sized> BulkActions for T {}

/// A page of search results ([`Search::search`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Found {
    /// The matching jobs, in listing order.
    pub jobs: Vec<JobRecord>,
    /// Jobs looked at.
    pub examined: usize,
    /// Where to go on (`None`: every job was looked at).
    pub next_cursor: Option<String>,
}

/// The most jobs one search call looks at.
pub const MAX_SEARCH_SCAN: usize = 5000;

/// Searching with a [`BulkFilter`] on any backend (the console's filters): implemented for
/// every [`JobStore`].
#[async_trait::async_trait]
pub trait Search: JobStore {
    /// Up to `limit` jobs `filter` matches after `cursor`, in listing order (newest first),
    /// looking at no more than [`MAX_SEARCH_SCAN`] jobs per call: a filter the listing
    /// cannot apply itself (task, prefix, time range) pages through it, and answers with a
    /// cursor to go on from when it stopped early. `unique_key` narrows the listing to one
    /// key's history.
    async fn search(
        &self,
        filter: &BulkFilter,
        unique_key: Option<String>,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Found> {
        if !(1..=MAX_BULK_STEP).contains(&limit) {
            return Err(Error::invalid(format!(
                "search limit {limit} is not in 1..={MAX_BULK_STEP}"
            )));
        }
        filter.check()?;
        let mut query = ListQuery::new().limit(limit.max(100));
        query.status = filter.status;
        query.unique_key = unique_key;
        query.cursor = cursor;
        let mut found = Found::default();
        loop {
            let page = self.list(&query).await?;
            for record in page.jobs {
                found.examined += 1;
                let resume = query.cursor_after(&record);
                if filter.matches(&record) {
                    found.jobs.push(record);
                }
                if found.jobs.len() == limit || found.examined >= MAX_SEARCH_SCAN {
                    found.next_cursor = Some(resume);
                    return Ok(found);
                }
            }
            match page.next_cursor {
                Some(c) => query.cursor = Some(c),
                None => return Ok(found),
            }
        }
    }
}

impl<T: JobStore + ?Sized> Search for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_follow_the_state_machine() {
        for s in JobStatus::ALL {
            assert_eq!(
                BulkAction::Retry.applies_to(s),
                matches!(
                    s,
                    JobStatus::Failed | JobStatus::Partial | JobStatus::Cancelled
                ),
                "{s}"
            );
            assert_eq!(BulkAction::Cancel.applies_to(s), s.is_active(), "{s}");
            assert_eq!(BulkAction::Delete.applies_to(s), s.is_terminal(), "{s}");
        }
        assert_eq!("retry".parse::<BulkAction>().unwrap(), BulkAction::Retry);
        assert_eq!("delete".parse::<BulkAction>().unwrap(), BulkAction::Delete);
        let err = "purge".parse::<BulkAction>().unwrap_err().to_string();
        assert!(err.contains("\"purge\""), "{err}");
    }

    #[test]
    fn a_filter_that_cannot_match_is_refused() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert!(BulkFilter::new().task("").check().is_err());
        assert!(BulkFilter::new().unique_key_prefix("").check().is_err());
        let backwards = BulkFilter::new().created(
            Some(t("2026-01-02T00:00:00Z")),
            Some(t("2026-01-01T00:00:00Z")),
        );
        let err = backwards.check().unwrap_err().to_string();
        assert!(err.contains("created_before"), "{err}");
        assert!(BulkFilter::new().task("t").check().is_ok());
    }
}
