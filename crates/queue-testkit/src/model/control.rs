//! Pause and resume in the model.

use super::*;

impl Model {
    /// Pauses (`true`) or resumes the queue: while paused, claims take nothing new.
    /// Resuming also lifts a handler's hold (`rate_limited`).
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
        if !paused {
            self.held_until = 0;
        }
    }
}
