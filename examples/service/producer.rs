//! A minimal producer: enqueues books and, with `--wait`, follows them until they end.
//!
//! ```sh
//! export DCS_REDIS_URL=redis://127.0.0.1:6379
//! cargo run -p queue-examples --example worker &            # one or more, anywhere
//! cargo run -p queue-examples --example producer -- --count 5 --wait
//! ```
//!
//! Exits 0 when every book it waited for is `completed`, 1 otherwise.

#[path = "book.rs"]
mod book;

use std::time::Duration;

use anyhow::{Context, bail};
use book::ProcessBook;
use dcs_queue::{Error, JobStatus, prelude::*};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut count = 3usize;
    let mut stage_ms = 200u64;
    let mut wait = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--count" => count = args.next().context("--count N")?.parse()?,
            "--stage-ms" => stage_ms = args.next().context("--stage-ms MS")?.parse()?,
            "--wait" => wait = true,
            other => bail!("unknown argument {other:?} (use --count N, --stage-ms MS, --wait)"),
        }
    }

    let backend = RedisBackend::from_env().await?;
    let run = std::process::id();
    let mut ids = Vec::new();
    for n in 0..count {
        let book = ProcessBook {
            book_id: format!("book-{run}-{n}"),
            title: format!("Volume {n}"),
            stage_ms,
        };
        match backend.enqueue_job(&book).await {
            Ok(record) => {
                println!("enqueued {} ({})", record.job_id, book.book_id);
                ids.push(record.job_id);
            }
            Err(Error::AlreadyExists { job_id, .. }) => {
                println!("{} already has an active job: {job_id}", book.book_id);
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !wait {
        return Ok(());
    }

    let mut failed = 0;
    for id in ids {
        let record = loop {
            let record = backend.get(id).await?;
            if record.status.is_terminal() {
                break record;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        println!(
            "{id}: {} {}",
            record.status,
            record.error_message.as_deref().unwrap_or("")
        );
        failed += usize::from(record.status != JobStatus::Completed);
    }
    if failed > 0 {
        bail!("{failed} book(s) did not complete");
    }
    Ok(())
}
