//! The integration suite: every test against a real PostgreSQL and the compiled
//! `launch-proxy`, as one test binary (one link of the crate instead of one per file).
//! Each module is one area; `cargo test --test suite <module>::` runs one of them.
//! The harness they share is [`common`].

mod abuse;
mod active_gate;
mod admin;
mod auth;
mod buffer_budget;
mod cancel_peers;
mod cli;
mod client_idle;
mod clients;
mod common;
mod drain;
mod faults;
mod faults_edge;
mod faults_more;
mod harness_smoke;
mod held_cancel;
mod identity;
mod login_edges;
mod operability;
mod pause;
mod pipelining;
mod pooling;
mod prepared_scenarios;
mod protocol;
mod queued_cancel;
mod reload;
mod reuseport;
mod scale;
mod tenancy;
mod tenancy_db;
mod tenant_cap;
mod tenant_turns;
mod timeouts;
