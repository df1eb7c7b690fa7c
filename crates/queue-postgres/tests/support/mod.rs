//! A fresh schema per test on the Postgres the machine runs (`DCS_DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/postgres`), dropped when the test ends, even by a
//! panic.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use queue_core::{ManualClock, QueueConfig};
use queue_postgres::{PostgresBackend, PostgresConfig};

pub fn database_url() -> String {
    std::env::var("DCS_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A schema of this test's own.
pub struct TestSchema {
    pub name: String,
}

impl TestSchema {
    pub fn new() -> Self {
        Self {
            name: format!("t_{}", uuid::Uuid::now_v7().simple()),
        }
    }

    pub fn config(&self) -> PostgresConfig {
        PostgresConfig::new(database_url())
            .unwrap()
            .schema(self.name.clone())
            .unwrap()
    }

    /// A migrated backend on this schema, on the database's clock.
    pub async fn backend(&self) -> PostgresBackend {
        PostgresBackend::builder(self.config())
            .queue(queue())
            .migrate(true)
            .connect()
            .await
            .expect("connect")
    }

    /// A migrated backend on this schema whose time is `clock`.
    pub async fn backend_at(&self, clock: &ManualClock) -> PostgresBackend {
        PostgresBackend::builder(self.config())
            .queue(queue())
            .migrate(true)
            .clock(Arc::new(clock.clone()))
            .connect()
            .await
            .expect("connect")
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        queue_postgres::testing::drop_schema(&database_url(), &self.name);
    }
}

/// A harness for the shared suites: a migrated backend on a schema of its own, built with
/// `suite_config(queue)` and `clock`; the schema is dropped after the case.
pub async fn harness(queue: &str, clock: ManualClock) -> queue_testkit::Harness {
    let schema = TestSchema::new();
    let backend = PostgresBackend::builder(schema.config())
        .queue(queue_testkit::suite_config(queue))
        .migrate(true)
        .clock(Arc::new(clock.clone()))
        .connect()
        .await
        .expect("connect");
    let probe = backend.clone();
    queue_testkit::Harness::new(Arc::new(backend), clock)
        .with_blocked(move || probe.blocked_fetches() + probe.subscribers())
        .with_cleanup(async move { drop(schema) })
}

pub fn queue() -> QueueConfig {
    QueueConfig::builder()
        .queue_name("pg_test")
        .build()
        .expect("valid")
}
