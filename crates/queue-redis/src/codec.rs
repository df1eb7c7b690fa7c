//! Job hashes <-> `JobRecord`. Decoding names the field that is wrong, so a corrupt record
//! fails its job with a clear error instead of taking the worker down.
//!
//! A running job's lease lives in the `leases` hash, apart from its record: a record is
//! read together with its lease, and the lease overlays what `Start` wrote (as decided by
//! `queue_core::backend::rules`, the same rule the scripts apply when the attempt ends).

use queue_core::backend::{
    Event, from_millis,
    rules::{self, EffectInput},
};
use queue_core::{Error, JobId, JobRecord, JobStatus, Payload, Priority, Result};

use crate::wire::LeaseEntry;

pub(crate) use crate::wire::Fields;

/// Decodes a record and, when the job is running, its lease.
pub(crate) fn decode_leased(
    key_id: Option<JobId>,
    f: &Fields,
    lease: Option<&LeaseEntry>,
) -> Result<JobRecord> {
    let mut record = decode(key_id, f)?;
    if let Some(lease) = lease {
        let deferred: Vec<_> = rules::effect(Event::Start)
            .iter()
            .filter(|(field, _)| !rules::PROGRESS_FIELDS.contains(field))
            .copied()
            .collect();
        record.apply_effect(
            &deferred,
            &EffectInput {
                now: lease.started,
                worker: Some(lease.worker.clone()),
                ..EffectInput::default()
            },
        );
        record.status = JobStatus::Processing;
        record.cancel_requested = lease.cancel;
    }
    record.show_flow_progress();
    Ok(record)
}

/// Decodes a hash; `key_id` is the id the key names (the record's id: a hash holds no
/// copy of it).
pub(crate) fn decode(key_id: Option<JobId>, f: &Fields) -> Result<JobRecord> {
    let name = key_id.map_or_else(|| "?".into(), |i| i.to_string());
    let bad = |field: &str, why: String| {
        Error::corrupt(format!("job record {name}: field `{field}` {why}"))
    };
    // Cleared fields are stored empty: read them as absent.
    let text = |field: &str| f.get(field).map(String::as_str).filter(|v| !v.is_empty());
    let required = |field: &str| text(field).ok_or_else(|| bad(field, "is missing".into()));
    let int = |field: &str| -> Result<Option<i64>> {
        text(field)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| bad(field, format!("is not an integer: {v:?}")))
            })
            .transpose()
    };
    let uint = |field: &str, max: u64| -> Result<Option<u64>> {
        match int(field)? {
            Some(v) if v < 0 || v as u64 > max => Err(bad(field, format!("is out of range: {v}"))),
            other => Ok(other.map(|v| v as u64)),
        }
    };
    let json = |field: &str| -> Result<Option<serde_json::Value>> {
        text(field)
            .map(|v| serde_json::from_str(v).map_err(|e| bad(field, format!("is not JSON: {e}"))))
            .transpose()
    };
    // The id is the key's: a record holds no copy of it.
    let job_id = key_id.ok_or_else(|| bad("job_id", "is missing".into()))?;
    let payload = required("payload")?;
    serde_json::from_str::<serde::de::IgnoredAny>(payload)
        .map_err(|e| bad("payload", format!("is not JSON: {e}")))?;
    let status = required("status")?;
    let status = status
        .parse::<JobStatus>()
        .map_err(|_| bad("status", format!("is not a status: {status:?}")))?;
    let priority = required("priority")?;
    let priority = priority
        .parse::<Priority>()
        .map_err(|_| bad("priority", format!("is not a priority: {priority:?}")))?;
    let metadata = match json("metadata")? {
        None => Default::default(),
        Some(serde_json::Value::Object(map)) => map,
        Some(_) => return Err(bad("metadata", "is not a JSON object".into())),
    };
    let count =
        |field: &str| -> Result<u32> { Ok(uint(field, u64::from(u32::MAX))?.unwrap_or(0) as u32) };
    let children = match text("kids_waiting") {
        None => None,
        Some(_) => Some(queue_core::ChildCounts {
            waiting: count("kids_waiting")?,
            completed: count("kids_completed")?,
            failed: count("kids_failed")?,
            partial: count("kids_partial")?,
            cancelled: count("kids_cancelled")?,
        }),
    };
    let parent = text("parent")
        .map(|v| {
            v.parse::<JobId>()
                .map_err(|_| bad("parent", format!("is not a UUID: {v:?}")))
        })
        .transpose()?;
    let after = text("after")
        .map(|v| {
            v.parse::<JobId>()
                .map_err(|_| bad("after", format!("is not a UUID: {v:?}")))
        })
        .transpose()?;
    let child_policy = text("policy")
        .map(|v| {
            queue_core::ChildPolicy::parse(v)
                .map_err(|_| bad("policy", format!("is not a child policy: {v:?}")))
        })
        .transpose()?;
    Ok(JobRecord {
        job_id,
        task: required("task")?.to_owned(),
        payload: Payload::from_trusted(payload),
        unique_key: text("unique_key").map(str::to_owned),
        status,
        priority,
        progress: uint("progress", 100)?.unwrap_or(0) as u8,
        current_step: text("current_step").map(str::to_owned),
        error_message: text("error_message").map(str::to_owned),
        retry_count: uint("retry_count", u64::from(u32::MAX))?.unwrap_or(0) as u32,
        max_retries: uint("max_retries", u64::from(u32::MAX))?.unwrap_or(0) as u32,
        timeout_ms: uint("timeout_ms", u64::MAX)?,
        created_at: from_millis(
            int("created_at")?.ok_or_else(|| bad("created_at", "is missing".into()))?,
        ),
        started_at: int("started_at")?.map(from_millis),
        completed_at: int("completed_at")?.map(from_millis),
        run_at: int("run_at")?.map(from_millis),
        metadata,
        result: json("result")?,
        worker_id: text("worker_id").map(str::to_owned),
        cancel_requested: text("cancel_requested") == Some("1"),
        group: text("group").map(str::to_owned),
        cost: uint("cost", u64::from(queue_core::backend::MAX_COST))?
            .filter(|c| *c > 1)
            .map(|c| c as u32),
        replaced: count("replaced")?,
        sequence: text("sequence").map(str::to_owned),
        after,
        parent,
        child_policy,
        children,
        attempts: text("attempts").map(attempts).unwrap_or_default(),
    })
}

/// One unsuccessful attempt as the scripts store it (`appended_attempt` in the prelude).
#[derive(serde::Deserialize)]
struct StoredAttempt {
    a: u32,
    s: Option<i64>,
    e: i64,
    w: Option<String>,
    x: Option<String>,
}

/// The `attempts` field: a history is shown, never acted on, so a damaged one reads as
/// empty rather than failing the job (the next unsuccessful attempt starts it again).
fn attempts(v: &str) -> Vec<queue_core::Attempt> {
    serde_json::from_str::<Vec<StoredAttempt>>(v)
        .map(|list| {
            list.into_iter()
                .map(|a| queue_core::Attempt {
                    attempt: a.a,
                    started_at: a.s.map(from_millis),
                    ended_at: from_millis(a.e),
                    worker_id: a.w,
                    error: a.x,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Fields {
        [
            ("task", "t".into()),
            ("payload", "{\"a\":1}".into()),
            ("status", "queued".into()),
            ("priority", "high".into()),
            ("progress", "5".into()),
            ("retry_count", "1".into()),
            ("max_retries", "3".into()),
            ("created_at", "1700000000000".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    #[test]
    fn decodes_a_good_record() {
        let r = decode(Some(JobId::new()), &good()).unwrap();
        assert_eq!(
            (r.status, r.priority, r.progress, r.retry_count),
            (JobStatus::Queued, Priority::High, 5, 1)
        );
        assert_eq!(r.payload.as_str(), "{\"a\":1}");
    }

    #[test]
    fn the_id_is_the_keys() {
        let f = good();
        let key_id = JobId::new();
        assert_eq!(decode(Some(key_id), &f).unwrap().job_id, key_id);
        let err = decode(None, &f).unwrap_err().to_string();
        assert!(err.contains("field `job_id` is missing"), "{err}");
    }

    #[test]
    fn names_the_bad_field() {
        for (field, value, expect) in [
            (
                "retry_count",
                Some("abc"),
                "field `retry_count` is not an integer: \"abc\"",
            ),
            ("status", Some("zzz"), "field `status` is not a status"),
            ("task", None, "field `task` is missing"),
            ("payload", Some("{oops"), "field `payload` is not JSON"),
            ("progress", Some("250"), "field `progress` is out of range"),
            (
                "metadata",
                Some("[1]"),
                "field `metadata` is not a JSON object",
            ),
        ] {
            let mut f = good();
            match value {
                Some(v) => f.insert(field.into(), v.into()),
                None => f.remove(field),
            };
            let err = decode(Some(JobId::new()), &f).unwrap_err().to_string();
            assert!(err.contains(expect), "{field}: {err}");
            assert!(err.starts_with("corrupt data: job record "), "{err}");
        }
    }
}
