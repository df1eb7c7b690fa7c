//! Leases on their way from a claim to its caller. A claim runs on its own task, so the
//! caller going away (a dropped `fetch`, an aborted task) cannot cancel it half-applied;
//! what it took then travels in a [`Handoff`], which hands the leases back (no attempt
//! used) if it is dropped before the caller takes them: unread in a channel whose receiver
//! went away, or held across a later await that was cancelled.

use std::future::Future;

use crate::broker::{Broker, Ending, FinishedMany, Lease};
use crate::{Error, Result};

/// Runs `work` (a claim, or endings with the claim that rides on them) on its own task
/// and waits for its answer: the caller going away cannot cancel it half-applied. The
/// leases it takes travel in a [`Handoff`] inside `T`, so an answer nobody reads hands
/// them back. `backend` names the backend in the error when the task itself stopped.
pub async fn detached<T: Send + 'static>(
    backend: &'static str,
    work: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        // Unsent or unread (the caller went away), a handoff in it hands its leases back.
        let _ = tx.send(work.await);
    });
    rx.await
        .map_err(|_| Error::backend(backend, "its task stopped before it answered"))?
}

/// Endings, with the claim that rides on them, run by `finish` on its own task
/// ([`detached`]): a caller that gives up (a reporter's deadline) can neither stop it
/// between steps nor strand the jobs its claim took (handed back unless read).
pub async fn finish_detached<B, F, Fut>(
    owner: &B,
    backend: &'static str,
    finish: F,
) -> Result<FinishedMany>
where
    B: Broker + Clone + 'static,
    F: FnOnce(B) -> Fut + Send + 'static,
    Fut: Future<Output = Result<FinishedMany>> + Send + 'static,
{
    let this = owner.clone();
    let (statuses, next) = detached(backend, async move {
        let done = finish(this.clone()).await?;
        Ok((done.statuses, Handoff::new(this, done.next)))
    })
    .await?;
    Ok(FinishedMany {
        statuses,
        next: next.take(),
    })
}

/// Leases not yet in their caller's hands: dropped untaken, they are handed back.
///
/// A claim task sends its leases in one; the caller takes them where no await follows
/// before it returns them:
///
/// ```
/// # use queue_core::backend::{Broker, Handoff, Lease};
/// # fn claimed<B: Broker + Clone>(backend: B, leases: Vec<Lease>) -> Vec<Lease> {
/// let on_the_way = Handoff::new(backend, leases); // dropped now, they would go back
/// on_the_way.take() // the caller's: nothing is handed back
/// # }
/// ```
#[derive(Debug)]
pub struct Handoff<B: Broker + Clone + 'static> {
    leases: Vec<Lease>,
    owner: B,
}

impl<B: Broker + Clone + 'static> Handoff<B> {
    /// `leases`, handed back through `owner` unless taken.
    pub fn new(owner: B, leases: Vec<Lease>) -> Self {
        Self { leases, owner }
    }

    /// How many leases it carries.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether it carries none.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Adds `more`, to be handed back with the rest unless taken.
    pub fn extend(&mut self, more: Vec<Lease>) {
        self.leases.extend(more);
    }

    /// The leases, now the caller's. Call it where no await follows before they are
    /// returned.
    pub fn take(mut self) -> Vec<Lease> {
        std::mem::take(&mut self.leases)
    }
}

impl<B: Broker + Clone + 'static> Drop for Handoff<B> {
    fn drop(&mut self) {
        if self.leases.is_empty() {
            return;
        }
        let endings: Vec<Ending> = self.leases.iter().map(Ending::handed_back).collect();
        let owner = self.owner.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = owner.finish_many(endings, None).await {
                        tracing::warn!(error = %e.chain(), "could not hand back an unread claim");
                    }
                });
            }
            // No runtime left (the process is stopping): the leases expire as a crashed
            // worker's would.
            Err(_) => tracing::warn!(
                leases = endings.len(),
                "no runtime to hand back an unread claim: its leases will expire"
            ),
        }
    }
}
