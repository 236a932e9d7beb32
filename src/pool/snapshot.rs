//! One consistent reading of a pool's state, for the admin console's SHOW POOLS: taken
//! under the pool's lock once, so that its counts add up.

use super::Pool;
use std::time::{Duration, Instant};

/// A pool's connections and queue at one instant.
pub struct PoolSnapshot {
    /// Open plus opening server connections.
    pub total: usize,
    pub idle: usize,
    /// Logins to PostgreSQL in progress.
    pub opening: usize,
    /// Checkouts queued for a connection.
    pub waiting: usize,
    /// How long the longest-queued checkout has waited.
    pub oldest_wait: Duration,
    /// Statements counted against `max_active` now.
    pub running: usize,
    /// The gate stands open because most recent statements ran long.
    pub gate_open: bool,
    pub paused: bool,
}

impl PoolSnapshot {
    /// Server connections lent to a client's transaction.
    pub fn in_use(&self) -> usize {
        self.total.saturating_sub(self.idle + self.opening)
    }
}

impl Pool {
    pub fn snapshot(&self) -> PoolSnapshot {
        let st = self.state.lock();
        PoolSnapshot {
            total: st.total,
            idle: st.idle.len(),
            opening: st.opening,
            waiting: st.waiters.len(),
            oldest_wait: st
                .waiters
                .oldest_since()
                .map_or(Duration::ZERO, |since| Instant::now().duration_since(since)),
            running: st.gate.counted(),
            gate_open: st.gate.is_open(),
            paused: st.paused,
        }
    }
}
