//! The job the producer, the worker and the web service share: one book to process.

use serde::{Deserialize, Serialize};

/// What a producer enqueues and the worker's handler decodes: its task name, its unique key
/// (the book) and its three stages are declared once, here.
#[derive(Clone, Debug, Serialize, Deserialize, dcs_queue::Job)]
#[job(name = "process_book", stages(read = 1, summarize = 2, index = 1))]
pub(crate) struct ProcessBook {
    /// The book's id; also the job's unique key (one active job per book).
    #[job(unique_key)]
    pub(crate) book_id: String,
    /// Its title.
    pub(crate) title: String,
    /// How long each of its three stages takes, in milliseconds (a stand-in for real work).
    #[serde(default = "default_stage_ms")]
    pub(crate) stage_ms: u64,
}

fn default_stage_ms() -> u64 {
    200
}
