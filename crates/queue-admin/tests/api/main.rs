//! The admin API over real HTTP, on the memory backend, on Redis and on PostgreSQL.

#[path = "../support/mod.rs"]
mod support;

mod bulk;
mod control;
mod events;
mod flows;
mod jobs;
mod schedules;
mod security;
mod series;
mod webhooks;

use control::control_and_groups;
use security::documents;

use std::time::Duration;

use queue_admin::{ROUTES, check_bind};
use queue_core::{QueueConfig, SharedBackend};
use queue_memory::MemoryBackend;
use queue_redis::RedisBackend;
use serde_json::json;
use support::{Server, TOKEN, shared};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) async fn redis() -> RedisBackend {
    let cfg = QueueConfig::builder()
        .redis_url(&queue_redis::testing::redis_url())
        .unwrap()
        .queue_name(format!("admin-{}", uuid::Uuid::new_v4().simple()))
        .build()
        .unwrap();
    RedisBackend::builder(&cfg)
        .key_prefix("dcs-test")
        .build()
        .await
        .unwrap()
}

/// A backend on a schema of its own (dropped with the returned guard).
pub(crate) async fn postgres() -> (
    queue_postgres::PostgresBackend,
    queue_postgres::testing::TestSchema,
) {
    let schema = queue_postgres::testing::TestSchema::new();
    let cfg = QueueConfig::builder()
        .queue_name(format!("admin-{}", uuid::Uuid::new_v4().simple()))
        .build()
        .unwrap();
    (schema.backend(cfg).await.unwrap(), schema)
}
