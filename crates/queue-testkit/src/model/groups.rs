//! Groups in the model: settings, lanes by weighted turn, admission and listings.

use super::*;

impl Model {
    /// Pauses or resumes a group; resuming lifts a handler's hold on it.
    pub fn set_group_paused(&mut self, group: &str, paused: bool, now: Millis) {
        self.now = now;
        let set = self.group_settings.entry(group.to_owned()).or_default();
        set.paused = paused;
        if !paused {
            set.held_until = 0;
        }
        self.refresh_lanes();
    }

    /// Sets or removes a group's concurrency limit.
    pub fn set_group_concurrency(&mut self, group: &str, limit: Option<u32>, now: Millis) {
        self.now = now;
        self.group_settings
            .entry(group.to_owned())
            .or_default()
            .concurrency = limit;
        self.refresh_lanes();
    }

    /// Sets or removes a group's weight (a removed one ends its turn).
    pub fn set_group_weight(&mut self, group: &str, weight: Option<u32>, now: Millis) {
        self.now = now;
        let set = self.group_settings.entry(group.to_owned()).or_default();
        set.weight = weight;
        if weight.is_none() {
            set.turn = 0;
        }
        self.refresh_lanes();
    }

    /// Sets or removes a group's rate limit (a removed one forgets the starts and lifts a
    /// handler's hold).
    pub fn set_group_rate_limit(
        &mut self,
        group: &str,
        limit: Option<queue_core::RateLimit>,
        now: Millis,
    ) {
        self.now = now;
        let set = self.group_settings.entry(group.to_owned()).or_default();
        set.rate = limit;
        if limit.is_none() {
            set.starts.clear();
            set.held_until = 0;
        }
        self.refresh_lanes();
    }

    pub(super) fn ready_in(&self, group: Option<&str>, band: u8) -> impl Iterator<Item = &Job> {
        self.jobs.iter().enumerate().filter_map(move |(i, j)| {
            (j.record.status == JobStatus::Queued
                && j.due.is_none()
                && j.record.group.as_deref() == group
                && j.record.priority.band() == band
                && !self.waits(i)
                && !self.chained(i))
            .then_some(j)
        })
    }

    pub(super) fn running_in(&self, group: &str) -> u64 {
        self.jobs
            .iter()
            .filter(|j| {
                j.record.status == JobStatus::Processing && j.record.group.as_deref() == Some(group)
            })
            .count() as u64
    }

    pub(super) fn admits(&self, group: &str) -> bool {
        let set = self.group_settings.get(group).cloned().unwrap_or_default();
        let now = self.now;
        // Its next job: the first of its highest priority with ready jobs.
        let next_cost = (0..3u8)
            .find_map(|b| self.ready_in(Some(group), b).min_by_key(|j| j.place))
            .map_or(1, cost_of);
        !set.paused
            && set
                .concurrency
                .is_none_or(|max| self.running_in(group) < u64::from(max))
            && now >= set.held_until
            && set.rate.is_none_or(|l| {
                fits(
                    u64::from(l.max),
                    used_since(&set.starts, now - duration_ms(l.per)),
                    next_cost,
                )
            })
    }

    /// Gives each group a lane (at the current ticket) in every band where it has ready
    /// jobs and admits a start, and takes away the others.
    pub(super) fn refresh_lanes(&mut self) {
        let mut groups: Vec<String> = self
            .jobs
            .iter()
            .filter_map(|j| j.record.group.clone())
            .collect();
        groups.extend(self.lanes.keys().map(|(_, g)| g.clone()));
        groups.sort();
        groups.dedup();
        for g in groups {
            for band in 0..3u8 {
                let wanted = self.admits(&g) && self.ready_in(Some(&g), band).next().is_some();
                let key = (band, g.clone());
                if !wanted {
                    self.lanes.remove(&key);
                } else if !self.lanes.contains_key(&key) {
                    let ticket = self.tick[self.group_partition(&g) as usize];
                    self.lanes.insert(key, ticket);
                }
            }
        }
    }

    /// One group's counts and settings.
    pub fn group(&self, group: &str, now: Millis) -> queue_core::GroupStats {
        let set = self.group_settings.get(group).cloned().unwrap_or_default();
        let mut stats = queue_core::GroupStats::new(group);
        stats.ready = (0..3)
            .map(|b| self.ready_in(Some(group), b).count() as u64)
            .sum();
        stats.running = self.running_in(group);
        stats.unfinished = self
            .jobs
            .iter()
            .filter(|j| j.record.group.as_deref() == Some(group) && !j.record.status.is_terminal())
            .count() as u64;
        stats.paused = set.paused;
        stats.concurrency = set.concurrency;
        stats.weight = set.weight;
        stats.rate_limit = set.rate;
        stats.held_until = (set.held_until > now).then(|| from_millis(set.held_until));
        stats
    }

    /// The groups with unfinished jobs, the `limit` busiest in full (most first, ties by
    /// name), the rest summed.
    pub fn groups(&self, limit: usize, now: Millis) -> queue_core::GroupList {
        let mut names: Vec<String> = self
            .jobs
            .iter()
            .filter_map(|j| j.record.group.clone())
            .collect();
        names.sort();
        names.dedup();
        let mut busy: Vec<queue_core::GroupStats> = names
            .iter()
            .map(|g| self.group(g, now))
            .filter(|s| s.unfinished > 0)
            .collect();
        busy.sort_by(|a, b| {
            b.unfinished
                .cmp(&a.unfinished)
                .then_with(|| a.group.cmp(&b.group))
        });
        let mut list = queue_core::GroupList::default();
        for (i, stats) in busy.into_iter().enumerate() {
            if i < limit {
                list.groups.push(stats);
            } else {
                list.other_groups += 1;
                list.other_unfinished += stats.unfinished;
            }
        }
        list
    }
}
