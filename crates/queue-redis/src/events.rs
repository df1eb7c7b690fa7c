//! Events on Redis: the live stream and the replay of the log after an event id.

use futures_util::StreamExt;
use queue_core::backend::{Millis, from_millis};
use queue_core::{Error, EventKind, EventStream, JobEvent, JobId, Result, parse_event_id};
use redis::Value;

use crate::{
    RedisBackend,
    keys::Static,
    pubsub::Presence,
    wire::{array, text},
};

/// An event published by a script: `{"id", "job_id", "at", "type", ...}` (in the log, the
/// same without `id`: the entry's id is its id).
pub(crate) fn parse_event(message: &str) -> Option<JobEvent> {
    if let Some(count) = message.strip_prefix(crate::pubsub::MISSED) {
        use queue_core::Clock;
        return Some(JobEvent::missed(
            count.parse().ok(),
            queue_core::SystemClock.now(),
        ));
    }
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(default)]
        id: Option<String>,
        job_id: JobId,
        at: Millis,
        #[serde(flatten)]
        kind: EventKind,
    }
    let raw: Raw = serde_json::from_str(message).ok()?;
    Some(JobEvent {
        id: raw.id,
        job_id: raw.job_id,
        at: from_millis(raw.at),
        kind: raw.kind,
    })
}

impl RedisBackend {
    pub(super) async fn live_events(&self) -> Result<EventStream> {
        let messages = self
            .inner
            .subscriptions
            .stream(
                &self.inner.keys.events(),
                Some(Presence {
                    key: self.inner.keys.of(Static::Subs),
                    conn: self.conn(),
                    log: Some(self.inner.keys.of(Static::Log)),
                    gone: Some(self.inner.keys.of(Static::LogGone)),
                }),
            )
            .await?;
        Ok(Box::pin(
            messages.filter_map(|m| std::future::ready(parse_event(&m))),
        ))
    }

    pub(super) async fn events_after(&self, after: &str) -> Result<EventStream> {
        let Some(mut last) = parse_event_id(after) else {
            return Err(Error::invalid(format!(
                "event id `{after}` is not of the form <ms>-<n>"
            )));
        };
        // Live first (which keeps the log written), then the log: an event in both is
        // passed on once, from the log.
        let live = self.live_events().await?;
        let mut conn = self.conn();
        let mut replay = Vec::new();
        let trimmed =
            crate::pubsub::trimmed_past(&mut conn, &self.inner.keys.of(Static::LogGone), last)
                .await
                .map_err(|e| self.err(e))?;
        if trimmed {
            // Events after `after` have left the log: say so where they were.
            replay.push(JobEvent::missed(None, from_millis(self.now_ms())));
        }
        let entries: Value = redis::cmd("XRANGE")
            .arg(self.inner.keys.of(Static::Log))
            .arg(format!("({}-{}", last.0, last.1))
            .arg("+")
            .arg("COUNT")
            .arg(queue_core::EVENT_LOG_LEN)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        for entry in array(entries) {
            let mut parts = array(entry).into_iter();
            let (Some(id), Some(fields)) = (parts.next().as_ref().and_then(text), parts.next())
            else {
                continue;
            };
            let fields = array(fields);
            let Some(msg) = fields.get(1).and_then(text) else {
                continue;
            };
            if let Some(mut event) = parse_event(&msg) {
                if let Some(n) = parse_event_id(&id) {
                    last = last.max(n);
                }
                event.id = Some(id);
                replay.push(event);
            }
        }
        let live = live.filter(move |e| {
            let newer =
                e.id.as_deref()
                    .and_then(parse_event_id)
                    .is_none_or(|id| id > last);
            std::future::ready(newer)
        });
        Ok(Box::pin(futures_util::stream::iter(replay).chain(live)))
    }
}

impl RedisBackend {
    /// The id of the newest event in the log (`0` when it is empty): where a merged
    /// stream of a partitioned queue starts this partition (`crate::partitions`).
    pub(crate) async fn log_end(&self) -> Result<String> {
        let mut conn = self.conn();
        let entries: Value = redis::cmd("XREVRANGE")
            .arg(self.inner.keys.of(Static::Log))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(array(entries)
            .into_iter()
            .next()
            .and_then(|entry| array(entry).into_iter().next())
            .as_ref()
            .and_then(text)
            .unwrap_or_else(|| "0".to_owned()))
    }
}
