//! Configuration: plain serde types with the seed's defaults, loading (files, secrets from
//! files or environment), validation into hard errors and warnings, and the immutable
//! [`Settings`] snapshot the rest of the proxy runs on.

mod load;
mod users;
mod validate;

#[cfg(test)]
mod tests;

pub use load::{load, LoadError, LoadOverrides};
pub use users::{ClientAuth, ClientSecret, ServerLogin, User, UserEntry, UsersFile, UsersTable};
pub use validate::Warning;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The main config file, as written by the operator.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where clients connect.
    #[serde(default = "defaults::listen")]
    pub listen: String,
    /// Prometheus `/metrics` endpoint; empty string disables it.
    #[serde(default = "defaults::metrics_listen")]
    pub metrics_listen: String,
    /// Binds `listen` (and `metrics_listen`) with SO_REUSEPORT, PgBouncer's `so_reuseport`:
    /// a second process on the same port, for a rolling restart without a refused
    /// connection (deploy/README.md). The kernel spreads new connections over the processes.
    #[serde(default)]
    pub so_reuseport: bool,
    /// An address of this process alone (empty: none). With `so_reuseport` a cancel request
    /// sent to `listen` may reach another process than the one that issued its key; that
    /// one forwards it here (`cancel.peers` lists each process's `instance_listen` under its
    /// `cancel.host_id`). Clients may log in here too.
    #[serde(default)]
    pub instance_listen: String,
    pub server: ServerConfig,
    /// Relative paths are resolved against the config file's directory.
    pub users_file: PathBuf,
    #[serde(default)]
    pub pool: PoolConfig,
    #[serde(default)]
    pub roles: RolesConfig,
    /// Runtime worker threads. 1 runs everything on one thread, which on a 2-core host shared
    /// with clients or PostgreSQL costs the least CPU per transaction (see LANDSCAPE.md).
    #[serde(default)]
    pub tenant: TenantConfig,
    /// Client-facing TLS; absent means SSLRequest is answered 'N'.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Cancel requests across the pool hosts behind one address.
    #[serde(default)]
    pub cancel: CancelConfig,
    /// The admin console (SHOW POOLS, PAUSE, RELOAD, ...): a database name of its own.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Token logins: clients not in the users file send a JWT as their password.
    #[serde(default)]
    pub jwt: Option<crate::auth::jwt::JwtSettings>,
    /// Cleartext passwords (JWTs) are accepted only over TLS, or also from loopback
    /// addresses when this is set (tests, sidecars).
    #[serde(default)]
    pub allow_cleartext_on_loopback: bool,
    /// One log line per client login, as PgBouncer's `log_connections` (refusals and errors
    /// are always logged). At a new connection per transaction the lines cost more CPU than
    /// the relay.
    #[serde(default = "defaults::yes")]
    pub log_connections: bool,
    /// One log line per client disconnect without an error, as PgBouncer's
    /// `log_disconnections`.
    #[serde(default = "defaults::yes")]
    pub log_disconnections: bool,
    #[serde(default = "defaults::workers")]
    pub workers: usize,
    /// The kernel's scheduling policy for the proxy's threads (see `runtime`).
    #[serde(default)]
    pub cpu_scheduling: CpuScheduling,
    /// Longest nap before sleeping when busy with many transactions in flight, so that
    /// socket events are handled in batches (fewer wake-ups and context switches); 0 turns
    /// it off. See `runtime`.
    #[serde(default = "defaults::event_coalesce_us")]
    pub event_coalesce_us: u64,
    /// How long running transactions may take to finish after SIGTERM/SIGINT.
    #[serde(default = "defaults::shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    /// A client must finish the startup and authentication exchange within this time.
    #[serde(default = "defaults::client_login_timeout_ms")]
    pub client_login_timeout_ms: u64,
    /// A session that sends nothing for this long, outside a transaction, is ended with
    /// 57P05, as PostgreSQL's `idle_session_timeout` (0: never). Leaked connections then
    /// give back their place under `max_client_conn` and `pool.max_tenant_clients`.
    #[serde(default)]
    pub client_idle_timeout_ms: u64,
    /// Largest single client message the proxy accepts (bytes); larger ones are refused with
    /// 54000 and the connection is closed. COPY data and large binds below it are streamed.
    #[serde(default = "defaults::max_client_message_bytes")]
    pub max_client_message_bytes: usize,
    /// Memory all clients' read buffers may take above 64 KiB each (bytes): a Query or
    /// Parse is read whole before it goes on. A client whose buffer would go past it is
    /// refused with 53200 (proxy::buffer_budget).
    #[serde(default = "defaults::client_buffer_budget_bytes")]
    pub client_buffer_budget_bytes: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    #[serde(default = "defaults::server_port")]
    pub port: u16,
    /// The one database behind the proxy; clients must ask for this name.
    pub database: String,
    /// TLS toward PostgreSQL.
    #[serde(default)]
    pub tls: ServerTlsConfig,
    /// TCP keepalive on server connections: a server host that hangs or a network that
    /// partitions answers nothing, and without probes a relay waiting for its reply would
    /// wait for ever (a cancel cannot reach it either).
    #[serde(default)]
    pub keepalive: KeepaliveConfig,
    /// `TCP_USER_TIMEOUT` on server connections: data sent and unacknowledged this long
    /// ends the connection (0: the kernel's retransmission limit, about 15 minutes).
    #[serde(default = "defaults::tcp_user_timeout_ms")]
    pub tcp_user_timeout_ms: u64,
}

/// Keepalive probes: the first after `idle_s` without traffic, then every `interval_s`; the
/// connection fails after `count` unanswered ones. `idle_s: 0` turns them off.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeepaliveConfig {
    pub idle_s: u64,
    pub interval_s: u64,
    pub count: u32,
}

impl Default for KeepaliveConfig {
    /// A dead server found within about a minute of silence.
    fn default() -> Self {
        KeepaliveConfig {
            idle_s: 30,
            interval_s: 10,
            count: 3,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTlsMode {
    #[default]
    Disable,
    /// Encrypt without checking the certificate (libpq's sslmode=require).
    Require,
    /// Check the certificate chain against `ca_file` and the host name (RDS).
    VerifyFull,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    #[serde(default)]
    pub mode: ServerTlsMode,
    pub ca_file: Option<PathBuf>,
    /// Name to verify; defaults to `server.host`.
    pub server_name: Option<String>,
}

/// Client-facing TLS.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CA for client certificates; needed by users with `auth: cert`.
    pub client_ca_file: Option<PathBuf>,
    /// Where a client certificate names its tenant.
    #[serde(default)]
    pub client_cert_tenant: CertTenantRule,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CertField {
    /// A subjectAltName URI, e.g. `spiffe://launch/tenant/<ULID>` with that prefix.
    #[default]
    SanUri,
    /// The subject common name.
    Cn,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertTenantRule {
    #[serde(default)]
    pub from: CertField,
    /// Stripped from the URI or CN; the rest must be a ULID.
    #[serde(default)]
    pub prefix: String,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CpuScheduling {
    /// `SCHED_OTHER`: a woken proxy thread may preempt whatever runs on its core.
    Normal,
    /// `SCHED_BATCH`: a woken proxy thread waits for a core to come free or for the running
    /// task's slice to end, and then handles every event that arrived meanwhile. On a host
    /// shared with PostgreSQL or the clients it takes fewer wake-ups per transaction, and
    /// where a core is idle the proxy runs at once as before.
    #[default]
    Batch,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A server connection is held from a transaction's first message to its end.
    Transaction,
    /// A server connection is held for the whole client session.
    Session,
}

/// Pool sizes and timeouts; every default is the seed's number.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    pub mode: PoolMode,
    pub max_client_conn: usize,
    pub default_pool_size: usize,
    pub min_pool_size: usize,
    pub reserve_pool_size: usize,
    pub reserve_pool_timeout_ms: u64,
    /// 0 means no limit, as in PgBouncer.
    pub max_db_connections: usize,
    /// 0 means no limit, as in PgBouncer.
    pub max_user_connections: usize,
    pub acquire_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub connect_retry_interval_ms: u64,
    /// Server logins one pool runs at once. Each is a PostgreSQL backend starting (a fork
    /// and its catalog caches): fifty at once on a small host starve the backends already
    /// serving, so a cold pool under load stalls every client, not only the queued ones.
    pub max_connecting: usize,
    /// Statements running at once on one pool's server connections; a transaction that
    /// would start another waits in the pool's queue (0: no limit). A small database host
    /// serves more with a few running than with a hundred (see pool::gate); a client idle
    /// in its transaction does not count, and a started transaction never waits again.
    pub max_active: usize,
    /// Server connections one tenant's sessions hold at once at most, per pool (0: no
    /// limit): one tenant's long transactions cannot take every connection from the others
    /// (see pool::tenant_cap). Sessions without a tenant are not counted.
    pub max_tenant_connections: usize,
    /// Client sessions one tenant may have at once, across pools (0: no limit): one
    /// tenant's connection leak cannot use up `max_client_conn` for every other tenant.
    /// Logins beyond it get 53300.
    pub max_tenant_clients: usize,
    /// A queued client's first message, a simple Query of one plain statement, goes down a
    /// busy connection right behind the statement running there, so that PostgreSQL starts
    /// it without a round trip through the proxy (see `proxy::relay::pipeline`).
    pub pipeline_queued: bool,
    /// How long a running statement counts against `max_active`: longer ones (reports,
    /// lock waits, I/O) make room for others instead of stalling the pool.
    pub active_stall_ms: u64,
    /// 0 disables closing idle connections.
    pub idle_timeout_ms: u64,
    /// 0 disables retirement by use count.
    pub server_max_uses: u64,
    /// 0 disables retirement by age.
    pub server_lifetime_ms: u64,
    /// Named prepared statements each server connection keeps (least recently used are
    /// closed beyond it).
    pub prepared_statement_cache_size: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            mode: PoolMode::Transaction,
            max_client_conn: 2000,
            default_pool_size: 100,
            min_pool_size: 10,
            reserve_pool_size: 50,
            reserve_pool_timeout_ms: 5000,
            max_db_connections: 100,
            max_user_connections: 100,
            acquire_timeout_ms: 5000,
            connect_timeout_ms: 5000,
            connect_retry_interval_ms: 200,
            max_connecting: 2,
            max_active: 8,
            max_tenant_connections: 0,
            max_tenant_clients: 0,
            pipeline_queued: true,
            active_stall_ms: 20,
            idle_timeout_ms: 60_000,
            server_max_uses: 7200,
            server_lifetime_ms: 7_200_000,
            prepared_statement_cache_size: 256,
        }
    }
}

/// This host's number and its peers, so that a CancelRequest arriving at the wrong pool
/// host reaches the one that issued the key (the number is part of every key).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CancelConfig {
    /// 0..=15, unique per host behind the same address.
    #[serde(default)]
    pub host_id: u8,
    /// `host_id: "address:port"` of the other hosts.
    #[serde(default)]
    pub peers: BTreeMap<u8, String>,
}

/// The admin console: users of the users file listed here log in to `database` and get
/// the console instead of a PostgreSQL session. PgBouncer's name by default, so that
/// runbooks and tools that open it find it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub database: String,
    /// May run every command (PAUSE, RESUME, RELOAD, SHUTDOWN and every SHOW).
    pub users: Vec<String>,
    /// May run SHOW commands only.
    pub stats_users: Vec<String>,
    /// Users with a tenant who may see and end their own tenant's sessions only: SHOW
    /// CLIENTS and SHOW TENANTS of that tenant, KILL_CLIENT of its sessions, KILL_TENANT of
    /// itself.
    pub tenant_users: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            database: "pgbouncer".into(),
            users: Vec::new(),
            stats_users: Vec::new(),
            tenant_users: Vec::new(),
        }
    }
}

/// How tenants are carried to PostgreSQL and checked.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    /// Hex key (32+ bytes) for the HMAC the proxy sets beside `app.tenant_id`; the database
    /// trusts a tenant only with a valid signature. One of the three forms.
    #[serde(skip_serializing)]
    pub signing_key: Option<String>,
    pub signing_key_file: Option<PathBuf>,
    pub signing_key_env: Option<String>,
    /// Refuse tenants whose `tenants.status` is not `active` (looked up through the pool).
    pub check_status: bool,
    /// How long a looked-up status is trusted before it is read again.
    pub status_cache_ms: u64,
    /// Refuse client statements that change or clear the tenant settings (42501). Turning
    /// it off leaves only the database's signature check; meant for measuring the guard's
    /// cost (scripts/bench-compare's `proxy-plain` target), warned about at startup.
    pub statement_guard: bool,
}

impl Default for TenantConfig {
    fn default() -> Self {
        TenantConfig {
            signing_key: None,
            signing_key_file: None,
            signing_key_env: None,
            check_status: true,
            status_cache_ms: 5000,
            statement_guard: true,
        }
    }
}

/// Timeouts per application role (`read` or `write`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// Enforced by the proxy: a query running longer is cancelled on the server. 0 disables.
    pub command_timeout_ms: u64,
    /// Set as `statement_timeout` on the role's server sessions. 0 disables.
    pub statement_timeout_ms: u64,
    /// Set as `idle_in_transaction_session_timeout` on the role's server sessions. 0 disables.
    pub idle_in_transaction_timeout_ms: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RolesConfig {
    #[serde(default = "defaults::read_role")]
    pub read: RoleConfig,
    #[serde(default = "defaults::write_role")]
    pub write: RoleConfig,
}

impl Default for RolesConfig {
    fn default() -> Self {
        RolesConfig {
            read: defaults::read_role(),
            write: defaults::write_role(),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Write,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
        }
    }
}

impl RolesConfig {
    pub fn get(&self, role: Role) -> &RoleConfig {
        match role {
            Role::Read => &self.read,
            Role::Write => &self.write,
        }
    }
}

mod defaults {
    use super::RoleConfig;
    pub fn listen() -> String {
        "0.0.0.0:6432".into()
    }
    pub fn metrics_listen() -> String {
        "127.0.0.1:9127".into()
    }
    pub fn server_port() -> u16 {
        5432
    }
    pub fn tcp_user_timeout_ms() -> u64 {
        30_000
    }
    pub fn yes() -> bool {
        true
    }
    pub fn workers() -> usize {
        1
    }
    pub fn event_coalesce_us() -> u64 {
        250
    }
    pub fn shutdown_timeout_ms() -> u64 {
        30_000
    }
    pub fn client_login_timeout_ms() -> u64 {
        15_000
    }
    pub fn max_client_message_bytes() -> usize {
        64 << 20
    }
    /// Four messages of the largest size at once: about a sixteenth of a pool host's 4 GiB.
    pub fn client_buffer_budget_bytes() -> usize {
        256 << 20
    }
    pub fn read_role() -> RoleConfig {
        RoleConfig {
            command_timeout_ms: 10_000,
            statement_timeout_ms: 30_000,
            idle_in_transaction_timeout_ms: 60_000,
        }
    }
    pub fn write_role() -> RoleConfig {
        RoleConfig {
            command_timeout_ms: 30_000,
            statement_timeout_ms: 60_000,
            idle_in_transaction_timeout_ms: 60_000,
        }
    }
}

/// Milliseconds from config to a `Duration`, with 0 meaning "disabled".
pub fn ms_opt(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// The validated, immutable configuration the proxy runs with.
#[derive(Debug)]
pub struct Settings {
    pub config: Config,
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub instance_listen: Option<SocketAddr>,
    /// Users by name, sorted so that output and pool creation are deterministic.
    pub users: BTreeMap<String, Arc<User>>,
    /// The config file's directory: relative paths in the config are resolved against it.
    pub base_dir: PathBuf,
    /// The config file itself, read again on SIGHUP (`crate::reload`).
    pub source: PathBuf,
    /// The command line's overrides, applied again on SIGHUP: the file alone may not
    /// validate (say, its `metrics_listen` is its `listen`, with `--metrics-listen ""`).
    pub overrides: load::Overrides,
    /// Resolved `tenant.signing_key`.
    pub signing_key: Option<Arc<[u8]>>,
    pub warnings: Vec<Warning>,
}

impl Settings {
    /// Whether sessions with a tenant may run on the pool of server login `name`: a user
    /// of the file with a tenant (or one that takes it from a client certificate) runs
    /// there, or token logins do. Row-level security must then bind its PostgreSQL login
    /// (`tenant::rls_login`).
    pub fn pool_serves_tenants(&self, name: &str) -> bool {
        let file = self
            .users
            .values()
            .any(|u| u.server_user == name && u.has_tenant());
        let tokens = self
            .config
            .jwt
            .as_ref()
            .is_some_and(|j| j.server_users.read == name || j.server_users.write == name);
        file || tokens
    }

    /// The effective settings as YAML, secrets left out, for `--check-config`.
    pub fn describe(&self) -> String {
        #[derive(Serialize)]
        struct UserView<'a> {
            role: Role,
            client_auth: ClientAuth,
            secret: &'static str,
            server_login: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            server_user: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            tenant: Option<String>,
        }
        #[derive(Serialize)]
        struct View<'a> {
            #[serde(flatten)]
            config: &'a Config,
            users: BTreeMap<&'a str, UserView<'a>>,
        }
        let users = self
            .users
            .iter()
            .map(|(name, u)| {
                (
                    name.as_str(),
                    UserView {
                        role: u.role,
                        client_auth: u.auth,
                        secret: u.secret.kind(),
                        server_login: u.server_login.kind(),
                        server_user: (u.server_user != u.name).then_some(u.server_user.as_str()),
                        tenant: u.tenant.as_ref().map(|t| t.to_string()),
                    },
                )
            })
            .collect();
        serde_norway::to_string(&View {
            config: &self.config,
            users,
        })
        .unwrap_or_else(|e| format!("# could not render settings: {e}\n"))
    }
}
