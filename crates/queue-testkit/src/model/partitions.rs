//! Partitions in the model (README "Partitions"): where a job lives, and a claim that
//! follows how the backend under comparison split it among the partitions.
//!
//! Where a job goes is core's routing rule (`queue_core::backend::route`), used here as
//! input validation is: what the model checks is what each partition then does with its
//! jobs. Each partition orders its own starts (priority, lanes of groups, FIFO), and a unique
//! key is unique among the jobs of its partition. A claim may take from the partitions in
//! any order, so the model is told the backend's split ([`Model::follow`]) and checks that
//! each partition's share is what that partition would start, and that a claim that came
//! back short left no partition with a job to start ([`Model::claimable`]).

use queue_core::backend::{Route, route, route_children, route_together, split_rate};

use super::*;

impl Model {
    /// The model of a queue of `partitions` partitions.
    pub fn with_partitions(mut self, partitions: u32) -> Self {
        let n = partitions.max(1);
        self.partitions = n;
        self.tick = vec![0; n as usize];
        self.ungrouped_ticket = vec![[0; 3]; n as usize];
        self
    }

    /// Where a new job goes: where the jobs being created go, else by its route (a job in
    /// a sequence with a group is refused on several partitions).
    pub(super) fn route_of(&self, job: &NewJob) -> Result<u32> {
        match self.placing {
            Some(p) => Ok(p),
            None => Ok(route(job, self.partitions, 0)?.partition()),
        }
    }

    /// Where a flow goes (`target` None) or children of `target` go.
    pub(super) fn route_flow(
        &self,
        jobs: &[queue_core::backend::FlatJob],
        target: Option<u32>,
    ) -> Result<u32> {
        let jobs: Vec<&NewJob> = jobs.iter().map(|f| &f.job).collect();
        Ok(match target {
            None => route_together(&jobs, self.partitions, 0)?,
            Some(p) => route_children(&jobs, self.partitions, p)?,
        }
        .partition())
    }

    /// The partition of `group` (where all its jobs live).
    pub(super) fn group_partition(&self, group: &str) -> u32 {
        let job = NewJob::with_payload("", queue_core::Payload::default()).group(group);
        route(&job, self.partitions, 0).map_or(0, Route::partition)
    }

    /// The partition of job `id`, if the model has it.
    pub fn partition(&self, id: JobId) -> Option<u32> {
        self.find(id).map(|j| j.partition)
    }

    /// The next claim (a fetch, or the claim of a finish) asks the partitions as `plan`
    /// says: (partition, jobs asked, jobs it gave), in order. Each partition asked promotes
    /// its due jobs, then starts jobs in its own start order. Unused on one partition.
    pub fn follow(&mut self, plan: Vec<(u32, usize, usize)>) {
        self.plan = Some(plan);
        self.short.clear();
    }

    /// After a claim: a job that a partition which gave fewer jobs than asked would still
    /// start (there must be none), with its partition.
    pub fn claimable(&self, req: &ClaimRequest) -> Option<(JobId, u32)> {
        if self.paused || self.now < self.held_until {
            return None;
        }
        self.short.iter().find_map(|&p| {
            let mut m = self.clone();
            m.refresh_lanes();
            let (mut used, mut out) = (0, Vec::new());
            m.take(req, Some(p), 1, &mut used, &mut out);
            out.first().map(|l| (l.job.job_id, p))
        })
    }

    /// A reap of up to `limit` that recovered `ids` (in any order: the partitions are
    /// reaped in turn): it recovered the limit or every expired lease, each partition's
    /// earliest expired first. Recovers them, or says what is wrong.
    pub fn reap_these(
        &mut self,
        ids: &[JobId],
        limit: usize,
        now: Millis,
    ) -> std::result::Result<(), String> {
        self.now = now;
        let mut expired: Vec<(u32, Millis, JobId)> = self
            .jobs
            .iter()
            .filter_map(|j| {
                let h = j.lease.as_ref().filter(|h| h.expires <= now)?;
                Some((j.partition, h.expires, j.record.job_id))
            })
            .collect();
        expired.sort();
        if ids.len() != limit.min(expired.len()) {
            return Err(format!(
                "reaped {} of {} expired leases, limit {limit}",
                ids.len(),
                expired.len()
            ));
        }
        for p in 0..self.partitions {
            let mine: Vec<JobId> = expired
                .iter()
                .filter(|(at, _, _)| *at == p)
                .map(|(_, _, id)| *id)
                .collect();
            let mut got: Vec<JobId> = ids.iter().copied().filter(|id| mine.contains(id)).collect();
            let mut first: Vec<JobId> = mine[..got.len()].to_vec();
            got.sort();
            first.sort();
            if got != first {
                return Err(format!(
                    "partition {p} reaped {got:?}, not its earliest expired {first:?}"
                ));
            }
        }
        if let Some(id) = ids
            .iter()
            .find(|id| !expired.iter().any(|(_, _, e)| e == *id))
        {
            return Err(format!("reaped {id}, whose lease has not expired"));
        }
        self.recover(ids, now);
        Ok(())
    }

    /// Checks a queue's rate limit against the partitions: refused below one start per
    /// partition per window. The model does not split a limit among partitions, so a run
    /// on several partitions must not set one it accepts.
    pub(super) fn check_rate(&self, limit: Option<queue_core::RateLimit>) -> Result<()> {
        if let Some(limit) = limit.filter(|_| self.partitions > 1) {
            split_rate(limit, self.partitions)?;
            panic!("the model does not split a queue's rate limit among partitions");
        }
        Ok(())
    }
}
