//! `queuectl schedule ...`.

use super::*;

pub(super) async fn schedule(
    backend: &SharedBackend,
    action: ScheduleAction,
    json: bool,
) -> Result<()> {
    use queue_core::{Schedule, Schedules};
    let show = |r: &queue_core::ScheduleRecord| {
        if json {
            output::json(r)
        } else {
            output::schedules(std::slice::from_ref(r))
        }
    };
    match action {
        ScheduleAction::Set {
            name,
            cron,
            tz,
            every,
            task,
            payload,
            priority,
            max_retries,
            group,
            missed,
            grace,
            paused,
        } => {
            let mut job = NewJob::with_payload(task, payload);
            if let Some(p) = priority {
                job = job.priority(p);
            }
            if let Some(n) = max_retries {
                job = job.max_retries(n);
            }
            if let Some(g) = group {
                job = job.group(g);
            }
            let schedule = match (cron, every) {
                (Some(expr), _) => Schedule::cron(name, expr, job)?.time_zone(tz),
                (None, Some(secs)) => Schedule::every(name, Duration::from_secs(secs), job)?,
                (None, None) => unreachable!("clap requires --cron or --every"),
            };
            let record = backend
                .put_schedule(
                    schedule
                        .missed(missed)
                        .grace(Duration::from_secs(grace))
                        .paused(paused),
                )
                .await?;
            show(&record);
        }
        ScheduleAction::List => {
            let all = backend.schedules().await?;
            if json {
                output::json(&all)
            } else {
                output::schedules(&all)
            }
        }
        ScheduleAction::Show { name } => show(&backend.schedule(&name).await?),
        ScheduleAction::Pause { name } => show(&backend.pause_schedule(&name).await?),
        ScheduleAction::Resume { name } => show(&backend.resume_schedule(&name).await?),
        ScheduleAction::Delete { name } => {
            backend.delete_schedule(&name).await?;
            if json {
                output::json(&json!({ "deleted": name }))
            } else {
                println!("deleted {name}")
            }
        }
        ScheduleAction::RunDue => {
            let report = backend.run_due_schedules().await?;
            let fired: Vec<_> = report
                .fired
                .iter()
                .map(|(name, jobs)| json!({ "schedule": name, "jobs": jobs }))
                .collect();
            let errors: Vec<_> = report
                .errors
                .iter()
                .map(|(name, e)| json!({ "schedule": name, "error": e.chain() }))
                .collect();
            if json {
                output::json(&json!({ "fired": fired, "errors": errors }))
            } else {
                for (name, jobs) in &report.fired {
                    for id in jobs {
                        println!("{name}\t{id}");
                    }
                }
                for (name, e) in &report.errors {
                    eprintln!("{name}: {}", e.chain());
                }
            }
            if let Some((_, e)) = report.errors.into_iter().next() {
                return Err(e);
            }
        }
    }
    Ok(())
}
