//! Partitions: one logical queue spread over P independent parts (on Redis Cluster, one
//! hash tag each, so over several masters). Every rule about where a job lives is here;
//! a partitioned backend only applies them.
//!
//! **Routing.** A job's *routing key* is the first it has of: its group, its sequence, its
//! partition key ([`NewJob::partition_key`]), its unique key. A job with one goes to
//! `partition_of(routing key, P)`; a flow goes whole to one partition (see
//! [`route_flow`]); a job whose id its producer chose and that has no routing key goes to
//! the partition its id names ([`JobId::home`]); any other job to the next partition in
//! turn (spread evenly), with an id that names it.
//!
//! **What each guarantee covers.** Everything that is decided per routing key holds
//! across the whole queue, because all jobs of one routing key share a partition: group
//! concurrency, a group's rate limit, pause and weight, a sequence's order, and one active
//! job per unique key among jobs that route by it (no group, sequence or partition key).
//! A unique key of jobs with a group (sequence, partition key) is unique among the jobs of
//! that group: two jobs with one key in two groups may both be active. A job with both a
//! group and a sequence is refused ([`route`]). Start order (priority,
//! then FIFO) holds within a partition, so among the jobs of one routing key; across
//! partitions a claim serves the partitions in turn, so a `high` job waits at most
//! `P - 1` claims of one worker behind lower-priority jobs of other partitions. Pause,
//! cancel, retention and the webhooks hold across the queue (applied to every partition).
//! The queue's rate limit is split ([`split_rate`]): the partitions' shares add up to it,
//! so it is never exceeded, and it may be under-used while the load is uneven. Fair share
//! by weight is among the groups of one partition. A chosen id is looked for in every
//! partition before its job is created, so enqueuing it again answers the job it names.
//!
//! ```
//! use queue_core::{NewJob, backend::{Route, route}};
//!
//! let job = NewJob::new("charge", &1).unwrap().group("tenant-7");
//! let a = route(&job, 4, 0).unwrap();
//! let b = route(&job.clone(), 4, 3).unwrap();
//! assert_eq!(a, b, "one group, one partition, whatever the turn");
//! assert!(matches!(a, Route::Key(_)));
//! ```

use crate::{Error, Flow, JobId, NewJob, RateLimit, Result};

/// The most partitions a queue may have (one byte of a job id names its partition).
pub const MAX_PARTITIONS: u32 = 64;

/// The longest partition key, in bytes.
pub const MAX_PARTITION_KEY_BYTES: usize = 128;

impl NewJob {
    /// Routes the job on a partitioned queue: jobs with one partition key share a
    /// partition, so they start in priority then FIFO order among themselves, as on a
    /// queue of one partition (a queue of one partition ignores it; it is not stored). A
    /// job with a group or a sequence routes by it and takes no partition key.
    pub fn partition_key(mut self, key: impl Into<String>) -> Self {
        self.options.partition_key = Some(key.into());
        self
    }
}

/// What a partition key must satisfy (a part of [`NewJob::validate`]): 1 to
/// [`MAX_PARTITION_KEY_BYTES`] bytes, on a job without a group or a sequence.
pub(crate) fn check_partition_key(job: &NewJob) -> Result<()> {
    let Some(key) = &job.options.partition_key else {
        return Ok(());
    };
    if key.is_empty() || key.len() > MAX_PARTITION_KEY_BYTES {
        return Err(Error::invalid(format!(
            "partition key is {} bytes: expected 1 to {MAX_PARTITION_KEY_BYTES}",
            key.len()
        )));
    }
    if job.options.group.is_some() || job.options.sequence.is_some() {
        return Err(Error::invalid(
            "a job with a group or a sequence routes by it: give it no partition key",
        ));
    }
    Ok(())
}

/// Where one job goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// By its routing key (group, sequence or unique key): this partition, always.
    Key(u32),
    /// By the id its producer chose: the partition the id names.
    Id(u32),
    /// Anywhere: this partition, the caller's turn.
    Spread(u32),
}

impl Route {
    /// The partition.
    pub fn partition(self) -> u32 {
        match self {
            Self::Key(p) | Self::Id(p) | Self::Spread(p) => p,
        }
    }
}

/// Checks a partition count: 1 to [`MAX_PARTITIONS`].
pub fn check_partitions(partitions: u32) -> Result<()> {
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        return Err(Error::config(format!(
            "partitions {partitions} is not in 1..={MAX_PARTITIONS}"
        )));
    }
    Ok(())
}

/// The partition of a routing key among `partitions` (FNV-1a of its bytes: the same in
/// every process and version).
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

/// A job's routing key: its group, else its sequence, else its partition key, else its
/// unique key. Prefixed by its kind, so a group and a key of the same name may go to
/// different partitions.
pub fn routing_key(job: &NewJob) -> Option<String> {
    let o = &job.options;
    o.group
        .as_deref()
        .map(|g| format!("g:{g}"))
        .or_else(|| o.sequence.as_deref().map(|s| format!("s:{s}")))
        .or_else(|| o.partition_key.as_deref().map(|p| format!("p:{p}")))
        .or_else(|| o.unique_key.as_deref().map(|k| format!("k:{k}")))
}

/// Where `job` goes among `partitions`, `turn` being the caller's next spread partition
/// (with one partition everything goes to partition 0). On a partitioned queue a job with
/// both a group and a sequence is refused: each must live in one partition, and the two
/// may hash to different ones (members of one sequence in two groups would start out of
/// order).
pub fn route(job: &NewJob, partitions: u32, turn: u32) -> Result<Route> {
    let partitions = partitions.max(1);
    if partitions > 1 && job.options.group.is_some() && job.options.sequence.is_some() {
        return Err(Error::invalid(
            "on a partitioned queue a job in a sequence takes no group: the sequence routes \
             it, and its members must share one partition",
        ));
    }
    Ok(match (job.options.job_id, routing_key(job)) {
        (_, Some(key)) => Route::Key(partition_of(&key, partitions)),
        (Some(id), None) => Route::Id(id.home() % partitions),
        (None, None) => Route::Spread(turn % partitions),
    })
}

/// Where a flow goes: every job of it to one partition, the first routing key found (the
/// root first, then its children depth first) deciding. A job of the flow whose own
/// routing key would send it elsewhere is refused, naming it: give the flow's jobs one
/// group (sequence, key), or none.
pub fn route_flow(flow: &Flow, partitions: u32, turn: u32) -> Result<Route> {
    let mut jobs = Vec::new();
    collect(flow, &mut jobs);
    route_together(&jobs, partitions, turn)
}

/// Where jobs that must share one partition go (a flow, children added to a parent that
/// lives in `fixed`): the first routing key decides, or `fixed` when given.
pub fn route_together(jobs: &[&NewJob], partitions: u32, turn: u32) -> Result<Route> {
    route_into(jobs, partitions, None, turn)
}

/// As [`route_together`], for jobs joining a parent that lives in `partition`.
pub fn route_children(jobs: &[&NewJob], partitions: u32, partition: u32) -> Result<Route> {
    route_into(jobs, partitions, Some(partition), 0)
}

fn route_into(jobs: &[&NewJob], partitions: u32, fixed: Option<u32>, turn: u32) -> Result<Route> {
    let mut chosen = fixed.map(Route::Key);
    // A chosen id routes a flow only when no job of it has a routing key: the first one's
    // (the root's, when it has one), so its id names where the flow is.
    let mut by_id = None;
    for job in jobs {
        let own = route(job, partitions, turn)?;
        match (chosen, own) {
            (_, Route::Spread(_)) => {}
            (_, Route::Id(_)) => {
                by_id.get_or_insert(own);
            }
            (None, own) => chosen = Some(own),
            (Some(at), own) if at.partition() == own.partition() => {}
            (Some(at), own) => {
                return Err(Error::invalid(format!(
                    "job of task {:?} routes to partition {} (its {}), the rest of its flow to \
                     partition {}: jobs of one flow share a partition, so give them one group, \
                     sequence or partition key (or none)",
                    job.task,
                    own.partition(),
                    routed_by(job),
                    at.partition()
                )));
            }
        }
    }
    Ok(chosen
        .or(by_id)
        .unwrap_or(Route::Spread(turn % partitions.max(1))))
}

fn routed_by(job: &NewJob) -> String {
    let o = &job.options;
    let (what, name) = if let Some(g) = &o.group {
        ("group", g)
    } else if let Some(s) = &o.sequence {
        ("sequence", s)
    } else if let Some(p) = &o.partition_key {
        ("partition key", p)
    } else if let Some(k) = &o.unique_key {
        ("unique key", k)
    } else {
        return "chosen id".to_owned();
    };
    format!("{what} `{name}`")
}

fn collect<'a>(flow: &'a Flow, out: &mut Vec<&'a NewJob>) {
    out.push(&flow.job);
    for child in &flow.children {
        collect(child, out);
    }
}

impl JobId {
    /// The partition this id names (its last byte's low six bits): where a job whose id
    /// was made by [`JobId::in_partition`] lives, and where a job with a chosen id and no
    /// routing key goes (modulo the partition count).
    pub fn home(&self) -> u32 {
        u32::from(self.as_uuid().as_bytes()[15]) % MAX_PARTITIONS
    }

    /// A fresh id ([`JobId::new`]) naming `partition` ([`JobId::home`]), so every later
    /// call about the job finds it in one step.
    pub fn in_partition(partition: u32) -> Self {
        let mut bytes = *Self::new().as_uuid().as_bytes();
        bytes[15] = (bytes[15] & !0x3f) | (partition % MAX_PARTITIONS) as u8;
        Self::from_uuid(uuid::Uuid::from_bytes(bytes))
    }
}

/// The queue's rate limit split among `partitions`: shares that add up to `limit.max`
/// (the first `max % P` partitions take one more), so the queue never starts more than
/// `max` jobs in a window. A limit below one start per partition per window is refused:
/// a partition with a share of 0 would never start a job.
pub fn split_rate(limit: RateLimit, partitions: u32) -> Result<Vec<RateLimit>> {
    let partitions = partitions.max(1);
    if limit.max < partitions {
        return Err(Error::invalid(format!(
            "rate limit {} per {:?} is below one start per partition per window ({partitions} \
             partitions): raise it, or widen its window",
            limit.max, limit.per
        )));
    }
    Ok((0..partitions)
        .map(|p| RateLimit {
            max: limit.max / partitions + u32::from(p < limit.max % partitions),
            per: limit.per,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn job() -> NewJob {
        NewJob::new("t", &1).unwrap()
    }

    #[test]
    fn the_partition_count_is_checked_at_its_limits() {
        assert!(check_partitions(1).is_ok());
        assert!(check_partitions(MAX_PARTITIONS).is_ok());
        assert!(check_partitions(0).is_err());
        let e = check_partitions(MAX_PARTITIONS + 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("65") && e.contains("1..=64"), "{e}");
    }

    #[test]
    fn routing_prefers_the_group_then_the_sequence_then_the_key() {
        let p = 64;
        let keyed = job().unique_key("k");
        assert_eq!(
            route(&keyed, p, 0).unwrap(),
            Route::Key(partition_of("k:k", p))
        );
        let seq = job().unique_key("k").sequence("s");
        assert_eq!(
            route(&seq, p, 0).unwrap(),
            Route::Key(partition_of("s:s", p))
        );
        let both = job().sequence("s").group("g");
        let e = route(&both, p, 0).unwrap_err().to_string();
        assert!(e.contains("sequence takes no group"), "{e}");
        assert!(
            route(&both, 1, 0).is_ok(),
            "one partition: both hold anyway"
        );
        let grouped = job().unique_key("k").group("g");
        assert_eq!(
            route(&grouped, p, 0).unwrap(),
            Route::Key(partition_of("g:g", p))
        );
        assert_eq!(route(&job(), p, 70).unwrap(), Route::Spread(6));
        assert_eq!(route(&grouped, 1, 0).unwrap(), Route::Key(0));
    }

    #[test]
    fn routing_keys_spread_over_the_partitions() {
        let mut seen = [0u32; 4];
        for i in 0..4000 {
            seen[partition_of(&format!("g:tenant-{i}"), 4) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }

    #[test]
    fn an_id_made_for_a_partition_names_it() {
        for p in 0..MAX_PARTITIONS {
            let id = JobId::in_partition(p);
            assert_eq!(id.home(), p);
            assert_eq!(id.as_uuid().get_version_num(), 7);
            assert_eq!(route(&job().job_id(id), 64, 0).unwrap(), Route::Id(p));
        }
        assert_ne!(JobId::in_partition(3), JobId::in_partition(3));
    }

    #[test]
    fn a_chosen_id_routes_by_its_key_when_it_has_one() {
        let chosen = job().job_id(JobId::in_partition(5)).group("g");
        assert_eq!(
            route(&chosen, 8, 0).unwrap(),
            Route::Key(partition_of("g:g", 8))
        );
        assert_eq!(route(&chosen, 1, 0).unwrap(), Route::Key(0));
    }

    #[test]
    fn a_partition_key_routes_before_the_unique_key_and_is_checked_at_its_limits() {
        let keyed = job().unique_key("k").partition_key("orders");
        assert_eq!(
            route(&keyed, 16, 0).unwrap(),
            Route::Key(partition_of("p:orders", 16))
        );
        let at_max = job().partition_key("x".repeat(MAX_PARTITION_KEY_BYTES));
        assert!(at_max.validate().is_ok());
        let past = job().partition_key("x".repeat(MAX_PARTITION_KEY_BYTES + 1));
        let e = past.validate().unwrap_err().to_string();
        assert!(e.contains("129 bytes") && e.contains("1 to 128"), "{e}");
        assert!(job().partition_key("").validate().is_err());
        let e = job().group("g").partition_key("p").validate().unwrap_err();
        assert!(e.to_string().contains("no partition key"), "{e}");
        assert!(job().sequence("s").partition_key("p").validate().is_err());
    }

    #[test]
    fn a_flow_goes_where_its_first_routing_key_sends_it() {
        let p = 8;
        let mut flow = Flow::new(job());
        flow.children.push(Flow::new(job()));
        flow.children.push(Flow::new(job().group("g")));
        flow.children.push(Flow::new(job().group("g")));
        let at = partition_of("g:g", p);
        assert_eq!(route_flow(&flow, p, 5).unwrap(), Route::Key(at));
        let plain = Flow::new(job());
        assert_eq!(route_flow(&plain, p, 5).unwrap(), Route::Spread(5));
        let other = (0..100)
            .map(|i| format!("h{i}"))
            .find(|h| partition_of(&format!("g:{h}"), p) != at)
            .unwrap();
        flow.children.push(Flow::new(job().group(other)));
        let e = route_flow(&flow, p, 0).unwrap_err().to_string();
        assert!(
            e.contains("share a partition") && e.contains("group"),
            "{e}"
        );
        let kids = [&flow.children[1].job];
        assert!(route_children(&kids, p, (at + 1) % p).is_err());
        assert_eq!(route_children(&kids, p, at).unwrap(), Route::Key(at));
        let plain_kids = [&flow.children[0].job];
        assert_eq!(route_children(&plain_kids, p, 3).unwrap(), Route::Key(3));
        // Chosen ids follow the flow's routing key; without one, the root's id decides.
        let chosen = |j: NewJob| Flow::new(j.job_id(JobId::in_partition(5)));
        let mut grouped = Flow::new(job().group("g"));
        grouped.children.push(chosen(job()));
        assert_eq!(route_flow(&grouped, p, 0).unwrap(), Route::Key(at));
        let mut by_id = chosen(job());
        by_id.children.push(chosen(job()));
        by_id.children.push(Flow::new(job()));
        assert_eq!(route_flow(&by_id, p, 0).unwrap(), Route::Id(5));
    }

    #[test]
    fn the_rate_split_adds_up_to_the_limit() {
        let per = Duration::from_secs(1);
        let shares = split_rate(RateLimit { max: 10, per }, 4).unwrap();
        let maxes: Vec<u32> = shares.iter().map(|s| s.max).collect();
        assert_eq!(maxes, [3, 3, 2, 2]);
        assert!(shares.iter().all(|s| s.per == per));
        assert_eq!(split_rate(RateLimit { max: 4, per }, 4).unwrap().len(), 4);
        let e = split_rate(RateLimit { max: 3, per }, 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("below one start per partition"), "{e}");
    }
}
