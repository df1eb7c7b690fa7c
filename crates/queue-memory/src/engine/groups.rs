//! Groups: lanes by weighted turn, concurrency slots, pause, weights and their rate limits.

use super::*;

/// One group's ready jobs, running count and settings (`queue_core::backend` group rules).
/// Dropped when it has nothing left to remember.
#[derive(Default)]
pub(super) struct GroupState {
    /// Its ready jobs by (band, seq), with their costs.
    pub(super) ready: BTreeMap<(u8, u64), (JobId, u32)>,
    pub(super) running: u64,
    /// Its jobs not finished (`queue_core::backend::unfinished_change`).
    pub(super) unfinished: u64,
    pub(super) paused: bool,
    pub(super) concurrency: Option<u32>,
    /// Its weight, and its starts in the current turn (`queue_core::backend::weighted_turn`).
    pub(super) weight: Option<u32>,
    pub(super) turn: u32,
    /// Its rate limit, and its starts since (pruned at each start to the window).
    pub(super) rate: Option<RateLimit>,
    pub(super) starts: StartLog,
    /// None of its jobs starts before this time (a handler reported a limit hit).
    pub(super) held_until: Millis,
    /// Its lane's ticket per band, while it has one (see `Tables::lanes`).
    pub(super) lane: [Option<u64>; 3],
}

impl GroupState {
    /// The cost of the job it would start next (its first of the highest priority).
    pub(super) fn next_cost(&self) -> u32 {
        self.ready.first_key_value().map_or(1, |(_, (_, c))| *c)
    }

    pub(super) fn admits(&self, now: Millis) -> bool {
        queue_core::backend::group_admits(self.paused, self.running, self.concurrency)
            && queue_core::backend::group_rate_admits(
                self.rate,
                self.rate.map_or(0, |l| self.starts.used(l, now)),
                self.next_cost(),
                (self.held_until > 0).then_some(self.held_until),
                now,
            )
    }

    /// When a group that does not admit a start now may again by the passing of time (its
    /// rate window or a hold), if that is what holds it back.
    pub(super) fn admits_again_at(&self, now: Millis) -> Option<Millis> {
        if now < self.held_until {
            return Some(self.held_until);
        }
        let limit = self.rate?;
        let cost = self.next_cost();
        if limit.admits(self.starts.used(limit, now), cost) {
            return None;
        }
        self.starts.admits_at(limit, now, cost)
    }

    pub(super) fn has_ready(&self, band: u8) -> bool {
        self.ready
            .range((band, 0)..=(band, u64::MAX))
            .next()
            .is_some()
    }

    pub(super) fn forgettable(&self) -> bool {
        self.ready.is_empty()
            && self.running == 0
            && self.unfinished == 0
            && !self.paused
            && self.concurrency.is_none()
            && self.weight.is_none()
            && self.rate.is_none()
            && self.held_until == 0
            && self.lane.iter().all(Option::is_none)
    }
}

impl Tables {
    /// A running job of `group` stopped: its slot is free again.
    pub(super) fn release_group_slot(&mut self, group: Option<&str>) {
        if let Some(g) = group
            && let Some(state) = self.groups.get_mut(g)
        {
            state.running = state.running.saturating_sub(1);
            self.refresh_group(g);
        }
    }

    /// Gives `group` a lane in each band where it has ready jobs and admits a start (a new
    /// lane gets the current ticket), takes away the others, and forgets the group when
    /// nothing is left to remember.
    pub(super) fn refresh_group(&mut self, group: &str) {
        let Some(state) = self.groups.get_mut(group) else {
            return;
        };
        if state.held_until != 0 && state.held_until <= self.now {
            // A hold that has passed is forgotten.
            state.held_until = 0;
        }
        let admits = state.admits(self.now);
        if !admits
            && !state.ready.is_empty()
            && let Some(at) = state.admits_again_at(self.now)
        {
            self.timed_groups.insert((at, group.to_owned()));
        }
        for band in 0..3u8 {
            let b = usize::from(band);
            let wanted = admits && state.has_ready(band);
            match (state.lane[b], wanted) {
                (None, true) => {
                    self.woken = true;
                    state.lane[b] = Some(self.tick);
                    self.lanes[b].insert((self.tick, group.to_owned()));
                }
                (Some(ticket), false) => {
                    state.lane[b] = None;
                    self.lanes[b].remove(&(ticket, group.to_owned()));
                }
                _ => {}
            }
        }
        if state.forgettable() {
            self.groups.remove(group);
        }
    }

    /// Groups held back only by time whose time has come get their lanes.
    pub(super) fn wake_timed_groups(&mut self) {
        while let Some((at, group)) = self.timed_groups.first().cloned() {
            if at > self.now {
                break;
            }
            self.timed_groups.pop_first();
            self.refresh_group(&group);
        }
    }

    /// Sets or removes a group's rate limit (its start log goes with a removed one).
    pub(crate) fn set_group_rate_limit(&mut self, group: &str, limit: Option<RateLimit>) {
        if limit.is_none() && !self.groups.contains_key(group) {
            return;
        }
        let state = self.groups.entry(group.to_owned()).or_default();
        if limit.is_none() {
            state.starts.clear();
            state.held_until = 0;
        }
        state.rate = limit;
        self.refresh_group(group);
    }

    /// Pauses or resumes a group; resuming also lifts a handler's hold on it.
    pub(crate) fn set_group_paused(&mut self, group: &str, paused: bool) {
        if !paused && !self.groups.contains_key(group) {
            return;
        }
        let state = self.groups.entry(group.to_owned()).or_default();
        state.paused = paused;
        if !paused {
            state.held_until = 0;
        }
        self.refresh_group(group);
    }

    /// Sets or removes a group's weight (a removed one ends its turn).
    pub(crate) fn set_group_weight(&mut self, group: &str, weight: Option<u32>) {
        if weight.is_none() && !self.groups.contains_key(group) {
            return;
        }
        let state = self.groups.entry(group.to_owned()).or_default();
        state.weight = weight;
        if weight.is_none() {
            state.turn = 0;
        }
        self.refresh_group(group);
    }

    /// Sets or removes a group's concurrency limit.
    pub(crate) fn set_group_concurrency(&mut self, group: &str, limit: Option<u32>) {
        if limit.is_none() && !self.groups.contains_key(group) {
            return;
        }
        self.groups.entry(group.to_owned()).or_default().concurrency = limit;
        self.refresh_group(group);
    }

    /// One group's counts and settings.
    pub(crate) fn group(&self, group: &str) -> GroupStats {
        let mut stats = GroupStats::new(group);
        if let Some(state) = self.groups.get(group) {
            stats.ready = state.ready.len() as u64;
            stats.running = state.running;
            stats.unfinished = state.unfinished;
            stats.paused = state.paused;
            stats.concurrency = state.concurrency;
            stats.weight = state.weight;
            stats.rate_limit = state.rate;
            stats.held_until = (state.held_until > self.now).then(|| from_millis(state.held_until));
        }
        stats
    }

    /// The groups with unfinished jobs, the `limit` busiest in full.
    pub(crate) fn groups(&self, limit: usize) -> GroupList {
        let mut busy: Vec<(u64, &str)> = self
            .groups
            .iter()
            .filter(|(_, s)| s.unfinished > 0)
            .map(|(g, s)| (s.unfinished, g.as_str()))
            .collect();
        busy.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let mut list = GroupList::default();
        for (i, (n, g)) in busy.into_iter().enumerate() {
            if i < limit {
                list.groups.push(self.group(g));
            } else {
                list.other_groups += 1;
                list.other_unfinished += n;
            }
        }
        list
    }

    /// Moves `group`'s count of unfinished jobs by `change`.
    pub(super) fn count_unfinished(&mut self, group: &str, change: i64) {
        if change == 0 {
            return;
        }
        if !self.groups.contains_key(group) {
            self.groups.insert(group.to_owned(), GroupState::default());
        }
        let state = self.groups.get_mut(group).expect("inserted above");
        state.unfinished = state.unfinished.saturating_add_signed(change);
        if state.forgettable() {
            self.groups.remove(group);
        }
    }
}
