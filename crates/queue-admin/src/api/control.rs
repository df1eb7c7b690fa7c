//! Routes that pause and resume the queue and set its rate limit.

use super::*;

/// `POST /queue/pause`: no job starts until resumed; running jobs finish.
pub(crate) async fn pause(Extract(state): Extract<State>) -> Result<Json<Value>, ApiError> {
    state.backend.pause().await?;
    Ok(Json(json!({ "paused": true })))
}

/// `POST /queue/resume`: waiting workers start jobs again at once.
pub(crate) async fn resume(Extract(state): Extract<State>) -> Result<Json<Value>, ApiError> {
    state.backend.resume().await?;
    Ok(Json(json!({ "paused": false })))
}

/// `POST /queue/rate_limit` with `{"max": N, "per_seconds": S}` sets the limit;
/// `{"max": null}` (or `{}`) removes it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RateLimitBody {
    max: Option<u32>,
    per_seconds: Option<f64>,
}

pub(crate) async fn rate_limit(
    Extract(state): Extract<State>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let b: RateLimitBody = json_body(raw, "rate limit request")?;
    let limit = rate_limit_of(&b)?;
    state.backend.set_rate_limit(limit).await?;
    Ok(Json(json!({ "rate_limit": limit })))
}

/// The limit a rate limit request asks for (`None`: remove it).
pub(super) fn rate_limit_of(b: &RateLimitBody) -> Result<Option<queue_core::RateLimit>, ApiError> {
    let Some(max) = b.max else {
        return Ok(None);
    };
    let per = b.per_seconds.unwrap_or(60.0);
    if !(per.is_finite() && per > 0.0) {
        return Err(ApiError::bad_request(format!(
            "per_seconds: {per} is not a positive number"
        )));
    }
    Ok(Some(queue_core::RateLimit::new(
        max,
        std::time::Duration::from_secs_f64(per.min(1e9)),
    )?))
}
