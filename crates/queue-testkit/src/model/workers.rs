//! Workers in the model.

use super::*;

impl Model {
    pub(super) fn live_workers(&self, now: Millis) -> impl Iterator<Item = &(WorkerBeat, Millis)> {
        self.workers
            .values()
            .filter(move |(beat, seen)| seen + 3 * duration_ms(beat.interval) >= now)
    }

    /// Workers with the jobs they hold: live ones, and for an hour those that stopped
    /// beating (lost).
    pub fn workers(&self, now: Millis) -> Vec<WorkerInfo> {
        self.workers
            .values()
            .filter(|(beat, seen)| seen + 3 * duration_ms(beat.interval) + 3_600_000 >= now)
            .map(|(beat, seen)| {
                let lost = seen + 3 * duration_ms(beat.interval) < now;
                let mut jobs: Vec<JobId> = self
                    .jobs
                    .iter()
                    .filter(|j| {
                        j.record.status == JobStatus::Processing
                            && j.record.worker_id.as_deref() == Some(beat.worker.as_str())
                    })
                    .map(|j| j.record.job_id)
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
            .collect()
    }

    /// Deregister a worker: forgotten, with its claim history.
    pub fn deregister(&mut self, worker: &str) {
        self.workers.remove(worker);
        self.last_claim.remove(worker);
    }
}
