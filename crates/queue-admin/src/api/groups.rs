//! Routes of groups: their listing, one group, and its settings.

use super::*;

/// `GET /groups?limit=N`: the groups with unfinished jobs, the `limit` (default 50)
/// busiest in full and the rest summed (`JobStore::groups`).
pub(crate) async fn groups(
    Extract(state): Extract<State>,
    q: Params,
) -> Result<Json<Value>, ApiError> {
    let mut limit = 50;
    for (key, value) in &params(q)? {
        match key.as_str() {
            "limit" => {
                limit = value.parse().map_err(|_| {
                    ApiError::bad_request(format!("limit `{value}` is not a number"))
                })?
            }
            "token" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}`"
                )));
            }
        }
    }
    Ok(Json(json!(state.backend.groups(limit).await?)))
}

/// `GET /groups/{group}`: the group's ready and running counts and settings.
pub(crate) async fn group(
    Extract(state): Extract<State>,
    Path(group): Path<String>,
) -> Result<Json<queue_core::GroupStats>, ApiError> {
    Ok(Json(state.backend.group(&group).await?))
}

/// `POST /groups/{group}/pause`: none of the group's jobs starts until it is resumed.
pub(crate) async fn pause_group(
    Extract(state): Extract<State>,
    Path(group): Path<String>,
) -> Result<Json<queue_core::GroupStats>, ApiError> {
    state.backend.pause_group(&group).await?;
    Ok(Json(state.backend.group(&group).await?))
}

/// `POST /groups/{group}/resume`.
pub(crate) async fn resume_group(
    Extract(state): Extract<State>,
    Path(group): Path<String>,
) -> Result<Json<queue_core::GroupStats>, ApiError> {
    state.backend.resume_group(&group).await?;
    Ok(Json(state.backend.group(&group).await?))
}

/// `POST /groups/{group}/weight` with `{"weight": N}` sets the group's weight in the fair
/// share (1 to 1000); `{"weight": null}` (or `{}`) removes it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    weight: Option<u32>,
}

pub(crate) async fn group_weight(
    Extract(state): Extract<State>,
    Path(group): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<queue_core::GroupStats>, ApiError> {
    let b: WeightBody = json_body(raw, "weight request")?;
    state.backend.set_group_weight(&group, b.weight).await?;
    Ok(Json(state.backend.group(&group).await?))
}

/// `POST /groups/{group}/concurrency` with `{"max": N}` sets the group's concurrency
/// limit; `{"max": null}` (or `{}`) removes it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConcurrencyBody {
    max: Option<u32>,
}

pub(crate) async fn group_concurrency(
    Extract(state): Extract<State>,
    Path(group): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<queue_core::GroupStats>, ApiError> {
    let b: ConcurrencyBody = json_body(raw, "concurrency request")?;
    state.backend.set_group_concurrency(&group, b.max).await?;
    Ok(Json(state.backend.group(&group).await?))
}

/// `POST /groups/{group}/rate_limit` with `{"max": N, "per_seconds": S}` sets the group's
/// rate limit; `{"max": null}` (or `{}`) removes it.
pub(crate) async fn group_rate_limit(
    Extract(state): Extract<State>,
    Path(group): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<queue_core::GroupStats>, ApiError> {
    let b: RateLimitBody = json_body(raw, "rate limit request")?;
    let limit = rate_limit_of(&b)?;
    state.backend.set_group_rate_limit(&group, limit).await?;
    Ok(Json(state.backend.group(&group).await?))
}
