//! The settings an operator changes on a running queue, as one value: what
//! [`JobStore::control`](crate::JobStore::control) applies. A new knob is a new variant here,
//! not a new method on every backend.

use crate::backend::{check_group_concurrency, check_group_name, check_group_weight};
use crate::{RateLimit, Result, Webhook};

/// One change to a queue's settings. Every change is idempotent and stored with the queue
/// (it survives restarts); [`Control::check`] refuses a bad one naming what was wrong, before
/// anything is stored.
///
/// Not `non_exhaustive` on purpose: a backend matches every variant, so a new knob does not
/// compile until every backend applies it.
#[derive(Clone, Debug, PartialEq)]
pub enum Control {
    /// From now on no job starts (claims answer nothing and a waiting fetch keeps
    /// waiting); queued jobs stay queued, running jobs finish, enqueues, cancels and
    /// retries work as usual, and an expired lease still returns its job to the queue;
    /// `stats().paused` reports it (case `pause_stops_starts_until_resume`).
    Pause,
    /// Resumes a paused queue and lifts a handler's hold (`stats().held_until`): waiting
    /// fetches wake at once, without polling (case `resume_wakes_a_waiting_fetch`).
    Resume,
    /// Sets (or with `None` removes, lifting a handler's hold too) the queue's rate limit:
    /// at most `max` jobs start in any window of `per`, whatever the number of workers
    /// (case `rate_limit_holds_over_many_windows`). A held-back job stays queued without
    /// using an attempt and starts as soon as the window allows: a waiting fetch wakes
    /// then (case `a_rate_limited_fetch_wakes_when_the_window_allows`).
    RateLimit(Option<RateLimit>),
    /// A change to one group's settings.
    Group {
        /// The group.
        group: String,
        /// What changes.
        change: GroupControl,
    },
    /// Creates or replaces a webhook: from then on every job reaching a status it wants
    /// leaves a delivery in the outbox, written by the same atomic step as the transition
    /// (case `finished_jobs_leave_a_delivery_per_matching_webhook`). At most
    /// [`crate::backend::MAX_WEBHOOKS`] per queue.
    PutWebhook(Webhook),
    /// Deletes a webhook, and its deliveries with it, pending and parked (nothing when
    /// there is none).
    DeleteWebhook(String),
}

/// A change to one group's settings ([`Control::Group`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupControl {
    /// None of its jobs starts until resumed; its queued jobs stay queued, its running jobs
    /// finish, every other group runs on (case `pause_group_stops_only_that_group`).
    Pause,
    /// Resumes the group and lifts its hold; waiting fetches wake at once.
    Resume,
    /// Sets (or with `None` removes) its concurrency limit: at most that many of its jobs
    /// run at once across all workers, checked inside the claim (case
    /// `group_concurrency_holds_under_racing_fetches`); a slot is given back on every way
    /// a job stops running (case `group_slot_comes_back_on_every_ending`).
    Concurrency(Option<u32>),
    /// Sets (or with `None` removes) its weight in the fair share, 1 to
    /// [`crate::backend::MAX_GROUP_WEIGHT`]: within a priority its lane is served `weight`
    /// times in a row per turn (case `weighted_groups_share_in_proportion`).
    Weight(Option<u32>),
    /// Sets (or with `None` removes, lifting its hold too) its rate limit: at most `max` of
    /// its jobs start in any window of `per`, across all workers (case
    /// `group_rate_limit_holds_and_wakes`); a held-back job waits without using an attempt
    /// and starts as soon as the window allows.
    RateLimit(Option<RateLimit>),
}

impl Control {
    /// A change to `group`'s settings.
    pub fn group(group: impl Into<String>, change: GroupControl) -> Self {
        Self::Group {
            group: group.into(),
            change,
        }
    }

    /// Refuses a change that names a bad group, weight, limit or webhook, saying which.
    ///
    /// ```
    /// use queue_core::{Control, GroupControl};
    ///
    /// assert!(Control::Pause.check().is_ok());
    /// let heavy = Control::Group { group: "tenant-7".into(), change: GroupControl::Weight(Some(5_000)) };
    /// assert!(heavy.check().unwrap_err().to_string().contains("weight"));
    /// ```
    pub fn check(&self) -> Result<()> {
        match self {
            Self::Pause | Self::Resume | Self::RateLimit(None) => Ok(()),
            Self::RateLimit(Some(limit)) => limit.check(),
            Self::Group { group, change } => {
                check_group_name(group)?;
                match change {
                    GroupControl::Concurrency(limit) => check_group_concurrency(*limit),
                    GroupControl::Weight(weight) => check_group_weight(*weight),
                    GroupControl::RateLimit(Some(limit)) => limit.check(),
                    GroupControl::Pause | GroupControl::Resume | GroupControl::RateLimit(None) => {
                        Ok(())
                    }
                }
            }
            Self::PutWebhook(hook) => hook.check(),
            Self::DeleteWebhook(name) => crate::backend::check_webhook_name(name),
        }
    }

    /// Whether the change may let a waiting fetch start a job (fetchers are woken).
    pub fn may_start_jobs(&self) -> bool {
        match self {
            Self::Pause | Self::PutWebhook(_) | Self::DeleteWebhook(_) => false,
            Self::Resume | Self::RateLimit(_) => true,
            Self::Group { change, .. } => *change != GroupControl::Pause,
        }
    }
}
