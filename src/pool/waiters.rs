//! The queue of checkouts waiting for a server connection, served tenant by tenant in turn.
//!
//! Tenants share one pool (one server login), so a single queue in arrival order would let
//! a tenant with a hundred busy clients put a hundred statements ahead of every other
//! tenant's next one: behind a full gate (`max_active`) that is a hundred statement times
//! of latency for a tenant that sent one. Here each tenant has its own queue, oldest first,
//! and a hand-over takes the next tenant in a ring of those waiting, so a client's wait
//! grows with the number of tenants waiting, not with the other tenants' clients. Clients
//! of one tenant are served in arrival order; clients without a tenant form one group.
//!
//! Queues emptied stay in the map with their capacity, so the busy steady state allocates
//! nothing per checkout; the manager drops them when the map grows past twice the tenants
//! waiting.

use super::ServerConn;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;
use tokio::sync::oneshot;

pub(super) struct Waiter {
    /// A connection, or `None` when the wait was withdrawn ([`super::Pool::withdraw`]).
    pub tx: oneshot::Sender<Option<Box<ServerConn>>>,
    pub since: Instant,
    /// Who waits, for [`super::Pool::withdraw`]; 0 for a wait that cannot be withdrawn.
    pub id: u64,
}

/// A tenant's key in the queue ([`tenant_key`]); 0 is the group of clients without one.
pub type TenantKey = u64;

/// The key of `tenant`'s queue: the last eight characters of its ULID (40 random bits)
/// as one word, mixed by [`KeyHasher`]. Never 0 (they are ASCII), so it cannot fall into
/// the group of clients without a tenant.
pub fn tenant_key(tenant: Option<&crate::tenant::TenantId>) -> TenantKey {
    tenant.map_or(0, |t| {
        let b = t.as_str().as_bytes();
        let tail: [u8; 8] = b[b.len() - 8..].try_into().unwrap_or([1; 8]);
        u64::from_le_bytes(tail)
    })
}

/// One multiplication per lookup: the keys are already random, SipHash would only add
/// cost to every queued checkout.
#[derive(Default)]
pub(super) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Default)]
pub(super) struct Waiters {
    queues: HashMap<TenantKey, VecDeque<Waiter>, BuildHasherDefault<KeyHasher>>,
    /// Tenants with at least one waiter, next to be served first; each appears once.
    turn: VecDeque<TenantKey>,
    len: usize,
}

impl Waiters {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `w` behind its tenant's earlier waiters; a tenant that had none joins the
    /// end of the ring.
    pub fn push(&mut self, tenant: TenantKey, w: Waiter) {
        let q = self.queues.entry(tenant).or_default();
        if q.is_empty() {
            self.turn.push_back(tenant);
        }
        q.push_back(w);
        self.len += 1;
    }

    /// The next waiter to serve: the oldest of the tenant whose turn it is; that tenant
    /// goes to the end of the ring if it has more.
    pub fn pop_next(&mut self) -> Option<Waiter> {
        while let Some(tenant) = self.turn.pop_front() {
            let Some(q) = self.queues.get_mut(&tenant) else {
                continue;
            };
            let Some(w) = q.pop_front() else {
                continue;
            };
            if !q.is_empty() {
                self.turn.push_back(tenant);
            }
            self.len -= 1;
            return Some(w);
        }
        None
    }

    /// When the longest-waiting client queued.
    pub fn oldest_since(&self) -> Option<Instant> {
        self.fronts().map(|w| w.since).min()
    }

    /// Removes the waiters for which `drop_it` is true, in every tenant's queue.
    pub fn remove_where(&mut self, mut drop_it: impl FnMut(&Waiter) -> bool) -> Vec<Waiter> {
        let mut removed = Vec::new();
        for q in self.queues.values_mut() {
            let mut i = 0;
            while i < q.len() {
                if drop_it(&q[i]) {
                    removed.extend(q.remove(i));
                } else {
                    i += 1;
                }
            }
        }
        self.forget_removed(removed.len());
        removed
    }

    /// Removes the waiters whose queueing time `expired` says is past (each tenant's queue
    /// is oldest first, so only fronts are looked at); returns how many, and the earliest
    /// queueing time of those left.
    pub fn expire(&mut self, expired: impl Fn(Instant) -> bool) -> (usize, Option<Instant>) {
        let mut gone = 0;
        let mut oldest: Option<Instant> = None;
        for q in self.queues.values_mut() {
            while q.front().is_some_and(|w| expired(w.since)) {
                q.pop_front();
                gone += 1;
            }
            if let Some(w) = q.front() {
                oldest = Some(oldest.map_or(w.since, |o| o.min(w.since)));
            }
        }
        self.forget_removed(gone);
        (gone, oldest)
    }

    /// Whether every waiter gave up (its checkout was dropped).
    pub fn all_gone(&self) -> bool {
        self.queues.values().flatten().all(|w| w.tx.is_closed())
    }

    /// Drops the queues of tenants no longer waiting once they are most of the map (their
    /// capacity is kept for tenants that come back soon, not for every tenant ever seen).
    pub fn shrink(&mut self) {
        if self.queues.len() > 2 * self.turn.len() + 64 {
            self.queues.retain(|_, q| !q.is_empty());
        }
    }

    fn fronts(&self) -> impl Iterator<Item = &Waiter> {
        self.turn
            .iter()
            .filter_map(|t| self.queues.get(t).and_then(|q| q.front()))
    }

    /// Accounts for `n` waiters taken out of their queues other than by [`Self::pop_next`]:
    /// tenants left with none leave the ring.
    fn forget_removed(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.len -= n;
        let queues = &self.queues;
        self.turn
            .retain(|t| queues.get(t).is_some_and(|q| !q.is_empty()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn waiter(id: u64, since: Instant) -> (Waiter, oneshot::Receiver<Option<Box<ServerConn>>>) {
        let (tx, rx) = oneshot::channel();
        (Waiter { tx, since, id }, rx)
    }

    fn ids(w: &mut Waiters) -> Vec<u64> {
        std::iter::from_fn(|| w.pop_next().map(|w| w.id)).collect()
    }

    #[test]
    fn tenants_take_turns_and_each_keeps_its_order() {
        let now = Instant::now();
        let mut w = Waiters::default();
        let mut keep = Vec::new();
        // Tenant 7 queues five clients before tenants 8 and 0 queue one each.
        for id in [71, 72, 73, 74, 75] {
            let (x, rx) = waiter(id, now);
            keep.push(rx);
            w.push(7, x);
        }
        for (tenant, id) in [(8, 81), (0, 1), (8, 82)] {
            let (x, rx) = waiter(id, now);
            keep.push(rx);
            w.push(tenant, x);
        }
        assert_eq!(w.len(), 8);
        assert_eq!(ids(&mut w), [71, 81, 1, 72, 82, 73, 74, 75]);
        assert!(w.is_empty());
        assert_eq!(w.pop_next().map(|x| x.id), None);
        // The emptied queues stay (no allocation when their tenants come back)...
        assert_eq!(w.queues.len(), 3);
        w.shrink();
        assert_eq!(w.queues.len(), 3, "few: kept");
    }

    #[test]
    fn expiry_and_removal_look_at_every_tenant() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut w = Waiters::default();
        let mut keep = Vec::new();
        for (tenant, id, ms) in [
            (1, 11, 0),
            (2, 21, 5),
            (1, 12, 10),
            (3, 31, 20),
            (2, 22, 30),
        ] {
            let (x, rx) = waiter(id, at(ms));
            keep.push(rx);
            w.push(tenant, x);
        }
        assert_eq!(w.oldest_since(), Some(at(0)));
        // Everything queued before 10 ms has timed out: 11 and 21.
        let (gone, oldest) = w.expire(|since| since < at(10));
        assert_eq!((gone, oldest), (2, Some(at(10))));
        assert_eq!(w.len(), 3);
        assert_eq!(w.oldest_since(), Some(at(10)));
        // A withdrawal (by id) in the middle of the ring.
        let removed = w.remove_where(|x| x.id == 31);
        assert_eq!(removed.len(), 1);
        assert_eq!(w.len(), 2);
        assert_eq!(ids(&mut w), [12, 22]);
    }

    #[test]
    fn emptied_queues_are_dropped_once_they_are_most_of_the_map() {
        let now = Instant::now();
        let mut w = Waiters::default();
        for tenant in 1..=100 {
            let (x, _rx) = waiter(tenant, now);
            w.push(tenant, x);
            assert_eq!(w.pop_next().map(|x| x.id), Some(tenant));
        }
        let (x, _rx) = waiter(5, now);
        w.push(5, x);
        w.shrink();
        assert_eq!(w.queues.len(), 1, "only the tenant still waiting");
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn tenant_keys_differ_by_tenant_and_never_collide_with_no_tenant() {
        let a: crate::tenant::TenantId = "01HZY3J1R7N4ABCDEFGHJKMNPQ".parse().unwrap();
        let b: crate::tenant::TenantId = "01HZY3J1R7N4ABCDEFGHJKMNPR".parse().unwrap();
        assert_ne!(tenant_key(Some(&a)), tenant_key(Some(&b)));
        assert_ne!(tenant_key(Some(&a)), 0);
        assert_eq!(tenant_key(None), 0);
    }
}
