//! `JobStore` for a partitioned queue: each job to its partition, each call about a job to
//! the partition that holds it, the rest to every partition and merged.

use async_trait::async_trait;
use futures_util::future::try_join_all;
use queue_core::backend::{route, route_children, route_flow, split_rate};
use queue_core::{
    CancelOutcome, Control, Error, EventStream, Flow, GroupList, GroupStats, JobId, JobRecord,
    JobStore, ListQuery, NewJob, Page, Priority, QueueStats, Result, WorkerInfo,
};

use super::{PartitionedBackend, merge};
use crate::RedisBackend;

/// Gives every job of `flow` without an id one that names `partition`.
fn name_ids(flow: &mut Flow, partition: u32) {
    flow.job
        .options
        .job_id
        .get_or_insert_with(|| JobId::in_partition(partition));
    for child in &mut flow.children {
        name_ids(child, partition);
    }
}

impl PartitionedBackend {
    /// The partition of `group` (where all its jobs live).
    async fn group_partition(&self, group: &str) -> Result<RedisBackend> {
        let (partitions, backends) = self.current().await?;
        let job = NewJob::with_payload("", queue_core::Payload::default()).group(group);
        let at = route(&job, partitions, 0)?.partition();
        Ok(backends[at as usize].clone())
    }

    /// The jobs chosen ids already name in a partition other than the one each routes to
    /// now (`chosen`: id and its partition): enqueuing a chosen id again answers that job,
    /// as on a queue of one partition. One read per other partition for the whole batch.
    async fn chosen_elsewhere(
        backends: &[RedisBackend],
        chosen: &[(JobId, usize)],
    ) -> Result<std::collections::HashMap<JobId, JobRecord>> {
        let mut out = std::collections::HashMap::new();
        if backends.len() < 2 || chosen.is_empty() {
            return Ok(out);
        }
        let reads = backends.iter().enumerate().map(|(i, backend)| {
            let ids: Vec<JobId> = chosen
                .iter()
                .filter(|(_, at)| *at != i)
                .map(|(id, _)| *id)
                .collect();
            async move {
                if ids.is_empty() {
                    Ok(Vec::new())
                } else {
                    backend.found(&ids).await
                }
            }
        });
        for record in try_join_all(reads).await?.into_iter().flatten() {
            out.entry(record.job_id).or_insert(record);
        }
        Ok(out)
    }

    /// Refuses `jobs` joining a flow in partition `p` when a chosen id of one is taken in
    /// another partition (as one partition refuses an id it holds: one job per id across
    /// the queue).
    async fn taken_elsewhere(backends: &[RedisBackend], jobs: &[&NewJob], p: u32) -> Result<()> {
        let chosen: Vec<(JobId, usize)> = jobs
            .iter()
            .filter_map(|j| Some((j.options.job_id?, p as usize)))
            .collect();
        Self::refuse_taken(Self::chosen_elsewhere(backends, &chosen).await?)
    }

    /// The refusal of a flow some of whose chosen ids are taken (`found`), if any is.
    fn refuse_taken(found: std::collections::HashMap<JobId, JobRecord>) -> Result<()> {
        match found.keys().min() {
            Some(id) => Err(Error::invalid(format!(
                "job id {id} of the flow is taken by an existing job"
            ))),
            None => Ok(()),
        }
    }

    /// A change every partition takes (pause, resume, webhooks, the rate limit's shares).
    async fn control_all(&self, change: impl Fn(u32) -> Control) -> Result<()> {
        let backends = self.all().await?;
        try_join_all(
            backends
                .iter()
                .enumerate()
                .map(|(i, b)| b.control(change(i as u32))),
        )
        .await?;
        Ok(())
    }
}

#[async_trait]
impl JobStore for PartitionedBackend {
    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Result<JobRecord>>> {
        let (partitions, backends) = self.current().await?;
        let mut out: Vec<Option<Result<JobRecord>>> = (0..jobs.len()).map(|_| None).collect();
        let mut batches: Vec<(Vec<usize>, Vec<NewJob>)> =
            (0..backends.len()).map(|_| Default::default()).collect();
        let routes: Vec<Result<u32>> = jobs
            .iter()
            .map(|job| route(job, partitions, self.next_turn()).map(|at| at.partition()))
            .collect();
        let chosen: Vec<(JobId, usize)> = jobs
            .iter()
            .zip(&routes)
            .filter_map(|(job, at)| Some((job.options.job_id?, *at.as_ref().ok()? as usize)))
            .collect();
        let elsewhere = Self::chosen_elsewhere(&backends, &chosen).await?;
        // A chosen id given twice in the batch goes where it went first, so that partition
        // answers the job it just created (one job per id across the queue).
        let mut placed: std::collections::HashMap<JobId, u32> = Default::default();
        for ((i, mut job), at) in jobs.into_iter().enumerate().zip(routes) {
            match at {
                Ok(p) => {
                    if let Some(found) = job.options.job_id.and_then(|id| elsewhere.get(&id)) {
                        out[i] = Some(Ok(found.clone()));
                        continue;
                    }
                    let p = match job.options.job_id {
                        Some(id) => *placed.entry(id).or_insert(p),
                        None => p,
                    };
                    job.options
                        .job_id
                        .get_or_insert_with(|| JobId::in_partition(p));
                    batches[p as usize].0.push(i);
                    batches[p as usize].1.push(job);
                }
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        let calls = batches
            .into_iter()
            .zip(&backends)
            .filter(|((at, _), _)| !at.is_empty())
            .map(|((at, jobs), backend)| async move {
                Ok::<_, Error>((at, backend.enqueue_many(jobs).await?))
            });
        for (at, results) in try_join_all(calls).await? {
            for (i, result) in at.into_iter().zip(results) {
                out[i] = Some(result);
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::backend("redis", "no answer"))))
            .collect())
    }

    async fn enqueue_flow(&self, mut flow: Flow) -> Result<JobRecord> {
        let (partitions, backends) = self.current().await?;
        let p = route_flow(&flow, partitions, self.next_turn())?.partition();
        // One read per partition for the whole flow: a root whose id is taken anywhere
        // answers its job (as one partition does, before it looks at the children); a
        // child's taken in another partition refuses the flow.
        let mut jobs = Vec::new();
        for child in &flow.children {
            collect(child, &mut jobs);
        }
        let root = flow.job.options.job_id;
        let chosen: Vec<(JobId, usize)> = root
            .map(|id| (id, usize::MAX))
            .into_iter()
            .chain(
                jobs.iter()
                    .filter_map(|j| Some((j.options.job_id?, p as usize))),
            )
            .collect();
        let mut found = Self::chosen_elsewhere(&backends, &chosen).await?;
        if let Some(record) = root.and_then(|id| found.remove(&id)) {
            return Ok(record);
        }
        Self::refuse_taken(found)?;
        name_ids(&mut flow, p);
        backends[p as usize].enqueue_flow(flow).await
    }

    async fn add_children(&self, parent: JobId, mut children: Vec<Flow>) -> Result<Vec<JobRecord>> {
        let (partitions, _) = self.current().await?;
        let (p, backend) = self
            .on_job(parent, |b| async move { b.get(parent).await.map(|_| b) })
            .await?;
        let mut jobs = Vec::new();
        for child in &children {
            let mut all = Vec::new();
            collect(child, &mut all);
            jobs.extend(all);
        }
        route_children(&jobs, partitions.max(p + 1), p)?;
        Self::taken_elsewhere(&self.all().await?, &jobs, p).await?;
        for child in &mut children {
            name_ids(child, p);
        }
        backend.add_children(parent, children).await
    }

    async fn get(&self, id: JobId) -> Result<JobRecord> {
        Ok(self.on_job(id, |b| async move { b.get(id).await }).await?.1)
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        query.position()?;
        if let Some(parent) = query.parent {
            // A parent's children live in its partition.
            return Ok(self
                .on_job(parent, |b| async move { b.list(query).await })
                .await?
                .1);
        }
        let backends = self.all().await?;
        let pages = try_join_all(backends.iter().map(|b| b.list(query))).await?;
        Ok(merge::pages(query, pages))
    }

    async fn cancel(&self, id: JobId) -> Result<CancelOutcome> {
        Ok(self
            .on_job(id, |b| async move { b.cancel(id).await })
            .await?
            .1)
    }

    async fn retry(&self, id: JobId, priority: Option<Priority>) -> Result<JobRecord> {
        Ok(self
            .on_job(id, |b| async move { b.retry(id, priority).await })
            .await?
            .1)
    }

    async fn delete(&self, id: JobId) -> Result<JobRecord> {
        Ok(self
            .on_job(id, |b| async move { b.delete(id).await })
            .await?
            .1)
    }

    async fn stats(&self) -> Result<QueueStats> {
        let backends = self.all().await?;
        Ok(merge::stats(
            try_join_all(backends.iter().map(|b| b.stats())).await?,
        ))
    }

    async fn series(&self, span: queue_core::SeriesSpan) -> Result<queue_core::Series> {
        let backends = self.all().await?;
        let all = try_join_all(backends.iter().map(|b| b.series(span))).await?;
        merge::series(all).ok_or_else(|| Error::backend("redis", "no partition"))
    }

    async fn group(&self, group: &str) -> Result<GroupStats> {
        self.group_partition(group).await?.group(group).await
    }

    async fn groups(&self, limit: usize) -> Result<GroupList> {
        let backends = self.all().await?;
        let all = try_join_all(backends.iter().map(|b| b.groups(limit))).await?;
        Ok(merge::groups(all, limit))
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let backends = self.all().await?;
        Ok(merge::workers(
            try_join_all(backends.iter().map(|b| b.workers())).await?,
        ))
    }

    async fn control(&self, change: Control) -> Result<()> {
        match change {
            Control::Group { group, change } => {
                let backend = self.group_partition(&group).await?;
                backend.control(Control::Group { group, change }).await
            }
            Control::RateLimit(Some(limit)) => {
                let shares = split_rate(limit, self.all().await?.len() as u32)?;
                self.control_all(|i| Control::RateLimit(Some(shares[i as usize])))
                    .await
            }
            other => self.control_all(|_| other.clone()).await,
        }
    }

    async fn subscribe<'a>(&self, after: Option<&'a str>) -> Result<EventStream> {
        let backends = self.all().await?;
        let resume = merge::parse_resume(after, backends.len());
        let mut streams = Vec::with_capacity(backends.len());
        let mut start = Vec::with_capacity(backends.len());
        for (backend, from) in backends.iter().zip(resume) {
            match from {
                Some(from) => {
                    streams.push(backend.subscribe(Some(&from)).await?);
                    start.push(from);
                }
                None => {
                    streams.push(backend.subscribe(None).await?);
                    start.push(merge::log_end(backend).await?);
                }
            }
        }
        Ok(merge::events(streams, start))
    }

    async fn webhooks(&self) -> Result<Vec<queue_core::Webhook>> {
        self.all().await?[0].webhooks().await
    }

    async fn deliveries(&self, parked: bool, limit: usize) -> Result<Vec<queue_core::Delivery>> {
        let backends = self.all().await?;
        let all = try_join_all(backends.iter().map(|b| b.deliveries(parked, limit))).await?;
        let mut out: Vec<queue_core::Delivery> = all.into_iter().flatten().collect();
        out.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
        out.truncate(limit);
        Ok(out)
    }

    async fn resend_delivery(&self, id: &str) -> Result<bool> {
        for backend in self.all().await? {
            if backend.resend_delivery(id).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn collect<'a>(flow: &'a Flow, out: &mut Vec<&'a NewJob>) {
    out.push(&flow.job);
    for child in &flow.children {
        collect(child, out);
    }
}
