//! Rate limits: the starts within a window, with their costs.

use super::*;

/// The starts within a rate limit's window, oldest first, with their costs
/// (`queue_core::RateLimit::admits`).
#[derive(Default)]
pub(super) struct StartLog {
    pub(super) starts: VecDeque<(Millis, u32)>,
    /// The sum of the costs in `starts`.
    pub(super) used: u64,
}

impl StartLog {
    /// Forgets the starts at or before `floor` (out of the window).
    pub(super) fn prune(&mut self, floor: Millis) {
        while let Some(&(at, cost)) = self.starts.front() {
            if at > floor {
                break;
            }
            self.starts.pop_front();
            self.used -= u64::from(cost);
        }
    }

    /// The costs counted in the window of `limit` at `now`.
    pub(super) fn used(&self, limit: RateLimit, now: Millis) -> u64 {
        let floor = limit.window_floor(now);
        let gone: u64 = self
            .starts
            .iter()
            .take_while(|(at, _)| *at <= floor)
            .map(|(_, c)| u64::from(*c))
            .sum();
        self.used - gone
    }

    pub(super) fn push(&mut self, now: Millis, cost: u32) {
        self.starts.push_back((now, cost));
        self.used += u64::from(cost);
    }

    /// When a job of `cost` that `limit` does not admit at `now` will be admitted: once
    /// enough of the oldest starts leave the window.
    pub(super) fn admits_at(&self, limit: RateLimit, now: Millis, cost: u32) -> Option<Millis> {
        let floor = limit.window_floor(now);
        let mut used = self.used(limit, now);
        for &(at, c) in self.starts.iter().skip_while(|(at, _)| *at <= floor) {
            used -= u64::from(c);
            if limit.admits(used, cost) {
                return Some(limit.next_start(at));
            }
        }
        None
    }

    pub(super) fn clear(&mut self) {
        self.starts.clear();
        self.used = 0;
    }
}

impl Tables {
    /// Sets or removes the rate limit (the start log and a handler's hold go with a removed
    /// one).
    pub(crate) fn set_rate_limit(&mut self, limit: Option<RateLimit>) {
        if limit.is_none() {
            self.starts.clear();
            self.held_until = 0;
        }
        self.rate = limit;
    }
}
