//! `WorkerConfig`: how a worker runs, from the `DCS_QUEUE_*` variables or set in code.

use std::time::Duration;

use queue_core::{Error, QueueConfig, Result, RetryPolicy};

/// How a worker runs. [`WorkerConfig::from_env`] reads the same `DCS_QUEUE_*` variables as
/// [`QueueConfig::from_env`] (a bad value is an error naming the variable); every field can
/// also be set in code, or one at a time on the [`WorkerBuilder`](crate::WorkerBuilder).
///
/// ```
/// use std::time::Duration;
/// use queue_worker::WorkerConfig;
///
/// let mut config = WorkerConfig::default();          // the documented defaults
/// config.concurrency = 8;
/// config.job_timeout = Duration::from_secs(600);
/// assert!(config.validate().is_ok());
///
/// config.heartbeat = Duration::from_secs(20);        // the fence tolerates 15 s for 30 s
/// let err = config.validate().unwrap_err().to_string();
/// assert!(err.contains("heartbeat (20s)") && err.contains("lease of 30s"), "{err}");
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Jobs run at once (`DCS_QUEUE_MAX_CONCURRENCY`, default 3).
    pub concurrency: usize,
    /// Per-attempt timeout of jobs without their own (`DCS_QUEUE_JOB_TIMEOUT_SECONDS`, 3600 s).
    pub job_timeout: Duration,
    /// Lease of a running job (`DCS_QUEUE_LEASE_SECONDS`, 30 s): a dead worker's job runs
    /// again after it.
    pub lease: Duration,
    /// How often leases are renewed (`DCS_QUEUE_HEARTBEAT_SECONDS`, 10 s): at most
    /// [`longest_heartbeat`](queue_core::backend::longest_heartbeat) of the lease (half of
    /// it), so a renewal and the quicker retries after a failed one land before the fence.
    pub heartbeat: Duration,
    /// How long running jobs may finish once shutdown begins
    /// (`DCS_QUEUE_SHUTDOWN_GRACE_SECONDS`, 30 s).
    pub shutdown_grace: Duration,
    /// Backoff of failed attempts (`DCS_QUEUE_RETRY_*`).
    pub retry: RetryPolicy,
    /// How long a job claimed ahead may expect to wait in this worker (default 1 ms; zero
    /// claims no job ahead). While handlers run shorter than this, each call that stores
    /// outcomes also claims jobs for later, up to `concurrency × claim_ahead / run time`
    /// (at most [`MOST_AHEAD`](crate::MOST_AHEAD)): a slot starts its next job without
    /// waiting a round trip, and one call stores and claims many. A job held longer than
    /// [`GIVE_BACK`](crate::GIVE_BACK) times this (a handler ran long), or a quarter of the
    /// lease if that is shorter, is handed back in its place, no attempt used.
    pub claim_ahead: Duration,
    /// The longest an idle fetch blocks before looking again (2 s); also bounds how long an
    /// idle worker takes to stop fetching on shutdown.
    pub fetch_wait: Duration,
    /// How often expired leases are recovered (lease / 2).
    pub reap_interval: Duration,
    /// How often expired finished records are swept (retention / 10, between 1 and 60 s).
    pub sweep_interval: Duration,
    /// Fires due job schedules (default true): every worker may, and each tick still
    /// enqueues exactly one job (see `queue_core::Schedules`).
    pub schedules: bool,
    /// Delivers durable webhooks from the backend's outbox (default true): every worker
    /// may; each delivery is claimed by one at a time.
    pub webhooks: bool,
    /// How long a claimed webhook delivery is hidden from other workers (default 60 s): a
    /// worker that dies mid-delivery leaves it to be sent again after this.
    pub delivery_lease: Duration,
    /// Where webhook deliveries may connect (`DCS_WEBHOOK_ALLOW`, default: public
    /// addresses only): loopback, private, link-local and metadata addresses are refused
    /// unless allowed by name or range.
    pub webhook_egress: crate::WebhookEgress,
}

impl WorkerConfig {
    /// Reads the `DCS_QUEUE_*` variables of the process environment, and
    /// `DCS_WEBHOOK_ALLOW` (comma-separated addresses, ranges or host names webhook
    /// deliveries may reach besides public addresses).
    pub fn from_env() -> Result<Self> {
        let mut config = Self::from(&QueueConfig::from_env()?);
        if let Ok(list) = std::env::var("DCS_WEBHOOK_ALLOW") {
            config.webhook_egress = crate::WebhookEgress::from_list(&list)
                .map_err(|e| Error::config(format!("DCS_WEBHOOK_ALLOW: {e}")))?;
        }
        Ok(config)
    }

    /// Checks the settings together: positive durations, 1 to
    /// [`MAX_CONCURRENCY`](queue_core::backend::MAX_CONCURRENCY) jobs at once, and a
    /// heartbeat the lease's fence tolerates ([`queue_core::backend::check_heartbeat`]).
    pub fn validate(&self) -> Result<()> {
        let most = queue_core::backend::MAX_CONCURRENCY;
        if !(1..=most).contains(&self.concurrency) {
            return Err(Error::config(format!(
                "worker concurrency ({}) must be from 1 to {most}",
                self.concurrency
            )));
        }
        queue_core::backend::check_heartbeat(self.lease, self.heartbeat)?;
        if self.delivery_lease <= queue_core::backend::DELIVERY_TIMEOUT {
            return Err(Error::config(format!(
                "the webhook delivery lease ({:?}) must be longer than a delivery's timeout ({:?})",
                self.delivery_lease,
                queue_core::backend::DELIVERY_TIMEOUT
            )));
        }
        if self.job_timeout.is_zero()
            || self.fetch_wait.is_zero()
            || self.reap_interval.is_zero()
            || self.sweep_interval.is_zero()
        {
            return Err(Error::config(
                "job timeout, fetch wait and maintenance intervals must be positive",
            ));
        }
        Ok(())
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self::from(&QueueConfig::default())
    }
}

impl From<&QueueConfig> for WorkerConfig {
    fn from(cfg: &QueueConfig) -> Self {
        Self {
            concurrency: cfg.max_concurrency,
            job_timeout: cfg.job_timeout,
            lease: cfg.lease,
            heartbeat: cfg.heartbeat,
            shutdown_grace: cfg.shutdown_grace,
            retry: cfg.retry_policy(),
            claim_ahead: Duration::from_millis(1),
            fetch_wait: Duration::from_secs(2),
            reap_interval: cfg.lease / 2,
            // Often enough that a short retention is honoured; the sweep then catches up in
            // batches, whatever the finish rate.
            sweep_interval: (cfg.retention / 10)
                .clamp(Duration::from_secs(1), Duration::from_secs(60)),
            schedules: true,
            webhooks: true,
            delivery_lease: queue_core::backend::DELIVERY_LEASE,
            webhook_egress: crate::WebhookEgress::default(),
        }
    }
}

impl From<QueueConfig> for WorkerConfig {
    fn from(cfg: QueueConfig) -> Self {
        Self::from(&cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_env_names_the_bad_variable() {
        let cfg = QueueConfig::from_vars([("DCS_QUEUE_LEASE_SECONDS", "soon")]);
        assert!(
            cfg.unwrap_err()
                .to_string()
                .contains("DCS_QUEUE_LEASE_SECONDS")
        );
        let cfg = QueueConfig::from_vars([
            ("DCS_QUEUE_MAX_CONCURRENCY", "12"),
            ("DCS_QUEUE_LEASE_SECONDS", "40"),
            ("DCS_QUEUE_HEARTBEAT_SECONDS", "5"),
            ("DCS_QUEUE_RETENTION_SECONDS", "20"),
        ])
        .unwrap();
        let worker = WorkerConfig::from(&cfg);
        assert_eq!(worker.concurrency, 12);
        assert_eq!(worker.lease, Duration::from_secs(40));
        assert_eq!(worker.heartbeat, Duration::from_secs(5));
        assert_eq!(worker.reap_interval, Duration::from_secs(20));
        assert_eq!(worker.sweep_interval, Duration::from_secs(2));
        assert!(worker.validate().is_ok());
    }

    #[test]
    fn validate_refuses_each_bad_setting() {
        let ok = WorkerConfig::default();
        assert!(ok.validate().is_ok());
        type Break = fn(&mut WorkerConfig);
        let cases: [(&str, Break); 6] = [
            ("concurrency", |c| c.concurrency = 0),
            ("concurrency (10001)", |c| c.concurrency = 10_001),
            ("heartbeat", |c| c.heartbeat = c.lease),
            // 2 s lease: the fence tolerates at most 1 s (half the lease).
            ("heartbeat (1.001s)", |c| {
                c.lease = Duration::from_secs(2);
                c.heartbeat = Duration::from_millis(1001);
            }),
            ("heartbeat", |c| c.heartbeat = Duration::ZERO),
            ("job timeout", |c| c.job_timeout = Duration::ZERO),
        ];
        for (named, break_it) in cases {
            let mut bad = ok.clone();
            break_it(&mut bad);
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains(named), "{err}");
        }
        // Each limit at its value is accepted.
        let mut at = ok.clone();
        at.concurrency = queue_core::backend::MAX_CONCURRENCY;
        at.lease = Duration::from_secs(2);
        at.heartbeat = queue_core::backend::longest_heartbeat(at.lease);
        assert!(at.validate().is_ok());
    }
}
