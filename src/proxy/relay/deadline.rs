//! The relay's side of the role's `command_timeout` within one transaction: when the
//! client's command gets a deadline in its cancel target, when that deadline goes, and what
//! the server's bytes say about a cancel the watchdog sent meanwhile. The watchdog itself
//! (`proxy::command_timeout`) only compares deadlines with the clock.

use super::tracker::Tracker;
use crate::proxy::cancel::CancelTarget;
use std::time::Duration;

pub(super) struct CommandDeadline {
    /// A deadline is armed in the cancel target for the command running now.
    armed: bool,
    /// The ReadyForQuery count when the deadline was last looked at: a new one ends the
    /// command it timed.
    progress: u64,
    /// The deadline ran while the client still owed the Flush or Sync that asks the server
    /// to answer (PostgreSQL holds its results until then: its silence says nothing).
    unasked: bool,
}

impl CommandDeadline {
    pub fn new(t: &Tracker) -> Self {
        CommandDeadline {
            armed: false,
            progress: t.ready_seen,
            unasked: false,
        }
    }

    /// Before the relay waits: a command the server owes an answer has a deadline, and
    /// nothing else has (not while the proxy's own statements run first: a cancel then
    /// fails them).
    #[inline]
    pub fn before_wait(&mut self, target: &CancelTarget, t: &mut Tracker, limit: Duration) {
        if std::mem::take(&mut self.unasked) && !t.awaits_flush && target.take_timed_out() {
            // The timeout (and a give-up) came while the client owed a Flush or Sync: the
            // command's clock starts again now that the server is asked.
            target.disarm_command();
            self.armed = false;
        }
        let want = !t.replies.is_empty() && !t.copy_in && !t.timeout_cancel && !t.cancels_held;
        if want && !self.armed {
            target.arm_command(crate::proxy::command_timeout::deadline_after(limit));
        } else if !want && self.armed {
            target.disarm_command();
            // In COPY IN the clock ran for a blocked write (or for the COPY's start); a
            // cancel the watchdog sent meanwhile ends the COPY with a 57014 that is still
            // to come, once the server has drained what it was sent.
            if t.copy_in && target.take_timed_out() {
                t.timeout_cancel = true;
            }
        }
        self.armed = want;
        self.unasked = want && t.awaits_flush;
    }

    /// A write to the server is blocked during COPY IN, where the server owes no answer and
    /// so no deadline runs ([`CommandDeadline::before_wait`]): a server that takes none of
    /// the data for `limit` is stuck as surely as one that does not answer (a row's insert
    /// waiting for a lock, a frozen backend), and gets the same cancel, then give-up. The
    /// clock runs for this one write; the next wait's `before_wait` disarms it.
    pub fn on_blocked_copy_write(&mut self, target: &CancelTarget, t: &Tracker, limit: Duration) {
        if t.copy_in && !self.armed && !t.timeout_cancel && !t.cancels_held {
            target.arm_command(crate::proxy::command_timeout::deadline_after(limit));
            self.armed = true;
        }
    }

    /// The server sent bytes: if the watchdog cancelled the command, its 57014 among them
    /// gets the proxy's wording.
    #[inline]
    pub fn on_server_bytes(&mut self, target: &CancelTarget, t: &mut Tracker) {
        if self.armed && target.take_timed_out() {
            t.timeout_cancel = true;
            self.armed = false;
        }
    }

    /// After the server's bytes were passed on: a command they finished takes its deadline
    /// with it (a client idle in its transaction has nothing to cancel), and the next one in
    /// the pipeline gets its own time.
    #[inline]
    pub fn after_forward(&mut self, target: &CancelTarget, t: &Tracker) {
        if t.ready_seen != self.progress {
            self.progress = t.ready_seen;
            if self.armed {
                target.disarm_command();
                self.armed = false;
            }
        }
    }

    /// Whether a give-up by the watchdog (`CancelTarget::server_unresponsive`) ends the
    /// wait: only for a command whose server was asked to answer.
    #[inline]
    pub fn watched(&self, t: &Tracker) -> bool {
        self.armed && !t.awaits_flush
    }
}
