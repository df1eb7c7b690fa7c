#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod broker;
mod chains;
mod claims;
mod config;
mod control;
mod error;
mod events;
mod floors;
mod flows;
mod groups;
mod jobs;
mod keys;
mod lanes;
mod leases;
mod listing;
mod migrate;
mod retention;
mod rows;
mod schedules;
mod sequences;
mod series;
mod store;
#[cfg(feature = "test-utils")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-utils")))]
pub mod testing;
mod webhooks;
mod workers;

pub use backend::{POLL, PostgresBackend, PostgresBackendBuilder};
pub use config::{
    DATABASE_URL_VAR, DEFAULT_SCHEMA, MAX_SCHEMA_BYTES, PostgresConfig, SCHEMA_VAR, check_schema,
};
pub use floors::SWEEP;
pub use migrate::{LATEST as LATEST_MIGRATION, MIGRATIONS};
/// The sqlx this backend is built on: its `Transaction<Postgres>` and `PgConnection` are what
/// `enqueue_in` and `finish_in` take.
pub use sqlx;
