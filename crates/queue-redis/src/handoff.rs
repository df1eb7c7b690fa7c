//! Leases on their way from a claim to its caller. A claim runs on its own task, so the
//! caller going away (a dropped `fetch`, an aborted task) cannot cancel it half-applied;
//! what it took then travels in a [`Handoff`], which hands the leases back (no attempt
//! used) if it is dropped before the caller takes them: unread in a channel whose receiver
//! went away, or held across a later await that was cancelled.

use queue_core::backend::{Broker, Ending, Lease};

/// Leases not yet in their caller's hands: dropped untaken, they are handed back.
pub(crate) struct Handoff<B: Broker + Clone + 'static> {
    leases: Vec<Lease>,
    owner: B,
}

impl<B: Broker + Clone + 'static> Handoff<B> {
    /// `leases`, handed back through `owner` unless taken.
    pub(crate) fn new(owner: B, leases: Vec<Lease>) -> Self {
        Self { leases, owner }
    }

    /// How many leases it carries.
    pub(crate) fn len(&self) -> usize {
        self.leases.len()
    }

    /// The leases it carries.
    pub(crate) fn leases(&self) -> &[Lease] {
        &self.leases
    }

    /// Adds `more`, to be handed back with the rest unless taken.
    pub(crate) fn extend(&mut self, more: Vec<Lease>) {
        self.leases.extend(more);
    }

    /// The leases, now the caller's. Call it where no await follows before they are
    /// returned.
    pub(crate) fn take(mut self) -> Vec<Lease> {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use queue_core::backend::ClaimRequest;
    use queue_core::{JobStore, ListQuery, NewJob, WorkerId};

    use crate::testing::{TestQueue, redis_url};

    /// The race a dropped fetch can lose: the claim task sent its leases, the caller went
    /// away before reading them. Dropped untaken, the handoff hands them back.
    #[tokio::test]
    async fn an_untaken_handoff_hands_its_leases_back() {
        let queue = TestQueue::start(&redis_url()).await;
        for i in 0..3 {
            queue.enqueue(NewJob::new("t", &i).unwrap()).await.unwrap();
        }
        let req = ClaimRequest::new(WorkerId::new("w"), 3, Duration::from_secs(60));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (handoff, _, _) = queue.claim_detached(&req).await.unwrap();
        assert_eq!(handoff.len(), 3);
        tx.send(handoff).map_err(|_| "receiver alive").unwrap();
        drop(rx); // the caller went away with the leases unread
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while queue.stats().await.unwrap().processing > 0 {
            assert!(tokio::time::Instant::now() < deadline, "leases stranded");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let page = queue.list(&ListQuery::new()).await.unwrap();
        assert_eq!(page.jobs.len(), 3);
        assert!(page.jobs.iter().all(|j| j.attempts.is_empty()));
        queue.cleanup().await;
    }
}
