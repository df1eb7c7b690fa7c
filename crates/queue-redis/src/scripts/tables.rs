//! The Lua tables generated from `queue-core`: every rule of core over its whole domain,
//! loaded before the prelude (the rules exist once, in Rust).

use super::*;

pub(super) fn lua_bool(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// How `event` moves a group's count of unfinished jobs, from any status it applies to.
pub(super) fn event_unfinished_change(event: Event) -> Option<i64> {
    JobStatus::ALL.into_iter().find_map(|from| {
        apply(from, event)
            .ok()
            .map(|to| unfinished_change(Some(from), to))
    })
}

/// The Lua tables: every rule of `queue_core` (`apply` over every pair, and each function
/// of `queue_core::backend::rules` over its whole domain). The rules exist once, in Rust.
pub(super) fn generated_tables() -> String {
    let mut lua = format!(
        "local EVENT_LOG_LEN = {}\nlocal CANCEL_STEP = {}\nlocal MAX_FLOW_DEPTH = {}\n\
         local MAX_WEBHOOKS = {}\nlocal MAX_SCHEDULES = {}\nlocal NEXT = {{\n",
        queue_core::EVENT_LOG_LEN,
        queue_core::backend::CANCEL_STEP,
        queue_core::backend::MAX_FLOW_DEPTH,
        queue_core::backend::MAX_WEBHOOKS,
        queue_core::backend::MAX_SCHEDULES,
    );
    for from in JobStatus::ALL {
        let _ = write!(lua, "  {} = {{", from.as_str());
        for event in Event::ALL {
            if let Ok(to) = apply(from, event) {
                let _ = write!(lua, " {} = '{}',", event.as_str(), to.as_str());
            }
        }
        lua.push_str(" },\n");
    }
    lua.push_str("}\nlocal VALID = {");
    for s in JobStatus::ALL {
        let _ = write!(lua, " {} = true,", s.as_str());
    }
    lua.push_str(" }\nlocal TERMINAL = {");
    for s in JobStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
        let _ = write!(lua, " {} = true,", s.as_str());
    }
    lua.push_str(" }\nlocal BAND = {");
    for p in Priority::ALL {
        let _ = write!(lua, " {} = {},", p.as_str(), p.band());
    }
    lua.push_str(" }\nlocal PNAME = {");
    for p in Priority::ALL {
        let _ = write!(lua, " [{}] = '{}',", p.band(), p.as_str());
    }
    lua.push_str(" }\nlocal EFFECT = {\n");
    for event in Event::ALL {
        let _ = write!(lua, "  {} = {{", event.as_str());
        for (field, change) in rules::effect(event) {
            let _ = write!(lua, " {{ '{}', '{}' }},", field.as_str(), change.as_str());
        }
        lua.push_str(" },\n");
    }
    lua.push_str("}\nlocal START_DEFERRED = {");
    for (field, change) in rules::effect(Event::Start) {
        if !rules::PROGRESS_FIELDS.contains(field) {
            let _ = write!(lua, " {{ '{}', '{}' }},", field.as_str(), change.as_str());
        }
    }
    let _ = write!(
        lua,
        " }}\nlocal MAX_ATTEMPTS_KEPT = {}",
        queue_core::MAX_ATTEMPTS_KEPT
    );
    let _ = write!(
        lua,
        "\nlocal LOST_WORKER_KEPT_MS = {}",
        queue_core::backend::duration_ms(queue_core::backend::LOST_WORKER_KEPT)
    );
    lua.push_str("\nlocal SETTLE = {\n");
    for kind in OutcomeKind::ALL {
        let _ = write!(lua, "  {} = {{", kind.as_str());
        for cancel in [false, true] {
            let _ = write!(lua, " [{}] = {{", lua_bool(cancel));
            for retries_left in [false, true] {
                let facts = AttemptFacts {
                    cancel_requested: cancel,
                    retries_left,
                };
                let event = rules::settle(kind, facts);
                let _ = write!(lua, " [{}] = '{}',", lua_bool(retries_left), event.as_str());
            }
            lua.push_str(" },");
        }
        lua.push_str(" },\n");
    }
    lua.push_str("}\nlocal HOLDS_QUEUE = {");
    for kind in OutcomeKind::ALL {
        if rules::holds_queue(kind) {
            let _ = write!(lua, " {} = true,", kind.as_str());
        }
    }
    lua.push_str(" }\nlocal EXPIRE = {");
    for cancel in [false, true] {
        let _ = write!(lua, " [{}] = {{", lua_bool(cancel));
        for retries_left in [false, true] {
            let event = rules::on_lease_expired(AttemptFacts {
                cancel_requested: cancel,
                retries_left,
            });
            let _ = write!(lua, " [{}] = '{}',", lua_bool(retries_left), event.as_str());
        }
        lua.push_str(" },");
    }
    lua.push_str(" }\nlocal CANCEL = {\n");
    for status in JobStatus::ALL {
        let _ = write!(lua, "  {} = {{", status.as_str());
        for requested in [false, true] {
            let action = rules::on_cancel(status, requested);
            let _ = write!(lua, " [{}] = '{}',", lua_bool(requested), action.as_str());
        }
        lua.push_str(" },\n");
    }
    // queue_core::backend::on_key_held: KEY_ACTION[mode][holder].
    lua.push_str("}\nlocal KEY_ACTION = {\n");
    for mode in queue_core::KeyModeKind::ALL {
        let _ = write!(lua, "  {} = {{", mode.as_str());
        for holder in queue_core::backend::Holder::ALL {
            let action = queue_core::backend::on_key_held(mode, holder);
            let _ = write!(lua, " {} = '{}',", holder.as_str(), action.as_str());
        }
        lua.push_str(" },\n");
    }
    lua.push_str("}\nlocal PLACE = {");
    for event in Event::ALL {
        let _ = write!(
            lua,
            " {} = '{}',",
            event.as_str(),
            rules::placement(event).as_str()
        );
    }
    // queue_core::series: each span's tag, step and keep; the latency bins' bounds.
    lua.push_str(" }\nlocal SERIES = {");
    for span in queue_core::SeriesSpan::ALL {
        let _ = write!(
            lua,
            " {{ '{}', {}, {} }},",
            span.tag(),
            span.step_ms(),
            span.keep_ms()
        );
    }
    lua.push_str(" }\nlocal LATENCY_BOUNDS = {");
    for b in queue_core::series::LATENCY_BOUNDS_MS {
        let _ = write!(lua, " {b},");
    }
    lua.push_str(" }\nlocal COUNTER = {");
    for event in Event::ALL {
        if let Some(counter) = rules::counter(event) {
            let _ = write!(lua, " {} = '{}',", event.as_str(), counter);
        }
    }
    // Per event (the same from every status it applies to: `unfinished_changes_by_event`),
    // and `new` for an enqueue.
    let _ = write!(
        lua,
        " }}\nlocal UNFINISHED_CHANGE = {{ new = {},",
        unfinished_change(None, JobStatus::Queued)
    );
    for event in Event::ALL {
        if let Some(change) = event_unfinished_change(event).filter(|c| *c != 0) {
            let _ = write!(lua, " {} = {change},", event.as_str());
        }
    }
    // Flows: queue_core::backend::{on_child_ended, on_child_reopened, accepts_children}.
    lua.push_str(" }\nlocal CHILD_POLICY = { [''] = 'fail_parent',");
    for policy in ChildPolicy::ALL {
        let _ = write!(lua, " ['{0}'] = '{0}',", policy.as_str());
    }
    lua.push_str(" }\nlocal CHILD_ENDED = {\n");
    for policy in ChildPolicy::ALL {
        let _ = write!(lua, "  ['{}'] = {{", policy.as_str());
        for child in JobStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            let _ = write!(lua, " {} = {{", child.as_str());
            for parent in JobStatus::ALL {
                let _ = write!(lua, " {} = {{", parent.as_str());
                for last in [false, true] {
                    let action = on_child_ended(policy, child, parent, u32::from(!last));
                    let _ = write!(lua, " [{}] = '{}',", lua_bool(last), action.as_str());
                }
                lua.push_str(" },");
            }
            lua.push_str(" },");
        }
        lua.push_str(" },\n");
    }
    lua.push_str("}\nlocal REOPEN = {");
    for parent in JobStatus::ALL {
        let _ = write!(lua, " {} = {{", parent.as_str());
        for started in [false, true] {
            let action = on_child_reopened(parent, started);
            let _ = write!(lua, " [{}] = '{}',", lua_bool(started), action.as_str());
        }
        lua.push_str(" },");
    }
    lua.push_str(" }\nlocal KEEPS_CHILD = {");
    for status in JobStatus::ALL
        .into_iter()
        .filter(|s| retention_keeps_child(Some(*s)))
    {
        let _ = write!(lua, " {} = true,", status.as_str());
    }
    lua.push_str(" }\nlocal ACCEPTS_CHILDREN = {");
    for status in JobStatus::ALL.into_iter().filter(|s| accepts_children(*s)) {
        let _ = write!(lua, " {} = true,", status.as_str());
    }
    let (before, between) = child_failed_template();
    let _ = write!(lua, " }}\nlocal CHILD_MSG = {{ '{before}', '{between}' }}");
    lua.push_str("\nlocal LEASE_MSG = {");
    for retries_left in [false, true] {
        let (before, after) = rules::lease_expired_template(retries_left);
        let _ = write!(
            lua,
            " [{}] = {{ '{before}', '{after}' }},",
            lua_bool(retries_left)
        );
    }
    lua.push_str(" }\n");
    lua
}
