//! A cancel's cascade, in bounded steps (`queue_core::backend::CANCEL_STEP`): a cancelled
//! job's descendants are cancelled a few hundred at a time, each step leaving every index
//! consistent, and no descendant starts meanwhile (a claim that meets one cancels it).

use queue_core::backend::{
    CANCEL_STEP, Event, MAX_FLOW_DEPTH, Millis, is_parent_of, rules::EffectInput,
};
use queue_core::{CancelOutcome, JobId};

use super::{EventSender, Tables};

impl Tables {
    /// A job just cancelled: its unfinished descendants are cancelled by the steps to come.
    pub(super) fn start_cascade(&mut self, id: JobId) {
        if self.kids.get(&id).is_some_and(|k| !k.is_empty()) && self.cascading.insert(id) {
            self.cascade.push_back((id, None));
        }
    }

    /// One step: visits up to [`CANCEL_STEP`] children of the cascading jobs, oldest first,
    /// cancelling the queued ones (their own descendants join the cascade) and asking the
    /// running ones to stop. Returns whether any cascade is left.
    pub(crate) fn cascade_step(&mut self, now: Millis, events: EventSender<'_>) -> bool {
        self.now = now;
        let mut budget = CANCEL_STEP;
        while budget > 0 {
            let Some(&(parent, cursor)) = self.cascade.front() else {
                break;
            };
            let want = budget;
            let next: Vec<(Millis, JobId)> = match self.kids.get(&parent) {
                Some(kids) => match cursor {
                    Some(c) => kids
                        .range((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
                        .take(want)
                        .copied()
                        .collect(),
                    None => kids.iter().take(want).copied().collect(),
                },
                None => Vec::new(),
            };
            budget -= next.len();
            // Fewer than asked for: this parent's children are all visited.
            let done = next.len() < want;
            for &(_, kid) in &next {
                if self
                    .jobs
                    .get(&kid)
                    .is_some_and(|e| e.record.status.is_active())
                    && let Ok(CancelOutcome::Requested) = self.cancel(kid, now, events)
                {
                    self.cancel_requested.push(kid);
                }
            }
            if done {
                self.cascade.pop_front();
                self.cascading.remove(&parent);
            } else if let Some(front) = self.cascade.front_mut() {
                front.1 = next.last().copied();
            }
        }
        !self.cascade.is_empty()
    }

    /// Whether a cascade is under way for an ancestor of `id` (a parent that is still its
    /// parent, up to [`MAX_FLOW_DEPTH`] levels).
    pub(super) fn doomed(&self, id: JobId) -> bool {
        if self.cascading.is_empty() {
            return false;
        }
        let mut child = id;
        for _ in 0..MAX_FLOW_DEPTH {
            let Some(entry) = self.jobs.get(&child) else {
                return false;
            };
            let Some(parent) = entry.record.parent else {
                return false;
            };
            let Some(up) = self.jobs.get(&parent) else {
                return false;
            };
            if !is_parent_of(up.created_ms, entry.created_ms) {
                return false;
            }
            if self.cascading.contains(&parent) {
                return true;
            }
            child = parent;
        }
        false
    }

    /// A job a claim took off the ready jobs whose ancestor is being cancelled: it is
    /// cancelled instead of started (its group's slot, taken by the pop, comes back).
    pub(super) fn cancel_popped(&mut self, id: JobId, now: Millis, events: EventSender<'_>) {
        let group = self.jobs[&id].record.group.clone();
        if group.is_some() {
            self.release_group_slot(group.as_deref());
        }
        let input = EffectInput {
            now,
            ..EffectInput::default()
        };
        if self.transition(id, Event::Cancel, &input, events).is_ok() {
            self.start_cascade(id);
        }
    }
}
