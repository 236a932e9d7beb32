//! Shared integration-test harness for launch-proxy.
//!
//! The integration suite (tests/suite.rs) declares it once; its modules use:
//! - [`PgServer`]: a private, throwaway PostgreSQL cluster on a random 127.0.0.1 port;
//! - [`ProxyProcess`]: the compiled `launch-proxy` binary running against such a cluster;
//! - [`proxy_config`] / [`USERS_YAML`]: configuration text for the proxy.
//!
//! Only std, tokio and tokio-postgres are used. All files live under one per-process
//! directory below the test root (`$LP_TEST_ROOT`, default `/dev/shm/launch-proxy-tests`
//! or, without a usable /dev/shm, `$TMPDIR/launch-proxy-tests`);
//! directories left behind by test processes that no longer exist (and any PostgreSQL
//! still running in them) are cleaned up the first time a harness item is used.
//!
//! When the tests run as root, PostgreSQL runs as the `postgres` OS user (it refuses to
//! run as root); otherwise it runs as the current user.
//!
//! The harness calls are blocking (they run psql/pg_ctl and poll). Inside a
//! current-thread `#[tokio::test]` a blocking call also stalls the spawned connection
//! tasks; when a test needs those to make progress meanwhile (e.g. a dropped client
//! sending Terminate), await between calls or use
//! `#[tokio::test(flavor = "multi_thread")]` / `tokio::task::spawn_blocking`.
//!
//! Environment knobs: `LP_PG_BIN` (PostgreSQL bin dir), `LP_TEST_ROOT`,
//! `LP_KEEP_TEST_DIRS=1` (keep server and proxy directories for inspection),
//! `LP_PROXY_RUST_LOG` (the proxy's `RUST_LOG`, default `info`), `LP_PROXY_BIN` (the binary
//! under test, default the one cargo built: e.g. scripts/build-pgo's `target/pgo/launch-proxy`).
#![allow(dead_code, unused_imports)]

pub mod client;
mod config;
mod pg;
mod proxy;
pub mod raw;
mod util;

pub use config::{proxy_config, DEFAULT_POOL, USERS_YAML};
pub use pg::{pg_bin_dir, psql_bin, PgServer};
pub use proxy::{proxy_binary, ProxyProcess};
pub use util::{free_port, send_signal, test_run_dir, wait_for_port};

/// A field (b'C' = SQLSTATE, b'M' = message, b'S' = severity) of an ErrorResponse or
/// NoticeResponse body, for tests that speak the protocol themselves.
pub fn error_field(body: &[u8], code: u8) -> Option<String> {
    let mut rest = body;
    while let Some((&t, tail)) = rest.split_first() {
        let end = tail.iter().position(|&b| b == 0)?;
        if t == code {
            return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
        }
        rest = &tail[end + 1..];
    }
    None
}

/// The value of the first sample of `name` in a /metrics `body` carrying all `labels`
/// (0 when absent).
pub fn metric(body: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        let want = |(k, v): &(&str, &str)| rest.contains(&format!("{k}=\"{v}\""));
        (n == name && labels.iter().all(want)).then(|| value.parse().ok())?
    });
    found.unwrap_or(0.0)
}

/// Whether the `app` pool's client gauge for `state` (active, waiting) reaches `value`
/// within LIMIT.
pub async fn app_clients_reach(proxy: &ProxyProcess, state: &str, value: f64) -> bool {
    let labels = [("pool", "app"), ("state", state)];
    client::eventually(client::LIMIT, || {
        metric(&proxy.metrics(), "launch_proxy_client_connections", &labels) == value
    })
    .await
}

/// Placeholder kept so tests can call it unconditionally; the proxy logs to its own file
/// and the harness prints its tail when a test panics.
pub fn init_tracing() {}
