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
    /// Its tenant's queue (set by [`Waiters::push`]), for `max_tenant_connections`.
    pub tenant: TenantKey,
    /// Its first message, ready to go down a busy connection behind the statement running
    /// there ([`super::Pool::take_successor`]); `None` when it cannot.
    pub early: Option<Box<super::EarlyMessage>>,
}

/// A tenant's key in the queue ([`tenant_key`]); 0 is the group of clients without one.
pub type TenantKey = u64;

/// The key of `tenant`'s queue and caps: all 128 bits of its ULID folded into one word,
/// the low 64 (random in a ULID) with the high 64 (time and the rest) mixed by a bijection,
/// so that ids that differ in one half only never share a key, and ids that differ in both
/// share one with a chance of 2^-64. Never 0, the group of clients without a tenant.
/// Computed once per login.
pub fn tenant_key(tenant: Option<&crate::tenant::TenantId>) -> TenantKey {
    tenant.map_or(0, |t| {
        let bits = t.to_u128();
        let key = (bits as u64) ^ mix64((bits >> 64) as u64);
        key.max(1)
    })
}

/// splitmix64's finaliser: a bijection of u64 that spreads every input bit.
fn mix64(n: u64) -> u64 {
    let z = (n ^ (n >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The keys of ids that share their high half differ only where their low halves do
/// (often a few low characters): a full 64-bit mix (splitmix64's finaliser) spreads them
/// into the low bits (the table's index) and the high ones (its tags), at a fraction of
/// SipHash's cost per queued checkout.
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
        self.0 = mix64(n);
    }
}

/// Above this many tenant queues, those left empty are dropped (see [`Waiters::shrink`]).
const KEPT_QUEUES: usize = 1024;

#[derive(Default)]
pub(super) struct Waiters {
    /// Each tenant's queue, oldest first, at the position `slot_of` gives it.
    slots: Vec<VecDeque<Waiter>>,
    slot_of: HashMap<TenantKey, usize, BuildHasherDefault<KeyHasher>>,
    /// Slots with at least one waiter, next to be served first; each appears once.
    turn: VecDeque<usize>,
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
    /// end of the ring. The one hash lookup of a checkout's wait.
    pub fn push(&mut self, tenant: TenantKey, mut w: Waiter) {
        w.tenant = tenant;
        let slot = match self.slot_of.get(&tenant) {
            Some(&slot) => slot,
            None => {
                let slot = self.slots.len();
                self.slot_of.insert(tenant, slot);
                self.slots.push(VecDeque::with_capacity(2));
                slot
            }
        };
        let q = &mut self.slots[slot];
        if q.is_empty() {
            self.turn.push_back(slot);
        }
        q.push_back(w);
        self.len += 1;
    }

    /// The next waiter to serve: the oldest of the tenant whose turn it is, among tenants
    /// `may_start` lets take a connection (`max_tenant_connections`); that tenant goes to
    /// the end of the ring if it has more. A tenant passed over keeps its place.
    pub fn pop_next(&mut self, may_start: impl Fn(TenantKey) -> bool) -> Option<Waiter> {
        let mut passed = 0;
        while passed < self.turn.len() {
            let slot = self.turn[passed];
            let q = &mut self.slots[slot];
            let Some(front) = q.front() else {
                self.turn.remove(passed);
                continue;
            };
            if !may_start(front.tenant) {
                passed += 1;
                continue;
            }
            let w = q.pop_front()?;
            let more = !q.is_empty();
            self.turn.remove(passed);
            if more {
                self.turn.push_back(slot);
            }
            self.len -= 1;
            return Some(w);
        }
        None
    }

    /// [`Self::pop_next`] if the waiter in turn brought its first message ready
    /// ([`Waiter::early`]); one that did not keeps its turn.
    pub fn pop_next_early(
        &mut self,
        fits: impl Fn(&super::EarlyMessage, TenantKey) -> bool,
        may_start: impl Fn(TenantKey) -> bool,
    ) -> Option<Waiter> {
        let slot = *self.turn.front()?;
        let front = self.slots[slot].front()?;
        let fitting = front.early.as_ref().is_some_and(|e| fits(e, front.tenant));
        if !fitting || !may_start(front.tenant) {
            return None;
        }
        self.pop_next(may_start)
    }

    /// How many waiters could start now, each tenant's at most `room` of its tenant: the
    /// connections worth opening for them (the manager's count, not the checkout's).
    pub fn startable(&self, room: impl Fn(TenantKey) -> usize) -> usize {
        self.turn
            .iter()
            .map(|&s| &self.slots[s])
            .filter_map(|q| Some(q.len().min(room(q.front()?.tenant))))
            .sum()
    }

    /// When the longest-waiting client queued.
    pub fn oldest_since(&self) -> Option<Instant> {
        self.turn
            .iter()
            .filter_map(|&s| self.slots[s].front())
            .map(|w| w.since)
            .min()
    }

    /// Removes the waiters for which `drop_it` is true, in every tenant's queue.
    pub fn remove_where(&mut self, mut drop_it: impl FnMut(&Waiter) -> bool) -> Vec<Waiter> {
        let mut removed = Vec::new();
        for &slot in &self.turn {
            let q = &mut self.slots[slot];
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

    /// The manager's pass: removes the waiters whose checkout was dropped, those that
    /// queued at or before `cutoff`, in one walk of every
    /// queue; returns the earliest queueing time of those left.
    pub fn sweep(&mut self, cutoff: Option<Instant>) -> Option<Instant> {
        let mut gone = 0;
        let mut oldest: Option<Instant> = None;
        let keep = |w: &Waiter| cutoff.is_none_or(|c| w.since > c) && !w.tx.is_closed();
        for &slot in &self.turn {
            let q = &mut self.slots[slot];
            let before = q.len();
            // Most tenants wait with one client: no walk for those.
            if before > 1 {
                q.retain(keep);
            } else if q.front().is_some_and(|w| !keep(w)) {
                q.clear();
            }
            gone += before - q.len();
            if let Some(w) = q.front() {
                oldest = Some(oldest.map_or(w.since, |o| o.min(w.since)));
            }
        }
        self.forget_removed(gone);
        oldest
    }

    /// Whether every waiter gave up (its checkout was dropped).
    pub fn all_gone(&self) -> bool {
        self.turn
            .iter()
            .flat_map(|&s| &self.slots[s])
            .all(|w| w.tx.is_closed())
    }

    /// Drops the queues of tenants no longer waiting once there are more than
    /// [`KEPT_QUEUES`]: those kept hold their capacity, so that the busy steady state
    /// allocates nothing per checkout, but not for every tenant ever seen.
    pub fn shrink(&mut self) {
        if self.slots.len() <= KEPT_QUEUES + self.turn.len() {
            return;
        }
        let mut renumber = vec![usize::MAX; self.slots.len()];
        let mut kept = Vec::with_capacity(self.turn.len());
        for &slot in &self.turn {
            renumber[slot] = kept.len();
            kept.push(std::mem::take(&mut self.slots[slot]));
        }
        self.slots = kept;
        for slot in self.turn.iter_mut() {
            *slot = renumber[*slot];
        }
        self.slot_of.retain(|_, slot| {
            *slot = renumber[*slot];
            *slot != usize::MAX
        });
    }

    /// Accounts for `n` waiters taken out of their queues other than by [`Self::pop_next`]:
    /// tenants left with none leave the ring.
    fn forget_removed(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.len -= n;
        let slots = &self.slots;
        self.turn.retain(|&s| !slots[s].is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn waiter(id: u64, since: Instant) -> (Waiter, oneshot::Receiver<Option<Box<ServerConn>>>) {
        let (tx, rx) = oneshot::channel();
        (
            Waiter {
                tx,
                since,
                id,
                tenant: 0,
                early: None,
            },
            rx,
        )
    }

    fn ids(w: &mut Waiters) -> Vec<u64> {
        std::iter::from_fn(|| w.pop_next(|_| true).map(|w| w.id)).collect()
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
        assert_eq!(w.pop_next(|_| true).map(|x| x.id), None);
        // The emptied queues stay (no allocation when their tenants come back)...
        assert_eq!(w.slots.len(), 3);
        w.shrink();
        assert_eq!(w.slots.len(), 3, "few: kept");
    }

    #[test]
    fn tenants_at_their_cap_are_passed_over_and_keep_their_place() {
        let now = Instant::now();
        let mut w = Waiters::default();
        let mut keep = Vec::new();
        for (tenant, id) in [(7, 71), (8, 81), (7, 72), (9, 91), (8, 82)] {
            let (x, rx) = waiter(id, now);
            keep.push(rx);
            w.push(tenant, x);
        }
        // Tenant 7 is at its cap: 8 and 9 are served, 7 keeps its queue.
        let not_7 = |t| t != 7;
        assert_eq!(w.pop_next(not_7).map(|x| (x.tenant, x.id)), Some((8, 81)));
        assert_eq!(w.pop_next(not_7).map(|x| x.id), Some(91));
        assert_eq!(w.startable(|t| if t == 7 { 0 } else { 5 }), 1, "82");
        assert_eq!(w.startable(|_| 1), 2, "one each of 7 and 8");
        assert_eq!(w.pop_next(not_7).map(|x| x.id), Some(82));
        assert_eq!(w.pop_next(not_7).map(|x| x.id), None, "only 7's left");
        assert_eq!(w.len(), 2);
        assert_eq!(ids(&mut w), [71, 72], "in order once 7 may start again");
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
        // Everything queued before 10 ms has timed out (11 and 21), and 22's client left.
        drop(keep.remove(4));
        let oldest = w.sweep(Some(at(9)));
        assert_eq!(oldest, Some(at(10)));
        assert_eq!(w.len(), 2);
        assert_eq!(w.oldest_since(), Some(at(10)));
        // A withdrawal (by id) in the middle of the ring.
        let removed = w.remove_where(|x| x.id == 31);
        assert_eq!(removed.len(), 1);
        assert_eq!(w.len(), 1);
        assert_eq!(ids(&mut w), [12]);
    }

    #[test]
    fn emptied_queues_are_dropped_once_there_are_many() {
        let now = Instant::now();
        let mut w = Waiters::default();
        let mut keep = Vec::new();
        let many = KEPT_QUEUES as u64 + 10;
        for tenant in 1..=many {
            let (x, rx) = waiter(tenant, now);
            keep.push(rx);
            w.push(tenant, x);
            assert_eq!(w.pop_next(|_| true).map(|x| x.id), Some(tenant));
        }
        for (tenant, id) in [(5, 51), (many, 61), (5, 52)] {
            let (x, rx) = waiter(id, now);
            keep.push(rx);
            w.push(tenant, x);
        }
        w.shrink();
        assert_eq!(w.slots.len(), 2, "only the tenants still waiting");
        assert_eq!(w.slot_of.len(), 2);
        assert_eq!(w.len(), 3);
        let (x, rx) = waiter(71, now);
        keep.push(rx);
        w.push(7, x);
        assert_eq!(
            ids(&mut w),
            [51, 61, 71, 52],
            "the ring survives the renumbering"
        );
    }

    #[test]
    fn tenant_keys_differ_by_tenant_and_never_collide_with_no_tenant() {
        let a: crate::tenant::TenantId = "01HZY3J1R7N4ABCDEFGHJKMNPQ".parse().unwrap();
        let b: crate::tenant::TenantId = "01HZY3J1R7N4ABCDEFGHJKMNPR".parse().unwrap();
        assert_ne!(tenant_key(Some(&a)), tenant_key(Some(&b)));
        assert_ne!(tenant_key(Some(&a)), 0);
        assert_eq!(tenant_key(None), 0);
        // The same last eight characters (what the key was once made of), another tenant.
        let c: crate::tenant::TenantId = "01HZY3J1R7N4ZZZZEFGHJKMNPQ".parse().unwrap();
        assert_ne!(tenant_key(Some(&a)), tenant_key(Some(&c)));
        // Ids that differ only in their time part.
        let d: crate::tenant::TenantId = "01JBENCHT00000000000000088".parse().unwrap();
        let e: crate::tenant::TenantId = "01JBENCHV00000000000000088".parse().unwrap();
        assert_ne!(tenant_key(Some(&d)), tenant_key(Some(&e)));
        let zero: crate::tenant::TenantId = "00000000000000000000000000".parse().unwrap();
        assert_ne!(
            tenant_key(Some(&zero)),
            0,
            "the all-zero id is a tenant too"
        );
    }
}
