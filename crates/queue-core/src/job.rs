//! The typed job: one definition ties a task name, its payload type, what its handler
//! returns and the options a job of that kind starts with. The string form
//! ([`crate::NewJob::new`] with a task name) stays, for workers in other languages and the
//! CLI; a typed job is what the trait turns into it ([`crate::NewJob::typed`]).

use serde::{Serialize, de::DeserializeOwned};

use crate::{ChildPolicy, Completion, EnqueueOptions, Error, JobError, Result, Stages};

/// The longest task name, in bytes.
pub const MAX_TASK_NAME_BYTES: usize = 200;

/// The largest payload schema a worker shares with operators ([`Job::schema`]), in bytes of
/// JSON; a larger one is left out of its heartbeat.
pub const MAX_TASK_SCHEMA_BYTES: usize = 16 * 1024;

/// A job type: a stable task name, the payload (the type itself), what its handler returns,
/// and the defaults a job of this kind starts with. Usually derived:
///
/// ```ignore
/// #[derive(Serialize, Deserialize, dcs_queue::Job)]
/// #[job(name = "send_email", priority = "high", retries = 5, output = Receipt)]
/// struct SendEmail {
///     #[job(unique_key)]
///     message_id: String,
///     to: String,
/// }
/// ```
///
/// or written by hand:
///
/// ```
/// use queue_core::{EnqueueOptions, Priority};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct SendEmail { message_id: String, to: String }
///
/// impl queue_core::Job for SendEmail {
///     const NAME: &'static str = "send_email";
///     type Output = ();
///
///     fn options(&self) -> EnqueueOptions {
///         let mut options = EnqueueOptions::default();
///         options.priority = Some(Priority::High);
///         options.unique_key = Some(self.message_id.clone());
///         options
///     }
/// }
///
/// let job = queue_core::NewJob::typed(&SendEmail { message_id: "m1".into(), to: "a@b".into() })?;
/// assert_eq!(job.task, "send_email");
/// assert_eq!(job.options.unique_key.as_deref(), Some("m1"));
/// # Ok::<(), queue_core::Error>(())
/// ```
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The task name stored on every job of this kind and used to find its handler. It is
    /// a constant, not the type's name: renaming the type strands no queued job.
    const NAME: &'static str;

    /// What a successful run returns, stored as the record's `result` (`()` for none) and
    /// read back with [`crate::JobRecord::output`].
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// The options a job of this kind starts with: priority, retries, timeout, delay, cost,
    /// metadata, and the unique key and group taken from its fields. Unset options take the
    /// queue's defaults; the setters of [`crate::NewJob`] override them per call.
    fn options(&self) -> EnqueueOptions {
        EnqueueOptions::default()
    }

    /// Its stages with their weights, for progress (`JobContext::stages`); `None` when it
    /// reports plain percentages.
    fn stages(&self) -> Option<Stages> {
        None
    }

    /// What its failure does to its parent when it is a child of a flow
    /// ([`crate::Flow::of`]).
    fn on_failure() -> ChildPolicy {
        ChildPolicy::default()
    }

    /// The JSON schema of its payload, shared by workers with operators (`queuectl tasks`,
    /// the dashboard's workers page) so a job enqueued by hand has the right fields.
    fn schema() -> Option<serde_json::Value> {
        None
    }
}

/// A typed handler's success that may end `partial`: `partial_error` set when some
/// non-critical steps failed (it says which); `output` is stored as the result either way.
/// A handler that always completes fully returns its `Job::Output` instead.
#[derive(Clone, Debug, PartialEq)]
pub struct Done<O> {
    /// What it produced.
    pub output: O,
    /// Why it ends `partial`; `None` when it completed.
    pub partial_error: Option<String>,
}

impl<O> Done<O> {
    /// Completed with `output`.
    pub fn completed(output: O) -> Self {
        Self {
            output,
            partial_error: None,
        }
    }

    /// Ends `partial` with `output`, because of `error`.
    pub fn partial(error: impl Into<String>, output: O) -> Self {
        Self {
            output,
            partial_error: Some(error.into()),
        }
    }
}

/// What a typed handler of a job with output `O` may return: `O` itself, or [`Done<O>`].
#[diagnostic::on_unimplemented(
    message = "a handler of this job returns its `Job::Output` (`{O}`) or `Done<{O}>`, not `{Self}`",
    label = "returns `{Self}`",
    note = "change the handler's return type, or the job's `#[job(output = ...)]`"
)]
pub trait IntoOutput<O> {
    /// The completion reported for it; an output that does not serialize fails the job
    /// permanently, naming why.
    fn into_completion(self) -> std::result::Result<Completion, JobError>;
}

fn encoded<O: Serialize>(output: &O) -> std::result::Result<Option<serde_json::Value>, JobError> {
    match serde_json::to_value(output) {
        Ok(serde_json::Value::Null) => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(e) => Err(JobError::permanent(format!(
            "result does not serialize: {e}"
        ))),
    }
}

impl<O: Serialize> IntoOutput<O> for O {
    fn into_completion(self) -> std::result::Result<Completion, JobError> {
        Ok(encoded(&self)?.map_or_else(Completion::done, Completion::with_result))
    }
}

/// Untyped: the completion as it is, whatever result it carries (for a handler whose
/// result is built as JSON; prefer `O` or [`Done<O>`]).
impl<O> IntoOutput<O> for Completion {
    fn into_completion(self) -> std::result::Result<Completion, JobError> {
        Ok(self)
    }
}

impl<O: Serialize> IntoOutput<O> for Done<O> {
    fn into_completion(self) -> std::result::Result<Completion, JobError> {
        match self.partial_error {
            None => self.output.into_completion(),
            Some(error) => {
                let details = encoded(&self.output)?.unwrap_or(serde_json::Value::Null);
                Ok(Completion::partial(error, details))
            }
        }
    }
}

/// Why `task` is not a task name, if it is not: empty or blank, or longer than
/// [`MAX_TASK_NAME_BYTES`]. A constant function, so a derived [`Job`] refuses a bad name
/// when it compiles, by the same rule an enqueue and a worker's registration apply.
pub const fn task_name_problem(task: &str) -> Option<&'static str> {
    if task.len() > MAX_TASK_NAME_BYTES {
        return Some("task name is longer than 200 bytes");
    }
    let bytes = task.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let (c, width) = decode_utf8(bytes, i);
        match char::from_u32(c) {
            Some(ch) if ch.is_whitespace() => i += width,
            _ => return None,
        }
    }
    Some("task name is empty")
}

/// The character starting at `at` of valid UTF-8, and its width.
const fn decode_utf8(b: &[u8], at: usize) -> (u32, usize) {
    let lead = b[at] as u32;
    if lead < 0x80 {
        (lead, 1)
    } else if lead < 0xE0 {
        (((lead & 0x1F) << 6) | cont(b, at + 1), 2)
    } else if lead < 0xF0 {
        (
            ((lead & 0x0F) << 12) | (cont(b, at + 1) << 6) | cont(b, at + 2),
            3,
        )
    } else {
        (
            ((lead & 0x07) << 18)
                | (cont(b, at + 1) << 12)
                | (cont(b, at + 2) << 6)
                | cont(b, at + 3),
            4,
        )
    }
}

/// The payload bits of the continuation byte at `at`.
const fn cont(b: &[u8], at: usize) -> u32 {
    (b[at] as u32) & 0x3F
}

/// Checks a task name, as an enqueue and a worker's registration do: not empty or blank,
/// at most [`MAX_TASK_NAME_BYTES`] bytes.
///
/// ```
/// use queue_core::backend::check_task_name;
///
/// assert!(check_task_name("process_book").is_ok());
/// assert!(check_task_name(" ").is_err());
/// assert!(check_task_name(&"x".repeat(201)).is_err());
/// ```
pub fn check_task_name(task: &str) -> Result<()> {
    match task_name_problem(task) {
        Some(problem) => Err(Error::invalid(problem)),
        None => Ok(()),
    }
}

/// Checks a payload schema a worker would share with operators: at most
/// [`MAX_TASK_SCHEMA_BYTES`] of JSON (a larger one is left out of the worker's heartbeat).
pub fn check_task_schema(schema: &serde_json::Value) -> Result<()> {
    let size = serde_json::to_string(schema).map_or(usize::MAX, |s| s.len());
    if size > MAX_TASK_SCHEMA_BYTES {
        return Err(Error::invalid(format!(
            "the payload schema is {size} bytes, over {MAX_TASK_SCHEMA_BYTES}: not shared with operators"
        )));
    }
    Ok(())
}

/// The JSON schema of `T` (feature `schema`), as `#[job(schema)]` shares it.
#[cfg(feature = "schema")]
pub fn schema_of<T: schemars::JsonSchema>() -> Option<serde_json::Value> {
    serde_json::to_value(schemars::schema_for!(T)).ok()
}

/// Without the feature `schema`, `#[job(schema)]` says how to turn it on.
#[cfg(not(feature = "schema"))]
pub fn schema_of<T: SchemaFeature>() -> Option<serde_json::Value> {
    None
}

/// Implemented by nothing: `#[job(schema)]` without the feature `schema` names the fix.
#[cfg(not(feature = "schema"))]
#[diagnostic::on_unimplemented(
    message = "`#[job(schema)]` needs the `schema` feature of dcs-queue (and `#[derive(schemars::JsonSchema)]` on `{Self}`)"
)]
pub trait SchemaFeature {}

/// A field a derived [`Job`] takes its unique key or group from: a string, or an optional
/// one (no key or group when `None`).
#[diagnostic::on_unimplemented(
    message = "`#[job(unique_key)]` and `#[job(group)]` take a string field, not `{Self}`",
    label = "not a string (String, &str, Box<str>, Arc<str>, Cow<str>) or an Option of one",
    note = "format the value into a String field, or set the key per call with `NewJob::unique_key`"
)]
pub trait KeyField {
    /// The key, if there is one.
    fn key(&self) -> Option<&str>;
}

impl KeyField for String {
    fn key(&self) -> Option<&str> {
        Some(self)
    }
}

impl KeyField for &str {
    fn key(&self) -> Option<&str> {
        Some(self)
    }
}

impl KeyField for Box<str> {
    fn key(&self) -> Option<&str> {
        Some(self)
    }
}

impl KeyField for std::sync::Arc<str> {
    fn key(&self) -> Option<&str> {
        Some(self)
    }
}

impl KeyField for std::borrow::Cow<'_, str> {
    fn key(&self) -> Option<&str> {
        Some(self)
    }
}

impl<T: KeyField> KeyField for Option<T> {
    fn key(&self) -> Option<&str> {
        self.as_ref().and_then(KeyField::key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names_follow_one_rule() {
        for (name, problem) in [
            ("process_book", None),
            ("a", None),
            ("späte Bücher", None),
            ("", Some("task name is empty")),
            (" \t\n", Some("task name is empty")),
            ("\u{3000}\u{a0}", Some("task name is empty")),
        ] {
            assert_eq!(task_name_problem(name), problem, "{name:?}");
        }
        let at_limit = "é".repeat(100);
        assert_eq!(at_limit.len(), MAX_TASK_NAME_BYTES);
        assert_eq!(task_name_problem(&at_limit), None);
        let past = format!("{at_limit}x");
        assert_eq!(
            task_name_problem(&past),
            Some("task name is longer than 200 bytes")
        );
        assert!(
            check_task_name(&past)
                .unwrap_err()
                .to_string()
                .contains("200 bytes")
        );
    }

    #[test]
    fn a_schema_is_shared_up_to_its_limit() {
        // A JSON string of n bytes of text is n + 2 bytes with its quotes.
        let of = |bytes: usize| serde_json::Value::String("x".repeat(bytes - 2));
        assert!(check_task_schema(&of(MAX_TASK_SCHEMA_BYTES)).is_ok());
        let past = check_task_schema(&of(MAX_TASK_SCHEMA_BYTES + 1)).unwrap_err();
        assert!(
            past.to_string().contains("16385 bytes, over 16384"),
            "{past}"
        );
    }

    #[test]
    fn outputs_become_completions() {
        let done = IntoOutput::<()>::into_completion(()).unwrap();
        assert_eq!(done, Completion::done());
        let counted = IntoOutput::<u32>::into_completion(7u32).unwrap();
        assert_eq!(counted.result, Some(serde_json::json!(7)));
        let partial = Done::partial("no audio", 3u32).into_completion().unwrap();
        assert_eq!(partial.partial_error.as_deref(), Some("no audio"));
        assert_eq!(partial.result, Some(serde_json::json!(3)));
        let full = Done::completed(3u32).into_completion().unwrap();
        assert_eq!(full, Completion::with_result(serde_json::json!(3)));
    }

    #[test]
    fn key_fields_read_strings_and_options() {
        assert_eq!("k".to_owned().key(), Some("k"));
        assert_eq!(Some(Box::<str>::from("k")).key(), Some("k"));
        assert_eq!(None::<String>.key(), None);
    }
}
