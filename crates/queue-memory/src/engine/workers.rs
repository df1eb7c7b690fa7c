//! Workers: liveness by heartbeat, their listing and deregistration.

use super::*;

impl Tables {
    pub(super) fn live_workers(&self, now: Millis) -> impl Iterator<Item = &(WorkerBeat, Millis)> {
        self.workers
            .values()
            .filter(move |(beat, seen)| *seen + 3 * duration_ms(beat.interval) >= now)
    }

    pub(crate) fn workers(&self, now: Millis) -> Vec<WorkerInfo> {
        let mut out: Vec<WorkerInfo> = self
            .workers
            .values()
            .filter_map(|(beat, seen)| {
                let lost = worker_listing(seen + 3 * duration_ms(beat.interval), now)?;
                Some((beat, seen, lost))
            })
            .map(|(beat, seen, lost)| {
                let mut jobs: Vec<JobId> = self
                    .active
                    .iter()
                    .filter(|(_, id)| {
                        self.jobs[id].record.worker_id.as_deref() == Some(beat.worker.as_str())
                    })
                    .map(|(_, id)| *id)
                    .collect();
                jobs.sort();
                WorkerInfo {
                    worker_id: beat.worker.as_str().to_owned(),
                    host: beat.host.clone(),
                    pid: beat.pid,
                    concurrency: beat.concurrency,
                    started_at: beat.started_at,
                    last_seen: from_millis(*seen),
                    jobs,
                    version: beat.version.clone(),
                    tasks: beat.tasks.clone(),
                    schemas: beat.schemas.clone(),
                    lost,
                }
            })
            .collect();
        out.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        out
    }

    pub(crate) fn deregister(&mut self, worker: &str) {
        self.workers.remove(worker);
        self.last_claim.remove(worker);
    }
}
