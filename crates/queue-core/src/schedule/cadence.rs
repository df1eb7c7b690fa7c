//! A schedule's cadence: a cron expression in a time zone, or a fixed interval, and the
//! ticks it gives.

use super::*;

/// When a schedule ticks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Cadence {
    /// A cron expression (5 fields, or 6 with seconds first; `@daily` and friends), read in
    /// an IANA time zone. Across a daylight-saving change a fixed time that falls in the
    /// skipped hour runs at the first valid time after it, and one that falls in the
    /// repeated hour runs once (the first); an expression with a wildcard hour ticks in
    /// both repeated hours.
    Cron {
        /// The expression, e.g. `0 2 * * *`.
        expr: String,
        /// An IANA time zone name, e.g. `Europe/Berlin` (default `UTC`).
        #[serde(default = "utc_name")]
        tz: String,
    },
    /// Every `every_ms` milliseconds from the schedule's anchor (its creation, or the last
    /// change of its cadence): the first tick is one interval after it.
    Every {
        /// The interval, at least [`MIN_INTERVAL`].
        every_ms: u64,
    },
}

pub(super) fn utc_name() -> String {
    "UTC".into()
}

impl fmt::Display for Cadence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cron { expr, tz } => write!(f, "cron `{expr}` ({tz})"),
            Self::Every { every_ms } => write!(f, "every {every_ms} ms"),
        }
    }
}

/// A parsed cadence: what the pure tick functions work with.
pub(super) enum Parsed {
    Cron(Box<croner::Cron>, chrono_tz::Tz),
    Every(Millis),
}

impl Cadence {
    pub(super) fn parse(&self) -> Result<Parsed> {
        match self {
            Self::Cron { expr, tz } => {
                let cron = croner::Cron::from_str(expr).map_err(|e| {
                    Error::invalid(format!("cron expression `{expr}` is not valid: {e}"))
                })?;
                let zone = chrono_tz::Tz::from_str(tz).map_err(|_| {
                    Error::invalid(format!("time zone `{tz}` is not an IANA time zone name"))
                })?;
                // An expression that never matches (30 February) is refused now, not at
                // its first tick.
                cron.find_next_occurrence(&Utc::now().with_timezone(&zone), false)
                    .map_err(|e| {
                        Error::invalid(format!("cron expression `{expr}` never ticks: {e}"))
                    })?;
                Ok(Parsed::Cron(Box::new(cron), zone))
            }
            Self::Every { every_ms } => {
                if (*every_ms as u128) < MIN_INTERVAL.as_millis() {
                    return Err(Error::invalid(format!(
                        "every_ms {every_ms} is shorter than {} ms",
                        MIN_INTERVAL.as_millis()
                    )));
                }
                let every = Millis::try_from(*every_ms)
                    .map_err(|_| Error::invalid(format!("every_ms {every_ms} is too large")))?;
                Ok(Parsed::Every(every))
            }
        }
    }
}

impl Parsed {
    /// The first tick strictly after `t`, or `None` when there is none.
    pub(super) fn after(&self, anchor: Millis, t: Millis) -> Option<Millis> {
        match self {
            Self::Every(every) => {
                if t < anchor {
                    return Some(anchor + every);
                }
                let k = (t - anchor) / every + 1;
                anchor.checked_add(k.checked_mul(*every)?)
            }
            Self::Cron(cron, tz) => {
                // Cron resolves whole seconds: from the second `t` is in, exclusive.
                let from = t.div_euclid(1000) * 1000;
                let start = tz.timestamp_millis_opt(from).single()?;
                let next = cron.find_next_occurrence(&start, false).ok()?;
                let offset = next.offset().fix();
                let next = to_millis(next.with_timezone(&Utc));
                if cron.determine_job_type() == croner::JobType::IntervalWildcard {
                    // The search walks local time, so it does not see the second pass of
                    // an hour that daylight saving repeats; a search at the offset after
                    // the change does. (A fixed time runs once, in the first pass.)
                    let fixed = offset.timestamp_millis_opt(from).single()?;
                    if let Ok(other) = cron.find_next_occurrence(&fixed, false) {
                        let other = to_millis(other.with_timezone(&Utc));
                        let real = tz.timestamp_millis_opt(other).single()?.offset().fix();
                        if other < next && other > t && real == offset {
                            return Some(other);
                        }
                    }
                }
                Some(next)
            }
        }
    }

    /// The last tick at or before `t` and strictly after `floor`, or `None`.
    pub(super) fn at_or_before(&self, anchor: Millis, t: Millis, floor: Millis) -> Option<Millis> {
        let found = match self {
            Self::Every(every) => {
                if t < anchor + every {
                    return None;
                }
                anchor + (t - anchor) / every * every
            }
            Self::Cron(cron, tz) => {
                // A backward search can land inside a daylight-saving gap where the forward
                // one snaps past it: each candidate is taken as the forward search finds
                // it, so both directions agree on every tick.
                let mut at = t.div_euclid(1000) * 1000;
                let mut found = None;
                for _ in 0..8 {
                    let start = tz.timestamp_millis_opt(at).single()?;
                    let back = cron.find_previous_occurrence(&start, true).ok()?;
                    let back = to_millis(back.with_timezone(&Utc));
                    let mut tick = self.after(anchor, back - 1)?;
                    if tick <= t {
                        // The backward search also misses a repeated hour's second pass.
                        while let Some(later) = self.after(anchor, tick).filter(|&l| l <= t) {
                            tick = later;
                        }
                        found = Some(tick);
                        break;
                    }
                    at = back - 1000;
                }
                found?
            }
        };
        (found > floor).then_some(found)
    }

    /// The ticks in `[from, to]`: how many (saturating at [`MAX_COUNTED`]) and the last
    /// `keep` of them, oldest first.
    pub(super) fn ticks_in(
        &self,
        anchor: Millis,
        from: Millis,
        to: Millis,
        keep: usize,
    ) -> (u64, Vec<Millis>) {
        if from > to {
            return (0, Vec::new());
        }
        let mut last = Vec::new();
        let mut at = to;
        while last.len() < keep {
            match self.at_or_before(anchor, at, from - 1) {
                Some(t) => {
                    last.push(t);
                    at = t - 1;
                }
                None => break,
            }
        }
        last.reverse();
        let count = match self {
            Self::Every(every) => {
                let first = self.after(anchor, from - 1);
                match first {
                    Some(first) if first <= to => ((to - first) / every + 1) as u64,
                    _ => 0,
                }
            }
            Self::Cron(..) => {
                if last.len() < keep {
                    last.len() as u64
                } else {
                    let mut n = 0u64;
                    let mut t = from - 1;
                    while n < MAX_COUNTED {
                        match self.after(anchor, t) {
                            Some(next) if next <= to => {
                                n += 1;
                                t = next;
                            }
                            _ => break,
                        }
                    }
                    n
                }
            }
        };
        (count.max(last.len() as u64), last)
    }
}
