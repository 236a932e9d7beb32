//! A client's server word (`CancelTarget::server`): the key of the server it runs on, or
//! its queued wait, in one atomic.

use crate::pool::BackendKey;

/// A server key as one word. PostgreSQL's pids are positive, so a key is never 0, the
/// value that stands for no server, and its top bit is clear, unlike the queue's markers.
pub(super) fn pack(key: BackendKey) -> u64 {
    (u64::from(key.pid) << 32) | u64::from(key.secret)
}

/// Marks a word as a queued wait rather than a key: the wait's number in bits 1..33, and
/// bit 0 once a cancel withdrew it.
pub(super) const QUEUE_MARK: u64 = 1 << 63;

pub(super) fn queued(wait: u32) -> u64 {
    QUEUE_MARK | (u64::from(wait) << 1)
}

pub(super) fn unpack(word: u64) -> Option<BackendKey> {
    (word != 0 && word >> 63 == 0).then_some(BackendKey {
        pid: (word >> 32) as u32,
        secret: word as u32,
    })
}
