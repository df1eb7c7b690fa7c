//! A book: the payload of `process_book`, its job types and stages, the sample books, the
//! pipeline's settings, and reading and writing a book's files.

use std::{
    path::{Path, PathBuf},
    sync::LazyLock,
    time::Duration,
};

use dcs_queue::{Job, JobError, Stages};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The payload of `process_book`. Its result is the book's summary (JSON: what it wrote,
/// its vocabulary size, the stages that failed).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, Job)]
#[job(name = "process_book", output = serde_json::Value, schema)]
pub struct ProcessBook {
    /// The book: the job's unique key (a book being processed is not queued twice).
    #[job(unique_key)]
    pub book_id: String,
    /// Its publisher: the job's group (publishers share the workers fairly).
    #[job(group)]
    pub publisher_id: String,
    /// Which stages run.
    pub job_type: JobType,
    /// A plain-text file; one of the bundled samples when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Which stages a job runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobType {
    /// Every stage.
    Full,
    /// Text extraction and segmentation.
    TextOnly,
    /// The vocabulary list (and the text it comes from).
    VocabularyOnly,
    /// Audio for the vocabulary (and what it needs).
    AudioOnly,
    /// Split into one `process_chapter` job per chapter, run in parallel, merged by this
    /// job once they all ended (a flow: see [`crate::chapters_flow`]).
    Chapters,
}

impl JobType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::TextOnly => "text_only",
            Self::VocabularyOnly => "vocabulary_only",
            Self::AudioOnly => "audio_only",
            Self::Chapters => "chapters",
        }
    }

    /// The stages this job type runs, in order.
    pub fn stages(self) -> &'static [&'static str] {
        match self {
            Self::Full => &[
                "text_extraction",
                "segmentation",
                "topic_analysis",
                "vocabulary",
                "audio_generation",
            ],
            Self::TextOnly => &["text_extraction", "segmentation"],
            Self::VocabularyOnly => &["text_extraction", "vocabulary"],
            Self::AudioOnly => &["text_extraction", "vocabulary", "audio_generation"],
            Self::Chapters => &["merge"],
        }
    }
}

/// The stage weights of the original story.
pub static BOOK_STAGES: LazyLock<Stages> = LazyLock::new(|| {
    Stages::new([
        ("text_extraction", 20),
        ("segmentation", 15),
        ("topic_analysis", 20),
        ("vocabulary", 20),
        ("audio_generation", 25),
    ])
    .expect("weights are valid")
});

/// The bundled sample books (written for this project): (name, text).
pub const SAMPLES: [(&str, &str); 4] = [
    (
        "the-lighthouse-keeper",
        include_str!("samples/the-lighthouse-keeper.txt"),
    ),
    ("river-of-glass", include_str!("samples/river-of-glass.txt")),
    (
        "the-clockmakers-daughter",
        include_str!("samples/the-clockmakers-daughter.txt"),
    ),
    (
        "letters-from-the-orchard",
        include_str!("samples/letters-from-the-orchard.txt"),
    ),
];

/// How the pipeline runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Pause per sub-step so progress is visible (0 runs at full speed).
    pub step_delay: Duration,
    /// Where outputs go (`<output_dir>/<book_id>/`).
    pub output_dir: PathBuf,
}

impl Settings {
    /// Waits the step delay (so progress is visible).
    pub(crate) async fn pace(&self) {
        if !self.step_delay.is_zero() {
            tokio::time::sleep(self.step_delay).await;
        }
    }

    /// `<output_dir>/<book_id>/`, created.
    pub(crate) async fn book_dir(&self, book_id: &str) -> Result<PathBuf, JobError> {
        let out_dir = self.output_dir.join(sanitize(book_id));
        tokio::fs::create_dir_all(&out_dir)
            .await
            .map_err(|e| JobError::retry(format!("cannot create {}: {e}", out_dir.display())))?;
        Ok(out_dir)
    }

    /// `DCS_BOOK_STEP_DELAY_MS` (default 40) and `DCS_BOOK_OUTPUT_DIR` (default
    /// `target/book-output`).
    pub fn from_env() -> Self {
        let ms = std::env::var("DCS_BOOK_STEP_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(40);
        Self {
            step_delay: Duration::from_millis(ms),
            output_dir: std::env::var_os("DCS_BOOK_OUTPUT_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("target/book-output")),
        }
    }
}

pub(crate) async fn read_source(job: &ProcessBook) -> Result<String, JobError> {
    match &job.source {
        Some(path) => tokio::fs::read_to_string(path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    JobError::permanent(format!("source file {path} does not exist"))
                }
                std::io::ErrorKind::InvalidData => {
                    JobError::permanent(format!("source file {path} is not UTF-8 text"))
                }
                _ => JobError::retry(format!("cannot read {path}: {e}")),
            }),
        None => {
            let pick = job.book_id.bytes().map(usize::from).sum::<usize>() % SAMPLES.len();
            Ok(SAMPLES[pick].1.to_owned())
        }
    }
}

pub(crate) async fn write(path: &Path, content: &str) -> Result<(), JobError> {
    tokio::fs::write(path, content)
        .await
        .map_err(|e| JobError::retry(format!("cannot write {}: {e}", path.display())))
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
