//! `queuectl partitions [--resize N]`: a Redis queue's layout, partition by partition.

use super::*;

pub(super) async fn partitions(cli: &Cli, cfg: &QueueConfig, resize: Option<u32>) -> Result<()> {
    if cli.database_url.is_some() {
        return Err(queue_core::Error::config(
            "partitions are a Redis layout: a Postgres queue has none",
        ));
    }
    // `partitioned(1)` keeps a stored layout and writes none where there is none.
    let queue = redis_backend(cfg).await?.partitioned(1).await?;
    let layout = match resize {
        Some(n) => queue.resize(n).await?,
        None => queue.layout(),
    };
    let stats = queue.partition_stats().await?;
    let tags = queue.partition_tags();
    if cli.json {
        let parts: Vec<_> = stats
            .iter()
            .zip(&tags)
            .enumerate()
            .map(|(i, (s, tag))| json!({ "partition": i, "tag": tag, "new_jobs": (i as u32) < layout.partitions, "stats": s }))
            .collect();
        output::json(
            &json!({ "partitions": layout.partitions, "span": layout.span, "parts": parts }),
        );
    } else {
        println!(
            "new jobs go to {} partition(s); {} may hold jobs",
            layout.partitions, layout.span
        );
        println!(
            "{:<4} {:<28} {:>9} {:>9} {:>11} {:>9}",
            "", "hash tag", "queued", "running", "finished", "total"
        );
        for (i, (s, tag)) in stats.iter().zip(&tags).enumerate() {
            let finished = s.completed + s.failed + s.partial + s.cancelled;
            let drains = if (i as u32) < layout.partitions {
                ""
            } else {
                " (draining)"
            };
            println!(
                "p{i:<3} {tag:<28} {:>9} {:>9} {:>11} {:>9}{drains}",
                s.queued, s.processing, finished, s.total
            );
        }
    }
    Ok(())
}
