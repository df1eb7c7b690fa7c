//! `queuectl watch` and the live views it draws.

use super::*;

/// Follows jobs to their end: progress bars on a terminal, one line per change otherwise.
pub(super) async fn watch(backend: &SharedBackend, mut ids: Vec<JobId>, json: bool) -> Result<()> {
    let mut events = backend.subscribe(None).await?;
    if ids.is_empty() {
        let running = backend
            .list(&ListQuery::new().status(JobStatus::Processing).limit(1000))
            .await?;
        ids = running.jobs.iter().map(|r| r.job_id).collect();
        if ids.is_empty() {
            if json {
                output::json(&Vec::<queue_core::JobRecord>::new())
            } else {
                println!("no running jobs")
            }
            return Ok(());
        }
    }
    let bars_on = std::io::stderr().is_terminal() && !json;
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos:>3}% {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    let mut bars: HashMap<JobId, ProgressBar> = HashMap::new();
    let mut open = 0;
    for id in &ids {
        let r = backend.get(*id).await?;
        let bar = multi.add(
            ProgressBar::new(100)
                .with_style(style.clone())
                .with_prefix(id.to_string()),
        );
        if !bars_on {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        if !show(&bar, &r) {
            open += 1;
        }
        bars.insert(*id, bar);
    }
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    while open > 0 {
        let id = tokio::select! {
            event = events.next() => match event {
                Some(e) if bars.contains_key(&e.job_id) => {
                    if !bars_on && !json {
                        match &e.kind {
                            EventKind::Progress { progress, step } => println!("{} {progress}% {}", e.job_id, step.clone().unwrap_or_default()),
                            EventKind::Transition { to, .. } => println!("{} {to}", e.job_id),
                            EventKind::CancelRequested => println!("{} cancel requested", e.job_id),
                            EventKind::Missed { .. } => {}
                        }
                    }
                    e.job_id
                }
                Some(_) => continue,
                None => {
                    events = backend.subscribe(None).await?;
                    continue;
                }
            },
            // Events are best-effort: re-read the records now and then.
            _ = poll.tick() => {
                for (id, bar) in &bars {
                    if !bar.is_finished() {
                        refresh(backend, *id, bar, &mut open).await?;
                    }
                }
                continue;
            }
        };
        let bar = &bars[&id];
        if !bar.is_finished() {
            refresh(backend, id, bar, &mut open).await?;
        }
    }
    if json {
        let mut records = Vec::new();
        for id in &ids {
            records.push(backend.get(*id).await?);
        }
        output::json(&records);
    }
    Ok(())
}

/// Draws a record on its bar; true when the job has ended (the bar is finished).
pub(super) fn show(bar: &ProgressBar, r: &queue_core::JobRecord) -> bool {
    bar.set_position(u64::from(r.progress));
    bar.set_message(format!(
        "{} {}",
        r.status,
        r.current_step.clone().unwrap_or_default()
    ));
    if r.status.is_terminal() {
        bar.finish();
    }
    r.status.is_terminal()
}

pub(super) async fn refresh(
    backend: &SharedBackend,
    id: JobId,
    bar: &ProgressBar,
    open: &mut usize,
) -> Result<()> {
    let r = backend.get(id).await?;
    if show(bar, &r) {
        *open -= 1;
    }
    Ok(())
}

/// One bar per job that starts while this worker runs (jobs of every worker of the queue).
pub(super) async fn draw_running_jobs(mut events: queue_core::EventStream, multi: MultiProgress) {
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos:>3}% {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    let mut bars: HashMap<JobId, ProgressBar> = HashMap::new();
    while let Some(e) = events.next().await {
        match e.kind {
            EventKind::Transition {
                to: JobStatus::Processing,
                ..
            } => {
                let bar = multi.add(
                    ProgressBar::new(100)
                        .with_style(style.clone())
                        .with_prefix(e.job_id.to_string()),
                );
                bars.insert(e.job_id, bar);
            }
            EventKind::Progress { progress, step } => {
                if let Some(bar) = bars.get(&e.job_id) {
                    bar.set_position(u64::from(progress));
                    bar.set_message(step.unwrap_or_default());
                }
            }
            EventKind::Transition { .. } => {
                if let Some(bar) = bars.remove(&e.job_id) {
                    bar.finish_and_clear();
                    multi.remove(&bar);
                }
            }
            EventKind::CancelRequested | EventKind::Missed { .. } => {}
        }
    }
}

/// Log output that does not tear the progress bars.
#[derive(Clone)]
pub(super) struct BarWriter(pub(super) MultiProgress);

impl std::io::Write for BarWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
