//! The order of starts: strict priority between bands, and within a band the lanes (the
//! jobs without a group, and each group that admits a start) take turns, the lowest ticket
//! first and the jobs without a group on a tie (`ungrouped_goes_first`), a group keeping
//! its lane for `weight` starts in a row (`weighted_turn`). A job whose cost the queue's
//! rate window does not admit holds every start behind it. Runs inside a claim, under the
//! queue's row lock, and writes back the ticks, lanes, turns and group starts.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use queue_core::backend::{Millis, ungrouped_goes_first, weighted_turn};
use queue_core::{RateLimit, Result};
use sqlx::PgConnection;

use crate::PostgresBackend;
use crate::control::Gate;
use crate::floors::Floors;
use crate::groups::Group;
use crate::rows::{COLUMNS, Row};

/// What a claim may start: at most `max`, under the queue's rate `window`, scanning the
/// jobs without a group from `floors`.
pub(crate) struct Ask<'a> {
    pub(crate) max: usize,
    pub(crate) now: Millis,
    pub(crate) window: Option<&'a (RateLimit, Vec<(Millis, u32)>)>,
    pub(crate) floors: Floors,
    /// The due floor the promotion left.
    pub(crate) due_floor: Millis,
}

/// A band's ready rows, fetched a page at a time (locked, skipping rows others hold).
#[derive(Default)]
struct Buffer {
    rows: VecDeque<Row>,
    exhausted: bool,
    /// The place of the last row fetched.
    last: Option<i64>,
}

impl Buffer {
    /// What the scan saw, for its floor (`Floors::after`): the first row fetched and left,
    /// the last fetched; `None` when it did not scan.
    fn scanned(&self) -> Option<(Option<i64>, Option<i64>)> {
        self.exhausted
            .then(|| (self.rows.front().map(|r| r.place), self.last))
    }
}

impl PostgresBackend {
    /// The rows to start, in order, and when the rate window will admit the job that held
    /// the rest back (ms from now).
    pub(crate) async fn pick(
        &self,
        conn: &mut PgConnection,
        gate: &Gate,
        ask: Ask<'_>,
    ) -> Result<(Vec<Row>, Option<u64>)> {
        let s = &self.inner.schema;
        let q = &self.inner.queue.queue_name;
        let now = ask.now;
        let mut tick = gate.tick;
        let mut ungrouped = gate.ungrouped;
        let ready: Vec<(String, i16, i64)> = sqlx::query_as(&format!(
            "SELECT grp, band, count(*) FROM {s}.jobs WHERE queue = $1 AND ready \
             AND grp IS NOT NULL GROUP BY grp, band"
        ))
        .bind(q)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        let stored: Vec<(i16, String, i64)> = sqlx::query_as(&format!(
            "SELECT band, grp, ticket FROM {s}.lanes WHERE queue = $1"
        ))
        .bind(q)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        let mut counts: BTreeMap<(String, u8), i64> = ready
            .into_iter()
            .map(|(g, b, n)| ((g, b as u8), n))
            .collect();
        let mut names: BTreeSet<String> = counts.keys().map(|(g, _)| g.clone()).collect();
        names.extend(stored.iter().map(|(_, g, _)| g.clone()));
        let names: Vec<String> = names.into_iter().collect();
        let mut groups = self.load_groups(conn, &names, now).await?;
        let mut lanes: [BTreeSet<(i64, String)>; 3] = Default::default();
        let mut lane_of: BTreeMap<(String, u8), i64> = BTreeMap::new();
        for (band, g, ticket) in stored {
            lane_of.insert((g.clone(), band as u8), ticket);
            lanes[band as usize].insert((ticket, g));
        }
        for g in &names {
            refresh(g, &groups, &counts, &mut lanes, &mut lane_of, tick, now);
        }

        let mut used: u64 = ask
            .window
            .map_or(0, |(_, w)| w.iter().map(|(_, c)| u64::from(*c)).sum());
        let fits = |used: u64, cost: u32| ask.window.is_none_or(|(l, _)| l.admits(used, cost));
        let mut free: [Buffer; 3] = Default::default();
        let mut of_group: BTreeMap<(String, u8), Buffer> = BTreeMap::new();
        let mut out: Vec<Row> = Vec::new();
        let mut group_starts: Vec<(String, i32)> = Vec::new();
        let mut turned: BTreeSet<String> = BTreeSet::new();
        let mut blocked_cost = None;
        let mut band = 0u8;
        'bands: while out.len() < ask.max && band < 3 {
            let b = usize::from(band);
            let want = (ask.max - out.len()) as i64;
            let from = ask.floors.from(band);
            let head = self
                .peek(conn, &mut free[b], (None, from), band, want)
                .await?;
            let lane = lanes[b].first().cloned();
            let take_free = match (head, &lane) {
                (false, None) => {
                    band += 1;
                    continue;
                }
                (true, None) => true,
                (false, Some(_)) => false,
                (true, Some((ticket, _))) => {
                    ungrouped_goes_first(ungrouped[b] as u64, *ticket as u64)
                }
            };
            if take_free {
                let cost = free[b].rows[0].record.cost.unwrap_or(1);
                if !fits(used, cost) {
                    blocked_cost = Some(cost);
                    break 'bands;
                }
                used += u64::from(cost);
                out.push(free[b].rows.pop_front().expect("peeked"));
                tick += 1;
                ungrouped[b] = tick;
                continue;
            }
            let (ticket, g) = lane.expect("checked");
            let key = (g.clone(), band);
            let buffer = of_group.entry(key.clone()).or_default();
            if !self.peek(conn, buffer, (Some(&g), 0), band, want).await? {
                // Its ready rows are held by others now: no lane for it in this claim.
                lanes[b].remove(&(ticket, g.clone()));
                lane_of.remove(&key);
                continue;
            }
            let cost = buffer.rows[0].record.cost.unwrap_or(1);
            if !fits(used, cost) {
                blocked_cost = Some(cost);
                break 'bands;
            }
            used += u64::from(cost);
            out.push(buffer.rows.pop_front().expect("peeked"));
            *counts.entry(key.clone()).or_insert(1) -= 1;
            let state = groups.entry(g.clone()).or_default();
            let (turn, new_ticket) = weighted_turn(state.turn, state.weight);
            state.turn = turn;
            turned.insert(g.clone());
            if new_ticket {
                lanes[b].remove(&(ticket, g.clone()));
                lane_of.remove(&key);
            }
            state.running += 1;
            if state.rate.is_some() {
                state.starts.push((now, cost));
                group_starts.push((g.clone(), cost as i32));
            }
            state.next_cost = self
                .next_cost(conn, &g, &counts, &mut of_group, want)
                .await?;
            tick += 1;
            refresh(&g, &groups, &counts, &mut lanes, &mut lane_of, tick, now);
        }
        let blocked = blocked_cost.and_then(|cost| {
            let (limit, starts) = ask.window?;
            crate::control::admits_at(*limit, starts, now, cost)
                .map(|at| at.saturating_sub(now).max(0) as u64)
        });
        let held_again = groups
            .values()
            .filter_map(|g| g.admits_again_at(now))
            .min()
            .map(|at| at.saturating_sub(now).max(0) as u64);
        let floors = [0u8, 1, 2].map(|b| ask.floors.after(b, free[usize::from(b)].scanned()));
        let lanes = Lanes {
            cursor: (gate.cursor, gate.stored.swept_ms),
            tick,
            ungrouped,
            floors,
            due_floor: ask.due_floor,
            swept: ask.floors.sweeping,
            lane_of: &lane_of,
            groups: &groups,
            turned: &turned,
            group_starts: &group_starts,
        };
        self.save_lanes(conn, lanes, now).await?;
        let hint = match (blocked, held_again) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok((out, hint))
    }

    /// Whether `buffer` (the jobs without a group of `band`, or `group`'s) has a row,
    /// fetching the next page (from place `floor` on) when it is empty.
    async fn peek(
        &self,
        conn: &mut PgConnection,
        buffer: &mut Buffer,
        (group, floor): (Option<&str>, i64),
        band: u8,
        want: i64,
    ) -> Result<bool> {
        if buffer.rows.is_empty() && !buffer.exhausted {
            // One page per lane per claim: a claim takes at most `want` more from it.
            buffer.exhausted = true;
            // `grp IS NULL` and `grp = $3` spelled apart: each matches its partial index
            // (`IS NOT DISTINCT FROM` matches neither and scans the queue's every row).
            let of_group = if group.is_some() {
                "grp = $3"
            } else {
                "grp IS NULL AND $3::text IS NULL"
            };
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM {}.jobs WHERE queue = $1 AND ready AND band = $2 \
                 AND {of_group} AND place >= $5 ORDER BY place LIMIT $4 \
                 FOR UPDATE SKIP LOCKED",
                self.inner.schema
            ))
            .bind(&self.inner.queue.queue_name)
            .bind(i16::from(band))
            .bind(group)
            .bind(want)
            .bind(floor)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| self.db(e))?;
            for r in &rows {
                let row = Row::decode(r)?;
                buffer.last = Some(row.place);
                buffer.rows.push_back(row);
            }
        }
        Ok(!buffer.rows.is_empty())
    }

    /// The cost of `group`'s next job (its first of the highest priority), if any.
    async fn next_cost(
        &self,
        conn: &mut PgConnection,
        group: &str,
        counts: &BTreeMap<(String, u8), i64>,
        of_group: &mut BTreeMap<(String, u8), Buffer>,
        want: i64,
    ) -> Result<Option<u32>> {
        for band in 0..3u8 {
            let key = (group.to_owned(), band);
            if counts.get(&key).copied().unwrap_or(0) <= 0 {
                continue;
            }
            let buffer = of_group.entry(key).or_default();
            if self
                .peek(conn, buffer, (Some(group), 0), band, want)
                .await?
            {
                return Ok(buffer.rows.front().map(|r| r.record.cost.unwrap_or(1)));
            }
        }
        Ok(None)
    }

    async fn save_lanes(&self, conn: &mut PgConnection, l: Lanes<'_>, now: Millis) -> Result<()> {
        let Lanes {
            cursor,
            tick,
            ungrouped,
            floors,
            due_floor,
            swept,
            lane_of,
            groups,
            turned,
            group_starts,
        } = l;
        let s = &self.inner.schema;
        let q = &self.inner.queue.queue_name;
        let bands: Vec<i16> = lane_of.keys().map(|(_, b)| i16::from(*b)).collect();
        let names: Vec<&str> = lane_of.keys().map(|(g, _)| g.as_str()).collect();
        let tickets: Vec<i64> = lane_of.values().copied().collect();
        let turn_names: Vec<&str> = turned.iter().map(String::as_str).collect();
        let turns: Vec<i32> = turned
            .iter()
            .map(|g| groups.get(g).map_or(0, |s| s.turn as i32))
            .collect();
        let start_names: Vec<&str> = group_starts.iter().map(|(g, _)| g.as_str()).collect();
        let start_costs: Vec<i32> = group_starts.iter().map(|(_, c)| *c).collect();
        sqlx::query(&format!(
            "WITH q AS (INSERT INTO {s}.cursors (queue, n, tick, ungrouped, floors, due_floor, \
                   swept_ms) VALUES ($1, $15, $2, $3, $12, $14, \
                   CASE WHEN $13 THEN $11 ELSE $16 END) ON CONFLICT DO NOTHING), \
             gone AS (DELETE FROM {s}.lanes WHERE queue = $1), \
             t AS (UPDATE {s}.groups AS g SET turn = t.turn \
                   FROM unnest($7::text[], $8::int4[]) AS t(grp, turn) \
                   WHERE g.queue = $1 AND g.grp = t.grp), \
             st AS (INSERT INTO {s}.group_starts (queue, grp, ms, cost) \
                    SELECT $1, grp, $11, cost FROM unnest($9::text[], $10::int4[]) AS x(grp, cost)) \
             SELECT 1"
        ))
        .bind(q)
        .bind(tick)
        .bind(&ungrouped[..])
        .bind(&bands)
        .bind(&names)
        .bind(&tickets)
        .bind(&turn_names)
        .bind(&turns)
        .bind(&start_names)
        .bind(&start_costs)
        .bind(now)
        .bind(&floors[..])
        .bind(swept)
        .bind(due_floor)
        .bind(cursor.0 + 1)
        .bind(cursor.1)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        sqlx::query(&format!(
            "INSERT INTO {s}.lanes (queue, band, grp, ticket) \
             SELECT $1, * FROM unnest($2::int2[], $3::text[], $4::int8[])"
        ))
        .bind(q)
        .bind(&bands)
        .bind(&names)
        .bind(&tickets)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.db(e))?;
        Ok(())
    }
}

/// What a claim writes back: a new cursor (after `cursor`: the newest's number and its
/// sweep time), the lanes and its groups' turns and starts (`save_lanes`).
struct Lanes<'a> {
    cursor: (i64, Millis),
    tick: i64,
    ungrouped: [i64; 3],
    floors: [i64; 3],
    due_floor: Millis,
    swept: bool,
    lane_of: &'a BTreeMap<(String, u8), i64>,
    groups: &'a BTreeMap<String, Group>,
    turned: &'a BTreeSet<String>,
    group_starts: &'a [(String, i32)],
}

/// Gives `group` a lane (at `tick`) in each band where it has ready jobs and admits a
/// start, and takes away the others.
fn refresh(
    group: &str,
    groups: &BTreeMap<String, Group>,
    counts: &BTreeMap<(String, u8), i64>,
    lanes: &mut [BTreeSet<(i64, String)>; 3],
    lane_of: &mut BTreeMap<(String, u8), i64>,
    tick: i64,
    now: Millis,
) {
    let admits = groups.get(group).is_some_and(|g| g.admits(now));
    for band in 0..3u8 {
        let key = (group.to_owned(), band);
        let wanted = admits && counts.get(&key).copied().unwrap_or(0) > 0;
        match (lane_of.get(&key).copied(), wanted) {
            (None, true) => {
                lane_of.insert(key, tick);
                lanes[usize::from(band)].insert((tick, group.to_owned()));
            }
            (Some(ticket), false) => {
                lane_of.remove(&key);
                lanes[usize::from(band)].remove(&(ticket, group.to_owned()));
            }
            _ => {}
        }
    }
}
