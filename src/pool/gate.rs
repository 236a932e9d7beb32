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
//!   clients queue;
//! - while most statements run past the stall time, the gate stands open. Counting each
//!   statement for its first `active_stall_ms` would otherwise let long statements start at
//!   most `max_active` per `active_stall_ms` (400 a second at the defaults), however many
//!   connections sit idle. The gate keeps a decaying tally of how recent statements ended
//!   ([`Mix`]) and closes again once short ones are the majority.
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
    mix: Mix,
    /// Most recent statements ran past the stall time: the limit does not apply.
    open: bool,
}

/// How recent counted statements ended: before the stall time (short) or after it (long).
/// Both tallies halve once their sum reaches [`Mix::SPAN`], so the last few dozen
/// statements decide.
#[derive(Default)]
struct Mix {
    short: u16,
    long: u16,
}

impl Mix {
    const SPAN: u16 = 32;

    /// Records one statement; returns whether long ones are now the majority.
    #[inline]
    fn record(&mut self, long: bool) -> bool {
        if long {
            self.long += 1;
        } else {
            self.short += 1;
        }
        if self.short + self.long >= Self::SPAN {
            self.short /= 2;
            self.long /= 2;
        }
        self.long > self.short
    }
}

impl Gate {
    pub(super) fn new(max: usize, stall: Duration) -> Gate {
        Gate {
            max,
            stall,
            counted: 0,
            entries: Vec::new(),
            free: Vec::new(),
            mix: Mix::default(),
            open: false,
        }
    }

    /// Whether one more statement may start now.
    #[inline]
    pub(super) fn has_room(&self) -> bool {
        self.max == 0 || self.counted < self.max || self.open
    }

    /// How many more may start now (`usize::MAX` without a limit).
    pub(super) fn room(&self) -> usize {
        if self.max == 0 || self.open {
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

    /// Whether the gate stands open because most recent statements ran long.
    pub(super) fn is_open(&self) -> bool {
        self.open
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

    /// The statement on `ticket` ended, or its transaction now waits for its client.
    #[inline]
    pub(super) fn leave(&mut self, ticket: Ticket) {
        let entry = std::mem::replace(&mut self.entries[ticket as usize], Entry::Free);
        if let Entry::Counted(since) = entry {
            self.counted -= 1;
            // A closed gate learns of long statements from the manager's sweep (it runs
            // while clients queue, when the limit matters), so a statement still counted
            // here was short; an open one has no sweep and reads the clock.
            let long = self.open && since.elapsed() >= self.stall;
            self.open = self.mix.record(long);
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
                    self.open = self.mix.record(true);
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

    #[test]
    fn long_statements_open_the_gate_and_short_ones_close_it() {
        let stall = Duration::from_millis(5);
        let mut g = Gate::new(1, stall);
        // A short statement leaves a closed gate closed.
        let t = g.enter().unwrap();
        g.leave(t);
        assert!(!g.is_open());
        // The sweep finds two long statements: they outnumber the short one.
        let a = g.enter().unwrap();
        let b = g.enter().unwrap();
        assert!(!g.has_room());
        g.uncount_stalled(Instant::now() + stall);
        assert!(g.is_open());
        assert!(g.has_room());
        assert_eq!(g.room(), usize::MAX);
        g.leave(a);
        g.leave(b);
        // Open, statements start whatever the count; one that ran past the stall time
        // keeps it open.
        let tickets: Vec<_> = (0..3).map(|_| g.enter().unwrap()).collect();
        assert_eq!(g.counted(), 3);
        assert!(g.has_room());
        std::thread::sleep(stall);
        g.leave(tickets[0]);
        assert!(g.is_open());
        // Short ones close it again once they are the majority.
        g.leave(tickets[1]);
        g.leave(tickets[2]);
        let mut quick = 0;
        while g.is_open() {
            let t = g.enter().unwrap();
            g.leave(t);
            quick += 1;
            assert!(quick < 10, "still open after {quick} short statements");
        }
        let t = g.enter().unwrap();
        assert!(!g.has_room());
        g.leave(t);
    }

    #[test]
    fn the_mix_forgets_old_statements() {
        let mut m = Mix::default();
        for _ in 0..1000 {
            m.record(false);
        }
        assert!(m.short + m.long < Mix::SPAN);
        // After a long run of short statements, a burst of long ones still opens the gate.
        let mut long = 0;
        while !m.record(true) {
            long += 1;
        }
        assert!(long < Mix::SPAN, "{long}");
    }
}
