//! `RedisConfig`: where Redis is and how the backend talks to it.

use std::time::Duration;

use queue_core::{Error, QueueConfig, RedisUrl, Result};

/// Where Redis is and how the backend talks to it; the queue itself (name, defaults,
/// limits, retention) is a [`QueueConfig`]. [`RedisConfig::from_env`] reads:
///
/// | variable | default | |
/// |---|---|---|
/// | `DCS_REDIS_URL` | `redis://localhost:6379` | one server, or several comma-separated node URLs (or `redis-cluster://`) for a cluster |
/// | `DCS_REDIS_KEY_PREFIX` | `dcs` | the first part of every key: `<prefix>:{<queue>}:...` |
/// | `DCS_REDIS_RESPONSE_TIMEOUT_SECONDS` | `5` | how long a command may take before it fails as unavailable |
/// | `DCS_REDIS_REQUIRE_DURABILITY` | `false` | refuse a server that can lose acknowledged jobs (`appendonly`, `appendfsync`, `maxmemory-policy`) instead of warning |
/// | `DCS_REDIS_WAIT_REPLICAS` | `0` | replicas every enqueue and finish waits for (`WAIT`) |
/// | `DCS_REDIS_WAIT_TIMEOUT_MS` | `1000` | how long it waits for them |
/// | `DCS_REDIS_PARTITIONS` | unset | create the queue with this many partitions, 1 to 64 (README "Partitions"; a stored layout wins: resize with `queuectl partitions --resize N`) |
///
/// ```
/// use queue_redis::RedisConfig;
///
/// let config = RedisConfig::from_vars([
///     ("DCS_REDIS_URL", "redis://:s3cret@cache:6379/2"),
///     ("DCS_REDIS_KEY_PREFIX", "myapp"),
/// ])
/// .unwrap();
/// assert_eq!(config.key_prefix, "myapp");
/// assert!(!format!("{config:?}").contains("s3cret"));
///
/// let err = RedisConfig::from_vars([("DCS_REDIS_KEY_PREFIX", "a{b}")]).unwrap_err();
/// assert!(err.to_string().contains("DCS_REDIS_KEY_PREFIX"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The server or the cluster's nodes (its password never shows in `Debug` or errors).
    pub url: RedisUrl,
    /// The first part of every key.
    pub key_prefix: String,
    /// How long a command may take before it fails as unavailable.
    pub response_timeout: Duration,
    /// Load the scripts as a Redis Function library where the server supports it (`true`),
    /// or use EVALSHA scripts everywhere (for servers that refuse `FUNCTION LOAD`).
    pub functions: bool,
    /// Refuse a server that can lose acknowledged jobs (`DCS_REDIS_REQUIRE_DURABILITY`,
    /// default `false`: warn): see `RedisBackendBuilder::require_durability`.
    pub require_durability: bool,
    /// Replicas every enqueue and finish waits for (`DCS_REDIS_WAIT_REPLICAS`, default 0).
    pub wait_replicas: u32,
    /// How long it waits for them (`DCS_REDIS_WAIT_TIMEOUT_MS`, default 1000).
    pub wait_timeout: Duration,
    /// Partitions a queue without a stored layout is created with
    /// (`DCS_REDIS_PARTITIONS`; `None`: one, an unpartitioned queue). See
    /// `RedisBackendBuilder::open`.
    pub partitions: Option<u32>,
}

impl RedisConfig {
    /// The defaults, on `url`.
    pub fn new(url: &str) -> Result<Self> {
        Ok(Self {
            url: RedisUrl::parse(url)?,
            ..Self::default()
        })
    }

    /// The same settings on `url` (a command-line `--redis-url` over `DCS_REDIS_URL`, say).
    pub fn with_url(mut self, url: RedisUrl) -> Self {
        self.url = url;
        self
    }

    /// Reads the `DCS_REDIS_*` variables of the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(std::env::vars())
    }

    /// Reads `DCS_REDIS_*` settings from the given pairs (other names are ignored); unset
    /// ones keep their defaults. An error names the variable (never a password).
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut config = Self::default();
        for (key, value) in vars {
            let (key, value) = (key.as_ref(), value.as_ref().trim());
            match key {
                "DCS_REDIS_URL" => {
                    config.url = RedisUrl::parse(value).map_err(|e| match e {
                        Error::Config { message } => {
                            Error::config(format!("DCS_REDIS_URL: {message}"))
                        }
                        other => other,
                    })?;
                }
                "DCS_REDIS_KEY_PREFIX" => {
                    if value.is_empty() || value.contains(['{', '}', ' ']) {
                        return Err(Error::config(format!(
                            "DCS_REDIS_KEY_PREFIX={value:?}: expected a non-empty prefix without `{{`, `}}` or spaces"
                        )));
                    }
                    config.key_prefix = value.to_owned();
                }
                "DCS_REDIS_RESPONSE_TIMEOUT_SECONDS" => {
                    config.response_timeout = value
                        .parse::<u64>()
                        .ok()
                        .filter(|s| (1..=3600).contains(s))
                        .map(Duration::from_secs)
                        .ok_or_else(|| {
                            Error::config(format!(
                                "DCS_REDIS_RESPONSE_TIMEOUT_SECONDS={value:?}: expected an integer from 1 to 3600"
                            ))
                        })?;
                }
                "DCS_REDIS_REQUIRE_DURABILITY" => {
                    config.require_durability = match value {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" | "" => false,
                        _ => {
                            return Err(Error::config(format!(
                                "DCS_REDIS_REQUIRE_DURABILITY={value:?}: expected true or false"
                            )));
                        }
                    };
                }
                "DCS_REDIS_WAIT_REPLICAS" => {
                    config.wait_replicas = value.parse().ok().filter(|n| *n <= 100).ok_or_else(
                        || {
                            Error::config(format!(
                                "DCS_REDIS_WAIT_REPLICAS={value:?}: expected an integer from 0 to 100"
                            ))
                        },
                    )?;
                }
                "DCS_REDIS_PARTITIONS" => {
                    let p = value
                        .parse::<u32>()
                        .ok()
                        .filter(|p| queue_core::backend::check_partitions(*p).is_ok());
                    config.partitions = Some(p.ok_or_else(|| {
                        Error::config(format!(
                            "DCS_REDIS_PARTITIONS={value:?}: expected an integer from 1 to {}",
                            queue_core::backend::MAX_PARTITIONS
                        ))
                    })?);
                }
                "DCS_REDIS_WAIT_TIMEOUT_MS" => {
                    config.wait_timeout = value
                        .parse::<u64>()
                        .ok()
                        .filter(|ms| (1..=60_000).contains(ms))
                        .map(Duration::from_millis)
                        .ok_or_else(|| {
                            Error::config(format!(
                                "DCS_REDIS_WAIT_TIMEOUT_MS={value:?}: expected an integer from 1 to 60000"
                            ))
                        })?;
                }
                _ => {}
            }
        }
        Ok(config)
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self::from(&QueueConfig::default())
    }
}

/// The URL of the convenience configuration (`DCS_REDIS_URL`), with the other defaults.
impl From<&QueueConfig> for RedisConfig {
    fn from(queue: &QueueConfig) -> Self {
        Self {
            url: queue.redis_url.clone(),
            key_prefix: "dcs".into(),
            response_timeout: Duration::from_secs(5),
            functions: true,
            require_durability: false,
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
            partitions: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variable_is_read_and_checked() {
        let config = RedisConfig::from_vars([
            (
                "DCS_REDIS_URL",
                "redis://127.0.0.1:7000,redis://127.0.0.1:7001",
            ),
            ("DCS_REDIS_KEY_PREFIX", "tenant-a"),
            ("DCS_REDIS_RESPONSE_TIMEOUT_SECONDS", "12"),
            ("DCS_REDIS_PARTITIONS", "64"),
            ("DCS_QUEUE_NAME", "ignored here"),
        ])
        .unwrap();
        assert_eq!(config.partitions, Some(64));
        assert_eq!(config.url.nodes().len(), 2);
        assert_eq!(config.key_prefix, "tenant-a");
        assert_eq!(config.response_timeout, Duration::from_secs(12));
        assert!(config.functions);
        assert_eq!(
            RedisConfig::from_vars::<[(&str, &str); 0], _, _>([]).unwrap(),
            RedisConfig::default()
        );
        for (key, value) in [
            ("DCS_REDIS_URL", "http://:pw@x"),
            ("DCS_REDIS_KEY_PREFIX", ""),
            ("DCS_REDIS_RESPONSE_TIMEOUT_SECONDS", "0"),
            ("DCS_REDIS_RESPONSE_TIMEOUT_SECONDS", "soon"),
            ("DCS_REDIS_PARTITIONS", "0"),
            ("DCS_REDIS_PARTITIONS", "65"),
        ] {
            let err = RedisConfig::from_vars([(key, value)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
            assert!(!err.contains(":pw@"), "{err}");
        }
    }
}
