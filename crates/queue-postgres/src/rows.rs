//! A job's row: the columns the statements select and order by, and the record (its
//! `state` and payload). Every write of a row goes through [`write`], so the columns always
//! agree with the record the core rules produced.

use queue_core::backend::rules::{self, EffectInput, Placement};
use queue_core::backend::{Event, Millis, to_millis};
use queue_core::{Error, JobId, JobRecord, LeaseToken, Payload, Result};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};

use crate::error::db_error;

/// The columns a statement reads to rebuild a [`Row`].
pub(crate) const COLUMNS: &str = "id, place, ready, waiting, cascading, created_ms, due_ms, \
     finished_ms, lease_token, \
     lease_until_ms, lease_ms, claim_worker, claim_id, claimed_ms, ended_token, payload, state";

/// A lease as its row holds it.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub(crate) token: LeaseToken,
    pub(crate) until_ms: Millis,
    pub(crate) lease_ms: Millis,
    pub(crate) worker: String,
    pub(crate) claim_id: i64,
    pub(crate) claimed_ms: Millis,
}

/// One job as stored.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub(crate) record: JobRecord,
    pub(crate) place: i64,
    pub(crate) ready: bool,
    /// Queued and waiting on unfinished children.
    pub(crate) waiting: bool,
    /// A cancel's cascade is still cancelling its descendants.
    pub(crate) cascading: bool,
    pub(crate) created_ms: Millis,
    pub(crate) due_ms: Option<Millis>,
    pub(crate) finished_ms: Option<Millis>,
    pub(crate) lease: Option<Held>,
    pub(crate) ended_token: Option<String>,
}

impl Row {
    /// The row of a job born at `now` (`JobRecord::born`): waiting when it has children,
    /// else delayed until its `run_at`, else ready (its place given by the insert).
    pub(crate) fn born(record: JobRecord, now: Millis) -> Self {
        let waiting = record.waits_on_children();
        let due_ms = record.run_at.map(to_millis).filter(|_| !waiting);
        Self {
            ready: !waiting && due_ms.is_none(),
            waiting,
            cascading: false,
            created_ms: now,
            due_ms,
            place: 0,
            finished_ms: None,
            lease: None,
            ended_token: None,
            record,
        }
    }

    /// Decodes a row selected with [`COLUMNS`].
    pub(crate) fn decode(row: &PgRow) -> Result<Self> {
        let id: uuid::Uuid = row.get("id");
        let id = JobId::from_uuid(id);
        let state: serde_json::Value = row.get("state");
        let mut record: JobRecord = serde_json::from_value(state)
            .map_err(|e| Error::corrupt(format!("job {id}: its stored record: {e}")))?;
        record.payload = Payload::from_trusted(row.get::<String, _>("payload"));
        let lease = row
            .get::<Option<String>, _>("lease_token")
            .map(|token| Held {
                token: LeaseToken::new(token),
                until_ms: row.get::<Option<i64>, _>("lease_until_ms").unwrap_or(0),
                lease_ms: row.get::<Option<i64>, _>("lease_ms").unwrap_or(0),
                worker: row
                    .get::<Option<String>, _>("claim_worker")
                    .unwrap_or_default(),
                claim_id: row.get::<Option<i64>, _>("claim_id").unwrap_or(0),
                claimed_ms: row.get::<Option<i64>, _>("claimed_ms").unwrap_or(0),
            });
        Ok(Self {
            record,
            place: row.get("place"),
            ready: row.get("ready"),
            waiting: row.get("waiting"),
            cascading: row.get("cascading"),
            created_ms: row.get("created_ms"),
            due_ms: row.get("due_ms"),
            finished_ms: row.get("finished_ms"),
            lease,
            ended_token: row.get("ended_token"),
        })
    }

    /// The record without its payload, as `state` stores it.
    fn state(&self) -> Result<serde_json::Value> {
        let mut r = self.record.clone();
        r.payload = Payload::default();
        serde_json::to_value(&r).map_err(|e| Error::Codec {
            context: format!("job {}: encoding its record: {e}", r.job_id),
            source: None,
        })
    }
}

/// The columns [`tallied`] reads from a row: a statement that moves rows returns them
/// (or selects them before the move).
pub(crate) const TALLY_COLUMNS: &str = "queue, status, band, ready, due_ms, waiting";

/// The names a row counts under while it exists, as a SQL array over `r`'s
/// [`TALLY_COLUMNS`] (a NULL where it does not count): its status, its priority while
/// ready, delayed, waiting on children. `stats` sums these deltas instead of counting rows,
/// so it costs the same at a thousand jobs as at a million.
pub(crate) fn tally_names(r: &str) -> String {
    format!(
        "ARRAY['now:' || {r}.status, CASE WHEN {r}.ready THEN 'now:ready:' || {r}.band END, \
         CASE WHEN {r}.due_ms IS NOT NULL THEN 'now:scheduled' END, \
         CASE WHEN {r}.waiting THEN 'now:waiting' END]"
    )
}

/// A CTE body adding the tally deltas of rows that left (`gone`, each counting -1) and
/// rows that arrived (`came`, +1): CTE names exposing [`TALLY_COLUMNS`].
pub(crate) fn tallied(schema: &str, gone: &[&str], came: &[&str]) -> String {
    let side = |cte: &&str, sign: i32| {
        format!(
            "SELECT r.queue, t.name, {sign} AS d FROM {cte} r, unnest({}) AS t(name)",
            tally_names("r")
        )
    };
    let parts: Vec<String> = gone
        .iter()
        .map(|c| side(c, -1))
        .chain(came.iter().map(|c| side(c, 1)))
        .collect();
    format!(
        "INSERT INTO {schema}.counts (queue, name, n) SELECT queue, name, sum(d) FROM ({}) x \
         WHERE name IS NOT NULL GROUP BY queue, name HAVING sum(d) <> 0",
        parts.join(" UNION ALL ")
    )
}

/// A query yielding one row when someone follows `queue` at `now` (SQL expressions): only
/// then are events added to the outbox and followers told (`events.rs`).
pub(crate) fn followed(schema: &str, queue: &str, now: &str) -> String {
    format!("SELECT 1 FROM {schema}.event_heads WHERE queue = {queue} AND followed_until >= {now}")
}

/// Inserts new rows in one statement, a ready row taking the next place of the queue, and
/// counts them (the `enqueued` counter and series); a row whose id or unique key is taken
/// is skipped (`ON CONFLICT DO NOTHING`). With a wake
/// `channel`, notifies it (delivered when the transaction commits, never on a rollback)
/// when any row was inserted; without, the caller wakes workers after its commit (a transaction
/// that notifies holds the server's notify lock through its commit's flush, so commits
/// that notify never share a flush). Returns the inserted ids with their places.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    schema: &str,
    queue: &str,
    (channel, events_channel): (Option<&str>, &str),
    now: Millis,
    rows: &[Row],
    secrets: &[String],
) -> Result<std::collections::HashMap<JobId, i64>> {
    if rows.is_empty() {
        return Ok(Default::default());
    }
    let n = rows.len();
    let mut ids = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut bands = Vec::with_capacity(n);
    let mut ready = Vec::with_capacity(n);
    let mut due = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut groups = Vec::with_capacity(n);
    let mut costs = Vec::with_capacity(n);
    let mut parents = Vec::with_capacity(n);
    let mut waiting = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut states = Vec::with_capacity(n);
    // The charts count the jobs enqueued in the buckets of `now`, one per span.
    let (spans, buckets): (Vec<&str>, Vec<i64>) = queue_core::SeriesSpan::ALL
        .iter()
        .map(|span| (span.tag(), span.bucket(now)))
        .unzip();
    for row in rows {
        let r = &row.record;
        ids.push(*r.job_id.as_uuid());
        statuses.push(r.status.as_str());
        bands.push(i16::from(r.priority.band()));
        ready.push(row.ready);
        due.push(row.due_ms);
        keys.push(r.unique_key.clone());
        groups.push(r.group.clone());
        costs.push(r.cost.unwrap_or(1) as i32);
        parents.push(r.parent.map(|p| *p.as_uuid()));
        waiting.push(row.waiting);
        created.push(to_millis(r.created_at));
        payloads.push(r.payload.as_str().to_owned());
        states.push(row.state()?);
    }
    let inserted: Vec<(uuid::Uuid, i64)> = sqlx::query_as(&format!(
        "WITH ins AS (INSERT INTO {schema}.jobs (id, queue, status, band, place, ready, due_ms, \
         unique_key, grp, cost, parent, waiting, created_ms, payload, state) \
         SELECT id, $1, status, band, \
         CASE WHEN ready THEN nextval('{schema}.places') ELSE 0 END, \
         ready, due_ms, unique_key, grp, cost, parent, waiting, created_ms, payload, state \
         FROM unnest($2::uuid[], $3::text[], $4::int2[], $5::bool[], $6::int8[], $7::text[], \
         $8::int8[], $9::text[], $10::jsonb[], $15::text[], $16::int4[], $17::uuid[], \
         $18::bool[]) WITH ORDINALITY \
         AS t(id, status, band, ready, due_ms, unique_key, created_ms, payload, state, grp, cost, \
         parent, waiting, n) \
         ORDER BY n \
         ON CONFLICT DO NOTHING RETURNING id, place, {TALLY_COLUMNS}), \
         followed AS ({FOLLOWED}), \
         added AS (INSERT INTO {schema}.outbox (queue, ms, job, kind) \
         SELECT $1, $12, id, $14 FROM ins WHERE EXISTS (SELECT 1 FROM followed) \
         ORDER BY place, id), \
         woke AS (SELECT pg_notify($11, {woke}) WHERE $11::text IS NOT NULL \
         AND EXISTS (SELECT 1 FROM ins)), \
         told AS (SELECT pg_notify($13, $1) FROM followed WHERE EXISTS (SELECT 1 FROM ins)), \
         counted AS (INSERT INTO {schema}.counts (queue, name, n) \
         SELECT $1, 'enqueued', count(*) FROM ins HAVING count(*) > 0), \
         charted AS (INSERT INTO {schema}.series (queue, span, bucket, field, n) \
         SELECT $1, span, bucket, 'enqueued', (SELECT count(*) FROM ins) \
         FROM unnest($19::text[], $20::int8[]) AS b(span, bucket) \
         WHERE EXISTS (SELECT 1 FROM ins)), \
         tallies AS ({}) \
         SELECT ins.id, ins.place FROM ins LEFT JOIN woke ON true LEFT JOIN told ON true",
        tallied(schema, &[], &["ins"]),
        FOLLOWED = followed(schema, "$1", "$12"),
        woke = crate::floors::payload_sql("$1", "(SELECT min(place) FROM ins WHERE ready)"),
    ))
    .bind(queue)
    .bind(&ids)
    .bind(&statuses)
    .bind(&bands)
    .bind(&ready)
    .bind(&due)
    .bind(&keys)
    .bind(&created)
    .bind(&payloads)
    .bind(&states)
    .bind(channel)
    .bind(now)
    .bind(events_channel)
    .bind(
        serde_json::to_value(queue_core::EventKind::Transition {
            from: None,
            to: queue_core::JobStatus::Queued,
        })
        .expect("an event kind encodes"),
    )
    .bind(&groups)
    .bind(&costs)
    .bind(&parents)
    .bind(&waiting)
    .bind(&spans)
    .bind(&buckets)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_error(e, secrets))?;
    Ok(inserted
        .into_iter()
        .map(|(id, place)| (JobId::from_uuid(id), place))
        .collect())
}

/// Writes rows back (their record, place and lease) in one statement.
pub(crate) async fn write(
    conn: &mut PgConnection,
    schema: &str,
    rows: &[Row],
    secrets: &[String],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len();
    let mut ids = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut bands = Vec::with_capacity(n);
    let mut places = Vec::with_capacity(n);
    let mut ready = Vec::with_capacity(n);
    let mut waiting = Vec::with_capacity(n);
    let mut cascading = Vec::with_capacity(n);
    let mut due = Vec::with_capacity(n);
    let mut finished = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    let mut until = Vec::with_capacity(n);
    let mut lease_ms = Vec::with_capacity(n);
    let mut claimed_ms = Vec::with_capacity(n);
    let mut workers = Vec::with_capacity(n);
    let mut claims = Vec::with_capacity(n);
    let mut ended = Vec::with_capacity(n);
    let mut states = Vec::with_capacity(n);
    for row in rows {
        let r = &row.record;
        ids.push(*r.job_id.as_uuid());
        statuses.push(r.status.as_str());
        bands.push(i16::from(r.priority.band()));
        places.push(row.place);
        ready.push(row.ready);
        waiting.push(row.waiting);
        cascading.push(row.cascading);
        due.push(row.due_ms);
        finished.push(row.finished_ms);
        tokens.push(row.lease.as_ref().map(|l| l.token.as_str().to_owned()));
        until.push(row.lease.as_ref().map(|l| l.until_ms));
        lease_ms.push(row.lease.as_ref().map(|l| l.lease_ms));
        claimed_ms.push(row.lease.as_ref().map(|l| l.claimed_ms));
        workers.push(row.lease.as_ref().map(|l| l.worker.clone()));
        claims.push(row.lease.as_ref().map(|l| l.claim_id));
        ended.push(row.ended_token.clone());
        states.push(row.state()?);
    }
    sqlx::query(&format!(
        "WITH old AS (SELECT {TALLY_COLUMNS} FROM {schema}.jobs WHERE id = ANY($1)), \
         new AS (UPDATE {schema}.jobs AS j SET status = t.status, band = t.band, place = t.place, \
         ready = t.ready, due_ms = t.due_ms, finished_ms = t.finished_ms, \
         lease_token = t.lease_token, lease_until_ms = t.lease_until_ms, \
         claim_worker = t.claim_worker, claim_id = t.claim_id, ended_token = t.ended_token, \
         state = t.state, lease_ms = t.lease_ms, claimed_ms = t.claimed_ms, \
         waiting = t.waiting, cascading = t.cascading \
         FROM unnest($1::uuid[], $2::text[], $3::int2[], $4::int8[], $5::bool[], $6::int8[], \
         $7::int8[], $8::text[], $9::int8[], $10::text[], $11::int8[], $12::text[], $13::jsonb[], \
         $14::int8[], $15::int8[], $16::bool[], $17::bool[]) \
         AS t(id, status, band, place, ready, due_ms, finished_ms, lease_token, lease_until_ms, \
         claim_worker, claim_id, ended_token, state, lease_ms, claimed_ms, waiting, cascading) \
         WHERE j.id = t.id RETURNING j.queue, j.status, j.band, j.ready, j.due_ms, j.waiting) \
         {}",
        tallied(schema, &["old"], &["new"])
    ))
    .bind(&ids)
    .bind(&statuses)
    .bind(&bands)
    .bind(&places)
    .bind(&ready)
    .bind(&due)
    .bind(&finished)
    .bind(&tokens)
    .bind(&until)
    .bind(&workers)
    .bind(&claims)
    .bind(&ended)
    .bind(&states)
    .bind(&lease_ms)
    .bind(&claimed_ms)
    .bind(&waiting)
    .bind(&cascading)
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error(e, secrets))?;
    Ok(())
}

/// Adds lifetime counter deltas (`queue_core::backend::rules::counter` names), in the
/// caller's transaction.
pub(crate) async fn count(
    conn: &mut PgConnection,
    schema: &str,
    queue: &str,
    deltas: &std::collections::BTreeMap<&'static str, i64>,
    secrets: &[String],
) -> Result<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = deltas.keys().copied().collect();
    let ns: Vec<i64> = deltas.values().copied().collect();
    sqlx::query(&format!(
        "INSERT INTO {schema}.counts (queue, name, n) SELECT $1, * FROM unnest($2::text[], $3::int8[])"
    ))
    .bind(queue)
    .bind(&names)
    .bind(&ns)
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error(e, secrets))?;
    Ok(())
}

impl crate::PostgresBackend {
    /// Writes rows back ([`write`]). When any is left ready, its place is announced: a row
    /// given back at its place, or placed at the back by a transaction that commits after
    /// a claim moved past it, lies below a claim's floor (`floors.rs`). To this process's
    /// claims at once (before the commit: at worst one scan more), to others' by a wake-up
    /// at commit.
    pub(crate) async fn write_rows(&self, conn: &mut PgConnection, rows: &[Row]) -> Result<()> {
        write(conn, &self.inner.schema, rows, &self.inner.secrets).await?;
        let lowest = rows.iter().filter(|r| r.ready).map(|r| r.place).min();
        if let Some(place) = lowest {
            self.inner.hint.announce(place);
            self.wake(conn, lowest).await?;
        }
        Ok(())
    }
}

/// Applies `event` to a leased row and places it where `rules::placement` says; the lease
/// ends. A row for the back of its priority is marked `place == -1` (the caller numbers
/// them).
pub(crate) fn settle(row: &mut Row, event: Event, input: &EffectInput) -> Result<()> {
    let id = row.record.job_id;
    row.record.apply_event(event, input).map_err(|e| e.of(id))?;
    row.lease = None;
    let placement = rules::placement(event);
    match placement {
        Placement::ReadyInPlace | Placement::ReadyAtBack | Placement::Delayed
            if row.record.waits_on_children() =>
        {
            // Queued again with unfinished children: it waits on them.
            row.ready = false;
            row.due_ms = None;
            row.waiting = true;
        }
        Placement::Leased => {}
        Placement::ReadyInPlace => row.ready = true,
        Placement::ReadyAtBack => {
            row.ready = true;
            row.place = -1;
        }
        Placement::Delayed => {
            row.ready = false;
            row.due_ms = input.due;
        }
        Placement::Finished => {
            row.ready = false;
            row.waiting = false;
            row.due_ms = None;
            row.finished_ms = Some(input.now);
        }
    }
    Ok(())
}
