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
use crate::clock;
use std::sync::Arc;
use std::time::Duration;

/// How often deadlines are checked and the coarse clock advances.
pub const TICK: Duration = clock::TICK;

/// The deadline, on the coarse clock, of a command that starts now.
#[inline]
pub fn deadline_after(d: Duration) -> u64 {
    clock::after(d)
}

/// Advances the coarse clock and, with `sweep` (some role has a command_timeout), sweeps
/// every client's command deadline; runs for the life of the process.
pub async fn watchdog(registry: Arc<CancelRegistry>, sweep: bool) {
    clock::advance();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = clock::advance();
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
