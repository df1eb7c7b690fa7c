//! The prelude's predicates that mirror a core function, each run by Redis over a grid of
//! its domain and compared with the core function, answer by answer: a rule the Lua
//! copies by hand cannot drift from the one in `queue-core` without failing here.
//!
//! Each check evaluates the real prelude (generated tables included) with one test-only
//! body that calls the predicate for every point of the grid. They need the Redis of
//! `REDIS_URL` (default `redis://127.0.0.1:6379`), as every Redis test does.

use queue_core::backend::{
    Millis, group_admits, group_rate_admits, is_parent_of, lease_holds, listed_at,
    retention_cutoff, ungrouped_goes_first, weighted_turn, worker_listing,
};
use queue_core::series::{LATENCY_BOUNDS_MS, latency_bin};
use queue_core::{JobStatus, RateLimit, SeriesSpan, Webhook};

use super::{generated_tables, prelude};

/// `NOW` of every check (ms).
const NOW: Millis = 1_700_000_000_000;

/// The answers of `body` (Lua returning a list of integers), run after the prelude with
/// `ARGV` = prefix, `NOW`, then `args`.
fn eval(body: &str, args: &[String]) -> Vec<i64> {
    let code = format!(
        "{}{}\nbegin(ARGV)\nreturn (function()\n{body}\nend)()",
        generated_tables(),
        prelude::prelude()
    );
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut conn = redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("the checks of the prelude need Redis (REDIS_URL)");
    redis::cmd("EVAL")
        .arg(code)
        .arg(0)
        .arg("check:")
        .arg(NOW)
        .arg(args)
        .query(&mut conn)
        .expect("the check runs")
}

/// Runs `call` (a Lua expression over `a`, `b`, `c`, `d`: the strings of one point,
/// `n(x)` to read one as a number) for every point; true is 1.
fn each(call: &str, points: &[[String; 4]]) -> Vec<bool> {
    let body = format!(
        "local function n(x) return tonumber(x) end\n\
         local out = {{}}\n\
         for i = 3, #ARGV, 4 do\n\
           local a, b, c, d = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]\n\
           out[#out + 1] = ({call}) and 1 or 0\n\
         end\n\
         return out"
    );
    let args: Vec<String> = points.iter().flatten().cloned().collect();
    eval(&body, &args).into_iter().map(|v| v == 1).collect()
}

fn point(a: impl ToString, b: impl ToString, c: impl ToString, d: impl ToString) -> [String; 4] {
    [a.to_string(), b.to_string(), c.to_string(), d.to_string()]
}

#[test]
fn rate_admits_is_core_s() {
    let mut points = Vec::new();
    let mut expected = Vec::new();
    for max in [1u32, 2, 5, 10, 1000] {
        let limit = RateLimit::new(max, std::time::Duration::from_secs(1)).unwrap();
        for used in [0u64, 1, 2, 4, 5, 9, 10, 11, 999, 1000] {
            for cost in [1u32, 2, 5, 10, 11, 1000] {
                points.push(point(max, used, cost, ""));
                expected.push(limit.admits(used, cost));
            }
        }
    }
    assert_eq!(each("rate_admits(n(a), n(b), n(c))", &points), expected);
}

#[test]
fn latency_bin_is_core_s() {
    let mut grid: Vec<Millis> = vec![0, 1, i64::from(u32::MAX)];
    for bound in LATENCY_BOUNDS_MS {
        let bound = bound as Millis;
        grid.extend([bound - 1, bound, bound + 1]);
    }
    let body = "local out = {}\n\
                for i = 3, #ARGV do out[#out + 1] = latency_bin(tonumber(ARGV[i])) end\n\
                return out";
    let args: Vec<String> = grid.iter().map(i64::to_string).collect();
    let expected: Vec<i64> = grid.iter().map(|ms| latency_bin(*ms) as i64).collect();
    assert_eq!(eval(body, &args), expected);
}

/// The lease fence: `holds` (a lease as `decode_lease` reads it) against `lease_holds`.
#[test]
fn the_lease_fence_is_core_s() {
    let mut points = Vec::new();
    let mut expected = Vec::new();
    for held in [None, Some("t1"), Some("t2")] {
        for expires in [NOW - 1, NOW, NOW + 1, NOW + 30_000] {
            for token in ["", "t1", "t2"] {
                points.push(point(held.unwrap_or("-"), expires, token, ""));
                expected.push(lease_holds(held.map(|t| (t, expires)), token, NOW));
            }
        }
    }
    let call = "holds(a ~= '-' and { token = a, expires = n(b) } or nil, c)";
    assert_eq!(each(call, &points), expected);
}

#[test]
fn parent_identity_is_core_s() {
    let mut points = Vec::new();
    let mut expected = Vec::new();
    for parent in [NOW - 1, NOW, NOW + 1] {
        for child in [NOW - 1, NOW, NOW + 1] {
            points.push(point(parent, child, "", ""));
            expected.push(is_parent_of(parent, child));
        }
    }
    assert_eq!(each("is_parent_of(n(a), n(b))", &points), expected);
}

/// The webhook filter: each webhook's stored filter, parsed and matched in Lua, against
/// `Webhook::wants`, for every finished status, task and group.
#[test]
fn the_webhook_filter_is_core_s() {
    let hooks = [
        Webhook::new("a", "https://x.test", "s").events([JobStatus::Completed]),
        Webhook::new("b", "https://x.test", "s")
            .events([JobStatus::Failed, JobStatus::Partial])
            .task("t1"),
        Webhook::new("c", "https://x.test", "s")
            .events(JobStatus::ALL.into_iter().filter(|s| s.is_terminal()))
            .group("g1"),
        Webhook::new("d", "https://x.test", "s")
            .events([JobStatus::Cancelled])
            .task("t2")
            .group("g2"),
    ];
    let mut points = Vec::new();
    let mut expected = Vec::new();
    for hook in &hooks {
        for status in JobStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for task in ["t1", "t2"] {
                for group in [None, Some("g1"), Some("g2")] {
                    points.push(point(hook.filter(), status, task, group.unwrap_or("-")));
                    expected.push(hook.wants(task, group, status));
                }
            }
        }
    }
    let call = "hook_wants(parse_hook_filter(a), b, c, d ~= '-' and d or nil)";
    assert_eq!(each(call, &points), expected);
}

#[test]
fn group_admission_is_core_s() {
    let mut points = Vec::new();
    let mut expected = Vec::new();
    for paused in [false, true] {
        for running in [0u64, 1, 2, 3] {
            for max in [None, Some(1u32), Some(2), Some(3)] {
                let max_arg = max.map_or("-".to_owned(), |m| m.to_string());
                points.push(point(paused, running, max_arg, ""));
                expected.push(group_admits(paused, running, max));
            }
        }
    }
    let call = "group_slot_admits(a == 'true', n(b), c ~= '-' and n(c) or nil)";
    assert_eq!(each(call, &points), expected);
}

#[test]
fn the_weighted_turn_is_core_s() {
    let mut args = Vec::new();
    let mut expected = Vec::new();
    for turn in 0u32..6 {
        for weight in [None, Some(1u32), Some(2), Some(3), Some(5)] {
            args.push(turn.to_string());
            args.push(weight.map_or("-".to_owned(), |w| w.to_string()));
            let (next, fresh) = weighted_turn(turn, weight);
            expected.extend([i64::from(next), i64::from(fresh)]);
        }
    }
    let body = "local out = {}\n\
                for i = 3, #ARGV, 2 do\n\
                  local w = ARGV[i + 1] ~= '-' and tonumber(ARGV[i + 1]) or nil\n\
                  local next, fresh = turn_after(tonumber(ARGV[i]), w)\n\
                  out[#out + 1] = next\n\
                  out[#out + 1] = fresh and 1 or 0\n\
                end\n\
                return out";
    assert_eq!(eval(body, &args), expected);
}

#[test]
fn the_lane_choice_is_core_s() {
    let mut points = Vec::new();
    let mut expected = Vec::new();
    for ungrouped in [0u64, 1, 2, 7] {
        for group in [0u64, 1, 2, 7] {
            points.push(point(ungrouped, group, "", ""));
            expected.push(ungrouped_goes_first(ungrouped, group));
        }
    }
    assert_eq!(each("ungrouped_goes_first(n(a), n(b))", &points), expected);
}

/// A rate window's floor, and the charts' bucket of a time and its expiry, per span.
#[test]
fn windows_and_buckets_are_core_s() {
    let times = [0, 1, 59_999, 60_000, 899_999, 900_000, NOW, NOW + 1];
    let mut args = Vec::new();
    let mut expected = Vec::new();
    for per in [1u64, 1_000, 60_000] {
        let limit = RateLimit::new(1, std::time::Duration::from_millis(per)).unwrap();
        for now in times {
            args.extend([now.to_string(), limit.per_ms().to_string(), "0".into()]);
            expected.push(limit.window_floor(now));
        }
    }
    for span in SeriesSpan::ALL {
        for ms in times {
            args.extend([
                ms.to_string(),
                span.step_ms().to_string(),
                span.keep_ms().to_string(),
            ]);
            let bucket = span.bucket(ms);
            expected.extend([bucket, span.expires_at(bucket)]);
        }
    }
    let windows = 3 * times.len();
    let body = format!(
        "local out = {{}}\n\
         for i = 3, #ARGV, 3 do\n\
           local a, b, c = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])\n\
           if (i - 3) / 3 < {windows} then\n\
             out[#out + 1] = window_floor(a, b)\n\
           else\n\
             local index = bucket_of(a, b)\n\
             out[#out + 1] = index\n\
             out[#out + 1] = bucket_expiry(index, b, c)\n\
           end\n\
         end\n\
         return out"
    );
    assert_eq!(eval(&body, &args), expected);
}

/// A worker is listed (alive or lost) exactly when `worker_listing` lists it: the end of its
/// window at or after `workers_listed_from(now)`.
#[test]
fn worker_liveness_is_core_s() {
    let kept = queue_core::backend::duration_ms(queue_core::backend::LOST_WORKER_KEPT);
    let mut points = Vec::new();
    let mut expected = Vec::new();
    for until in [
        NOW - kept - 1,
        NOW - kept,
        NOW - kept + 1,
        NOW - 1,
        NOW,
        NOW + 1,
    ] {
        points.push(point(until, "", "", ""));
        expected.push(worker_listing(until, NOW).is_some());
    }
    assert_eq!(each("n(a) >= workers_listed_from(NOW)", &points), expected);
}

/// Retention: a job finished at `at` is due exactly when core says, with the cutoff the
/// sweep and `due` compare with.
#[test]
fn the_retention_cutoff_is_core_s() {
    let mut args = Vec::new();
    let mut expected = Vec::new();
    for retention in [0, 1, 60_000, 3_600_000] {
        for now in [NOW - 1, NOW, NOW + 1] {
            args.extend([now.to_string(), retention.to_string()]);
            expected.push(retention_cutoff(now, retention));
        }
    }
    let body = "local out = {}\n\
                for i = 3, #ARGV, 2 do\n\
                  out[#out + 1] = retention_cutoff(tonumber(ARGV[i]), tonumber(ARGV[i + 1]))\n\
                end\n\
                return out";
    assert_eq!(eval(body, &args), expected);
}

/// A job's place in the listings: when it finished while finished, else its creation.
#[test]
fn the_listed_time_is_core_s() {
    let mut args = Vec::new();
    let mut expected = Vec::new();
    for status in JobStatus::ALL {
        for finished in [None, Some(NOW + 500)] {
            args.extend([
                status.to_string(),
                NOW.to_string(),
                finished.map_or("-".into(), |f: Millis| f.to_string()),
            ]);
            expected.push(listed_at(status, NOW, finished));
        }
    }
    let body = "local out = {}\n\
                for i = 3, #ARGV, 3 do\n\
                  local f = ARGV[i + 2] ~= '-' and tonumber(ARGV[i + 2]) or nil\n\
                  out[#out + 1] = listed_at(ARGV[i], tonumber(ARGV[i + 1]), f)\n\
                end\n\
                return out";
    assert_eq!(eval(body, &args), expected);
}

/// A group held by a handler's rate-limit report starts nothing until the hold ends.
#[test]
fn a_group_s_hold_is_core_s() {
    let mut points = Vec::new();
    let mut expected = Vec::new();
    for held in [None, Some(NOW - 1), Some(NOW), Some(NOW + 1)] {
        points.push(point(
            held.map_or("-".into(), |h: Millis| h.to_string()),
            "",
            "",
            "",
        ));
        expected.push(!group_rate_admits(None, 0, 1, held, NOW));
    }
    assert_eq!(
        each("held_back(a ~= '-' and n(a) or nil, NOW)", &points),
        expected
    );
}
