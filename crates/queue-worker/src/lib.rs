#![doc = include_str!("../README.md")]

mod attempt;
mod builder;
mod context;
mod registry;
mod reporter;
mod running;
mod shutdown;
mod upkeep;
mod worker;

pub use builder::WorkerBuilder;
pub use context::{JobContext, StageReporter};
pub use shutdown::shutdown_signal;
pub use tokio_util::sync::CancellationToken;
pub use worker::{Worker, WorkerReport};
