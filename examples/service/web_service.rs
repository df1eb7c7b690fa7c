//! An axum web service that enqueues work and reports its status; the work itself runs in
//! `worker` processes (see `examples/service/worker.rs`).
//!
//! ```sh
//! export DCS_REDIS_URL=redis://127.0.0.1:6379
//! cargo run -p queue-examples --example worker &
//! cargo run -p queue-examples --example web_service -- 127.0.0.1:3000 &
//! curl -s -XPOST localhost:3000/books -H 'content-type: application/json' \
//!      -d '{"book_id": "b-1", "title": "Dune"}'             # 202 {"job_id": ...}
//! curl -s localhost:3000/books/<job_id>                      # status, progress, step
//! ```
//!
//! A second POST for a book whose job is still active answers 409 with that job's id.
//! SIGTERM or SIGINT stops it gracefully.

#[path = "book.rs"]
mod book;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use book::ProcessBook;
use dcs_queue::{Error, JobId, JobStore, NewJob, redis::RedisBackend, worker::shutdown_signal};
use serde_json::json;

type Queue = Arc<RedisBackend>;

async fn submit(State(queue): State<Queue>, Json(book): Json<ProcessBook>) -> Response {
    let job = match NewJob::typed(&book) {
        Ok(job) => job,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    match queue.enqueue(job).await {
        Ok(record) => (
            StatusCode::ACCEPTED,
            Json(json!({ "job_id": record.job_id })),
        )
            .into_response(),
        Err(Error::AlreadyExists { job_id, .. }) => (
            StatusCode::CONFLICT,
            Json(json!({ "error": "this book already has an active job", "job_id": job_id })),
        )
            .into_response(),
        Err(e @ Error::InvalidArgument { .. }) => error(StatusCode::BAD_REQUEST, &e),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

async fn status(State(queue): State<Queue>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<JobId>() else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "not a job id" })),
        )
            .into_response();
    };
    match queue.get(id).await {
        Ok(job) => Json(json!({
            "job_id": job.job_id,
            "status": job.status,
            "progress": job.progress,
            "step": job.current_step,
            "error": job.error_message,
            "attempt": job.retry_count,
        }))
        .into_response(),
        Err(e @ Error::NotFound { .. }) => error(StatusCode::NOT_FOUND, &e),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

/// Errors name what was wrong; a backend error never carries the Redis password.
fn error(code: StatusCode, e: &Error) -> Response {
    (code, Json(json!({ "error": e.to_string() }))).into_response()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let queue: Queue = Arc::new(RedisBackend::from_env().await?);
    let app = Router::new()
        .route("/books", post(submit))
        .route("/books/{id}", get(status))
        .with_state(queue);
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}
