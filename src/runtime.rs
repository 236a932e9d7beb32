//! The tokio runtime the proxy runs on, and event coalescing under load.
//!
//! On one thread a proxy that sleeps in `epoll_wait` whenever its run queue empties wakes
//! once per socket event: at a few thousand transactions per second that is about one sleep
//! and one wake-up per transaction, each a context switch that also preempts whatever
//! PostgreSQL backend was running (measured on the seed workload: 1.4 voluntary switches
//! per transaction, against 0.01 for PgBouncer, and twice its CPU per transaction).
//!
//! So when the proxy is busy (it parked less than [`BUSY_WINDOW`] ago and relayed
//! transactions since) and many transactions are in flight, it naps before blocking and
//! handles the events of that interval in one batch. The nap grows with the transactions in
//! flight ([`NAP_PER_TRANSACTION`] each, up to `event_coalesce_us`), so that it stays a small
//! part of their latency: with [`MIN_IN_FLIGHT`] or fewer, whose answers a nap would only
//! delay, there is none (a nap of 250 µs for a single client quadrupled its latency).
//!
//! The floor is 64, above pgbench's 50 clients, because naps of 80–125 µs with 33–50
//! transactions in flight put the host in a mode where some transactions took 50–480 ms
//! (PostgreSQL itself logged one-row selects of up to 570 ms): in runs of `pgbench -S -c 50` on the 2-core bench host, 7 of 24 rounds
//! with such naps had a p99.9 of 83–300 ms (per-second latency stddev 12–26 ms for seconds
//! on end), and none of 14 rounds without them (p99.9 10–28 ms; PgBouncer 8–47 ms), at
//! equal throughput and CPU. With 100 in flight (the seed workload, select-1000) the naps
//! showed no such mode (docs/benchmarks.md, "Session of 2026-12-03 (2)").
//!
//! With `pool.max_active` few statements run at once, the naps above never start, and the
//! proxy is woken for nearly every reply: `cpu_scheduling: batch` (set by `main.rs` before
//! the runtime starts) asks the kernel not to preempt a running task for it, so that a
//! wake-up finds several events waiting (docs/benchmarks.md has the measurements).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Parks closer together than this, with work done in between, count as busy.
pub const BUSY_WINDOW: Duration = Duration::from_millis(1);

/// No nap while this many transactions or fewer are in flight.
pub const MIN_IN_FLIGHT: u64 = 64;

/// Nap per transaction in flight.
pub const NAP_PER_TRANSACTION: Duration = Duration::from_nanos(2_500);

/// Transactions relayed since start, for [`coalesce_on_park`]; one relaxed add per
/// transaction.
static WORK: AtomicU64 = AtomicU64::new(0);

/// Transactions holding a server connection right now.
static IN_FLIGHT: AtomicU64 = AtomicU64::new(0);

#[inline]
pub fn note_transaction() {
    crate::counter::add(&WORK, 1);
}

/// Counts a transaction in flight while it lives.
pub struct InFlight(());

impl InFlight {
    #[inline]
    pub fn start() -> Self {
        crate::counter::add(&IN_FLIGHT, 1);
        InFlight(())
    }
}

impl Drop for InFlight {
    #[inline]
    fn drop(&mut self) {
        crate::counter::sub(&IN_FLIGHT, 1);
    }
}

/// How long to nap at a park, given the transactions in flight and the configured cap.
fn nap_for(in_flight: u64, cap: Duration) -> Option<Duration> {
    if in_flight <= MIN_IN_FLIGHT || cap.is_zero() {
        return None;
    }
    Some((NAP_PER_TRANSACTION * in_flight.min(u32::MAX as u64) as u32).min(cap))
}

thread_local! {
    static LAST_PARK: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
}

/// Called by the runtime right before it blocks for events.
fn coalesce_on_park(cap: Duration) {
    let Some(nap) = nap_for(IN_FLIGHT.load(Ordering::Relaxed), cap) else {
        return;
    };
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
    // One thread drives every task: the hot path's counters have one writer.
    crate::counter::set_one_writer(workers <= 1);
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
    fn naps_only_when_busy_with_many_transactions_in_flight() {
        let cap = Duration::from_micros(250);
        assert_eq!(nap_for(1, cap), None, "one client: its answer would wait");
        assert_eq!(nap_for(MIN_IN_FLIGHT, cap), None);
        assert_eq!(nap_for(50, cap), None, "pgbench's 50 clients: no nap");
        assert_eq!(nap_for(80, cap), Some(Duration::from_micros(200)));
        assert_eq!(nap_for(16, cap), None);
        assert_eq!(nap_for(100, cap), Some(cap));
        assert_eq!(nap_for(2000, cap), Some(cap));
        assert_eq!(nap_for(100, Duration::ZERO), None, "turned off");

        let in_flight: Vec<InFlight> = (0..100).map(|_| InFlight::start()).collect();
        let long = Duration::from_millis(20);
        let timed = || {
            let t = Instant::now();
            coalesce_on_park(long);
            t.elapsed()
        };
        assert!(timed() < long, "first park: nothing to compare with");
        assert!(timed() < long, "no transaction since the last park");
        note_transaction();
        assert!(
            timed() >= Duration::from_micros(250),
            "busy: parked again soon after work"
        );
        std::thread::sleep(BUSY_WINDOW * 2);
        note_transaction();
        assert!(timed() < long, "the last park was long ago: no nap");
        drop(in_flight);
        note_transaction();
        coalesce_on_park(long);
        note_transaction();
        let t = Instant::now();
        coalesce_on_park(long);
        assert!(t.elapsed() < long, "nothing in flight: no nap");
    }
}
