//! Unit tests of the worker's decisions around a mocked `Broker`: what it reports for
//! each kind of handler result, and how it rides out backend errors.

use std::time::Duration;

use queue_core::backend::{Lease, MockBroker, Outcome, from_millis};
use queue_core::{Error, JobError, JobRecord, LeaseToken};
use queue_worker::CancellationToken;
use tokio::sync::mpsc;

mod support;
use support::{completed, expect_beats_and_maintenance, expect_housekeeping, record};

/// A broker that leases `job` once, then has nothing; every `finish` outcome goes to the
/// returned channel. `finish_errors` leading calls to `finish` fail as unavailable.
fn broker(job: JobRecord, finish_errors: usize) -> (MockBroker, mpsc::UnboundedReceiver<Outcome>) {
    let mut mock = MockBroker::new();
    let mut lease = Some(Lease {
        job,
        token: LeaseToken::new("t"),
        expires_at: from_millis(30_000),
        claimed_at: tokio::time::Instant::now(),
    });
    mock.expect_fetch()
        .returning(move |_, _| Ok(lease.take().into_iter().collect()));
    expect_housekeeping(&mut mock);
    let (tx, rx) = mpsc::unbounded_channel();
    let mut failures = finish_errors;
    mock.expect_finish_many().returning(move |endings, _| {
        for e in &endings {
            tx.send(e.outcome.clone()).unwrap();
        }
        if failures > 0 {
            failures -= 1;
            return Err(Error::Unavailable {
                backend: "mock",
                source: "connection reset".into(),
            });
        }
        Ok(completed(&endings))
    });
    (mock, rx)
}

async fn run_with(
    mock: MockBroker,
    mut outcomes: mpsc::UnboundedReceiver<Outcome>,
    expect: usize,
    configure: impl FnOnce(queue_worker::WorkerBuilder) -> queue_worker::WorkerBuilder,
) -> Vec<Outcome> {
    let stop = CancellationToken::new();
    let worker = configure(support::on_mock(mock).fetch_wait(Duration::from_millis(5)))
        .build()
        .unwrap();
    let run = tokio::spawn(worker.run(stop.clone()));
    let mut got = Vec::new();
    while got.len() < expect {
        let outcome = tokio::time::timeout(Duration::from_secs(10), outcomes.recv()).await;
        got.push(outcome.expect("the worker reports an outcome").unwrap());
    }
    stop.cancel();
    run.await.unwrap().unwrap();
    got
}

fn echo(b: queue_worker::WorkerBuilder) -> queue_worker::WorkerBuilder {
    b.register("echo", |n: u32, _ctx| async move {
        match n {
            0 => Err(JobError::permanent("zero is not allowed")),
            1 => Err(JobError::retry("flaky")),
            2 => Err(JobError::retry_after(
                Duration::from_secs(5),
                "rate limited",
            )),
            3 => panic!("boom"),
            _ => Ok(()),
        }
    })
}

/// During a rolling deploy a worker may not know a task yet: the job is retried with the
/// normal backoff (another worker may know it), and fails naming the task once retries
/// run out.
#[tokio::test]
async fn unknown_task_is_retried_then_fails_naming_it() {
    let (mock, rx) = broker(record("nope", "1", 1, 3), 0);
    let got = run_with(mock, rx, 1, echo).await;
    match &got[0] {
        Outcome::Retry { error, delay } => {
            assert!(
                error.contains("no handler registered for task `nope`"),
                "{error}"
            );
            assert!(error.contains("echo"), "lists the known tasks: {error}");
            assert_eq!(*delay, Duration::from_secs(120), "the normal backoff");
        }
        other => panic!("expected Retry, got {other:?}"),
    }
    let (mock, rx) = broker(record("nope", "1", 3, 3), 0);
    let got = run_with(mock, rx, 1, echo).await;
    match &got[0] {
        Outcome::Failed { error } => assert!(error.contains("task `nope`"), "{error}"),
        other => panic!("expected Failed, got {other:?}"),
    }
}

/// A handler that panics when called, before it returns a future, is a failed attempt
/// like any panic; the worker goes on.
#[tokio::test]
async fn a_handler_that_panics_when_called_is_a_failed_attempt() {
    let (mock, rx) = broker(record("eager", "1", 0, 3), 0);
    let got = run_with(mock, rx, 1, |b| {
        b.register("eager", |n: u32, _ctx| {
            if n == 1 {
                panic!("no future for you");
            }
            async { Ok(()) }
        })
    })
    .await;
    match &got[0] {
        Outcome::Retry { error, .. } => {
            assert!(
                error.contains("handler panicked: no future for you"),
                "{error}"
            )
        }
        other => panic!("expected Retry, got {other:?}"),
    }
}

#[test]
fn a_worker_without_handlers_is_refused() {
    let err = support::on_mock(MockBroker::new()).build().unwrap_err();
    assert!(err.to_string().contains("no handlers"), "{err}");
}

/// One handler per task name: a second registration of a name, by the string form or by a
/// second `Job` type with the same `Job::NAME`, is refused when the worker is built, as is
/// a name no job can carry; one registration per name builds.
#[test]
fn a_task_registered_twice_is_refused() {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Resize {
        width: u32,
    }
    impl queue_core::Job for Resize {
        const NAME: &'static str = "resize";
        type Output = ();
    }
    #[derive(serde::Serialize, serde::Deserialize)]
    struct ResizeAgain {
        height: u32,
    }
    impl queue_core::Job for ResizeAgain {
        const NAME: &'static str = "resize";
        type Output = ();
    }
    let ok = |_: u32, _| async { Ok::<_, queue_core::JobError>(()) };
    let twice = support::on_mock(MockBroker::new())
        .register("echo", ok)
        .register("echo", ok)
        .build()
        .unwrap_err();
    assert!(
        twice
            .to_string()
            .contains("task `echo` is registered twice"),
        "{twice}"
    );
    let two_types = support::on_mock(MockBroker::new())
        .handle(|_: Resize, _| async { Ok::<_, queue_core::JobError>(()) })
        .handle(|_: ResizeAgain, _| async { Ok::<_, queue_core::JobError>(()) })
        .build()
        .unwrap_err();
    assert!(
        two_types
            .to_string()
            .contains("task `resize` is registered twice"),
        "{two_types}"
    );
    let unnamed = support::on_mock(MockBroker::new())
        .register(" ", ok)
        .build()
        .unwrap_err();
    assert!(
        unnamed.to_string().contains("task name is empty"),
        "{unnamed}"
    );
    support::on_mock(MockBroker::new())
        .register("echo", ok)
        .handle(|_: Resize, _| async { Ok::<_, queue_core::JobError>(()) })
        .build()
        .expect("one handler per name builds");
}

#[tokio::test]
async fn undecodable_payload_fails_permanently() {
    let (mock, rx) = broker(record("echo", r#"{"not":"a number"}"#, 0, 3), 0);
    let got = run_with(mock, rx, 1, echo).await;
    match &got[0] {
        Outcome::Failed { error } => assert!(
            error.contains("payload for task `echo` could not be decoded"),
            "{error}"
        ),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn retryable_error_uses_the_backoff_of_its_attempt() {
    let (mock, rx) = broker(record("echo", "1", 2, 3), 0);
    let got = run_with(mock, rx, 1, echo).await;
    assert_eq!(
        got[0],
        Outcome::Retry {
            error: "flaky".into(),
            delay: Duration::from_secs(240)
        }
    );
}

#[tokio::test]
async fn retry_after_overrides_the_backoff() {
    let (mock, rx) = broker(record("echo", "2", 0, 3), 0);
    let got = run_with(mock, rx, 1, echo).await;
    assert_eq!(
        got[0],
        Outcome::Retry {
            error: "rate limited".into(),
            delay: Duration::from_secs(5)
        }
    );
}

#[tokio::test]
async fn exhausted_retries_fail() {
    let (mock, rx) = broker(record("echo", "1", 3, 3), 0);
    let got = run_with(mock, rx, 1, echo).await;
    assert_eq!(
        got[0],
        Outcome::Failed {
            error: "flaky".into()
        }
    );
}

#[tokio::test]
async fn permanent_error_fails_with_retries_left() {
    let (mock, rx) = broker(record("echo", "0", 0, 3), 0);
    let got = run_with(mock, rx, 1, echo).await;
    assert_eq!(
        got[0],
        Outcome::Failed {
            error: "zero is not allowed".into()
        }
    );
}

#[tokio::test]
async fn panic_is_a_failed_attempt() {
    let (mock, rx) = broker(record("echo", "3", 0, 3), 0);
    let got = run_with(mock, rx, 1, echo).await;
    match &got[0] {
        Outcome::Retry { error, .. } => {
            assert!(error.contains("handler panicked: boom"), "{error}")
        }
        other => panic!("expected Retry, got {other:?}"),
    }
}

#[tokio::test]
async fn timeout_is_a_failed_attempt() {
    let (mock, rx) = broker(record("slow", "1", 0, 3), 0);
    let got = run_with(mock, rx, 1, |b| {
        b.job_timeout(Duration::from_millis(20))
            .register("slow", |_: u32, _ctx| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            })
    })
    .await;
    match &got[0] {
        Outcome::Retry { error, .. } => assert!(error.contains("timed out after 20ms"), "{error}"),
        other => panic!("expected Retry, got {other:?}"),
    }
}

#[tokio::test]
async fn finish_is_retried_while_the_backend_is_unavailable() {
    let (mock, rx) = broker(record("echo", "7", 0, 3), 2);
    let got = run_with(mock, rx, 3, echo).await;
    assert!(
        got.iter()
            .all(|o| *o == Outcome::Completed { result: None }),
        "{got:?}"
    );
}

#[tokio::test]
async fn fetch_errors_do_not_stop_the_worker() {
    let mut mock = MockBroker::new();
    let mut calls = 0;
    let job = record("echo", "9", 0, 3);
    mock.expect_fetch().returning(move |_, _| {
        calls += 1;
        match calls {
            1 | 2 => Err(Error::Unavailable {
                backend: "mock",
                source: "down".into(),
            }),
            3 => Ok(vec![Lease {
                job: job.clone(),
                token: LeaseToken::new("t"),
                expires_at: from_millis(1),
                claimed_at: tokio::time::Instant::now(),
            }]),
            _ => Ok(vec![]),
        }
    });
    expect_beats_and_maintenance(&mut mock);
    mock.expect_deregister().times(1).returning(|_| Ok(()));
    mock.expect_cancellations().returning(|| {
        Err(Error::Unavailable {
            backend: "mock",
            source: "no pubsub".into(),
        })
    });
    let (tx, rx) = mpsc::unbounded_channel();
    mock.expect_finish_many().returning(move |endings, _| {
        for e in &endings {
            tx.send(e.outcome.clone()).unwrap();
        }
        Ok(completed(&endings))
    });
    let got = run_with(mock, rx, 1, echo).await;
    assert_eq!(got[0], Outcome::Completed { result: None });
}

#[tokio::test]
async fn extra_leases_are_handed_back() {
    let mut mock = MockBroker::new();
    let mut leases = Some(vec![
        Lease {
            job: record("echo", "7", 0, 3),
            token: LeaseToken::new("a"),
            expires_at: from_millis(1),
            claimed_at: tokio::time::Instant::now(),
        },
        Lease {
            job: record("echo", "8", 0, 3),
            token: LeaseToken::new("b"),
            expires_at: from_millis(1),
            claimed_at: tokio::time::Instant::now(),
        },
    ]);
    mock.expect_fetch().returning(move |req, _| {
        assert_eq!(req.max, 1, "concurrency 1 asks for one job");
        Ok(leases.take().unwrap_or_default())
    });
    expect_housekeeping(&mut mock);
    let (tx, rx) = mpsc::unbounded_channel();
    mock.expect_finish_many().returning(move |endings, _| {
        for e in &endings {
            tx.send(e.outcome.clone()).unwrap();
        }
        Ok(completed(&endings))
    });
    // Claiming nothing ahead, so every fetch asks for one job.
    let mut got = run_with(mock, rx, 2, |b| {
        echo(b.concurrency(1).claim_ahead(Duration::ZERO))
    })
    .await;
    got.sort_by_key(|o| o.name());
    assert_eq!(
        got,
        [Outcome::Completed { result: None }, Outcome::Released]
    );
}

/// A broker that leases one slow job, then cannot be reached: fetches and heartbeats fail
/// as unavailable (and back off, so paused time moves on); nothing to reap or sweep.
fn cut_off_after_one_lease() -> MockBroker {
    let down = || Error::Unavailable {
        backend: "mock",
        source: "down".into(),
    };
    let mut mock = MockBroker::new();
    let mut lease = Some(Lease {
        job: record("slow", "1", 0, 3),
        token: LeaseToken::new("t"),
        expires_at: from_millis(30_000),
        claimed_at: tokio::time::Instant::now(),
    });
    mock.expect_fetch()
        .returning(move |_, _| match lease.take() {
            Some(l) => Ok(vec![l]),
            None => Err(down()),
        });
    mock.expect_heartbeat().returning(move |_, _| Err(down()));
    mock.expect_reap().returning(|_| Ok(vec![]));
    mock.expect_sweep().returning(|_| Ok(0));
    mock.expect_cancellations()
        .returning(|| Ok(Box::pin(futures_util::stream::pending())));
    mock
}

/// A worker that cannot renew its leases stops the attempt before the lease can expire on
/// the server (measured from when the last renewal that worked was sent), and reports
/// nothing: another worker may take the job after the expiry.
#[tokio::test(start_paused = true)]
async fn an_unrenewable_lease_is_given_up_before_it_can_expire() {
    let mut mock = cut_off_after_one_lease();
    mock.expect_deregister().returning(|_| Ok(()));
    mock.expect_finish_many()
        .never()
        .returning(|_, _| unreachable!("a fenced attempt reports nothing"));
    let (tx, mut stopped) = mpsc::unbounded_channel();
    struct Dropped(mpsc::UnboundedSender<tokio::time::Instant>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            let _ = self.0.send(tokio::time::Instant::now());
        }
    }
    let lease_time = Duration::from_secs(3);
    let worker = support::on_mock(mock)
        .lease(lease_time, Duration::from_secs(1))
        .fetch_wait(Duration::from_millis(5))
        .register("slow", move |_: u32, _ctx| {
            let guard = Dropped(tx.clone());
            async move {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(guard);
                Ok(())
            }
        })
        .build()
        .unwrap();
    let claimed = tokio::time::Instant::now();
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    let at = stopped.recv().await.expect("the attempt is stopped");
    let held = at - claimed;
    assert!(
        held < lease_time,
        "stopped {held:?} after the claim, when the lease may already have expired"
    );
    stop.cancel();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.lost, 1);
}

/// With the backend gone (every call hangs), stopping still takes at most the grace
/// period plus the stop margin.
#[tokio::test(start_paused = true)]
async fn shutdown_is_bounded_when_the_backend_hangs() {
    let mut mock = cut_off_after_one_lease();
    // Handing the job back and deregistering fail too.
    mock.expect_finish_many().returning(|_, _| {
        Err(Error::Unavailable {
            backend: "mock",
            source: "down".into(),
        })
    });
    mock.expect_deregister().returning(|_| {
        Err(Error::Unavailable {
            backend: "mock",
            source: "down".into(),
        })
    });
    let grace = Duration::from_secs(1);
    let worker = support::on_mock(mock)
        .shutdown_grace(grace)
        .fetch_wait(Duration::from_millis(5))
        .register("slow", |_: u32, _ctx| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        })
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let asked = tokio::time::Instant::now();
    stop.cancel();
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the worker stops")
        .unwrap()
        .unwrap();
    let took = asked.elapsed();
    assert!(
        took <= grace + Duration::from_secs(3),
        "stopping took {took:?}"
    );
    assert_eq!(report.released, 1);
}
