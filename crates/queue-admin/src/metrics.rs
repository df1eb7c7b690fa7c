//! Prometheus text at `/metrics`: counts from the backend's stats (no scan), and a job
//! duration histogram from the events this server observes.

use std::{
    collections::HashMap,
    fmt::Write,
    sync::{Arc, Mutex},
};

use axum::{extract::State as Extract, http::header, response::IntoResponse};
use futures_util::StreamExt;
use queue_core::backend::to_millis;
use queue_core::{EventKind, JobId, JobStatus, Priority, SharedBackend};

use crate::{State, error::ApiError};

const BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Durations of attempts that ended while this server watched.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    inner: Mutex<Histogram>,
}

#[derive(Debug, Default)]
struct Histogram {
    started: HashMap<JobId, i64>,
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Follows the queue's events: start time on `processing`, a sample on the next transition.
pub(crate) async fn observe(backend: SharedBackend, metrics: Arc<Metrics>) {
    loop {
        if let Ok(mut events) = backend.subscribe(None).await {
            while let Some(e) = events.next().await {
                if let EventKind::Transition { to, .. } = e.kind {
                    let at = to_millis(e.at);
                    let mut h = metrics.inner.lock().unwrap_or_else(|p| p.into_inner());
                    if to == JobStatus::Processing {
                        if h.started.len() < 100_000 {
                            h.started.insert(e.job_id, at);
                        }
                    } else if let Some(start) = h.started.remove(&e.job_id) {
                        let secs = (at - start).max(0) as f64 / 1000.0;
                        for (i, b) in BUCKETS.iter().enumerate() {
                            if secs <= *b {
                                h.counts[i] += 1;
                            }
                        }
                        h.count += 1;
                        h.sum += secs;
                    }
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Groups with a series of their own; the others are summed (bounded cardinality).
pub(crate) const METRIC_GROUPS: usize = 20;

/// A label value in the text format: `\`, `"` and line breaks escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A gauge family: its header, then its samples (labels inside the braces, value), so
/// every family's samples stay together as the text format requires.
fn gauge(
    out: &mut String,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, u64)>,
) {
    family(out, name, "gauge", help);
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// Per group series for the busiest [`METRIC_GROUPS`] groups, and the rest summed.
fn groups(out: &mut String, queue: &str, list: &queue_core::GroupList) {
    let queue_only = format!("queue=\"{queue}\"");
    let of =
        |g: &queue_core::GroupStats| format!("queue=\"{queue}\",group=\"{}\"", label(&g.group));
    gauge(
        out,
        "dcs_queue_groups",
        "Groups with unfinished jobs.",
        [(
            queue_only.clone(),
            list.groups.len() as u64 + list.other_groups,
        )],
    );
    gauge(
        out,
        "dcs_queue_group_jobs",
        "Unfinished jobs of the busiest groups: ready, running, or waiting (delayed or in a retry backoff).",
        list.groups.iter().flat_map(|g| {
            let waiting = g.unfinished.saturating_sub(g.ready + g.running);
            [
                ("ready", g.ready),
                ("running", g.running),
                ("waiting", waiting),
            ]
            .map(|(state, n)| (format!("{},state=\"{state}\"", of(g)), n))
        }),
    );
    gauge(
        out,
        "dcs_queue_other_groups_jobs",
        "Unfinished jobs of the groups without series of their own.",
        [(queue_only, list.other_unfinished)],
    );
    gauge(
        out,
        "dcs_queue_group_paused",
        "1 while a group (of the busiest) is paused.",
        list.groups.iter().map(|g| (of(g), u64::from(g.paused))),
    );
    gauge(
        out,
        "dcs_queue_group_concurrency_limit",
        "A group's concurrency limit (of the busiest; absent without a limit).",
        list.groups
            .iter()
            .filter_map(|g| g.concurrency.map(|max| (of(g), u64::from(max)))),
    );
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub(crate) async fn render(Extract(state): Extract<State>) -> Result<impl IntoResponse, ApiError> {
    let s = state.backend.stats().await?;
    let name = state.backend.to_string();
    // A queue name may hold `"` or `\`: escaped like every label value.
    let queue = label(
        name.rsplit("queue=")
            .next()
            .map(|r| r.trim_end_matches(')'))
            .unwrap_or("default"),
    );
    let mut out = String::new();
    family(
        &mut out,
        "dcs_queue_jobs",
        "gauge",
        "Retained jobs by status.",
    );
    for (status, n) in [
        (JobStatus::Queued, s.queued),
        (JobStatus::Processing, s.processing),
        (JobStatus::Completed, s.completed),
        (JobStatus::Failed, s.failed),
        (JobStatus::Partial, s.partial),
        (JobStatus::Cancelled, s.cancelled),
    ] {
        let _ = writeln!(
            out,
            "dcs_queue_jobs{{queue=\"{queue}\",status=\"{status}\"}} {n}"
        );
    }
    family(
        &mut out,
        "dcs_queue_depth",
        "gauge",
        "Jobs ready to run, by priority.",
    );
    for p in Priority::ALL {
        let _ = writeln!(
            out,
            "dcs_queue_depth{{queue=\"{queue}\",priority=\"{p}\"}} {}",
            s.depth.get(&p).copied().unwrap_or(0)
        );
    }
    family(
        &mut out,
        "dcs_queue_scheduled",
        "gauge",
        "Queued jobs waiting for a delay or a retry backoff.",
    );
    let _ = writeln!(
        out,
        "dcs_queue_scheduled{{queue=\"{queue}\"}} {}",
        s.scheduled
    );
    family(
        &mut out,
        "dcs_queue_paused",
        "gauge",
        "1 while the queue is paused (no job starts).",
    );
    let _ = writeln!(
        out,
        "dcs_queue_paused{{queue=\"{queue}\"}} {}",
        u8::from(s.paused)
    );
    family(
        &mut out,
        "dcs_queue_rate_limit_max",
        "gauge",
        "Starts allowed per rate limit window (absent without a limit).",
    );
    family(
        &mut out,
        "dcs_queue_rate_limit_window_seconds",
        "gauge",
        "The rate limit's window (absent without a limit).",
    );
    if let Some(limit) = s.rate_limit {
        let _ = writeln!(
            out,
            "dcs_queue_rate_limit_max{{queue=\"{queue}\"}} {}\ndcs_queue_rate_limit_window_seconds{{queue=\"{queue}\"}} {}",
            limit.max,
            limit.per.as_secs_f64()
        );
    }
    family(
        &mut out,
        "dcs_queue_active_workers",
        "gauge",
        "Workers seen within their liveness window.",
    );
    let _ = writeln!(
        out,
        "dcs_queue_active_workers{{queue=\"{queue}\"}} {}",
        s.active_workers
    );
    let t = &s.totals;
    family(
        &mut out,
        "dcs_queue_jobs_total",
        "counter",
        "Jobs that reached a state, since the queue was created.",
    );
    for (event, n) in [
        ("enqueued", t.enqueued),
        ("completed", t.completed),
        ("failed", t.failed),
        ("partial", t.partial),
        ("cancelled", t.cancelled),
    ] {
        let _ = writeln!(
            out,
            "dcs_queue_jobs_total{{queue=\"{queue}\",event=\"{event}\"}} {n}"
        );
    }
    family(
        &mut out,
        "dcs_queue_retries_total",
        "counter",
        "Failed attempts scheduled for a retry.",
    );
    let _ = writeln!(
        out,
        "dcs_queue_retries_total{{queue=\"{queue}\"}} {}",
        t.retried
    );
    family(
        &mut out,
        "dcs_queue_lease_recoveries_total",
        "counter",
        "Jobs recovered after their worker's lease expired.",
    );
    let _ = writeln!(
        out,
        "dcs_queue_lease_recoveries_total{{queue=\"{queue}\"}} {}",
        t.recovered
    );
    groups(
        &mut out,
        &queue,
        &state.backend.groups(METRIC_GROUPS).await?,
    );
    let h = state
        .metrics
        .inner
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    family(
        &mut out,
        "dcs_queue_job_duration_seconds",
        "histogram",
        "Attempt durations observed by this server.",
    );
    for (b, n) in BUCKETS.iter().zip(h.counts) {
        let _ = writeln!(
            out,
            "dcs_queue_job_duration_seconds_bucket{{queue=\"{queue}\",le=\"{b}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "dcs_queue_job_duration_seconds_bucket{{queue=\"{queue}\",le=\"+Inf\"}} {}",
        h.count
    );
    let _ = writeln!(
        out,
        "dcs_queue_job_duration_seconds_sum{{queue=\"{queue}\"}} {}",
        h.sum
    );
    let _ = writeln!(
        out,
        "dcs_queue_job_duration_seconds_count{{queue=\"{queue}\"}} {}",
        h.count
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}
