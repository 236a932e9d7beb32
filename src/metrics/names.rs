//! Every metric name in one place, so dashboards and code agree.

pub const CLIENTS_CONNECTED: &str = "launch_proxy_clients_connected";
pub const CLIENTS_ACCEPTED: &str = "launch_proxy_clients_accepted_total";
pub const CLIENTS_REJECTED: &str = "launch_proxy_clients_rejected_max_client_conn_total";
/// Connections still in their login that made room for a newer one at `max_client_conn`.
pub const CLIENTS_DISPLACED: &str = "launch_proxy_clients_displaced_before_login_total";
pub const LOGIN_FAILURES: &str = "launch_proxy_login_failures_total";
pub const CANCEL_REQUESTS: &str = "launch_proxy_cancel_requests_total";
/// Client read-buffer bytes above each client's free allowance (`client_buffer_budget_bytes`).
pub const CLIENT_BUFFER_BYTES: &str = "launch_proxy_client_buffer_bytes";
/// Clients disconnected (53200) because that budget could not cover their buffer.
pub const CLIENT_BUFFER_REFUSALS: &str = "launch_proxy_client_buffer_refusals_total";
pub const CLIENT_CONNECTIONS: &str = "launch_proxy_client_connections";
pub const SERVER_CONNECTIONS: &str = "launch_proxy_server_connections";
pub const DB_SERVER_CONNECTIONS: &str = "launch_proxy_database_server_connections";
/// Statements counted against `pool.max_active` (running, younger than `active_stall_ms`).
pub const RUNNING_STATEMENTS: &str = "launch_proxy_pool_running_statements";
/// 1 while a pool's gate stands open because most recent statements ran past
/// `active_stall_ms`.
pub const GATE_OPEN: &str = "launch_proxy_pool_gate_open";
/// 1 while a pool is paused (SIGUSR1 until SIGUSR2).
pub const POOL_PAUSED: &str = "launch_proxy_pool_paused";
pub const POOL_WAIT_SECONDS: &str = "launch_proxy_pool_wait_seconds";
pub const TRANSACTIONS: &str = "launch_proxy_transactions_total";
pub const QUERIES: &str = "launch_proxy_queries_total";
/// Transactions that ran the tenant switch first: the connection carried another tenant,
/// or settings another client left (the rest found their tenant applied).
pub const TENANT_SWITCHES: &str = "launch_proxy_tenant_switches_total";
/// Writes of clients' messages that the server did not take at once, finished while its
/// replies went on to the client (relay::duplex): clients pipelining faster than
/// PostgreSQL reads.
pub const SERVER_WRITE_WAITS: &str = "launch_proxy_server_write_waits_total";
pub const BYTES: &str = "launch_proxy_bytes_total";
pub const ERRORS: &str = "launch_proxy_errors_total";
pub const ACQUIRE_TIMEOUTS: &str = "launch_proxy_acquire_timeouts_total";
/// Queued checkouts ended by the client's CancelRequest before their statement was sent.
pub const WAITS_CANCELLED: &str = "launch_proxy_waits_cancelled_total";
/// Checkouts that queued because their tenant's clients held `pool.max_tenant_connections`.
pub const TENANT_CAP_WAITS: &str = "launch_proxy_tenant_cap_waits_total";
/// Transactions whose first message went down a busy connection behind the statement
/// running there (`pool.pipeline_queued`), and of those, how many were sent again because
/// a cancel meant for that statement reached theirs.
pub const PIPELINED: &str = "launch_proxy_pipelined_total";
pub const PIPELINED_RESENT: &str = "launch_proxy_pipelined_resent_total";
pub const SERVER_CONNECTS: &str = "launch_proxy_server_connects_total";
/// Server connections closed, by `reason`: `idle` (idle or server lifetime, broken while
/// idle, pool paused), `retired` (server_max_uses or lifetime at release), `other` (lost or
/// left in an unknown state by a transaction, yielded to another pool). Connects minus
/// these is the connections open.
pub const SERVER_CLOSED: &str = "launch_proxy_server_connections_closed_total";
pub const GUARD_VIOLATIONS: &str = "launch_proxy_guard_violations_total";
/// Logged-in clients per tenant and state, for the busiest tenants (`metrics::tenants`).
pub const TENANT_CLIENTS: &str = "launch_proxy_tenant_clients";
pub const TENANTS_CONNECTED: &str = "launch_proxy_tenants_connected";
