//! Routes of flows: children added to a parent, a flow enqueued, a parent's children.

use super::*;

/// The body of `POST /jobs/{id}/children`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChildrenBody {
    children: Vec<EnqueueBody>,
}

/// `POST /jobs/{id}/children`: adds children to a queued job (a batch's callback), which
/// then waits on them too.
pub(crate) async fn add_children(
    Extract(state): Extract<State>,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = job_id(&id)?;
    let b: ChildrenBody = json_body(raw, "children")?;
    if b.children.is_empty() {
        return Err(ApiError::bad_request("children is empty"));
    }
    let flows = b
        .children
        .into_iter()
        .map(EnqueueBody::into_flow)
        .collect::<Result<Vec<_>, _>>()?;
    let records = state.backend.add_children(id, flows).await?;
    Ok((StatusCode::CREATED, Json(json!({ "children": records }))).into_response())
}

/// The most jobs `GET /jobs/{id}/flow` reads.
const MAX_TREE: usize = 1000;

/// `GET /jobs/{id}/flow?limit=N`: the job with its descendants, each with its status and
/// progress (at most N jobs, 1 to 1000, default 200; the rest counted as `truncated`).
pub(crate) async fn flow(
    Extract(state): Extract<State>,
    Path(id): Path<String>,
    q: Params,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(&id)?;
    let mut limit = 200;
    for (key, value) in &params(q)? {
        match key.as_str() {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_TREE).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("limit `{value}` is not in 1..={MAX_TREE}"))
                    })?;
            }
            "token" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}`"
                )));
            }
        }
    }
    let tree = state.backend.flow_tree(id, limit).await?;
    Ok(Json(serde_json::to_value(tree).expect("serializable")))
}

/// `GET /jobs/{id}/children?limit=&cursor=`: a page of a parent's children, oldest first
/// (`limit` 1 to 1000, default 100; `next_cursor` goes on), however many it has.
pub(crate) async fn children(
    Extract(state): Extract<State>,
    Path(id): Path<String>,
    q: Params,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(&id)?;
    let mut query = ListQuery::new().children_of(id).limit(100);
    for (key, value) in params(q)? {
        match key.as_str() {
            "limit" => {
                query.limit = value.parse().map_err(|_| {
                    ApiError::bad_request(format!("limit `{value}` is not a number"))
                })?
            }
            "cursor" if !value.is_empty() => query.cursor = Some(value),
            "cursor" | "token" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}`"
                )));
            }
        }
    }
    let page = state.backend.list(&query).await?;
    Ok(Json(
        json!({ "children": page.jobs, "next_cursor": page.next_cursor }),
    ))
}
