//! What the server promises about a job surviving a crash, and waiting for replicas.
//!
//! The queue's promise (nothing lost) holds on a Redis that keeps what it acknowledged:
//! `appendonly yes` (with `appendfsync always` nothing acknowledged is lost, with
//! `everysec` at most the last second of a crashed host), and `maxmemory-policy
//! noeviction` (any other policy may evict job records under memory pressure). The
//! backend reads these settings when it connects ([`Durability`]): it warns about each
//! one that falls short, or refuses to start when asked to
//! ([`crate::RedisBackendBuilder::require_durability`]). With replicas, an acknowledged
//! write may still be lost when a master dies before its replica received it (a failover
//! without coordination): [`crate::RedisBackendBuilder::wait_for_replicas`] makes every
//! enqueue and finish wait (`WAIT`) until that many replicas have it.

use queue_core::{Error, Result};
use redis::{Value, aio::ConnectionLike};

/// The settings of the server (or of each cluster node) that decide whether acknowledged
/// jobs survive a crash, as read when the backend connected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Durability {
    /// Each setting that falls short, saying what to set (empty: none, or none could be
    /// read).
    pub problems: Vec<String>,
    /// The settings could not be read (`CONFIG` refused, as on some managed servers).
    pub unknown: bool,
}

impl Durability {
    /// The problems of one server's `CONFIG GET` answer (name → value pairs).
    fn of(node: &str, settings: &[(String, String)]) -> Vec<String> {
        let get = |name: &str| {
            settings
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let mut problems = Vec::new();
        match get("maxmemory-policy") {
            Some("noeviction") | None => {}
            Some(policy) => problems.push(format!(
                "{node}: maxmemory-policy is {policy}: job records may be evicted under memory pressure (set noeviction)"
            )),
        }
        match (get("appendonly"), get("appendfsync")) {
            (Some("no"), _) => problems.push(format!(
                "{node}: appendonly is no: jobs acknowledged since the last snapshot are lost when Redis restarts (set appendonly yes, appendfsync always)"
            )),
            (_, Some("no")) => problems.push(format!(
                "{node}: appendfsync is no: the operating system decides when writes reach the disk (set always, or everysec to lose at most a second)"
            )),
            _ => {}
        }
        problems
    }

    /// Reads the settings of one server (`node` names it in the problems).
    pub(crate) async fn read<C: ConnectionLike + Send>(conn: &mut C, node: &str) -> Self {
        let reply = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendonly")
            .arg("appendfsync")
            .arg("maxmemory-policy")
            .query_async::<Value>(conn)
            .await;
        match reply {
            Ok(v) => {
                let settings: Vec<(String, String)> =
                    crate::wire::to_fields(v).into_iter().collect();
                Self {
                    problems: Self::of(node, &settings),
                    unknown: settings.is_empty(),
                }
            }
            Err(_) => Self {
                problems: Vec::new(),
                unknown: true,
            },
        }
    }

    /// Joins the readings of several nodes.
    pub(crate) fn merge(mut self, other: Self) -> Self {
        self.problems.extend(other.problems);
        self.unknown |= other.unknown;
        self
    }

    /// Logs each problem; refuses (naming them) when `require` is set.
    pub(crate) fn enforce(&self, require: bool) -> Result<()> {
        if self.unknown {
            tracing::warn!(
                "cannot read the Redis persistence settings (CONFIG refused): make sure appendonly is yes and maxmemory-policy noeviction"
            );
        }
        for problem in &self.problems {
            tracing::warn!(%problem, "this Redis can lose acknowledged jobs");
        }
        if require && (!self.problems.is_empty() || self.unknown) {
            let why = if self.problems.is_empty() {
                "its persistence settings cannot be read".to_owned()
            } else {
                self.problems.join("; ")
            };
            return Err(Error::config(format!(
                "refusing a Redis that can lose acknowledged jobs (require_durability): {why}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn each_short_setting_is_named() {
        let good = settings(&[
            ("appendonly", "yes"),
            ("appendfsync", "always"),
            ("maxmemory-policy", "noeviction"),
        ]);
        assert!(Durability::of("n", &good).is_empty());
        let bad = settings(&[
            ("appendonly", "no"),
            ("appendfsync", "everysec"),
            ("maxmemory-policy", "allkeys-lru"),
        ]);
        let problems = Durability::of("n:1", &bad);
        assert_eq!(problems.len(), 2);
        assert!(problems[0].contains("allkeys-lru") && problems[0].contains("n:1"));
        assert!(problems[1].contains("appendonly is no"));
        let lax = settings(&[("appendonly", "yes"), ("appendfsync", "no")]);
        assert!(Durability::of("n", &lax)[0].contains("appendfsync is no"));
        let refused = Durability {
            problems: Vec::new(),
            unknown: true,
        };
        assert!(refused.enforce(false).is_ok());
        assert!(refused.enforce(true).is_err());
    }
}
