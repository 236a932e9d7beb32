//! Per-pool counters kept as plain atomics on the hot path and published to the metrics
//! registry only when `/metrics` is scraped.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct PoolStats {
    pub transactions: AtomicU64,
    pub queries: AtomicU64,
    pub bytes_from_clients: AtomicU64,
    pub bytes_from_server: AtomicU64,
    pub clients_waiting: AtomicU64,
    pub clients_active: AtomicU64,
    pub connects_ok: AtomicU64,
    pub connects_failed: AtomicU64,
    pub acquire_timeouts: AtomicU64,
    pub closed_idle: AtomicU64,
    pub closed_retired: AtomicU64,
}

impl PoolStats {
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

/// A gauge held while a client is in some state; decremented on drop whatever the path.
pub struct GaugeGuard<'a>(&'a AtomicU64);

impl<'a> GaugeGuard<'a> {
    pub fn new(g: &'a AtomicU64) -> Self {
        g.fetch_add(1, Relaxed);
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}
