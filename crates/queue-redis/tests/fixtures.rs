//! The `test-utils` fixtures users get for their own integration tests.

use queue_core::{JobStatus, JobStore, NewJob};
use queue_redis::testing::{TEST_KEY_PREFIX, TestQueue, redis_url};

async fn keys_of(queue_name: &str) -> Vec<String> {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg(format!("{TEST_KEY_PREFIX}:{{{queue_name}}}*"))
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_queue_is_its_own_and_is_removed_on_drop() {
    let a = TestQueue::start(&redis_url()).await;
    let b = TestQueue::start(&redis_url()).await;
    assert_ne!(a.config().queue_name, b.config().queue_name);

    let job = a
        .enqueue(NewJob::new("greet", &"world").unwrap())
        .await
        .unwrap();
    assert_eq!(a.get(job.job_id).await.unwrap().status, JobStatus::Queued);
    assert!(b.get(job.job_id).await.is_err(), "queues do not share jobs");

    let name = a.config().queue_name.clone();
    assert!(
        !keys_of(&name).await.is_empty(),
        "the job is stored under the queue's keys"
    );
    drop(a);
    assert_eq!(
        keys_of(&name).await,
        Vec::<String>::new(),
        "dropped: no key left"
    );

    let name = b.config().queue_name.clone();
    b.enqueue(NewJob::new("greet", &"again").unwrap())
        .await
        .unwrap();
    assert!(b.cleanup().await > 0);
    assert_eq!(
        keys_of(&name).await,
        Vec::<String>::new(),
        "cleaned up: no key left"
    );
}
