//! launch-proxy: a tenant-aware PostgreSQL wire-protocol pooling proxy.
//!
//! Layout (lower layers never import higher ones):
//! - [`error`]: error kinds with the SQLSTATE each maps to and what a client may see;
//!   [`shutdown`]: one cancellation token plus a task tracker; [`clock`]: the coarse clock
//!   of the hot path; [`counter`]: hot-path counter adds, without a locked instruction on
//!   the current-thread runtime.
//! - [`config`]: plain serde types, validation, warnings; an immutable snapshot.
//! - [`metrics`]: metric names, cached handles and the `/metrics` listener.
//! - [`protocol`]: no I/O; message framing, startup packets, message encoders.
//! - [`auth`]: SCRAM-SHA-256 (server and client side) and md5, no I/O.
//! - [`tenant`]: no I/O; the validated tenant id, a PostgreSQL lexer, and the statement guard
//!   that refuses SQL changing `app.tenant_id`/`app.tenant_sig`.
//! - [`pool`]: per (database, server user) pools, checkout, server connections,
//!   limits across pools, maintenance.
//! - [`proxy`]: the per-client task: handshake, authentication, transaction relay, cancel.
//! - [`server`]: accept loop, client limit, signals; [`runtime`]: the tokio runtime and
//!   event coalescing under load; `main.rs` stays thin.
#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod counter;
pub mod entropy;
pub mod error;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod protocol;
pub mod proxy;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod tenant;
