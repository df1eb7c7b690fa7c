//! One queue out of P partitions' answers: listings merged in the order each partition
//! lists in, counts added up, event streams merged with one resume point for all.

use std::cmp::Ordering;

use futures_util::StreamExt;
use queue_core::{
    EventStream, GroupList, GroupStats, JobEvent, ListQuery, Page, QueueStats, Result, Series,
    WorkerInfo,
};

use crate::RedisBackend;

/// Where `record` stands in the listing `query` asks for (its cursor's position).
fn position(query: &ListQuery, record: &queue_core::JobRecord) -> (i64, queue_core::JobId) {
    let cursor = query.cursor_after(record);
    ListQuery::default()
        .cursor(cursor)
        .position()
        .ok()
        .flatten()
        .unwrap_or((0, record.job_id))
}

/// Every partition's page of `query` merged into one page of the same query: the same
/// order (a parent's children oldest first, every other listing newest first), the first
/// `limit`, and a cursor that every partition resumes from (a position, not a partition's
/// offset), so pages are stable however the partitions' jobs interleave.
pub(super) fn pages(query: &ListQuery, pages: Vec<Page>) -> Page {
    let more = pages.iter().any(|p| p.next_cursor.is_some());
    let mut jobs: Vec<_> = pages.into_iter().flat_map(|p| p.jobs).collect();
    let oldest_first = query.parent.is_some();
    jobs.sort_by(|a, b| {
        let order = position(query, a).cmp(&position(query, b));
        if oldest_first { order } else { order.reverse() }
    });
    let left = jobs.len() > query.limit;
    jobs.truncate(query.limit);
    let next_cursor = if left || more {
        jobs.last().map(|last| query.cursor_after(last))
    } else {
        None
    };
    Page { jobs, next_cursor }
}

/// The partitions' counts added up (settings: paused when every partition is; the rate
/// limit as the partitions' shares added up; a hold until the latest).
pub(super) fn stats(all: Vec<QueueStats>) -> QueueStats {
    let mut out = QueueStats::default();
    let count = all.len();
    let mut paused = 0;
    let mut rate: Option<queue_core::RateLimit> = None;
    let mut limited = 0;
    for s in all {
        out.total += s.total;
        out.queued += s.queued;
        out.processing += s.processing;
        out.completed += s.completed;
        out.failed += s.failed;
        out.partial += s.partial;
        out.cancelled += s.cancelled;
        out.scheduled += s.scheduled;
        out.waiting_on_children += s.waiting_on_children;
        out.active_workers = out.active_workers.max(s.active_workers);
        for (priority, n) in s.depth {
            *out.depth.entry(priority).or_default() += n;
        }
        let t = &mut out.totals;
        t.enqueued += s.totals.enqueued;
        t.completed += s.totals.completed;
        t.failed += s.totals.failed;
        t.partial += s.totals.partial;
        t.cancelled += s.totals.cancelled;
        t.retried += s.totals.retried;
        t.recovered += s.totals.recovered;
        paused += usize::from(s.paused);
        if let Some(limit) = s.rate_limit {
            limited += 1;
            rate = Some(match rate {
                Some(r) => queue_core::RateLimit {
                    max: r.max + limit.max,
                    per: r.per,
                },
                None => limit,
            });
        }
        out.held_until = out.held_until.max(s.held_until);
    }
    out.paused = count > 0 && paused == count;
    out.rate_limit = rate.filter(|_| limited == count);
    out
}

/// The partitions' series added up point by point (gauges too: each partition samples
/// its own depth).
pub(super) fn series(all: Vec<Series>) -> Option<Series> {
    let mut all = all.into_iter();
    let mut out = all.next()?;
    for s in all {
        for (point, other) in out.points.iter_mut().zip(s.points) {
            for (k, v) in other.counts {
                *point.counts.entry(k).or_default() += v;
            }
            for (k, v) in other.gauges {
                *point.gauges.entry(k).or_default() += v;
            }
            add_bins(&mut point.wait, &other.wait);
            add_bins(&mut point.run, &other.run);
        }
    }
    Some(out)
}

fn add_bins(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

/// The busiest `limit` groups of all partitions (a group lives in one partition).
pub(super) fn groups(all: Vec<GroupList>, limit: usize) -> GroupList {
    let mut groups: Vec<GroupStats> = Vec::new();
    let mut other_groups = 0;
    let mut other_unfinished = 0;
    for list in all {
        groups.extend(list.groups);
        other_groups += list.other_groups;
        other_unfinished += list.other_unfinished;
    }
    groups.sort_by(|a, b| match b.unfinished.cmp(&a.unfinished) {
        Ordering::Equal => a.group.cmp(&b.group),
        o => o,
    });
    for extra in groups.drain(limit.min(groups.len())..) {
        other_groups += 1;
        other_unfinished += extra.unfinished;
    }
    let mut out = GroupList::default();
    out.groups = groups;
    out.other_groups = other_groups;
    out.other_unfinished = other_unfinished;
    out
}

/// One entry per worker (a worker beats every partition): its jobs of every partition,
/// its latest beat.
pub(super) fn workers(all: Vec<Vec<WorkerInfo>>) -> Vec<WorkerInfo> {
    let mut out: Vec<WorkerInfo> = Vec::new();
    for info in all.into_iter().flatten() {
        match out.iter_mut().find(|w| w.worker_id == info.worker_id) {
            Some(w) => {
                w.jobs.extend(info.jobs);
                if info.last_seen > w.last_seen {
                    w.last_seen = info.last_seen;
                    w.lost = info.lost;
                }
            }
            None => out.push(info),
        }
    }
    // As one partition answers: by worker, each one's jobs in id order.
    for w in &mut out {
        w.jobs.sort();
    }
    out.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
    out
}

/// The id of an event of a merged stream: its own id in its partition's log (so ids
/// compare as the log's do: `queue_core::parse_event_id`), then `~` and per partition the
/// last event id passed on (`0` before any): the point every partition resumes from.
fn resume_point(own: &str, positions: &[String]) -> String {
    format!("{own}~{}", positions.join(","))
}

/// Per partition where a merged stream resumes (`None`: live only): a merged event's
/// places, or an ordinary event id (every partition resumes after it: an id from before
/// the queue had partitions, or `0-0` for everything the logs hold).
pub(super) fn parse_resume(after: Option<&str>, span: usize) -> Vec<Option<String>> {
    let mut out = vec![None; span];
    match after {
        None => {}
        Some(after) => match after.split_once('~') {
            Some((_, list)) => {
                for (slot, id) in out.iter_mut().zip(list.split(',')) {
                    *slot = Some(id.to_owned());
                }
                // A partition the layout gained since: everything its log holds.
                for slot in out.iter_mut().filter(|s| s.is_none()) {
                    *slot = Some("0-0".to_owned());
                }
            }
            None => out.fill(Some(after.to_owned())),
        },
    }
    out
}

/// Each partition's stream (tagged by partition, starting at `start`) merged into one,
/// each event's id replaced by the merged resume point after it.
pub(super) fn events(streams: Vec<EventStream>, start: Vec<String>) -> EventStream {
    let tagged = streams
        .into_iter()
        .enumerate()
        .map(|(i, s)| s.map(move |e| (i, e)).boxed());
    let mut positions = start;
    Box::pin(futures_util::stream::select_all(tagged).map(
        move |(i, mut event): (usize, JobEvent)| {
            if let Some(id) = event.id.take() {
                positions[i] = id.clone();
                event.id = Some(resume_point(&id, &positions));
            }
            event
        },
    ))
}

/// Where partition `backend`'s event log ends now (`0` when it is empty).
pub(super) async fn log_end(backend: &RedisBackend) -> Result<String> {
    backend.log_end().await
}
