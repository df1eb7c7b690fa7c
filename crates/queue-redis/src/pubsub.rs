//! Subscriptions that survive their connection: one background task per channel and
//! backend, re-subscribing after a dropped connection or a restarted server, shared by
//! every stream on that channel through a bounded buffer (a subscriber that falls far
//! behind skips messages instead of growing memory). A channel with a log (the queue's
//! events) passes on what was published while the connection was down, read from the log,
//! before the live messages; others (cancel pushes, which heartbeats repeat) lose them.

use std::{collections::HashMap, sync::Arc, sync::Mutex, time::Duration};

use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};

use crate::{
    conn::{Conn, Deployment},
    error::Errors,
};

/// How many messages one channel buffers for its slowest subscriber.
const BUFFER: usize = 4096;

/// What a stream passes on where messages were missed (a subscriber that fell behind, or a
/// reconnect after the log was trimmed past what it had seen), followed by how many when
/// known: no real message starts with a NUL (events are JSON, cancels are job ids).
pub(crate) const MISSED: &str = "\u{0}missed:";

/// How long a presence key outlives its last renewal (events go on being logged that long
/// after the last subscriber left, so one that reconnects resumes), and how often it is
/// renewed.
const PRESENCE_TTL: Duration = queue_core::EVENT_LOG_LINGER;
const PRESENCE_RENEW: Duration = Duration::from_secs(5);

/// A key kept alive while a channel is followed, so publishers can skip the work of a
/// message nobody hears (the scripts publish events only while `subs` exists).
#[derive(Clone)]
pub(crate) struct Presence {
    pub(crate) key: String,
    pub(crate) conn: Conn,
    /// The channel's log (a stream whose entries are the messages without their leading
    /// `{"id":"<entry id>",`): after a reconnect, what was published meanwhile is read from
    /// it and passed on before the live messages, none twice.
    pub(crate) log: Option<String>,
    /// The key holding the id of the newest entry trimmed from the log.
    pub(crate) gone: Option<String>,
}

/// Whether events after `after` have left the log: the newest trimmed (stored at `gone`)
/// is later than it.
pub(crate) async fn trimmed_past(
    conn: &mut Conn,
    gone: &str,
    after: (u64, u64),
) -> redis::RedisResult<bool> {
    let newest: Option<String> = redis::cmd("GET").arg(gone).query_async(conn).await?;
    Ok(newest
        .as_deref()
        .and_then(queue_core::parse_event_id)
        .is_some_and(|g| g > after))
}

/// The log id a message starts with (`{"id":"<ms>-<n>",...`).
fn message_id(message: &str) -> Option<(u64, u64)> {
    let rest = message.strip_prefix("{\"id\":\"")?;
    queue_core::parse_event_id(&rest[..rest.find('"')?])
}

impl Presence {
    /// The log's entries after `after`, as the messages that were published for them.
    async fn missed(&self, log: &str, after: (u64, u64)) -> redis::RedisResult<Vec<String>> {
        let mut conn = self.conn.clone();
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(log)
            .arg(format!("({}-{}", after.0, after.1))
            .arg("+")
            .arg("COUNT")
            .arg(queue_core::EVENT_LOG_LEN)
            .query_async(&mut conn)
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let (_, msg) = fields.into_iter().next()?;
                Some(format!("{{\"id\":\"{id}\",{}", msg.get(1..)?))
            })
            .collect())
    }
}

impl Presence {
    async fn renew(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(&self.key)
            .arg(1)
            .arg("PX")
            .arg(PRESENCE_TTL.as_millis() as u64)
            .query_async(&mut conn)
            .await
    }
}

/// The channels a backend follows.
pub(crate) struct Subscriptions {
    deployment: Arc<Deployment>,
    errors: Errors,
    channels: Mutex<HashMap<String, broadcast::Sender<String>>>,
}

impl Subscriptions {
    pub(crate) fn new(deployment: Arc<Deployment>, errors: Errors) -> Self {
        Self {
            deployment,
            errors,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// How many streams of `channel` are open.
    pub(crate) fn receivers(&self, channel: &str) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(channel)
            .map_or(0, broadcast::Sender::receiver_count)
    }

    /// Messages of `channel` from now on. The first subscription of a channel connects
    /// (and fails when Redis cannot be reached); the connection is then kept up in the
    /// background for as long as anyone listens, and `presence` (if any) with it: its key
    /// exists before this returns.
    pub(crate) async fn stream(
        self: &Arc<Self>,
        channel: &str,
        presence: Option<Presence>,
    ) -> queue_core::Result<impl Stream<Item = String> + Send + use<>> {
        let existing = self
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(channel)
            .filter(|tx| tx.receiver_count() > 0)
            .map(|tx| tx.subscribe());
        let rx = match existing {
            Some(rx) => rx,
            None => {
                let pubsub = self.connect(channel).await?;
                if let Some(p) = &presence {
                    p.renew().await.map_err(|e| self.errors.map(e))?;
                }
                let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
                match channels.get(channel).filter(|tx| tx.receiver_count() > 0) {
                    // Someone else connected meanwhile: use theirs.
                    Some(tx) => tx.subscribe(),
                    None => {
                        let (tx, rx) = broadcast::channel(BUFFER);
                        channels.insert(channel.to_owned(), tx.clone());
                        tokio::spawn(Arc::clone(self).follow(
                            channel.to_owned(),
                            pubsub,
                            tx,
                            presence,
                        ));
                        rx
                    }
                }
            }
        };
        Ok(BroadcastStream::new(rx).filter_map(|m| {
            std::future::ready(match m {
                Ok(message) => Some(message),
                Err(BroadcastStreamRecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "a subscriber fell behind; messages skipped");
                    Some(format!("{MISSED}{n}"))
                }
            })
        }))
    }

    async fn connect(&self, channel: &str) -> queue_core::Result<redis::aio::PubSub> {
        let mut pubsub = self
            .deployment
            .pubsub()
            .await
            .map_err(|e| self.errors.map(e))?;
        pubsub
            .subscribe(channel)
            .await
            .map_err(|e| self.errors.map(e))?;
        Ok(pubsub)
    }

    /// Forwards messages until nobody listens; reconnects whenever the connection ends.
    async fn follow(
        self: Arc<Self>,
        channel: String,
        first: redis::aio::PubSub,
        tx: broadcast::Sender<String>,
        presence: Option<Presence>,
    ) {
        let mut pubsub = Some(first);
        let mut backoff = Duration::from_millis(100);
        // The id of the last logged message passed on.
        let mut last: Option<(u64, u64)> = None;
        let mut reconnected = false;
        loop {
            if let Some(conn) = pubsub.take() {
                backoff = Duration::from_millis(100);
                let mut messages = conn.into_on_message();
                // Subscribed again: what was published while the connection was down
                // comes from the log, before the live messages.
                if reconnected
                    && let (Some(p), Some(after)) = (&presence, last)
                    && let Some(log) = &p.log
                {
                    if let Some(gone) = &p.gone {
                        let mut conn = p.conn.clone();
                        if let Ok(true) = trimmed_past(&mut conn, gone, after).await {
                            tracing::warn!(%channel, "events were trimmed from the log while the subscription was down; subscribers are told they missed some");
                            let _ = tx.send(MISSED.to_owned());
                        }
                    }
                    match p.missed(log, after).await {
                        Ok(missed) => {
                            if !missed.is_empty() {
                                tracing::info!(%channel, count = missed.len(), "passed on the messages published while the subscription was down");
                            }
                            for text in missed {
                                last = message_id(&text).or(last);
                                let _ = tx.send(text);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(%channel, error = %e, "cannot read what was published while the subscription was down")
                        }
                    }
                }
                let mut idle = tokio::time::interval(PRESENCE_RENEW);
                loop {
                    tokio::select! {
                        m = messages.next() => match m {
                            Some(m) => {
                                if let Ok(text) = m.get_payload::<String>() {
                                    match message_id(&text) {
                                        Some(id) if last.is_some_and(|l| id <= l) => {}
                                        id => {
                                            last = id.or(last);
                                            let _ = tx.send(text);
                                        }
                                    }
                                }
                            }
                            None => break,
                        },
                        _ = idle.tick() => {
                            if let Some(p) = &presence {
                                // Renewed off this loop, so a slow reply delays no message.
                                let p = p.clone();
                                tokio::spawn(async move {
                                    if let Err(e) = p.renew().await {
                                        tracing::debug!(kind = ?e.kind(), "cannot renew the subscription's presence yet");
                                    }
                                });
                            }
                        }
                    }
                    if tx.receiver_count() == 0 {
                        return self.forget(&channel, &tx);
                    }
                }
                tracing::warn!(%channel, "subscription connection lost; reconnecting");
            }
            if tx.receiver_count() == 0 {
                return self.forget(&channel, &tx);
            }
            tokio::time::sleep(backoff).await;
            match self.connect(&channel).await {
                Ok(conn) => {
                    tracing::info!(%channel, "subscription re-established");
                    pubsub = Some(conn);
                    reconnected = true;
                }
                Err(err) => {
                    tracing::debug!(%channel, error = %err.chain(), "cannot re-subscribe yet");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn forget(&self, channel: &str, tx: &broadcast::Sender<String>) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if channels.get(channel).is_some_and(|t| t.same_channel(tx)) {
            channels.remove(channel);
        }
    }
}
