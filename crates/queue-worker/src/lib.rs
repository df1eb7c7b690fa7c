#![doc = include_str!("../README.md")]

mod builder;
mod context;
mod registry;
mod running;
mod shutdown;
mod worker;

pub use builder::WorkerBuilder;
pub use context::{JobContext, StageReporter};
pub use shutdown::shutdown_signal;
pub use tokio_util::sync::CancellationToken;
pub use worker::{Worker, WorkerReport};
