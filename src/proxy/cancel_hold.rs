//! Holding a client's cancels while the proxy's own statements run ahead of its (a tenant
//! status lookup, the tenant switch as a Query of its own), and delivering a cancel the
//! proxy sends late: the one held meanwhile, and that of a client whose statement waited
//! behind another's on its connection (`relay::pipeline`).
//!
//! Both are sent at the moment PostgreSQL moves on to the client's statement (the reply
//! to what ran before it has just arrived): if the cancel reaches it before it started
//! that statement (it was reading it, or the scheduler had not run it yet on a busy host),
//! PostgreSQL ignores it, and the statement would run to its end. So it goes again until
//! the reply to the client's statements begins or the client leaves the server, whichever
//! comes first; never into a later transaction.

use super::word::pack;
use super::{CancelHandle, CancelTarget};
use crate::pool::BackendKey;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub(super) const HOLD_OFF: u8 = 0;
const HOLD_ON: u8 = 1;
const HOLD_WAITING: u8 = 2;

/// How often, and how far apart, a late cancel goes again (see the module's doc): soon
/// once (the window it can miss is short), then every 100 ms for up to 5 s.
const HELD_RESENDS: u32 = 50;
const FIRST_RESEND: Duration = Duration::from_millis(10);
const RESEND_INTERVAL: Duration = Duration::from_millis(100);

impl CancelHandle {
    /// Sends a late cancel to the server the client runs on (from a task of its own: the
    /// relay goes on relaying the replies), again until the relay says the reply began
    /// ([`CancelTarget::reply_began`]). Returns whether it was sent: the relay then
    /// watches for that reply.
    pub fn cancel_until_reply(&self) -> bool {
        // Pinned here, while the relay still holds the server: the task may run after
        // the transaction ended, and must not find the client's next one.
        let Some(key) = self.target.pin() else {
            return false;
        };
        self.target.cancel_unanswered.store(true, Ordering::SeqCst);
        let (registry, target) = (self.registry.clone(), self.target.clone());
        tokio::spawn(async move {
            registry.deliver(&target, key).await;
            let mut interval = FIRST_RESEND;
            for _ in 0..HELD_RESENDS {
                tokio::time::sleep(interval).await;
                interval = RESEND_INTERVAL;
                if !target.pin_unanswered(key) {
                    return;
                }
                registry.deliver(&target, key).await;
            }
        });
        true
    }
}

impl CancelTarget {
    /// The proxy is about to run statements of its own on the client's server ahead of the
    /// client's: a client's cancel would cancel those instead (and a failed switch ends
    /// the session), so it waits until [`CancelTarget::release_cancels`].
    ///
    /// A cancel that passed before the hold was set (pinned, on its way to the server) is
    /// waited for: sent now, it would land on the proxy's statement. One that waits already
    /// (held for the status lookup, before the switch) stays waiting.
    pub async fn hold_cancels(&self) {
        let _ = self
            .held
            .compare_exchange(HOLD_OFF, HOLD_ON, Ordering::SeqCst, Ordering::SeqCst);
        self.settle().await;
    }

    /// The client's own statements are next on the server: whether a cancel waited
    /// meanwhile (the caller then sends it: [`CancelHandle::cancel_until_reply`]).
    #[inline]
    pub fn release_cancels(&self) -> bool {
        self.held.load(Ordering::Relaxed) != HOLD_OFF
            && self.held.swap(HOLD_OFF, Ordering::SeqCst) == HOLD_WAITING
    }

    /// Whether a client's cancel must wait (it is then recorded).
    pub(super) fn defer_if_held(&self) -> bool {
        match self
            .held
            .compare_exchange(HOLD_ON, HOLD_WAITING, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => true,
            Err(now) => now == HOLD_WAITING,
        }
    }

    /// The reply to the client's statements began, or its transaction ended: a late
    /// cancel is not sent again.
    #[inline]
    pub fn reply_began(&self) {
        if self.cancel_unanswered.load(Ordering::Relaxed) {
            self.cancel_unanswered.store(false, Ordering::SeqCst);
        }
    }

    /// Pins `key` for one more send of a late cancel, if the client still runs on that
    /// server and its reply has not begun. The same handshake as `pin`: the relay clears
    /// the word, then reads `in_flight`; this raises `in_flight`, then reads the word.
    fn pin_unanswered(&self, key: BackendKey) -> bool {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let same = self.server.load(Ordering::SeqCst) == pack(key)
            && self.cancel_unanswered.load(Ordering::SeqCst);
        if same {
            self.aimed.fetch_add(1, Ordering::SeqCst);
        } else {
            self.cancel_settled();
        }
        same
    }
}
