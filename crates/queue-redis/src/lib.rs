#![doc = include_str!("../README.md")]

mod backend;
mod codec;
mod conn;
mod error;
mod keys;
mod scripts;
#[cfg(feature = "testcontainers")]
pub mod testing;

pub use backend::{RedisBackend, RedisBackendBuilder};
