//! Bearer-token check (the header, or `?token=` for EventSource and the dashboard link).

use axum::{
    extract::{Request, State as Extract},
    middleware::Next,
    response::Response,
};

use crate::{State, error::ApiError};

pub(crate) async fn require(
    Extract(state): Extract<State>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(expected) = &state.token else {
        return Ok(next.run(request).await);
    };
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("token=")));
    match header.or(query) {
        Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => {
            Ok(next.run(request).await)
        }
        Some(_) => Err(ApiError::unauthorized("the bearer token is wrong")),
        None => Err(ApiError::unauthorized(
            "a bearer token is required (Authorization: Bearer <DCS_ADMIN_TOKEN>)",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
