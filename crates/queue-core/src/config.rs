//! Configuration from the `DCS_*` environment variables, or built in code.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DCS_REDIS_URL` | `redis://localhost:6379` | Redis URL; several comma-separated URLs (or `redis-cluster://`) name a cluster |
//! | `DCS_QUEUE_NAME` | `ai_processing` | queue name (no `{`, `}`, `:` or whitespace) |
//! | `DCS_QUEUE_MAX_CONCURRENCY` | `3` | jobs one worker runs at once |
//! | `DCS_QUEUE_MAX_RETRIES` | `3` | retries after the first attempt |
//! | `DCS_QUEUE_JOB_TIMEOUT_SECONDS` | `3600` | per-attempt timeout |
//! | `DCS_QUEUE_RETRY_DELAY_SECONDS` | `60` | backoff base: `min(base * 2^attempt, cap)` |
//! | `DCS_QUEUE_DEFAULT_PRIORITY` | `normal` | `high`, `normal` or `low` |
//! | `DCS_QUEUE_RETRY_MAX_DELAY_SECONDS` | `3600` | backoff cap |
//! | `DCS_QUEUE_RETRY_JITTER` | `0` | backoff jitter fraction, 0-1 |
//! | `DCS_QUEUE_LEASE_SECONDS` | `30` | lease of a running job; a dead worker's job returns after it |
//! | `DCS_QUEUE_HEARTBEAT_SECONDS` | `10` | how often a worker renews its leases; at most half the lease (`longest_heartbeat`); a failed renewal is retried after a quarter interval |
//! | `DCS_QUEUE_SHUTDOWN_GRACE_SECONDS` | `30` | how long running jobs may finish on shutdown |
//! | `DCS_QUEUE_RETENTION_SECONDS` | `604800` | how long finished records are kept |
//! | `DCS_QUEUE_LIMIT_PAYLOAD_BYTES` | `1048576` | largest payload a job may carry |
//! | `DCS_QUEUE_LIMIT_METADATA_BYTES` | `65536` | largest metadata a job may carry |
//! | `DCS_QUEUE_LIMIT_RESULT_BYTES` | `1048576` | largest result a job may store (a larger one fails the job) |
//! | `DCS_QUEUE_LIMIT_DELAY_SECONDS` | `31536000` | longest delay (enqueue or retry) |
//! | `DCS_QUEUE_LIMIT_TIMEOUT_SECONDS` | `604800` | longest per-job timeout |
//! | `DCS_QUEUE_LIMIT_RETRIES` | `1000` | most retries a job may ask for |
//! | `DCS_QUEUE_LIMIT_ERROR_BYTES` | `4096` | longest error message stored (a longer one is cut, saying so) |
//! | `DCS_QUEUE_LIMIT_HOLD_SECONDS` | `3600` | longest hold a handler's `rate_limited` puts on its group or the queue |
//!
//! ```
//! use queue_core::QueueConfig;
//!
//! let cfg = QueueConfig::from_vars([("DCS_QUEUE_MAX_CONCURRENCY", "8")]).unwrap();
//! assert_eq!(cfg.max_concurrency, 8);
//! let err = QueueConfig::from_vars([("DCS_QUEUE_MAX_RETRIES", "many")]).unwrap_err();
//! assert!(err.to_string().contains("DCS_QUEUE_MAX_RETRIES=\"many\""));
//! ```

use std::{fmt, str::FromStr, time::Duration};

use crate::{Error, Limits, Priority, Result, RetryPolicy};

/// The queue's settings. Build with [`QueueConfig::from_env`], [`QueueConfig::from_vars`]
/// or [`QueueConfig::builder`]; every path validates.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct QueueConfig {
    /// Where Redis is (redacted in `Debug`).
    pub redis_url: RedisUrl,
    /// The queue name.
    pub queue_name: String,
    /// Jobs one worker runs at once.
    pub max_concurrency: usize,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Per-attempt timeout.
    pub job_timeout: Duration,
    /// Backoff base.
    pub retry_delay: Duration,
    /// Backoff cap.
    pub retry_max_delay: Duration,
    /// Backoff jitter fraction.
    pub retry_jitter: f64,
    /// Priority of jobs enqueued without one.
    pub default_priority: Priority,
    /// Lease of a running job.
    pub lease: Duration,
    /// Lease renewal interval.
    pub heartbeat: Duration,
    /// Grace period for running jobs on shutdown.
    pub shutdown_grace: Duration,
    /// How long finished records are kept.
    pub retention: Duration,
    /// Bounds on what a job may ask for.
    pub limits: Limits,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            redis_url: RedisUrl::parse("redis://localhost:6379").expect("default URL is valid"),
            queue_name: "ai_processing".to_owned(),
            max_concurrency: 3,
            max_retries: 3,
            job_timeout: Duration::from_secs(3600),
            retry_delay: Duration::from_secs(60),
            retry_max_delay: Duration::from_secs(3600),
            retry_jitter: 0.0,
            default_priority: Priority::Normal,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            retention: Duration::from_secs(7 * 24 * 3600),
            limits: Limits::default(),
        }
    }
}

impl fmt::Debug for QueueConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueConfig")
            .field("redis_url", &self.redis_url)
            .field("queue_name", &self.queue_name)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_retries", &self.max_retries)
            .field("job_timeout", &self.job_timeout)
            .field("retry_delay", &self.retry_delay)
            .field("retry_max_delay", &self.retry_max_delay)
            .field("retry_jitter", &self.retry_jitter)
            .field("default_priority", &self.default_priority)
            .field("lease", &self.lease)
            .field("heartbeat", &self.heartbeat)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("retention", &self.retention)
            .field("limits", &self.limits)
            .finish()
    }
}

impl QueueConfig {
    /// Reads the `DCS_*` variables of the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(std::env::vars())
    }

    /// Reads `DCS_*` settings from the given pairs (other names are ignored); unset
    /// settings keep their defaults. The error names the variable and its value.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut b = Self::builder();
        for (key, value) in vars {
            let (key, raw) = (key.as_ref(), value.as_ref());
            let value = raw.trim();
            let bad = |expected: &str| {
                let shown = if key == "DCS_REDIS_URL" {
                    RedisUrl::redact(value)
                } else {
                    value.to_owned()
                };
                Error::config(format!("{key}={shown:?}: expected {expected}"))
            };
            match key {
                "DCS_REDIS_URL" => {
                    b.cfg.redis_url = RedisUrl::parse(value).map_err(|e| match e {
                        Error::Config { message } => {
                            Error::config(format!("DCS_REDIS_URL: {message}"))
                        }
                        other => other,
                    })?;
                }
                "DCS_QUEUE_NAME" => {
                    validate_queue_name(value).map_err(|_| bad(QUEUE_NAME_RULE))?;
                    b.cfg.queue_name = value.to_owned();
                }
                "DCS_QUEUE_MAX_CONCURRENCY" => {
                    b.cfg.max_concurrency = parse_in(value, 1, 10_000)
                        .ok_or_else(|| bad("an integer from 1 to 10000"))?;
                }
                "DCS_QUEUE_MAX_RETRIES" => {
                    b.cfg.max_retries = parse_in(value, 0, 1_000)
                        .ok_or_else(|| bad("an integer from 0 to 1000"))?;
                }
                "DCS_QUEUE_JOB_TIMEOUT_SECONDS" => {
                    b.cfg.job_timeout = secs(value, 1)
                        .ok_or_else(|| bad("a whole number of seconds, at least 1"))?
                }
                "DCS_QUEUE_RETRY_DELAY_SECONDS" => {
                    b.cfg.retry_delay =
                        secs(value, 0).ok_or_else(|| bad("a whole number of seconds"))?
                }
                "DCS_QUEUE_RETRY_MAX_DELAY_SECONDS" => {
                    b.cfg.retry_max_delay =
                        secs(value, 0).ok_or_else(|| bad("a whole number of seconds"))?
                }
                "DCS_QUEUE_RETRY_JITTER" => {
                    b.cfg.retry_jitter = value
                        .parse::<f64>()
                        .ok()
                        .filter(|j| (0.0..=1.0).contains(j))
                        .ok_or_else(|| bad("a fraction from 0 to 1"))?;
                }
                "DCS_QUEUE_DEFAULT_PRIORITY" => {
                    b.cfg.default_priority =
                        Priority::from_str(value).map_err(|_| bad("high, normal or low"))?;
                }
                "DCS_QUEUE_LEASE_SECONDS" => {
                    b.cfg.lease = secs(value, 1)
                        .ok_or_else(|| bad("a whole number of seconds, at least 1"))?
                }
                "DCS_QUEUE_HEARTBEAT_SECONDS" => {
                    b.cfg.heartbeat = secs(value, 1)
                        .ok_or_else(|| bad("a whole number of seconds, at least 1"))?
                }
                "DCS_QUEUE_SHUTDOWN_GRACE_SECONDS" => {
                    b.cfg.shutdown_grace =
                        secs(value, 0).ok_or_else(|| bad("a whole number of seconds"))?
                }
                "DCS_QUEUE_RETENTION_SECONDS" => {
                    b.cfg.retention = secs(value, 1)
                        .ok_or_else(|| bad("a whole number of seconds, at least 1"))?
                }
                "DCS_QUEUE_LIMIT_PAYLOAD_BYTES" => {
                    b.cfg.limits.payload_bytes = parse_in(value, 2, 512 * 1024 * 1024)
                        .ok_or_else(|| bad("a number of bytes from 2 to 536870912"))?;
                }
                "DCS_QUEUE_LIMIT_RESULT_BYTES" => {
                    b.cfg.limits.result_bytes = parse_in(value, 2, 512 * 1024 * 1024)
                        .ok_or_else(|| bad("a number of bytes from 2 to 536870912"))?;
                }
                "DCS_QUEUE_LIMIT_METADATA_BYTES" => {
                    b.cfg.limits.metadata_bytes = parse_in(value, 2, 512 * 1024 * 1024)
                        .ok_or_else(|| bad("a number of bytes from 2 to 536870912"))?;
                }
                "DCS_QUEUE_LIMIT_DELAY_SECONDS" => {
                    b.cfg.limits.delay = secs(value, 1)
                        .ok_or_else(|| bad("a whole number of seconds, at least 1"))?
                }
                "DCS_QUEUE_LIMIT_TIMEOUT_SECONDS" => {
                    b.cfg.limits.timeout = secs(value, 1)
                        .ok_or_else(|| bad("a whole number of seconds, at least 1"))?
                }
                "DCS_QUEUE_LIMIT_RETRIES" => {
                    b.cfg.limits.retries = parse_in(value, 0, 1_000_000)
                        .ok_or_else(|| bad("an integer from 0 to 1000000"))?;
                }
                "DCS_QUEUE_LIMIT_ERROR_BYTES" => {
                    b.cfg.limits.error_bytes = parse_in(value, 64, 1024 * 1024)
                        .ok_or_else(|| bad("a number of bytes from 64 to 1048576"))?;
                }
                "DCS_QUEUE_LIMIT_HOLD_SECONDS" => {
                    b.cfg.limits.hold = secs(value, 1)
                        .ok_or_else(|| bad("a whole number of seconds, at least 1"))?
                }
                _ => {}
            }
        }
        b.build()
    }

    /// A builder starting from the defaults.
    pub fn builder() -> QueueConfigBuilder {
        QueueConfigBuilder {
            cfg: Self::default(),
        }
    }

    /// A builder starting from this configuration.
    pub fn to_builder(&self) -> QueueConfigBuilder {
        QueueConfigBuilder { cfg: self.clone() }
    }

    /// The retry policy these settings describe.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            base: self.retry_delay,
            cap: self.retry_max_delay,
            jitter: self.retry_jitter,
        }
    }
}

/// Sets [`QueueConfig`] fields in code; [`QueueConfigBuilder::build`] validates them.
#[derive(Clone, Debug)]
pub struct QueueConfigBuilder {
    cfg: QueueConfig,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        impl QueueConfigBuilder {
            $($(#[$doc])* pub fn $name(mut self, value: $ty) -> Self { self.cfg.$name = value; self })*
        }
    };
}

setters! {
    /// Sets the jobs one worker runs at once.
    max_concurrency: usize;
    /// Sets the retries after the first attempt.
    max_retries: u32;
    /// Sets the per-attempt timeout.
    job_timeout: Duration;
    /// Sets the backoff base.
    retry_delay: Duration;
    /// Sets the backoff cap.
    retry_max_delay: Duration;
    /// Sets the backoff jitter fraction.
    retry_jitter: f64;
    /// Sets the default priority.
    default_priority: Priority;
    /// Sets the lease of a running job.
    lease: Duration;
    /// Sets the lease renewal interval.
    heartbeat: Duration;
    /// Sets the shutdown grace period.
    shutdown_grace: Duration;
    /// Sets the retention of finished records.
    retention: Duration;
    /// Sets the bounds on what a job may ask for.
    limits: Limits;
}

impl QueueConfigBuilder {
    /// Sets the Redis URL (validated by `build`).
    pub fn redis_url(mut self, url: &str) -> Result<Self> {
        self.cfg.redis_url = RedisUrl::parse(url)?;
        Ok(self)
    }

    /// Sets the queue name (validated by `build`).
    pub fn queue_name(mut self, name: impl Into<String>) -> Self {
        self.cfg.queue_name = name.into();
        self
    }

    /// Checks every field; the error names the field.
    pub fn build(self) -> Result<QueueConfig> {
        let c = self.cfg;
        validate_queue_name(&c.queue_name)?;
        if !(1..=crate::backend::MAX_CONCURRENCY).contains(&c.max_concurrency) {
            return Err(Error::config(format!(
                "max_concurrency ({}) must be from 1 to {}",
                c.max_concurrency,
                crate::backend::MAX_CONCURRENCY
            )));
        }
        if c.job_timeout.is_zero() {
            return Err(Error::config("job_timeout must be positive"));
        }
        if !(0.0..=1.0).contains(&c.retry_jitter) {
            return Err(Error::config(format!(
                "retry_jitter {} is not in 0..=1",
                c.retry_jitter
            )));
        }
        if c.lease < Duration::from_millis(100) {
            return Err(Error::config("lease must be at least 100 ms"));
        }
        crate::backend::check_heartbeat(c.lease, c.heartbeat)?;
        if c.retention.is_zero() {
            return Err(Error::config("retention must be positive"));
        }
        if c.max_retries > c.limits.retries {
            return Err(Error::config(format!(
                "max_retries ({}) is above the retries limit ({})",
                c.max_retries, c.limits.retries
            )));
        }
        if c.job_timeout > c.limits.timeout {
            return Err(Error::config(format!(
                "job_timeout ({:?}) is above the timeout limit ({:?})",
                c.job_timeout, c.limits.timeout
            )));
        }
        Ok(c)
    }
}

const QUEUE_NAME_RULE: &str =
    "a queue name of 1 to 100 characters without `{`, `}`, `:` or whitespace";

/// Refuses queue names that would break the Redis hash tag or the key layout.
pub fn validate_queue_name(name: &str) -> Result<()> {
    let bad_char = name
        .chars()
        .find(|c| matches!(c, '{' | '}' | ':') || c.is_whitespace() || c.is_control());
    if name.is_empty() || name.chars().count() > 100 || bad_char.is_some() {
        return Err(Error::config(format!(
            "queue name {name:?}: expected {QUEUE_NAME_RULE}"
        )));
    }
    Ok(())
}

fn parse_in<T: FromStr + PartialOrd>(value: &str, min: T, max: T) -> Option<T> {
    value.parse::<T>().ok().filter(|v| *v >= min && *v <= max)
}

fn secs(value: &str, min: u64) -> Option<Duration> {
    parse_in(value, min, 10 * 365 * 24 * 3600).map(Duration::from_secs)
}

/// A Redis URL (or a comma-separated list of cluster node URLs) whose password never
/// shows in `Debug`, `Display` or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Checks every URL of the list: a Redis scheme, a host, a numeric port and database.
    /// The error names the URL with its password cut out.
    pub fn parse(url: &str) -> Result<Self> {
        let url = url.trim();
        if url.is_empty() {
            return Err(Error::config("Redis URL is empty"));
        }
        for part in url.split(',') {
            check_node(part.trim())?;
        }
        Ok(Self(url.to_owned()))
    }

    /// The URL with its credentials, for the client only. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The node URLs of the list.
    pub fn nodes(&self) -> Vec<&str> {
        self.0.split(',').map(str::trim).collect()
    }

    /// `host:port` of every node (no credentials): what an error about reaching Redis names.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes()
            .into_iter()
            .map(|node| match split_node(node) {
                Some(parts) if !parts.host.is_empty() => {
                    format!("{}:{}", parts.host, parts.port.unwrap_or("6379"))
                }
                _ => Self::redact(node),
            })
            .collect()
    }

    /// Every password the list carries (in the user part or as `?password=`), so that
    /// messages quoting a client error can cut them out.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        for node in self.nodes() {
            if let Some(parts) = split_node(node) {
                if let Some((_, pw)) = parts.userinfo.and_then(|u| u.split_once(':'))
                    && !pw.is_empty()
                {
                    out.push(pw.to_owned());
                }
                for (key, value) in parts.query_pairs() {
                    if key.eq_ignore_ascii_case("password") && !value.is_empty() {
                        out.push(value.to_owned());
                    }
                }
            }
        }
        out
    }

    /// True when the URL names a cluster (several nodes or a `*-cluster` scheme).
    pub fn is_cluster(&self) -> bool {
        self.nodes().len() > 1
            || self.0.starts_with("redis-cluster://")
            || self.0.starts_with("rediss-cluster://")
    }

    /// `url` with any password (in the user part or a `password=` query parameter)
    /// replaced by `***`.
    pub fn redact(url: &str) -> String {
        url.split(',')
            .map(|part| {
                let Some(parts) = split_node(part) else {
                    return part.to_owned();
                };
                let mut out = format!("{}://", parts.scheme);
                if let Some(userinfo) = parts.userinfo {
                    match userinfo.split_once(':') {
                        Some((user, _)) => out.push_str(&format!("{user}:***@")),
                        None => out.push_str(&format!("{userinfo}@")),
                    }
                }
                out.push_str(parts.hostport);
                out.push_str(parts.path);
                if let Some(query) = parts.query {
                    out.push('?');
                    let pairs: Vec<String> = query
                        .split('&')
                        .map(|pair| match pair.split_once('=') {
                            Some((k, _)) if k.eq_ignore_ascii_case("password") => {
                                format!("{k}=***")
                            }
                            _ => pair.to_owned(),
                        })
                        .collect();
                    out.push_str(&pairs.join("&"));
                }
                out
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A node URL cut into its parts (no decoding).
struct NodeParts<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    hostport: &'a str,
    host: &'a str,
    port: Option<&'a str>,
    path: &'a str,
    query: Option<&'a str>,
}

impl NodeParts<'_> {
    fn query_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter_map(|pair| pair.split_once('='))
    }
}

fn split_node(node: &str) -> Option<NodeParts<'_>> {
    let (scheme, rest) = node.split_once("://")?;
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let rest = rest.split('#').next().unwrap_or("");
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let close = v6.find(']')?;
        (&v6[..close], v6[close + 1..].strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    Some(NodeParts {
        scheme,
        userinfo,
        hostport,
        host,
        port,
        path,
        query,
    })
}

fn check_node(node: &str) -> Result<()> {
    let shown = || RedisUrl::redact(node);
    let bad = |why: String| Error::config(format!("{:?}: {why}", shown()));
    let scheme = node.split_once("://").map(|(s, _)| s);
    match scheme {
        Some("redis+unix" | "unix") => return Ok(()),
        Some("redis" | "rediss" | "redis-cluster" | "rediss-cluster") => {}
        _ => {
            return Err(bad(
                "is not a Redis URL (expected redis://, rediss:// or redis-cluster://)".into(),
            ));
        }
    }
    let parts = split_node(node).ok_or_else(|| bad("is not a valid URL".into()))?;
    if parts.host.is_empty() {
        return Err(bad("has no host".into()));
    }
    if let Some(port) = parts.port
        && !port.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return Err(bad(format!(
            "port `{port}` is not a number from 1 to 65535"
        )));
    }
    let db = parts.path.trim_start_matches('/');
    if !db.is_empty() && db.parse::<u32>().is_err() {
        return Err(bad(format!("database `{db}` is not a number")));
    }
    Ok(())
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", Self::redact(&self.0))
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Self::redact(&self.0))
    }
}

#[cfg(test)]
mod tests;
