//! Buffers that idle clients hand back and busy ones borrow: client read buffers, and the
//! space in which the relay builds a message it rewrote (returned as soon as it is sent).
//!
//! An idle client keeps no buffer, so that thousands of idle clients cost sockets only;
//! without recycling, every transaction would allocate and free one. The pool is per thread
//! (the runtime runs the relay on one thread), so taking and returning is a Vec push and pop
//! with no lock, and a borrowed buffer is one the thread used moments ago: in the cache,
//! where one kept per client would have gone cold while its client waited.

use super::client_io::READ_CHUNK;
use bytes::BytesMut;
use std::cell::RefCell;

/// Buffers kept per thread: enough for the clients that read at once; each kept one costs
/// up to a page of RSS, which idle-client memory figures count.
const MAX_SPARE: usize = 64;

/// Buffers that grew past this (a large row or COPY) are freed rather than kept.
const MAX_KEPT_CAPACITY: usize = 8 * READ_CHUNK;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for one read.
pub fn take() -> BytesMut {
    SPARE
        .with(|s| s.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(READ_CHUNK))
}

/// Returns a client's emptied buffer to the pool.
pub fn give_back(mut buf: BytesMut) {
    buf.clear();
    // `capacity()` counts only what lies past the read position: a large allocation
    // whose front was consumed could pass for a small one. Reclaiming that front shows
    // all of it.
    if buf.try_reclaim(MAX_KEPT_CAPACITY + 1) {
        return;
    }
    // Reclaims the space before the read position without allocating when the buffer is
    // not shared; a shared one allocates here, once, instead of on the next read.
    buf.reserve(READ_CHUNK);
    if buf.capacity() > MAX_KEPT_CAPACITY {
        return;
    }
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < MAX_SPARE {
            s.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    #[test]
    fn buffers_come_back_empty_and_reusable() {
        let mut b = take();
        b.extend_from_slice(&[7; 3000]);
        b.advance(3000);
        let at = b.as_ptr();
        give_back(b);
        let again = take();
        assert!(again.is_empty());
        assert!(again.capacity() >= READ_CHUNK);
        assert_eq!(
            again.as_ptr(),
            at.wrapping_sub(3000),
            "same allocation, from its start"
        );
        give_back(BytesMut::with_capacity(MAX_KEPT_CAPACITY * 2));
        let third = take();
        assert!(third.capacity() <= MAX_KEPT_CAPACITY);
    }
}
