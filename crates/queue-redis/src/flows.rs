//! A family of any size, a bounded step at a time: a parent's children read page by page
//! (`kids.lua`, a binary search to the cursor), and a cancel's cascade to a cancelled
//! job's descendants run in steps of `queue_core::backend::CANCEL_STEP` (`cascade.lua`).

use queue_core::backend::{Millis, encode_cursor};
use queue_core::{Error, JobId, Page, Result};

use crate::{
    RedisBackend,
    wire::{array, int, text},
};

impl RedisBackend {
    /// A page of `parent`'s children, oldest first (by creation, then id), after
    /// `position`: `limit` ids from `kids:<parent>`, then their records.
    pub(crate) async fn children_page(
        &self,
        parent: JobId,
        position: Option<(Millis, JobId)>,
        limit: usize,
    ) -> Result<Page> {
        let k = &self.inner.keys;
        let (ms, after) = match position {
            Some((ms, id)) => (ms.to_string(), id.to_string()),
            None => (String::new(), String::new()),
        };
        let reply = self
            .run(
                &self.inner.scripts.kids,
                &[k.job(parent), k.kids(parent)],
                vec![ms, after, (limit + 1).to_string()],
            )
            .await?;
        let mut parts = array(reply).into_iter();
        if parts.next().as_ref().and_then(int) != Some(1) {
            return Err(Error::NotFound { id: parent });
        }
        let raw = parts.next().map(array).unwrap_or_default();
        let mut entries: Vec<(String, Millis)> = raw
            .chunks(2)
            .filter_map(|pair| {
                let id = text(pair.first()?)?;
                let score = text(pair.get(1)?)?.parse::<f64>().ok()? as Millis;
                Some((id, score))
            })
            .collect();
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_cursor = more
            .then(|| entries.last())
            .flatten()
            .and_then(|(id, at)| Some(encode_cursor(*at, id.parse().ok()?)));
        let ids: Vec<String> = entries.iter().map(|(id, _)| id.clone()).collect();
        let jobs = ids
            .iter()
            .zip(self.records(&ids).await?)
            .filter_map(|(id, read)| Self::decoded(id, read))
            .collect();
        Ok(Page { jobs, next_cursor })
    }

    /// Runs the cancels' cascades to their end, one bounded step per call.
    pub(crate) async fn finish_cascades(&self) -> Result<()> {
        loop {
            let more = self
                .run(&self.inner.scripts.cascade, &[], Vec::new())
                .await?;
            if int(&more) != Some(1) {
                return Ok(());
            }
        }
    }
}
