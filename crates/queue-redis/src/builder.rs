//! `RedisBackend` and how it is built: configuration in, connected backend out.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use queue_core::backend::Millis;
use queue_core::{Clock, Error, QueueConfig, Result, SharedClock, SystemClock};
use redis::Value;

use crate::{
    RedisConfig,
    conn::{Conn, Deployment},
    error::Errors,
    keys::Keys,
    pubsub::Subscriptions,
    scripts::{Script, Scripts},
};

/// The Redis (standalone or Cluster) backend. Clones share connections.
#[derive(Clone)]
pub struct RedisBackend {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) deployment: Arc<Deployment>,
    conn: Conn,
    pub(crate) blocking: Mutex<Vec<Conn>>,
    pub(crate) keys: Keys,
    pub(crate) scripts: Scripts,
    pub(crate) config: QueueConfig,
    /// How long one call may wait for its answer (`RedisConfig::response_timeout`).
    pub(crate) response_timeout: Duration,
    /// The server's persistence settings, as read when connecting.
    durability: crate::durability::Durability,
    /// Replicas every enqueue and finish waits for, and for how long.
    wait: Option<(u32, Duration)>,
    clock: Option<SharedClock>,
    pub(crate) errors: Errors,
    pub(crate) subscriptions: Arc<Subscriptions>,
    /// Fetches waiting for work now.
    pub(crate) blocked: queue_core::backend::Blocked,
    pub(crate) coalesced: crate::jobs::Coalesced,
    /// What this backend is to a partitioned queue (`crate::partitions::Role`).
    pub(crate) role: std::sync::atomic::AtomicU8,
    /// When its role was last checked against the stored layout.
    pub(crate) role_read: Mutex<tokio::time::Instant>,
}

/// Builds a [`RedisBackend`] from a [`QueueConfig`] (the queue: `DCS_QUEUE_*`) and a
/// [`RedisConfig`] (where Redis is: `DCS_REDIS_*`).
#[derive(Clone)]
pub struct RedisBackendBuilder {
    config: QueueConfig,
    redis: RedisConfig,
    clock: Option<SharedClock>,
}

impl fmt::Debug for RedisBackendBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackendBuilder")
            .field("config", &self.config)
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

impl RedisBackendBuilder {
    /// Where Redis is and how to talk to it (replaces the URL of the [`QueueConfig`] and
    /// every setting below).
    pub fn redis(mut self, redis: RedisConfig) -> Self {
        self.redis = redis;
        self
    }

    /// The first part of every key (default `dcs`): keys are `<prefix>:{<queue>}:...`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.redis.key_prefix = prefix.into();
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
        self.redis.functions = enabled;
        self
    }

    /// How long a command may take before it fails as unavailable (default 5 s).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.redis.response_timeout = timeout;
        self
    }

    /// Refuses to connect to a server that can lose acknowledged jobs (`appendonly no`,
    /// `appendfsync no`, a `maxmemory-policy` other than `noeviction`, or settings that
    /// cannot be read), naming each setting (default `false`: each is logged as a warning;
    /// [`RedisBackend::durability`] tells them either way).
    pub fn require_durability(mut self, require: bool) -> Self {
        self.redis.require_durability = require;
        self
    }

    /// Every enqueue and every finish waits until `replicas` replicas have it (`WAIT`), up to
    /// `timeout`; fewer in time is a retryable `Unavailable` (sent again, the call answers
    /// the same). For replicated deployments where a master may die without a coordinated
    /// failover: without it, jobs acknowledged in the last moments before the crash are
    /// lost with the master. Default 0: no waiting.
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.redis.wait_replicas = replicas;
        self.redis.wait_timeout = timeout;
        self
    }

    /// The partitions [`RedisConfig::partitions`] asks a new queue to have (1 when unset).
    pub(crate) fn partitions_asked(&self) -> u32 {
        self.redis.partitions.unwrap_or(1)
    }

    /// Connects. An unreachable server is `Error::Unavailable` naming its host and port; a
    /// bad URL or queue name is `Error::Config`. Passwords never appear in either.
    pub async fn build(self) -> Result<RedisBackend> {
        let keys = Keys::new(&self.redis.key_prefix, &self.config.queue_name)?;
        let errors = Errors::new(&self.redis.url);
        let deployment = Arc::new(Deployment::new(&self.redis.url)?);
        let mut conn = deployment
            .connect(self.redis.response_timeout)
            .await
            .map_err(|e| errors.map(e))?;
        // A PING first, so a refused login reads as such (an unauthenticated FUNCTION LOAD
        // is cut off by the server with a protocol error).
        redis::cmd("PING")
            .query_async::<Value>(&mut conn)
            .await
            .map_err(|e| errors.map(e))?;
        let durability = match &conn {
            Conn::Cluster(_) => {
                let mut all = crate::durability::Durability::default();
                for (client, node) in deployment
                    .node_clients()
                    .into_iter()
                    .zip(self.redis.url.endpoints())
                {
                    if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                        all = all.merge(crate::durability::Durability::read(&mut c, &node).await);
                    }
                }
                all
            }
            _ => {
                let node = self.redis.url.endpoints().join(",");
                crate::durability::Durability::read(&mut conn, &node).await
            }
        };
        durability.enforce(self.redis.require_durability)?;
        let scripts = Scripts::load(&keys);
        scripts
            .prepare(&mut conn, self.redis.functions)
            .await
            .map_err(|e| errors.map(e))?;
        let backend = RedisBackend {
            inner: Arc::new(Inner {
                blocked: queue_core::backend::Blocked::default(),
                subscriptions: Arc::new(Subscriptions::new(
                    Arc::clone(&deployment),
                    errors.clone(),
                )),
                deployment,
                conn,
                blocking: Mutex::new(Vec::new()),
                keys,
                scripts,
                config: self.config,
                response_timeout: self.redis.response_timeout,
                durability,
                wait: (self.redis.wait_replicas > 0)
                    .then_some((self.redis.wait_replicas, self.redis.wait_timeout)),
                clock: self.clock,
                errors,
                coalesced: Default::default(),
                role: std::sync::atomic::AtomicU8::new(crate::partitions::Role::Whole as u8),
                role_read: Mutex::new(tokio::time::Instant::now()),
            }),
        };
        backend.note_layout().await?;
        Ok(backend)
    }
}

impl RedisBackend {
    /// The same server, connections and settings for the queue whose keys are `keys` (a
    /// partition of a partitioned queue): its own script keys, blocked fetches and
    /// coalescing; connections and subscriptions shared.
    pub(crate) fn sibling(&self, keys: Keys) -> RedisBackend {
        let i = &self.inner;
        let scripts = i.scripts.for_keys(&keys);
        RedisBackend {
            inner: Arc::new(Inner {
                blocked: queue_core::backend::Blocked::default(),
                subscriptions: Arc::clone(&i.subscriptions),
                deployment: Arc::clone(&i.deployment),
                conn: i.conn.clone(),
                blocking: Mutex::new(Vec::new()),
                keys,
                scripts,
                config: i.config.clone(),
                response_timeout: i.response_timeout,
                durability: i.durability.clone(),
                wait: i.wait,
                clock: i.clock.clone(),
                errors: i.errors.clone(),
                coalesced: Default::default(),
                role: std::sync::atomic::AtomicU8::new(crate::partitions::Role::Partition as u8),
                role_read: Mutex::new(tokio::time::Instant::now()),
            }),
        }
    }

    /// How many fetches of this backend are blocked now, waiting for work (a gauge; tests
    /// wait for it before asserting that a fetch keeps waiting).
    pub fn blocked_fetches(&self) -> usize {
        self.inner.blocked.count()
    }

    /// How many event streams of this backend (subscribers, and `wait` calls following a
    /// job) are open.
    pub fn subscribers(&self) -> usize {
        self.inner
            .subscriptions
            .receivers(&self.inner.keys.events())
    }

    /// A builder for `config`.
    pub fn builder(config: &QueueConfig) -> RedisBackendBuilder {
        RedisBackendBuilder {
            config: config.clone(),
            redis: RedisConfig::from(config),
            clock: None,
        }
    }

    /// Connects to Redis as the `DCS_REDIS_*` variables say ([`RedisConfig::from_env`]) with
    /// the queue the `DCS_QUEUE_*` variables describe ([`QueueConfig::from_env`]); a bad value is an error naming the variable, and the URL's
    /// password never appears in an error.
    pub async fn from_env() -> Result<Self> {
        Self::builder(&QueueConfig::from_env()?)
            .redis(RedisConfig::from_env()?)
            .build()
            .await
    }

    /// Connects with the defaults.
    pub async fn connect(config: &QueueConfig) -> Result<Self> {
        Self::builder(config).build().await
    }

    /// The configuration the backend uses.
    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    /// The server's persistence settings as read when the backend connected: each one that
    /// can lose acknowledged jobs, named (see [`RedisBackendBuilder::require_durability`]).
    pub fn durability(&self) -> &crate::Durability {
        &self.inner.durability
    }

    /// Waits until the replicas asked for ([`RedisBackendBuilder::wait_for_replicas`]) have
    /// every write this backend made so far (nothing to do without).
    pub(crate) async fn replicated(&self) -> Result<()> {
        let Some((replicas, timeout)) = self.inner.wait else {
            return Ok(());
        };
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(timeout.as_millis() as u64);
        let slot = crate::keys::slot(self.inner.keys.prefix());
        let mut conn = self.conn();
        let call = conn.wait(&wait, slot);
        let acked = match tokio::time::timeout(timeout + self.inner.response_timeout, call).await {
            Ok(Ok(v)) => crate::wire::int(&v).unwrap_or(0),
            Ok(Err(e)) => return Err(self.err(e)),
            Err(_) => return Err(self.no_answer()),
        };
        if acked < i64::from(replicas) {
            return Err(Error::Unavailable {
                backend: "redis",
                source: format!(
                    "{}: written on the master but acknowledged by {acked} of {replicas} replicas within {timeout:?}",
                    self.inner.errors.endpoints()
                )
                .into(),
            });
        }
        Ok(())
    }

    /// True when the scripts run as a Redis Function library, false for EVALSHA.
    pub fn uses_functions(&self) -> bool {
        self.inner.scripts.uses_functions()
    }

    /// Deletes every key of this queue (jobs, indexes, counters). Returns how many.
    pub async fn destroy(&self) -> Result<u64> {
        let mut removed = 0;
        let pattern = self.inner.keys.pattern();
        for client in self.inner.deployment.node_clients() {
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
                if !keys.is_empty() {
                    // One key per command (slot-agnostic), one round trip per page.
                    let mut pipe = redis::pipe();
                    for key in &keys {
                        pipe.cmd("UNLINK").arg(key);
                    }
                    let counts: Vec<u64> =
                        pipe.query_async(&mut conn).await.map_err(|e| self.err(e))?;
                    removed += counts.iter().sum::<u64>();
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(removed)
    }

    pub(crate) fn err(&self, e: redis::RedisError) -> Error {
        self.inner.errors.map(e)
    }

    fn now_arg(&self) -> String {
        self.inner
            .clock
            .as_ref()
            .map(|c| c.now_ms().to_string())
            .unwrap_or_default()
    }

    /// Now by the client's clock (only to wait; every stored time is the server's).
    pub(crate) fn now_ms(&self) -> Millis {
        match &self.inner.clock {
            Some(c) => c.now_ms(),
            None => SystemClock.now_ms(),
        }
    }

    pub(crate) fn retention_ms(&self) -> String {
        queue_core::backend::duration_ms(self.inner.config.retention).to_string()
    }

    pub(crate) fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    /// Runs `script` like [`RedisBackend::run`], sending it again (50 ms, then 200 ms
    /// later) when a try failed without an answer, all within one response timeout: a
    /// caller hears back in bounded time, a retryable `Unavailable` naming the server when
    /// Redis is down. Only for scripts that answer the same when sent again: enqueue (ids
    /// chosen by the client), a new flow.
    pub(crate) async fn run_again_if_unanswered(
        &self,
        script: &Script,
        dynamic: &[String],
        extra: Vec<String>,
    ) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + self.inner.response_timeout;
        let mut delay = Duration::from_millis(50);
        let mut tries = 0;
        loop {
            tries += 1;
            match self
                .run_until(script, dynamic, extra.clone(), deadline)
                .await
            {
                Err(e)
                    if e.is_retryable()
                        && tries < 3
                        && tokio::time::Instant::now() + delay < deadline =>
                {
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
                other => return other,
            }
        }
    }

    /// Runs a claim (the same id every time) until one send is answered, backing off from
    /// 50 ms to 1 s, for up to `lease` (past it, whatever an unanswered send leased has
    /// expired, and the caller sends the request again itself). Returns the answer and
    /// when the send that got it was sent.
    pub(crate) async fn run_until_answered(
        &self,
        script: &Script,
        dynamic: &[String],
        extra: Vec<String>,
        lease: Duration,
    ) -> Result<(Value, tokio::time::Instant)> {
        let give_up = tokio::time::Instant::now() + lease.max(self.inner.response_timeout);
        let mut delay = Duration::from_millis(50);
        loop {
            let sent = tokio::time::Instant::now();
            let deadline = (sent + self.inner.response_timeout).min(give_up);
            match self
                .run_until(script, dynamic, extra.clone(), deadline)
                .await
            {
                Ok(reply) => return Ok((reply, sent)),
                Err(e) if e.is_retryable() && tokio::time::Instant::now() + delay < give_up => {
                    tracing::debug!(error = %e.chain(), retry_in = ?delay, "claim unanswered; sending it again under the same id");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs `script` with its static keys, `dynamic` keys and `extra` arguments; a call
    /// that gets no answer within the response timeout is `Unavailable` (retryable),
    /// naming the server.
    pub(crate) async fn run(
        &self,
        script: &Script,
        dynamic: &[String],
        extra: Vec<String>,
    ) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + self.inner.response_timeout;
        self.run_until(script, dynamic, extra, deadline).await
    }

    /// [`RedisBackend::run`] answered by `deadline` at the latest.
    async fn run_until(
        &self,
        script: &Script,
        dynamic: &[String],
        extra: Vec<String>,
        deadline: tokio::time::Instant,
    ) -> Result<Value> {
        let mut args = Vec::with_capacity(extra.len() + 2);
        args.push(self.inner.keys.prefix().to_owned());
        args.push(self.now_arg());
        args.extend(extra);
        let mut conn = self.conn();
        let call = self.inner.scripts.run(script, &mut conn, dynamic, &args);
        match tokio::time::timeout_at(deadline, call).await {
            Ok(result) => result.map_err(|e| self.err(e)),
            Err(_) => Err(self.no_answer()),
        }
    }

    /// The error of a call Redis did not answer in time (retryable, naming the server).
    pub(crate) fn no_answer(&self) -> Error {
        Error::Unavailable {
            backend: "redis",
            source: format!(
                "{}: no answer within {:?}",
                self.inner.errors.endpoints(),
                self.inner.response_timeout
            )
            .into(),
        }
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
