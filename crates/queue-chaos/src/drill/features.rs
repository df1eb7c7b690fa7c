//! The drill's checks of the features that ride along: webhooks delivered once, schedules
//! ticking once.

use super::*;

/// What the drill's webhook receiver got: every finished job's final status, signed.
#[derive(Debug, Default, Serialize)]
pub(crate) struct WebhookReport {
    /// Requests received (the first ones answered 500).
    pub(crate) requests: usize,
    /// Distinct deliveries answered 200.
    pub(crate) delivered: usize,
    /// Requests whose signature did not verify.
    pub(crate) bad_signatures: usize,
    /// Deliveries still pending or parked when the drill gave up waiting.
    pub(crate) outbox_left: usize,
    /// Finished jobs whose final status was never delivered.
    pub(crate) missing: Vec<String>,
}

pub(super) const WEBHOOK_SECRET: &str = "chaos-drill-webhook-secret";

/// Checks the receiver's log against the finished jobs of the dump.
pub(super) fn check_webhook(
    dump: &check::Dump,
    received: &[queue_testkit::receiver::Received],
    outbox_left: usize,
) -> WebhookReport {
    let mut report = WebhookReport {
        requests: received.len(),
        outbox_left,
        ..WebhookReport::default()
    };
    let mut delivered = std::collections::HashSet::new();
    let mut ids = std::collections::HashSet::new();
    for r in received {
        let ts: i64 = r
            .headers
            .get("x-dcs-timestamp")
            .and_then(|t| t.parse().ok())
            .unwrap_or_default();
        let signature = r
            .headers
            .get("x-dcs-signature")
            .cloned()
            .unwrap_or_default();
        if !queue_core::verify_webhook_signature(WEBHOOK_SECRET, ts, &r.body, &signature) {
            report.bad_signatures += 1;
            continue;
        }
        if r.status != 200 {
            continue;
        }
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&r.body) else {
            continue;
        };
        ids.insert(body["delivery_id"].as_str().unwrap_or_default().to_owned());
        delivered.insert((
            body["job"]["job_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            body["event"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    report.delivered = ids.len();
    for (id, fields) in &dump.jobs {
        let Some(status) = fields.get("status") else {
            continue;
        };
        let finished = status.parse::<JobStatus>().is_ok_and(|s| s.is_terminal());
        if finished
            && !dump.leases.contains_key(id)
            && !delivered.contains(&(id.clone(), status.clone()))
        {
            report.missing.push(format!("{id} {status}"));
        }
    }
    report
}

/// What the schedule's jobs show: one job per tick from the first to the last, none twice.
#[derive(Debug, Default, Serialize)]
pub(crate) struct ScheduleReport {
    /// Ticks that enqueued a job, as the schedule counts them.
    pub(crate) ticks_run: u64,
    /// Jobs of the schedule found in Redis.
    pub(crate) jobs: usize,
    /// A tick missing between the first and the last, a tick with two jobs, a job with an
    /// id that is not its tick's, a count that does not match.
    pub(crate) problems: Vec<String>,
}

/// The drill's schedule: every worker process fires it.
pub(super) const SCHEDULE: &str = "chaos-tick";

/// Checks the schedule's jobs in the dump against the schedule's record.
pub(super) fn check_schedule(
    dump: &check::Dump,
    record: Option<&queue_core::ScheduleRecord>,
) -> ScheduleReport {
    let mut report = ScheduleReport::default();
    let Some(record) = record else {
        report
            .problems
            .push("the schedule could not be read at the end".into());
        return report;
    };
    report.ticks_run = record.ticks_run;
    let mut ticks: Vec<(i64, String)> = Vec::new();
    for (id, fields) in &dump.jobs {
        let Some(meta) = fields
            .get("metadata")
            .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
        else {
            continue;
        };
        if meta["schedule"] != SCHEDULE {
            continue;
        }
        let tick = meta["tick"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis());
        match tick {
            Some(t) => {
                if queue_core::backend::tick_job_id(SCHEDULE, t).to_string() != *id {
                    report
                        .problems
                        .push(format!("job {id} is not the id of tick {t}"));
                }
                ticks.push((t, id.clone()));
            }
            None => report
                .problems
                .push(format!("job {id} has no readable tick")),
        }
    }
    ticks.sort();
    report.jobs = ticks.len();
    for pair in ticks.windows(2) {
        let step = pair[1].0 - pair[0].0;
        if step != 1000 {
            report.problems.push(format!(
                "ticks {} and {} are {step} ms apart (jobs {} and {})",
                pair[0].0, pair[1].0, pair[0].1, pair[1].1
            ));
        }
    }
    if ticks.len() as u64 != record.ticks_run {
        report.problems.push(format!(
            "{} jobs for {} ticks run",
            ticks.len(),
            record.ticks_run
        ));
    }
    if record.ticks_run < 3 {
        report
            .problems
            .push(format!("only {} ticks ran", record.ticks_run));
    }
    report
}
