//! Floors on a real Postgres: claims scan a band's ready jobs from a floor (so a
//! transaction holding the xmin horizon does not make them walk every job leased since),
//! and a job that lands below the floor still starts: announced by its wake-up, or found
//! by the next sweep. The clock is frozen, so no sweep happens unless a test moves it on.

mod support;

use std::time::Duration;

use queue_core::backend::{ClaimRequest, Outcome};
use queue_core::{JobId, ManualClock, NewJob, WorkerId};
use queue_postgres::PostgresBackend;
use support::TestSchema;

fn job(n: u32) -> NewJob {
    NewJob::new("pg", &serde_json::json!({ "n": n })).unwrap()
}

fn req(worker: &str, max: usize) -> ClaimRequest {
    ClaimRequest::new(WorkerId::new(worker), max, Duration::from_secs(30))
}

async fn claim(q: &PostgresBackend, worker: &str, max: usize, wait: Duration) -> Vec<JobId> {
    let leases = q.fetch(&req(worker, max), wait).await.unwrap();
    leases.iter().map(|l| l.job.job_id).collect()
}

#[tokio::test]
async fn a_job_committed_after_a_claim_passed_its_place_is_announced_to_other_processes() {
    let s = TestSchema::new();
    let clock = ManualClock::at(1_800_000_000_000);
    let producer = s.backend_at(&clock).await;
    let worker = s.backend_at(&clock).await;
    // The earlier job takes its place first and commits last.
    let mut tx = producer.pool().begin().await.unwrap();
    let early = producer.enqueue_in(&mut tx, job(1)).await.unwrap();
    let late = producer.enqueue(job(2)).await.unwrap();
    assert_eq!(
        claim(&worker, "w1", 10, Duration::ZERO).await,
        [late.job_id]
    );
    tx.commit().await.unwrap();
    // Below the floor that claim left; the commit's wake-up carries its place.
    assert_eq!(
        claim(&worker, "w1", 10, Duration::from_secs(30)).await,
        [early.job_id]
    );
}

#[tokio::test]
async fn a_job_given_back_in_place_starts_before_the_jobs_behind_it() {
    let s = TestSchema::new();
    let clock = ManualClock::at(1_800_000_000_000);
    let q = s.backend_at(&clock).await;
    let first = q.enqueue(job(1)).await.unwrap();
    let second = q.enqueue(job(2)).await.unwrap();
    let lease = q.fetch(&req("w1", 1), Duration::ZERO).await.unwrap();
    assert_eq!(lease[0].job.job_id, first.job_id);
    q.finish(&lease[0].to_ref(), Outcome::Released)
        .await
        .unwrap();
    assert_eq!(claim(&q, "w1", 1, Duration::ZERO).await, [first.job_id]);
    assert_eq!(claim(&q, "w1", 1, Duration::ZERO).await, [second.job_id]);
}

#[tokio::test]
async fn a_job_another_process_gives_back_in_place_is_announced() {
    let s = TestSchema::new();
    let clock = ManualClock::at(1_800_000_000_000);
    let holder = s.backend_at(&clock).await;
    let worker = s.backend_at(&clock).await;
    let only = holder.enqueue(job(1)).await.unwrap();
    let lease = worker.fetch(&req("w1", 1), Duration::ZERO).await.unwrap();
    assert_eq!(lease[0].job.job_id, only.job_id);
    holder
        .finish(&lease[0].to_ref(), Outcome::Released)
        .await
        .unwrap();
    assert_eq!(
        claim(&worker, "w1", 1, Duration::from_secs(30)).await,
        [only.job_id]
    );
}

#[tokio::test]
async fn a_job_a_claim_skipped_while_another_transaction_held_it_is_found_by_the_sweep() {
    let s = TestSchema::new();
    let clock = ManualClock::at(1_800_000_000_000);
    let q = s.backend_at(&clock).await;
    let held = q.enqueue(job(1)).await.unwrap();
    let free = q.enqueue(job(2)).await.unwrap();
    let mut holder = q.pool().begin().await.unwrap();
    sqlx::query(&format!(
        "SELECT 1 FROM \"{}\".jobs WHERE id = $1 FOR UPDATE",
        s.name
    ))
    .bind(held.job_id.as_uuid())
    .execute(&mut *holder)
    .await
    .unwrap();
    assert_eq!(claim(&q, "w1", 10, Duration::ZERO).await, [free.job_id]);
    // Released without a write: nothing announces it.
    holder.rollback().await.unwrap();
    clock.advance(queue_postgres::SWEEP);
    assert_eq!(claim(&q, "w1", 10, Duration::ZERO).await, [held.job_id]);
}

#[tokio::test]
async fn a_delayed_job_committed_long_after_it_fell_due_is_promoted_by_the_sweep() {
    let s = TestSchema::new();
    let clock = ManualClock::at(1_800_000_000_000);
    let q = s.backend_at(&clock).await;
    let mut tx = q.pool().begin().await.unwrap();
    let late = q
        .enqueue_in(&mut tx, job(1).delay(Duration::from_millis(10)))
        .await
        .unwrap();
    // Claims meanwhile move the due floor to a sweep before their time.
    clock.advance(Duration::from_secs(5));
    assert!(claim(&q, "w1", 10, Duration::ZERO).await.is_empty());
    tx.commit().await.unwrap();
    clock.advance(queue_postgres::SWEEP);
    assert_eq!(claim(&q, "w1", 10, Duration::ZERO).await, [late.job_id]);
}

#[tokio::test]
async fn claims_add_cursors_and_requests_and_the_folder_keeps_only_the_newest() {
    let s = TestSchema::new();
    let q = s.backend().await;
    for n in 0..6 {
        q.enqueue(job(n)).await.unwrap();
    }
    let mut last = None;
    for worker in ["w1", "w2"] {
        for _ in 0..3 {
            let request = req(worker, 1);
            let leases = q.fetch(&request, Duration::ZERO).await.unwrap();
            assert_eq!(leases.len(), 1);
            last = Some((request, leases[0].job.job_id));
        }
    }
    let count = |table: &'static str| {
        let sql = format!("SELECT count(*) FROM \"{}\".{table}", s.name);
        let pool = q.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(&sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    // Nothing claims any more: the folder (every 2 s) deletes all but the newest cursor
    // and each worker's newest request.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (count("cursors").await, count("claims").await) != (1, 2) {
        assert!(tokio::time::Instant::now() < deadline, "old cursors kept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The newest request still answers when sent again: what it took, nothing more.
    let (request, took) = last.unwrap();
    let again = q.fetch(&request, Duration::ZERO).await.unwrap();
    assert_eq!(
        again.iter().map(|l| l.job.job_id).collect::<Vec<_>>(),
        [took]
    );
}
