//! RECONNECT: a pool's generation. Every connection keeps the generation its login began
//! in; one of an older generation is closed wherever it would be handed out again (at
//! release, released unused, idle, fresh from its login), never reused.

use super::{Pool, PoolStats, ServerConn};

impl Pool {
    /// Closes every server connection of the pool once no transaction uses it (PgBouncer's
    /// RECONNECT): the idle ones now, the others as they come back; new ones open as
    /// clients need them. After a change to how a session starts (`ALTER ROLE ... SET`, a
    /// server's new address or settings), no client is served by a session opened before
    /// it. Returns how many idle connections closed and how many were in use.
    pub fn reconnect(&self) -> (usize, usize) {
        let (idle, in_use): (Vec<Box<ServerConn>>, usize) = {
            let mut st = self.state.lock();
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let in_use = st.total - st.idle.len() - st.opening;
            (st.idle.drain(..).collect(), in_use)
        };
        PoolStats::add(&self.stats.closed_retired, idle.len() as u64);
        let closed = idle.len();
        for mut c in idle {
            c.slot.counted = true;
        }
        // The manager opens the warm minimum again.
        self.wake();
        (closed, in_use)
    }

    /// Whether `conn`'s session opened, or began its login, before the latest RECONNECT.
    pub(super) fn is_stale(&self, conn: &ServerConn) -> bool {
        conn.generation != self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }
}
