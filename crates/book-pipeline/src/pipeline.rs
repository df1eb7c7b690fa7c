//! The `process_book` task: five weighted stages over a plain-text book.

use std::path::Path;

use dcs_queue::{Completion, JobError};
use dcs_queue::{JobContext, worker::StageReporter};
use serde_json::json;

use crate::{
    book::{BOOK_STAGES, JobType, ProcessBook, Settings, read_source, write},
    text,
};

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
