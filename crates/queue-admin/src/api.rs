//! The JSON routes.

use std::{collections::HashMap, convert::Infallible, str::FromStr, time::Duration};

use axum::{
    Json,
    body::Bytes,
    extract::{
        Path, Query, State as Extract,
        rejection::{BytesRejection, QueryRejection},
    },
    http::StatusCode,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::{Stream, StreamExt};
use queue_core::{
    BulkActions, BulkRequest, ChildPolicy, Flow, JobId, JobStatus, JobStoreExt, ListQuery,
    Metadata, NewJob, Payload, Priority, Schedules, Search,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{State, error::ApiError};

type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

fn params(q: Params) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))
}

fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {} bytes", crate::MAX_BODY),
        ),
        other => ApiError::bad_request(format!("unreadable request body: {other}")),
    })
}

/// A JSON request body of type `T`; `what` names it in the error.
fn json_body<T: serde::de::DeserializeOwned>(
    raw: Result<Bytes, BytesRejection>,
    what: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(&body(raw)?)
        .map_err(|e| ApiError::bad_request(format!("malformed {what}: {e}")))
}

/// A JSON object body of type `T` named by the path: its `name` may be left out, and must
/// match the path's when given; `what` names it in errors.
fn named_body<T: serde::de::DeserializeOwned>(
    raw: Result<Bytes, BytesRejection>,
    name: &str,
    what: &str,
) -> Result<T, ApiError> {
    let mut value: Value = json_body(raw, what)?;
    let Some(fields) = value.as_object_mut() else {
        return Err(ApiError::bad_request(format!(
            "malformed {what}: not a JSON object"
        )));
    };
    match fields.get("name") {
        None => {
            fields.insert("name".into(), Value::String(name.to_owned()));
        }
        Some(Value::String(n)) if n == name => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "{what} name {other} does not match the path's `{name}`"
            )));
        }
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("malformed {what}: {e}")))
}

fn job_id(raw: &str) -> Result<JobId, ApiError> {
    JobId::from_str(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

pub(crate) async fn health(Extract(state): Extract<State>) -> Result<Json<Value>, ApiError> {
    state.backend.health().await?;
    Ok(Json(json!({ "status": "ok" })))
}

pub(crate) async fn stats(Extract(state): Extract<State>) -> Result<Json<Value>, ApiError> {
    // `QueueStats` serializes as the API documents it (depth keyed by priority name).
    Ok(Json(json!(state.backend.stats().await?)))
}

pub(crate) async fn list(
    Extract(state): Extract<State>,
    q: Params,
) -> Result<Json<Value>, ApiError> {
    let p = params(q)?;
    let mut query = ListQuery::new();
    // Filters the listing cannot apply itself (read as a `BulkFilter`: errors name the field).
    let mut wanted = serde_json::Map::new();
    for (key, value) in &p {
        match key.as_str() {
            "task" | "unique_key_prefix" | "created_after" | "created_before"
                if !value.is_empty() =>
            {
                wanted.insert(key.clone(), Value::String(value.clone()));
            }
            "status" if !value.is_empty() => {
                query.status = Some(
                    JobStatus::from_str(value).map_err(|e| ApiError::bad_request(e.to_string()))?,
                )
            }
            "unique_key" if !value.is_empty() => query.unique_key = Some(value.clone()),
            "cursor" if !value.is_empty() => query.cursor = Some(value.clone()),
            "waiting_on_children" => {
                query.waiting_on_children = match value.as_str() {
                    "true" | "1" => true,
                    "false" | "0" | "" => false,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "waiting_on_children `{other}` is not true or false"
                        )));
                    }
                }
            }
            "limit" => {
                query.limit = value.parse().map_err(|_| {
                    ApiError::bad_request(format!("limit `{value}` is not a number"))
                })?
            }
            "status" | "unique_key" | "cursor" | "token" | "task" | "unique_key_prefix"
            | "created_after" | "created_before" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}`"
                )));
            }
        }
    }
    if !wanted.is_empty() {
        let mut filter: queue_core::BulkFilter = serde_json::from_value(Value::Object(wanted))
            .map_err(|e| ApiError::bad_request(format!("malformed filter: {e}")))?;
        // A filter the listing cannot apply: a bounded scan (`Search::search`) that says
        // how far it looked and where to go on.
        if query.waiting_on_children {
            return Err(ApiError::bad_request(
                "waiting_on_children cannot be combined with task, prefix or time filters",
            ));
        }
        filter.status = query.status;
        let found = state
            .backend
            .search(&filter, query.unique_key, query.cursor, query.limit)
            .await?;
        return Ok(Json(serde_json::to_value(found).expect("serializable")));
    }
    let page = state.backend.list(&query).await?;
    Ok(Json(serde_json::to_value(page).expect("serializable")))
}

/// `GET /series?span=hour|day` (default `hour`): the charts' series, one point per minute
/// (hour) or quarter hour (day): each lifetime counter's increase, the depth sampled by
/// heartbeats, and the 50th/95th/99th percentiles (ms, a bin's upper bound) of
/// enqueue-to-start and run times.
pub(crate) async fn series(
    Extract(state): Extract<State>,
    q: Params,
) -> Result<Json<Value>, ApiError> {
    use queue_core::series::percentile;
    let p = params(q)?;
    let mut span = queue_core::SeriesSpan::Hour;
    for (key, value) in &p {
        match key.as_str() {
            "span" => {
                span = value
                    .parse()
                    .map_err(|e: queue_core::Error| ApiError::bad_request(e.to_string()))?
            }
            "token" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}`"
                )));
            }
        }
    }
    let series = state.backend.series(span).await?;
    let quantiles = |h: &[u64]| {
        json!({
            "count": h.iter().sum::<u64>(),
            "p50": percentile(h, 0.5),
            "p95": percentile(h, 0.95),
            "p99": percentile(h, 0.99),
        })
    };
    let points: Vec<Value> = series
        .points
        .iter()
        .map(|p| {
            json!({
                "at": p.at,
                "counts": p.counts,
                "gauges": p.gauges,
                "wait_ms": quantiles(&p.wait),
                "run_ms": quantiles(&p.run),
            })
        })
        .collect();
    Ok(Json(json!({
        "span": series.span,
        "step_ms": series.step_ms,
        "bounds_ms": series.bounds_ms,
        "points": points,
    })))
}

/// The longest `GET /jobs/{id}?wait=` long-poll, in seconds.
const MAX_WAIT_SECONDS: f64 = 60.0;

/// `GET /jobs/{id}`, and with `?wait=SECONDS` (up to 60) a long-poll: it answers when the job
/// is finished or the time has passed, with the record then (`JobStore::wait`).
pub(crate) async fn get(
    Extract(state): Extract<State>,
    Path(id): Path<String>,
    q: Params,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(&id)?;
    let mut wait = None;
    for (key, value) in &params(q)? {
        match key.as_str() {
            "wait" => {
                let secs: f64 = value
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && (0.0..=MAX_WAIT_SECONDS).contains(s))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "wait `{value}` is not a number of seconds from 0 to {MAX_WAIT_SECONDS}"
                        ))
                    })?;
                wait = Some(Duration::from_secs_f64(secs));
            }
            "token" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}`"
                )));
            }
        }
    }
    let record = match wait {
        Some(wait) => state.backend.wait(id, wait).await?,
        None => state.backend.get(id).await?,
    };
    Ok(Json(serde_json::to_value(record).expect("serializable")))
}

/// The body of `POST /jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnqueueBody {
    task: String,
    #[serde(default)]
    payload: Value,
    unique_key: Option<String>,
    priority: Option<Priority>,
    delay_seconds: Option<u64>,
    max_retries: Option<u32>,
    timeout_seconds: Option<u64>,
    #[serde(default)]
    metadata: Metadata,
    group: Option<String>,
    cost: Option<u32>,
    /// Children: the job becomes a flow's parent, created with them in one step.
    #[serde(default)]
    children: Vec<EnqueueBody>,
    /// For a child: what its failure does to its parent.
    on_failure: Option<ChildPolicy>,
}

impl EnqueueBody {
    /// The flow this body describes (a job without children is a flow of one).
    fn into_flow(self) -> Result<Flow, ApiError> {
        let mut job = NewJob::with_payload(self.task, Payload::encode(&self.payload)?);
        job.options.unique_key = self.unique_key;
        job.options.priority = self.priority;
        job.options.delay = self.delay_seconds.map(Duration::from_secs);
        job.options.max_retries = self.max_retries;
        job.options.timeout = self.timeout_seconds.map(Duration::from_secs);
        job.options.metadata = self.metadata;
        job.options.group = self.group;
        job.options.cost = self.cost;
        let children = self
            .children
            .into_iter()
            .map(EnqueueBody::into_flow)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Flow::new(job)
            .on_failure(self.on_failure.unwrap_or_default())
            .children(children))
    }
}

/// `POST /jobs`: one job, or with `children` a flow (every job created, or none).
pub(crate) async fn enqueue(
    Extract(state): Extract<State>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let b: EnqueueBody = json_body(raw, "job")?;
    let flow = b.into_flow()?;
    let record = if flow.children.is_empty() {
        state.backend.enqueue(flow.job).await?
    } else {
        state.backend.enqueue_flow(flow).await?
    };
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

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

pub(crate) async fn cancel(
    Extract(state): Extract<State>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(&id)?;
    let outcome = state.backend.cancel(id).await?;
    Ok(Json(json!({ "job_id": id, "result": outcome })))
}

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
struct RateLimitBody {
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
fn rate_limit_of(b: &RateLimitBody) -> Result<Option<queue_core::RateLimit>, ApiError> {
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    priority: Option<Priority>,
}

pub(crate) async fn retry(
    Extract(state): Extract<State>,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(&id)?;
    let raw = body(raw)?;
    let b: RetryBody = if raw.iter().all(u8::is_ascii_whitespace) {
        RetryBody::default()
    } else {
        serde_json::from_slice(&raw)
            .map_err(|e| ApiError::bad_request(format!("malformed retry request: {e}")))?
    };
    let record = state.backend.retry(id, b.priority).await?;
    Ok(Json(serde_json::to_value(record).expect("serializable")))
}

/// `DELETE /jobs/{id}`: deletes a finished job's record (409 for a live job, or a child its
/// unfinished parent will read); answers the deleted record.
pub(crate) async fn delete(
    Extract(state): Extract<State>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = state.backend.delete(job_id(&id)?).await?;
    Ok(Json(serde_json::to_value(record).expect("serializable")))
}

/// `POST /jobs/bulk` with `{"action": "retry"|"cancel"|"delete", "filter": {status, task,
/// unique_key_prefix, created_after, created_before}, "cursor", "limit" (1..=1000, default
/// 200), "dry_run"}`: one bounded step of a bulk action. The answer says how many jobs it
/// looked at, matched and acted on, which were refused and why, and `next_cursor` for the
/// next step (`null` when done): a client repeats the call until then, and resumes from the
/// last cursor after an interruption. A dry run counts without acting.
pub(crate) async fn bulk(
    Extract(state): Extract<State>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: BulkRequest = json_body(raw, "bulk request")?;
    let step = state.backend.bulk(&req).await?;
    Ok(Json(json!({
        "action": req.action.as_str(),
        "dry_run": req.dry_run,
        "examined": step.examined,
        "matched": step.matched,
        "done": step.done,
        "refused": step.refused.iter().map(|(id, why)| json!({ "job_id": id, "error": why })).collect::<Vec<_>>(),
        "next_cursor": step.next_cursor,
    })))
}

pub(crate) async fn workers(Extract(state): Extract<State>) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        serde_json::to_value(state.backend.workers().await?).expect("serializable"),
    ))
}

/// `GET /events?since=ID`: the resume point when the client has no `Last-Event-ID` (other
/// parameters, such as `token`, are the middleware's).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct EventsQuery {
    since: Option<String>,
}

/// Server-sent events: `transition`, `progress` and `cancel_requested`, each a JSON job
/// event with its log id as the SSE `id`. A client that reconnects sends `Last-Event-ID`
/// (browsers do it on their own) or `?since=ID`, and gets what it missed from the event log
/// first, then live events, none twice; `missed` where events were lost (the client fell
/// behind, or resumed from before the oldest the log holds): reload what it shows.
pub(crate) async fn events(
    Extract(state): Extract<State>,
    headers: axum::http::HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let resume = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("Last-Event-ID is not text"))?
                .to_owned(),
        ),
        None => q.since,
    };
    let after = resume.as_deref().filter(|id| !id.is_empty());
    let events = state.backend.subscribe(after).await?;
    let stream = events.map(|e| {
        let name = match &e.kind {
            queue_core::EventKind::Transition { .. } => "transition",
            queue_core::EventKind::Progress { .. } => "progress",
            queue_core::EventKind::CancelRequested => "cancel_requested",
            queue_core::EventKind::Missed { .. } => "missed",
        };
        let mut event = Event::default()
            .event(name)
            .data(serde_json::to_string(&e).expect("serializable"));
        if let Some(id) = &e.id {
            event = event.id(id);
        }
        Ok(event)
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

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
