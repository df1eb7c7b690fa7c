//! Unique keys and their modes: what an enqueue does when another job holds its key.
//!
//! One rule, [`on_key_held`], over a small domain (the new job's mode and what the key's
//! holder is doing), table-tested over all of it. The memory and Postgres backends call
//! it; the Redis scripts carry its table (`KEY_ACTION`, generated from it).
//!
//! ```
//! use queue_core::backend::{Holder, KeyAction, on_key_held};
//! use queue_core::KeyModeKind;
//!
//! // A debounced enqueue replaces the payload of a holder that has not started...
//! assert_eq!(on_key_held(KeyModeKind::Debounce, Holder::Pending), KeyAction::Replace);
//! // ...and takes the key from one that runs: a run after the burst sees the new payload.
//! assert_eq!(on_key_held(KeyModeKind::Debounce, Holder::Started), KeyAction::Create);
//! // A throttled one is answered with the job of the window.
//! assert_eq!(on_key_held(KeyModeKind::Throttle, Holder::Recent), KeyAction::Answer);
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, JobRecord, JobStatus, NewJob, Result};

/// What an enqueue does when another job holds its unique key ([`NewJob::debounce`],
/// [`NewJob::throttle`]); without a key a mode is refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    /// While a queued or running job holds the key, the enqueue is refused with
    /// [`Error::AlreadyExists`] naming it (the default).
    #[default]
    Refuse,
    /// A burst becomes one run, this long after the burst's last enqueue, with the last
    /// payload: while the holder has not started, an enqueue replaces its payload and moves
    /// its start to this long from now; a holder that runs keeps running, and the enqueue
    /// creates the next run (delayed as much), which takes the key.
    Debounce(Duration),
    /// At most one job per key per window: while a job holds the key, or one with the key
    /// was created less than this long ago, the enqueue is answered with that job and
    /// creates nothing.
    Throttle(Duration),
    /// At most one running and one waiting job per key, the waiting one with the last
    /// payload: while the holder has not started, an enqueue replaces its payload (it keeps
    /// its place); while the holder runs, the enqueue creates a job that waits for it to end
    /// (then it is placed) and takes the key.
    KeepLatest,
    /// A new enqueue stops the key's running job and takes its place: while the holder has
    /// not started, the enqueue replaces its payload (it keeps its place); while it runs, it
    /// is asked to stop (a cancel) and the enqueue creates a job that waits for its attempt
    /// to end (then it is placed), which takes the key. The two never run at once.
    ReplaceRunning,
}

/// A [`KeyMode`] without its duration: the rule's domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyModeKind {
    /// [`KeyMode::Refuse`].
    Refuse,
    /// [`KeyMode::Debounce`].
    Debounce,
    /// [`KeyMode::Throttle`].
    Throttle,
    /// [`KeyMode::KeepLatest`].
    KeepLatest,
    /// [`KeyMode::ReplaceRunning`].
    ReplaceRunning,
}

impl KeyModeKind {
    /// Every kind.
    pub const ALL: [KeyModeKind; 5] = [
        Self::Refuse,
        Self::Debounce,
        Self::Throttle,
        Self::KeepLatest,
        Self::ReplaceRunning,
    ];

    /// The name the scripts use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refuse => "refuse",
            Self::Debounce => "debounce",
            Self::Throttle => "throttle",
            Self::KeepLatest => "keep_latest",
            Self::ReplaceRunning => "replace_running",
        }
    }
}

impl KeyMode {
    /// The mode without its duration.
    pub fn kind(&self) -> KeyModeKind {
        match self {
            Self::Refuse => KeyModeKind::Refuse,
            Self::Debounce(_) => KeyModeKind::Debounce,
            Self::Throttle(_) => KeyModeKind::Throttle,
            Self::KeepLatest => KeyModeKind::KeepLatest,
            Self::ReplaceRunning => KeyModeKind::ReplaceRunning,
        }
    }

    /// Where a replacement ([`KeyAction::Replace`]) moves the holder's start: this long from
    /// now for a debounce; `None` (keep-latest): the holder keeps its place.
    pub fn restart_delay(&self) -> Option<Duration> {
        match self {
            Self::Debounce(delay) => Some(*delay),
            _ => None,
        }
    }

    /// The throttle's window, for a throttled enqueue.
    pub fn window(&self) -> Option<Duration> {
        match self {
            Self::Throttle(window) => Some(*window),
            _ => None,
        }
    }
}

/// What the job holding a key is doing, as an enqueue of that key finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Holder {
    /// Queued and free to change: not started, not a parent waiting on its children (it
    /// may wait for another job to end).
    Pending,
    /// Running (leased), or a parent waiting on its children.
    Started,
    /// No active job holds the key, but one with the key was created within the new job's
    /// throttle window (a throttled enqueue only asks).
    Recent,
}

impl Holder {
    /// Every case.
    pub const ALL: [Holder; 3] = [Self::Pending, Self::Started, Self::Recent];

    /// The name the scripts use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Started => "started",
            Self::Recent => "recent",
        }
    }

    /// The active holder's case from its record and whether it is leased.
    pub fn of(record: &JobRecord, leased: bool) -> Self {
        if leased || record.status != JobStatus::Queued || record.waits_on_children() {
            Self::Started
        } else {
            Self::Pending
        }
    }
}

/// What the enqueue does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyAction {
    /// Creates the job; it takes the key (a holder that runs keeps running without it).
    Create,
    /// Refuses the job with [`Error::AlreadyExists`] naming the holder.
    Refuse,
    /// Creates nothing and answers the holder's record.
    Answer,
    /// Replaces the holder's payload with the new one and moves its start to the new job's
    /// delay from now (a holder waiting for another job to end keeps waiting); answers the
    /// holder's record (its `replaced` count went up by one).
    Replace,
    /// Creates the job chained behind the (running) holder: placed when that one ends
    /// ([`crate::backend::released_due`]); it takes the key.
    Chain,
    /// Cancels the holder (a running one is asked to stop) and creates the job: chained
    /// behind the holder while that one still runs, else placed at once; it takes the key.
    Supersede,
}

impl KeyAction {
    /// The name the scripts use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Refuse => "refuse",
            Self::Answer => "answer",
            Self::Replace => "replace",
            Self::Chain => "chain",
            Self::Supersede => "supersede",
        }
    }
}

/// What an enqueue in `mode` does when its key's holder is `holder` (a free key is
/// always created).
pub fn on_key_held(mode: KeyModeKind, holder: Holder) -> KeyAction {
    use {Holder::*, KeyAction::*, KeyModeKind as M};
    match (mode, holder) {
        (M::Refuse, Pending | Started) => Refuse,
        (M::Debounce, Pending) => Replace,
        (M::Debounce, Started) => Create,
        (M::Throttle, _) => Answer,
        (M::KeepLatest, Pending) => Replace,
        (M::KeepLatest, Started) => Chain,
        (M::ReplaceRunning, Pending) => Replace,
        (M::ReplaceRunning, Started) => Supersede,
        // Only a throttled enqueue looks for a recent job: a finished one holds no key.
        (M::Refuse | M::Debounce | M::KeepLatest | M::ReplaceRunning, Recent) => Create,
    }
}

impl NewJob {
    /// Debounces the job on its unique key: a burst of enqueues of the key becomes one run,
    /// `delay` after the last of them, with the last payload ([`KeyMode::Debounce`]). The
    /// job waits `delay` before its first run (set no other delay). The answer is the job
    /// that now carries the key: a pending one whose payload this replaced has its
    /// `replaced` count raised.
    ///
    /// ```
    /// # use queue_core::{JobStore, NewJob};
    /// # async fn demo(queue: &impl JobStore) -> queue_core::Result<()> {
    /// use std::time::Duration;
    /// let first = queue.enqueue(NewJob::new("reindex", &1)?.unique_key("book-7").debounce(Duration::from_secs(5))).await?;
    /// let again = queue.enqueue(NewJob::new("reindex", &2)?.unique_key("book-7").debounce(Duration::from_secs(5))).await?;
    /// assert_eq!((again.job_id, again.replaced), (first.job_id, 1));
    /// # Ok(()) }
    /// ```
    pub fn debounce(mut self, delay: Duration) -> Self {
        self.options.key_mode = KeyMode::Debounce(delay);
        self.options.delay = Some(delay);
        self
    }

    /// Keeps at most one running and one waiting job of its unique key, the waiting one
    /// with the last payload ([`KeyMode::KeepLatest`]): a re-upload of a book while it is
    /// being processed runs once after the running one, with the newest upload.
    ///
    /// ```
    /// # use queue_core::{JobStore, NewJob};
    /// # async fn demo(queue: &impl JobStore) -> queue_core::Result<()> {
    /// let first = queue.enqueue(NewJob::new("process", &1)?.unique_key("book-7").keep_latest()).await?;
    /// // Not started yet: the next upload replaces its payload.
    /// let again = queue.enqueue(NewJob::new("process", &2)?.unique_key("book-7").keep_latest()).await?;
    /// assert_eq!((again.job_id, again.replaced), (first.job_id, 1));
    /// # Ok(()) }
    /// ```
    pub fn keep_latest(mut self) -> Self {
        self.options.key_mode = KeyMode::KeepLatest;
        self
    }

    /// Replaces the running job of its unique key ([`KeyMode::ReplaceRunning`]): the running
    /// one is asked to stop (a cancel) and this one starts once its attempt ended; an
    /// enqueue while the replacement waits replaces its payload.
    pub fn replace_running(mut self) -> Self {
        self.options.key_mode = KeyMode::ReplaceRunning;
        self
    }

    /// Throttles the job on its unique key: at most one job of the key is created per
    /// `window` ([`KeyMode::Throttle`]); an enqueue within it is answered with that job.
    pub fn throttle(mut self, window: Duration) -> Self {
        self.options.key_mode = KeyMode::Throttle(window);
        self
    }
}

/// What a new job's key mode must satisfy (a part of [`NewJob::validate`]); `longest` is
/// the queue's longest delay, which bounds a debounce's delay and a throttle's window.
pub(crate) fn check_key_mode(job: &NewJob, longest: Duration) -> Result<()> {
    let o = &job.options;
    let (name, span) = match o.key_mode {
        KeyMode::Refuse => return Ok(()),
        KeyMode::KeepLatest => ("keep_latest", Duration::from_millis(1)),
        KeyMode::ReplaceRunning => ("replace_running", Duration::from_millis(1)),
        KeyMode::Debounce(delay) => ("debounce", delay),
        KeyMode::Throttle(window) => ("throttle", window),
    };
    if o.unique_key.is_none() {
        return Err(Error::invalid(format!(
            "key mode `{name}` needs a unique key: it says what to do when the key is held"
        )));
    }
    if span.is_zero() || span > longest {
        return Err(Error::invalid(format!(
            "key mode `{name}`: {span:?} is not within 1 ms and the longest delay, {longest:?} \
             (DCS_QUEUE_LIMIT_DELAY_SECONDS)"
        )));
    }
    if let KeyMode::Debounce(delay) = o.key_mode
        && o.delay != Some(delay)
    {
        return Err(Error::invalid(
            "a debounced job waits its debounce delay before it runs: set no other delay",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_over_its_whole_domain() {
        use {Holder::*, KeyAction::*, KeyModeKind as M};
        let table = [
            (M::Refuse, Pending, Refuse),
            (M::Refuse, Started, Refuse),
            (M::Refuse, Recent, Create),
            (M::Debounce, Pending, Replace),
            (M::Debounce, Started, Create),
            (M::Debounce, Recent, Create),
            (M::Throttle, Pending, Answer),
            (M::Throttle, Started, Answer),
            (M::Throttle, Recent, Answer),
            (M::KeepLatest, Pending, Replace),
            (M::KeepLatest, Started, Chain),
            (M::KeepLatest, Recent, Create),
            (M::ReplaceRunning, Pending, Replace),
            (M::ReplaceRunning, Started, Supersede),
            (M::ReplaceRunning, Recent, Create),
        ];
        assert_eq!(table.len(), KeyModeKind::ALL.len() * Holder::ALL.len());
        for (mode, holder, action) in table {
            assert_eq!(on_key_held(mode, holder), action, "{mode:?} {holder:?}");
        }
    }

    #[test]
    fn modes_are_checked_at_their_limits() {
        let longest = Duration::from_secs(10);
        let job = |mode: fn(NewJob) -> NewJob| mode(NewJob::new("t", &1).unwrap().unique_key("k"));
        let ok = |j: &NewJob| check_key_mode(j, longest);
        ok(&job(|j| j.debounce(Duration::from_secs(10)))).unwrap();
        ok(&job(|j| j.throttle(Duration::from_secs(10)))).unwrap();
        let past = ok(&job(|j| j.throttle(Duration::from_millis(10_001)))).unwrap_err();
        assert!(
            past.to_string().contains("key mode `throttle`: 10.001s"),
            "{past}"
        );
        let past = ok(&job(|j| j.debounce(Duration::from_millis(10_001)))).unwrap_err();
        assert!(past.to_string().contains("key mode `debounce`"), "{past}");
        assert!(ok(&job(|j| j.throttle(Duration::ZERO))).is_err());
        let keyless = NewJob::new("t", &1)
            .unwrap()
            .debounce(Duration::from_secs(1));
        let err = ok(&keyless).unwrap_err().to_string();
        assert!(err.contains("needs a unique key"), "{err}");
        let delayed = job(|j| {
            j.debounce(Duration::from_secs(1))
                .delay(Duration::from_secs(2))
        });
        let err = ok(&delayed).unwrap_err().to_string();
        assert!(err.contains("set no other delay"), "{err}");
    }
}
