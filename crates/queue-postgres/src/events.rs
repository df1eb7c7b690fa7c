//! Events: added to the outbox by the transaction that changes a job, moved into the
//! queue's log in order by the sequencer, and followed (live, or resumed after the last
//! event seen) through one follower task per backend.

use futures_util::StreamExt;
use queue_core::backend::{Millis, duration_ms, from_millis};
use queue_core::{
    Clock, EVENT_LOG_LEN, EVENT_LOG_LINGER, Error, EventKind, EventStream, JobEvent, JobId, Result,
    parse_event_id,
};
use sqlx::PgConnection;
use tokio::sync::broadcast;

use crate::PostgresBackend;

/// How many log entries one read takes.
const READ: i64 = 1_000;
/// How many outbox entries one sequencer pass moves.
const MOVE: i64 = 10_000;
/// How long a new subscriber waits for transactions under way to end (see
/// `await_emitters`); one still open after that (an application's long transaction) may
/// commit events nobody logs.
const EMITTERS_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl PostgresBackend {
    /// Adds `events` (job, what happened) at `now` to the outbox in this transaction and
    /// tells followers at commit, when someone follows the queue (nothing otherwise: see
    /// [`PostgresBackend::subscribe`] for why none is missed).
    pub(crate) async fn emit(
        &self,
        conn: &mut PgConnection,
        now: Millis,
        events: &[(JobId, EventKind)],
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let jobs: Vec<uuid::Uuid> = events.iter().map(|(id, _)| *id.as_uuid()).collect();
        let kinds: Vec<serde_json::Value> = events
            .iter()
            .map(|(_, k)| serde_json::to_value(k).expect("an event kind encodes"))
            .collect();
        let s = &self.inner.schema;
        sqlx::query(&format!(
            "WITH followed AS ({}), \
             added AS (INSERT INTO {s}.outbox (queue, ms, job, kind) \
             SELECT $1, $2, * FROM unnest($3::uuid[], $4::jsonb[]) \
             WHERE EXISTS (SELECT 1 FROM followed)) \
             SELECT pg_notify($5, $1) FROM followed",
            crate::rows::followed(s, "$1", "$2")
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(now)
        .bind(&jobs)
        .bind(&kinds)
        .bind(&self.inner.events_channel)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// One sequencer pass: moves the outbox into the log (or drops it when nobody
    /// followed the queue lately), trims the log to [`EVENT_LOG_LEN`]. `follow` marks the
    /// queue followed from now for [`EVENT_LOG_LINGER`] and waits for a pass another
    /// process runs now (so what committed before is logged when it returns); else a pass
    /// under way elsewhere is left to do the work.
    pub(crate) async fn sequence(&self, follow: bool) -> Result<()> {
        let s = &self.inner.schema;
        let q = &self.inner.queue.queue_name;
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<_> = async {
            let now = self.now(&mut tx).await?;
            let lock = if follow {
                "SELECT pg_advisory_xact_lock(hashtext('dcs-queue-events:' || $1 || ':' || $2)) IS NOT NULL"
            } else {
                "SELECT pg_try_advisory_xact_lock(hashtext('dcs-queue-events:' || $1 || ':' || $2))"
            };
            let locked: bool = sqlx::query_scalar(lock)
                .bind(s)
                .bind(q)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
            if !locked {
                return Ok(());
            }
            let until = if follow {
                now.saturating_add(duration_ms(EVENT_LOG_LINGER))
            } else {
                0
            };
            let (last_seq, last_ms, followed_until): (i64, i64, i64) = sqlx::query_as(&format!(
                "INSERT INTO {s}.event_heads AS h (queue, followed_until) VALUES ($1, $2) \
                 ON CONFLICT (queue) DO UPDATE SET followed_until = greatest(h.followed_until, $2) \
                 RETURNING last_seq, last_ms, followed_until"
            ))
            .bind(q)
            .bind(until)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            if followed_until < now {
                // Nobody follows: nothing is logged.
                sqlx::query(&format!(
                    "DELETE FROM {s}.outbox WHERE n IN (SELECT n FROM {s}.outbox WHERE queue = $1 \
                     ORDER BY n LIMIT {MOVE})"
                ))
                .bind(q)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
            } else {
                // In the order added; times never go backwards in the log, so ids (ms-seq)
                // increase with the sequence.
                let head: Option<(i64, i64)> = sqlx::query_as(&format!(
                    "WITH moved AS (DELETE FROM {s}.outbox WHERE n IN (SELECT n FROM {s}.outbox \
                     WHERE queue = $1 ORDER BY n LIMIT {MOVE}) RETURNING n, ms, job, kind), \
                     numbered AS (SELECT $2 + row_number() OVER (ORDER BY n) AS seq, \
                     greatest($3, max(ms) OVER (ORDER BY n)) AS ms, job, kind FROM moved), \
                     logged AS (INSERT INTO {s}.events (queue, seq, ms, job, kind) \
                     SELECT $1, seq, ms, job, kind FROM numbered) \
                     SELECT max(seq)::int8, max(ms)::int8 FROM numbered HAVING count(*) > 0"
                ))
                .bind(q)
                .bind(last_seq)
                .bind(last_ms)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
                if let Some((seq, ms)) = head {
                    let dropped = seq - EVENT_LOG_LEN as i64;
                    sqlx::query(&format!(
                        "WITH trimmed AS (DELETE FROM {s}.events WHERE queue = $1 AND seq <= $3) \
                         UPDATE {s}.event_heads SET last_seq = $2, last_ms = $4, \
                         dropped_seq = greatest(dropped_seq, $3) WHERE queue = $1"
                    ))
                    .bind(q)
                    .bind(seq)
                    .bind(dropped.max(0))
                    .bind(ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db(e))?;
                }
            }
            Ok(())
        }
        .await;
        self.close(tx, out).await
    }

    /// Log entries after `after` (oldest first, at most [`READ`]), and the highest
    /// sequence number trimmed from the log.
    async fn read_log(&self, after: i64) -> Result<(Vec<(i64, JobEvent)>, i64)> {
        let s = &self.inner.schema;
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<_> = async {
            let rows: Vec<(i64, i64, uuid::Uuid, serde_json::Value)> = sqlx::query_as(&format!(
                "SELECT seq, ms, job, kind FROM {s}.events WHERE queue = $1 AND seq > $2 \
                 ORDER BY seq LIMIT {READ}"
            ))
            .bind(&self.inner.queue.queue_name)
            .bind(after)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            let dropped: Option<i64> = sqlx::query_scalar(&format!(
                "SELECT dropped_seq FROM {s}.event_heads WHERE queue = $1"
            ))
            .bind(&self.inner.queue.queue_name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            let mut out = Vec::with_capacity(rows.len());
            for (seq, ms, job, kind) in rows {
                let kind: EventKind = serde_json::from_value(kind)
                    .map_err(|e| Error::corrupt(format!("event {ms}-{seq}: {e}")))?;
                out.push((
                    seq,
                    JobEvent {
                        id: Some(format!("{ms}-{seq}")),
                        job_id: JobId::from_uuid(job),
                        at: from_millis(ms),
                        kind,
                    },
                ));
            }
            Ok((out, dropped.unwrap_or(0)))
        }
        .await;
        self.close(tx, out).await
    }

    /// The newest sequence number logged.
    async fn log_head(&self) -> Result<i64> {
        let head: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT last_seq FROM {}.event_heads WHERE queue = $1",
            self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(|e| self.db(e))?;
        Ok(head.unwrap_or(0))
    }

    /// Events of this queue from now on, or after the event `after` (see
    /// [`JobStore::subscribe`](queue_core::JobStore::subscribe)).
    pub async fn subscribe(&self, after: Option<&str>) -> Result<EventStream> {
        let after = match after {
            Some(id) => Some(parse_event_id(id).ok_or_else(|| {
                Error::invalid(format!("event id `{id}` is not of the form <ms>-<n>"))
            })?),
            None => None,
        };
        // Following first: from here on the queue's events are logged.
        self.sequence(true).await?;
        self.await_emitters().await?;
        let rx = self.inner.events.subscribe();
        self.inner.follow.notify_one();
        let Some((_, after_seq)) = after else {
            return Ok(Box::pin(live(rx, self.log_head().await?, self.clock_ms())));
        };
        let after_seq = after_seq as i64;
        let mut replay = Vec::new();
        let mut at = after_seq;
        loop {
            let (page, dropped) = self.read_log(at).await?;
            if replay.is_empty() && dropped > after_seq {
                // Events after `after` have left the log: say so where they were.
                replay.push(JobEvent::missed(None, from_millis(self.clock_ms())));
            }
            let full = page.len() as i64 == READ;
            for (seq, e) in page {
                at = seq;
                replay.push(e);
            }
            if !full {
                break;
            }
        }
        let live = live(rx, at, self.clock_ms());
        Ok(Box::pin(futures_util::stream::iter(replay).chain(live)))
    }

    /// Waits until the transactions that held the jobs table when the queue became
    /// followed have ended (for at most [`EMITTERS_WAIT`]). An emitter reads whether the
    /// queue is followed when it emits and writes nothing when it is not; one that read
    /// that before the mark committed and commits after it would otherwise lose its events
    /// for a subscriber already listening.
    async fn await_emitters(&self) -> Result<()> {
        let jobs = format!("{}.jobs", self.inner.schema);
        let held = |sql: &'static str| {
            let jobs = jobs.clone();
            async move {
                sqlx::query_scalar::<_, String>(sql)
                    .bind(jobs)
                    .fetch_all(&self.inner.pool)
                    .await
                    .map_err(|e| self.db(e))
            }
        };
        let sql = "SELECT DISTINCT virtualtransaction FROM pg_locks \
                   WHERE relation = $1::regclass AND pid <> pg_backend_pid()";
        let mut waiting = held(sql).await?;
        let deadline = tokio::time::Instant::now() + EMITTERS_WAIT;
        while !waiting.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            let now = held(sql).await?;
            waiting.retain(|t| now.contains(t));
        }
        Ok(())
    }

    fn clock_ms(&self) -> Millis {
        self.inner
            .clock
            .as_ref()
            .map_or_else(|| queue_core::SystemClock.now_ms(), |c| c.now_ms())
    }

    /// One step of the follower task: sequences the outbox and sends what the log gained
    /// after `sent`; marks the queue followed again when `refresh`.
    async fn follow_step(&self, sent: &mut i64, refresh: bool) {
        if self.sequence(refresh).await.is_err() {
            return;
        }
        while let Ok((page, _)) = self.read_log(*sent).await {
            let full = page.len() as i64 == READ;
            for (seq, e) in page {
                *sent = seq;
                let _ = self.inner.events.send((seq, e));
            }
            if !full {
                break;
            }
        }
    }
}

/// The follower task: on a commit that added events (or every poll) while someone
/// follows, sequences the outbox and sends what the log gained. `backend` upgrades a weak
/// handle: the task ends once the backend is dropped.
pub(crate) async fn follower(
    backend: impl Fn() -> Option<PostgresBackend>,
    follow: std::sync::Arc<tokio::sync::Notify>,
) {
    let mut sent: Option<i64> = None;
    let mut last_follow = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = follow.notified() => {}
            () = tokio::time::sleep(crate::POLL) => {}
        }
        let Some(backend) = backend() else {
            return;
        };
        if backend.inner.events.receiver_count() == 0 {
            sent = None;
            continue;
        }
        let mut at = match sent {
            Some(at) => at,
            None => match backend.log_head().await {
                Ok(head) => head,
                Err(_) => continue,
            },
        };
        let refresh = last_follow.elapsed() > EVENT_LOG_LINGER / 4;
        if refresh {
            last_follow = tokio::time::Instant::now();
        }
        backend.follow_step(&mut at, refresh).await;
        sent = Some(at);
    }
}

/// The live events after sequence number `after`; a subscriber that fell behind is told
/// how many it missed.
fn live(
    rx: broadcast::Receiver<(i64, JobEvent)>,
    after: i64,
    now_ms: Millis,
) -> impl futures_util::Stream<Item = JobEvent> + Send + 'static {
    futures_util::stream::unfold(rx, move |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok((seq, _)) if seq <= after => continue,
                Ok((_, e)) => return Some((e, rx)),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    return Some((JobEvent::missed(Some(n), from_millis(now_ms)), rx));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
