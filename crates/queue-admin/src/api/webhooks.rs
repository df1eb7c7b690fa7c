//! Routes of webhooks and their outbox.

use super::*;

/// `GET /webhooks`: every webhook, secrets hidden.
pub(crate) async fn webhooks(
    Extract(state): Extract<State>,
) -> Result<Json<Vec<queue_core::Webhook>>, ApiError> {
    let hooks = state.backend.webhooks().await?;
    Ok(Json(
        hooks.iter().map(queue_core::Webhook::redacted).collect(),
    ))
}

/// `PUT /webhooks/{name}` with `{"url", "secret", "events"?, "task"?, "group"?,
/// "max_attempts"?, "retry_ms"?}` (`name` may be left out): creates or replaces it.
pub(crate) async fn put_webhook(
    Extract(state): Extract<State>,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<queue_core::Webhook>, ApiError> {
    let hook: queue_core::Webhook = named_body(raw, &name, "webhook")?;
    state.backend.put_webhook(&hook).await?;
    Ok(Json(hook.redacted()))
}

/// `DELETE /webhooks/{name}`.
pub(crate) async fn delete_webhook(
    Extract(state): Extract<State>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.backend.delete_webhook(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("webhook `{name}` not found"),
        ))
    }
}

/// `GET /deliveries?parked=true&limit=N`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliveriesQuery {
    #[serde(default)]
    parked: bool,
    limit: Option<usize>,
}

/// `GET /deliveries`: pending webhook deliveries (oldest due first), or parked ones.
pub(crate) async fn deliveries(
    Extract(state): Extract<State>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<Vec<queue_core::Delivery>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit {limit} is not in 1..=1000"
        )));
    }
    Ok(Json(state.backend.deliveries(q.parked, limit).await?))
}

/// `POST /deliveries/{id}/resend`: a parked delivery is sent again.
pub(crate) async fn resend_delivery(
    Extract(state): Extract<State>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if state.backend.resend_delivery(&id).await? {
        Ok(Json(json!({ "resent": id })))
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no parked delivery `{id}`"),
        ))
    }
}
