//! Floors: where a claim starts its scan of a band's ready jobs without a group.
//!
//! A claim leases the first ready rows by place (`FOR UPDATE SKIP LOCKED`). The rows it
//! leases leave the ready index only when vacuum removes their old versions, and while a
//! long transaction holds the xmin horizon it cannot (nor may a scan mark the entries
//! dead): a scan from the index's start visits every job leased since that transaction
//! began, so claims slowed down in proportion to the work done. A floor per band, kept on
//! the queue's row (which a claim holds locked), lets the scan begin past them.
//!
//! A ready row can sit below its band's floor in three ways: a transaction that placed it
//! committed after a claim moved the floor past its place (an enqueue, a retry placed at
//! the back), or a claim skipped it while another transaction held it locked. The first
//! two announce the place in their wake-up (`<queue> <place>`, delivered at their
//! commit); a claim lowers every floor to the lowest place announced since the last claim
//! ([`Hint`]). Whatever an announcement misses (a skipped row, a wake-up lost with its
//! connection) is found by a sweep: at most every [`SWEEP`] a claim scans from the start.
//!
//! The promotion of delayed jobs has the same trouble with their due times, and a floor
//! that trails each claim by [`SWEEP`] (`Floors::due_after`): a delayed job is written
//! with a due time after its transaction's clock reading, so only a transaction longer
//! than that can leave one below, and the sweep finds it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use queue_core::backend::Millis;

/// The longest a ready job without a group can wait below a claim's floor when no wake-up
/// announced it (a claim skipped it while another transaction held its row, or the
/// wake-up was lost with a connection): at least this often, a claim scans every band from
/// its start. See the crate's README, "Claims and the xmin horizon".
pub const SWEEP: Duration = Duration::from_secs(1);

/// The lowest place announced by wake-ups since the last claim took it (none: `i64::MAX`).
#[derive(Debug)]
pub(crate) struct Hint(AtomicI64);

impl Default for Hint {
    fn default() -> Self {
        Hint(AtomicI64::new(i64::MAX))
    }
}

impl Hint {
    /// Records an announced place.
    pub(crate) fn announce(&self, place: i64) {
        self.0.fetch_min(place, Ordering::AcqRel);
    }

    /// Takes the lowest announced place, leaving none.
    pub(crate) fn take(&self) -> i64 {
        self.0.swap(i64::MAX, Ordering::AcqRel)
    }

    /// Puts back a place taken by a claim that failed.
    pub(crate) fn restore(&self, place: i64) {
        self.announce(place);
    }
}

/// The wake-up payload announcing `place` (the lowest place of a ready row a transaction
/// wrote) to the listeners of `queue`.
pub(crate) fn payload(queue: &str, place: Option<i64>) -> String {
    match place {
        Some(p) => format!("{queue} {p}"),
        None => queue.to_owned(),
    }
}

/// [`payload`] in SQL, of a queue and a place that may be null (SQL expressions).
pub(crate) fn payload_sql(queue: &str, place: &str) -> String {
    format!("{queue} || coalesce(' ' || {place}, '')")
}

/// Reads a wake-up's payload for `queue`: `None` when it is another queue's, else the place
/// it announces, if any.
pub(crate) fn read_payload(queue: &str, payload: &str) -> Option<Option<i64>> {
    if payload == queue {
        return Some(None);
    }
    let (q, place) = payload.rsplit_once(' ')?;
    (q == queue).then(|| place.parse().ok())
}

/// The floors as the newest cursor holds them (`cursors`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stored {
    /// Per band, where claims scan the ready jobs without a group from.
    pub(crate) floors: [i64; 3],
    /// Where the promotion of delayed jobs scans from (their due time).
    pub(crate) due_floor: Millis,
    /// When a claim last scanned from the start.
    pub(crate) swept_ms: Millis,
}

/// Where one claim scans each band from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Floors {
    /// The floors the queue's row holds.
    pub(crate) stored: [i64; 3],
    /// Those lowered to the announced place.
    pub(crate) kept: [i64; 3],
    /// The delayed jobs' due floor the queue's row holds.
    pub(crate) due: Millis,
    /// The place announced since the last claim (`i64::MAX`: none), put back when the
    /// claim does not write its floors.
    pub(crate) hint: i64,
    /// This claim scans every band from the start (and records when).
    pub(crate) sweeping: bool,
}

impl Floors {
    /// The floors a claim at `now` uses: the stored ones lowered to the announced `hint`;
    /// the start of every band when the last sweep is [`SWEEP`] old (or the clock went
    /// back past it).
    pub(crate) fn start(stored: &Stored, hint: i64, now: Millis) -> Floors {
        let since = now - stored.swept_ms;
        Floors {
            stored: stored.floors,
            kept: stored.floors.map(|f| f.min(hint)),
            due: stored.due_floor,
            hint,
            sweeping: since < 0 || since >= SWEEP.as_millis() as i64,
        }
    }

    /// Where the scan of `band` starts.
    pub(crate) fn from(&self, band: u8) -> i64 {
        if self.sweeping {
            0
        } else {
            self.kept[usize::from(band)]
        }
    }

    /// Where the promotion of due jobs scans from (their due time).
    pub(crate) fn due_from(&self) -> Millis {
        if self.sweeping { 0 } else { self.due }
    }

    /// The due floor after a promotion at `now` that moved `promoted` jobs (at most
    /// `limit`, the last one due at `last`): [`SWEEP`] before `now`, or before `last` when
    /// the promotion stopped at its limit, never below where it began. A delayed job whose
    /// transaction commits within [`SWEEP`] of the claim is still promoted by the next
    /// claim; one committed later, due before that, by the next sweep.
    pub(crate) fn due_after(
        &self,
        promoted: usize,
        limit: usize,
        last: Option<Millis>,
        now: Millis,
    ) -> Millis {
        let mut to = now.saturating_sub(SWEEP.as_millis() as i64);
        if promoted >= limit
            && let Some(last) = last
        {
            to = to.min(last);
        }
        to.max(self.due_from())
    }

    /// `band`'s floor after this claim: where it was when the claim did not scan it, else
    /// at the first row the scan fetched and did not lease (`left`), else past the last
    /// row it fetched (`last`), else (the scan found nothing) where the queue's row had it.
    /// Rows below that were leased, are not ready, or were held by another transaction
    /// (found by the next sweep) or not yet committed (announced by their wake-up).
    pub(crate) fn after(&self, band: u8, scanned: Option<(Option<i64>, Option<i64>)>) -> i64 {
        let from = self.from(band);
        match scanned {
            None => self.kept[usize::from(band)],
            Some((Some(left), _)) => left,
            Some((None, Some(last))) => last.saturating_add(1).max(from),
            Some((None, None)) => self.stored[usize::from(band)].max(from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(floors: [i64; 3], swept_ms: Millis) -> Stored {
        Stored {
            floors,
            swept_ms,
            ..Stored::default()
        }
    }

    #[test]
    fn a_claim_starts_at_the_stored_floors_lowered_by_announcements() {
        let f = Floors::start(&stored([10, 20, 30], 1_000), 25, 1_500);
        assert_eq!([f.from(0), f.from(1), f.from(2)], [10, 20, 25]);
        assert!(!f.sweeping);
        let f = Floors::start(&stored([10, 20, 30], 1_000), i64::MAX, 1_999);
        assert_eq!([f.from(0), f.from(1), f.from(2)], [10, 20, 30]);
    }

    #[test]
    fn a_claim_sweeps_from_the_start_once_a_sweep_is_old_or_the_clock_went_back() {
        for now in [2_000, 999] {
            let f = Floors::start(&stored([10, 20, 30], 1_000), i64::MAX, now);
            assert!(f.sweeping);
            assert_eq!([f.from(0), f.from(1), f.from(2)], [0, 0, 0]);
            // A band the sweep did not reach keeps its floor.
            assert_eq!(f.after(2, None), 30);
        }
    }

    #[test]
    fn the_floor_stops_at_the_first_row_left_or_passes_the_last_leased() {
        let f = Floors::start(&stored([5, 5, 20], 1_000), i64::MAX, 1_100);
        assert_eq!(f.after(0, Some((Some(12), Some(15)))), 12);
        assert_eq!(f.after(0, Some((None, Some(15)))), 16);
        assert_eq!(f.after(0, Some((None, None))), 5);
        // Nothing found from an announced place: back where it was.
        let f = Floors::start(&stored([50, 5, 20], 1_000), 30, 1_100);
        assert_eq!(f.from(0), 30);
        assert_eq!(f.after(0, Some((None, None))), 50);
        assert_eq!(f.after(2, Some((None, Some(15)))), 20);
        assert_eq!(f.after(1, None), 5);
    }

    #[test]
    fn the_due_floor_trails_the_claim_by_a_sweep_and_stops_where_a_full_promotion_did() {
        let g = Stored {
            due_floor: 5_000,
            swept_ms: 9_500,
            ..Stored::default()
        };
        let f = Floors::start(&g, i64::MAX, 10_000);
        assert_eq!(f.due_from(), 5_000);
        assert_eq!(f.due_after(3, 100, Some(9_900), 10_000), 9_000);
        assert_eq!(f.due_after(100, 100, Some(7_000), 10_000), 7_000);
        assert_eq!(f.due_after(100, 100, Some(9_900), 10_000), 9_000);
        assert_eq!(f.due_after(0, 100, None, 5_500), 5_000);
        let swept = Floors::start(&g, i64::MAX, 20_000);
        assert_eq!(swept.due_from(), 0);
        assert_eq!(swept.due_after(0, 100, None, 20_000), 19_000);
    }

    #[test]
    fn announcements_keep_the_lowest_until_a_claim_takes_it() {
        let hint = Hint::default();
        hint.announce(40);
        hint.announce(30);
        hint.announce(50);
        assert_eq!(hint.take(), 30);
        assert_eq!(hint.take(), i64::MAX);
        hint.restore(30);
        hint.announce(35);
        assert_eq!(hint.take(), 30);
    }

    #[test]
    fn a_payload_names_its_queue_and_may_announce_a_place() {
        assert_eq!(read_payload("q", &payload("q", None)), Some(None));
        assert_eq!(read_payload("q", &payload("q", Some(7))), Some(Some(7)));
        assert_eq!(read_payload("a b", &payload("a b", Some(7))), Some(Some(7)));
        assert_eq!(read_payload("a b", "a b"), Some(None));
        assert_eq!(read_payload("q", &payload("other", Some(7))), None);
        assert_eq!(read_payload("q", "qq"), None);
    }
}
