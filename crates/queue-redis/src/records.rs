//! Records on Redis: reads of job records and of the index pages that list them.

use queue_core::backend::{Millis, encode_cursor, to_millis};
use queue_core::{Error, JobId, JobRecord, JobStatus, JobStore, Page, Result};
use redis::Value;

use crate::{
    RedisBackend,
    codec::{self, Fields},
    wire::{LeaseEntry, array, int, text, to_fields},
};

/// Records read per read script call.
pub(crate) const READ_BATCH: usize = 200;

/// A record as the read script found it.
pub(crate) enum Read {
    Missing,
    WrongType,
    Found(Fields, Option<LeaseEntry>),
}

pub(crate) fn invalid(
    id: JobId,
    status: Option<&Value>,
    event: queue_core::backend::Event,
) -> Error {
    match status
        .and_then(text)
        .and_then(|s| s.parse::<JobStatus>().ok())
    {
        Some(from) => Error::InvalidTransition { id, from, event },
        None => Error::corrupt(format!("job record {id}: field `status` is not a status")),
    }
}

impl RedisBackend {
    /// Records and leases of `ids`, read atomically per batch.
    pub(crate) async fn records(&self, ids: &[String]) -> Result<Vec<Read>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(READ_BATCH) {
            let keys: Vec<String> = chunk
                .iter()
                .map(|id| self.inner.keys.job_named(id))
                .collect();
            let mut args = vec![chunk.len().to_string()];
            args.extend(chunk.iter().cloned());
            let reply = self.run(&self.inner.scripts.read, &keys, args).await?;
            for item in array(reply) {
                let mut parts = array(item).into_iter();
                let fields = parts.next().unwrap_or(Value::Nil);
                let lease = parts
                    .next()
                    .as_ref()
                    .and_then(text)
                    .and_then(|l| LeaseEntry::parse(&l));
                out.push(match &fields {
                    Value::BulkString(b) if b == b"wrongtype" => Read::WrongType,
                    Value::SimpleString(s) if s == "wrongtype" => Read::WrongType,
                    _ => {
                        let f = to_fields(fields);
                        if f.is_empty() {
                            Read::Missing
                        } else {
                            Read::Found(f, lease)
                        }
                    }
                });
            }
        }
        Ok(out)
    }

    /// The records of those of `ids` that exist, read in `READ_BATCH` calls (a record not
    /// stored as a hash is left out, as a missing one).
    pub(crate) async fn found(&self, ids: &[JobId]) -> Result<Vec<JobRecord>> {
        let names: Vec<String> = ids.iter().map(JobId::to_string).collect();
        let mut out = Vec::new();
        for (id, read) in ids.iter().zip(self.records(&names).await?) {
            if let Read::Found(fields, lease) = read {
                out.push(crate::codec::decode_leased(
                    Some(*id),
                    &fields,
                    lease.as_ref(),
                )?);
            }
        }
        Ok(out)
    }

    pub(super) async fn is_active(&self, id: JobId) -> Result<bool> {
        match self.get(id).await {
            Ok(r) => Ok(r.status.is_active()),
            Err(Error::NotFound { .. } | Error::Corrupt { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Ids (with scores) of `indexes` merged, after `position`, newest first (one atomic
    /// read, `page.lua`).
    pub(super) async fn index_page(
        &self,
        indexes: &[String],
        position: Option<(Millis, JobId)>,
        n: usize,
    ) -> Result<Vec<(String, Millis)>> {
        let (at, after) = match position {
            Some((ms, id)) => (ms.to_string(), id.to_string()),
            None => (String::new(), String::new()),
        };
        let reply = self
            .run(
                &self.inner.scripts.page,
                indexes,
                vec![at, after, n.to_string()],
            )
            .await?;
        let flat = array(reply);
        Ok(flat
            .chunks(2)
            .filter_map(|pair| Some((text(pair.first()?)?, int(pair.get(1)?)?)))
            .collect())
    }

    pub(crate) fn decoded(id: &str, read: Read) -> Option<JobRecord> {
        match read {
            Read::Found(fields, lease) => {
                match codec::decode_leased(id.parse().ok(), &fields, lease.as_ref()) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(job_id = %id, error = %e, "skipping an unreadable record in a listing");
                        None
                    }
                }
            }
            Read::Missing | Read::WrongType => None,
        }
    }

    /// Processing jobs are indexed by lease expiry in `active` (bounded by the workers'
    /// concurrency), so their listing is sorted here.
    pub(super) async fn list_processing(
        &self,
        limit: usize,
        position: Option<(Millis, JobId)>,
    ) -> Result<Page> {
        let mut conn = self.conn();
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.inner.keys.active())
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        let mut jobs: Vec<JobRecord> = Vec::with_capacity(ids.len());
        for (id, read) in ids.iter().zip(self.records(&ids).await?) {
            if let Some(r) = Self::decoded(id, read).filter(|r| r.status == JobStatus::Processing) {
                jobs.push(r);
            }
        }
        let key = |r: &JobRecord| (to_millis(r.created_at), r.job_id);
        jobs.retain(|r| position.is_none_or(|p| key(r) < p));
        jobs.sort_by_key(|r| std::cmp::Reverse(key(r)));
        let next_cursor = (jobs.len() > limit).then(|| {
            jobs.truncate(limit);
            let last = jobs.last().expect("limit is at least 1");
            encode_cursor(to_millis(last.created_at), last.job_id)
        });
        Ok(Page { jobs, next_cursor })
    }
}
