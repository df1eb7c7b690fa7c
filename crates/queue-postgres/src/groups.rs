//! Groups: fair share by weighted turns between lanes, concurrency slots, pause, weights,
//! rate limits and holds (`queue_core::backend` group rules), their counts and listing.
//! A group's counts are read from its jobs; its settings and turn live in `groups`.

use std::collections::BTreeMap;
use std::time::Duration;

use queue_core::backend::{Millis, from_millis, group_admits, group_rate_admits};
use queue_core::{GroupControl, GroupList, GroupStats, RateLimit, Result};
use sqlx::PgConnection;

use crate::PostgresBackend;

/// One group as a claim sees it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Group {
    pub(crate) paused: bool,
    pub(crate) concurrency: Option<u32>,
    pub(crate) weight: Option<u32>,
    pub(crate) turn: u32,
    pub(crate) rate: Option<RateLimit>,
    pub(crate) held_until: Millis,
    pub(crate) running: u64,
    /// Its starts inside its rate window, oldest first.
    pub(crate) starts: Vec<(Millis, u32)>,
    /// The cost of its next job (its first of the highest priority), if it has one ready.
    pub(crate) next_cost: Option<u32>,
}

impl Group {
    /// Whether it may start its next job now (`group_admits`, `group_rate_admits`).
    pub(crate) fn admits(&self, now: Millis) -> bool {
        let used = self.used(now);
        group_admits(self.paused, self.running, self.concurrency)
            && group_rate_admits(
                self.rate,
                used,
                self.next_cost.unwrap_or(1),
                (self.held_until > 0).then_some(self.held_until),
                now,
            )
    }

    fn used(&self, now: Millis) -> u64 {
        self.rate.map_or(0, |l| {
            let floor = l.window_floor(now);
            self.starts
                .iter()
                .filter(|(at, _)| *at > floor)
                .map(|(_, c)| u64::from(*c))
                .sum()
        })
    }

    /// When time alone may let it start again (a hold, or its rate window), if that is
    /// what holds it back.
    pub(crate) fn admits_again_at(&self, now: Millis) -> Option<Millis> {
        if now < self.held_until {
            return Some(self.held_until);
        }
        let limit = self.rate?;
        let cost = self.next_cost.unwrap_or(1);
        if limit.admits(self.used(now), cost) {
            return None;
        }
        crate::control::admits_at(limit, &self.starts, now, cost)
    }
}

type GroupRow = (
    String,
    bool,
    Option<i32>,
    Option<i32>,
    i32,
    Option<i32>,
    Option<i64>,
    i64,
);

impl PostgresBackend {
    /// The named groups as a claim sees them (settings, running, window, next cost).
    pub(crate) async fn load_groups(
        &self,
        conn: &mut PgConnection,
        names: &[String],
        now: Millis,
    ) -> Result<BTreeMap<String, Group>> {
        let s = &self.inner.schema;
        let q = &self.inner.queue.queue_name;
        let mut out: BTreeMap<String, Group> = names
            .iter()
            .map(|n| (n.clone(), Group::default()))
            .collect();
        if names.is_empty() {
            return Ok(out);
        }
        let rows: Vec<GroupRow> = sqlx::query_as(&format!(
            "SELECT grp, paused, concurrency, weight, turn, rate_max, rate_per_ms, held_until \
             FROM {s}.groups WHERE queue = $1 AND grp = ANY($2)"
        ))
        .bind(q)
        .bind(names)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        for (name, paused, concurrency, weight, turn, rmax, rper, held) in rows {
            let g = out.entry(name).or_default();
            g.paused = paused;
            g.concurrency = concurrency.map(|c| c as u32);
            g.weight = weight.map(|w| w as u32);
            g.turn = turn as u32;
            g.held_until = held;
            if let (Some(max), Some(per)) = (rmax, rper) {
                g.rate = RateLimit::new(max as u32, Duration::from_millis(per as u64)).ok();
            }
        }
        let running: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT grp, count(*) FROM {s}.jobs WHERE queue = $1 AND grp = ANY($2) \
             AND lease_token IS NOT NULL GROUP BY grp"
        ))
        .bind(q)
        .bind(names)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        for (name, n) in running {
            if let Some(g) = out.get_mut(&name) {
                g.running = n as u64;
            }
        }
        let heads: Vec<(String, i32)> = sqlx::query_as(&format!(
            "SELECT DISTINCT ON (grp) grp, cost FROM {s}.jobs WHERE queue = $1 \
             AND grp = ANY($2) AND ready ORDER BY grp, band, place"
        ))
        .bind(q)
        .bind(names)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        for (name, cost) in heads {
            if let Some(g) = out.get_mut(&name) {
                g.next_cost = Some(cost as u32);
            }
        }
        let limited: Vec<String> = out
            .iter()
            .filter(|(_, g)| g.rate.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        if !limited.is_empty() {
            let starts: Vec<(String, i64, i32)> = sqlx::query_as(&format!(
                "SELECT grp, ms, cost FROM {s}.group_starts WHERE queue = $1 AND grp = ANY($2) \
                 ORDER BY grp, ms"
            ))
            .bind(q)
            .bind(&limited)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
            for (name, ms, cost) in starts {
                if let Some(g) = out.get_mut(&name) {
                    g.starts.push((ms, cost as u32));
                }
            }
            for (name, g) in out.iter_mut().filter(|(_, g)| g.rate.is_some()) {
                let floor = g.rate.expect("limited").window_floor(now);
                sqlx::query(&format!(
                    "DELETE FROM {s}.group_starts WHERE queue = $1 AND grp = $2 AND ms <= $3"
                ))
                .bind(q)
                .bind(name)
                .bind(floor)
                .execute(&mut *conn)
                .await
                .map_err(|e| self.db(e))?;
                g.starts.retain(|(at, _)| *at > floor);
            }
        }
        Ok(out)
    }

    /// Removes `group`'s lanes when it no longer admits a start (or in `bands` where it
    /// has no ready job left), as a change to it is committed.
    pub(crate) async fn refresh_lanes(&self, conn: &mut PgConnection, group: &str) -> Result<()> {
        let s = &self.inner.schema;
        let q = &self.inner.queue.queue_name;
        let now = self.now(conn).await?;
        let groups = self.load_groups(conn, &[group.to_owned()], now).await?;
        let admits = groups.get(group).is_some_and(|g| g.admits(now));
        sqlx::query(&format!(
            "DELETE FROM {s}.lanes AS l WHERE queue = $1 AND grp = $2 AND (NOT $3 OR NOT EXISTS \
             (SELECT 1 FROM {s}.jobs WHERE queue = $1 AND grp = $2 AND ready AND band = l.band))"
        ))
        .bind(q)
        .bind(group)
        .bind(admits)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// Changes one group's settings (under the queue's row lock, as claims read them).
    pub async fn change_group(&self, group: &str, change: GroupControl) -> Result<()> {
        queue_core::backend::check_group_name(group)?;
        let s = &self.inner.schema;
        let q = &self.inner.queue.queue_name;
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<_> = async {
            self.gate(&mut tx, true).await?;
            let set = match change {
                GroupControl::Pause => "paused = true".to_owned(),
                GroupControl::Resume => "paused = false, held_until = 0".to_owned(),
                GroupControl::Concurrency(limit) => {
                    queue_core::backend::check_group_concurrency(limit)?;
                    format!("concurrency = {}", sql_opt(limit))
                }
                GroupControl::Weight(weight) => {
                    queue_core::backend::check_group_weight(weight)?;
                    match weight {
                        Some(w) => format!("weight = {w}"),
                        None => "weight = NULL, turn = 0".to_owned(),
                    }
                }
                GroupControl::RateLimit(limit) => match limit {
                    Some(l) => format!(
                        "rate_max = {}, rate_per_ms = {}",
                        l.max,
                        queue_core::backend::duration_ms(l.per)
                    ),
                    None => "rate_max = NULL, rate_per_ms = NULL, held_until = 0".to_owned(),
                },
            };
            sqlx::query(&format!(
                "INSERT INTO {s}.groups (queue, grp) VALUES ($1, $2) ON CONFLICT DO NOTHING"
            ))
            .bind(q)
            .bind(group)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            sqlx::query(&format!(
                "UPDATE {s}.groups SET {set} WHERE queue = $1 AND grp = $2"
            ))
            .bind(q)
            .bind(group)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            if matches!(change, GroupControl::RateLimit(None)) {
                sqlx::query(&format!(
                    "DELETE FROM {s}.group_starts WHERE queue = $1 AND grp = $2"
                ))
                .bind(q)
                .bind(group)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db(e))?;
            }
            self.refresh_lanes(&mut tx, group).await?;
            self.wake(&mut tx, None).await?;
            Ok(())
        }
        .await;
        self.close(tx, out).await
    }

    /// Holds `group`'s starts until `until` (a rate-limited outcome of one of its jobs).
    pub(crate) async fn hold_group(
        &self,
        conn: &mut PgConnection,
        group: &str,
        until: Millis,
    ) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO {s}.groups AS g (queue, grp, held_until) VALUES ($1, $2, $3) \
             ON CONFLICT (queue, grp) DO UPDATE SET held_until = greatest(g.held_until, $3)",
            s = self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .bind(group)
        .bind(until)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        self.refresh_lanes(conn, group).await
    }

    /// One group's counts and settings.
    pub async fn group(&self, group: &str) -> Result<GroupStats> {
        queue_core::backend::check_group_name(group)?;
        let mut list = self.group_stats(&[group.to_owned()]).await?;
        Ok(list.pop().unwrap_or_else(|| GroupStats::new(group)))
    }

    async fn group_stats(&self, names: &[String]) -> Result<Vec<GroupStats>> {
        let s = &self.inner.schema;
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.db(e))?;
        let out: Result<_> = async {
            let now = self.now(&mut tx).await?;
            let groups = self.load_groups(&mut tx, names, now).await?;
            let counts: Vec<(String, i64, i64)> = sqlx::query_as(&format!(
                "SELECT grp, count(*) FILTER (WHERE ready), count(*) FROM {s}.jobs \
                 WHERE queue = $1 AND grp = ANY($2) AND finished_ms IS NULL GROUP BY grp"
            ))
            .bind(&self.inner.queue.queue_name)
            .bind(names)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.db(e))?;
            Ok(names
                .iter()
                .map(|name| {
                    let g = groups.get(name).cloned().unwrap_or_default();
                    let (ready, unfinished) = counts
                        .iter()
                        .find(|(n, _, _)| n == name)
                        .map_or((0, 0), |(_, r, u)| (*r as u64, *u as u64));
                    let mut stats = GroupStats::new(name.clone());
                    stats.ready = ready;
                    stats.running = g.running;
                    stats.unfinished = unfinished;
                    stats.paused = g.paused;
                    stats.concurrency = g.concurrency;
                    stats.weight = g.weight;
                    stats.rate_limit = g.rate;
                    stats.held_until = (g.held_until > now).then(|| from_millis(g.held_until));
                    stats
                })
                .collect())
        }
        .await;
        self.close(tx, out).await
    }

    /// The groups with unfinished jobs, the `limit` busiest in full (most unfinished
    /// first, then by name).
    pub async fn groups(&self, limit: usize) -> Result<GroupList> {
        queue_core::backend::check_groups_limit(limit)?;
        let busy: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT grp, count(*) AS n FROM {}.jobs WHERE queue = $1 AND grp IS NOT NULL \
             AND finished_ms IS NULL GROUP BY grp ORDER BY n DESC, grp",
            self.inner.schema
        ))
        .bind(&self.inner.queue.queue_name)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(|e| self.db(e))?;
        let mut list = GroupList::default();
        let shown: Vec<String> = busy.iter().take(limit).map(|(g, _)| g.clone()).collect();
        list.groups = self.group_stats(&shown).await?;
        for (_, n) in busy.iter().skip(limit) {
            list.other_groups += 1;
            list.other_unfinished += *n as u64;
        }
        Ok(list)
    }
}

fn sql_opt(v: Option<u32>) -> String {
    v.map_or_else(|| "NULL".to_owned(), |v| v.to_string())
}
