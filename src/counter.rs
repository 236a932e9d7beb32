//! Adds to the counters the hot path keeps (pool statistics and gauges, the runtime's load
//! figures) without a locked instruction where only one thread writes them.
//!
//! A `lock`-prefixed add costs 15–20 ns, and it first waits until every store before it has
//! reached the cache: a relay that has just written the cold lines of a client's state (it
//! waited in the pool's queue) has many pending. A transaction made about ten such adds.
//! On the current-thread runtime (`workers: 1`, the default) the runtime's thread is the
//! only one that updates these counters, so an add is a relaxed load and a store, with
//! nothing able to run between them. (Measured with `scripts/bench-pair`, this and the
//! session's other removals of locked instructions left the CPU per transaction unchanged
//! within the noise: docs/benchmarks.md, 2026-12-06 (2).) With more workers, or before
//! [`crate::runtime::build`] says so, adds are atomic read-modify-writes.
//! Readers (the `/metrics` scrape) see whole values either way.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

static ONE_WRITER: AtomicBool = AtomicBool::new(false);

/// Declares whether a single thread (the current-thread runtime's) makes every update from
/// here on. Set once, before the runtime runs any task; nothing else may write through this
/// module from another thread while it is set.
pub fn set_one_writer(on: bool) {
    ONE_WRITER.store(on, Relaxed);
}

#[inline]
pub fn add(counter: &AtomicU64, n: u64) {
    add_with(counter, n, ONE_WRITER.load(Relaxed));
}

#[inline]
pub fn sub(counter: &AtomicU64, n: u64) {
    add_with(counter, n.wrapping_neg(), ONE_WRITER.load(Relaxed));
}

#[inline]
fn add_with(counter: &AtomicU64, n: u64, one_writer: bool) {
    if one_writer {
        counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
    } else {
        counter.fetch_add(n, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn concurrent_writers_lose_no_update() {
        let c = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..100_000 {
                        add_with(&c, 3, false);
                        add_with(&c, 1u64.wrapping_neg(), false);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.load(Relaxed), 4 * 100_000 * 2);
    }

    #[test]
    fn one_writer_adds_and_subtracts_exactly() {
        let c = AtomicU64::new(5);
        add_with(&c, 7, true);
        add_with(&c, 2u64.wrapping_neg(), true);
        assert_eq!(c.load(Relaxed), 10);
        add_with(&c, 10u64.wrapping_neg(), true);
        assert_eq!(c.load(Relaxed), 0);
        add_with(&c, u64::MAX, true);
        assert_eq!(c.load(Relaxed), u64::MAX, "wraps like fetch_add");
    }
}
