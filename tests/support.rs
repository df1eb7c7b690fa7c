use std::{sync::Arc, time::Duration};

use queue_core::{JobId, JobRecord, JobStatus, JobStore, QueueConfig};
use queue_memory::MemoryBackend;
use queue_worker::{CancellationToken, WorkerBuilder, WorkerReport};

pub(crate) fn backend() -> Arc<MemoryBackend> {
    Arc::new(MemoryBackend::with_config(QueueConfig::default()))
}

/// Polls until the job satisfies `done` (paused time makes this instant).
pub(crate) async fn wait_for(
    store: &MemoryBackend,
    id: JobId,
    done: impl Fn(&JobRecord) -> bool,
) -> JobRecord {
    for _ in 0..100_000 {
        let record = store.get(id).await.unwrap();
        if done(&record) {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "job {id} never reached the expected state: {:?}",
        store.get(id).await.unwrap()
    );
}

pub(crate) async fn wait_status(store: &MemoryBackend, id: JobId, status: JobStatus) -> JobRecord {
    wait_for(store, id, |r| r.status == status).await
}

/// A running worker and the token that stops it.
pub(crate) struct Running {
    pub(crate) stop: CancellationToken,
    pub(crate) handle: tokio::task::JoinHandle<queue_core::Result<WorkerReport>>,
}

impl Running {
    pub(crate) async fn shutdown(self) -> WorkerReport {
        self.stop.cancel();
        self.handle.await.unwrap().unwrap()
    }
}

pub(crate) fn start(builder: WorkerBuilder) -> Running {
    // The tests' webhook receivers listen on loopback, which the default egress refuses.
    let local = queue_worker::WebhookEgress::from_list("127.0.0.1, ::1").unwrap();
    start_waiting(builder.webhook_egress(local), Duration::from_millis(200))
}

/// [`start`] with an idle fetch waiting up to `fetch_wait`, and the webhook egress the
/// builder says (by default: public addresses only).
pub(crate) fn start_waiting(builder: WorkerBuilder, fetch_wait: Duration) -> Running {
    let stop = CancellationToken::new();
    let worker = builder.fetch_wait(fetch_wait).build().unwrap();
    let handle = tokio::spawn(worker.run(stop.clone()));
    Running { stop, handle }
}
