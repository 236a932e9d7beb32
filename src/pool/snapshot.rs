//! What `/metrics` and the admin console read of a pool: one consistent reading of its
//! counts, taken under the pool's lock once so that they add up, and the list of its open
//! server connections (SHOW SERVERS), kept by their slots as they open and close.

use super::Pool;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

/// A server connection as SHOW SERVERS tells it; what changes per transaction (who holds
/// it) is read from the clients' cancel targets instead, so the relay records nothing.
#[derive(Clone, Copy)]
pub struct ServerInfo {
    pub id: u64,
    pub backend_pid: u32,
    pub connected_at: SystemTime,
    pub tls: bool,
}

/// The open server connections of a pool, by connection id.
#[derive(Default)]
pub struct ServerList(Mutex<BTreeMap<u64, ServerInfo>>);

impl ServerList {
    pub(super) fn add(&self, info: ServerInfo) {
        self.0.lock().insert(info.id, info);
    }

    pub(super) fn remove(&self, id: u64) {
        self.0.lock().remove(&id);
    }

    pub fn all(&self) -> Vec<ServerInfo> {
        self.0.lock().values().copied().collect()
    }
}

/// A pool's connections and queue at one instant.
pub struct PoolSnapshot {
    /// Open plus opening server connections.
    pub total: usize,
    pub idle: usize,
    /// Logins to PostgreSQL in progress.
    pub opening: usize,
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
    /// Ids of the idle connections (SHOW SERVERS).
    pub fn idle_ids(&self) -> Vec<u64> {
        self.state.lock().idle.iter().map(|c| c.id).collect()
    }

    pub fn snapshot(&self) -> PoolSnapshot {
        let st = self.state.lock();
        PoolSnapshot {
            total: st.total,
            idle: st.idle.len(),
            opening: st.opening,
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
