//! The checker: reads the queue's raw Redis state and says what is lost, stranded or
//! inconsistent between records and indexes.

use std::collections::{HashMap, HashSet};

use queue_core::{JobId, JobStatus};
use serde::Serialize;

/// What the final state says.
#[derive(Debug, Default, Serialize)]
pub(crate) struct StateReport {
    /// Job records.
    pub(crate) records: usize,
    /// Jobs per status (a leased job counts as processing).
    pub(crate) by_status: HashMap<String, usize>,
    /// Enqueued jobs that are not finished (or missing).
    pub(crate) lost: Vec<String>,
    /// Jobs left queued with no entry that would let a worker claim them, or processing
    /// with no lease.
    pub(crate) stranded: Vec<String>,
    /// Index entries naming a job that has no record.
    pub(crate) dangling: Vec<String>,
    /// Records missing from an index they belong in.
    pub(crate) unindexed: Vec<String>,
}

impl StateReport {
    /// True when nothing is wrong.
    pub(crate) fn clean(&self) -> bool {
        self.lost.is_empty()
            && self.stranded.is_empty()
            && self.dangling.is_empty()
            && self.unindexed.is_empty()
    }
}

/// Everything stored under one queue's prefix.
#[derive(Debug, Default)]
pub(crate) struct Dump {
    /// `job:<id>` hashes.
    pub(crate) jobs: HashMap<String, HashMap<String, String>>,
    /// Sorted sets by key suffix (`ready:1`, `st:queued`, `uk:<key>`, ...): members.
    pub(crate) zsets: HashMap<String, HashSet<String>>,
    /// `leases`: job -> lease.
    pub(crate) leases: HashMap<String, String>,
    /// `dedup`: unique key -> job.
    pub(crate) dedup: HashMap<String, String>,
    /// `groups`: per group counters and settings (`run:<g>`, `max:<g>`, ...).
    pub(crate) groups: HashMap<String, String>,
    /// `gload`: group -> its count of unfinished jobs (stored as minus the count).
    pub(crate) unfinished: HashMap<String, i64>,
    /// `chained`: job -> the job waiting for it to end.
    pub(crate) chained: HashMap<String, String>,
    /// `tails`: sequence -> its newest unfinished member.
    pub(crate) tails: HashMap<String, String>,
}

impl Dump {
    /// Adds another partition's keys (a partitioned queue: README "Partitions"). Job ids
    /// are unique across partitions and a group or key lives in one, so the union is the
    /// queue; a set of one name in two partitions (`st:queued`, `ready:1`) is one set.
    pub(crate) fn merge(&mut self, other: Dump) {
        self.jobs.extend(other.jobs);
        for (name, members) in other.zsets {
            self.zsets.entry(name).or_default().extend(members);
        }
        self.leases.extend(other.leases);
        self.dedup.extend(other.dedup);
        self.groups.extend(other.groups);
        self.unfinished.extend(other.unfinished);
        self.chained.extend(other.chained);
        self.tails.extend(other.tails);
    }
}

/// Reads every key of the queue whose keys start with `prefix`, from every node.
pub(crate) async fn dump(node_urls: &[String], prefix: &str) -> anyhow::Result<Dump> {
    let mut out = Dump::default();
    for url in node_urls {
        let client = redis::Client::open(url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        // Replicas hold copies; only masters answer for their keys.
        let role: redis::Value = redis::cmd("ROLE").query_async(&mut conn).await?;
        if let redis::Value::Array(parts) = &role
            && matches!(parts.first(), Some(redis::Value::BulkString(r)) if r == b"slave")
        {
            continue;
        }
        let mut cursor: u64 = 0;
        let pattern = format!("{}*", prefix.replace('{', "\\{").replace('}', "\\}"));
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            for key in keys {
                let name = key[prefix.len()..].to_owned();
                let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut conn).await?;
                match kind.as_str() {
                    "hash" if name.starts_with("job:") => {
                        let fields: HashMap<String, String> = redis::cmd("HGETALL")
                            .arg(&key)
                            .query_async(&mut conn)
                            .await?;
                        out.jobs.insert(name[4..].to_owned(), fields);
                    }
                    "hash" if name == "leases" => {
                        out.leases = redis::cmd("HGETALL")
                            .arg(&key)
                            .query_async(&mut conn)
                            .await?;
                    }
                    "hash" if name == "groups" => {
                        out.groups = redis::cmd("HGETALL")
                            .arg(&key)
                            .query_async(&mut conn)
                            .await?;
                    }
                    "hash" if name == "dedup" => {
                        out.dedup = redis::cmd("HGETALL")
                            .arg(&key)
                            .query_async(&mut conn)
                            .await?;
                    }
                    "hash" if name == "chained" || name == "tails" => {
                        let map: HashMap<String, String> = redis::cmd("HGETALL")
                            .arg(&key)
                            .query_async(&mut conn)
                            .await?;
                        if name == "chained" {
                            out.chained = map;
                        } else {
                            out.tails = map;
                        }
                    }
                    "zset" if name == "gload" => {
                        let scored: Vec<(String, i64)> = redis::cmd("ZRANGE")
                            .arg(&key)
                            .arg(0)
                            .arg(-1)
                            .arg("WITHSCORES")
                            .query_async(&mut conn)
                            .await?;
                        out.unfinished = scored.into_iter().map(|(g, s)| (g, -s)).collect();
                    }
                    "zset" => {
                        let members: Vec<String> = redis::cmd("ZRANGE")
                            .arg(&key)
                            .arg(0)
                            .arg(-1)
                            .query_async(&mut conn)
                            .await?;
                        out.zsets.insert(name, members.into_iter().collect());
                    }
                    _ => {}
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    Ok(out)
}

/// Checks the dump: every enqueued job finished, every record in its indexes, every
/// index entry backed by a record.
pub(crate) fn check(dump: &Dump, enqueued: &[JobId]) -> StateReport {
    let mut report = StateReport {
        records: dump.jobs.len(),
        ..StateReport::default()
    };
    let empty = HashSet::new();
    let zset = |name: &str| dump.zsets.get(name).unwrap_or(&empty);
    let status_of = |id: &str| -> Option<String> {
        let fields = dump.jobs.get(id)?;
        if dump.leases.contains_key(id) {
            return Some("processing".into());
        }
        fields.get("status").cloned()
    };
    for id in enqueued {
        let id = id.to_string();
        let finished = status_of(&id)
            .and_then(|s| s.parse::<JobStatus>().ok())
            .is_some_and(|s| s.is_terminal());
        if !finished {
            report.lost.push(id);
        }
    }
    for (name, members) in &dump.zsets {
        let is_index = ["ready:", "delayed:", "st:", "uk:", "gq:", "kids:"]
            .iter()
            .any(|p| name.starts_with(p))
            || ["jobs", "finished", "active", "gdelayed", "waiting"].contains(&name.as_str());
        if !is_index {
            continue;
        }
        for m in members {
            if !dump.jobs.contains_key(m) {
                report.dangling.push(format!("{name} -> {m}"));
            }
        }
    }
    for (id, fields) in &dump.jobs {
        let status = status_of(id).unwrap_or_default();
        *report.by_status.entry(status.clone()).or_default() += 1;
        let mut missing = Vec::new();
        // Exactly one status index: `st:queued` for a job not finished (running too), its
        // own for a finished one.
        let own = if status == "processing" {
            "st:queued".to_owned()
        } else {
            format!("st:{status}")
        };
        for other in JobStatus::ALL {
            let name = format!("st:{other}");
            if name != own && zset(&name).contains(id) {
                report
                    .unindexed
                    .push(format!("{id}: {status} but also in {name}"));
            }
        }
        let band = match fields.get("priority").map(String::as_str) {
            Some("high") => 0,
            Some("low") => 2,
            _ => 1,
        };
        match status.as_str() {
            "processing" => {
                if !zset("st:queued").contains(id) {
                    missing.push("st:queued".into());
                }
                if !zset("active").contains(id) {
                    report
                        .stranded
                        .push(format!("{id}: processing without an active entry"));
                }
            }
            "queued" => {
                if !zset("st:queued").contains(id) {
                    missing.push("st:queued".into());
                }
                let waits = fields
                    .get("kids_waiting")
                    .and_then(|w| w.parse::<i64>().ok())
                    .is_some_and(|w| w > 0);
                let after = fields.get("after").filter(|a| !a.is_empty());
                let claimable = match fields.get("group").filter(|g| !g.is_empty()) {
                    // A job waiting for another to end is its entry in `chained`, and that
                    // one is unfinished (else nothing will place it).
                    _ if after.is_some() => {
                        let ahead = after.expect("checked");
                        dump.chained.get(ahead) == Some(id)
                            && status_of(ahead)
                                .and_then(|s| s.parse::<JobStatus>().ok())
                                .is_some_and(|s| s.is_active())
                    }
                    // A parent waiting on its children is in `waiting` (and nowhere else).
                    _ if waits => zset("waiting").contains(id),
                    // A group's ready set, and its lane unless the group does not admit
                    // a start now (a lost lane would strand them: they end up unfinished).
                    Some(g) => {
                        zset(&format!("gq:{band}:{g}")).contains(id)
                            || zset("gdelayed").contains(id)
                    }
                    None => {
                        zset(&format!("ready:{band}")).contains(id)
                            || zset(&format!("delayed:{band}")).contains(id)
                    }
                };
                if !claimable {
                    report
                        .stranded
                        .push(format!("{id}: queued without a ready or delayed entry"));
                }
                if let Some(uk) = fields.get("unique_key").filter(|k| !k.is_empty())
                    && dump.dedup.get(uk) != Some(id)
                {
                    missing.push(format!("dedup[{uk}]"));
                }
            }
            s => {
                // Its status set is also its retention clock: `finished` is no longer
                // written (versions before 0.3 did).
                if !zset(&format!("st:{s}")).contains(id) {
                    missing.push(format!("st:{s}"));
                }
                if zset("finished").contains(id) {
                    report
                        .unindexed
                        .push(format!("{id}: in `finished`, which nothing writes now"));
                }
                if let Some(uk) = fields.get("unique_key").filter(|k| !k.is_empty())
                    && dump.dedup.get(uk) == Some(id)
                {
                    report
                        .unindexed
                        .push(format!("{id}: finished but still holds unique key {uk}"));
                }
            }
        }
        if let Some(uk) = fields.get("unique_key").filter(|k| !k.is_empty())
            && !zset(&format!("uk:{uk}")).contains(id)
        {
            missing.push(format!("uk:{uk}"));
        }
        for m in missing {
            report.unindexed.push(format!("{id}: not in {m}"));
        }
    }
    // Each group's running count is its number of leases (the lease keeps the group after
    // the cancel flag): a count above it is a slot that never came back.
    let mut leased: HashMap<&str, i64> = HashMap::new();
    for lease in dump.leases.values() {
        let group = lease.split('|').nth(5).map(|c| c.get(1..).unwrap_or(""));
        if let Some(g) = group.filter(|g| !g.is_empty()) {
            *leased.entry(g).or_default() += 1;
        }
    }
    for (field, value) in &dump.groups {
        if let Some(g) = field.strip_prefix("run:") {
            let running: i64 = value.parse().unwrap_or(-1);
            let held = leased.get(g).copied().unwrap_or(0);
            if running != held {
                report.stranded.push(format!(
                    "group {g}: {running} running counted, {held} leases held"
                ));
            }
        }
    }
    for (g, held) in leased {
        if !dump.groups.contains_key(&format!("run:{g}")) {
            report
                .stranded
                .push(format!("group {g}: {held} leases held, none counted"));
        }
    }
    // Each group's count of unfinished jobs (what `groups` lists) is its number of records
    // queued or running.
    let mut unfinished: HashMap<&str, i64> = HashMap::new();
    for (id, fields) in &dump.jobs {
        let active = status_of(id).is_some_and(|s| s == "queued" || s == "processing");
        if let Some(g) = fields.get("group").filter(|g| !g.is_empty() && active) {
            *unfinished.entry(g.as_str()).or_default() += 1;
        }
    }
    for (g, counted) in &dump.unfinished {
        let held = unfinished.get(g.as_str()).copied().unwrap_or(0);
        if *counted != held {
            report.unindexed.push(format!(
                "group {g}: {counted} unfinished counted, {held} records unfinished"
            ));
        }
    }
    for (g, held) in &unfinished {
        if !dump.unfinished.contains_key(*g) {
            report.unindexed.push(format!(
                "group {g}: {held} records unfinished, none counted"
            ));
        }
    }
    // A parent's count of unfinished children is its number of child records queued or
    // running (a finished parent keeps counting: a retried child counts again).
    let mut children_active: HashMap<&str, i64> = HashMap::new();
    for (id, fields) in &dump.jobs {
        let active = status_of(id).is_some_and(|s| s == "queued" || s == "processing");
        if let Some(p) = fields.get("parent").filter(|p| !p.is_empty() && active) {
            *children_active.entry(p.as_str()).or_default() += 1;
        }
    }
    for (id, fields) in &dump.jobs {
        let Some(counted) = fields.get("kids_waiting") else {
            continue;
        };
        let counted: i64 = counted.parse().unwrap_or(-1);
        let held = children_active.get(id.as_str()).copied().unwrap_or(0);
        if counted != held {
            report.unindexed.push(format!(
                "parent {id}: {counted} children waiting counted, {held} unfinished"
            ));
        }
    }
    for (id, fields) in &dump.jobs {
        let waits = fields
            .get("kids_waiting")
            .and_then(|w| w.parse::<i64>().ok())
            .is_some_and(|w| w > 0);
        let queued = status_of(id).as_deref() == Some("queued");
        if zset("waiting").contains(id) && !(waits && queued) {
            report.unindexed.push(format!(
                "{id}: in `waiting` but not a queued parent with children"
            ));
        }
    }
    for (uk, id) in &dump.dedup {
        let active = status_of(id).is_some_and(|s| s == "queued" || s == "processing");
        if !active {
            report
                .dangling
                .push(format!("dedup[{uk}] -> {id} (not active)"));
        }
    }
    for id in dump.leases.keys() {
        if !zset("active").contains(id) {
            report
                .dangling
                .push(format!("leases[{id}] without an active entry"));
        }
    }
    // Every chain and sequence tail points at an unfinished job: a tail that ended would
    // chain the next member behind nothing.
    let active = |id: &str| {
        status_of(id)
            .and_then(|s| s.parse::<JobStatus>().ok())
            .is_some_and(|s| s.is_active())
    };
    for (ahead, waiter) in &dump.chained {
        let waits = dump.jobs.get(waiter).and_then(|f| f.get("after"));
        if waits != Some(ahead) || !active(waiter) {
            report.dangling.push(format!(
                "chained {ahead} -> {waiter}: it does not wait for it"
            ));
        }
    }
    for (sequence, tail) in &dump.tails {
        if !active(tail) {
            report
                .stranded
                .push(format!("sequence {sequence}: its tail {tail} has ended"));
        }
    }
    report.lost.sort();
    report.stranded.sort();
    report.dangling.sort();
    report.unindexed.sort();
    report
}

/// The ordered sequences' problems in the executions: members of one sequence (in creation
/// order: each sequence is one producer's, which enqueues one job after the other) whose
/// first starts are out of that order, or whose executions overlapped in time (a second
/// execution of one job is `history::overlaps`' business).
pub(crate) fn sequence_order(dump: &Dump, runs: &[crate::history::Run]) -> Vec<String> {
    let mut members: HashMap<&str, Vec<(u64, &str)>> = HashMap::new();
    for (id, fields) in &dump.jobs {
        if let Some(sequence) = fields.get("sequence") {
            let created = fields
                .get("created_at")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            members
                .entry(sequence)
                .or_default()
                .push((created, id.as_str()));
        }
    }
    let mut by_job: HashMap<&str, Vec<&crate::history::Run>> = HashMap::new();
    for run in runs {
        by_job.entry(run.job.as_str()).or_default().push(run);
    }
    let mut out = Vec::new();
    for (sequence, mut list) in members {
        list.sort();
        let mut last_first: Option<(u64, &str)> = None;
        let mut spans: Vec<(u64, u64, &str)> = Vec::new();
        for (_, id) in list {
            let Some(runs) = by_job.get(id) else {
                continue; // cancelled before it ever started
            };
            let first = runs.iter().map(|r| r.start).min().unwrap_or(0);
            if let Some((before, earlier)) = last_first
                && first < before
            {
                out.push(format!(
                    "sequence {sequence}: {id} first started at {first}, before {earlier} \
                     (enqueued earlier) at {before}"
                ));
            }
            last_first = Some((first, id));
            spans.extend(runs.iter().map(|r| (r.start, r.end, id)));
        }
        spans.sort();
        let mut reach: Option<(u64, &str)> = None;
        for (start, end, id) in spans {
            if let Some((until, other)) = reach
                && start < until
                && other != id
            {
                out.push(format!(
                    "sequence {sequence}: {id} started at {start} while {other} ran until {until}"
                ));
            }
            if reach.is_none_or(|(until, _)| end > until) {
                reach = Some((end, id));
            }
        }
    }
    out.sort();
    out
}
