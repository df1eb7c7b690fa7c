//! The `chapters` job type: a book split into one `process_chapter` job per section, run in
//! parallel, and merged by the book's own job once every chapter ended (a flow).

use std::collections::BTreeMap;

use dcs_queue::{Completion, Flow, Job, JobContext, JobError, JobStatus, NewJob, Stages};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    book::{self, ProcessBook, Settings},
    text,
};

/// The payload of `process_chapter`: one section of a book. A chapter that fails leaves a
/// gap its book's merge reports (`on_failure = "continue"`).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, Job)]
#[job(name = "process_chapter", output = ChapterResult, on_failure = "continue", schema)]
pub struct ProcessChapter {
    /// The book it belongs to.
    pub book_id: String,
    /// Its place in the book (0-based).
    pub index: usize,
    /// Its title.
    pub title: String,
    /// Its text.
    pub text: String,
}

/// What a chapter job returns (the merge reads it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChapterResult {
    /// Its place in the book.
    pub index: usize,
    /// Its title.
    pub title: String,
    /// Its word count.
    pub words: usize,
    /// Its vocabulary: word -> count.
    pub vocabulary: BTreeMap<String, usize>,
}

/// The flow of a `chapters` book: the book's job (its unique key the `book_id`, its group
/// the publisher) waits on one `process_chapter` job per section of its text, then merges
/// them. A chapter that fails leaves a gap the merge reports (`ChildPolicy::Continue`):
/// the book ends `partial`, saying which chapters are missing.
pub async fn chapters_flow(book: &ProcessBook) -> Result<Flow, dcs_queue::Error> {
    let raw = book::read_source(book)
        .await
        .map_err(|e| dcs_queue::Error::invalid(e.to_string()))?;
    let sections = text::segment(&text::normalise(&raw));
    let children = sections.into_iter().enumerate().map(|(index, section)| {
        let chapter = ProcessChapter {
            book_id: book.book_id.clone(),
            index,
            title: section.title,
            text: section.text,
        };
        // A chapter counts against its book's publisher, as the book does.
        Flow::of(&chapter).map(|mut flow| {
            flow.job = flow.job.group(&book.publisher_id);
            flow
        })
    });
    // Its unique key (the book) and group (the publisher) come from its type.
    let parent = NewJob::typed(book)?;
    Ok(Flow::new(parent).children(children.collect::<Result<Vec<_>, _>>()?))
}

/// The handler of `process_chapter`, with [`Settings::from_env`].
pub async fn process_chapter(
    job: ProcessChapter,
    ctx: JobContext,
) -> Result<ChapterResult, JobError> {
    run_chapter(&Settings::from_env(), job, ctx).await
}

/// Counts one chapter's words and vocabulary.
pub async fn run_chapter(
    settings: &Settings,
    job: ProcessChapter,
    ctx: JobContext,
) -> Result<ChapterResult, JobError> {
    let stages = Stages::new([("words", 50), ("vocabulary", 50)]).map_err(JobError::permanent)?;
    let report = ctx.stages(stages);
    report.start("words").await;
    let words = text::words(&job.text);
    settings.pace().await;
    report.start("vocabulary").await;
    let vocabulary = text::vocabulary(words.iter()).into_iter().collect();
    settings.pace().await;
    report.complete("vocabulary").await;
    Ok(ChapterResult {
        index: job.index,
        title: job.title,
        words: words.len(),
        vocabulary,
    })
}

/// The merge: the book's job once its chapters ended. Writes `chapters.json` and
/// `vocabulary.tsv`; `partial` when a chapter is missing.
pub(crate) async fn merge(
    settings: &Settings,
    job: &ProcessBook,
    ctx: &JobContext,
) -> Result<Completion, JobError> {
    let report = ctx.stages(Stages::new([("merge", 100)]).map_err(JobError::permanent)?);
    report.start("merge").await;
    let kids = ctx.children().await.map_err(JobError::retry)?;
    let mut chapters: Vec<ChapterResult> = ctx
        .child_results::<ChapterResult>()
        .await
        .map_err(JobError::permanent)?
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    chapters.sort_by_key(|c| c.index);
    let mut vocabulary: BTreeMap<String, usize> = BTreeMap::new();
    for chapter in &chapters {
        for (word, n) in &chapter.vocabulary {
            *vocabulary.entry(word.clone()).or_default() += n;
        }
    }
    let mut ranked: Vec<(&String, &usize)> = vocabulary.iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let out_dir = settings.book_dir(&job.book_id).await?;
    let outline: Vec<_> = chapters
        .iter()
        .map(|c| json!({ "index": c.index, "title": c.title, "words": c.words }))
        .collect();
    book::write(
        &out_dir.join("chapters.json"),
        &serde_json::to_string_pretty(&outline).expect("serializes"),
    )
    .await?;
    let tsv: String = ranked.iter().map(|(w, c)| format!("{w}\t{c}\n")).collect();
    book::write(
        &out_dir.join("vocabulary.tsv"),
        &format!("word\tcount\n{tsv}"),
    )
    .await?;
    report.complete("merge").await;
    let missing: Vec<String> = kids
        .iter()
        .filter(|k| k.status != JobStatus::Completed)
        .map(|k| format!("{} ({})", k.job_id, k.status))
        .collect();
    let summary = json!({
        "book_id": job.book_id,
        "publisher_id": job.publisher_id,
        "job_type": job.job_type,
        "chapters": chapters.len(),
        "words": chapters.iter().map(|c| c.words).sum::<usize>(),
        "vocabulary_size": vocabulary.len(),
        "output_dir": out_dir,
    });
    if missing.is_empty() {
        Ok(Completion::with_result(summary))
    } else {
        Ok(Completion::partial(
            format!("chapters missing: {}", missing.join(", ")),
            summary,
        ))
    }
}
