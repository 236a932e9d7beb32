//! The tokio runtime the proxy runs on, and event coalescing under load.
//!
//! On one thread a proxy that sleeps in `epoll_wait` whenever its run queue empties wakes
//! once per socket event: at a few thousand transactions per second that is about one sleep
//! and one wake-up per transaction, each a context switch that also preempts whatever
//! PostgreSQL backend was running (measured on the seed workload: 0.8 voluntary switches per
//! transaction, against 0.02 for PgBouncer, and twice its CPU per transaction). When the
//! proxy is busy (it parked less than [`BUSY_WINDOW`] ago and relayed transactions since),
//! it naps for `event_coalesce_us` before blocking, so the events of that interval are
//! handled in one batch. Idle or lightly loaded, it blocks at once and adds no latency.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Parks closer together than this, with work done in between, count as busy.
pub const BUSY_WINDOW: Duration = Duration::from_millis(1);

/// Transactions relayed since start, for [`coalesce_on_park`]; one relaxed add per
/// transaction.
static WORK: AtomicU64 = AtomicU64::new(0);

#[inline]
pub fn note_transaction() {
    WORK.fetch_add(1, Ordering::Relaxed);
}

thread_local! {
    static LAST_PARK: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
}

/// Called by the runtime right before it blocks for events.
fn coalesce_on_park(nap: Duration) {
    let now = Instant::now();
    let work = WORK.load(Ordering::Relaxed);
    let busy = LAST_PARK.with(|last| {
        let prev = last.replace(Some((now, work)));
        prev.is_some_and(|(at, w)| work > w && now.duration_since(at) < BUSY_WINDOW)
    });
    if busy {
        std::thread::sleep(nap);
    }
}

/// The runtime for `workers` threads; with one, the current-thread scheduler, polling the
/// sockets every `event_interval` task polls and coalescing events for `coalesce_us`
/// microseconds when busy (0: never).
pub fn build(
    workers: usize,
    event_interval: u32,
    coalesce_us: u64,
) -> std::io::Result<tokio::runtime::Runtime> {
    if workers > 1 {
        return tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build();
    }
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.event_interval(event_interval);
    if coalesce_us > 0 {
        let nap = Duration::from_micros(coalesce_us);
        b.on_thread_park(move || coalesce_on_park(nap));
    }
    b.enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naps_only_when_parks_are_close_and_work_was_done() {
        let nap = Duration::from_millis(20);
        let timed = || {
            let t = Instant::now();
            coalesce_on_park(nap);
            t.elapsed()
        };
        assert!(timed() < nap, "first park: nothing to compare with");
        assert!(timed() < nap, "no transaction since the last park");
        note_transaction();
        assert!(
            timed() >= nap,
            "busy: parked again within the window after work"
        );
        std::thread::sleep(BUSY_WINDOW * 2);
        note_transaction();
        assert!(timed() < nap, "the last park was long ago: idle, no nap");
    }
}
