//! Chains: a job that waits for another job to end before it is placed
//! ([`crate::JobRecord::after`]). Keep-latest chains a key's next run behind the run in
//! progress ([`crate::KeyMode::KeepLatest`]).
//!
//! A chained job is queued but in no ready or delayed set: claims never see it. Every path
//! that ends a job (finish, lease expiry, cancel, a flow's cascade) reaches one point in
//! each engine, which places the job chained behind it ([`released_due`]). A chained job that
//! is cancelled no longer waits (the cancel's effect clears `after`), and its unique key
//! goes back to the job it waited for while that one is unfinished.
//!
//! ```
//! use queue_core::backend::released_due;
//!
//! // Released at 1,000 ms: a job due later waits among the delayed ones...
//! assert_eq!(released_due(Some(5_000), 1_000), Some(5_000));
//! // ...one due already (or without a due time) is ready at once.
//! assert_eq!(released_due(Some(500), 1_000), None);
//! assert_eq!(released_due(None, 1_000), None);
//! ```

use crate::clock::Millis;
use crate::{Error, JobId, Result};

/// Where a job that waited for another to end is placed when that one ended at `now`:
/// `Some(due)` while its `run_at` is still ahead (it waits among the delayed jobs), else
/// `None` (ready, at the back of its priority).
pub fn released_due(run_at: Option<Millis>, now: Millis) -> Option<Millis> {
    run_at.filter(|due| *due > now)
}

/// Refuses children for job `id` while it waits for `after` to end
/// ([`crate::JobStore::add_children`]): a chained job is placed when that one ends, while a
/// parent waits for its children instead; the two do not mix.
pub fn check_takes_children(id: JobId, after: Option<JobId>) -> Result<()> {
    match after {
        Some(ahead) => Err(Error::invalid(format!(
            "job {id} waits for job {ahead} to end (a sequence's member, or a keep-latest \
             key's waiting job): it takes no children"
        ))),
        None => Ok(()),
    }
}
