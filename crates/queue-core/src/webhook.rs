//! Durable completion webhooks: a subscription (URL, the finished statuses it wants, an
//! optional task and group filter, a secret) stored in the backend; every matching
//! transition to a finished status leaves a delivery in the backend's outbox **in the same
//! atomic step as the transition**, so no crash can lose one. A delivery loop (every
//! worker runs one) POSTs each delivery as JSON, signed with HMAC-SHA256, retries with
//! backoff, records the attempts and parks a delivery that keeps failing, to be sent again
//! by an operator.
//!
//! Delivery is at least once: a receiver dedupes on the `X-Dcs-Delivery` id (the same for
//! every attempt of one delivery).
//!
//! ```
//! use queue_core::{JobStatus, Webhook};
//! let hook = Webhook::new("publisher", "http://publisher.internal/hooks/books", "a-secret-of-16+-bytes")
//!     .events([JobStatus::Completed, JobStatus::Partial])
//!     .task("process_book");
//! assert!(hook.check().is_ok());
//! ```

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::clock::{Millis, from_millis};
use crate::{Error, JobId, JobStatus, Result};

/// Webhook names are 1 to this many bytes.
pub const MAX_WEBHOOK_NAME_BYTES: usize = 128;

/// The most webhooks one queue may have: every transition to a finished status reads
/// their filters, so their number bounds the work of every finish. A new one past it is
/// refused (replacing an existing one is not).
pub const MAX_WEBHOOKS: usize = 100;
/// How long one POST may take before it counts as failed.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed delivery is hidden from other delivery loops.
pub const DELIVERY_LEASE: Duration = Duration::from_secs(60);
/// The longest wait between two attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// A subscription to finished jobs. Its `Debug` hides the secret and the URL's
/// credentials, so a logged webhook shows neither.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// Its name: 1 to [`MAX_WEBHOOK_NAME_BYTES`] bytes, no control character, no `|`.
    pub name: String,
    /// Where deliveries are POSTed (`http://` or `https://`).
    pub url: String,
    /// The finished statuses it wants (default: all four).
    #[serde(default = "all_finished")]
    pub events: Vec<JobStatus>,
    /// Only jobs of this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Only jobs of this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The HMAC-SHA256 key of the `X-Dcs-Signature` header. Never shown by listings.
    pub secret: String,
    /// Attempts before a delivery is parked (default 10).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// The wait after the first failed attempt, doubled after each (default 5 s, at most
    /// an hour).
    #[serde(default = "default_retry_ms")]
    pub retry_ms: u64,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("events", &self.events)
            .field("task", &self.task)
            .field("group", &self.group)
            .field("secret", &"***")
            .field("max_attempts", &self.max_attempts)
            .field("retry_ms", &self.retry_ms)
            .finish()
    }
}

fn all_finished() -> Vec<JobStatus> {
    JobStatus::ALL
        .into_iter()
        .filter(|s| s.is_terminal())
        .collect()
}

fn default_attempts() -> u32 {
    10
}

fn default_retry_ms() -> u64 {
    5_000
}

impl Webhook {
    /// A webhook for every finished status.
    pub fn new(name: impl Into<String>, url: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            events: all_finished(),
            task: None,
            group: None,
            secret: secret.into(),
            max_attempts: default_attempts(),
            retry_ms: default_retry_ms(),
        }
    }

    /// Only these finished statuses.
    pub fn events(mut self, events: impl IntoIterator<Item = JobStatus>) -> Self {
        self.events = events.into_iter().collect();
        self
    }

    /// Only jobs of this task.
    pub fn task(mut self, task: impl Into<String>) -> Self {
        self.task = Some(task.into());
        self
    }

    /// Only jobs of this group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Attempts before a delivery is parked, and the first retry's wait.
    pub fn retries(mut self, max_attempts: u32, first_wait: Duration) -> Self {
        self.max_attempts = max_attempts;
        self.retry_ms = crate::clock::duration_ms(first_wait) as u64;
        self
    }

    /// Checks every field, naming the one that is wrong.
    pub fn check(&self) -> Result<()> {
        check_webhook_name(&self.name)?;
        let scheme_ok = self.url.starts_with("http://") || self.url.starts_with("https://");
        if !scheme_ok || self.url.len() > 2048 || self.url.chars().any(char::is_whitespace) {
            return Err(Error::invalid(format!(
                "webhook url `{}` is not an http:// or https:// URL",
                redact_url(&self.url)
            )));
        }
        if self.events.is_empty() {
            return Err(Error::invalid("webhook events is empty"));
        }
        if let Some(s) = self.events.iter().find(|s| !s.is_terminal()) {
            return Err(Error::invalid(format!(
                "webhook events: `{s}` is not a finished status (completed, failed, partial, cancelled)"
            )));
        }
        if let Some(t) = &self.task
            && (t.is_empty() || t.contains('|'))
        {
            return Err(Error::invalid("webhook task is empty or holds `|`"));
        }
        if let Some(g) = &self.group {
            crate::group::check_group_name(g)?;
        }
        if self.secret.len() < 16 {
            return Err(Error::invalid(
                "webhook secret must be at least 16 bytes (it signs every delivery)",
            ));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(Error::invalid(format!(
                "webhook max_attempts {} is not in 1..=100",
                self.max_attempts
            )));
        }
        if !(100..=3_600_000).contains(&self.retry_ms) {
            return Err(Error::invalid(format!(
                "webhook retry_ms {} is not in 100..=3600000",
                self.retry_ms
            )));
        }
        Ok(())
    }

    /// Whether a job of `task` and `group` reaching `status` is delivered to this webhook.
    pub fn wants(&self, task: &str, group: Option<&str>, status: JobStatus) -> bool {
        self.events.contains(&status)
            && self.task.as_deref().is_none_or(|t| t == task)
            && self.group.as_deref().is_none_or(|g| Some(g) == group)
    }

    /// The filter as a backend stores it next to the webhook for the transition's check:
    /// `<statuses, comma separated>|<task or empty>|<group or empty>`.
    pub fn filter(&self) -> String {
        let events: Vec<&str> = self.events.iter().map(|s| s.as_str()).collect();
        format!(
            "{}|{}|{}",
            events.join(","),
            self.task.as_deref().unwrap_or(""),
            self.group.as_deref().unwrap_or("")
        )
    }

    /// The webhook as listings show it: the secret replaced by `***`.
    pub fn redacted(&self) -> Self {
        Self {
            secret: "***".into(),
            url: redact_url(&self.url),
            ..self.clone()
        }
    }
}

/// A URL with its user information (`user:password@`) cut out.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s && !url[s + 3..at].contains('/') => {
            format!("{}***@{}", &url[..s + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Checks a webhook's name.
pub fn check_webhook_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_WEBHOOK_NAME_BYTES {
        return Err(Error::invalid(format!(
            "webhook name must be 1 to {MAX_WEBHOOK_NAME_BYTES} bytes"
        )));
    }
    if name.chars().any(|c| c.is_control() || c == '|') {
        return Err(Error::invalid(format!(
            "webhook name `{}` holds a control character or `|`",
            name.escape_debug()
        )));
    }
    Ok(())
}

/// One delivery: what the outbox holds for one (transition, webhook).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Its id, the same for every attempt: receivers dedupe on it.
    pub id: String,
    /// The webhook it goes to.
    pub webhook: String,
    /// The job.
    pub job_id: JobId,
    /// The finished status it reached.
    pub event: JobStatus,
    /// When (ms).
    pub at: Millis,
    /// The job's task.
    #[serde(default)]
    pub task: String,
    /// The job's group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The job's unique key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    /// Attempts made.
    #[serde(default)]
    pub attempts: u32,
    /// When the last attempt was made (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<Millis>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Parked: no more attempts until an operator sends it again.
    #[serde(default)]
    pub parked: bool,
}

/// What a delivery's POST body says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryBody {
    /// The delivery's id.
    pub delivery_id: String,
    /// The webhook.
    pub webhook: String,
    /// The finished status.
    pub event: JobStatus,
    /// When the job reached it.
    pub at: DateTime<Utc>,
    /// This attempt's number (1 first).
    pub attempt: u32,
    /// The job: id, task, status, group, unique key.
    pub job: DeliveredJob,
}

/// The job in a delivery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveredJob {
    /// Its id.
    pub job_id: JobId,
    /// Its task.
    pub task: String,
    /// The status it reached.
    pub status: JobStatus,
    /// Its group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Its unique key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
}

impl Delivery {
    /// The id of the delivery of job `job` reaching `event` at `at` to webhook `webhook`.
    pub fn id_of(job: JobId, event: JobStatus, at: Millis, webhook: &str) -> String {
        format!("{job}.{event}.{at}.{webhook}")
    }

    /// The POST body of the next attempt.
    pub fn body(&self) -> DeliveryBody {
        DeliveryBody {
            delivery_id: self.id.clone(),
            webhook: self.webhook.clone(),
            event: self.event,
            at: from_millis(self.at),
            attempt: self.attempts + 1,
            job: DeliveredJob {
                job_id: self.job_id,
                task: self.task.clone(),
                status: self.event,
                group: self.group.clone(),
                unique_key: self.unique_key.clone(),
            },
        }
    }

    /// What a failed attempt at `now` makes of it: retried after a backoff (the delivery
    /// and the wait), or parked once `max_attempts` were made.
    pub fn failed(&self, hook: &Webhook, error: &str, now: Millis) -> (Delivery, Option<Duration>) {
        let mut next = self.clone();
        next.attempts += 1;
        next.last_attempt_at = Some(now);
        next.last_error = Some(error.chars().take(500).collect());
        if next.attempts >= hook.max_attempts {
            next.parked = true;
            return (next, None);
        }
        let wait = retry_delay(hook.retry_ms, next.attempts);
        (next, Some(wait))
    }

    /// The stored form (JSON).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a delivery serializes")
    }

    /// Reads the stored form.
    pub fn decode(text: &str) -> Result<Self> {
        serde_json::from_str(text)
            .map_err(|e| Error::corrupt(format!("webhook delivery cannot be decoded: {e}")))
    }
}

/// The wait after failed attempt `attempt` (1 first): `first_ms` doubled per attempt, at
/// most [`MAX_RETRY_DELAY`].
pub fn retry_delay(first_ms: u64, attempt: u32) -> Duration {
    let factor = 1u64 << attempt.saturating_sub(1).min(30);
    Duration::from_millis(first_ms.saturating_mul(factor)).min(MAX_RETRY_DELAY)
}

/// The `X-Dcs-Signature` value of `body` sent at `timestamp` (Unix seconds):
/// `sha256=<hex of HMAC-SHA256(secret, "<timestamp>.<body>")>`. A receiver recomputes it
/// with the shared secret and rejects a mismatch (and an old timestamp, against replays).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Checks a signature as a receiver would (constant time).
pub fn verify_signature(secret: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Some(given) = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// How a claimed delivery ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settle {
    /// Delivered (or its webhook is gone): removed from the outbox.
    Remove,
    /// Try again after this wait (from the backend's now), stored as given.
    Retry(String, Duration),
    /// Parked, stored as given.
    Park(String),
}

/// A delivery handed to a delivery loop, with its webhook (`None`: deleted since).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedDelivery {
    /// The stored form as claimed (a settle applies only if it is still this).
    pub stored: String,
    /// The delivery.
    pub delivery: Delivery,
    /// Its webhook, secret included.
    pub webhook: Option<Webhook>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_name_the_scheme() {
        let sig = signature("0123456789abcdef", 1_700_000_000, b"{\"a\":1}");
        assert!(sig.starts_with("sha256=") && sig.len() == 71);
        assert!(verify_signature(
            "0123456789abcdef",
            1_700_000_000,
            b"{\"a\":1}",
            &sig
        ));
        assert!(!verify_signature(
            "0123456789abcdeX",
            1_700_000_000,
            b"{\"a\":1}",
            &sig
        ));
        assert!(!verify_signature(
            "0123456789abcdef",
            1_700_000_001,
            b"{\"a\":1}",
            &sig
        ));
        assert!(!verify_signature(
            "0123456789abcdef",
            1_700_000_000,
            b"{\"a\":2}",
            &sig
        ));
        assert!(!verify_signature(
            "0123456789abcdef",
            1_700_000_000,
            b"{\"a\":1}",
            "md5=00"
        ));
        // RFC 4231 test case 2 (key "Jefe"), as a check of the primitive.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn retries_back_off_then_park() {
        let hook =
            Webhook::new("h", "http://x", "0123456789abcdef").retries(3, Duration::from_secs(1));
        let d = Delivery {
            id: "d".into(),
            webhook: "h".into(),
            job_id: JobId::new(),
            event: JobStatus::Completed,
            at: 0,
            task: "t".into(),
            group: None,
            unique_key: None,
            attempts: 0,
            last_attempt_at: None,
            last_error: None,
            parked: false,
        };
        let (d1, wait) = d.failed(&hook, "503", 10_000);
        assert_eq!((d1.attempts, wait), (1, Some(Duration::from_secs(1))));
        assert_eq!(d1.last_attempt_at, Some(10_000));
        let (d2, wait) = d1.failed(&hook, "503", 11_000);
        assert_eq!((d2.attempts, wait), (2, Some(Duration::from_secs(2))));
        let (d3, at) = d2.failed(&hook, "timeout", 13_000);
        assert_eq!((d3.attempts, at, d3.parked), (3, None, true));
        assert_eq!(d3.last_error.as_deref(), Some("timeout"));
        assert_eq!(retry_delay(5_000, 30), MAX_RETRY_DELAY);
        assert_eq!(d3.body().attempt, 4);
        assert_eq!(Delivery::decode(&d3.encode()).unwrap(), d3);
    }

    #[test]
    fn filters_and_checks() {
        let hook = Webhook::new("h", "http://x/y", "0123456789abcdef")
            .events([JobStatus::Failed])
            .task("process_book")
            .group("pub-7");
        assert!(hook.wants("process_book", Some("pub-7"), JobStatus::Failed));
        assert!(!hook.wants("process_book", Some("pub-7"), JobStatus::Completed));
        assert!(!hook.wants("other", Some("pub-7"), JobStatus::Failed));
        assert!(!hook.wants("process_book", None, JobStatus::Failed));
        assert_eq!(hook.filter(), "failed|process_book|pub-7");
        assert_eq!(
            Webhook::new("h", "http://x", "0123456789abcdef").filter(),
            "completed,failed,partial,cancelled||"
        );
        let bad = |h: Webhook| h.check().unwrap_err().to_string();
        assert!(bad(Webhook::new("h", "ftp://x", "0123456789abcdef")).contains("url"));
        assert!(bad(Webhook::new("h", "http://x", "short")).contains("secret"));
        assert!(bad(Webhook::new("", "http://x", "0123456789abcdef")).contains("name"));
        assert!(
            bad(Webhook::new("h", "http://x", "0123456789abcdef").events([JobStatus::Queued]))
                .contains("queued")
        );
        let debug = format!(
            "{:?}",
            Webhook::new("h", "http://user:pw@host/x", "0123456789abcdef")
        );
        assert!(
            !debug.contains("0123456789abcdef") && !debug.contains("pw"),
            "{debug}"
        );
        let shown = Webhook::new("h", "http://user:pw@host/x", "0123456789abcdef").redacted();
        assert_eq!(shown.secret, "***");
        assert_eq!(shown.url, "http://***@host/x");
        let err = bad(Webhook::new(
            "h",
            "gopher://user:pw@host/x",
            "0123456789abcdef",
        ));
        assert!(!err.contains("pw"), "{err}");
    }
}
