#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod broker;
mod builder;
mod codec;
mod config;
mod conn;
mod durability;
mod error;
mod events;
mod flows;
#[cfg(test)]
mod handoff_tests;
mod jobs;
mod keys;
mod partitions;
mod pubsub;
mod records;
mod scripts;
mod store;
#[cfg(feature = "test-utils")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-utils")))]
pub mod testing;
mod webhooks;
mod wire;

pub use builder::{RedisBackend, RedisBackendBuilder};
pub use config::RedisConfig;
pub use durability::Durability;
pub use error::ServerError;
pub use partitions::{ClaimStep, LAYOUT_REFRESH, Layout, PartitionedBackend};
