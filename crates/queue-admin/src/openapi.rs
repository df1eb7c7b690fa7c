//! The OpenAPI document, generated from the same route list the tests walk.

use axum::Json;
use serde_json::{Value, json};

/// Every route: (method, path, summary, authenticated).
pub const ROUTES: [(&str, &str, &str, bool); 39] = [
    ("get", "/health", "Backend health (no token needed)", false),
    (
        "get",
        "/metrics",
        "Prometheus metrics (no token needed)",
        false,
    ),
    ("get", "/stats", "Queue counts", true),
    ("get", "/jobs", "Jobs, newest first, paginated", true),
    (
        "post",
        "/jobs",
        "Enqueue a job; with `children` (each with `on_failure`: fail_parent, ignore or continue) a flow, created whole or not at all",
        true,
    ),
    (
        "get",
        "/series",
        "The charts' series (?span=hour|day): per minute or quarter hour, each lifetime counter's increase, depth samples, wait and run-time percentiles",
        true,
    ),
    (
        "post",
        "/jobs/bulk",
        "One bounded step of a bulk action ({action: retry|cancel|delete, filter: {status, task, unique_key_prefix, created_after, created_before}, cursor, limit, dry_run}): counts, what was done and refused, next_cursor to resume",
        true,
    ),
    (
        "get",
        "/jobs/{id}",
        "One job's record; with ?wait=SECONDS (up to 60) when it is finished or the time has passed",
        true,
    ),
    (
        "delete",
        "/jobs/{id}",
        "Delete a finished job's record (409 while it is live, or while its unfinished parent will read it)",
        true,
    ),
    (
        "post",
        "/jobs/{id}/cancel",
        "Cancel a queued or running job",
        true,
    ),
    (
        "post",
        "/jobs/{id}/retry",
        "Re-queue a failed, partial or cancelled job",
        true,
    ),
    (
        "get",
        "/jobs/{id}/children",
        "A page of a parent's children, oldest first (limit, cursor; next_cursor goes on)",
        true,
    ),
    (
        "post",
        "/jobs/{id}/children",
        "Add children ({children: [...]}) to a queued job (a batch's callback)",
        true,
    ),
    (
        "get",
        "/jobs/{id}/flow",
        "The job with its descendants (`limit` jobs, default 200), each with status and progress",
        true,
    ),
    ("get", "/workers", "Live workers", true),
    (
        "post",
        "/queue/pause",
        "Pause the queue: no job starts until resumed",
        true,
    ),
    ("post", "/queue/resume", "Resume a paused queue", true),
    (
        "post",
        "/queue/rate_limit",
        "Set ({max, per_seconds}) or remove ({max: null}) the queue's rate limit",
        true,
    ),
    (
        "get",
        "/groups",
        "The groups with unfinished jobs, busiest first (`limit`, default 50), the rest summed",
        true,
    ),
    (
        "get",
        "/groups/{group}",
        "One group's ready and running jobs, paused state and concurrency limit",
        true,
    ),
    (
        "post",
        "/groups/{group}/pause",
        "Pause one group: none of its jobs starts until resumed",
        true,
    ),
    (
        "post",
        "/groups/{group}/resume",
        "Resume a paused group",
        true,
    ),
    (
        "post",
        "/groups/{group}/concurrency",
        "Set ({max}) or remove ({max: null}) a group's concurrency limit",
        true,
    ),
    (
        "post",
        "/groups/{group}/weight",
        "Set ({weight}: starts in a row per turn) or remove ({weight: null}) a group's weight",
        true,
    ),
    (
        "post",
        "/groups/{group}/rate_limit",
        "Set ({max, per_seconds}) or remove ({max: null}) a group's rate limit",
        true,
    ),
    (
        "get",
        "/schedules",
        "Every job schedule with its next run",
        true,
    ),
    ("get", "/schedules/{name}", "One job schedule", true),
    (
        "put",
        "/schedules/{name}",
        "Create or change a job schedule (cron in a time zone, or every N ms): each tick enqueues exactly one job",
        true,
    ),
    (
        "delete",
        "/schedules/{name}",
        "Delete a job schedule (its jobs stay)",
        true,
    ),
    (
        "post",
        "/schedules/{name}/pause",
        "Pause a job schedule",
        true,
    ),
    (
        "post",
        "/schedules/{name}/resume",
        "Resume a job schedule from its next tick after now",
        true,
    ),
    ("get", "/webhooks", "Every webhook (secrets hidden)", true),
    (
        "put",
        "/webhooks/{name}",
        "Create or replace a webhook: {url, secret, events?, task?, group?, max_attempts?, retry_ms?}",
        true,
    ),
    ("delete", "/webhooks/{name}", "Delete a webhook", true),
    (
        "get",
        "/deliveries",
        "Pending webhook deliveries, or parked ones with ?parked=true",
        true,
    ),
    (
        "post",
        "/deliveries/{delivery}/resend",
        "Send a parked delivery again",
        true,
    ),
    (
        "get",
        "/events",
        "Server-sent job events (transition, progress, cancel_requested), each with its log id; `Last-Event-ID` or ?since=ID resumes after it",
        true,
    ),
    ("get", "/openapi.json", "This document", true),
    ("get", "/", "The dashboard page", true),
];

fn operation(method: &str, path: &str, summary: &str, auth: bool) -> Value {
    let mut op = json!({
        "summary": summary,
        "responses": {
            "200": { "description": "OK" },
            "400": { "description": "Bad input", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
            "401": { "description": "Missing or wrong bearer token" },
            "404": { "description": "No such job" },
        }
    });
    if path.contains("{id}") {
        op["parameters"] = json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } }]);
    }
    if path == "/jobs/{id}" && method == "get" {
        op["parameters"] = json!([
            { "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } },
            { "name": "wait", "in": "query", "schema": { "type": "number", "minimum": 0, "maximum": 60 } },
        ]);
    }
    if path.contains("{group}") {
        op["parameters"] = json!([{ "name": "group", "in": "path", "required": true, "schema": { "type": "string", "maxLength": 128 } }]);
    }
    if path.contains("{name}") {
        op["parameters"] = json!([{ "name": "name", "in": "path", "required": true, "schema": { "type": "string", "maxLength": 128 } }]);
        op["responses"]["404"] = json!({ "description": "No such schedule" });
    }
    if path == "/schedules/{name}" && method == "put" {
        op["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Schedule" } } } });
    }
    if method == "delete" && path == "/jobs/{id}" {
        op["responses"]["200"] = json!({ "description": "The deleted record", "content": { "application/json": { "schema": { "type": "object" } } } });
        op["responses"]["409"] =
            json!({ "description": "Not deletable now (live, or kept for its parent)" });
    } else if method == "delete" {
        op["responses"]["204"] = json!({ "description": "Deleted" });
    }
    if path.ends_with("/weight") {
        op["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": { "type": "object", "properties": { "weight": { "type": "integer", "minimum": 1, "maximum": 1000, "nullable": true } }, "additionalProperties": false } } } });
    }
    if path.ends_with("/concurrency") {
        op["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": { "type": "object", "properties": { "max": { "type": "integer", "minimum": 1, "nullable": true } }, "additionalProperties": false } } } });
    }
    if path == "/jobs" && method == "get" {
        op["parameters"] = json!([
            { "name": "status", "in": "query", "schema": { "type": "string", "enum": ["queued", "processing", "completed", "failed", "partial", "cancelled"] } },
            { "name": "unique_key", "in": "query", "schema": { "type": "string" } },
            { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } },
            { "name": "cursor", "in": "query", "schema": { "type": "string" } },
        ]);
    }
    if path == "/events" {
        op["parameters"] = json!([
            { "name": "since", "in": "query", "schema": { "type": "string", "example": "1796305785755-0" }, "description": "Resume after this event id (the `Last-Event-ID` header wins)" },
            { "name": "Last-Event-ID", "in": "header", "schema": { "type": "string" } },
        ]);
    }
    if path == "/groups" {
        op["parameters"] = json!([
            { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 0, "maximum": 1000, "default": 50 } },
        ]);
    }
    if path == "/jobs" && method == "post" {
        op["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/NewJob" } } } });
        op["responses"]["201"] = json!({ "description": "Created" });
        op["responses"]["409"] = json!({ "description": "The unique key already has an active job (its id in `job_id`)" });
        op["responses"]["413"] = json!({ "description": "Body too large" });
    }
    if path.ends_with("/retry") {
        op["requestBody"] = json!({ "required": false, "content": { "application/json": { "schema": { "type": "object", "properties": { "priority": { "type": "string", "enum": ["high", "normal", "low"] } }, "additionalProperties": false } } } });
        op["responses"]["409"] =
            json!({ "description": "Transition not allowed, or the unique key is taken" });
    }
    if path.ends_with("/cancel") {
        op["responses"]["409"] = json!({ "description": "The job already finished" });
    }
    if !auth {
        op["security"] = json!([]);
    }
    op
}

pub(crate) fn build() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, summary, auth) in ROUTES {
        let entry = paths.entry(path.to_owned()).or_insert_with(|| json!({}));
        entry[method] = operation(method, path, summary, auth);
    }
    json!({
        "openapi": "3.0.3",
        "info": { "title": "dcs job queue admin API", "version": env!("CARGO_PKG_VERSION") },
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "string" }, "job_id": { "type": "string" } } },
                "Schedule": {
                    "type": "object", "required": ["cadence", "job"],
                    "properties": {
                        "name": { "type": "string", "description": "Optional; must match the path" },
                        "cadence": { "oneOf": [
                            { "type": "object", "required": ["kind", "expr"], "properties": { "kind": { "enum": ["cron"] }, "expr": { "type": "string", "example": "0 2 * * *" }, "tz": { "type": "string", "default": "UTC", "example": "Europe/Berlin" } } },
                            { "type": "object", "required": ["kind", "every_ms"], "properties": { "kind": { "enum": ["every"] }, "every_ms": { "type": "integer", "minimum": 1000 } } }
                        ] },
                        "job": { "type": "object", "required": ["task"], "properties": {
                            "task": { "type": "string" }, "payload": {}, "priority": { "type": "string", "enum": ["high", "normal", "low"] },
                            "max_retries": { "type": "integer", "minimum": 0 }, "timeout_ms": { "type": "integer", "minimum": 1 },
                            "metadata": { "type": "object" }, "group": { "type": "string" }, "cost": { "type": "integer", "minimum": 1 }
                        } },
                        "missed": { "type": "object", "properties": { "policy": { "enum": ["skip", "run_once", "run_each"] }, "max": { "type": "integer", "minimum": 1, "maximum": 1000 } }, "description": "Ticks later than the grace: skipped, one run for the latest (default), or each of the latest `max`" },
                        "grace_ms": { "type": "integer", "minimum": 1000, "default": 60000 },
                        "paused": { "type": "boolean", "default": false }
                    }
                },
                "NewJob": {
                    "type": "object", "required": ["task"], "additionalProperties": false,
                    "properties": {
                        "task": { "type": "string" }, "payload": {}, "unique_key": { "type": "string" },
                        "priority": { "type": "string", "enum": ["high", "normal", "low"] },
                        "delay_seconds": { "type": "integer", "minimum": 0 }, "max_retries": { "type": "integer", "minimum": 0 },
                        "timeout_seconds": { "type": "integer", "minimum": 1 }, "metadata": { "type": "object" },
                        "group": { "type": "string", "maxLength": 128 },
                        "cost": { "type": "integer", "minimum": 1, "maximum": 1000000, "description": "What a start counts against rate limits (default 1)" },
                        "debounce_ms": { "type": "integer", "minimum": 1, "description": "With unique_key: a burst of enqueues becomes one run this long after the last, with the last payload (answered 200 with the pending job whose payload it replaced)" },
                        "throttle_ms": { "type": "integer", "minimum": 1, "description": "With unique_key: at most one job of the key per window (answered 200 with the window's job)" },
                        "sequence": { "type": "string", "maxLength": 128, "description": "The ordered sequence the job joins: it starts after every job of the sequence enqueued before it has ended, one at a time (its `after` names the one it waits for)" },
                        "replace_running": { "type": "boolean", "description": "With unique_key: the key's running job is asked to stop (a cancel) and this one runs once its attempt ended (its `after`); later enqueues replace its payload (answered 200 with it)" },
                        "keep_latest": { "type": "boolean", "description": "With unique_key: at most one running and one waiting job of the key; while one runs the new job waits for it to end (its `after`), and later enqueues replace the waiting one's payload (answered 200 with it)" }
                    }
                }
            }
        }
    })
}

pub(crate) async fn document() -> Json<Value> {
    Json(build())
}
