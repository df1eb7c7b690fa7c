//! `queue-admin`: the admin API, dashboard and metrics of a queue on Redis or PostgreSQL.
//!
//! ```text
//! DCS_REDIS_URL=redis://127.0.0.1:6379 DCS_ADMIN_TOKEN=s3cret cargo run -p queue-admin -- --bind 127.0.0.1:8080
//! DCS_DATABASE_URL=postgres://app@db/app DCS_ADMIN_TOKEN=s3cret cargo run -p queue-admin
//! ```
//!
//! With `DCS_DATABASE_URL` set the queue is on PostgreSQL (schema `DCS_DATABASE_SCHEMA`,
//! migrated beforehand: `queuectl migrate`), else on Redis.
//!
//! Every `DCS_*` setting applies; `DCS_ADMIN_TOKEN` protects every route but `/health` and
//! `/metrics`, and is required to listen on a non-loopback address;
//! `DCS_ADMIN_ALLOWED_HOSTS` (comma-separated `host` or `host:port`) names the hosts
//! requests may address besides this server's address and the loopback names.

use std::{io::IsTerminal, net::SocketAddr, process::ExitCode, sync::Arc};

use queue_admin::{Admin, check_bind};
use queue_core::{QueueConfig, SharedBackend};
use queue_postgres::{DATABASE_URL_VAR, PostgresBackend, PostgresConfig};
use queue_redis::RedisBackend;

fn bind_arg() -> Result<SocketAddr, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let raw = match args.as_slice() {
        [] => std::env::var("DCS_ADMIN_BIND").unwrap_or_else(|_| "127.0.0.1:8080".into()),
        [flag, value] if flag == "--bind" => value.clone(),
        _ => return Err("usage: queue-admin [--bind ADDRESS:PORT]".into()),
    };
    raw.parse()
        .map_err(|_| format!("--bind {raw:?}: expected ADDRESS:PORT"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let addr = match bind_arg() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let token = std::env::var("DCS_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    if let Err(e) = check_bind(&addr, token.as_deref()) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let cfg = match QueueConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}", e.chain());
            return ExitCode::from(2);
        }
    };
    let backend = match connect(&cfg).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {}", e.chain());
            return ExitCode::from(1);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(%addr, backend = %backend, auth = token.is_some(), "admin API listening");
    let hosts: Vec<String> = std::env::var("DCS_ADMIN_ALLOWED_HOSTS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect();
    let admin = Admin::new(backend, token).allowed_hosts(hosts);
    match admin.serve(listener, queue_worker::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// PostgreSQL when `DCS_DATABASE_URL` is set (its schema `DCS_DATABASE_SCHEMA`, which
/// must be migrated), else Redis on `cfg`'s URL with the other `DCS_REDIS_*` settings (key
/// prefix, timeout) of the environment.
async fn connect(cfg: &QueueConfig) -> queue_core::Result<SharedBackend> {
    if std::env::var_os(DATABASE_URL_VAR).is_some() {
        let backend = PostgresBackend::builder(PostgresConfig::from_env()?)
            .queue(cfg.clone())
            .connect()
            .await?;
        return Ok(Arc::new(backend));
    }
    // A partitioned queue is opened as one (README "Partitions").
    RedisBackend::builder(cfg)
        .redis(queue_redis::RedisConfig::from_env()?.with_url(cfg.redis_url.clone()))
        .open()
        .await
}
