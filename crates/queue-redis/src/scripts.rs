//! The Lua scripts, one per state change, with the state machine of `queue-core` compiled
//! into their shared prelude. Called by EVALSHA, falling back to EVAL on NOSCRIPT (a
//! restarted server, a failover, SCRIPT FLUSH): the fallback also caches the script on the
//! node that owns the queue's slot.

use std::fmt::Write;

use queue_core::{Event, JobStatus, Priority, apply};
use redis::{Value, aio::ConnectionLike};

/// One script: its full text and SHA1.
#[derive(Debug)]
pub(crate) struct Script {
    name: &'static str,
    code: String,
    sha: String,
}

/// Every script of the backend.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) enqueue: Script,
    pub(crate) claim: Script,
    pub(crate) heartbeat: Script,
    pub(crate) progress: Script,
    pub(crate) finish: Script,
    pub(crate) cancel: Script,
    pub(crate) retry: Script,
    pub(crate) reap: Script,
    pub(crate) sweep: Script,
}

impl Scripts {
    pub(crate) fn load() -> Self {
        let prelude = format!("{}{}", generated_tables(), include_str!("scripts/prelude.lua"));
        let make = |name: &'static str, body: &str| {
            let code = format!("{prelude}\n-- {name}\n{body}");
            let sha = redis::Script::new(&code).get_hash().to_owned();
            Script { name, code, sha }
        };
        Self {
            enqueue: make("enqueue", include_str!("scripts/enqueue.lua")),
            claim: make("claim", include_str!("scripts/claim.lua")),
            heartbeat: make("heartbeat", include_str!("scripts/heartbeat.lua")),
            progress: make("progress", include_str!("scripts/progress.lua")),
            finish: make("finish", include_str!("scripts/finish.lua")),
            cancel: make("cancel", include_str!("scripts/cancel.lua")),
            retry: make("retry", include_str!("scripts/retry.lua")),
            reap: make("reap", include_str!("scripts/reap.lua")),
            sweep: make("sweep", include_str!("scripts/sweep.lua")),
        }
    }
}

impl Script {
    /// Runs the script with one routing key (every key it touches shares its slot).
    pub(crate) async fn run<C: ConnectionLike + Send>(&self, conn: &mut C, key: &str, args: &[String]) -> redis::RedisResult<Value> {
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha.arg(&self.sha).arg(1).arg(key).arg(args);
        match evalsha.query_async::<Value>(conn).await {
            Err(err) if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                tracing::debug!(script = self.name, "script not cached on the server; sending it");
                let mut eval = redis::cmd("EVAL");
                eval.arg(&self.code).arg(1).arg(key).arg(args);
                eval.query_async(conn).await
            }
            other => other,
        }
    }
}

/// The Lua tables: `NEXT[status][event]` from `queue_core::apply` over every pair, and the
/// status and priority name sets. The rules exist once, in Rust.
fn generated_tables() -> String {
    let mut lua = String::from("local NEXT = {\n");
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
    lua.push_str(" }\n");
    lua
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lua_table_is_the_state_machine() {
        let lua = generated_tables();
        assert!(lua.contains("queued = { start = 'processing', cancel = 'cancelled', }"), "{lua}");
        assert!(lua.contains("completed = { }"), "{lua}");
        assert!(lua.contains("failed = { manual_retry = 'queued', }"), "{lua}");
        let scripts = Scripts::load();
        assert_ne!(scripts.claim.sha, scripts.finish.sha);
        assert_eq!(scripts.claim.sha.len(), 40);
    }
}
