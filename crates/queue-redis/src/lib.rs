#![doc = include_str!("../README.md")]

mod broker;
mod builder;
mod codec;
mod conn;
mod error;
mod keys;
mod pubsub;
mod scripts;
mod store;
#[cfg(feature = "testcontainers")]
pub mod testing;
mod wire;

pub use builder::{RedisBackend, RedisBackendBuilder};
