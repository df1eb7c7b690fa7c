//! The Lua scripts, one per state change (and a few reads that need the server's clock or
//! one atomic view), with every rule of `queue-core` compiled into their shared prelude as
//! tables, and every key they touch declared.
//!
//! On Redis 7+ they are loaded once as a Redis Function library (`FUNCTION LOAD`, which
//! also persists and replicates them) and called with FCALL: the prelude's tables and
//! helpers are then built once per load instead of once per call, which saves about 5 µs of
//! Redis CPU per call. A server without Functions gets the same code through EVALSHA,
//! falling back to EVAL on NOSCRIPT. Either way a missing library or script (a restarted
//! server, a failover, SCRIPT/FUNCTION FLUSH) is sent again and the call retried: a call
//! that failed that way did nothing. Loading a library deletes this crate's older ones,
//! so they do not pile up across deployments (a worker still on an old version reloads
//! its own on its next call).

use std::{
    fmt::Write,
    sync::atomic::{AtomicBool, Ordering},
};

use queue_core::backend::{
    Event, accepts_children, apply, child_failed_template, on_child_ended, on_child_reopened,
    retention_keeps_child,
    rules::{self, AttemptFacts, OutcomeKind},
    unfinished_change,
};
use queue_core::{ChildPolicy, JobStatus, Priority};
use redis::{RedisResult, Value, aio::ConnectionLike};

use crate::keys::{DELAYED, Keys, READY, Static};

/// One entry point: its function name, its standalone script and the static keys it
/// declares (its other keys follow them in KEYS).
#[derive(Debug)]
pub(crate) struct Script {
    name: &'static str,
    function: String,
    code: String,
    sha: String,
    statics: &'static [Static],
    /// The static keys' names for this backend's queue, built once.
    static_keys: Vec<String>,
}

use Static as S;

#[cfg(test)]
mod checks;
mod prelude;
mod specs;
mod tables;

use specs::*;
use tables::generated_tables;

impl Script {
    /// How many static keys it declares: its other keys start at `KEYS[n + 1]`.
    pub(crate) fn static_keys(&self) -> usize {
        self.statics.len()
    }
}

/// Every entry point, and how they are called on this server.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) enqueue: Script,
    pub(crate) claim: Script,
    pub(crate) finish: Script,
    pub(crate) heartbeat: Script,
    pub(crate) progress: Script,
    pub(crate) cancel: Script,
    pub(crate) cascade: Script,
    pub(crate) retry: Script,
    pub(crate) expired: Script,
    pub(crate) reap: Script,
    pub(crate) due: Script,
    pub(crate) sweep: Script,
    pub(crate) page: Script,
    pub(crate) read: Script,
    pub(crate) stats: Script,
    pub(crate) live: Script,
    pub(crate) deregister: Script,
    pub(crate) heal: Script,
    pub(crate) pause: Script,
    pub(crate) limit: Script,
    pub(crate) group: Script,
    pub(crate) group_read: Script,
    pub(crate) groups: Script,
    pub(crate) flow: Script,
    pub(crate) schedule: Script,
    pub(crate) schedule_read: Script,
    pub(crate) webhook: Script,
    pub(crate) delivery: Script,
    pub(crate) deliveries: Script,
    pub(crate) kids: Script,
    pub(crate) delete: Script,
    library: String,
    library_name: String,
    functions: AtomicBool,
}

/// `local KEY = {name = KEYS[i], ...}` and `NSTATIC` for one entry point. Naming a key the entry
/// point did not declare raises an error (before any write: every script reads first).
fn header(statics: &[Static]) -> String {
    let mut out = String::from("local KEY = setmetatable({");
    for (i, s) in statics.iter().enumerate() {
        let _ = write!(out, " {} = KEYS[{}],", s.lua_name(), i + 1);
    }
    let _ = writeln!(out, " }}, UNDECLARED)\nlocal NSTATIC = {}", statics.len());
    out
}

/// An entry point's body; one that writes sends its deferred writes (`flush`) once the
/// body has answered.
fn wrapped(body: &str, read_only: bool) -> String {
    if read_only {
        body.to_owned()
    } else {
        format!("local reply = (function()\n{body}\nend)()\nflush(KEY)\nreturn reply")
    }
}

impl Scripts {
    pub(crate) fn load(keys: &Keys) -> Self {
        let prelude = format!("{}{}", generated_tables(), prelude::prelude());
        // The library name carries a hash of its code, so two versions of this crate can
        // share a server during a rolling deploy.
        let version = {
            let mut all = prelude.clone();
            SPECS.iter().for_each(|(_, b, k, ro)| {
                all.push_str(&wrapped(b, *ro));
                all.push_str(&header(k));
            });
            redis::Script::new(&all).get_hash()[..12].to_owned()
        };
        let lib = format!("{LIBRARY_PREFIX}{version}");
        let mut library = format!("#!lua name={lib}\n{prelude}\n");
        for (name, body, statics, read_only) in SPECS {
            let flags = if read_only {
                ", flags = { 'no-writes' }"
            } else {
                ""
            };
            let _ = write!(
                library,
                "redis.register_function{{ function_name = '{lib}_{name}', callback = function(KEYS, ARGV)\n{}begin(ARGV)\n{}\nend{flags} }}\n",
                header(statics),
                wrapped(body, read_only)
            );
        }
        let mut scripts = SPECS.iter().map(|(name, body, statics, read_only)| {
            let code = format!(
                "{prelude}\n{}begin(ARGV)\n-- {name}\n{}",
                header(statics),
                wrapped(body, *read_only)
            );
            let sha = redis::Script::new(&code).get_hash().to_owned();
            Script {
                name,
                function: format!("{lib}_{name}"),
                code,
                sha,
                statics,
                static_keys: statics.iter().map(|s| keys.of(*s)).collect(),
            }
        });
        let mut next = || scripts.next().expect("one script per spec");
        Self {
            enqueue: next(),
            claim: next(),
            finish: next(),
            heartbeat: next(),
            progress: next(),
            cancel: next(),
            cascade: next(),
            retry: next(),
            expired: next(),
            reap: next(),
            due: next(),
            sweep: next(),
            page: next(),
            read: next(),
            stats: next(),
            live: next(),
            deregister: next(),
            heal: next(),
            pause: next(),
            limit: next(),
            group: next(),
            group_read: next(),
            groups: next(),
            flow: next(),
            schedule: next(),
            schedule_read: next(),
            webhook: next(),
            delivery: next(),
            deliveries: next(),
            kids: next(),
            delete: next(),
            library,
            library_name: lib,
            functions: AtomicBool::new(false),
        }
    }

    /// The same entry points for another queue's keys, called the same way.
    pub(crate) fn for_keys(&self, keys: &Keys) -> Self {
        let scripts = Self::load(keys);
        scripts
            .functions
            .store(self.uses_functions(), Ordering::Relaxed);
        scripts
    }

    /// Loads the function library (and deletes this crate's older ones); without
    /// Functions (Redis < 7, or `allowed` false), scripts are used.
    pub(crate) async fn prepare<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        allowed: bool,
    ) -> RedisResult<()> {
        if !allowed {
            return Ok(());
        }
        match self.load_library(conn).await {
            Ok(()) => {
                self.functions.store(true, Ordering::Relaxed);
                self.delete_old_libraries(conn).await;
                Ok(())
            }
            // Only a server without Functions (or a user not allowed to load them) falls back
            // to scripts; anything else (no auth, a failing server) is the caller's problem.
            Err(err) if !functions_refused(&err) => Err(err),
            Err(err) => {
                tracing::info!(error = %err, "Redis Functions unavailable; using EVALSHA scripts");
                self.functions.store(false, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    async fn load_library<C: ConnectionLike + Send>(&self, conn: &mut C) -> RedisResult<()> {
        redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(&self.library)
            .query_async::<Value>(conn)
            .await
            .map(drop)
    }

    async fn delete_old_libraries<C: ConnectionLike + Send>(&self, conn: &mut C) {
        let listed = redis::cmd("FUNCTION")
            .arg("LIST")
            .arg("LIBRARYNAME")
            .arg(format!("{LIBRARY_PREFIX}*"))
            .query_async::<Value>(conn)
            .await;
        let Ok(listed) = listed else { return };
        for name in library_names(&listed) {
            if name != self.library_name && name.starts_with(LIBRARY_PREFIX) {
                let deleted = redis::cmd("FUNCTION")
                    .arg("DELETE")
                    .arg(&name)
                    .query_async::<Value>(conn)
                    .await;
                if let Err(err) = deleted {
                    tracing::debug!(library = %name, error = %err, "could not delete an old function library");
                }
            }
        }
    }

    /// Runs `script` with its static keys, then `dynamic` keys, then `args` (after the
    /// prefix and the time every script takes first).
    pub(crate) async fn run<C: ConnectionLike + Send>(
        &self,
        script: &Script,
        conn: &mut C,
        dynamic: &[String],
        args: &[String],
    ) -> RedisResult<Value> {
        let numkeys = script.static_keys.len() + dynamic.len();
        if self.functions.load(Ordering::Relaxed) {
            let mut fcall = redis::cmd("FCALL");
            fcall
                .arg(&script.function)
                .arg(numkeys)
                .arg(&script.static_keys)
                .arg(dynamic)
                .arg(args);
            match fcall.query_async::<Value>(conn).await {
                Err(err) if err.to_string().contains("Function not found") => {
                    tracing::debug!(
                        script = script.name,
                        "function library missing on the server; loading it"
                    );
                    self.load_library(conn).await?;
                    fcall.query_async(conn).await
                }
                other => other,
            }
        } else {
            let mut evalsha = redis::cmd("EVALSHA");
            evalsha
                .arg(&script.sha)
                .arg(numkeys)
                .arg(&script.static_keys)
                .arg(dynamic)
                .arg(args);
            match evalsha.query_async::<Value>(conn).await {
                Err(err)
                    if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    tracing::debug!(
                        script = script.name,
                        "script not cached on the server; sending it"
                    );
                    let mut eval = redis::cmd("EVAL");
                    eval.arg(&script.code)
                        .arg(numkeys)
                        .arg(&script.static_keys)
                        .arg(dynamic)
                        .arg(args);
                    eval.query_async(conn).await
                }
                other => other,
            }
        }
    }

    /// True when calls go through the function library.
    pub(crate) fn uses_functions(&self) -> bool {
        self.functions.load(Ordering::Relaxed)
    }
}

/// Function libraries of this crate are named `dcsq_<hash of their code>`.
const LIBRARY_PREFIX: &str = "dcsq_";

fn library_names(listed: &Value) -> Vec<String> {
    let Value::Array(libraries) = listed else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for library in libraries {
        let pairs: Vec<(&Value, &Value)> = match library {
            Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
            Value::Array(items) => items
                .chunks(2)
                .filter_map(|c| Some((c.first()?, c.get(1)?)))
                .collect(),
            _ => continue,
        };
        for (k, v) in pairs {
            if let (Some(k), Some(v)) = (crate::wire::text(k), crate::wire::text(v))
                && k == "library_name"
            {
                out.push(v);
            }
        }
    }
    out
}

fn functions_refused(err: &redis::RedisError) -> bool {
    let text = err.to_string().to_ascii_lowercase();
    err.code() == Some("NOPERM")
        || text.contains("unknown command")
        || text.contains("unknown subcommand")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_changes_by_event() {
        // The Lua table keeps one change per event: it must not depend on the status.
        for event in Event::ALL {
            let changes: std::collections::BTreeSet<i64> = JobStatus::ALL
                .into_iter()
                .filter_map(|from| {
                    apply(from, event)
                        .ok()
                        .map(|to| unfinished_change(Some(from), to))
                })
                .collect();
            assert!(
                changes.len() <= 1,
                "{event:?} moves the count by {changes:?}"
            );
        }
        let lua = generated_tables();
        assert!(lua.contains("local UNFINISHED_CHANGE = { new = 1,"));
        assert!(lua.contains(" fail = -1,"));
        assert!(lua.contains(" manual_retry = 1,"));
    }

    /// ARCHITECTURE.md's script list and generated-table list are the code's: every script
    /// of `SPECS` (and no other name) in the paragraph that lists them, every `.lua` file
    /// of `scripts/` a script, and every table `generated_tables` writes (and no other) in
    /// the line that lists them.
    #[test]
    fn the_docs_list_every_script_and_table() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let docs = std::fs::read_to_string(dir.join("../../ARCHITECTURE.md")).unwrap();
        let quoted = |text: &str| -> std::collections::BTreeSet<String> {
            text.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        };
        let scripts: std::collections::BTreeSet<String> =
            SPECS.iter().map(|s| s.0.to_owned()).collect();
        let start = docs
            .find("One Lua entry point per state change")
            .expect("the script list");
        let paragraph = &docs[start..start + docs[start..].find("\n\n").unwrap()];
        let mut listed = quoted(paragraph);
        listed.remove("scripts/*.lua");
        listed.remove("scripts::tests::the_docs_list_every_script_and_table");
        assert_eq!(listed, scripts, "ARCHITECTURE.md's script list");
        let files: std::collections::BTreeSet<String> = std::fs::read_dir(dir.join("src/scripts"))
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter_map(|name| name.strip_suffix(".lua").map(str::to_owned))
            .collect();
        assert_eq!(files, scripts, "scripts/*.lua and SPECS");
        let tables: std::collections::BTreeSet<String> = generated_tables()
            .lines()
            .filter_map(|l| l.strip_prefix("local "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_owned)
            .collect();
        let line = docs
            .lines()
            .find(|l| l.starts_with("The generated tables:"))
            .expect("the generated-table list");
        assert_eq!(
            quoted(line),
            tables,
            "ARCHITECTURE.md's generated-table list"
        );
    }

    #[test]
    fn the_lua_tables_are_the_rules() {
        let lua = generated_tables();
        for expected in [
            "queued = { start = 'processing', cancel = 'cancelled', child_failed = 'failed', }",
            "completed = { }",
            "failed = { manual_retry = 'queued', }",
            // A requested cancel wins over a success; a retry without retries fails.
            "completed = { [false] = { [false] = 'complete', [true] = 'complete', }, [true] = { [false] = 'cancel', [true] = 'cancel', }, }",
            "retry = { [false] = { [false] = 'fail', [true] = 'retry', },",
            // A snooze and a rate-limited job use no attempt; only the latter holds the queue.
            "snoozed = { [false] = { [false] = 'snooze', [true] = 'snooze', },",
            "rate_limited = { [false] = { [false] = 'snooze', [true] = 'snooze', },",
            "local HOLDS_QUEUE = { rate_limited = true, }",
            "local EXPIRE = { [false] = { [false] = 'fail', [true] = 'lease_expired', }, [true] = { [false] = 'cancel', [true] = 'cancel', }, }",
            "processing = { [false] = 'request', [true] = 'already_requested', }",
            "queued = { [false] = 'cancel', [true] = 'cancel', }",
            "retry = 'delayed'",
            "lease_expired = 'ready_in_place'",
            "complete = 'completed'",
            "[true] = { 'lease expired: worker ', ' stopped renewing it' }",
            "local START_DEFERRED = { { 'started_at', 'now' }, { 'run_at', 'clear' }, { 'worker_id', 'input' }, }",
            // Flows: a failed child fails its waiting parent under fail_parent only; the
            // last child releases it; a finished parent only counts.
            "['fail_parent'] = { completed = { queued = { [false] = 'count', [true] = 'release', },",
            "failed = { queued = { [false] = 'fail', [true] = 'fail', },",
            "cancelled = { queued = { [false] = 'fail', [true] = 'fail', }",
            "local REOPEN = { queued = { [false] = 'hold', [true] = 'hold', }, processing = { [false] = 'count', [true] = 'count', }, completed = { [false] = 'count', [true] = 'count', }, failed = { [false] = 'requeue', [true] = 'count', },",
            "local ACCEPTS_CHILDREN = { queued = true, }",
            "local KEEPS_CHILD = { queued = true, processing = true, }",
            "local CHILD_MSG = { 'child ', ' ended ' }",
            // Key modes: a debounce replaces a pending holder's payload and takes the key
            // from a running one; a throttle answers with the holder, even a recent one.
            "debounce = { pending = 'replace', started = 'create', recent = 'create', }",
            "throttle = { pending = 'answer', started = 'answer', recent = 'answer', }",
            "refuse = { pending = 'refuse', started = 'refuse', recent = 'create', }",
        ] {
            assert!(lua.contains(expected), "missing {expected}\n{lua}");
        }
        let scripts = Scripts::load(&Keys::new("dcs", "q").unwrap());
        assert_ne!(scripts.claim.sha, scripts.finish.sha);
        assert_eq!(scripts.claim.sha.len(), 40);
        assert!(scripts.library.starts_with("#!lua name=dcsq_"));
        assert!(
            scripts
                .library
                .contains(&format!("function_name = '{}'", scripts.finish.function))
        );
        assert!(
            !scripts.uses_functions(),
            "scripts until the library is loaded"
        );
    }

    #[test]
    fn every_key_a_script_names_is_declared() {
        // A script may only use `KEY.<name>` for the static keys it declares.
        for (name, body, statics, _) in SPECS {
            let declared: Vec<String> = statics.iter().map(|s| s.lua_name()).collect();
            let mut rest = body;
            while let Some(at) = rest.find("KEY.") {
                let after = &rest[at + 4..];
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                let used = &after[..end];
                assert!(
                    declared.iter().any(|d| d == used),
                    "{name}.lua uses KEY.{used} without declaring it"
                );
                rest = &after[end..];
            }
        }
    }
}
