//! The umbrella trait and typed conveniences.

use std::{fmt, sync::Arc};

use async_trait::async_trait;

use crate::backend::Broker;
use crate::{Job, JobRecord, JobStore, NewJob, Result};

/// A complete backend: a [`JobStore`] and a [`Broker`] on one queue. `Display` names it
/// for logs (credentials redacted).
pub trait Backend: JobStore + Broker + fmt::Display {}

impl<T: JobStore + Broker + fmt::Display + ?Sized> Backend for T {}

/// What the worker and the binaries hold.
pub type SharedBackend = Arc<dyn Backend>;

/// Typed conveniences on every [`JobStore`]. Implemented for all stores; do not implement
/// it yourself.
#[async_trait]
pub trait JobStoreExt: JobStore {
    /// Enqueues a typed job under its `Job::NAME` with the queue's defaults (use
    /// [`NewJob::typed`] to set options).
    async fn enqueue_job<J: Job>(&self, job: &J) -> Result<JobRecord> {
        self.enqueue(NewJob::typed(job)?).await
    }

    /// Job `id` with its descendants (a flow's tree, or a batch), each with its status and
    /// progress; at most `limit` jobs are read (the rest are counted in `truncated`, from
    /// each parent's counts), page by page of each parent's children.
    async fn flow_tree(&self, id: crate::JobId, limit: usize) -> Result<crate::FlowTree> {
        let root = self.get(id).await?;
        let mut read = 1usize;
        // Breadth first, so a truncated tree keeps its upper levels.
        let mut nodes = vec![(root, None::<usize>, 0u32)];
        let mut next = 0;
        while next < nodes.len() {
            if let Some(counts) = nodes[next].0.children {
                let id = nodes[next].0.job_id;
                let mut shown = 0u32;
                let mut query = crate::ListQuery::new().children_of(id).limit(1000);
                let mut more = true;
                while more && read < limit {
                    query.limit = (limit - read).clamp(1, 1000);
                    let page = self.list(&query).await?;
                    for kid in page.jobs {
                        read += 1;
                        shown += 1;
                        nodes.push((kid, Some(next), 0));
                    }
                    more = page.next_cursor.is_some();
                    query.cursor = page.next_cursor;
                }
                if more {
                    // Cut short: the rest, as the parent counts them.
                    nodes[next].2 = counts.total().saturating_sub(shown);
                }
            }
            next += 1;
        }
        // Built bottom up: every child comes after its parent.
        let mut built: Vec<Option<crate::FlowTree>> = nodes
            .iter()
            .map(|(job, _, truncated)| {
                Some(crate::FlowTree {
                    job: job.clone(),
                    children: Vec::new(),
                    truncated: *truncated,
                })
            })
            .collect();
        // Children arrive last first: each node's list is turned round once it is complete.
        for i in (1..nodes.len()).rev() {
            let mut tree = built[i].take().expect("built once");
            tree.children.reverse();
            let parent = nodes[i].1.expect("only the root has no parent");
            built[parent]
                .as_mut()
                .expect("a parent comes first")
                .children
                .push(tree);
        }
        let mut root = built[0].take().expect("the root");
        root.children.reverse();
        Ok(root)
    }
}

impl<T: JobStore + ?Sized> JobStoreExt for T {}
