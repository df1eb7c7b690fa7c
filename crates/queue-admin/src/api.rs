//! The JSON routes.

mod control;
mod events;
mod flows;
mod groups;
mod schedules;
mod webhooks;

pub(crate) use control::*;
pub(crate) use events::*;
pub(crate) use flows::*;
pub(crate) use groups::*;
pub(crate) use schedules::*;
pub(crate) use webhooks::*;

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
    /// Debounce on the unique key: a burst becomes one run this long after its last enqueue.
    debounce_ms: Option<u64>,
    /// Throttle on the unique key: at most one job of the key per this window.
    throttle_ms: Option<u64>,
    /// Keep-latest on the unique key: at most one running and one waiting job of the key.
    #[serde(default)]
    keep_latest: bool,
    /// Replace-running on the unique key: the key's running job is asked to stop.
    #[serde(default)]
    replace_running: bool,
    /// The ordered sequence the job joins.
    sequence: Option<String>,
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
        job.options.sequence = self.sequence;
        let modes = [
            self.debounce_ms.is_some(),
            self.throttle_ms.is_some(),
            self.keep_latest,
            self.replace_running,
        ];
        if modes.iter().filter(|m| **m).count() > 1 {
            return Err(ApiError::bad_request(
                "`debounce_ms`, `throttle_ms`, `keep_latest` and `replace_running`: a job takes \
                 one key mode",
            ));
        }
        if let Some(ms) = self.debounce_ms {
            job = job.debounce(Duration::from_millis(ms));
        }
        if let Some(ms) = self.throttle_ms {
            job = job.throttle(Duration::from_millis(ms));
        }
        if self.keep_latest {
            job = job.keep_latest();
        }
        if self.replace_running {
            job = job.replace_running();
        }
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
    let mut flow = b.into_flow()?;
    // A keyed job may be answered with the job that holds its key: 200 then, 201 when
    // this enqueue created it.
    let id = *flow.job.options.job_id.get_or_insert_with(JobId::new);
    let record = if flow.children.is_empty() {
        state.backend.enqueue(flow.job).await?
    } else {
        state.backend.enqueue_flow(flow).await?
    };
    let status = if record.job_id == id {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(record)).into_response())
}

pub(crate) async fn cancel(
    Extract(state): Extract<State>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(&id)?;
    let outcome = state.backend.cancel(id).await?;
    Ok(Json(json!({ "job_id": id, "result": outcome })))
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
