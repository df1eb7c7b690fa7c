#![doc = include_str!("../README.md")]

mod backend;
mod config;
mod error;
mod jobs;
mod leases;
mod migrate;
mod rows;

pub use backend::{POLL, PostgresBackend, PostgresBackendBuilder};
pub use config::{
    DATABASE_URL_VAR, DEFAULT_SCHEMA, MAX_SCHEMA_BYTES, PostgresConfig, SCHEMA_VAR, check_schema,
};
pub use migrate::{LATEST as LATEST_MIGRATION, MIGRATIONS};
