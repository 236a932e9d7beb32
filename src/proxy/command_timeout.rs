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
//!
//! The deadlines live in one [`DeadlineTable`] rather than in the clients' targets: a sweep
//! reads eight bytes per client, front to back, instead of a line of every client's target
//! (2000 clients: 16 KiB in order against 2000 scattered lines, each a cache miss, ten times
//! a second, evicting what the relay was about to use).

use super::cancel::CancelRegistry;
use crate::clock;
use std::sync::atomic::{AtomicU64, Ordering};
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
        for (target, server, n) in registry.expired_commands(now) {
            tracing::info!(
                pid = target.pid,
                "command_timeout reached: cancelling the running query"
            );
            let registry = registry.clone();
            tokio::spawn(async move {
                registry.cancel_timed_out(&target, server, n).await;
            });
        }
    }
}

/// Deadlines per block of the table: eight cache lines.
const BLOCK: usize = 64;

/// Every client's command deadline, on the coarse clock (0: none armed), in blocks that
/// never move or shrink. Each client owns one word ([`DeadlineSlot`]) while it is connected.
#[derive(Default)]
pub struct DeadlineTable {
    blocks: Vec<Arc<DeadlineBlock>>,
    free: Vec<u32>,
}

pub struct DeadlineBlock([AtomicU64; BLOCK]);

/// One client's word of the [`DeadlineTable`]: the relay arms and disarms it without a lock.
pub struct DeadlineSlot {
    block: Arc<DeadlineBlock>,
    index: u32,
}

impl DeadlineSlot {
    #[inline]
    fn word(&self) -> &AtomicU64 {
        &self.block.0[self.index as usize % BLOCK]
    }

    /// The running command is cancelled once the coarse clock passes `deadline`.
    #[inline]
    pub fn arm(&self, deadline: u64) {
        self.word().store(deadline, Ordering::Relaxed);
    }

    #[inline]
    pub fn disarm(&self) {
        self.word().store(0, Ordering::Relaxed);
    }

    /// Whether a deadline is armed (a claimed one reads as disarmed).
    #[inline]
    pub fn is_armed(&self) -> bool {
        self.word().load(Ordering::Acquire) != 0
    }

    /// Its position in the table: what [`DeadlineTable::sweep`] reports for it.
    pub fn index(&self) -> usize {
        self.index as usize
    }
}

impl DeadlineTable {
    /// A free word for a new client, disarmed.
    pub fn take(&mut self) -> DeadlineSlot {
        if self.free.is_empty() {
            let first = (self.blocks.len() * BLOCK) as u32;
            self.blocks
                .push(Arc::new(DeadlineBlock(std::array::from_fn(|_| {
                    AtomicU64::new(0)
                }))));
            // Popped from the back: the block fills from its first word.
            self.free.extend((first..first + BLOCK as u32).rev());
        }
        let index = self.free.pop().expect("a block was just added");
        let slot = DeadlineSlot {
            block: self.blocks[index as usize / BLOCK].clone(),
            index,
        };
        slot.disarm();
        slot
    }

    /// A leaving client's word, free for the next one.
    pub fn give_back(&mut self, slot: &DeadlineSlot) {
        slot.disarm();
        self.free.push(slot.index);
    }

    /// Calls `expired(index, claim)` for every word whose deadline passed at `now`.
    /// `claim()` clears the word if it still holds that deadline and says whether it did,
    /// so that each deadline is claimed once and a relay that disarmed or re-armed
    /// meanwhile keeps its word; the caller takes what the cancel needs before claiming.
    pub fn sweep(&self, now: u64, mut expired: impl FnMut(usize, &dyn Fn() -> bool)) {
        for (b, block) in self.blocks.iter().enumerate() {
            for (i, word) in block.0.iter().enumerate() {
                let d = word.load(Ordering::Relaxed);
                if d != 0 && d <= now {
                    let claim = || {
                        word.compare_exchange(d, 0, Ordering::AcqRel, Ordering::Relaxed)
                            .is_ok()
                    };
                    expired(b * BLOCK + i, &claim);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expired(table: &DeadlineTable, now: u64) -> Vec<usize> {
        let mut found = Vec::new();
        table.sweep(now, |i, claim| {
            if claim() {
                found.push(i)
            }
        });
        found
    }

    #[test]
    fn a_sweep_finds_each_passed_deadline_once() {
        let mut table = DeadlineTable::default();
        let slots: Vec<_> = (0..BLOCK + 3).map(|_| table.take()).collect();
        assert_eq!(table.blocks.len(), 2);
        slots[1].arm(100);
        slots[BLOCK + 1].arm(50);
        slots[2].arm(300);
        slots[3].arm(100);
        slots[3].disarm();
        assert_eq!(expired(&table, 100), vec![1, BLOCK + 1]);
        assert!(expired(&table, 100).is_empty(), "found twice");
        slots[1].arm(400);
        assert_eq!(expired(&table, 1000), vec![1, 2]);
    }

    /// The watchdog reads what the cancel needs between finding a deadline and claiming
    /// it; a relay that re-armed or disarmed its word meanwhile keeps it.
    #[test]
    fn a_word_changed_before_its_claim_is_not_claimed() {
        let mut table = DeadlineTable::default();
        let slots: Vec<_> = (0..3).map(|_| table.take()).collect();
        slots[0].arm(10);
        slots[1].arm(10);
        slots[2].arm(10);
        let mut claimed = Vec::new();
        table.sweep(20, |i, claim| {
            match i {
                0 => slots[0].arm(500),
                1 => slots[1].disarm(),
                _ => {}
            }
            if claim() {
                claimed.push(i);
            }
        });
        assert_eq!(claimed, vec![2]);
        assert_eq!(expired(&table, 600), vec![0], "the new deadline stands");
    }

    #[test]
    fn words_are_reused_disarmed() {
        let mut table = DeadlineTable::default();
        let a = table.take();
        let b = table.take();
        assert_eq!((a.index(), b.index()), (0, 1));
        a.arm(10);
        table.give_back(&a);
        let c = table.take();
        assert_eq!(c.index(), 0, "the freed word");
        assert!(
            expired(&table, 20).is_empty(),
            "a reused word starts disarmed"
        );
        assert_eq!(table.blocks.len(), 1);
    }
}
