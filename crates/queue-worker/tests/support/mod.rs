//! What the tests of the worker's decisions share: a record, and the calls every worker
//! makes besides fetching and finishing, answered by a mocked `Broker`.

#![allow(dead_code)]

use queue_core::backend::{Ending, FinishedMany, MockBroker, from_millis};
use queue_core::{JobId, JobRecord, JobStatus, Payload, Priority};

pub(crate) fn record(task: &str, payload: &str, retry_count: u32, max_retries: u32) -> JobRecord {
    JobRecord {
        job_id: JobId::new(),
        task: task.into(),
        payload: Payload::from_trusted(payload),
        unique_key: None,
        status: JobStatus::Processing,
        priority: Priority::Normal,
        progress: 0,
        current_step: None,
        error_message: None,
        retry_count,
        max_retries,
        timeout_ms: None,
        created_at: from_millis(0),
        started_at: Some(from_millis(0)),
        completed_at: None,
        run_at: None,
        metadata: Default::default(),
        result: None,
        worker_id: Some("w".into()),
        cancel_requested: false,
        group: None,
        cost: None,
        replaced: 0,
        sequence: None,
        after: None,
        parent: None,
        child_policy: None,
        children: None,
        attempts: Vec::new(),
    }
}

/// Every ending of a group accepted as completed; nothing claimed.
pub(crate) fn completed(endings: &[Ending]) -> FinishedMany {
    FinishedMany {
        statuses: endings.iter().map(|_| Ok(JobStatus::Completed)).collect(),
        next: Vec::new(),
    }
}

/// Heartbeats succeed; nothing to reap or sweep.
pub(crate) fn expect_beats_and_maintenance(mock: &mut MockBroker) {
    mock.expect_heartbeat()
        .returning(|_, _| Ok(Default::default()));
    mock.expect_reap().returning(|_| Ok(vec![]));
    mock.expect_sweep().returning(|_| Ok(0));
    mock.expect_read_schedules()
        .returning(|_| Ok(Default::default()));
    mock.expect_claim_deliveries()
        .returning(|_, _| Ok(Vec::new()));
}

/// Everything a worker does besides fetching and finishing: beats, maintenance,
/// deregistration, and a cancel stream that stays silent.
pub(crate) fn expect_housekeeping(mock: &mut MockBroker) {
    expect_beats_and_maintenance(mock);
    mock.expect_deregister().returning(|_| Ok(()));
    mock.expect_cancellations()
        .returning(|| Ok(Box::pin(futures_util::stream::pending())));
}

/// A worker on a mocked broker; its handlers' store is a mock that expects nothing.
pub(crate) fn on_mock(broker: MockBroker) -> queue_worker::WorkerBuilder {
    let store = queue_core::MockJobStore::new();
    queue_worker::Worker::with_parts(std::sync::Arc::new(broker), std::sync::Arc::new(store))
}
