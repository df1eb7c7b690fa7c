//! `RedisBackend`: the traits over the scripts and plain reads.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use futures_util::StreamExt;
use queue_core::{
    Broker, CancelOutcome, CancelStream, ClaimRequest, Clock, Error, EventKind, EventStream,
    Finished, HeartbeatReply, JobEvent, JobId, JobRecord, JobStatus, JobStore, Lease, LeaseRef,
    LeaseStatus, LeaseToken, LifetimeTotals, ListQuery, Millis, NewJob, Outcome, Page, Priority,
    QueueConfig, QueueStats, Result, SharedClock, SystemClock, WorkerBeat, WorkerId, WorkerInfo,
    duration_ms, encode_cursor, from_millis, to_millis,
};
use redis::Value;
use tokio::sync::oneshot;

use crate::{
    codec::{self, Fields},
    conn::{Conn, MAX_BLOCK, Target},
    error,
    keys::Keys,
    scripts::{Script, Scripts},
};

/// Jobs sent per enqueue script call.
const ENQUEUE_BATCH: usize = 500;

/// The Redis (standalone or Cluster) backend. Clones share connections.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    conn: Conn,
    blocking: Mutex<Vec<Conn>>,
    keys: Keys,
    scripts: Scripts,
    config: QueueConfig,
    clock: Option<SharedClock>,
    secret: Option<String>,
}

/// Builds a [`RedisBackend`] from a [`QueueConfig`] (`DCS_REDIS_URL`, `DCS_QUEUE_NAME`, ...).
#[derive(Clone)]
pub struct RedisBackendBuilder {
    config: QueueConfig,
    key_prefix: String,
    clock: Option<SharedClock>,
    response_timeout: Duration,
    functions: bool,
}

impl fmt::Debug for RedisBackendBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackendBuilder")
            .field("config", &self.config)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisBackendBuilder {
    /// The first part of every key (default `dcs`): keys are `<prefix>:{<queue>}:...`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Reads time from `clock` instead of the server's `TIME` (tests drive a manual clock).
    /// Production leaves this unset so every worker agrees on one clock.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Whether to load the scripts as a Redis Function library where the server supports
    /// it (default `true`); `false` uses EVALSHA scripts everywhere (for servers that refuse
    /// `FUNCTION LOAD`).
    pub fn functions(mut self, enabled: bool) -> Self {
        self.functions = enabled;
        self
    }

    /// How long a command may take before it fails as unavailable (default 5 s).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Connects. An unreachable server is `Error::Unavailable`; a bad URL or queue name is
    /// `Error::Config`. Passwords never appear in either.
    pub async fn build(self) -> Result<RedisBackend> {
        let keys = Keys::new(&self.key_prefix, &self.config.queue_name)?;
        let secret = error::password_of(self.config.redis_url.expose());
        let target = Target::new(&self.config.redis_url)?;
        let mut conn = target
            .connect(self.response_timeout)
            .await
            .map_err(|e| error::map(e, secret.as_deref()))?;
        // A PING first, so a refused login reads as such (an unauthenticated FUNCTION LOAD
        // is cut off by the server with a protocol error).
        redis::cmd("PING")
            .query_async::<Value>(&mut conn)
            .await
            .map_err(|e| error::map(e, secret.as_deref()))?;
        let scripts = Scripts::load();
        scripts
            .prepare(&mut conn, self.functions)
            .await
            .map_err(|e| error::map(e, secret.as_deref()))?;
        Ok(RedisBackend {
            inner: Arc::new(Inner {
                target,
                conn,
                blocking: Mutex::new(Vec::new()),
                keys,
                scripts,
                config: self.config,
                clock: self.clock,
                secret,
            }),
        })
    }
}

impl RedisBackend {
    /// A builder for `config`.
    pub fn builder(config: &QueueConfig) -> RedisBackendBuilder {
        RedisBackendBuilder {
            config: config.clone(),
            key_prefix: "dcs".into(),
            clock: None,
            response_timeout: Duration::from_secs(5),
            functions: true,
        }
    }

    /// Connects with the defaults.
    pub async fn connect(config: &QueueConfig) -> Result<Self> {
        Self::builder(config).build().await
    }

    /// The configuration the backend uses.
    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    /// True when the scripts run as a Redis Function library, false for EVALSHA.
    pub fn uses_functions(&self) -> bool {
        self.inner.scripts.uses_functions()
    }

    /// Deletes every key of this queue (jobs, indexes, counters). Returns how many.
    pub async fn destroy(&self) -> Result<u64> {
        let mut removed = 0;
        let pattern = self.inner.keys.pattern();
        for client in self.inner.target.node_clients() {
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| self.err(e))?;
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| self.err(e))?;
                for key in &keys {
                    // One key per command: on a cluster node a multi-key UNLINK is fine
                    // (one slot), but keep it simple and slot-agnostic.
                    let n: u64 = redis::cmd("UNLINK")
                        .arg(key)
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| self.err(e))?;
                    removed += n;
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(removed)
    }

    fn err(&self, e: redis::RedisError) -> Error {
        error::map(e, self.inner.secret.as_deref())
    }

    fn now_arg(&self) -> String {
        self.inner
            .clock
            .as_ref()
            .map(|c| c.now_ms().to_string())
            .unwrap_or_default()
    }

    fn now_ms(&self) -> Millis {
        match &self.inner.clock {
            Some(c) => c.now_ms(),
            None => SystemClock.now_ms(),
        }
    }

    fn retention_ms(&self) -> String {
        duration_ms(self.inner.config.retention).to_string()
    }

    fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    /// Splits a `{now, ...}` script reply into the server's time and the rest.
    fn stamped(&self, reply: Value) -> (Millis, std::vec::IntoIter<Value>) {
        let mut it = array(reply).into_iter();
        let now = it
            .next()
            .as_ref()
            .and_then(int)
            .unwrap_or_else(|| self.now_ms());
        (now, it)
    }

    async fn run(&self, script: &Script, key: &str, extra: Vec<String>) -> Result<Value> {
        let mut args = Vec::with_capacity(extra.len() + 2);
        args.push(self.inner.keys.prefix().to_owned());
        args.push(self.now_arg());
        args.extend(extra);
        let mut conn = self.conn();
        self.inner
            .scripts
            .run(script, &mut conn, key, &args)
            .await
            .map_err(|e| self.err(e))
    }

    /// Decodes leased jobs (`{id, token, now, fields as read}`), applying the claim's
    /// changes; a corrupt record fails its job at once.
    async fn leases(&self, items: Vec<Value>, req: &ClaimRequest) -> Vec<Lease> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let mut parts = array(item).into_iter();
            let (Some(id), Some(token), Some(now), Some(fields)) = (
                parts.next().as_ref().and_then(text),
                parts.next().as_ref().and_then(text),
                parts.next().as_ref().and_then(int),
                parts.next(),
            ) else {
                continue;
            };
            let token = LeaseToken::new(token);
            match codec::decode(id.parse::<JobId>().ok(), &to_fields(fields)) {
                Ok(mut job) => {
                    job.status = JobStatus::Processing;
                    job.started_at = Some(from_millis(now));
                    job.progress = 0;
                    job.current_step = None;
                    job.run_at = None;
                    job.worker_id = Some(req.worker.as_str().to_owned());
                    out.push(Lease {
                        job,
                        token,
                        expires_at: from_millis(now + duration_ms(req.lease)),
                    });
                }
                Err(err) => self.fail_corrupt(&id, token, err).await,
            }
        }
        out
    }

    async fn fail_corrupt(&self, id: &str, token: LeaseToken, err: Error) {
        let message = format!("corrupt job record: {err}");
        tracing::warn!(job_id = id, error = %message, "failing a job whose record cannot be read");
        let args = vec![
            id.to_owned(),
            token.as_str().to_owned(),
            "corrupt".into(),
            message,
            String::new(),
            "0".into(),
            self.retention_ms(),
            "0".into(),
            String::new(),
            String::new(),
            "0".into(),
        ];
        let key = format!("{}job:{id}", self.inner.keys.prefix());
        if let Err(e) = self.run(&self.inner.scripts.finish, &key, args).await {
            tracing::warn!(job_id = id, error = %e.chain(), "could not fail the corrupt job; its lease will expire");
        }
    }

    async fn claim_now(&self, req: &ClaimRequest) -> Result<(Vec<Lease>, Option<Millis>, Millis)> {
        let args = vec![
            req.worker.as_str().to_owned(),
            LeaseToken::generate().as_str().to_owned(),
            duration_ms(req.lease).to_string(),
            req.max.to_string(),
            self.retention_ms(),
        ];
        let reply = self
            .run(&self.inner.scripts.claim, &self.inner.keys.ready(), args)
            .await?;
        let (now, mut it) = self.stamped(reply);
        let next_due = it.next().as_ref().and_then(int);
        let leased = it.next().map(array).unwrap_or_default();
        let leases = self.leases(leased, req).await;
        Ok((leases, next_due, now))
    }

    /// Runs a claim on its own task, so a caller that goes away (a dropped `fetch`) cannot
    /// lose leased jobs: they are handed back instead.
    async fn claim_detached(
        &self,
        req: &ClaimRequest,
    ) -> Result<(Vec<Lease>, Option<Millis>, Millis)> {
        let this = self.clone();
        let req = req.clone();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let result = this.claim_now(&req).await;
            if let Err(Ok((leases, _, _))) = tx.send(result) {
                for lease in leases {
                    let _ = this.finish(&lease.to_ref(), Outcome::Released, None).await;
                }
            }
        });
        rx.await.map_err(|_| Error::Backend {
            backend: "redis",
            message: "claim task stopped".into(),
        })?
    }

    /// Blocks on the wake-up marker for up to `timeout`, on a dedicated connection.
    async fn wait_for_work(&self, timeout: Duration) -> Result<()> {
        let pooled = self
            .inner
            .blocking
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => self
                .inner
                .target
                .connect_blocking()
                .await
                .map_err(|e| self.err(e))?,
        };
        let secs = format!(
            "{:.3}",
            timeout.max(Duration::from_millis(10)).as_secs_f64()
        );
        let result: redis::RedisResult<Value> = redis::cmd("BZPOPMIN")
            .arg(self.inner.keys.marker())
            .arg(secs)
            .query_async(&mut conn)
            .await;
        match result {
            Ok(_) => {
                self.inner
                    .blocking
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(conn);
                Ok(())
            }
            // The connection is dropped: the next wait opens a fresh one.
            Err(e) => Err(self.err(e)),
        }
    }

    async fn pubsub_stream(
        &self,
        channel: String,
    ) -> Result<impl futures_util::Stream<Item = String> + Send + use<>> {
        let mut pubsub = self.inner.target.pubsub().await.map_err(|e| self.err(e))?;
        pubsub.subscribe(&channel).await.map_err(|e| self.err(e))?;
        Ok(pubsub
            .into_on_message()
            .filter_map(|msg| std::future::ready(msg.get_payload::<String>().ok())))
    }

    fn job_from_new(&self, job: &NewJob, id: JobId, now: Millis) -> JobRecord {
        let o = &job.options;
        let delay = o.delay.map(duration_ms).unwrap_or(0);
        JobRecord {
            job_id: id,
            task: job.task.clone(),
            payload: job.payload.clone(),
            unique_key: o.unique_key.clone(),
            status: JobStatus::Queued,
            priority: o.priority.unwrap_or(self.inner.config.default_priority),
            progress: 0,
            current_step: None,
            error_message: None,
            retry_count: 0,
            max_retries: o.max_retries.unwrap_or(self.inner.config.max_retries),
            timeout_ms: o.timeout.map(|t| duration_ms(t) as u64),
            created_at: from_millis(now),
            started_at: None,
            completed_at: None,
            run_at: (delay > 0).then(|| from_millis(now + delay)),
            metadata: o.metadata.clone(),
            result: None,
            worker_id: None,
            cancel_requested: false,
        }
    }

    async fn enqueue_batch(
        &self,
        jobs: &[(usize, NewJob, JobId)],
        out: &mut [Option<Result<JobRecord>>],
    ) -> Result<()> {
        let mut args = vec![jobs.len().to_string()];
        for (_, job, id) in jobs {
            let o = &job.options;
            args.push(id.to_string());
            args.push(job.task.clone());
            args.push(job.payload.as_str().to_owned());
            args.push(o.unique_key.clone().unwrap_or_default());
            args.push(
                o.priority
                    .unwrap_or(self.inner.config.default_priority)
                    .band()
                    .to_string(),
            );
            args.push(o.delay.map(duration_ms).unwrap_or(0).to_string());
            args.push(
                o.max_retries
                    .unwrap_or(self.inner.config.max_retries)
                    .to_string(),
            );
            args.push(
                o.timeout
                    .map(|t| duration_ms(t).to_string())
                    .unwrap_or_default(),
            );
            args.push(if o.metadata.is_empty() {
                String::new()
            } else {
                serde_json::Value::Object(o.metadata.clone()).to_string()
            });
        }
        let reply = self
            .run(&self.inner.scripts.enqueue, &self.inner.keys.ready(), args)
            .await?;
        let (now, mut it) = self.stamped(reply);
        let results = it.next().map(array).unwrap_or_default();
        for ((slot, job, id), result) in jobs.iter().zip(results) {
            let result = array(result);
            let code = result.first().and_then(text).unwrap_or_default();
            let other = result.get(1).and_then(text).unwrap_or_default();
            out[*slot] = Some(match code.as_str() {
                "ok" => Ok(self.job_from_new(job, *id, now)),
                "exists" => self.get(*id).await,
                "dup" => Err(Error::AlreadyExists {
                    unique_key: job.options.unique_key.clone().unwrap_or_default(),
                    job_id: other.parse()?,
                }),
                _ => Err(Error::Backend {
                    backend: "redis",
                    message: format!("unexpected enqueue reply {code:?}"),
                }),
            });
        }
        Ok(())
    }

    /// Ids (with scores) of `index` after `position`, newest first.
    async fn index_page(
        &self,
        index: &str,
        position: Option<(Millis, JobId)>,
        n: usize,
    ) -> Result<Vec<(String, Millis)>> {
        let mut conn = self.conn();
        let (max, skip_ties) = match position {
            None => ("+inf".to_owned(), 0),
            Some((ms, _)) => {
                let ties: usize = redis::cmd("ZCOUNT")
                    .arg(index)
                    .arg(ms)
                    .arg(ms)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| self.err(e))?;
                (ms.to_string(), ties)
            }
        };
        let raw: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(index)
            .arg(&max)
            .arg("-inf")
            .arg("BYSCORE")
            .arg("REV")
            .arg("LIMIT")
            .arg(0)
            .arg(n + skip_ties)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        let after = position.map(|(ms, id)| (ms, id.to_string()));
        Ok(raw
            .into_iter()
            .map(|(id, score)| (id, score as Millis))
            .filter(|(id, score)| match &after {
                Some((ms, cursor)) => *score < *ms || (*score == *ms && id < cursor),
                None => true,
            })
            .take(n)
            .collect())
    }

    /// Processing jobs are indexed by lease expiry in `active` (bounded by the workers'
    /// concurrency), so their listing is sorted here.
    async fn list_processing(
        &self,
        limit: usize,
        position: Option<(Millis, JobId)>,
    ) -> Result<Page> {
        let mut conn = self.conn();
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.inner.keys.active())
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        let mut jobs: Vec<JobRecord> = Vec::with_capacity(ids.len());
        for (id, fields) in ids.iter().zip(self.records(&ids).await?) {
            match fields.map(|f| codec::decode(id.parse().ok(), &f)) {
                Some(Ok(r)) if r.status == JobStatus::Processing => jobs.push(r),
                Some(Err(e)) => {
                    tracing::warn!(job_id = %id, error = %e, "skipping an unreadable record in a listing")
                }
                _ => {}
            }
        }
        let key = |r: &JobRecord| (to_millis(r.created_at), r.job_id);
        jobs.retain(|r| position.is_none_or(|p| key(r) < p));
        jobs.sort_by_key(|r| std::cmp::Reverse(key(r)));
        let next_cursor = (jobs.len() > limit).then(|| {
            jobs.truncate(limit);
            let last = jobs.last().expect("limit is at least 1");
            encode_cursor(to_millis(last.created_at), last.job_id)
        });
        Ok(Page { jobs, next_cursor })
    }

    async fn records(&self, ids: &[String]) -> Result<Vec<Option<Fields>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGETALL")
                .arg(format!("{}job:{id}", self.inner.keys.prefix()));
        }
        let mut conn = self.conn();
        let replies: Vec<Value> = pipe.query_async(&mut conn).await.map_err(|e| self.err(e))?;
        Ok(replies
            .into_iter()
            .map(|v| match v {
                Value::ServerError(_) => None,
                v => Some(to_fields(v)).filter(|f| !f.is_empty()),
            })
            .collect())
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RedisBackend({}, queue={})",
            self.inner.config.redis_url, self.inner.config.queue_name
        )
    }
}

#[async_trait]
impl JobStore for RedisBackend {
    async fn enqueue(&self, job: NewJob) -> Result<JobRecord> {
        self.enqueue_many(vec![job])
            .await?
            .pop()
            .expect("one result per job")
    }

    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Result<JobRecord>>> {
        let mut out: Vec<Option<Result<JobRecord>>> = (0..jobs.len()).map(|_| None).collect();
        let mut valid = Vec::with_capacity(jobs.len());
        for (slot, job) in jobs.into_iter().enumerate() {
            match job.validate() {
                Ok(()) => {
                    let id = job.options.job_id.unwrap_or_default();
                    valid.push((slot, job, id));
                }
                Err(e) => out[slot] = Some(Err(e)),
            }
        }
        for chunk in valid.chunks(ENQUEUE_BATCH) {
            self.enqueue_batch(chunk, &mut out).await?;
        }
        Ok(out
            .into_iter()
            .map(|r| r.expect("every job has a result"))
            .collect())
    }

    async fn get(&self, id: JobId) -> Result<JobRecord> {
        let mut conn = self.conn();
        let fields: redis::RedisResult<Fields> = redis::cmd("HGETALL")
            .arg(self.inner.keys.job(id))
            .query_async(&mut conn)
            .await;
        match fields {
            Ok(f) if f.is_empty() => Err(Error::NotFound { id }),
            Ok(f) => codec::decode(Some(id), &f),
            Err(e) if e.code() == Some("WRONGTYPE") => Err(Error::corrupt(format!(
                "job record {id} is not stored as a hash"
            ))),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        let mut position = query.position()?;
        let k = &self.inner.keys;
        if query.status == Some(JobStatus::Processing) && query.unique_key.is_none() {
            return self.list_processing(query.limit, position).await;
        }
        let index = match (&query.unique_key, query.status) {
            (Some(key), _) => k.unique(key),
            (None, Some(status)) => k.status(status),
            (None, None) => k.jobs(),
        };
        let want = query.limit + 1;
        let mut jobs: Vec<JobRecord> = Vec::with_capacity(want);
        while jobs.len() < want {
            let batch = self
                .index_page(&index, position, (want - jobs.len()).max(16))
                .await?;
            let exhausted = batch.len() < (want - jobs.len()).max(16);
            let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
            for ((id, score), fields) in batch.iter().zip(self.records(&ids).await?) {
                let parsed = id.parse::<JobId>();
                if let Ok(pid) = parsed {
                    position = Some((*score, pid));
                }
                let Some(fields) = fields else { continue };
                match codec::decode(parsed.ok(), &fields) {
                    Ok(r) if query.status.is_none_or(|s| s == r.status) => jobs.push(r),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(job_id = %id, error = %e, "skipping an unreadable record in a listing")
                    }
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
            let last = jobs.last().expect("limit is at least 1");
            encode_cursor(to_millis(last.created_at), last.job_id)
        });
        Ok(Page { jobs, next_cursor })
    }

    async fn cancel(&self, id: JobId) -> Result<CancelOutcome> {
        let reply = array(
            self.run(
                &self.inner.scripts.cancel,
                &self.inner.keys.job(id),
                vec![id.to_string(), self.retention_ms()],
            )
            .await?,
        );
        match reply.first().and_then(text).as_deref() {
            Some("cancelled") => Ok(CancelOutcome::Cancelled),
            Some("requested") => Ok(CancelOutcome::Requested),
            Some("missing") => Err(Error::NotFound { id }),
            Some("invalid") => Err(invalid(id, reply.get(1), queue_core::Event::Cancel)),
            other => Err(Error::Backend {
                backend: "redis",
                message: format!("unexpected cancel reply {other:?}"),
            }),
        }
    }

    async fn retry(&self, id: JobId, priority: Option<Priority>) -> Result<JobRecord> {
        let band = priority.map(|p| p.band().to_string()).unwrap_or_default();
        let reply = array(
            self.run(
                &self.inner.scripts.retry,
                &self.inner.keys.job(id),
                vec![id.to_string(), band],
            )
            .await?,
        );
        match reply.first().and_then(text).as_deref() {
            Some("ok") => codec::decode(
                Some(id),
                &to_fields(reply.into_iter().nth(1).unwrap_or(Value::Nil)),
            ),
            Some("missing") => Err(Error::NotFound { id }),
            Some("invalid") => Err(invalid(id, reply.get(1), queue_core::Event::ManualRetry)),
            Some("dup") => {
                let holder = reply.get(1).and_then(text).unwrap_or_default().parse()?;
                let key = self.get(id).await?.unique_key.unwrap_or_default();
                Err(Error::AlreadyExists {
                    unique_key: key,
                    job_id: holder,
                })
            }
            other => Err(Error::Backend {
                backend: "redis",
                message: format!("unexpected retry reply {other:?}"),
            }),
        }
    }

    async fn stats(&self) -> Result<QueueStats> {
        let k = &self.inner.keys;
        let mut pipe = redis::pipe();
        for status in JobStatus::ALL {
            // `active` is the index of processing jobs.
            let index = if status == JobStatus::Processing {
                k.active()
            } else {
                k.status(status)
            };
            pipe.cmd("ZCARD").arg(index);
        }
        pipe.cmd("ZCARD").arg(k.jobs());
        pipe.cmd("ZCARD").arg(k.delayed());
        for p in Priority::ALL {
            let lo = u64::from(p.band()) * 1_000_000_000_000;
            pipe.cmd("ZCOUNT")
                .arg(k.ready())
                .arg(lo)
                .arg(format!("({}", lo + 1_000_000_000_000));
        }
        pipe.cmd("ZCOUNT")
            .arg(k.workers())
            .arg(self.now_ms())
            .arg("+inf");
        pipe.cmd("HGETALL").arg(k.stats());
        let mut conn = self.conn();
        let (counts, totals): (Vec<u64>, HashMap<String, u64>) = {
            let mut replies: Vec<Value> =
                pipe.query_async(&mut conn).await.map_err(|e| self.err(e))?;
            let totals = replies
                .pop()
                .map(|v| redis::from_redis_value(v).unwrap_or_default())
                .unwrap_or_default();
            (
                replies.iter().map(|v| int(v).unwrap_or(0) as u64).collect(),
                totals,
            )
        };
        let t = |name: &str| totals.get(name).copied().unwrap_or(0);
        Ok(QueueStats {
            queued: counts[0],
            processing: counts[1],
            completed: counts[2],
            failed: counts[3],
            partial: counts[4],
            cancelled: counts[5],
            total: counts[6],
            scheduled: counts[7],
            depth: Priority::ALL
                .into_iter()
                .zip(counts[8..11].iter().copied())
                .collect(),
            active_workers: counts[11],
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

    async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let mut conn = self.conn();
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.inner.keys.workers())
            .arg(self.now_ms())
            .arg("+inf")
            .arg("BYSCORE")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(self.inner.keys.worker(id));
        }
        let infos: Vec<Fields> = pipe.query_async(&mut conn).await.map_err(|e| self.err(e))?;
        let mut out: Vec<WorkerInfo> = ids
            .into_iter()
            .zip(infos)
            .filter(|(_, f)| !f.is_empty())
            .map(|(id, f)| {
                let num = |name: &str| f.get(name).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
                WorkerInfo {
                    worker_id: id,
                    host: f.get("host").cloned().unwrap_or_default(),
                    pid: num("pid") as u32,
                    concurrency: num("concurrency") as u32,
                    started_at: from_millis(num("started_at")),
                    last_seen: from_millis(num("last_seen")),
                    jobs: f
                        .get("jobs")
                        .map(|j| j.split(',').filter_map(|s| s.parse().ok()).collect())
                        .unwrap_or_default(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Ok(out)
    }

    async fn health(&self) -> Result<()> {
        let mut conn = self.conn();
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn subscribe(&self) -> Result<EventStream> {
        let messages = self.pubsub_stream(self.inner.keys.events()).await?;
        Ok(Box::pin(
            messages.filter_map(|m| std::future::ready(parse_event(&m))),
        ))
    }
}

#[async_trait]
impl Broker for RedisBackend {
    async fn fetch(&self, req: &ClaimRequest, wait: Duration) -> Result<Vec<Lease>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (leases, next_due, now) = self.claim_detached(req).await?;
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !leases.is_empty() || remaining.is_zero() {
                return Ok(leases);
            }
            let mut block = remaining.min(MAX_BLOCK);
            if let Some(due) = next_due {
                block = block.min(Duration::from_millis((due - now).max(1) as u64));
            }
            self.wait_for_work(block).await?;
        }
    }

    async fn heartbeat(&self, beat: &WorkerBeat, leases: &[LeaseRef]) -> Result<HeartbeatReply> {
        let mut args = vec![
            beat.worker.as_str().to_owned(),
            duration_ms(beat.lease).to_string(),
            (3 * duration_ms(beat.interval)).to_string(),
            beat.host.clone(),
            beat.pid.to_string(),
            beat.concurrency.to_string(),
            to_millis(beat.started_at).to_string(),
            leases.len().to_string(),
        ];
        for lease in leases {
            args.push(lease.job_id.to_string());
            args.push(lease.token.as_str().to_owned());
        }
        let reply = array(
            self.run(
                &self.inner.scripts.heartbeat,
                &self.inner.keys.workers(),
                args,
            )
            .await?,
        );
        let ids = |v: Option<&Value>| -> Vec<JobId> {
            v.cloned()
                .map(array)
                .unwrap_or_default()
                .iter()
                .filter_map(|x| text(x)?.parse().ok())
                .collect()
        };
        Ok(HeartbeatReply {
            lost: ids(reply.first()),
            cancel: ids(reply.get(1)),
        })
    }

    async fn progress(
        &self,
        lease: &LeaseRef,
        progress: u8,
        step: Option<String>,
    ) -> Result<LeaseStatus> {
        queue_core::check_progress(progress)?;
        let args = vec![
            lease.job_id.to_string(),
            lease.token.as_str().to_owned(),
            progress.to_string(),
            if step.is_some() { "1" } else { "0" }.to_owned(),
            step.unwrap_or_default(),
        ];
        let reply = array(
            self.run(
                &self.inner.scripts.progress,
                &self.inner.keys.job(lease.job_id),
                args,
            )
            .await?,
        );
        match reply.first().and_then(text).as_deref() {
            Some("ok") => Ok(LeaseStatus {
                cancel_requested: reply.get(1).and_then(int) == Some(1),
            }),
            _ => Err(Error::LeaseLost { id: lease.job_id }),
        }
    }

    async fn finish(
        &self,
        lease: &LeaseRef,
        outcome: Outcome,
        next: Option<ClaimRequest>,
    ) -> Result<Finished> {
        let (kind, error, result, delay) = match outcome {
            Outcome::Completed { result } => ("completed", String::new(), result, Duration::ZERO),
            Outcome::Partial { result, error } => ("partial", error, result, Duration::ZERO),
            Outcome::Retry { error, delay } => ("retry", error, None, delay),
            Outcome::Failed { error } => ("failed", error, None, Duration::ZERO),
            Outcome::Cancelled => ("cancelled", String::new(), None, Duration::ZERO),
            Outcome::Released => ("released", String::new(), None, Duration::ZERO),
        };
        let mut args = vec![
            lease.job_id.to_string(),
            lease.token.as_str().to_owned(),
            kind.to_owned(),
            error,
            result.map(|r| r.to_string()).unwrap_or_default(),
            duration_ms(delay).to_string(),
            self.retention_ms(),
        ];
        match &next {
            Some(req) => args.extend([
                "1".to_owned(),
                req.worker.as_str().to_owned(),
                LeaseToken::generate().as_str().to_owned(),
                duration_ms(req.lease).to_string(),
            ]),
            None => args.extend(["0".to_owned(), String::new(), String::new(), "0".to_owned()]),
        }
        let reply = array(
            self.run(
                &self.inner.scripts.finish,
                &self.inner.keys.job(lease.job_id),
                args,
            )
            .await?,
        );
        let mut it = reply.into_iter();
        let status = it.next().as_ref().and_then(text).unwrap_or_default();
        if status == "lost" {
            return Err(Error::LeaseLost { id: lease.job_id });
        }
        let status: JobStatus = status.parse()?;
        let next = match (next, it.next()) {
            (Some(req), Some(claimed)) => self.leases(array(claimed), &req).await.pop(),
            _ => None,
        };
        Ok(Finished { status, next })
    }

    async fn reap(&self, limit: usize) -> Result<Vec<JobId>> {
        let reply = self
            .run(
                &self.inner.scripts.reap,
                &self.inner.keys.active(),
                vec![limit.to_string(), self.retention_ms()],
            )
            .await?;
        Ok(array(reply)
            .iter()
            .filter_map(|v| text(v)?.parse().ok())
            .collect())
    }

    async fn deregister(&self, worker: &WorkerId) -> Result<()> {
        let mut conn = self.conn();
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM")
            .arg(self.inner.keys.workers())
            .arg(worker.as_str())
            .ignore();
        pipe.cmd("DEL")
            .arg(self.inner.keys.worker(worker.as_str()))
            .ignore();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.err(e))
    }

    async fn sweep(&self, limit: usize) -> Result<usize> {
        let reply = self
            .run(
                &self.inner.scripts.sweep,
                &self.inner.keys.finished(),
                vec![self.retention_ms(), limit.to_string()],
            )
            .await?;
        Ok(int(&reply).unwrap_or(0) as usize)
    }

    async fn cancellations(&self) -> Result<CancelStream> {
        let messages = self.pubsub_stream(self.inner.keys.cancel()).await?;
        Ok(Box::pin(messages.filter_map(|m| {
            std::future::ready(m.parse::<JobId>().ok())
        })))
    }
}

fn invalid(id: JobId, status: Option<&Value>, event: queue_core::Event) -> Error {
    match status
        .and_then(text)
        .and_then(|s| s.parse::<JobStatus>().ok())
    {
        Some(from) => Error::InvalidTransition { id, from, event },
        None => Error::corrupt(format!("job record {id}: field `status` is not a status")),
    }
}

/// An event published by a script: `{"job_id", "at", "type", ...}`.
fn parse_event(message: &str) -> Option<JobEvent> {
    #[derive(serde::Deserialize)]
    struct Raw {
        job_id: JobId,
        at: Millis,
        #[serde(flatten)]
        kind: EventKind,
    }
    let raw: Raw = serde_json::from_str(message).ok()?;
    Some(JobEvent {
        job_id: raw.job_id,
        at: from_millis(raw.at),
        kind: raw.kind,
    })
}

fn array(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) | Value::Set(items) => items,
        Value::Nil => Vec::new(),
        other => vec![other],
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Double(d) => Some(d.to_string()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Double(d) => Some(*d as i64),
        other => text(other)?.parse::<f64>().ok().map(|f| f as i64),
    }
}

/// A flat `[field, value, ...]` array (or a map) as fields.
fn to_fields(v: Value) -> Fields {
    match v {
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect(),
        v => {
            let items = array(v);
            items
                .chunks(2)
                .filter_map(|c| Some((text(c.first()?)?, text(c.get(1)?)?)))
                .collect()
        }
    }
}
