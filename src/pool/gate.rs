//! The active-statement gate: at most `pool.max_active` of a pool's server connections run
//! a statement at once; further transactions wait in the pool's queue until one finishes.
//!
//! Why: PostgreSQL on a small host does more work per second with a few statements running
//! than with a hundred. A hundred backends that each want a CPU for 50 µs take turns on two
//! cores, evicting one another's caches, and every statement waits behind the others.
//! Shrinking `default_pool_size` has the same effect in PgBouncer, but there a client idle
//! in its transaction pins one of the few connections. The gate counts only connections
//! whose statement is running, so:
//! - a transaction waits at the gate only when it starts (it holds no lock yet); its later
//!   statements pass without waiting (`Pool::resume`), so a lock holder is never queued
//!   behind the statements waiting for its lock;
//! - a connection idle in its transaction leaves the count (`Pool::pause`);
//! - a statement that has run for `active_stall_ms` stops counting (a long query, a lock
//!   wait, I/O): the gate is for short statements competing for the database's CPUs, and a
//!   few long ones must not stall the pool. The pool's manager checks for them while
//!   clients queue.
//!
//! The gate lives inside the pool's state and is only touched under its lock: checkout and
//! release already take it, so a transaction of one statement pays no extra lock.

use std::time::{Duration, Instant};

/// A connection's place in the gate, kept in its [`super::slot::Slot`].
pub(super) type Ticket = u32;

enum Entry {
    Free,
    /// Counts against the limit since this instant.
    Counted(Instant),
    /// Ran longer than the stall time: still running, no longer counted.
    Stalled,
}

pub(super) struct Gate {
    /// 0: no limit, and no bookkeeping at all.
    max: usize,
    stall: Duration,
    counted: usize,
    entries: Vec<Entry>,
    free: Vec<Ticket>,
}

impl Gate {
    pub(super) fn new(max: usize, stall: Duration) -> Gate {
        Gate {
            max,
            stall,
            counted: 0,
            entries: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Whether one more statement may start now.
    #[inline]
    pub(super) fn has_room(&self) -> bool {
        self.max == 0 || self.counted < self.max
    }

    /// How many more may start now (`usize::MAX` without a limit).
    pub(super) fn room(&self) -> usize {
        if self.max == 0 {
            usize::MAX
        } else {
            self.max.saturating_sub(self.counted)
        }
    }

    /// Statements counted against the limit now.
    pub(super) fn counted(&self) -> usize {
        self.counted
    }

    pub(super) fn max(&self) -> usize {
        self.max
    }

    /// Counts a statement starting now, whether or not there is room (callers check
    /// [`Gate::has_room`] where waiting is allowed).
    #[inline]
    pub(super) fn enter(&mut self) -> Option<Ticket> {
        if self.max == 0 {
            return None;
        }
        let entry = Entry::Counted(Instant::now());
        self.counted += 1;
        Some(match self.free.pop() {
            Some(t) => {
                self.entries[t as usize] = entry;
                t
            }
            None => {
                self.entries.push(entry);
                (self.entries.len() - 1) as Ticket
            }
        })
    }

    #[inline]
    pub(super) fn leave(&mut self, ticket: Ticket) {
        let entry = std::mem::replace(&mut self.entries[ticket as usize], Entry::Free);
        if let Entry::Counted(_) = entry {
            self.counted -= 1;
        }
        self.free.push(ticket);
    }

    /// Stops counting statements that have run for the stall time. Returns when the next
    /// counted one will have run that long.
    pub(super) fn uncount_stalled(&mut self, now: Instant) -> Option<Instant> {
        let mut stalled = 0;
        let mut next: Option<Instant> = None;
        for e in &mut self.entries {
            if let Entry::Counted(since) = *e {
                let due = since + self.stall;
                if due <= now {
                    *e = Entry::Stalled;
                    stalled += 1;
                } else {
                    next = Some(next.map_or(due, |n| n.min(due)));
                }
            }
        }
        self.counted -= stalled;
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_limit_keeps_no_entries() {
        let mut g = Gate::new(0, Duration::from_millis(20));
        for _ in 0..1000 {
            assert!(g.has_room());
            assert_eq!(g.enter(), None);
        }
        assert!(g.entries.is_empty());
        assert_eq!(g.room(), usize::MAX);
    }

    #[test]
    fn room_follows_entering_and_leaving() {
        let mut g = Gate::new(2, Duration::from_secs(60));
        let a = g.enter().unwrap();
        assert!(g.has_room());
        let b = g.enter().unwrap();
        assert!(!g.has_room());
        assert_eq!(g.room(), 0);
        g.leave(a);
        assert!(g.has_room());
        // A ticket is reused, and entering over the limit (a resumed transaction) counts.
        let c = g.enter().unwrap();
        assert_eq!(c, a);
        let d = g.enter().unwrap();
        assert_eq!(g.counted(), 3);
        g.leave(b);
        g.leave(c);
        g.leave(d);
        assert_eq!(g.counted(), 0);
        assert_eq!(g.entries.len(), 3);
    }

    #[test]
    fn stalled_statements_stop_counting_once() {
        let stall = Duration::from_millis(20);
        let mut g = Gate::new(2, stall);
        let t0 = Instant::now();
        let old = g.enter().unwrap();
        let young = g.enter().unwrap();
        // Nothing is due before the stall time has passed since the later entry.
        let next = g.uncount_stalled(t0);
        assert_eq!(g.counted(), 2);
        assert!(next.is_some_and(|d| d >= t0 + stall));
        let later = Instant::now() + stall;
        assert_eq!(g.uncount_stalled(later), None);
        assert_eq!(g.counted(), 0);
        assert!(g.has_room());
        // Leaving a stalled entry does not uncount it a second time.
        let fresh = g.enter().unwrap();
        g.leave(old);
        g.leave(young);
        assert_eq!(g.counted(), 1);
        g.leave(fresh);
        assert_eq!(g.counted(), 0);
    }
}
