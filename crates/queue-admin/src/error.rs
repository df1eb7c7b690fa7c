//! Every error is a JSON body with a 4xx/5xx status; nothing panics on bad input.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use queue_core::Error;
use serde_json::json;

/// An error response: `{"error": "...", "job_id"?: "..."}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    job_id: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            job_id: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let message = err.chain();
        match err {
            Error::NotFound { .. } | Error::ScheduleNotFound { .. } => {
                Self::new(StatusCode::NOT_FOUND, message)
            }
            Error::AlreadyExists { job_id, .. } => Self {
                status: StatusCode::CONFLICT,
                message,
                job_id: Some(job_id.to_string()),
            },
            Error::InvalidTransition { .. } | Error::NotDeletable { .. } => {
                Self::new(StatusCode::CONFLICT, message)
            }
            Error::InvalidArgument { .. } | Error::Config { .. } => Self::bad_request(message),
            Error::Codec { .. } => Self::new(StatusCode::UNPROCESSABLE_ENTITY, message),
            Error::Unavailable { .. } => Self::new(StatusCode::SERVICE_UNAVAILABLE, message),
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(id) = self.job_id {
            body["job_id"] = json!(id);
        }
        (self.status, Json(body)).into_response()
    }
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route (see /openapi.json)")
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route (see /openapi.json)",
    )
}
