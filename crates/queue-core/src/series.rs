//! Server-kept time series for the console's charts: jobs finished per interval (each
//! lifetime counter, per minute and per quarter hour), enqueue-to-start and run-time
//! histograms, and the queue's depth sampled by workers' heartbeats.
//!
//! A bucket is a small map of field to count for one interval of one [`SeriesSpan`]; each
//! job adds to at most two buckets per event (one per span), so the cost per job is O(1),
//! and a bucket is dropped once it is older than its span ([`SeriesSpan::keep_ms`]), so
//! memory is bounded whatever the load. Field names, bucket arithmetic and histogram bins
//! are decided here; the memory backend keeps buckets in a [`SeriesBook`], the Redis
//! scripts in one hash per bucket with the same fields (their tables are generated from
//! these constants).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::{Millis, from_millis};

/// Upper bounds (ms, inclusive) of the latency histogram's bins; one more bin counts
/// everything slower than the last bound.
pub const LATENCY_BOUNDS_MS: [u64; 16] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 1_800_000,
    3_600_000,
];

/// The bin of a latency of `ms` (a negative one, from clock skew, counts as 0).
///
/// ```
/// use queue_core::series::{LATENCY_BOUNDS_MS, latency_bin};
///
/// assert_eq!(latency_bin(0), 0);
/// assert_eq!(latency_bin(5), 0);
/// assert_eq!(latency_bin(6), 1);
/// assert_eq!(latency_bin(i64::MAX), LATENCY_BOUNDS_MS.len());
/// ```
pub fn latency_bin(ms: Millis) -> usize {
    let ms = ms.max(0) as u64;
    LATENCY_BOUNDS_MS
        .iter()
        .position(|b| ms <= *b)
        .unwrap_or(LATENCY_BOUNDS_MS.len())
}

/// The field that counts enqueue-to-start latencies of `bin` (`w0`..`w16`).
pub fn wait_field(bin: usize) -> String {
    format!("w{bin}")
}

/// The field that counts run times of `bin` (`r0`..`r16`).
pub fn run_field(bin: usize) -> String {
    format!("r{bin}")
}

/// The gauges a heartbeat samples, by field name: ready jobs per priority, scheduled
/// (delayed) jobs, running jobs.
pub const GAUGES: [&str; 5] = ["g_high", "g_normal", "g_low", "g_scheduled", "g_running"];

/// The [`GAUGES`] of `stats`, as a heartbeat samples them (the Redis heartbeat reads the
/// same counts as its `stats`).
pub fn gauges(stats: &crate::QueueStats) -> [(&'static str, u64); 5] {
    let depth = |p| stats.depth.get(&p).copied().unwrap_or(0);
    [
        (GAUGES[0], depth(crate::Priority::High)),
        (GAUGES[1], depth(crate::Priority::Normal)),
        (GAUGES[2], depth(crate::Priority::Low)),
        (GAUGES[3], stats.scheduled),
        (GAUGES[4], stats.processing),
    ]
}

/// The lifetime counters ([`crate::LifetimeTotals`]) a bucket also counts, per interval.
pub const COUNTERS: [&str; 7] = [
    "enqueued",
    "completed",
    "partial",
    "failed",
    "cancelled",
    "retried",
    "recovered",
];

/// The latency field `event` adds to when it happens to a job whose record (before the
/// event) is `before`, at `now`: a start adds its wait since the job was due (created, or
/// its `run_at`), an event that ends an attempt adds the attempt's run time.
pub fn latency_field(
    before: &crate::JobRecord,
    event: crate::backend::Event,
    now: Millis,
) -> Option<String> {
    use crate::backend::{Event, to_millis};
    if event == Event::Start {
        let due = before.run_at.map_or(to_millis(before.created_at), |r| {
            to_millis(r).max(to_millis(before.created_at))
        });
        return Some(wait_field(latency_bin(now - due)));
    }
    (before.status == crate::JobStatus::Processing)
        .then_some(before.started_at)
        .flatten()
        .map(|s| run_field(latency_bin(now - to_millis(s))))
}

/// Which window a series covers, and at what step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesSpan {
    /// The last hour, per minute.
    Hour,
    /// The last day, per quarter hour.
    Day,
}

impl SeriesSpan {
    /// Both spans (every event adds to one bucket of each).
    pub const ALL: [SeriesSpan; 2] = [Self::Hour, Self::Day];

    /// The interval of one bucket (ms).
    pub fn step_ms(self) -> Millis {
        match self {
            Self::Hour => 60_000,
            Self::Day => 900_000,
        }
    }

    /// How many buckets a series shows.
    pub fn points(self) -> usize {
        match self {
            Self::Hour => 60,
            Self::Day => 96,
        }
    }

    /// How long a bucket is kept after it began: the span and one step more.
    pub fn keep_ms(self) -> Millis {
        self.step_ms() * (self.points() as Millis + 1)
    }

    /// Its short name in a bucket's key (`m`, `q`).
    pub fn tag(self) -> &'static str {
        match self {
            Self::Hour => "m",
            Self::Day => "q",
        }
    }

    /// Its wire name (`hour`, `day`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    /// The index of the bucket holding time `ms`.
    pub fn bucket(self, ms: Millis) -> i64 {
        ms.div_euclid(self.step_ms())
    }

    /// When bucket `index` is dropped: [`SeriesSpan::keep_ms`] after its interval ended.
    pub fn expires_at(self, index: i64) -> Millis {
        (index + 1) * self.step_ms() + self.keep_ms()
    }
}

impl std::str::FromStr for SeriesSpan {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "hour" => Ok(Self::Hour),
            "day" => Ok(Self::Day),
            other => Err(crate::Error::invalid(format!(
                "series span {other:?} is not one of hour, day"
            ))),
        }
    }
}

/// One interval of a series.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// When the interval began.
    pub at: DateTime<Utc>,
    /// Each lifetime counter's increase during the interval ([`COUNTERS`]; absent: 0).
    pub counts: BTreeMap<String, u64>,
    /// Enqueue-to-start latencies (from when the job was due) started in the interval, per
    /// bin of [`LATENCY_BOUNDS_MS`].
    pub wait: Vec<u64>,
    /// Run times of attempts that ended in the interval, per bin.
    pub run: Vec<u64>,
    /// The last sample of each gauge taken in the interval ([`GAUGES`]; absent: none was
    /// taken, no worker was beating).
    pub gauges: BTreeMap<String, u64>,
}

impl SeriesPoint {
    /// The point of the interval beginning `at` from a bucket's stored fields (unknown
    /// fields and unparsable values are ignored: a chart is never worth an error).
    pub fn from_fields<'a>(
        at: Millis,
        fields: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> SeriesPoint {
        let bins = LATENCY_BOUNDS_MS.len() + 1;
        let mut point = SeriesPoint {
            at: from_millis(at),
            wait: vec![0; bins],
            run: vec![0; bins],
            ..SeriesPoint::default()
        };
        for (name, value) in fields {
            if COUNTERS.contains(&name) {
                point.counts.insert(name.to_owned(), value);
            } else if GAUGES.contains(&name) {
                point.gauges.insert(name.to_owned(), value);
            } else if let Some(bin) = name.strip_prefix('w').and_then(|b| b.parse::<usize>().ok()) {
                if let Some(slot) = point.wait.get_mut(bin) {
                    *slot += value;
                }
            } else if let Some(bin) = name.strip_prefix('r').and_then(|b| b.parse::<usize>().ok())
                && let Some(slot) = point.run.get_mut(bin)
            {
                *slot += value;
            }
        }
        point
    }

    /// A counter's increase in the interval.
    pub fn count(&self, counter: &str) -> u64 {
        self.counts.get(counter).copied().unwrap_or(0)
    }
}

/// The `q` quantile (0..=1) of a histogram over [`LATENCY_BOUNDS_MS`]: the upper bound of
/// the bin it falls in (`None` for an empty histogram; the last bin reads as the last
/// bound).
///
/// ```
/// use queue_core::series::percentile;
///
/// let mut hist = vec![0; 17];
/// hist[0] = 90; // <= 5 ms
/// hist[7] = 10; // <= 1 s
/// assert_eq!(percentile(&hist, 0.5), Some(5));
/// assert_eq!(percentile(&hist, 0.95), Some(1000));
/// assert_eq!(percentile(&[0; 17], 0.5), None);
/// ```
pub fn percentile(hist: &[u64], q: f64) -> Option<u64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (bin, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            let last = LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 1];
            return Some(LATENCY_BOUNDS_MS.get(bin).copied().unwrap_or(last));
        }
    }
    None
}

/// A series: one point per interval of the span, oldest first, the current (unfinished)
/// interval last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Series {
    /// Its span.
    pub span: SeriesSpan,
    /// The interval of each point (ms).
    pub step_ms: Millis,
    /// The histogram bins' upper bounds ([`LATENCY_BOUNDS_MS`]).
    pub bounds_ms: Vec<u64>,
    /// The points.
    pub points: Vec<SeriesPoint>,
}

impl Series {
    /// The series of `span` ending with the interval of `now`, each point read by
    /// `bucket(index)` (a missing bucket is an empty point).
    pub fn read<'a, F, I>(span: SeriesSpan, now: Millis, mut bucket: F) -> Series
    where
        F: FnMut(i64) -> I,
        I: IntoIterator<Item = (&'a str, u64)>,
    {
        let last = span.bucket(now);
        let first = last - span.points() as i64 + 1;
        let points = (first..=last)
            .map(|i| SeriesPoint::from_fields(i * span.step_ms(), bucket(i)))
            .collect();
        Series {
            span,
            step_ms: span.step_ms(),
            bounds_ms: LATENCY_BOUNDS_MS.to_vec(),
            points,
        }
    }
}

/// Buckets kept in memory (the memory backend's, and a reference for the Redis layout):
/// per span and bucket index, field to value.
#[derive(Clone, Debug, Default)]
pub struct SeriesBook {
    buckets: BTreeMap<(SeriesSpan, i64), BTreeMap<String, u64>>,
}

impl SeriesBook {
    /// Adds `by` to `field` in the buckets of `now` (one per span), dropping buckets past
    /// their keep.
    pub fn add(&mut self, now: Millis, field: &str, by: u64) {
        for span in SeriesSpan::ALL {
            *self
                .buckets
                .entry((span, span.bucket(now)))
                .or_default()
                .entry(field.to_owned())
                .or_default() += by;
        }
        self.prune(now);
    }

    /// Sets a gauge in the buckets of `now`.
    pub fn sample(&mut self, now: Millis, gauges: &[(&str, u64)]) {
        for span in SeriesSpan::ALL {
            let bucket = self.buckets.entry((span, span.bucket(now))).or_default();
            for (name, value) in gauges {
                bucket.insert((*name).to_owned(), *value);
            }
        }
        self.prune(now);
    }

    /// The series of `span` as of `now`.
    pub fn read(&self, span: SeriesSpan, now: Millis) -> Series {
        Series::read(span, now, |i| {
            self.buckets
                .get(&(span, i))
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), *v))
        })
    }

    /// How many buckets are held (bounded by both spans' points, plus one each).
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn prune(&mut self, now: Millis) {
        self.buckets
            .retain(|(span, i), _| span.expires_at(*i) > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_bounded_and_read_back() {
        let mut book = SeriesBook::default();
        let t0: Millis = 1_700_000_000_000;
        for minute in 0..(48 * 60) {
            let now = t0 + minute * 60_000;
            book.add(now, "completed", 2);
            book.add(now, &wait_field(latency_bin(40)), 1);
            book.sample(now, &[("g_high", minute as u64)]);
        }
        assert!(book.len() <= 62 + 98, "{}", book.len());
        let now = t0 + (48 * 60 - 1) * 60_000;
        let hour = book.read(SeriesSpan::Hour, now);
        assert_eq!(hour.points.len(), 60);
        assert!(hour.points.iter().all(|p| p.count("completed") == 2));
        assert_eq!(hour.points[59].gauges["g_high"], 48 * 60 - 1);
        assert_eq!(percentile(&hour.points[0].wait, 0.99), Some(50));
        let day = book.read(SeriesSpan::Day, now);
        assert_eq!(day.points.len(), 96);
        let full = day.points[..95]
            .iter()
            .filter(|p| p.count("completed") == 30);
        assert!(full.count() >= 94, "a quarter hour holds 15 minutes of 2");
    }
}
