//! Random bytes for SCRAM nonces, md5 salts, cancel keys and the statement-name tag, handed
//! out from a per-thread batch that one `getrandom` call refills. A SCRAM login draws twice
//! (its nonce and its cancel secret); at a new connection per transaction each draw was a
//! syscall of its own, two of the 27 a login cost (strace -c of pgbench -C: 0.04 `getrandom`
//! per login with the batch). The batch holds OS randomness only, each byte goes out once, and a byte handed out
//! is wiped from the batch, so a later look at the process memory does not show keys
//! already given to clients.

use std::cell::RefCell;

/// Bytes fetched per refill: 23 SCRAM logins' worth (18-byte nonce, 4-byte cancel secret).
const BATCH: usize = 512;

/// Draws larger than this bypass the batch (they are rare and would drain it).
const LARGEST_BATCHED: usize = 64;

struct Batch {
    bytes: [u8; BATCH],
    /// Bytes of `bytes` already handed out (and wiped).
    used: usize,
}

thread_local! {
    static BATCH_OF_THREAD: RefCell<Batch> = const {
        RefCell::new(Batch { bytes: [0; BATCH], used: BATCH })
    };
}

/// Fills `out` with OS randomness. Failure of the OS generator leaves no safe way to go on (a
/// predictable nonce or cancel key would silently weaken authentication), so it panics; it is
/// not reachable from peer input.
pub fn fill(out: &mut [u8]) {
    if out.len() > LARGEST_BATCHED {
        getrandom::fill(out).expect("the OS random source is unavailable");
        return;
    }
    BATCH_OF_THREAD.with_borrow_mut(|batch| {
        if BATCH - batch.used < out.len() {
            getrandom::fill(&mut batch.bytes).expect("the OS random source is unavailable");
            batch.used = 0;
        }
        let drawn = &mut batch.bytes[batch.used..batch.used + out.len()];
        out.copy_from_slice(drawn);
        drawn.fill(0);
        batch.used += out.len();
    });
}

/// `N` random bytes (see [`fill`]).
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    fill(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_across_refills_are_distinct_and_wiped() {
        let mut seen = std::collections::HashSet::new();
        // More than three batches of 18-byte nonces: every refill boundary is crossed with
        // a draw that does not fit the rest of the batch.
        for _ in 0..(3 * BATCH / 18 + 5) {
            let nonce = bytes::<18>();
            assert!(seen.insert(nonce), "a nonce came out twice");
        }
        BATCH_OF_THREAD.with_borrow(|b| {
            assert!(b.used > 0 && b.used <= BATCH);
            assert!(
                b.bytes[..b.used].iter().all(|&x| x == 0),
                "handed out bytes are wiped"
            );
        });
        let large = bytes::<{ LARGEST_BATCHED + 1 }>();
        assert_ne!(large, [0u8; LARGEST_BATCHED + 1]);
    }
}
