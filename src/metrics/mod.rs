//! Metric names, the recorder, and the `/metrics` listener.
//!
//! The hot path only bumps plain atomics ([`crate::pool::PoolStats`], [`ClientCounts`]);
//! they are copied into the registry when Prometheus scrapes, so a transaction costs no
//! registry lookup. Errors are counted directly (they are rare).

mod http;
pub mod names;
pub mod tenants;

pub use http::serve;

use crate::pool::PoolSet;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Installs the global recorder. Must run before pools are created (they cache handles).
pub fn install() -> Option<PrometheusHandle> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).ok()?;
    Some(handle)
}

/// The pools' checkout-wait histograms in Prometheus text format, appended to the
/// registry's output (they are plain atomics, not registry metrics).
pub fn render_wait_histograms(pools: &PoolSet, out: &mut String) {
    use crate::pool::WAIT_BOUNDS_S;
    use std::fmt::Write as _;
    let name = names::POOL_WAIT_SECONDS;
    let _ = writeln!(
        out,
        "# HELP {name} Time clients waited for a server connection."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for pool in pools.iter() {
        let s = pool.stats.wait.snapshot();
        let label = escape_label(&pool.name);
        for (le, n) in WAIT_BOUNDS_S.iter().zip(&s.cumulative) {
            let _ = writeln!(out, "{name}_bucket{{pool=\"{label}\",le=\"{le}\"}} {n}");
        }
        let count = s.cumulative[WAIT_BOUNDS_S.len()];
        let _ = writeln!(out, "{name}_bucket{{pool=\"{label}\",le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{pool=\"{label}\"}} {}", s.sum_s);
        let _ = writeln!(out, "{name}_count{{pool=\"{label}\"}} {count}");
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Client-side counts that do not belong to one pool.
#[derive(Default)]
pub struct ClientCounts {
    pub connected: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected_max_clients: AtomicU64,
    /// Connections refused at `max_client_conn` still being answered (not in `connected`).
    pub refusing: AtomicU64,
    /// Connections in their login displaced by newer ones at `max_client_conn`.
    pub displaced_logins: AtomicU64,
    pub login_failures: AtomicU64,
    pub cancel_requests: AtomicU64,
    /// Bytes of client read buffers charged to `client_buffer_budget_bytes`.
    pub buffer_bytes: AtomicU64,
    /// Clients refused because that budget could not cover their buffer.
    pub buffer_refusals: AtomicU64,
}

/// Counts an error sent to a client, by SQLSTATE class (two characters: a bounded label).
pub fn count_error(sqlstate: &[u8]) {
    let class = std::str::from_utf8(sqlstate.get(..2).unwrap_or(b"??")).unwrap_or("??");
    metrics::counter!(names::ERRORS, "class" => class.to_owned()).increment(1);
}

/// Copies the atomics into the registry; called right before rendering.
pub fn publish(pools: &PoolSet, clients: &ClientCounts) {
    use metrics::{counter, gauge};
    gauge!(names::CLIENTS_CONNECTED).set(clients.connected.load(Relaxed) as f64);
    counter!(names::CLIENTS_ACCEPTED).absolute(clients.accepted.load(Relaxed));
    counter!(names::CLIENTS_REJECTED).absolute(clients.rejected_max_clients.load(Relaxed));
    counter!(names::CLIENTS_DISPLACED).absolute(clients.displaced_logins.load(Relaxed));
    counter!(names::LOGIN_FAILURES).absolute(clients.login_failures.load(Relaxed));
    counter!(names::CANCEL_REQUESTS).absolute(clients.cancel_requests.load(Relaxed));
    gauge!(names::CLIENT_BUFFER_BYTES).set(clients.buffer_bytes.load(Relaxed) as f64);
    counter!(names::CLIENT_BUFFER_REFUSALS).absolute(clients.buffer_refusals.load(Relaxed));
    gauge!(names::DB_SERVER_CONNECTIONS).set(pools.db_connections() as f64);
    for pool in pools.iter() {
        let name = pool.name.to_string();
        let s = &pool.stats;
        let now = pool.snapshot();
        let servers = [
            ("active", now.in_use()),
            ("idle", now.idle),
            ("opening", now.opening),
        ];
        for (state, v) in servers {
            gauge!(names::SERVER_CONNECTIONS, "pool" => name.clone(), "state" => state)
                .set(v as f64);
        }
        gauge!(names::RUNNING_STATEMENTS, "pool" => name.clone()).set(now.running as f64);
        gauge!(names::GATE_OPEN, "pool" => name.clone()).set(u8::from(now.gate_open) as f64);
        gauge!(names::POOL_PAUSED, "pool" => name.clone()).set(u8::from(now.paused) as f64);
        for (state, v) in [
            ("active", s.clients_active.load(Relaxed)),
            ("waiting", s.clients_waiting.load(Relaxed)),
        ] {
            gauge!(names::CLIENT_CONNECTIONS, "pool" => name.clone(), "state" => state)
                .set(v as f64);
        }
        let counters = [
            (names::TRANSACTIONS, &s.transactions),
            (names::QUERIES, &s.queries),
            (names::TENANT_SWITCHES, &s.tenant_switches),
            (names::SERVER_WRITE_WAITS, &s.server_write_waits),
            (names::ACQUIRE_TIMEOUTS, &s.acquire_timeouts),
            (names::WAITS_CANCELLED, &s.waits_withdrawn),
            (names::TENANT_CAP_WAITS, &s.tenant_cap_waits),
            (names::PIPELINED, &s.passed_on),
            (names::PIPELINED_RESENT, &s.resent),
        ];
        for (metric, v) in counters {
            counter!(metric, "pool" => name.clone()).absolute(v.load(Relaxed));
        }
        for (dir, v) in [
            ("from_clients", &s.bytes_from_clients),
            ("from_server", &s.bytes_from_server),
        ] {
            counter!(names::BYTES, "pool" => name.clone(), "direction" => dir)
                .absolute(v.load(Relaxed));
        }
        for (result, v) in [("ok", &s.connects_ok), ("failed", &s.connects_failed)] {
            counter!(names::SERVER_CONNECTS, "pool" => name.clone(), "result" => result)
                .absolute(v.load(Relaxed));
        }
        for (reason, v) in [
            ("idle", &s.closed_idle),
            ("retired", &s.closed_retired),
            ("other", &s.closed_other),
        ] {
            counter!(names::SERVER_CLOSED, "pool" => name.clone(), "reason" => reason)
                .absolute(v.load(Relaxed));
        }
    }
}

/// What the `/metrics` listener needs.
pub struct MetricsContext {
    pub handle: PrometheusHandle,
    pub pools: Arc<PoolSet>,
    pub clients: Arc<ClientCounts>,
    /// Each tenant's clients, busiest first, read at every scrape (given by the layer that
    /// knows the clients: `server`, from the cancel registry).
    pub tenant_clients: Box<dyn Fn() -> Vec<tenants::TenantClients> + Send + Sync>,
}
