#![doc = include_str!("../README.md")]

mod backend;
mod tables;

pub use backend::MemoryBackend;
