//! The scripts' protocol, typed: what each script is sent and what it answers. One place
//! for the positional argument lists (their order is documented at the top of each
//! `scripts/*.lua`).

use std::time::Duration;

use queue_core::backend::{
    ClaimRequest, Ending, FlatJob, Millis, Outcome, WorkerBeat, duration_ms, to_millis,
};
use queue_core::{ChildPolicy, JobId, KeyMode, LeaseToken, Limits, NewJob, QueueConfig};
use redis::Value;

use crate::keys::Keys;

/// Fields of a job hash, as returned by HGETALL.
pub(crate) type Fields = std::collections::HashMap<String, String>;

/// A value as a string (bulk, simple, integer or double).
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Double(d) => Some(d.to_string()),
        _ => None,
    }
}

/// A value as an integer.
pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Double(d) => Some(*d as i64),
        other => text(other)?.parse::<f64>().ok().map(|f| f as i64),
    }
}

/// A value as a list (nil is empty).
pub(crate) fn array(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) | Value::Set(items) => items,
        Value::Nil => Vec::new(),
        other => vec![other],
    }
}

/// A flat `[field, value, ...]` array (or a map) as fields.
pub(crate) fn to_fields(v: Value) -> Fields {
    match v {
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect(),
        v => array(v)
            .chunks(2)
            .filter_map(|c| Some((text(c.first()?)?, text(c.get(1)?)?)))
            .collect(),
    }
}

/// Pairs of a flat reply (`WITHSCORES`), in order (a map would lose the order).
pub(crate) fn to_pairs(v: Value) -> Vec<(String, String)> {
    array(v)
        .chunks(2)
        .filter_map(|c| Some((text(c.first()?)?, text(c.get(1)?)?)))
        .collect()
}

/// A job's lease as the `leases` hash holds it:
/// `token|expires|lease_ms|started|seq|cancel|claim|worker`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LeaseEntry {
    pub(crate) token: String,
    pub(crate) expires: Millis,
    pub(crate) started: Millis,
    pub(crate) cancel: bool,
    pub(crate) worker: String,
}

impl LeaseEntry {
    pub(crate) fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.splitn(8, '|');
        let token = parts.next()?.to_owned();
        let expires = parts.next()?.parse().ok()?;
        let _lease_ms = parts.next()?;
        let started = parts.next()?.parse().ok()?;
        let _seq = parts.next()?;
        // '0' or '1', then the job's group when it has one.
        let cancel = parts.next()?.starts_with('1');
        let _claim = parts.next()?;
        let worker = parts.next()?.to_owned();
        Some(Self {
            token,
            expires,
            started,
            cancel,
            worker,
        })
    }
}

/// A lease a claim took: `{id, token, started, expires, cancel}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claimed {
    pub(crate) id: String,
    pub(crate) token: LeaseToken,
    pub(crate) started: Millis,
    pub(crate) expires: Millis,
    pub(crate) cancel: bool,
    /// The job's record as the claim read it: its fields, or `None` when the key holds
    /// something other than a hash.
    pub(crate) record: Option<Fields>,
}

/// The leases of a claim reply.
pub(crate) fn claimed(v: Value) -> Vec<Claimed> {
    array(v)
        .into_iter()
        .filter_map(|item| {
            let mut parts = array(item).into_iter();
            let mut next = || parts.next();
            Some(Claimed {
                id: text(&next()?)?,
                token: LeaseToken::new(text(&next()?)?),
                started: int(&next()?)?,
                expires: int(&next()?)?,
                cancel: int(&next()?)? == 1,
                record: match next()? {
                    v @ Value::Array(_) => Some(to_fields(v)),
                    _ => None,
                },
            })
        })
        .collect()
}

/// The arguments of a claim (also the tail of a finish that claims the next job).
pub(crate) fn claim_args(req: &ClaimRequest) -> [String; 5] {
    [
        req.worker.as_str().to_owned(),
        req.id.to_string(),
        LeaseToken::generate().as_str().to_owned(),
        duration_ms(req.lease).to_string(),
        req.size().to_string(),
    ]
}

/// `enqueue`: the job keys (and history keys) and the argument list of a batch.
pub(crate) fn enqueue_args(
    keys: &Keys,
    config: &QueueConfig,
    jobs: &[(usize, NewJob, JobId)],
    first_key: usize,
) -> (Vec<String>, Vec<String>) {
    let mut dynamic = Vec::with_capacity(jobs.len() * 2);
    let mut args = Vec::with_capacity(1 + jobs.len() * JOB_ARGS);
    args.push(jobs.len().to_string());
    for (_, job, id) in jobs {
        job_args(keys, config, job, *id, first_key, &mut dynamic, &mut args);
    }
    (dynamic, args)
}

/// `flow`: the arguments of a flow (`target` None) or of children added to `target`: per
/// job the `JOB_ARGS` values of an enqueue, then its parent's 1-based number in `jobs` ('' for a
/// top job), its policy ('' for the default) and how many children it has.
pub(crate) fn flow_args(
    keys: &Keys,
    config: &QueueConfig,
    jobs: &[(FlatJob, JobId)],
    target: Option<JobId>,
    first_key: usize,
) -> (Vec<String>, Vec<String>) {
    let mut dynamic = Vec::with_capacity(1 + jobs.len() * 2);
    let mut args = Vec::with_capacity(2 + jobs.len() * (JOB_ARGS + 3));
    args.push(jobs.len().to_string());
    args.push(target.map(|t| t.to_string()).unwrap_or_default());
    if let Some(t) = target {
        dynamic.push(keys.job(t));
    }
    for (flat, id) in jobs {
        job_args(
            keys,
            config,
            &flat.job,
            *id,
            first_key,
            &mut dynamic,
            &mut args,
        );
        args.extend([
            flat.parent.map(|i| (i + 1).to_string()).unwrap_or_default(),
            if flat.policy == ChildPolicy::default() {
                String::new()
            } else {
                flat.policy.as_str().to_owned()
            },
            flat.children.to_string(),
        ]);
    }
    (dynamic, args)
}

/// How many values `check_new` and `create_new` (prelude `jobs.lua`, `JOB_ARGS`) read for
/// one job.
const JOB_ARGS: usize = 16;

/// The `JOB_ARGS` values `check_new` and `create_new` (prelude.lua) read for one job; its
/// keys are pushed on `dynamic` (which starts at KEYS[first_key + 1]).
fn job_args(
    keys: &Keys,
    config: &QueueConfig,
    job: &NewJob,
    id: JobId,
    first_key: usize,
    dynamic: &mut Vec<String>,
    args: &mut Vec<String>,
) {
    let o = &job.options;
    dynamic.push(keys.job(id));
    let job_key = first_key + dynamic.len();
    let history_key = match &o.unique_key {
        Some(k) => {
            dynamic.push(keys.unique(k));
            first_key + dynamic.len()
        }
        None => 0,
    };
    args.extend([
        id.to_string(),
        job.task.clone(),
        job.payload.as_str().to_owned(),
        o.unique_key.clone().unwrap_or_default(),
        o.priority
            .unwrap_or(config.default_priority)
            .band()
            .to_string(),
        o.delay.map(duration_ms).unwrap_or(0).to_string(),
        o.max_retries.unwrap_or(config.max_retries).to_string(),
        o.timeout
            .map(|t| duration_ms(t).to_string())
            .unwrap_or_default(),
        if o.metadata.is_empty() {
            String::new()
        } else {
            serde_json::Value::Object(o.metadata.clone()).to_string()
        },
        job_key.to_string(),
        history_key.to_string(),
        if o.job_id.is_some() { "1" } else { "0" }.to_owned(),
        o.group.clone().unwrap_or_default(),
        o.cost
            .filter(|c| *c != 1)
            .map(|c| c.to_string())
            .unwrap_or_default(),
        match o.key_mode {
            KeyMode::Refuse => String::new(),
            KeyMode::Debounce(_) => "debounce".to_owned(),
            KeyMode::Throttle(window) => format!("throttle:{}", duration_ms(window)),
            KeyMode::KeepLatest => "keep_latest".to_owned(),
            KeyMode::ReplaceRunning => "replace_running".to_owned(),
        },
        o.sequence.clone().unwrap_or_default(),
    ]);
}

/// `finish`: the argument list of a group of endings (the job keys are sent in the same
/// order).
pub(crate) fn finish_args(
    endings: &[Ending],
    limits: &Limits,
    next: Option<&ClaimRequest>,
    accepted_before: bool,
) -> Vec<String> {
    let mut args = finish_args_raw(
        endings.iter().map(|e| {
            (
                e.lease.job_id.to_string(),
                &e.lease.token,
                outcome_parts(e.outcome.clone(), limits),
            )
        }),
        next,
    );
    if accepted_before && next.is_some() {
        // An earlier step of the same call accepted an ending: claim whatever this one does.
        args[1] = "2".into();
    }
    args
}

/// The wire form of an outcome: kind, error, result JSON, capped retry or snooze delay in ms.
pub(crate) struct OutcomeParts {
    pub(crate) kind: &'static str,
    pub(crate) error: String,
    pub(crate) result: String,
    pub(crate) delay_ms: Millis,
}

fn outcome_parts(outcome: Outcome, limits: &Limits) -> OutcomeParts {
    let outcome = limits.bound_outcome(outcome);
    let kind = outcome.kind().as_str();
    let (error, result, delay) = match outcome {
        Outcome::Completed { result } => (String::new(), result, Duration::ZERO),
        Outcome::Partial { result, error } => (error, result, Duration::ZERO),
        Outcome::Retry { error, delay } => (error, None, delay),
        Outcome::Failed { error } => (error, None, Duration::ZERO),
        Outcome::Snoozed { delay } => (String::new(), None, delay),
        Outcome::RateLimited { retry_after } => (String::new(), None, retry_after),
        Outcome::Cancelled | Outcome::Released => (String::new(), None, Duration::ZERO),
    };
    OutcomeParts {
        kind,
        error,
        result: result.map(|r| r.to_string()).unwrap_or_default(),
        delay_ms: duration_ms(limits.cap_delay(delay)),
    }
}

/// `finish` failing a job whose record cannot be read.
pub(crate) fn corrupt_args(id: &str, token: &LeaseToken, message: String) -> Vec<String> {
    let parts = OutcomeParts {
        kind: "corrupt",
        error: message,
        result: String::new(),
        delay_ms: 0,
    };
    finish_args_raw(std::iter::once((id.to_owned(), token, parts)), None)
}

fn finish_args_raw<'a>(
    endings: impl ExactSizeIterator<Item = (String, &'a LeaseToken, OutcomeParts)>,
    next: Option<&ClaimRequest>,
) -> Vec<String> {
    let mut args = Vec::with_capacity(7 + endings.len() * 6);
    args.push(endings.len().to_string());
    match next {
        Some(req) => {
            args.push("1".into());
            args.extend(claim_args(req));
        }
        None => args.extend([
            "0".into(),
            String::new(),
            "0".into(),
            String::new(),
            "0".into(),
            "0".into(),
        ]),
    }
    for (id, token, o) in endings {
        args.extend([
            id,
            token.as_str().to_owned(),
            o.kind.to_owned(),
            o.error,
            o.result,
            o.delay_ms.to_string(),
        ]);
    }
    args
}

/// What `finish` answered: each ending's status (`lost`, or `!<why>` for a refusal), and
/// the leases it claimed.
pub(crate) fn finished(reply: Value) -> (Vec<String>, Vec<Claimed>, Option<Millis>) {
    let mut it = array(reply).into_iter();
    let statuses = it
        .next()
        .map(array)
        .unwrap_or_default()
        .iter()
        .map(|v| text(v).unwrap_or_default())
        .collect();
    let claimed = claimed(it.next().unwrap_or(Value::Nil));
    (statuses, claimed, it.next().as_ref().and_then(int))
}

/// `heartbeat`: the argument list.
pub(crate) fn heartbeat_args(
    beat: &WorkerBeat,
    leases: &[queue_core::backend::LeaseRef],
) -> Vec<String> {
    let mut args = vec![
        beat.worker.as_str().to_owned(),
        duration_ms(beat.lease).to_string(),
        (3 * duration_ms(beat.interval)).to_string(),
        beat.host.clone(),
        beat.pid.to_string(),
        beat.concurrency.to_string(),
        to_millis(beat.started_at).to_string(),
        beat.version.clone(),
        serde_json::to_string(&beat.tasks).unwrap_or_default(),
        if beat.schemas.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&beat.schemas).unwrap_or_default()
        },
        leases.len().to_string(),
    ];
    for lease in leases {
        args.push(lease.job_id.to_string());
        args.push(lease.token.as_str().to_owned());
    }
    args
}

/// 1-based positions in a heartbeat reply.
pub(crate) fn positions(v: Option<Value>) -> Vec<usize> {
    v.map(array)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| usize::try_from(int(p)?).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_entries_parse_with_any_worker_id() {
        let e = LeaseEntry::parse("t:1|2000|30000|1000|7|1|123|host|with|bars").unwrap();
        assert_eq!(e.token, "t:1");
        assert_eq!((e.expires, e.started, e.cancel), (2000, 1000, true));
        assert_eq!(e.worker, "host|with|bars");
        assert!(LeaseEntry::parse("garbage").is_none());
    }
}
