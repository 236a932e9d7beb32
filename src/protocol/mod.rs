//! The PostgreSQL v3 wire protocol without I/O: framing of message runs, startup packets,
//! and encoders for the few messages the proxy writes itself.
//!
//! The relay never decodes messages it only forwards: it reads the 5-byte header (tag and
//! length), looks at the handful of tags that drive pooling decisions, and moves bytes.

pub mod codes;
pub mod encode;
pub mod fields;
pub mod framing;
pub mod startup;

#[cfg(test)]
mod tests;

/// The largest message a client may send outside COPY data and bind parameters we stream.
/// PostgreSQL itself caps most messages at 1 GiB; a proxy keeps a far tighter bound on what it
/// buffers for parsing (startup and auth) while streaming everything else.
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// Upper bound on any single message length we accept from either side; larger lengths are
/// treated as protocol corruption (PostgreSQL's own limit for most messages is 1 GiB).
pub const MAX_MESSAGE_LEN: usize = 1 << 30;
