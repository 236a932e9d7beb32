//! Per-pool counters kept as plain atomics on the hot path (updated through
//! [`crate::counter`]) and published to the metrics registry only when `/metrics` is scraped.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct PoolStats {
    pub transactions: AtomicU64,
    pub queries: AtomicU64,
    /// Transactions that ran the tenant switch first (`names::TENANT_SWITCHES`).
    pub tenant_switches: AtomicU64,
    /// Writes to the server that waited for room (`names::SERVER_WRITE_WAITS`).
    pub server_write_waits: AtomicU64,
    pub bytes_from_clients: AtomicU64,
    pub bytes_from_server: AtomicU64,
    pub clients_waiting: AtomicU64,
    pub clients_active: AtomicU64,
    pub connects_ok: AtomicU64,
    pub connects_failed: AtomicU64,
    pub acquire_timeouts: AtomicU64,
    /// Waits ended because the client cancelled its statement (`names::WAITS_CANCELLED`).
    pub waits_withdrawn: AtomicU64,
    /// Checkouts that queued because their tenant held `max_tenant_connections`
    /// (`names::TENANT_CAP_WAITS`).
    pub tenant_cap_waits: AtomicU64,
    /// Transactions whose first message went to the server behind the statement running
    /// there (`names::PIPELINED`).
    pub passed_on: AtomicU64,
    /// Of those, sent again after a cancel meant for that statement (`names::PIPELINED_RESENT`).
    pub resent: AtomicU64,
    pub closed_idle: AtomicU64,
    pub closed_retired: AtomicU64,
    /// Closed for any other reason: lost or left in an unknown state by a transaction,
    /// yielded to another pool at `max_db_connections`, found stale at a checkout. With
    /// the two above, every connection that opened and closed is counted once.
    pub closed_other: AtomicU64,
    /// How long checkouts waited for a connection.
    pub wait: WaitHistogram,
}

impl PoolStats {
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        crate::counter::add(counter, n);
    }
}

/// Upper bounds, in seconds, of the checkout-wait histogram's buckets (`+Inf` follows).
pub const WAIT_BOUNDS_S: [f64; 12] = [
    0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Checkout waits as fixed buckets of plain atomics: a checkout that found an idle
/// connection costs one relaxed add and no clock read. (A registry histogram pushed every
/// sample into a queue drained only when Prometheus scraped: a clock read and a push per
/// transaction, and unbounded growth with metrics_listen off.)
#[derive(Default)]
pub struct WaitHistogram {
    /// Non-cumulative counts per bucket of [`WAIT_BOUNDS_S`], then the overflow bucket.
    buckets: [AtomicU64; WAIT_BOUNDS_S.len() + 1],
    sum_us: AtomicU64,
}

/// A histogram's cumulative counts (one per bound, then `+Inf`) and its sum in seconds.
pub struct WaitSnapshot {
    pub cumulative: [u64; WAIT_BOUNDS_S.len() + 1],
    pub sum_s: f64,
}

impl WaitHistogram {
    /// A checkout served at once.
    #[inline]
    pub fn record_immediate(&self) {
        crate::counter::add(&self.buckets[0], 1);
    }

    pub fn record(&self, waited: std::time::Duration) {
        let s = waited.as_secs_f64();
        let i = WAIT_BOUNDS_S
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(WAIT_BOUNDS_S.len());
        crate::counter::add(&self.buckets[i], 1);
        crate::counter::add(
            &self.sum_us,
            waited.as_micros().min(u64::MAX as u128) as u64,
        );
    }

    pub fn snapshot(&self) -> WaitSnapshot {
        let mut cumulative = [0u64; WAIT_BOUNDS_S.len() + 1];
        let mut total = 0;
        for (c, b) in cumulative.iter_mut().zip(&self.buckets) {
            total += b.load(Relaxed);
            *c = total;
        }
        WaitSnapshot {
            cumulative,
            sum_s: self.sum_us.load(Relaxed) as f64 / 1e6,
        }
    }
}

/// A gauge held while a client is in some state; decremented on drop whatever the path.
pub struct GaugeGuard<'a>(&'a AtomicU64);

impl<'a> GaugeGuard<'a> {
    pub fn new(g: &'a AtomicU64) -> Self {
        crate::counter::add(g, 1);
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        crate::counter::sub(self.0, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn waits_land_in_cumulative_buckets() {
        let h = WaitHistogram::default();
        h.record_immediate();
        h.record(Duration::from_micros(300));
        h.record(Duration::from_millis(20));
        h.record(Duration::from_secs(30));
        let s = h.snapshot();
        assert_eq!(s.cumulative[0], 1, "le 0.0001");
        assert_eq!(s.cumulative[1], 2, "le 0.0005");
        assert_eq!(s.cumulative[4], 2, "le 0.01");
        assert_eq!(s.cumulative[5], 3, "le 0.05");
        assert_eq!(s.cumulative[11], 3, "le 10");
        assert_eq!(s.cumulative[12], 4, "+Inf is the count");
        assert!((s.sum_s - 30.0203).abs() < 1e-9, "{}", s.sum_s);
    }
}
