//! `JobStore` for the memory backend.

use async_trait::async_trait;
use futures_util::StreamExt;
use queue_core::backend::{
    MAX_ENQUEUE_STEP, check_group_name, check_groups_limit, flatten_all, from_millis,
};
use queue_core::{
    CancelOutcome, Control, EventStream, Flow, GroupControl, GroupList, GroupStats, JobEvent,
    JobId, JobRecord, JobStore, ListQuery, NewJob, Page, Priority, QueueStats, Result, WorkerInfo,
    parse_event_id,
};

use crate::MemoryBackend;

/// Deliveries of a deleted webhook dropped per step.
const DROP_STEP: usize = 1_000;

#[async_trait]
impl JobStore for MemoryBackend {
    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Result<JobRecord>>> {
        // Replace-running cancels the key's holder: its worker is told, and a parent's
        // descendants are cancelled by the cascade, finished here.
        let supersedes = jobs
            .iter()
            .any(|j| j.options.key_mode == queue_core::KeyMode::ReplaceRunning);
        let mut out = Vec::with_capacity(jobs.len());
        let mut jobs = jobs.into_iter().peekable();
        // One lock per step of at most MAX_ENQUEUE_STEP jobs.
        while jobs.peek().is_some() {
            let now = self.now();
            let mut t = self.lock();
            out.extend(jobs.by_ref().take(MAX_ENQUEUE_STEP).map(|job| {
                t.enqueue(job, &self.inner.config, now, self.events())
                    .map(|(r, _)| r)
            }));
        }
        self.inner.work.notify_waiters();
        if supersedes {
            self.finish_cascades();
        }
        Ok(out)
    }

    async fn enqueue_flow(&self, flow: Flow) -> Result<JobRecord> {
        let jobs = flow.flatten()?;
        let mut out =
            self.lock()
                .enqueue_flow(jobs, None, &self.inner.config, self.now(), self.events())?;
        self.inner.work.notify_waiters();
        Ok(out.remove(0))
    }

    async fn add_children(&self, parent: JobId, children: Vec<Flow>) -> Result<Vec<JobRecord>> {
        let jobs = flatten_all(children)?;
        let out = self.lock().enqueue_flow(
            jobs,
            Some(parent),
            &self.inner.config,
            self.now(),
            self.events(),
        )?;
        self.inner.work.notify_waiters();
        Ok(out)
    }

    async fn get(&self, id: JobId) -> Result<JobRecord> {
        self.lock().get(id)
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        self.lock().list(query)
    }

    async fn cancel(&self, id: JobId) -> Result<CancelOutcome> {
        let (outcome, woken) = {
            let mut t = self.lock();
            let outcome = t.cancel(id, self.now(), self.events())?;
            (outcome, t.take_woken())
        };
        if outcome == CancelOutcome::Requested {
            let _ = self.inner.cancels.send(id);
        }
        if woken {
            // A cancelled child released its parent.
            self.inner.work.notify_waiters();
        }
        // Its descendants, in bounded steps (`queue_core::backend::CANCEL_STEP`).
        self.finish_cascades();
        Ok(outcome)
    }

    async fn retry(&self, id: JobId, priority: Option<Priority>) -> Result<JobRecord> {
        let record = self.lock().retry(id, priority, self.now(), self.events())?;
        self.inner.work.notify_waiters();
        Ok(record)
    }

    async fn delete(&self, id: JobId) -> Result<JobRecord> {
        self.lock().delete(id)
    }

    async fn series(&self, span: queue_core::SeriesSpan) -> Result<queue_core::Series> {
        Ok(self.lock().series.read(span, self.now()))
    }

    async fn stats(&self) -> Result<QueueStats> {
        Ok(self.lock().stats(self.now()))
    }

    async fn control(&self, change: Control) -> Result<()> {
        change.check()?;
        let wakes = change.may_start_jobs();
        match change {
            Control::Pause => self.lock().set_paused(true),
            Control::Resume => self.lock().set_paused(false),
            Control::RateLimit(limit) => self.lock().set_rate_limit(limit),
            Control::Group { group, change } => {
                let mut t = self.lock();
                let t = t.at(self.now());
                match change {
                    GroupControl::Pause => t.set_group_paused(&group, true),
                    GroupControl::Resume => t.set_group_paused(&group, false),
                    GroupControl::Concurrency(limit) => t.set_group_concurrency(&group, limit),
                    GroupControl::Weight(weight) => t.set_group_weight(&group, weight),
                    GroupControl::RateLimit(limit) => t.set_group_rate_limit(&group, limit),
                }
            }
            Control::PutWebhook(hook) => self.lock().put_webhook(&hook)?,
            Control::DeleteWebhook(name) => {
                self.lock().delete_webhook(&name);
                // Its deliveries go with it, a bounded step at a time.
                while self.lock().drop_deliveries(&name, DROP_STEP) {}
            }
        }
        if wakes {
            self.inner.work.notify_waiters();
        }
        Ok(())
    }

    async fn group(&self, group: &str) -> Result<GroupStats> {
        check_group_name(group)?;
        Ok(self.lock().at(self.now()).group(group))
    }

    async fn groups(&self, limit: usize) -> Result<GroupList> {
        check_groups_limit(limit)?;
        Ok(self.lock().at(self.now()).groups(limit))
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        Ok(self.lock().workers(self.now()))
    }

    async fn webhooks(&self) -> Result<Vec<queue_core::Webhook>> {
        Ok(self.lock().webhooks())
    }

    async fn deliveries(&self, parked: bool, limit: usize) -> Result<Vec<queue_core::Delivery>> {
        Ok(self.lock().deliveries(parked, limit))
    }

    async fn resend_delivery(&self, id: &str) -> Result<bool> {
        Ok(self.lock().resend_delivery(id, self.now()))
    }

    async fn subscribe<'a>(&self, after: Option<&'a str>) -> Result<EventStream> {
        let Some(after) = after else {
            let rx = self.inner.events.tx.subscribe();
            return Ok(Box::pin(self.live(rx)));
        };
        let after = parse_event_id(after).ok_or_else(|| {
            queue_core::Error::invalid(format!("event id `{after}` is not of the form <ms>-<n>"))
        })?;
        let newer = |e: &JobEvent| {
            e.id.as_deref()
                .and_then(parse_event_id)
                .is_some_and(|id| id > after)
        };
        // Read the log and subscribe under its lock: an event is logged and sent under it.
        let (replay, rx) = {
            let log = self
                .inner
                .events
                .log
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let mut replay = Vec::new();
            if log.dropped.is_some_and(|gone| gone > after) {
                // Events after `after` have left the log: say so where they were.
                replay.push(JobEvent::missed(None, from_millis(self.now())));
            }
            replay.extend(log.entries.iter().filter(|e| newer(e)).cloned());
            (replay, self.inner.events.tx.subscribe())
        };
        let live = self.live(rx);
        Ok(Box::pin(futures_util::stream::iter(replay).chain(live)))
    }
}

impl MemoryBackend {
    /// The live events of `rx`; a subscriber that fell behind is told how many it missed.
    fn live(
        &self,
        rx: tokio::sync::broadcast::Receiver<JobEvent>,
    ) -> impl futures_util::Stream<Item = JobEvent> + Send + 'static {
        // The clock alone: the stream must not keep the backend (and its sender) alive.
        let clock = self.inner.clock.clone();
        tokio_stream::wrappers::BroadcastStream::new(rx).map(move |item| match item {
            Ok(event) => event,
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                JobEvent::missed(Some(n), from_millis(clock.now_ms()))
            }
        })
    }
}
