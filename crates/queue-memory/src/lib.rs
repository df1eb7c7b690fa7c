#![doc = include_str!("../README.md")]

mod broker;
mod builder;
mod store;
mod tables;

pub use builder::{MemoryBackend, MemoryBackendBuilder};
