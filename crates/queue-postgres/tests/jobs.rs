//! Enqueue on a real Postgres: inside the application's transaction (rollback leaves
//! nothing, commit wakes a waiting worker), unique keys across transactions, migrations,
//! bad input and secrets.

mod support;

use std::time::Duration;

use queue_core::backend::ClaimRequest;
use queue_core::{Error, JobId, NewJob, WorkerId};
use queue_postgres::{PostgresBackend, PostgresConfig};
use support::TestSchema;

fn job(n: u32) -> NewJob {
    NewJob::new("pg", &serde_json::json!({ "n": n })).unwrap()
}

fn req(max: usize) -> ClaimRequest {
    ClaimRequest::new(WorkerId::new("w1"), max, Duration::from_secs(30))
}

#[tokio::test]
async fn a_rolled_back_enqueue_leaves_no_job_and_no_key() {
    let s = TestSchema::new();
    let q = s.backend().await;
    let mut tx = q.pool().begin().await.unwrap();
    let rec = q
        .enqueue_in(&mut tx, job(1).unique_key("order-7"))
        .await
        .unwrap();
    // Not visible outside the transaction before it commits.
    assert!(matches!(
        q.get(rec.job_id).await,
        Err(Error::NotFound { .. })
    ));
    tx.rollback().await.unwrap();
    assert!(matches!(
        q.get(rec.job_id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(q.fetch(&req(10), Duration::ZERO).await.unwrap().is_empty());
    // The key was never held.
    let again = q.enqueue(job(2).unique_key("order-7")).await.unwrap();
    assert_eq!(
        q.get(again.job_id).await.unwrap().unique_key.as_deref(),
        Some("order-7")
    );
}

#[tokio::test]
async fn a_committed_enqueue_wakes_a_waiting_fetch() {
    let s = TestSchema::new();
    let q = s.backend().await;
    let fetcher = {
        let q = q.clone();
        tokio::spawn(async move { q.fetch(&req(1), Duration::from_secs(20)).await })
    };
    let mut tx = q.pool().begin().await.unwrap();
    sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
    let rec = q.enqueue_in(&mut tx, job(1)).await.unwrap();
    assert!(!fetcher.is_finished(), "nothing to take before the commit");
    tx.commit().await.unwrap();
    let leases = fetcher.await.unwrap().unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].job.job_id, rec.job_id);
}

#[tokio::test]
async fn an_enqueue_inside_a_transaction_commits_with_the_application_rows() {
    let s = TestSchema::new();
    let q = s.backend().await;
    let table = format!("\"{}\".orders", s.name);
    sqlx::query(&format!("CREATE TABLE {table} (id int8 PRIMARY KEY)"))
        .execute(q.pool())
        .await
        .unwrap();
    let mut tx = q.pool().begin().await.unwrap();
    sqlx::query(&format!("INSERT INTO {table} VALUES (7)"))
        .execute(&mut *tx)
        .await
        .unwrap();
    let recs = q
        .enqueue_many_in(&mut tx, vec![job(1), job(2)])
        .await
        .unwrap();
    // A refused job inside the transaction does not poison it (its own savepoint).
    let refused = q.enqueue_in(&mut tx, NewJob::new("", &1).unwrap()).await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument { .. })),
        "{refused:?}"
    );
    tx.commit().await.unwrap();
    let orders: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(q.pool())
        .await
        .unwrap();
    assert_eq!(orders, 1);
    for r in recs {
        let id = r.unwrap().job_id;
        assert_eq!(q.get(id).await.unwrap().job_id, id);
    }
}

#[tokio::test]
async fn a_unique_key_held_by_an_open_transaction_waits_for_its_outcome() {
    let s = TestSchema::new();
    let q = s.backend().await;
    let mut tx = q.pool().begin().await.unwrap();
    let first = q.enqueue_in(&mut tx, job(1).unique_key("k")).await.unwrap();
    let second = {
        let q = q.clone();
        tokio::spawn(async move { q.enqueue(job(2).unique_key("k")).await })
    };
    tx.commit().await.unwrap();
    match second.await.unwrap() {
        Err(Error::AlreadyExists { unique_key, job_id }) => {
            assert_eq!((unique_key.as_str(), job_id), ("k", first.job_id));
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    // The same id again is answered with its record, not a second job.
    let same = q
        .enqueue(job(1).unique_key("k").job_id(first.job_id))
        .await
        .unwrap();
    assert_eq!(same.job_id, first.job_id);
}

#[tokio::test]
async fn bad_jobs_are_refused_by_name_and_the_rest_are_stored() {
    let s = TestSchema::new();
    let q = s.backend().await;
    let limit = q.queue_config().limits.payload_bytes;
    // A JSON string of `limit` bytes, quotes included, and one byte more.
    let at = NewJob::with_payload(
        "pg",
        queue_core::Payload::from_json(format!("\"{}\"", "x".repeat(limit - 2))).unwrap(),
    );
    let past = NewJob::with_payload(
        "pg",
        queue_core::Payload::from_json(format!("\"{}\"", "x".repeat(limit - 1))).unwrap(),
    );
    let out = q
        .enqueue_many(vec![
            at,
            past,
            job(3).group(""),
            job(4).group("publisher-1"),
        ])
        .await
        .unwrap();
    assert!(out[0].is_ok(), "{:?}", out[0]);
    let err = out[1].as_ref().unwrap_err().to_string();
    assert!(err.contains("payload"), "{err}");
    let err = out[2].as_ref().unwrap_err().to_string();
    assert!(err.contains("group"), "{err}");
    assert!(out[3].is_ok());
}

#[tokio::test]
async fn migrations_apply_once_and_a_missing_schema_is_named() {
    let s = TestSchema::new();
    let err = PostgresBackend::builder(s.config())
        .connect()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("queuectl migrate") && err.contains(&s.name),
        "{err}"
    );
    let q = s.backend().await;
    let again = s.backend().await;
    let versions: i64 =
        sqlx::query_scalar(&format!("SELECT count(*) FROM \"{}\".migrations", s.name))
            .fetch_one(q.pool())
            .await
            .unwrap();
    assert_eq!(versions, queue_postgres::MIGRATIONS.len() as i64);
    drop(again);
    sqlx::query(&format!(
        "INSERT INTO \"{}\".migrations (version, name) VALUES (999, 'future')",
        s.name
    ))
    .execute(q.pool())
    .await
    .unwrap();
    let err = PostgresBackend::builder(s.config())
        .migrate(true)
        .connect()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("999") && err.contains("newer"), "{err}");
}

#[tokio::test]
async fn stats_sum_tallies_and_migration_2_backfills_them_for_rows_already_stored() {
    let s = TestSchema::new();
    let q = s.backend().await;
    for n in 0..4 {
        q.enqueue(job(n)).await.unwrap();
    }
    q.enqueue(job(9).priority(queue_core::Priority::High))
        .await
        .unwrap();
    q.enqueue(job(10).delay(Duration::from_secs(600)))
        .await
        .unwrap();
    let leases = q.fetch(&req(2), Duration::ZERO).await.unwrap();
    q.finish(
        &leases[0].to_ref(),
        queue_core::backend::Outcome::Completed { result: None },
    )
    .await
    .unwrap();
    let before = q.stats().await.unwrap();
    assert_eq!(
        (
            before.total,
            before.queued,
            before.processing,
            before.completed
        ),
        (6, 4, 1, 1)
    );
    assert_eq!(before.scheduled, 1);
    assert_eq!(before.depth[&queue_core::Priority::Normal], 3);
    assert_eq!(before.depth[&queue_core::Priority::High], 0);
    // A version-1 schema: rows and lifetime counters, no tallies, the ticks on the
    // queue's row and one claim request per worker (no cursors: version 3). Migrating
    // again counts the rows once.
    sqlx::raw_sql(&format!(
        "DELETE FROM \"{0}\".counts WHERE name LIKE 'now:%'; \
         DROP TABLE \"{0}\".cursors; \
         ALTER TABLE \"{0}\".queues ADD COLUMN tick bigint NOT NULL DEFAULT 0, \
         ADD COLUMN ungrouped bigint[] NOT NULL DEFAULT '{{0,0,0}}'; \
         DELETE FROM \"{0}\".claims; \
         ALTER TABLE \"{0}\".claims DROP CONSTRAINT claims_pkey, ADD PRIMARY KEY (queue, worker); \
         DELETE FROM \"{0}\".migrations WHERE version >= 2",
        s.name
    ))
    .execute(q.pool())
    .await
    .unwrap();
    assert_eq!(q.stats().await.unwrap().total, 0);
    let again = s.backend().await;
    let after = again.stats().await.unwrap();
    assert_eq!(format!("{after:?}"), format!("{before:?}"));
}

#[tokio::test]
async fn events_are_kept_only_while_someone_follows_the_queue() {
    use futures_util::StreamExt;
    let s = TestSchema::new();
    let q = s.backend().await;
    let outbox = |q: PostgresBackend| {
        let sql = format!("SELECT count(*) FROM \"{}\".outbox", s.name);
        async move {
            sqlx::query_scalar::<_, i64>(&sql)
                .fetch_one(q.pool())
                .await
                .unwrap()
        }
    };
    // Nobody follows: work leaves nothing behind in the outbox.
    q.enqueue(job(1)).await.unwrap();
    let lease = q.fetch(&req(1), Duration::ZERO).await.unwrap().remove(0);
    q.finish(
        &lease.to_ref(),
        queue_core::backend::Outcome::Completed { result: None },
    )
    .await
    .unwrap();
    assert_eq!(outbox(q.clone()).await, 0);
    // A subscriber sees what happens after it subscribed.
    let mut events = q.subscribe(None).await.unwrap();
    let rec = q.enqueue(job(2)).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.job_id, rec.job_id);
}

#[tokio::test]
async fn a_password_never_shows_in_an_error() {
    let cfg = PostgresConfig::new("postgres://postgres:hunter2-secret@127.0.0.1:1/none").unwrap();
    let err = PostgresBackend::builder(cfg).connect().await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2-secret"), "{shown}");
    let missing = queue_core::Error::NotFound { id: JobId::new() };
    assert!(missing.to_string().contains("not found"));
}

#[tokio::test]
async fn a_batch_naming_one_id_twice_answers_each_as_one_enqueue_after_another() {
    let s = TestSchema::new();
    let q = s.backend().await;
    let holder = q.enqueue(job(1).unique_key("k1")).await.unwrap();
    let id = JobId::new();
    let out = q
        .enqueue_many(vec![job(2).job_id(id).unique_key("k1"), job(2).job_id(id)])
        .await
        .unwrap();
    match &out[0] {
        Err(Error::AlreadyExists { job_id, .. }) => assert_eq!(*job_id, holder.job_id),
        other => panic!("the first is refused by the key: {other:?}"),
    }
    let second = out[1].as_ref().unwrap();
    assert_eq!((second.job_id, second.unique_key.as_deref()), (id, None));
    // And the other way round: the second is answered with the first.
    let other = JobId::new();
    let out = q
        .enqueue_many(vec![
            job(3).job_id(other),
            job(4).job_id(other).unique_key("k9"),
        ])
        .await
        .unwrap();
    assert_eq!(
        out[1].as_ref().unwrap().unique_key,
        None,
        "the record the first created"
    );
    assert_eq!(q.get(other).await.unwrap().payload.to_value()["n"], 3);
}
