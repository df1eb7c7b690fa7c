//! Leases on their way from a claim to its caller. A claim runs on its own task, so the
//! caller going away (a dropped `fetch`, an aborted task) cannot cancel it half-applied;
//! what it took then travels in a [`Handoff`], which hands the leases back (no attempt
//! used) if it is dropped before the caller takes them: unread in a channel whose receiver
//! went away, or held across a later await that was cancelled.

use std::future::Future;

use crate::broker::{Broker, ClaimRequest, Ending, FinishedMany, Lease};
use crate::{Error, Result};

/// Runs `work` (a claim) on its own task
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

/// Endings with the claim that rides on them (`next`), run by `finish` in the caller's
/// task, at no extra cost on the way. If the caller gives up before it has the answer (a
/// reporter's deadline, an aborted task), the claim is sent again on its own task: a claim
/// sent again answers what the first one took (or, if that one never arrived, claims
/// anew), and what it answers is handed back. So the jobs a lost finish claimed are queued
/// again at once instead of waiting out their leases. A call that answers, even with an
/// error, leaves the claim to its caller, which may send it again: handing its leases back
/// then could take jobs from under the caller's retry (the chaos drills' double runs).
pub async fn finish_guarded<B, Fut>(
    owner: &B,
    next: Option<&ClaimRequest>,
    finish: Fut,
) -> Result<FinishedMany>
where
    B: Broker + Clone + 'static,
    Fut: Future<Output = Result<FinishedMany>>,
{
    let guard = ClaimGuard { owner, req: next };
    let done = finish.await;
    guard.disarm();
    done
}

/// A finish's claim whose answer has not reached its caller (see [`finish_guarded`]).
struct ClaimGuard<'a, B: Broker + Clone + 'static> {
    owner: &'a B,
    req: Option<&'a ClaimRequest>,
}

impl<B: Broker + Clone + 'static> ClaimGuard<'_, B> {
    fn disarm(mut self) {
        self.req = None;
    }
}

impl<B: Broker + Clone + 'static> Drop for ClaimGuard<'_, B> {
    fn drop(&mut self) {
        // Nothing is copied unless it fires.
        let Some(req) = self.req.take().cloned() else {
            return;
        };
        let owner = self.owner.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no runtime to recover a lost finish's claim: its leases will expire");
            return;
        };
        runtime.spawn(async move {
            match owner.fetch(&req, std::time::Duration::ZERO).await {
                // Dropped here, the handoff hands them back.
                Ok(leases) => drop(Handoff::new(owner, leases)),
                Err(e) => tracing::warn!(
                    error = %e.chain(),
                    "could not recover a lost finish's claim: its leases will expire"
                ),
            }
        });
    }
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
