//! The memory that all clients' read buffers may take beyond a small allowance each.
//!
//! A Query or Parse is read whole before it goes on (the statement guard reads all of its
//! SQL), so one client can make the proxy hold up to `max_client_message_bytes`. Without a
//! shared bound, a few clients that each send most of such a message and stop pin
//! gigabytes (red team: 16 clients at 60 MiB held 1 GiB) on a host of 4 GiB. Growth of a
//! buffer past [`FREE_CAPACITY`] is charged to the budget before it is allocated; a client
//! whose buffer would take the budget past `client_buffer_budget_bytes` is refused with
//! 53200 and disconnected, and everyone else goes on. Streamed messages (COPY data,
//! unnamed Binds) never grow a buffer, so bulk loads are not limited by it.
//!
//! What it counts is the read buffers' allocations (`client_io` tracks each one, since
//! `BytesMut::capacity` shows only what lies past the read position); the copy the relay
//! builds of a batch it rewrites (named statements), for as long as the write of that
//! copy blocks, is not counted.

use crate::error::{ClientError, ErrorKind};
use crate::metrics::ClientCounts;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Capacity a client's buffer may have without a charge: eight read chunks, the size up
/// to which the spare buffers keep one.
pub const FREE_CAPACITY: usize = 64 * 1024;

/// The shared limit, with its use kept in [`ClientCounts::buffer_bytes`] (a gauge).
pub struct BufferBudget {
    limit: u64,
    /// `max_client_message_bytes`: no buffer needs to grow much past it.
    max_message: usize,
    counts: Arc<ClientCounts>,
}

impl BufferBudget {
    pub fn new(limit: usize, max_message: usize, counts: Arc<ClientCounts>) -> Arc<Self> {
        Arc::new(BufferBudget {
            limit: limit as u64,
            max_message,
            counts,
        })
    }

    pub fn max_message(&self) -> usize {
        self.max_message
    }

    fn charge(&self, bytes: usize) -> bool {
        let bytes = bytes as u64;
        let charged =
            self.counts
                .buffer_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    (used + bytes <= self.limit).then_some(used + bytes)
                });
        if charged.is_err() {
            self.counts.buffer_refusals.fetch_add(1, Ordering::Relaxed);
        }
        charged.is_ok()
    }

    fn refund(&self, bytes: usize) {
        self.counts
            .buffer_bytes
            .fetch_sub(bytes as u64, Ordering::AcqRel);
    }

    /// The error for a client whose buffer the budget cannot cover.
    pub fn exhausted(&self, wanted: usize) -> ClientError {
        ClientError::fatal(
            ErrorKind::Limit,
            crate::protocol::codes::OUT_OF_MEMORY,
            "out of memory: launch-proxy's budget for large client messages is in use",
        )
        .with_detail(format!(
            "a buffer of {wanted} bytes would take the read buffers of all clients past client_buffer_budget_bytes ({})",
            self.limit
        ))
        .with_hint("retry later; large data sent with COPY or as bind parameters is streamed and needs no buffer")
    }
}

/// One client's share of the budget: what its buffer's capacity above [`FREE_CAPACITY`]
/// was charged. Refunded when the buffer goes, and on drop.
pub struct BufferCharge {
    budget: Arc<BufferBudget>,
    charged: usize,
}

impl BufferCharge {
    pub fn new(budget: Arc<BufferBudget>) -> Self {
        BufferCharge { budget, charged: 0 }
    }

    /// Charges for a buffer of `capacity` bytes, or refunds what it no longer takes;
    /// `false` (the charge unchanged) if the budget cannot cover it.
    pub fn fit(&mut self, capacity: usize) -> bool {
        let above = capacity.saturating_sub(FREE_CAPACITY);
        if above > self.charged {
            if !self.budget.charge(above - self.charged) {
                return false;
            }
        } else if above < self.charged {
            self.budget.refund(self.charged - above);
        }
        self.charged = above;
        true
    }

    /// The buffer went (handed back, or replaced by a small one).
    pub fn release(&mut self) {
        self.fit(0);
    }

    pub fn budget(&self) -> &BufferBudget {
        &self.budget
    }
}

impl Drop for BufferCharge {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_above_the_allowance_share_the_budget() {
        let counts = Arc::new(ClientCounts::default());
        let budget = BufferBudget::new(1 << 20, 1 << 20, counts.clone());
        let used = || counts.buffer_bytes.load(Ordering::Relaxed);
        let mut a = BufferCharge::new(budget.clone());
        let mut b = BufferCharge::new(budget.clone());
        assert!(a.fit(FREE_CAPACITY), "the allowance is free");
        assert_eq!(used(), 0);
        assert!(a.fit(FREE_CAPACITY + 600_000));
        assert_eq!(used(), 600_000);
        assert!(!b.fit(FREE_CAPACITY + 500_000), "past the limit");
        assert_eq!(used(), 600_000, "a refused charge takes nothing");
        assert_eq!(counts.buffer_refusals.load(Ordering::Relaxed), 1);
        assert!(a.fit(FREE_CAPACITY + 400_000));
        assert_eq!(used(), 400_000, "the buffer came out smaller");
        assert!(b.fit(FREE_CAPACITY + 500_000));
        assert_eq!(used(), 900_000);
        a.release();
        drop(b);
        assert_eq!(used(), 0);
        assert!(!budget.exhausted(5).message.is_empty());
    }
}
