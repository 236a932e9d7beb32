//! `pool.max_tenant_connections`: how many of a pool's server connections one tenant's
//! clients may hold at once.
//!
//! The waiters' queue ([`super::waiters`]) serves tenants in turn, but only as connections
//! come back. A tenant whose clients open a hundred long transactions (a batch job, a
//! migration, a client stuck in `BEGIN`) takes every connection first, and the other
//! tenants then wait for its transactions to end, up to `acquire_timeout_ms`. With a cap,
//! that tenant's further checkouts queue behind its own while the rest of the pool serves
//! everyone else: its own clients wait, and only they can time out on it.
//!
//! A connection counts against its holder's tenant from checkout to release, whether a
//! statement runs on it or its client sits idle in its transaction (the gate,
//! `max_active`, counts only the running ones). Clients without a tenant are not capped,
//! and neither are the proxy's own queries at login. Tenants are told apart by their
//! queue key ([`super::tenant_key`], the ULID's 128 bits folded into 64): two tenants sharing
//! one (a chance of 2^-64 a pair) would share a cap, which fails safe (fewer connections,
//! never another tenant's data).
//!
//! A hand-over passes over the waiting tenants at their cap ([`super::waiters`]); at most
//! the pool's size divided by the cap can be at it at once, which bounds that walk (four
//! tenants at a cap of 25 on a pool of 100).

use super::waiters::{KeyHasher, TenantKey};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

#[derive(Default)]
pub(super) struct TenantCap {
    /// 0: no cap, and no bookkeeping at all.
    max: u32,
    /// Connections held per tenant; a tenant holding none has no entry.
    held: HashMap<TenantKey, u32, BuildHasherDefault<KeyHasher>>,
}

impl TenantCap {
    pub fn new(max: usize) -> TenantCap {
        TenantCap {
            max: u32::try_from(max).unwrap_or(u32::MAX),
            held: HashMap::default(),
        }
    }

    /// The cap, if there is one.
    pub fn max(&self) -> Option<usize> {
        (self.max > 0).then_some(self.max as usize)
    }

    /// Whether a client of `tenant` may take one more connection.
    #[inline]
    pub fn admits(&self, tenant: TenantKey) -> bool {
        self.max == 0 || tenant == 0 || self.held(tenant) < self.max
    }

    pub fn held(&self, tenant: TenantKey) -> u32 {
        self.held.get(&tenant).copied().unwrap_or(0)
    }

    /// Counts a connection taken by a client of `tenant`; returns the key to give back
    /// when it returns (0: not counted).
    #[inline]
    pub fn take(&mut self, tenant: TenantKey) -> TenantKey {
        if self.max == 0 || tenant == 0 {
            return 0;
        }
        *self.held.entry(tenant).or_insert(0) += 1;
        tenant
    }

    /// A connection [`Self::take`] counted came back (or closed); `true` if that tenant
    /// may now take another, so that a client of it queued may start.
    #[inline]
    pub fn give_back(&mut self, tenant: TenantKey) -> bool {
        if tenant == 0 {
            return false;
        }
        let Some(n) = self.held.get_mut(&tenant) else {
            debug_assert!(false, "a tenant gave back a connection it did not hold");
            return false;
        };
        *n -= 1;
        if *n == 0 {
            self.held.remove(&tenant);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_takes_up_to_the_cap_and_gets_room_back() {
        let mut cap = TenantCap::new(2);
        assert!(cap.admits(7));
        assert_eq!(cap.take(7), 7);
        assert_eq!(cap.take(7), 7);
        assert!(!cap.admits(7), "at the cap");
        assert!(cap.admits(8), "another tenant is not held back");
        assert!(cap.admits(0), "clients without a tenant are not capped");
        assert_eq!(cap.take(0), 0, "and not counted");
        assert!(cap.give_back(7));
        assert!(cap.admits(7));
        assert!(cap.give_back(7));
        assert!(
            cap.held.is_empty(),
            "nothing kept for a tenant holding none"
        );
        assert!(!cap.give_back(0));
    }

    #[test]
    fn no_cap_counts_nothing() {
        let mut cap = TenantCap::new(0);
        assert_eq!(cap.max(), None);
        for _ in 0..1000 {
            assert_eq!(cap.take(7), 0);
        }
        assert!(cap.admits(7));
        assert!(cap.held.is_empty());
    }
}
