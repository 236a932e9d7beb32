//! A connection's place in its pool's count and in the database-wide count.
//!
//! Every open server connection owns exactly one `Slot`; dropping the connection, wherever
//! that happens, frees the slot and wakes the pools that might now open one. This keeps the
//! caps exact without bookkeeping on every error path.

use super::Pool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

pub(super) struct Slot {
    pool: Weak<Pool>,
    pool_name: Arc<str>,
    /// Its place in the pool's active-statement gate while a statement runs on it.
    pub(super) ticket: Option<super::gate::Ticket>,
    /// The tenant whose `max_tenant_connections` it counts against while checked out
    /// (0: none).
    pub(super) tenant: super::TenantKey,
    /// Its closing was counted under a reason of its own (idle, retired); any other
    /// closing counts as `other` when the slot is freed.
    pub(super) counted: bool,
    /// The connection's id in its pool's server list (SHOW SERVERS).
    id: u64,
}

impl Slot {
    /// Takes over a reservation made by [`Pool::reserve_slot`] for a connection now open,
    /// and lists it among the pool's servers until the slot is freed.
    pub(super) fn adopt(pool: &Arc<Pool>, info: super::ServerInfo) -> Slot {
        pool.servers.add(info);
        Slot {
            pool: Arc::downgrade(pool),
            pool_name: pool.name.clone(),
            ticket: None,
            tenant: 0,
            counted: false,
            id: info.id,
        }
    }

    pub(super) fn pool_name(&self) -> &str {
        &self.pool_name
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.servers.remove(self.id);
            pool.free_slot(self.ticket.take(), self.tenant, self.counted);
        }
    }
}

/// Server connections open to one database across all its pools (`max_db_connections`).
pub(super) struct DbCount {
    open: AtomicUsize,
    /// 0 means unlimited.
    max: usize,
    /// Every pool on this database, to wake them when a slot frees up at the cap and to take
    /// idle connections from when one pool starves at the cap.
    pools: OnceLock<Vec<Weak<Pool>>>,
}

impl DbCount {
    pub(super) fn new(max: usize) -> Self {
        DbCount {
            open: AtomicUsize::new(0),
            max,
            pools: OnceLock::new(),
        }
    }

    pub(super) fn set_pools(&self, pools: Vec<Weak<Pool>>) {
        let _ = self.pools.set(pools);
    }

    pub(super) fn try_acquire(&self) -> bool {
        if self.max == 0 {
            self.open.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    pub(super) fn release(&self) {
        let before = self.open.fetch_sub(1, Ordering::AcqRel);
        if self.max > 0 && before >= self.max {
            for pool in self.pools.get().into_iter().flatten() {
                if let Some(p) = pool.upgrade() {
                    p.wake();
                }
            }
        }
    }

    pub(super) fn at_cap(&self) -> bool {
        self.max > 0 && self.open.load(Ordering::Relaxed) >= self.max
    }

    /// Whether another pool of this database has a client starved at the cap for longer
    /// than `than` (our oldest waiter; `None`: nobody waits here).
    pub(super) fn longer_wait_elsewhere(
        &self,
        me: &Pool,
        than: Option<std::time::Instant>,
    ) -> bool {
        self.pools.get().into_iter().flatten().any(|p| {
            p.upgrade().is_some_and(|p| {
                !std::ptr::eq(Arc::as_ptr(&p), me)
                    && p.starved_since()
                        .is_some_and(|t| than.is_none_or(|ours| t < ours))
            })
        })
    }

    pub(super) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Closes one idle connection of another pool so that `starving` can open one; the
    /// freed slot wakes `starving` through [`DbCount::release`].
    pub(super) fn evict_idle_for(&self, starving: &Pool) -> bool {
        for pool in self.pools.get().into_iter().flatten() {
            if let Some(p) = pool.upgrade() {
                if !std::ptr::eq(Arc::as_ptr(&p), starving) {
                    if let Some(conn) = p.take_oldest_idle() {
                        tracing::info!(pool = %p.name, for_pool = %starving.name, "closing an idle server connection: max_db_connections reached and another pool is waiting");
                        drop(conn);
                        return true;
                    }
                }
            }
        }
        false
    }
}
