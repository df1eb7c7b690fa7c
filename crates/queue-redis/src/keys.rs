//! The only place Redis key names are built. Every key of a queue shares the hash tag
//! `{<queue>}`, so all of them live in one Cluster slot, and every script declares every
//! key it touches (`Static` for the fixed ones; job, history and worker keys by name).

use queue_core::backend::validate_queue_name;
use queue_core::{JobId, JobStatus, Result};

/// Key names of one queue: `<root>:{<queue>}:<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Keys {
    prefix: String,
}

/// A key every queue has (as opposed to one per job, unique key or worker).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Static {
    /// `ready:<band>`: ready jobs of a priority, scored by their place (a sequence).
    Ready(u8),
    /// `delayed:<band>`: jobs waiting for their due time (score).
    Delayed(u8),
    /// `active`: running jobs by lease expiry.
    Active,
    /// `leases`: running job -> its lease.
    Leases,
    /// `claims`: worker -> the last claim request id it sent.
    Claims,
    /// `claimed`: the leases of each claim request, one member per running job,
    /// `<len(worker)>:<worker>|<claim id>|<job id>` (all scores 0, read by lex range): a
    /// replayed claim reads only its own leases, and a worker's jobs are one range.
    Claimed,
    /// `cascade`: cancelled jobs whose descendants a cancel's cascade has still to visit,
    /// by when they joined (`queue_core::backend::CANCEL_STEP` children per step).
    Cascade,
    /// `cascade_at`: per job in `cascade`, where its walk through its children stands
    /// (`<created ms>|<id>` of the last child visited).
    CascadeAt,
    /// `st:<status>`: jobs of a status: `st:queued` by creation time, holding every job not
    /// finished (running ones too, told apart by their lease); one per finished status by
    /// when the job finished (`queue_core::backend::listed_at`, also the retention clock).
    /// Together they list every retained job.
    Status(JobStatus),
    /// `dedup`: unique key -> its active job.
    Dedup,
    /// `chained`: job -> the job waiting for it to end before it is placed (chains).
    Chained,
    /// `tails`: sequence name -> its newest unfinished member (sequences).
    Tails,
    /// `stats`: lifetime counters.
    Stats,
    /// `seq`: the place counter of ready jobs.
    Seq,
    /// `marker`: wakes blocked fetchers.
    Marker,
    /// `workers`: live workers by the end of their liveness window.
    Workers,
    /// `due`: a lower bound of the earliest due time of a delayed job (`none`: no such job).
    Due,
    /// `subs`: present while someone follows the events channel (scripts publish only then).
    Subs,
    /// `meta`: the queue's settings that scripts read (`paused`, `rate_max`, `rate_per_ms`).
    Meta,
    /// `rate`: the starts within the rate limit's window (token -> start ms), while a limit
    /// is set.
    Rate,
    /// `lanes:<band>`: the groups with ready jobs of a band that admit a start, by lane
    /// ticket (the lowest is served next).
    Lanes(u8),
    /// `groups`: per group `run:<g>` (running), `max:<g>` (concurrency limit), `pause:<g>`;
    /// per band `ready:<band>` (ready jobs of groups).
    Groups,
    /// `gdelayed`: delayed jobs of groups, by due time.
    GroupDelayed,
    /// `gheld`: groups with waiting jobs held back by time (a rate window, a hold), by when
    /// a claim should look at them again.
    GroupHeld,
    /// `gload`: groups with unfinished jobs, scored by minus their count (the busiest
    /// first, ties by name), for `JobStore::groups`.
    GroupLoad,
    /// `waiting`: queued parents waiting on their children (flows, batches), by creation
    /// time: not ready, not delayed; `ListQuery::waiting_on_children` lists them.
    Waiting,
    /// `schedules`: schedule name -> its stored form (JSON, compared byte for byte by the
    /// compare-and-set of every change).
    Schedules,
    /// `sdue`: schedules by next run (paused ones and those without a next tick are absent).
    ScheduleDue,
    /// `webhooks`: webhook name -> its stored form (JSON, secret included).
    Webhooks,
    /// `hooks`: webhook name -> its filter (`<statuses>|<task>|<group>`), read by every
    /// transition to a finished status.
    Hooks,
    /// `dlv`: webhook delivery id -> its stored form (the outbox).
    Deliveries,
    /// `dq`: pending deliveries by due ms (a claimed one by the end of its lease).
    DeliveriesDue,
    /// `parked`: parked deliveries by when they were parked.
    Parked,
    /// `dlvw`: every delivery of the outbox as `<webhook>|<delivery id>` (all scores 0, read
    /// by lex range): a deleted webhook's deliveries go with it.
    HookDeliveries,
    /// `log`: the event log (a stream of the last `EVENT_LOG_LEN` events, written while
    /// someone follows the queue), for subscribers that resume after a disconnect.
    Log,
    /// `log_gone`: the id of the newest event trimmed from `log` (a subscriber resuming from
    /// before it has missed events and is told so).
    LogGone,
}

impl Static {
    /// The name a script knows the key by (`K.<name>`).
    pub(crate) fn lua_name(self) -> String {
        match self {
            Self::Ready(band) => format!("ready{band}"),
            Self::Delayed(band) => format!("delayed{band}"),
            Self::Active => "active".into(),
            Self::Leases => "leases".into(),
            Self::Claims => "claims".into(),
            Self::Claimed => "claimed".into(),
            Self::Cascade => "cascade".into(),
            Self::CascadeAt => "cascade_at".into(),
            Self::Status(s) => format!("st_{s}"),
            Self::Dedup => "dedup".into(),
            Self::Chained => "chained".into(),
            Self::Tails => "tails".into(),
            Self::Stats => "stats".into(),
            Self::Seq => "seq".into(),
            Self::Marker => "marker".into(),
            Self::Workers => "workers".into(),
            Self::Due => "due".into(),
            Self::Subs => "subs".into(),
            Self::Meta => "meta".into(),
            Self::Rate => "rate".into(),
            Self::Lanes(band) => format!("lanes{band}"),
            Self::Groups => "groups".into(),
            Self::GroupDelayed => "gdelayed".into(),
            Self::GroupHeld => "gheld".into(),
            Self::GroupLoad => "gload".into(),
            Self::Waiting => "waiting".into(),
            Self::Schedules => "schedules".into(),
            Self::ScheduleDue => "sdue".into(),
            Self::Log => "log".into(),
            Self::LogGone => "log_gone".into(),
            Self::Webhooks => "webhooks".into(),
            Self::Hooks => "hooks".into(),
            Self::Deliveries => "dlv".into(),
            Self::DeliveriesDue => "dq".into(),
            Self::Parked => "parked".into(),
            Self::HookDeliveries => "dlvw".into(),
        }
    }

    fn key_name(self) -> String {
        match self {
            Self::Ready(band) => format!("ready:{band}"),
            Self::Delayed(band) => format!("delayed:{band}"),
            Self::Status(s) => format!("st:{s}"),
            Self::Lanes(band) => format!("lanes:{band}"),
            other => other.lua_name(),
        }
    }
}

/// The three ready queues, by band.
pub(crate) const READY: [Static; 3] = [Static::Ready(0), Static::Ready(1), Static::Ready(2)];
/// The three lane sets, by band.
pub(crate) const LANES: [Static; 3] = [Static::Lanes(0), Static::Lanes(1), Static::Lanes(2)];
/// The three delayed sets, by band.
pub(crate) const DELAYED: [Static; 3] =
    [Static::Delayed(0), Static::Delayed(1), Static::Delayed(2)];

impl Keys {
    /// Refuses queue names that would break the hash tag (`{`, `}`) or the layout (`:`).
    pub(crate) fn new(root: &str, queue: &str) -> Result<Self> {
        validate_queue_name(queue)?;
        if root.contains(['{', '}']) {
            return Err(queue_core::Error::config(format!(
                "key prefix {root:?} must not contain `{{` or `}}`"
            )));
        }
        Ok(Self {
            prefix: format!("{root}:{{{queue}}}:"),
        })
    }

    /// The keys of partition `index` of `queue` under `root`: partition 0 is the queue
    /// itself (so a queue of one partition is an unpartitioned queue); partition `i > 0`
    /// has the hash tag `<queue>:p<i>` followed by `salt` when one is given (a user's
    /// queue name holds no `:`, so no queue's tag is another's partition's).
    pub(crate) fn partition(
        root: &str,
        queue: &str,
        index: u32,
        salt: Option<u32>,
    ) -> Result<Self> {
        let keys = Self::new(root, queue)?;
        if index == 0 {
            return Ok(keys);
        }
        Ok(Self {
            prefix: format!("{root}:{{{}}}:", partition_tag(queue, index, salt)),
        })
    }

    /// The hash tag: what is between the braces of the prefix.
    pub(crate) fn tag(&self) -> &str {
        let start = self.prefix.find('{').map_or(0, |i| i + 1);
        let end = self.prefix.rfind('}').unwrap_or(self.prefix.len());
        &self.prefix[start..end]
    }

    /// The common prefix (scripts build channel names from it).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub(crate) fn of(&self, s: Static) -> String {
        self.key(&s.key_name())
    }

    pub(crate) fn job(&self, id: JobId) -> String {
        self.key(&format!("job:{id}"))
    }
    /// The key of a job named by a string (it may not parse as an id).
    pub(crate) fn job_named(&self, id: &str) -> String {
        self.key(&format!("job:{id}"))
    }
    /// One bucket of the charts' series (built by the scripts as well: prelude.lua `flush`).
    pub(crate) fn series(&self, span: queue_core::SeriesSpan, index: i64) -> String {
        self.key(&format!("series:{}:{index}", span.tag()))
    }
    pub(crate) fn unique(&self, key: &str) -> String {
        self.key(&format!("uk:{key}"))
    }
    /// The ready jobs of `group` in `band` (built by the scripts as well: prelude.lua
    /// `group_ready_key`).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn group_ready(&self, band: u8, group: &str) -> String {
        self.key(&format!("gq:{band}:{group}"))
    }
    /// A parent's children by creation time (built by the scripts as well: prelude.lua
    /// `kids_key`).
    pub(crate) fn kids(&self, id: JobId) -> String {
        self.key(&format!("kids:{id}"))
    }
    pub(crate) fn worker(&self, id: &str) -> String {
        self.key(&format!("worker:{id}"))
    }
    /// `layout`: a partitioned queue's layout (partition 0 only; `crate::partitions`).
    pub(crate) fn layout(&self) -> String {
        self.key("layout")
    }

    pub(crate) fn marker(&self) -> String {
        self.of(Static::Marker)
    }
    pub(crate) fn active(&self) -> String {
        self.of(Static::Active)
    }
    pub(crate) fn status(&self, status: JobStatus) -> String {
        self.of(Static::Status(status))
    }
    pub(crate) fn events(&self) -> String {
        self.key("events")
    }
    pub(crate) fn cancel(&self) -> String {
        self.key("cancel")
    }

    /// A SCAN pattern matching every key of the queue.
    pub(crate) fn pattern(&self) -> String {
        let mut out = String::new();
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('*');
        out
    }
}

/// The Cluster slot of a key (`CRC16(tag) mod 16384`, where the tag is the part between the
/// first `{` and the next `}` when there is one): every key of a queue is in the slot of
/// its prefix.
pub(crate) fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tag = bytes
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            rest.iter()
                .position(|b| *b == b'}')
                .filter(|len| *len > 0)
                .map(|len| &rest[..len])
        })
        .unwrap_or(bytes);
    // CRC16/XMODEM, as Redis Cluster computes it.
    let mut crc: u16 = 0;
    for b in tag {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_queue_tag() {
        let k = Keys::new("dcs", "ai_processing").unwrap();
        let id = JobId::new();
        for key in [
            k.job(id),
            k.of(Static::Ready(0)),
            k.status(JobStatus::Failed),
            k.unique("book-1"),
            k.worker("w"),
            k.group_ready(1, "publisher-1"),
            k.of(Static::Leases),
        ] {
            assert!(key.starts_with("dcs:{ai_processing}:"), "{key}");
        }
        assert_eq!(k.of(Static::Ready(1)), "dcs:{ai_processing}:ready:1");
        assert_eq!(Static::Status(JobStatus::Queued).lua_name(), "st_queued");
    }

    #[test]
    fn slots_are_those_redis_computes() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot("123456789"), 12739);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("dcs:{foo}:job:1"), slot("foo"));
        assert_eq!(
            slot("{}x"),
            slot("{}x"),
            "an empty tag hashes the whole key"
        );
    }

    #[test]
    fn names_that_break_the_tag_are_refused() {
        for bad in ["a{b", "a}b", "a:b", "", "with space"] {
            let err = Keys::new("dcs", bad).unwrap_err();
            assert!(err.to_string().contains("queue name"), "{err}");
        }
        assert!(Keys::new("x{", "q").is_err());
        assert_eq!(Keys::new("dcs", "q*1").unwrap().pattern(), "dcs:{q\\*1}:*");
    }
}

/// The hash tag of partition `index > 0` of `queue` (see [`Keys::partition`]).
pub(crate) fn partition_tag(queue: &str, index: u32, salt: Option<u32>) -> String {
    match salt {
        Some(salt) => format!("{queue}:p{index}.{salt}"),
        None => format!("{queue}:p{index}"),
    }
}

#[cfg(test)]
mod slot_tests {
    use super::*;

    #[test]
    fn slots_are_redis_cluster_keyslots() {
        // `CLUSTER KEYSLOT` answers, Redis 7.0.
        assert_eq!(slot("foo"), 12_182);
        assert_eq!(slot("somekey"), 11_058);
        assert_eq!(slot("123456789"), 12_739);
    }

    #[test]
    fn partition_zero_is_the_queue_itself() {
        let zero = Keys::partition("dcs", "q", 0, Some(5)).unwrap();
        assert_eq!(zero, Keys::new("dcs", "q").unwrap());
        let two = Keys::partition("dcs", "q", 2, Some(5)).unwrap();
        assert_eq!(two.prefix(), "dcs:{q:p2.5}:");
        assert!(Keys::partition("dcs", "a:b", 1, None).is_err());
    }
}
