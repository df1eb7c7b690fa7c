//! The only place Redis key names are built. Every key of a queue shares the hash tag
//! `{<queue>}`, so all of them live in one Cluster slot and multi-key scripts work.

use queue_core::{JobId, JobStatus, Result, validate_queue_name};

/// Key names of one queue: `<root>:{<queue>}:<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    /// Refuses queue names that would break the hash tag (`{`, `}`) or the layout (`:`).
    pub(crate) fn new(root: &str, queue: &str) -> Result<Self> {
        validate_queue_name(queue)?;
        if root.contains(['{', '}']) {
            return Err(queue_core::Error::config(format!(
                "key prefix {root:?} must not contain `{{` or `}}`"
            )));
        }
        Ok(Self {
            prefix: format!("{root}:{{{queue}}}:"),
        })
    }

    /// The common prefix, passed to every script.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub(crate) fn job(&self, id: JobId) -> String {
        self.key(&format!("job:{id}"))
    }
    pub(crate) fn ready(&self) -> String {
        self.key("ready")
    }
    pub(crate) fn delayed(&self) -> String {
        self.key("delayed")
    }
    pub(crate) fn active(&self) -> String {
        self.key("active")
    }
    pub(crate) fn status(&self, status: JobStatus) -> String {
        self.key(&format!("st:{status}"))
    }
    pub(crate) fn jobs(&self) -> String {
        self.key("jobs")
    }
    pub(crate) fn unique(&self, key: &str) -> String {
        self.key(&format!("uk:{key}"))
    }
    pub(crate) fn finished(&self) -> String {
        self.key("finished")
    }
    pub(crate) fn stats(&self) -> String {
        self.key("stats")
    }
    pub(crate) fn workers(&self) -> String {
        self.key("workers")
    }
    pub(crate) fn worker(&self, id: &str) -> String {
        self.key(&format!("worker:{id}"))
    }
    pub(crate) fn marker(&self) -> String {
        self.key("marker")
    }
    pub(crate) fn events(&self) -> String {
        self.key("events")
    }
    pub(crate) fn cancel(&self) -> String {
        self.key("cancel")
    }

    /// A SCAN pattern matching every key of the queue.
    pub(crate) fn pattern(&self) -> String {
        let mut out = String::new();
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('*');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_queue_tag() {
        let k = Keys::new("dcs", "ai_processing").unwrap();
        let id = JobId::new();
        for key in [
            k.job(id),
            k.ready(),
            k.status(JobStatus::Failed),
            k.unique("book-1"),
            k.worker("w"),
        ] {
            assert!(key.starts_with("dcs:{ai_processing}:"), "{key}");
        }
        assert_eq!(k.ready(), "dcs:{ai_processing}:ready");
    }

    #[test]
    fn names_that_break_the_tag_are_refused() {
        for bad in ["a{b", "a}b", "a:b", "", "with space"] {
            let err = Keys::new("dcs", bad).unwrap_err();
            assert!(err.to_string().contains("queue name"), "{err}");
        }
        assert!(Keys::new("x{", "q").is_err());
        assert_eq!(Keys::new("dcs", "q*1").unwrap().pattern(), "dcs:{q\\*1}:*");
    }
}
