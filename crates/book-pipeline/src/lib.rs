//! The book pipeline (SPEC §3): task `process_book`, payload `{book_id, publisher_id,
//! job_type, source?}`, five weighted stages over a plain-text book. Text extraction (20),
//! segmentation (15), topic analysis (20) and vocabulary (20) are critical; audio generation
//! (25) speaks the vocabulary with `espeak-ng` and is not: without it the job ends `partial`,
//! saying why. Outputs go to `DCS_BOOK_OUTPUT_DIR` (default `target/book-output`).
//!
//! Job type `chapters` is a flow: [`chapters_flow`] splits the book into one
//! `process_chapter` job per chapter; the book's own job runs once they all ended and
//! merges their results.

mod book;
mod chapters;
mod pipeline;
mod text;

pub use book::{BOOK_STAGES, JobType, ProcessBook, SAMPLES, Settings};
pub use chapters::{ChapterResult, ProcessChapter, chapters_flow, process_chapter, run_chapter};
pub use pipeline::{process_book, run};
