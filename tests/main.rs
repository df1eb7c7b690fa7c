//! End-to-end flows: the worker runtime on the memory backend, under tokio's paused clock
//! where time matters (backoffs and leases take no real time).

mod flows;
mod layout;
mod reporting;
mod retries;
mod shutdown;
mod support;
mod webhooks;
mod worker_faults;
mod worker_lifecycle;
