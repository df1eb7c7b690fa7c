//! `JobStore` for Redis: enqueue, reads, listings, cancel, retry, counts, events.

use std::collections::HashMap;

use async_trait::async_trait;
use queue_core::backend::{
    Millis, check_group_name, check_groups_limit, encode_cursor, flatten_all, from_millis,
};
use queue_core::{
    CancelOutcome, Control, Error, EventStream, Flow, GroupControl, GroupList, GroupStats, JobId,
    JobRecord, JobStatus, JobStore, LifetimeTotals, ListQuery, NewJob, Page, Priority, QueueStats,
    RateLimit, Result, WorkerInfo,
};
use redis::Value;

use crate::{
    RedisBackend,
    codec::{self, Fields},
    keys::Static,
    records::{Read, invalid},
    wire::{array, int, text, to_fields, to_pairs},
};

#[async_trait]
impl JobStore for RedisBackend {
    async fn enqueue_many(&self, mut jobs: Vec<NewJob>) -> Result<Vec<Result<JobRecord>>> {
        self.check_whole().await?;
        // Replace-running cancels the key's holder: a parent waiting on its children is
        // cancelled at once, and its descendants by the cascade, finished here.
        let supersedes = jobs
            .iter()
            .any(|j| j.options.key_mode == queue_core::KeyMode::ReplaceRunning);
        let out = if jobs.len() == 1 {
            let job = jobs.pop().expect("one job");
            vec![self.enqueue_coalesced(job).await]
        } else {
            self.enqueue_batches(jobs).await
        };
        if supersedes {
            self.finish_cascades().await?;
        }
        Ok(out)
    }

    async fn enqueue_flow(&self, flow: Flow) -> Result<JobRecord> {
        self.check_whole().await?;
        let jobs = flow.flatten()?;
        let mut top = self.enqueue_flat(jobs, None).await?;
        top.pop()
            .ok_or_else(|| Error::backend("redis", "a flow answered no root"))
    }

    async fn add_children(&self, parent: JobId, children: Vec<Flow>) -> Result<Vec<JobRecord>> {
        self.check_whole().await?;
        let jobs = flatten_all(children)?;
        self.enqueue_flat(jobs, Some(parent)).await
    }

    async fn get(&self, id: JobId) -> Result<JobRecord> {
        match self.records(&[id.to_string()]).await?.pop() {
            Some(Read::Found(fields, lease)) => {
                codec::decode_leased(Some(id), &fields, lease.as_ref())
            }
            Some(Read::WrongType) => Err(Error::corrupt(format!(
                "job record {id} is not stored as a hash"
            ))),
            Some(Read::Missing) | None => Err(Error::NotFound { id }),
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        let mut position = query.position()?;
        if let Some(parent) = query.parent {
            return self.children_page(parent, position, query.limit).await;
        }
        let k = &self.inner.keys;
        if query.status == Some(JobStatus::Processing) && query.unique_key.is_none() {
            return self.list_processing(query.limit, position).await;
        }
        // `st:queued` holds every job not finished (running ones too: the status filter
        // below tells them apart); without a filter, every job is the status indexes merged.
        let indexes: Vec<String> = match (&query.unique_key, query.status) {
            _ if query.waiting_on_children => vec![k.of(Static::Waiting)],
            (Some(key), _) => vec![k.unique(key)],
            (None, Some(status)) => vec![k.status(status)],
            (None, None) => JobStatus::ALL
                .iter()
                .filter(|s| **s != JobStatus::Processing)
                .map(|s| k.status(*s))
                .collect(),
        };
        let want = query.limit + 1;
        // Each record with its score in the index it came from (what the cursor holds).
        let mut jobs: Vec<(Millis, JobRecord)> = Vec::with_capacity(want);
        while jobs.len() < want {
            let asked = (want - jobs.len()).max(16);
            let batch = self.index_page(&indexes, position, asked).await?;
            let exhausted = batch.len() < asked;
            let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
            for ((id, score), read) in batch.iter().zip(self.records(&ids).await?) {
                if let Ok(pid) = id.parse::<JobId>() {
                    position = Some((*score, pid));
                }
                if let Some(r) = Self::decoded(id, read).filter(|r| {
                    query.status.is_none_or(|s| s == r.status)
                        && query
                            .unique_key
                            .as_ref()
                            .is_none_or(|k| r.unique_key.as_ref() == Some(k))
                        && (!query.waiting_on_children || r.waits_on_children())
                }) {
                    jobs.push((*score, r));
                }
                if jobs.len() == want {
                    break;
                }
            }
            if exhausted {
                break;
            }
        }
        let next_cursor = (jobs.len() > query.limit).then(|| {
            jobs.truncate(query.limit);
            let (at, last) = jobs.last().expect("limit is at least 1");
            encode_cursor(*at, last.job_id)
        });
        Ok(Page {
            jobs: jobs.into_iter().map(|(_, r)| r).collect(),
            next_cursor,
        })
    }

    async fn cancel(&self, id: JobId) -> Result<CancelOutcome> {
        let mut reply = array(
            self.run(
                &self.inner.scripts.cancel,
                &[self.inner.keys.job(id)],
                vec![id.to_string()],
            )
            .await?,
        );
        // The cascade to its descendants, one bounded step per call
        // (`queue_core::backend::CANCEL_STEP`); a caller that stops half way leaves the
        // rest to the next `reap`, and no descendant starts meanwhile.
        let more = if reply.is_empty() {
            false
        } else {
            int(&reply.remove(0)) == Some(1)
        };
        if more {
            self.finish_cascades().await?;
        }
        match reply.first().and_then(text).as_deref() {
            Some("cancelled") => Ok(CancelOutcome::Cancelled),
            Some("requested") => Ok(CancelOutcome::Requested),
            Some("missing") => Err(Error::NotFound { id }),
            Some("invalid") => Err(invalid(
                id,
                reply.get(1),
                queue_core::backend::Event::Cancel,
            )),
            other => Err(Error::backend(
                "redis",
                format!("unexpected cancel reply {other:?}"),
            )),
        }
    }

    async fn retry(&self, id: JobId, priority: Option<Priority>) -> Result<JobRecord> {
        let band = priority.map(|p| p.band().to_string()).unwrap_or_default();
        let reply = array(
            self.run(
                &self.inner.scripts.retry,
                &[self.inner.keys.job(id)],
                vec![id.to_string(), band],
            )
            .await?,
        );
        match reply.first().and_then(text).as_deref() {
            Some("ok") => codec::decode_leased(
                Some(id),
                &to_fields(reply.into_iter().nth(1).unwrap_or(Value::Nil)),
                None,
            ),
            Some("missing") => Err(Error::NotFound { id }),
            Some("invalid") => Err(invalid(
                id,
                reply.get(1),
                queue_core::backend::Event::ManualRetry,
            )),
            Some("dup") => {
                let holder = reply.get(1).and_then(text).unwrap_or_default().parse()?;
                let key = self.get(id).await?.unique_key.unwrap_or_default();
                Err(Error::AlreadyExists {
                    unique_key: key,
                    job_id: holder,
                })
            }
            other => Err(Error::backend(
                "redis",
                format!("unexpected retry reply {other:?}"),
            )),
        }
    }

    async fn delete(&self, id: JobId) -> Result<JobRecord> {
        // The script must declare the unique key's history key: read the key, and read it
        // again when it changed in between (the id was reused).
        for _ in 0..3 {
            let mut conn = self.conn();
            let uk: Option<String> = redis::cmd("HGET")
                .arg(self.inner.keys.job(id))
                .arg("unique_key")
                .query_async(&mut conn)
                .await
                .map_err(|e| self.err(e))?;
            let uk = uk.unwrap_or_default();
            let mut keys = vec![self.inner.keys.job(id)];
            if !uk.is_empty() {
                keys.push(self.inner.keys.unique(&uk));
            }
            let reply = array(
                self.run(&self.inner.scripts.delete, &keys, vec![id.to_string(), uk])
                    .await?,
            );
            let refused = |decision: queue_core::backend::DeleteDecision| Error::NotDeletable {
                id,
                reason: decision.refusal().unwrap_or_default().into(),
            };
            return match reply.first().and_then(text).as_deref() {
                Some("ok") => codec::decode_leased(
                    Some(id),
                    &to_fields(reply.into_iter().nth(1).unwrap_or(Value::Nil)),
                    None,
                ),
                Some("missing") => Err(Error::NotFound { id }),
                Some("active") => Err(refused(queue_core::backend::DeleteDecision::Active)),
                Some("kept") => Err(refused(queue_core::backend::DeleteDecision::KeptForParent)),
                Some("changed") => continue,
                other => Err(Error::backend(
                    "redis",
                    format!("unexpected delete reply {other:?}"),
                )),
            };
        }
        Err(Error::backend(
            "redis",
            format!("job {id}: its unique key kept changing while it was deleted"),
        ))
    }

    async fn series(&self, span: queue_core::SeriesSpan) -> Result<queue_core::Series> {
        let now = self.now_ms();
        let last = span.bucket(now);
        let first = last - span.points() as i64 + 1;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for i in first..=last {
            pipe.cmd("HGETALL").arg(self.inner.keys.series(span, i));
        }
        let mut conn = self.conn();
        let replies: Vec<Value> = pipe.query_async(&mut conn).await.map_err(|e| self.err(e))?;
        // A bucket of the wrong type reads as empty (a chart is never worth an error).
        let buckets: Vec<_> = replies.into_iter().map(to_fields).collect();
        Ok(queue_core::Series::read(span, now, |i| {
            buckets
                .get((i - first) as usize)
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.as_str(), v.parse().ok()?)))
        }))
    }

    async fn stats(&self) -> Result<QueueStats> {
        let reply = array(self.run(&self.inner.scripts.stats, &[], Vec::new()).await?);
        let n = |i: usize| reply.get(i).and_then(int).unwrap_or(0).max(0) as u64;
        let totals: HashMap<String, String> =
            reply.get(13).cloned().map(to_fields).unwrap_or_default();
        let t = |name: &str| {
            totals
                .get(name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(QueueStats {
            queued: n(1),
            processing: n(2),
            completed: n(3),
            failed: n(4),
            partial: n(5),
            cancelled: n(6),
            total: n(7),
            scheduled: n(8),
            waiting_on_children: n(18),
            depth: Priority::ALL
                .into_iter()
                .map(|p| (p, n(9 + usize::from(p.band()))))
                .collect(),
            active_workers: n(12),
            paused: n(14) == 1,
            rate_limit: match (
                reply.get(15).and_then(text).and_then(|v| v.parse().ok()),
                reply.get(16).and_then(text).and_then(|v| v.parse().ok()),
            ) {
                (Some(max), Some(per_ms)) => Some(RateLimit {
                    max,
                    per: std::time::Duration::from_millis(per_ms),
                }),
                _ => None,
            },
            held_until: reply
                .get(17)
                .and_then(int)
                .filter(|until| *until > n(0) as i64)
                .map(queue_core::backend::from_millis),
            totals: LifetimeTotals {
                enqueued: t("enqueued"),
                completed: t("completed"),
                failed: t("failed"),
                partial: t("partial"),
                cancelled: t("cancelled"),
                retried: t("retried"),
                recovered: t("recovered"),
            },
        })
    }

    async fn control(&self, change: Control) -> Result<()> {
        change.check()?;
        let scripts = &self.inner.scripts;
        let limit_args = |limit: Option<RateLimit>| match limit {
            Some(limit) => (limit.max.to_string(), limit.per_ms().to_string()),
            None => (String::new(), String::new()),
        };
        let setting = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_default();
        match change {
            Control::Pause => self.run(&scripts.pause, &[], vec!["1".into()]).await?,
            Control::Resume => self.run(&scripts.pause, &[], vec!["0".into()]).await?,
            Control::RateLimit(limit) => {
                let (max, per) = limit_args(limit);
                self.run(&scripts.limit, &[], vec![max, per]).await?
            }
            Control::Group { group, change } => {
                let args = match change {
                    GroupControl::Pause => vec!["pause".into(), String::new()],
                    GroupControl::Resume => vec!["resume".into(), String::new()],
                    GroupControl::Weight(weight) => vec!["weight".into(), setting(weight)],
                    GroupControl::Concurrency(limit) => vec!["limit".into(), setting(limit)],
                    GroupControl::RateLimit(limit) => {
                        let (max, per) = limit_args(limit);
                        vec!["rate".into(), max, per]
                    }
                };
                let mut argv = vec![group];
                argv.extend(args);
                self.run(&scripts.group, &[], argv).await?
            }
            Control::PutWebhook(hook) => return self.put_webhook_now(&hook).await,
            Control::DeleteWebhook(name) => return self.delete_webhook_now(&name).await,
        };
        Ok(())
    }

    async fn group(&self, group: &str) -> Result<GroupStats> {
        check_group_name(group)?;
        let reply = array(
            self.run(&self.inner.scripts.group_read, &[], vec![group.to_owned()])
                .await?,
        );
        Ok(group_stats(group, &reply))
    }

    async fn groups(&self, limit: usize) -> Result<GroupList> {
        check_groups_limit(limit)?;
        let reply = array(
            self.run(&self.inner.scripts.groups, &[], vec![limit.to_string()])
                .await?,
        );
        let n = |i: usize| reply.get(i).and_then(int).unwrap_or(0).max(0) as u64;
        let (total, count) = (n(0), n(1));
        let mut list = GroupList::default();
        for entry in reply.into_iter().skip(2).map(array) {
            let mut entry = entry.into_iter();
            let (Some(group), Some(stats)) = (entry.next(), entry.next()) else {
                continue;
            };
            if let Some(group) = text(&group) {
                list.groups.push(group_stats(&group, &array(stats)));
            }
        }
        let shown: u64 = list.groups.iter().map(|g| g.unfinished).sum();
        list.other_groups = count.saturating_sub(list.groups.len() as u64);
        list.other_unfinished = total.saturating_sub(shown);
        Ok(list)
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let mut reply =
            array(self.run(&self.inner.scripts.live, &[], Vec::new()).await?).into_iter();
        let now = reply.next().as_ref().and_then(int).unwrap_or(0);
        // (id, lost) per listed worker, in the script's order (queue_core::backend::
        // worker_listing of its liveness deadline), with the jobs it holds.
        let listed: Vec<(String, Option<bool>)> = to_pairs(reply.next().unwrap_or(Value::Nil))
            .into_iter()
            .map(|(id, until)| {
                let lost = until
                    .parse()
                    .ok()
                    .and_then(|until| queue_core::backend::worker_listing(until, now));
                (id, lost)
            })
            .collect();
        let jobs_of: Vec<Vec<JobId>> = reply
            .next()
            .map(array)
            .unwrap_or_default()
            .into_iter()
            .map(|ids| {
                array(ids)
                    .iter()
                    .filter_map(|v| text(v)?.parse().ok())
                    .collect()
            })
            .collect();
        let mut held: HashMap<String, Vec<JobId>> = HashMap::new();
        let mut lost_of: HashMap<String, bool> = HashMap::new();
        for ((id, lost), jobs) in listed.into_iter().zip(jobs_of) {
            if let Some(lost) = lost {
                lost_of.insert(id.clone(), lost);
                held.insert(id, jobs);
            }
        }
        let ids: Vec<String> = lost_of.keys().cloned().collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(self.inner.keys.worker(id));
        }
        let mut conn = self.conn();
        let infos: Vec<Fields> = pipe.query_async(&mut conn).await.map_err(|e| self.err(e))?;
        let mut out: Vec<WorkerInfo> = ids
            .into_iter()
            .zip(infos)
            .filter(|(_, f)| !f.is_empty())
            .map(|(worker_id, f)| {
                let num = |name: &str| f.get(name).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
                let mut jobs = held.remove(&worker_id).unwrap_or_default();
                jobs.sort();
                WorkerInfo {
                    host: f.get("host").cloned().unwrap_or_default(),
                    pid: num("pid") as u32,
                    concurrency: num("concurrency") as u32,
                    started_at: from_millis(num("started_at")),
                    last_seen: from_millis(num("last_seen")),
                    jobs,
                    version: f.get("version").cloned().unwrap_or_default(),
                    tasks: f
                        .get("tasks")
                        .and_then(|t| serde_json::from_str(t).ok())
                        .unwrap_or_default(),
                    schemas: f
                        .get("schemas")
                        .and_then(|t| serde_json::from_str(t).ok())
                        .unwrap_or_default(),
                    lost: lost_of.get(&worker_id).copied().unwrap_or(false),
                    worker_id,
                }
            })
            .collect();
        out.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Ok(out)
    }

    async fn subscribe<'a>(&self, after: Option<&'a str>) -> Result<EventStream> {
        match after {
            None => self.live_events().await,
            Some(after) => self.events_after(after).await,
        }
    }

    async fn webhooks(&self) -> Result<Vec<queue_core::Webhook>> {
        self.stored_webhooks().await
    }

    async fn deliveries(&self, parked: bool, limit: usize) -> Result<Vec<queue_core::Delivery>> {
        self.outbox(parked, limit).await
    }

    async fn resend_delivery(&self, id: &str) -> Result<bool> {
        self.resend(id).await
    }
}

/// A group's stats from `group_stats` in the scripts: {ready, running, paused, limit, rate
/// max, rate window, held until, unfinished}.
fn group_stats(group: &str, reply: &[Value]) -> GroupStats {
    let n = |i: usize| reply.get(i).and_then(int).unwrap_or(0).max(0) as u64;
    let mut stats = GroupStats::new(group);
    stats.ready = n(0);
    stats.running = n(1);
    stats.paused = n(2) == 1;
    stats.concurrency = reply
        .get(3)
        .and_then(int)
        .and_then(|v| u32::try_from(v).ok());
    stats.rate_limit = match (reply.get(4).and_then(int), reply.get(5).and_then(int)) {
        (Some(max), Some(per)) if max > 0 && per > 0 => Some(RateLimit {
            max: max as u32,
            per: std::time::Duration::from_millis(per as u64),
        }),
        _ => None,
    };
    stats.held_until = reply
        .get(6)
        .and_then(int)
        .map(queue_core::backend::from_millis);
    stats.unfinished = n(7);
    stats.weight = reply
        .get(8)
        .and_then(int)
        .and_then(|v| u32::try_from(v).ok());
    stats
}
