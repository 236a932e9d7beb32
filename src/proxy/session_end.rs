//! Ending a logged-in session from outside its task: the admin console's KILL_CLIENT and
//! KILL_TENANT, and `client_idle_timeout_ms`, whose reaper ends sessions idle that long.
//!
//! Both only leave a request in the client's cancel target and wake its relay, which acts
//! at its next wait: a kill wherever the session waits (for its client, for a connection,
//! for its server), an idle end only while it waits for its client between transactions
//! (holding nothing; in session mode, holding its server connection, which goes back to the
//! pool reset). The reaper reads each client's state and idle time without the relay's
//! help, so the two can cross: a request found stale (the client sent something since) is
//! withdrawn, never acted on. The relay pays one store of the coarse clock per transaction, as it goes idle.

use super::cancel::CancelRegistry;
use super::client_info::ClientState;
use crate::shutdown::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

const NONE: u8 = 0;
const KILLED: u8 = 1;
const IDLE: u8 = 2;

/// What ends a session, once requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndRequest {
    /// The admin console ended it.
    Killed,
    /// The reaper found it idle for `client_idle_timeout_ms`.
    Idle,
}

/// One session's pending end and when it last went idle.
pub struct SessionEnd {
    requested: AtomicU8,
    /// On the coarse clock ([`crate::clock`]).
    idle_since_ms: AtomicU64,
    /// Idle between transactions while it holds its server connection (session mode),
    /// which its cancel key's state does not show.
    idle_holding: AtomicBool,
}

impl SessionEnd {
    pub fn new(now_ms: u64) -> SessionEnd {
        SessionEnd {
            requested: AtomicU8::new(NONE),
            idle_since_ms: AtomicU64::new(now_ms),
            idle_holding: AtomicBool::new(false),
        }
    }

    /// A kill overrides an idle end and is never withdrawn.
    pub fn request_kill(&self) {
        self.requested.store(KILLED, Ordering::Release);
    }

    /// `false` if an end is requested already.
    pub fn request_idle_end(&self) -> bool {
        self.requested
            .compare_exchange(NONE, IDLE, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// The relay found the idle end stale.
    pub fn withdraw_idle_end(&self) {
        let _ = self
            .requested
            .compare_exchange(IDLE, NONE, Ordering::AcqRel, Ordering::Relaxed);
    }

    #[inline]
    pub fn requested(&self) -> Option<EndRequest> {
        match self.requested.load(Ordering::Relaxed) {
            NONE => None,
            KILLED => Some(EndRequest::Killed),
            _ => Some(EndRequest::Idle),
        }
    }

    /// The session waits for its client from now on, holding nothing.
    #[inline]
    pub fn mark_idle(&self, now_ms: u64) {
        self.idle_since_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Session mode: the session waits for its client between transactions from now on
    /// (`true`), holding its server connection, or has sent something (`false`).
    pub fn mark_idle_holding(&self, idle: bool, now_ms: u64) {
        if idle {
            self.mark_idle(now_ms);
        }
        self.idle_holding.store(idle, Ordering::Relaxed);
    }

    /// Whether the session is idle between transactions holding its server connection.
    pub fn idle_holding(&self) -> bool {
        self.idle_holding.load(Ordering::Relaxed)
    }

    /// Whether it has waited for its client `limit_ms` or longer since [`Self::mark_idle`].
    pub fn idle_for(&self, now_ms: u64, limit_ms: u64) -> bool {
        now_ms.saturating_sub(self.idle_since_ms.load(Ordering::Relaxed)) >= limit_ms
    }
}

/// Ends sessions idle for `limit` (`client_idle_timeout_ms`), looking every quarter of it
/// (at most every second), until shutdown.
pub async fn reap_idle(registry: Arc<CancelRegistry>, limit: Duration, shutdown: Shutdown) {
    let limit_ms = limit.as_millis() as u64;
    let every = (limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let stop = shutdown.triggered();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(every) => {}
        }
        let now = crate::clock::advance();
        for client in registry.clients() {
            let idle = client.state() == ClientState::Idle || client.end.idle_holding();
            if idle && client.end.idle_for(now, limit_ms) {
                client.end_idle();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kill_wins_over_an_idle_end_and_stays() {
        let end = SessionEnd::new(1_000);
        assert_eq!(end.requested(), None);
        assert!(!end.idle_for(1_500, 1_000));
        assert!(end.idle_for(2_000, 1_000));
        assert!(end.request_idle_end());
        assert!(!end.request_idle_end(), "requested once");
        assert_eq!(end.requested(), Some(EndRequest::Idle));
        end.withdraw_idle_end();
        assert_eq!(end.requested(), None, "a stale idle end goes");
        end.mark_idle(5_000);
        assert!(!end.idle_for(5_500, 1_000), "idle again from 5 s");
        assert!(end.request_idle_end());
        end.request_kill();
        assert_eq!(end.requested(), Some(EndRequest::Killed));
        end.withdraw_idle_end();
        assert!(!end.request_idle_end());
        assert_eq!(end.requested(), Some(EndRequest::Killed), "never withdrawn");
    }

    #[test]
    fn a_session_idle_holding_its_server_is_seen_idle_from_when_it_went_idle() {
        let end = SessionEnd::new(1_000);
        assert!(!end.idle_holding());
        end.mark_idle_holding(true, 9_000);
        assert!(end.idle_holding());
        assert!(!end.idle_for(9_500, 1_000));
        assert!(end.idle_for(10_000, 1_000));
        end.mark_idle_holding(false, 12_000);
        assert!(!end.idle_holding(), "busy again");
    }
}
