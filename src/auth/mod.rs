//! Password authentication math for both sides of the proxy: SCRAM-SHA-256 (server side for
//! clients, client side for logging in to PostgreSQL) and PostgreSQL's legacy md5 scheme.
//!
//! Everything here is pure: functions and small state machines that take message payloads and
//! return message payloads. Framing, sockets and timeouts live in `protocol` and `proxy`, so this
//! module can be tested exhaustively without a network and cannot block the runtime on I/O.

pub mod jwt;
pub mod md5;
pub mod scram;

pub use scram::{
    ScramClient, ScramCredentials, ScramError, ScramKeys, ScramServer, ScramVerifier, SCRAM_SHA_256,
};
