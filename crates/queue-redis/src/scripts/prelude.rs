//! The prelude every script shares: one Lua file per concept (`scripts/prelude/<concept>.lua`,
//! the same names as core's rules, the memory engine, the conformance cases and the
//! reference model), after the tables generated from `queue-core` (`tables.rs`).
//!
//! Every top-level local of the files is declared once, first, so a concept's file may call
//! another's whatever their order (Lua resolves a name to a local only after its
//! declaration); each file's own `local` declarations become assignments to those.

use std::fmt::Write;

/// The prelude's files, in load order: `context` (the per-call state: prefix, clock,
/// pending writes, flush) first, the others by concept.
pub(crate) const FILES: [(&str, &str); 16] = [
    ("context", include_str!("prelude/context.lua")),
    ("series", include_str!("prelude/series.lua")),
    ("events", include_str!("prelude/events.lua")),
    ("records", include_str!("prelude/records.lua")),
    ("leases", include_str!("prelude/leases.lua")),
    ("jobs", include_str!("prelude/jobs.lua")),
    ("keys", include_str!("prelude/keys.lua")),
    ("chains", include_str!("prelude/chains.lua")),
    ("sequences", include_str!("prelude/sequences.lua")),
    ("rate", include_str!("prelude/rate.lua")),
    ("groups", include_str!("prelude/groups.lua")),
    ("webhooks", include_str!("prelude/webhooks.lua")),
    ("flows", include_str!("prelude/flows.lua")),
    ("cascade", include_str!("prelude/cascade.lua")),
    ("retention", include_str!("prelude/retention.lua")),
    ("workers", include_str!("prelude/workers.lua")),
];

/// The identifier `s` starts with.
fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The names a top-level line of a prelude file declares, and the line as it is loaded
/// (`None`: a declaration alone, dropped once its names are declared first).
fn top_level(line: &str) -> (Vec<&str>, Option<&str>) {
    if let Some(rest) = line.strip_prefix("local function ") {
        return (vec![ident(rest)], Some(&line["local ".len()..]));
    }
    if let Some(rest) = line.strip_prefix("local ") {
        return match rest.split_once('=') {
            Some((names, _)) => (names.split(',').map(str::trim).collect(), Some(rest)),
            None => (rest.split(',').map(str::trim).collect(), None),
        };
    }
    let name = ident(line);
    let assigns = !name.is_empty()
        && !matches!(name, "function" | "end" | "return" | "if" | "for")
        && line[name.len()..].trim_start().starts_with('=');
    (if assigns { vec![name] } else { vec![] }, Some(line))
}

/// The prelude as loaded: its declarations, then each file.
pub(crate) fn prelude() -> String {
    let mut names: Vec<&str> = Vec::new();
    let mut body = String::new();
    for (file, text) in FILES {
        let _ = writeln!(body, "-- prelude/{file}.lua");
        for line in text.lines() {
            let (declared, loaded) = top_level(line);
            for name in declared {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            if let Some(loaded) = loaded {
                body.push_str(loaded);
                body.push('\n');
            }
        }
    }
    format!("local {}\n{body}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No name is declared by two files (one would silently replace the other).
    #[test]
    fn each_name_is_declared_by_one_file() {
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for (file, text) in FILES {
            for line in text.lines().filter(|l| l.starts_with("local ")) {
                for name in top_level(line).0 {
                    if let Some((other, _)) = seen.iter().find(|(_, n)| *n == name) {
                        panic!(
                            "`{name}` is declared by prelude/{other}.lua and prelude/{file}.lua"
                        );
                    }
                    seen.push((file, name));
                }
            }
        }
    }

    #[test]
    fn declarations_become_assignments() {
        assert_eq!(
            top_level("local function f(a)"),
            (vec!["f"], Some("function f(a)"))
        );
        assert_eq!(top_level("local A, B"), (vec!["A", "B"], None));
        assert_eq!(
            top_level("local X = { y = 1 }"),
            (vec!["X"], Some("X = { y = 1 }"))
        );
        assert_eq!(
            top_level("g = function(k)"),
            (vec!["g"], Some("g = function(k)"))
        );
        assert_eq!(
            top_level("  local inner = 1"),
            (vec![], Some("  local inner = 1"))
        );
        assert_eq!(top_level("end"), (vec![], Some("end")));
    }
}
