//! Human tables and JSON documents.

use chrono::{DateTime, SecondsFormat, Utc};
use queue_core::{JobRecord, Page, QueueStats, WorkerInfo};
use serde_json::Value;

pub(crate) fn json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializable")
    );
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| "-".into())
}

pub(crate) fn record(r: &JobRecord) {
    let rows: Vec<(&str, String)> = vec![
        ("job_id", r.job_id.to_string()),
        ("task", r.task.clone()),
        ("status", r.status.to_string()),
        ("priority", r.priority.to_string()),
        ("progress", format!("{}%", r.progress)),
        (
            "current_step",
            r.current_step.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "unique_key",
            r.unique_key.clone().unwrap_or_else(|| "-".into()),
        ),
        ("group", r.group.clone().unwrap_or_else(|| "-".into())),
        ("replaced", r.replaced.to_string()),
        ("sequence", r.sequence.clone().unwrap_or_else(|| "-".into())),
        (
            "waits_for",
            r.after.map_or_else(|| "-".into(), |a| a.to_string()),
        ),
        (
            "retry_count",
            format!("{} of {}", r.retry_count, r.max_retries),
        ),
        (
            "error_message",
            r.error_message.clone().unwrap_or_else(|| "-".into()),
        ),
        ("created_at", time(Some(r.created_at))),
        ("started_at", time(r.started_at)),
        ("completed_at", time(r.completed_at)),
        ("run_at", time(r.run_at)),
        (
            "worker_id",
            r.worker_id.clone().unwrap_or_else(|| "-".into()),
        ),
        ("cancel_requested", r.cancel_requested.to_string()),
        (
            "parent",
            r.parent
                .map(|p| format!("{p} (on failure: {})", r.policy().as_str()))
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "children",
            r.children.map(counts).unwrap_or_else(|| "-".into()),
        ),
        ("payload", r.payload.as_str().to_owned()),
        (
            "result",
            r.result
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_else(|| "-".into()),
        ),
    ];
    for (k, v) in rows {
        println!("{k:<17} {v}");
    }
}

/// A parent's child counts in one line.
fn counts(c: queue_core::ChildCounts) -> String {
    format!(
        "{} waiting, {} completed, {} failed, {} partial, {} cancelled",
        c.waiting, c.completed, c.failed, c.partial, c.cancelled
    )
}

/// A flow as an indented tree: status, progress, task, id, and a parent's counts.
pub(crate) fn tree(t: &queue_core::FlowTree) {
    for (depth, r) in t.walk() {
        let waits = if r.waits_on_children() {
            " (waits on children)"
        } else {
            ""
        };
        let kids = r
            .children
            .map(|c| format!("  [{}]", counts(c)))
            .unwrap_or_default();
        println!(
            "{:indent$}{:<10} {:>3}%  {}  {}{waits}{kids}",
            "",
            r.status.as_str(),
            r.progress,
            r.task,
            r.job_id,
            indent = depth * 2
        );
    }
    fn truncated(t: &queue_core::FlowTree) -> u32 {
        t.truncated + t.children.iter().map(truncated).sum::<u32>()
    }
    let left = truncated(t);
    if left > 0 {
        println!("... and {left} more (raise --limit)");
    }
}

/// Prints rows as aligned columns under a header.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
}

pub(crate) fn page(p: &Page) {
    let rows: Vec<Vec<String>> = p
        .jobs
        .iter()
        .map(|r| {
            vec![
                r.job_id.to_string(),
                r.task.clone(),
                r.status.to_string(),
                r.priority.to_string(),
                format!("{}%", r.progress),
                r.retry_count.to_string(),
                r.unique_key.clone().unwrap_or_else(|| "-".into()),
                time(Some(r.created_at)),
            ]
        })
        .collect();
    table(
        &[
            "JOB_ID",
            "TASK",
            "STATUS",
            "PRIORITY",
            "PROGRESS",
            "RETRIES",
            "UNIQUE_KEY",
            "CREATED_AT",
        ],
        &rows,
    );
    if let Some(cursor) = &p.next_cursor {
        println!("more: --cursor {cursor}");
    }
}

/// The stats document: the keys the operators' contract names.
pub(crate) fn stats(s: &QueueStats) {
    let d = |p: queue_core::Priority| s.depth.get(&p).copied().unwrap_or(0);
    for (k, v) in [
        ("total", s.total),
        ("queued", s.queued),
        ("  scheduled", s.scheduled),
        ("  on children", s.waiting_on_children),
        ("  ready high", d(queue_core::Priority::High)),
        ("  ready normal", d(queue_core::Priority::Normal)),
        ("  ready low", d(queue_core::Priority::Low)),
        ("processing", s.processing),
        ("completed", s.completed),
        ("failed", s.failed),
        ("partial", s.partial),
        ("cancelled", s.cancelled),
        ("active_workers", s.active_workers),
    ] {
        println!("{k:<15} {v}");
    }
    if s.paused {
        println!(
            "{:<15} yes (no job starts until `queuectl resume`)",
            "paused"
        );
    }
    if let Some(limit) = s.rate_limit {
        println!("{:<15} {limit}", "rate limit");
    }
    if let Some(until) = s.held_until {
        println!(
            "{:<15} until {until} (a handler reported a rate limit)",
            "held"
        );
    }
}

pub(crate) fn workers(list: &[WorkerInfo]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|w| {
            vec![
                w.worker_id.clone(),
                w.host.clone(),
                w.pid.to_string(),
                if w.version.is_empty() {
                    "-".into()
                } else {
                    w.version.clone()
                },
                w.concurrency.to_string(),
                if w.lost { "lost" } else { "alive" }.to_owned(),
                time(Some(w.last_seen)),
                w.jobs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect();
    table(
        &[
            "WORKER_ID",
            "HOST",
            "PID",
            "VERSION",
            "CONCURRENCY",
            "STATE",
            "LAST_SEEN",
            "JOBS",
        ],
        &rows,
    );
}

pub(crate) fn tasks(list: &[queue_core::TaskEntry]) {
    if list.is_empty() {
        println!("no live worker");
        return;
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            let fields = t.fields();
            vec![
                t.task.clone(),
                t.workers.len().to_string(),
                if t.schema.is_none() {
                    "- (no schema shared)".into()
                } else {
                    fields.join(", ")
                },
            ]
        })
        .collect();
    table(&["TASK", "WORKERS", "FIELDS (? optional)"], &rows);
}

pub(crate) fn groups(list: &queue_core::GroupList) {
    if list.groups.is_empty() && list.other_groups == 0 {
        println!("no group has unfinished jobs");
        return;
    }
    println!(
        "{:<32} {:>10} {:>8} {:>8} {:>8}  limits",
        "GROUP", "UNFINISHED", "READY", "RUNNING", "WAITING"
    );
    for g in &list.groups {
        let mut limits = Vec::new();
        if g.paused {
            limits.push("paused".to_owned());
        }
        if let Some(n) = g.concurrency {
            limits.push(format!("{n} at once"));
        }
        if let Some(w) = g.weight {
            limits.push(format!("weight {w}"));
        }
        if let Some(rate) = g.rate_limit {
            limits.push(rate.to_string());
        }
        if g.held_until.is_some() {
            limits.push("held".to_owned());
        }
        println!(
            "{:<32} {:>10} {:>8} {:>8} {:>8}  {}",
            g.group,
            g.unfinished,
            g.ready,
            g.running,
            g.unfinished.saturating_sub(g.ready + g.running),
            limits.join(", ")
        );
    }
    if list.other_groups > 0 {
        println!(
            "{:<32} {:>10}",
            format!("({} other groups)", list.other_groups),
            list.other_unfinished
        );
    }
}

pub(crate) fn group(g: &queue_core::GroupStats) {
    println!("{:<15} {}", "group", g.group);
    println!("{:<15} {}", "ready", g.ready);
    println!("{:<15} {}", "running", g.running);
    println!("{:<15} {}", "unfinished", g.unfinished);
    let limit = g
        .concurrency
        .map(|n| format!("{n} at once"))
        .unwrap_or_else(|| "none".into());
    println!("{:<15} {limit}", "concurrency");
    println!("{:<15} {}", "weight", g.weight.unwrap_or(1));
    if let Some(rate) = g.rate_limit {
        println!("{:<15} {rate}", "rate limit");
    }
    if let Some(until) = g.held_until {
        println!(
            "{:<15} until {until} (a handler reported a limit hit)",
            "held"
        );
    }
    println!("{:<15} {}", "paused", if g.paused { "yes" } else { "no" });
}

/// Schedules as a table: name, cadence, next run, last tick, ticks run / skipped, state.
pub(crate) fn schedules(list: &[queue_core::ScheduleRecord]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.schedule.name.clone(),
                r.schedule.cadence.to_string(),
                r.schedule.job.task.clone(),
                r.next_run.map_or("-".into(), |t| t.to_rfc3339()),
                r.last_tick.map_or("-".into(), |t| t.to_rfc3339()),
                format!("{}/{}", r.ticks_run, r.ticks_skipped),
                r.schedule.missed.to_string(),
                if r.schedule.paused {
                    "paused"
                } else {
                    "active"
                }
                .into(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "CADENCE",
            "TASK",
            "NEXT RUN",
            "LAST TICK",
            "RUN/SKIPPED",
            "MISSED",
            "STATE",
        ],
        &rows,
    );
}

/// Webhooks as a table (secrets are never shown).
pub(crate) fn webhooks(list: &[queue_core::Webhook]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|w| {
            vec![
                w.name.clone(),
                w.url.clone(),
                w.events
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                w.task.clone().unwrap_or_else(|| "-".into()),
                w.group.clone().unwrap_or_else(|| "-".into()),
                format!("{} (first wait {} ms)", w.max_attempts, w.retry_ms),
            ]
        })
        .collect();
    table(
        &["NAME", "URL", "EVENTS", "TASK", "GROUP", "ATTEMPTS"],
        &rows,
    );
}

/// Webhook deliveries as a table.
pub(crate) fn deliveries(list: &[queue_core::Delivery]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                d.webhook.clone(),
                d.event.to_string(),
                d.attempts.to_string(),
                d.last_error.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &["DELIVERY", "WEBHOOK", "EVENT", "ATTEMPTS", "LAST ERROR"],
        &rows,
    );
}
