//! Ordered sequences: jobs of one sequence start strictly in enqueue order, one at a time,
//! retries included, while different sequences run in parallel (River Pro sequences, Oban
//! Pro chains). Built on chains ([`crate::backend::released_due`]): each new member is
//! chained behind the sequence's **tail** (its newest unfinished member) and becomes the
//! tail. A member that retries is still unfinished, so the next one keeps waiting; a member
//! that ends (completed, partial, failed for good, cancelled) releases the next.
//!
//! The rules every engine follows where a chain meets an ending:
//! - A job that ends while it waits (a cancelled member) hands the job waiting for it to
//!   the job it waited for: the sequence's order holds around the gap.
//! - When the tail ends, the job it waited for (if any) becomes the tail; else the
//!   sequence has no tail and its next member is placed at once.
//! - A member retried by hand joins the back of its sequence (chained behind the tail,
//!   when there is one, and becomes the tail): it starts after every member enqueued
//!   before the retry.
//!
//! ```
//! # use queue_core::{JobStore, NewJob};
//! # async fn demo(queue: &impl JobStore) -> queue_core::Result<()> {
//! // Webhook events of one account start in the order they arrived.
//! let first = queue.enqueue(NewJob::new("apply", &1)?.sequence("account-7")).await?;
//! let second = queue.enqueue(NewJob::new("apply", &2)?.sequence("account-7")).await?;
//! assert_eq!(second.after, Some(first.job_id)); // waits for the first to end
//! # Ok(()) }
//! ```

use crate::{Error, KeyMode, NewJob, Result};

/// The longest sequence name, in bytes.
pub const MAX_SEQUENCE_BYTES: usize = 128;

impl NewJob {
    /// Puts the job in the ordered sequence `name`: it starts after every job of the
    /// sequence enqueued before it has ended (a retrying one has not), one at a time. The
    /// answer names the member it waits for (`after`), if any.
    pub fn sequence(mut self, name: impl Into<String>) -> Self {
        self.options.sequence = Some(name.into());
        self
    }
}

/// What a sequenced job must satisfy (a part of [`NewJob::validate`]): a name of 1 to
/// [`MAX_SEQUENCE_BYTES`] bytes, and no key mode (a keep-latest or debounced job would
/// change places in the sequence).
pub(crate) fn check_sequence(job: &NewJob) -> Result<()> {
    let Some(name) = &job.options.sequence else {
        return Ok(());
    };
    if name.is_empty() {
        return Err(Error::invalid("sequence name is empty"));
    }
    if name.len() > MAX_SEQUENCE_BYTES {
        return Err(Error::invalid(format!(
            "sequence name is longer than {MAX_SEQUENCE_BYTES} bytes"
        )));
    }
    if job.options.key_mode != KeyMode::Refuse {
        return Err(Error::invalid(
            "a job in a sequence takes no key mode: its place is its enqueue's",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_at_their_limit() {
        let job = |name: &str| NewJob::new("t", &1).unwrap().sequence(name);
        job(&"s".repeat(MAX_SEQUENCE_BYTES)).validate().unwrap();
        let past = job(&"s".repeat(MAX_SEQUENCE_BYTES + 1))
            .validate()
            .unwrap_err();
        assert!(past.to_string().contains("longer than 128 bytes"), "{past}");
        assert!(job("").validate().is_err());
        let keyed = job("s")
            .unique_key("k")
            .keep_latest()
            .validate()
            .unwrap_err();
        assert!(keyed.to_string().contains("takes no key mode"), "{keyed}");
    }
}
