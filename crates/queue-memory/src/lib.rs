#![doc = include_str!("../README.md")]

mod broker;
mod builder;
mod engine;
mod events;
mod store;

pub use builder::{MemoryBackend, MemoryBackendBuilder};
