//! The `process_book` task: five weighted stages over a plain-text book.

use std::{
    path::{Path, PathBuf},
    sync::LazyLock,
    time::Duration,
};

use queue_core::{Completion, Job, JobError, Stages};
use queue_worker::{JobContext, StageReporter};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::text;

/// The payload of `process_book`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessBook {
    /// The book (also the job's unique key).
    pub book_id: String,
    /// Its publisher.
    pub publisher_id: String,
    /// Which stages run.
    pub job_type: JobType,
    /// A plain-text file; one of the bundled samples when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Job for ProcessBook {
    const NAME: &'static str = "process_book";
}

/// Which stages a job runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// The handler of `process_book`, with [`Settings::from_env`].
pub async fn process_book(job: ProcessBook, ctx: JobContext) -> Result<Completion, JobError> {
    run(&Settings::from_env(), job, ctx).await
}

/// Runs one book through its stages.
pub async fn run(
    settings: &Settings,
    job: ProcessBook,
    ctx: JobContext,
) -> Result<Completion, JobError> {
    if job.job_type == JobType::Chapters {
        return crate::chapters::merge(settings, &job, &ctx).await;
    }
    let pace = || settings.pace();
    let stages = BOOK_STAGES
        .subset(job.job_type.stages())
        .map_err(JobError::permanent)?;
    let report = ctx.stages(stages.clone());
    let out_dir = settings.book_dir(&job.book_id).await?;

    let mut failures = serde_json::Map::new();
    let mut summary = serde_json::Map::new();
    summary.insert("book_id".into(), json!(job.book_id));
    summary.insert("publisher_id".into(), json!(job.publisher_id));
    summary.insert("job_type".into(), json!(job.job_type));

    // text_extraction (critical)
    report.start("text_extraction").await;
    let raw = read_source(&job).await?;
    let lines: Vec<&str> = raw.lines().collect();
    let chunks = lines.len().div_ceil(10).max(1);
    for (i, _) in lines.chunks(chunks).enumerate() {
        report
            .progress("text_extraction", i + 1, lines.len().div_ceil(chunks))
            .await;
        pace().await;
    }
    let text = text::normalise(&raw);
    write(&out_dir.join("text.txt"), &text).await?;
    summary.insert("characters".into(), json!(text.chars().count()));
    report.complete("text_extraction").await;

    let sections = text::segment(&text);
    let section_words: Vec<Vec<String>> = sections.iter().map(|s| text::words(&s.text)).collect();

    if stages.weight("segmentation").is_some() {
        report.start("segmentation").await;
        for i in 0..sections.len() {
            report.progress("segmentation", i + 1, sections.len()).await;
            pace().await;
        }
        let json = serde_json::to_string_pretty(&sections).expect("sections serialize");
        write(&out_dir.join("sections.json"), &json).await?;
        summary.insert(
            "sections".into(),
            json!(sections.iter().map(|s| &s.title).collect::<Vec<_>>()),
        );
    }

    if stages.weight("topic_analysis").is_some() {
        report.start("topic_analysis").await;
        let mut topics = Vec::new();
        for (i, section) in sections.iter().enumerate() {
            topics.push(json!({"section": section.title, "keywords": text::top_keywords(&section_words, i, 5)}));
            report
                .progress("topic_analysis", i + 1, sections.len())
                .await;
            pace().await;
        }
        write(
            &out_dir.join("topics.json"),
            &serde_json::to_string_pretty(&topics).expect("serializes"),
        )
        .await?;
        summary.insert("topics".into(), json!(topics));
    }

    let mut vocabulary = Vec::new();
    if stages.weight("vocabulary").is_some() {
        report.start("vocabulary").await;
        for (i, _) in section_words.iter().enumerate() {
            report
                .progress("vocabulary", i + 1, section_words.len())
                .await;
            pace().await;
        }
        vocabulary = text::vocabulary(section_words.iter().flatten());
        let tsv: String = vocabulary
            .iter()
            .map(|(w, c)| format!("{w}\t{c}\n"))
            .collect();
        write(
            &out_dir.join("vocabulary.tsv"),
            &format!("word\tcount\n{tsv}"),
        )
        .await?;
        summary.insert("vocabulary_size".into(), json!(vocabulary.len()));
    }

    if stages.weight("audio_generation").is_some() {
        // Non-critical: without it the job ends `partial`, saying why.
        if let Err(why) = audio(&report, &vocabulary, &out_dir).await {
            failures.insert("audio_generation".into(), json!(why));
        } else {
            summary.insert("audio".into(), json!(out_dir.join("vocabulary.wav")));
        }
    }
    summary.insert("output_dir".into(), json!(out_dir));

    if failures.is_empty() {
        Ok(Completion::with_result(summary.into()))
    } else {
        let message = failures
            .iter()
            .map(|(stage, why)| format!("{stage} failed: {}", why.as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join("; ");
        summary.insert("failed_steps".into(), failures.into());
        Ok(Completion::partial(message, summary.into()))
    }
}

async fn audio(
    report: &StageReporter,
    vocabulary: &[(String, usize)],
    out_dir: &Path,
) -> Result<(), String> {
    report.start("audio_generation").await;
    let words: Vec<&str> = vocabulary
        .iter()
        .take(40)
        .map(|(w, _)| w.as_str())
        .collect();
    let wav = out_dir.join("vocabulary.wav");
    let spoken = words.join(", ");
    let result = tokio::task::spawn_blocking(move || {
        std::process::Command::new("espeak-ng")
            .arg("-w")
            .arg(&wav)
            .arg(&spoken)
            .output()
    })
    .await
    .map_err(|e| format!("speech task failed: {e}"))?;
    match result {
        Ok(out) if out.status.success() => {
            report.complete("audio_generation").await;
            Ok(())
        }
        Ok(out) => Err(format!(
            "espeak-ng exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err("espeak-ng is not installed".into())
        }
        Err(e) => Err(format!("espeak-ng could not start: {e}")),
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
