//! The load the drill runs under: producers, a publisher and an operator.

use super::*;

/// Enqueues a mix of jobs until stopped: quick ones (some failing), slow ones (3 %, longer
/// than a lease), hanging ones (2 %, past their timeout), some unique, delayed or
/// prioritised, some quick ones in one of this producer's three ordered sequences. Each
/// job is sent again with its id until it is stored or refused, so every stored job is
/// known.
pub(super) async fn produce(
    backend: SharedBackend,
    stop: CancellationToken,
    enqueued: Arc<Mutex<Vec<JobId>>>,
    refused: Arc<AtomicU64>,
    partitioned: bool,
) {
    // This producer's sequences: its enqueues of one are in order, one after the other.
    let tag = fastrand::u32(..);
    while !stop.is_cancelled() {
        let roll = fastrand::u32(..100);
        let task = match roll {
            0..=94 => Task {
                ms: fastrand::u64(1..40),
                fail: fastrand::u32(..10) == 0,
                progress: fastrand::bool(),
            },
            95..=97 => Task {
                ms: fastrand::u64(2500..4000),
                fail: false,
                progress: true,
            },
            _ => Task {
                ms: 60_000,
                fail: false,
                progress: false,
            },
        };
        let mut job = NewJob::new("work", &task)
            .expect("encodes")
            .job_id(JobId::new())
            .priority(match fastrand::u32(..10) {
                0 => Priority::High,
                1..=7 => Priority::Normal,
                _ => Priority::Low,
            })
            .max_retries(fastrand::u32(0..4));
        if roll >= 98 {
            job = job.timeout(Duration::from_millis(1500)).max_retries(1);
        }
        if fastrand::u32(..10) == 0 {
            job = job.unique_key(format!("book-{}", fastrand::u32(..40)));
        }
        if fastrand::u32(..10) == 0 {
            job = job.delay(rand_ms(100, 2000));
        }
        if fastrand::bool() {
            job = job.group(publisher(fastrand::u32(..5)));
        }
        if fastrand::u32(..25) == 0 {
            // A flow: the job waits on 1 to 4 quick children (ids chosen here, so every
            // job of it is known), each with a random failure policy.
            let kids: Vec<Flow> = (0..fastrand::usize(1..5))
                .map(|_| {
                    let task = Task {
                        ms: fastrand::u64(1..40),
                        fail: fastrand::u32(..5) == 0,
                        progress: false,
                    };
                    let child = NewJob::new("work", &task)
                        .expect("encodes")
                        .job_id(JobId::new())
                        .max_retries(fastrand::u32(0..3));
                    Flow::new(child).on_failure(ChildPolicy::ALL[fastrand::usize(..3)])
                })
                .collect();
            let ids: Vec<JobId> = std::iter::once(&job)
                .chain(kids.iter().map(|k| &k.job))
                .filter_map(|j| j.options.job_id)
                .collect();
            let flow = Flow::new(job.clone()).children(kids);
            loop {
                match backend.enqueue_flow(flow.clone()).await {
                    Ok(_) => {
                        enqueued.lock().unwrap().extend(ids);
                        break;
                    }
                    Err(Error::AlreadyExists { .. }) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            tokio::time::sleep(rand_ms(3, 10)).await;
            continue;
        }
        if roll < 95 && fastrand::u32(..20) == 0 {
            // At most one retry: a member's backoff holds its whole sequence up. On a
            // partitioned queue a sequenced job takes no group (README "Partitions").
            if partitioned {
                job.options.group = None;
            }
            job = job
                .sequence(format!("seq-{tag}-{}", fastrand::u32(..3)))
                .max_retries(fastrand::u32(0..2));
        }
        loop {
            match backend.enqueue(job.clone()).await {
                Ok(r) => {
                    enqueued.lock().unwrap().push(r.job_id);
                    break;
                }
                Err(Error::AlreadyExists { .. }) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        tokio::time::sleep(rand_ms(3, 10)).await;
    }
}

/// The group of the drill's `n`th publisher.
pub(super) fn publisher(n: u32) -> String {
    format!("publisher-{n}")
}

/// An operator: cancels recent jobs and retries failed ones, racing the workers.
pub(super) async fn operate(
    backend: SharedBackend,
    stop: CancellationToken,
    enqueued: Arc<Mutex<Vec<JobId>>>,
) {
    while !stop.is_cancelled() {
        tokio::time::sleep(rand_ms(150, 400)).await;
        let pick = {
            let ids = enqueued.lock().unwrap();
            let recent = ids.len().saturating_sub(300);
            (ids.len() > recent).then(|| ids[fastrand::usize(recent..ids.len())])
        };
        if let Some(id) = pick {
            let _ = backend.cancel(id).await;
        }
        if fastrand::u32(..4) == 0
            && let Ok(page) = backend
                .list(&ListQuery::new().status(JobStatus::Failed).limit(10))
                .await
            && let Some(r) = page.jobs.first()
        {
            let _ = backend.retry(r.job_id, None).await;
        }
    }
}
