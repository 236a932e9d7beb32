//! Connections that have not logged in yet, oldest first.
//!
//! At `max_client_conn` a new connection takes the place of the oldest of them instead of
//! being refused. Sockets that connect and say nothing (a port scanner, a flood, a client
//! stuck in its TLS handshake) would otherwise hold every slot until
//! `client_login_timeout_ms` (PgBouncer's behaviour), and no application could log in
//! meanwhile. Logged-in clients are never displaced. To crowd out a client that is logging
//! in, a flood now has to open more than `max_client_conn` connections within the few
//! milliseconds its login takes, instead of one per slot per login timeout.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Notify;

/// The registry: one entry per connection in its login, keyed by arrival order.
#[derive(Default)]
pub struct PendingLogins {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// Arrival number → the signal that tells that login to give up its place.
    waiting: BTreeMap<u64, Arc<Notify>>,
}

/// A connection's place in the registry, for the time of its login; leaves it on drop.
pub struct PendingLogin<'a> {
    registry: &'a PendingLogins,
    id: u64,
    /// Notified when a newer connection took this one's place.
    pub evicted: Arc<Notify>,
}

impl PendingLogins {
    /// Enters a connection that starts its login.
    pub fn register(&self) -> PendingLogin<'_> {
        let evicted = Arc::new(Notify::new());
        let mut inner = self.inner.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.waiting.insert(id, evicted.clone());
        PendingLogin {
            registry: self,
            id,
            evicted,
        }
    }

    /// Tells the oldest connection still in its login to give up its place; `false` when
    /// there is none. (`Notify` keeps the signal for a login not waiting on it yet.)
    pub fn evict_oldest(&self) -> bool {
        let oldest = self.inner.lock().waiting.pop_first();
        match oldest {
            Some((_, evicted)) => {
                evicted.notify_one();
                true
            }
            None => false,
        }
    }

    /// Connections in their login now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().waiting.len()
    }
}

impl PendingLogin<'_> {
    /// Leaves the registry at the end of a login; `false` if a newer connection took this
    /// one's place meanwhile (it was admitted in exchange: this one must go all the same,
    /// or the connections would exceed `max_client_conn`).
    pub fn finish(self) -> bool {
        self.registry
            .inner
            .lock()
            .waiting
            .remove(&self.id)
            .is_some()
    }
}

impl Drop for PendingLogin<'_> {
    fn drop(&mut self) {
        self.registry.inner.lock().waiting.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_login_is_told_to_go_and_finished_ones_are_not() {
        let registry = PendingLogins::default();
        let first = registry.register();
        let second = registry.register();
        let third = registry.register();
        drop(second);
        assert!(registry.evict_oldest());
        // The signal waits for a login that was not listening yet.
        first.evicted.notified().await;
        assert_eq!(registry.len(), 1, "the evicted entry left at once");
        assert!(
            registry.evict_oldest(),
            "the third is next; the second had finished"
        );
        third.evicted.notified().await;
        assert!(!registry.evict_oldest(), "nobody left to evict");
        drop((first, third));
        assert_eq!(registry.len(), 0);
        let late = registry.register();
        assert!(registry.evict_oldest());
        assert!(!late.finish(), "displaced just before it finished");
        assert!(registry.register().finish());
    }
}
