//! The script list: each script's name, body and the keys it declares (ARCHITECTURE.md's
//! script list is checked against it).

use super::*;

pub(super) const ST_QUEUED: Static = S::Status(JobStatus::Queued);

/// For an entry point that takes all its keys by name.
pub(super) const NO_KEYS: [Static; 0] = [];

pub(super) const ST_DONE: [Static; 4] = [
    S::Status(JobStatus::Completed),
    S::Status(JobStatus::Failed),
    S::Status(JobStatus::Partial),
    S::Status(JobStatus::Cancelled),
];

macro_rules! keys {
    ($($group:expr),* $(,)?) => {{
        const fn len() -> usize { 0 $(+ $group.len())* }
        const ALL: [Static; len()] = {
            let mut out = [Static::Active; len()];
            let mut i = 0;
            $(
                let group = $group;
                let mut j = 0;
                while j < group.len() {
                    out[i] = group[j];
                    i += 1;
                    j += 1;
                }
            )*
            let _ = i;
            out
        };
        &ALL
    }};
}

/// name, body, static keys, read only.
pub(super) type Spec = (&'static str, &'static str, &'static [Static], bool);

/// What the group rules touch (lanes, group counters, delayed jobs of groups, the ticket).
pub(super) const GROUPS: [Static; 8] = [
    crate::keys::LANES[0],
    crate::keys::LANES[1],
    crate::keys::LANES[2],
    S::Groups,
    S::GroupDelayed,
    S::GroupHeld,
    S::GroupLoad,
    S::Meta,
];

/// What a flow's bookkeeping touches when a job ends, is cancelled or is retried: its parent
/// released (ready or delayed), failed (finished, its unique key released) or held again.
pub(super) const FLOW: [Static; 15] = [
    S::Waiting,
    S::Chained,
    S::Tails,
    S::Seq,
    S::Marker,
    S::Due,
    S::Dedup,
    S::Stats,
    S::Subs,
    S::Log,
    S::LogGone,
    S::Hooks,
    S::Deliveries,
    S::DeliveriesDue,
    S::HookDeliveries,
];

/// What a cancel's cascade touches besides what a cancel does (`cascade_step`).
pub(super) const CASCADE: [Static; 2] = [S::Cascade, S::CascadeAt];

/// What creating jobs touches (`check_new` and `create_new` in the prelude): `enqueue`,
/// `flow`, and `schedule` with its own keys besides.
pub(super) const CREATE: &[Static] = keys![
    READY,
    DELAYED,
    GROUPS,
    FLOW,
    CASCADE,
    [ST_QUEUED, S::Leases],
    ST_DONE
];

pub(super) const SPECS: [Spec; 31] = [
    ("enqueue", include_str!("enqueue.lua"), CREATE, false),
    (
        "claim",
        include_str!("claim.lua"),
        keys![
            READY,
            DELAYED,
            GROUPS,
            FLOW,
            CASCADE,
            [
                S::Active,
                S::Leases,
                S::Claims,
                S::Claimed,
                S::Rate,
                ST_QUEUED
            ],
            ST_DONE
        ],
        false,
    ),
    (
        "finish",
        include_str!("finish.lua"),
        keys![
            READY,
            DELAYED,
            GROUPS,
            FLOW,
            CASCADE,
            [S::Active, S::Leases, S::Claims, S::Claimed, ST_QUEUED],
            ST_DONE,
            [S::Rate]
        ],
        false,
    ),
    (
        "heartbeat",
        include_str!("heartbeat.lua"),
        keys![
            [S::Active, S::Leases, S::Claims, S::Workers, S::Meta],
            DELAYED,
            READY,
            [S::Groups, S::GroupDelayed]
        ],
        false,
    ),
    (
        "progress",
        include_str!("progress.lua"),
        keys![[S::Active, S::Leases, S::Subs, S::Log, S::LogGone]],
        false,
    ),
    (
        "cancel",
        include_str!("cancel.lua"),
        keys![
            READY,
            DELAYED,
            GROUPS,
            FLOW,
            CASCADE,
            [S::Leases, ST_QUEUED],
            ST_DONE
        ],
        false,
    ),
    (
        "cascade",
        include_str!("cascade.lua"),
        keys![
            READY,
            DELAYED,
            GROUPS,
            FLOW,
            CASCADE,
            [S::Leases, ST_QUEUED],
            ST_DONE
        ],
        false,
    ),
    (
        "retry",
        include_str!("retry.lua"),
        keys![
            READY,
            DELAYED,
            GROUPS,
            FLOW,
            [S::Leases, ST_QUEUED],
            ST_DONE
        ],
        false,
    ),
    (
        "expired",
        include_str!("expired.lua"),
        keys![[S::Active, S::Cascade]],
        true,
    ),
    (
        "reap",
        include_str!("reap.lua"),
        keys![
            READY,
            DELAYED,
            GROUPS,
            FLOW,
            [S::Active, S::Leases, S::Claimed, ST_QUEUED],
            ST_DONE
        ],
        false,
    ),
    ("due", include_str!("due.lua"), keys![ST_DONE], true),
    (
        "sweep",
        include_str!("sweep.lua"),
        keys![[ST_QUEUED], ST_DONE, [S::Dedup, S::Leases]],
        false,
    ),
    ("page", include_str!("page.lua"), keys![NO_KEYS], true),
    ("read", include_str!("read.lua"), keys![[S::Leases]], true),
    (
        "stats",
        include_str!("stats.lua"),
        keys![
            [ST_QUEUED],
            ST_DONE,
            [S::Active, S::Leases],
            DELAYED,
            READY,
            [S::Workers, S::Stats, S::Waiting],
            GROUPS
        ],
        true,
    ),
    (
        "live",
        include_str!("live.lua"),
        keys![[S::Workers, S::Claimed]],
        true,
    ),
    (
        "deregister",
        include_str!("deregister.lua"),
        keys![[S::Workers, S::Claims]],
        false,
    ),
    (
        "heal",
        include_str!("heal.lua"),
        keys![[S::Dedup, S::Leases]],
        false,
    ),
    (
        "pause",
        include_str!("pause.lua"),
        keys![[S::Meta, S::Marker]],
        false,
    ),
    (
        "limit",
        include_str!("limit.lua"),
        keys![[S::Meta, S::Rate, S::Marker]],
        false,
    ),
    (
        "group",
        include_str!("group.lua"),
        keys![GROUPS, [S::Marker]],
        false,
    ),
    (
        "group_read",
        include_str!("group_read.lua"),
        keys![[S::Groups, S::GroupLoad]],
        true,
    ),
    (
        "groups",
        include_str!("groups.lua"),
        keys![[S::Groups, S::GroupLoad]],
        true,
    ),
    ("flow", include_str!("flow.lua"), CREATE, false),
    (
        "schedule",
        include_str!("schedule.lua"),
        keys![CREATE, [S::Schedules, S::ScheduleDue]],
        false,
    ),
    (
        "schedule_read",
        include_str!("schedule_read.lua"),
        keys![[S::Schedules, S::ScheduleDue]],
        true,
    ),
    (
        "webhook",
        include_str!("webhook.lua"),
        keys![[S::Webhooks, S::Hooks]],
        false,
    ),
    (
        "delivery",
        include_str!("delivery.lua"),
        keys![[
            S::Deliveries,
            S::DeliveriesDue,
            S::Parked,
            S::Webhooks,
            S::HookDeliveries
        ]],
        false,
    ),
    (
        "deliveries",
        include_str!("deliveries.lua"),
        keys![[S::Deliveries, S::DeliveriesDue, S::Parked, S::Webhooks]],
        true,
    ),
    ("kids", include_str!("kids.lua"), keys![NO_KEYS], true),
    (
        "delete",
        include_str!("delete.lua"),
        keys![[ST_QUEUED], ST_DONE, [S::Dedup, S::Leases]],
        false,
    ),
];
