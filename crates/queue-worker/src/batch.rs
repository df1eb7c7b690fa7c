//! Batch handlers: one call for the jobs of a task that run on this worker at once, with an
//! outcome per job (bulk API calls, bulk writes).
//!
//! Each job of a batch is still its own attempt: it holds a slot, its lease is renewed, its
//! timeout and cancel apply to it alone, and its outcome is stored alone, so a failing
//! member retries alone (with its own backoff) and joins whatever batch forms when it runs
//! again. A batch is called when it holds `size` jobs, or `wait` after its first job
//! arrived, whichever comes first.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::FutureExt;
use queue_core::{Completion, JobError};
use tokio::sync::oneshot;

use crate::JobContext;

/// The largest batch a handler may take: a call's work stays bounded whatever the backlog.
pub const MAX_BATCH: usize = 1_000;

/// How a batch handler's batches are made: at most `size` jobs, called at the latest `wait`
/// after the batch's first job arrived.
///
/// Every job of a batch holds one of the worker's slots while it waits and runs, so the
/// worker's concurrency must be at least `size` (the builder refuses it otherwise).
///
/// ```
/// use std::time::Duration;
/// use queue_worker::Batch;
///
/// let batch = Batch::of(100).wait(Duration::from_millis(20));
/// assert_eq!(batch.size(), 100);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    size: usize,
    wait: Duration,
}

impl Batch {
    /// How long a batch waits for more jobs after its first, by default.
    pub const DEFAULT_WAIT: Duration = Duration::from_millis(10);

    /// Batches of at most `size` jobs (1 to [`MAX_BATCH`]; checked when the worker is built).
    pub fn of(size: usize) -> Self {
        Self {
            size,
            wait: Self::DEFAULT_WAIT,
        }
    }

    /// Calls the handler at the latest this long after a batch's first job arrived (default
    /// [`Batch::DEFAULT_WAIT`]); zero calls it with what is there at once.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The most jobs a call takes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// What is wrong with this batch for `task` on a worker running `concurrency` jobs at
    /// once, if anything.
    pub(crate) fn problem(&self, task: &str, concurrency: usize) -> Option<String> {
        if self.size == 0 || self.size > MAX_BATCH {
            return Some(format!(
                "task `{task}`: a batch takes 1 to {MAX_BATCH} jobs, not {}",
                self.size
            ));
        }
        (self.size > concurrency).then(|| {
            format!(
                "task `{task}`: batches of {} need a concurrency of at least {} (it is {concurrency}): \
                 each job of a batch holds a slot while it waits",
                self.size, self.size
            )
        })
    }
}

/// One job of a batch: its decoded input and its context (progress, cancel, the record).
#[derive(Debug)]
pub struct BatchJob<P> {
    /// The job's payload, decoded.
    pub input: P,
    /// The job's own context.
    pub ctx: JobContext,
}

type Answer = oneshot::Sender<Result<Completion, JobError>>;

struct Forming<P> {
    jobs: Vec<BatchJob<P>>,
    answers: Vec<Answer>,
    /// Counts the batches sent, so a timer of an earlier batch sends nothing.
    sent: u64,
}

/// Collects a task's jobs into batches and calls the handler once per batch.
pub(crate) struct Batcher<P, F> {
    batch: Batch,
    handler: Arc<F>,
    forming: Mutex<Forming<P>>,
}

impl<P, F, Fut, R> Batcher<P, F>
where
    P: Send + 'static,
    F: Fn(Vec<BatchJob<P>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Result<R, JobError>>> + Send + 'static,
    R: Send + 'static,
{
    pub(crate) fn new(batch: Batch, handler: F) -> Arc<Self> {
        Arc::new(Self {
            batch,
            handler: Arc::new(handler),
            forming: Mutex::new(Forming {
                jobs: Vec::new(),
                answers: Vec::new(),
                sent: 0,
            }),
        })
    }

    /// Adds a job to the batch forming and answers its outcome once its batch was called.
    pub(crate) async fn run(
        self: &Arc<Self>,
        job: BatchJob<P>,
        done: fn(R) -> Result<Completion, JobError>,
    ) -> Result<Completion, JobError> {
        let (answer, answered) = oneshot::channel();
        let first_of = {
            let mut forming = self.forming.lock().expect("not poisoned");
            forming.jobs.push(job);
            forming.answers.push(answer);
            if forming.jobs.len() >= self.batch.size || self.batch.wait.is_zero() {
                self.send(&mut forming, done);
                None
            } else {
                (forming.jobs.len() == 1).then_some(forming.sent)
            }
        };
        if let Some(sent) = first_of {
            let this = Arc::clone(self);
            let wait = self.batch.wait;
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let mut forming = this.forming.lock().expect("not poisoned");
                if forming.sent == sent && !forming.jobs.is_empty() {
                    this.send(&mut forming, done);
                }
            });
        }
        answered.await.unwrap_or_else(|_| {
            Err(JobError::retry(
                "the batch handler ended without an outcome for this job",
            ))
        })
    }

    /// Calls the handler with the batch formed (on a task of its own: a member's timeout or
    /// cancel drops that member's wait, never the call the others wait on).
    fn send(&self, forming: &mut Forming<P>, done: fn(R) -> Result<Completion, JobError>) {
        let jobs = std::mem::take(&mut forming.jobs);
        let answers = std::mem::take(&mut forming.answers);
        forming.sent += 1;
        let handler = Arc::clone(&self.handler);
        tokio::spawn(async move {
            let count = jobs.len();
            let called = AssertUnwindSafe(async move { handler(jobs).await })
                .catch_unwind()
                .await;
            for (answer, outcome) in answers.into_iter().zip(outcomes(called, count)) {
                // A member that timed out or was cancelled no longer listens.
                let _ = answer.send(outcome.and_then(done));
            }
        });
    }
}

/// One outcome per job: the handler's, or the same error for each when it panicked or did
/// not answer one outcome per job.
fn outcomes<R>(
    called: std::thread::Result<Vec<Result<R, JobError>>>,
    count: usize,
) -> Vec<Result<R, JobError>> {
    let error = match called {
        Ok(outcomes) if outcomes.len() == count => return outcomes,
        Ok(outcomes) => format!(
            "the batch handler returned {} outcomes for {count} jobs: it must return one per job, in order",
            outcomes.len()
        ),
        Err(panic) => format!(
            "batch handler panicked: {}",
            crate::handler::panic_message(&*panic)
        ),
    };
    (0..count)
        .map(|_| Err(JobError::retry(error.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_against_the_limit_and_the_concurrency() {
        assert!(Batch::of(0).problem("t", 10).is_some());
        assert_eq!(Batch::of(MAX_BATCH).problem("t", MAX_BATCH), None);
        let past = Batch::of(MAX_BATCH + 1)
            .problem("t", MAX_BATCH + 1)
            .unwrap();
        assert!(past.contains("1 to 1000 jobs, not 1001"), "{past}");
        let slots = Batch::of(20).problem("bulk", 10).unwrap();
        assert!(slots.contains("concurrency of at least 20"), "{slots}");
    }

    #[test]
    fn a_wrong_number_of_outcomes_fails_each_member_for_a_retry() {
        let wrong = outcomes::<()>(Ok(vec![Ok(())]), 3);
        assert_eq!(wrong.len(), 3);
        for outcome in wrong {
            let error = outcome.unwrap_err();
            assert!(
                error.to_string().contains("returned 1 outcomes for 3 jobs"),
                "{error}"
            );
        }
        let right = outcomes::<u8>(Ok(vec![Ok(1), Ok(2)]), 2);
        assert_eq!(
            right.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            [1, 2]
        );
    }
}
