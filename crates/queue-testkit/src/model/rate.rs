//! Rate limits in the model.

use super::*;

impl Model {
    /// Sets or removes the rate limit: at most `max` starts in any window of `per`. Starts
    /// are counted while a limit is set; each claim forgets those that have left the
    /// window, and a changed limit counts the ones still kept; a removed limit forgets
    /// them all.
    pub fn set_rate_limit(&mut self, limit: Option<queue_core::RateLimit>) -> Result<()> {
        self.check_rate(limit)?;
        self.rate = limit.map(|l| (u64::from(l.max), duration_ms(l.per)));
        if limit.is_none() {
            self.starts.clear();
            self.held_until = 0;
        }
        Ok(())
    }
}
