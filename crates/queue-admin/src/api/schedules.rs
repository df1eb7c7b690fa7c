//! Routes of schedules.

use super::*;

/// `GET /schedules`: every job schedule with its next run.
pub(crate) async fn schedules(
    Extract(state): Extract<State>,
) -> Result<Json<Vec<queue_core::ScheduleRecord>>, ApiError> {
    Ok(Json(state.backend.schedules().await?))
}

/// `GET /schedules/{name}`.
pub(crate) async fn schedule(
    Extract(state): Extract<State>,
    Path(name): Path<String>,
) -> Result<Json<queue_core::ScheduleRecord>, ApiError> {
    Ok(Json(state.backend.schedule(&name).await?))
}

/// `PUT /schedules/{name}` with a schedule as `GET` shows it (`cadence`, `job`, and
/// optionally `missed`, `grace_ms`, `paused`; `name` may be left out): creates it, or
/// changes the one of that name.
pub(crate) async fn put_schedule(
    Extract(state): Extract<State>,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<queue_core::ScheduleRecord>, ApiError> {
    let schedule: queue_core::Schedule = named_body(raw, &name, "schedule")?;
    Ok(Json(state.backend.put_schedule(schedule).await?))
}

/// `DELETE /schedules/{name}`: the jobs it enqueued stay.
pub(crate) async fn delete_schedule(
    Extract(state): Extract<State>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.backend.delete_schedule(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /schedules/{name}/pause`.
pub(crate) async fn pause_schedule(
    Extract(state): Extract<State>,
    Path(name): Path<String>,
) -> Result<Json<queue_core::ScheduleRecord>, ApiError> {
    Ok(Json(state.backend.pause_schedule(&name).await?))
}

/// `POST /schedules/{name}/resume`: from the next tick after now.
pub(crate) async fn resume_schedule(
    Extract(state): Extract<State>,
    Path(name): Path<String>,
) -> Result<Json<queue_core::ScheduleRecord>, ApiError> {
    Ok(Json(state.backend.resume_schedule(&name).await?))
}
