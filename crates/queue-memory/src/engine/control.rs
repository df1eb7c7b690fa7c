//! Pause and resume of the queue.

use super::*;

impl Tables {
    /// Pauses (`true`) or resumes the queue; resuming also lifts a handler's hold.
    pub(crate) fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
        if !paused {
            self.held_until = 0;
        }
    }
}
