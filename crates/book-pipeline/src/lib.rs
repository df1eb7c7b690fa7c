//! The book pipeline (SPEC §3): task `process_book`, payload `{book_id, publisher_id,
//! job_type, source?}`, five weighted stages over a plain-text book. Text extraction (20),
//! segmentation (15), topic analysis (20) and vocabulary (20) are critical; audio generation
//! (25) speaks the vocabulary with `espeak-ng` and is not: without it the job ends `partial`,
//! saying why. Outputs go to `DCS_BOOK_OUTPUT_DIR` (default `target/book-output`).

mod pipeline;
mod text;

pub use pipeline::{BOOK_STAGES, JobType, ProcessBook, SAMPLES, Settings, process_book, run};
