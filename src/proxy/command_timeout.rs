//! command_timeout without a timer per command.
//!
//! Arming and dropping a tokio timer for every command put two timer-wheel operations
//! and clock reads on the hot path of every transaction. Instead a relay stores the
//! command's deadline, read from a coarse clock, in its client's cancel target (two
//! relaxed atomic stores per command), and one watchdog task per process sweeps the
//! targets every [`TICK`]: an expired deadline is cleared, marked timed out (so the relay
//! rewords the 57014 that follows) and cancelled through the ordinary cancel path.
//! Timeouts fire up to one tick late, which is noise next to timeouts of seconds. The same
//! clock spares other per-transaction checks a clock read (tenant status freshness).

use super::cancel::CancelRegistry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How often deadlines are checked and the coarse clock advances.
pub const TICK: Duration = Duration::from_millis(100);

static COARSE_MS: AtomicU64 = AtomicU64::new(1);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the process's clock epoch, as of the watchdog's last tick. Never 0
/// (0 means "no deadline" in a cancel target).
#[inline]
pub fn coarse_now_ms() -> u64 {
    COARSE_MS.load(Ordering::Relaxed)
}

fn advance_clock() -> u64 {
    let now = epoch().elapsed().as_millis() as u64 + 1;
    COARSE_MS.store(now, Ordering::Relaxed);
    now
}

/// The deadline, on the coarse clock, of a command that starts now.
#[inline]
pub fn deadline_after(d: Duration) -> u64 {
    coarse_now_ms().saturating_add(d.as_millis() as u64).max(1)
}

/// Advances the coarse clock and, with `sweep` (some role has a command_timeout), sweeps
/// every client's command deadline; runs for the life of the process.
pub async fn watchdog(registry: Arc<CancelRegistry>, sweep: bool) {
    epoch();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = advance_clock();
        if !sweep {
            continue;
        }
        for target in registry.expired_commands(now) {
            tracing::info!(
                pid = target.pid,
                "command_timeout reached: cancelling the running query"
            );
            let registry = registry.clone();
            tokio::spawn(async move {
                registry.cancel_running(&target).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_never_reads_zero_and_deadlines_add_up() {
        assert!(coarse_now_ms() >= 1);
        let now = advance_clock();
        assert!(now >= 1);
        assert_eq!(
            deadline_after(Duration::from_millis(250)),
            coarse_now_ms() + 250
        );
    }
}
