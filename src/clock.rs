//! A coarse process clock for the hot path: milliseconds since start, advanced every
//! [`TICK`] by the command-timeout watchdog (`proxy::command_timeout`).
//!
//! Reading it is one relaxed atomic load, where `Instant::now()` is a vDSO call that the
//! profile of a transaction showed several times (checkout, release, deadlines). Whatever
//! uses it tolerates being up to a tick behind: idle and lifetime limits of server
//! connections, command deadlines, cache freshness.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often the clock advances.
pub const TICK: Duration = Duration::from_millis(100);

static COARSE_MS: AtomicU64 = AtomicU64::new(1);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the process's clock epoch, as of the last tick. Never 0 (callers use
/// 0 for "none").
#[inline]
pub fn now_ms() -> u64 {
    COARSE_MS.load(Ordering::Relaxed)
}

/// Reads the real clock into the coarse one and returns it. Called by the ticking task,
/// and by code that needs a fresh value at a rare moment (opening a connection).
pub fn advance() -> u64 {
    let now = epoch().elapsed().as_millis() as u64 + 1;
    COARSE_MS.fetch_max(now, Ordering::Relaxed).max(now)
}

/// The coarse time `d` from now.
#[inline]
pub fn after(d: Duration) -> u64 {
    now_ms().saturating_add(d.as_millis() as u64).max(1)
}

/// Whether at coarse time `now` at least `limit` has passed since coarse time `since`.
#[inline]
pub fn lasted(since: u64, now: u64, limit: Duration) -> bool {
    now.saturating_sub(since) >= limit.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_zero_and_only_forward() {
        assert!(now_ms() >= 1);
        let a = advance();
        std::thread::sleep(Duration::from_millis(5));
        let b = advance();
        assert!(b >= a + 5, "{a} then {b}");
        assert_eq!(now_ms(), b);
        assert_eq!(after(Duration::from_millis(250)), b + 250);
        assert!(lasted(b - 5, b, Duration::from_millis(5)));
        assert!(!lasted(b - 4, b, Duration::from_millis(5)));
        assert!(
            !lasted(b + 1000, b, Duration::from_millis(1)),
            "since is ahead"
        );
    }
}
