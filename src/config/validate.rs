//! Validation: impossible settings are errors; legal but self-defeating ones are warnings
//! that say what the proxy will actually do.

use super::load::LoadError;
use super::{Config, PoolMode, Settings, User};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// A legal setting that will not do what its numbers suggest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub String);

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The largest `statement_timeout` / `idle_in_transaction_session_timeout` PostgreSQL
/// takes, in milliseconds (`INT_MAX`).
const PG_MAX_TIMEOUT_MS: u64 = i32::MAX as u64;

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, LoadError> {
    value
        .parse()
        .map_err(|e| LoadError::Invalid(format!("{key}: \"{value}\" is not an address:port ({e})")))
}

/// An address that may be left empty (`None`: not listened on).
fn parse_optional_addr(key: &str, value: &str) -> Result<Option<SocketAddr>, LoadError> {
    if value.is_empty() {
        return Ok(None);
    }
    parse_addr(key, value).map(Some)
}

pub(super) fn validate(
    config: Config,
    users: BTreeMap<String, Arc<User>>,
    signing_key: Option<Vec<u8>>,
) -> Result<Settings, LoadError> {
    let bad = |m: String| Err(LoadError::Invalid(m));
    let listen = parse_addr("listen", &config.listen)?;
    let metrics_listen = parse_optional_addr("metrics_listen", &config.metrics_listen)?;
    if metrics_listen == Some(listen) {
        return bad("metrics_listen must differ from listen".into());
    }
    let instance_listen = parse_optional_addr("instance_listen", &config.instance_listen)?;
    if let Some(own) = instance_listen {
        if own == listen || Some(own) == metrics_listen {
            return bad("instance_listen must differ from listen and metrics_listen".into());
        }
    }
    let p = &config.pool;
    if config.server.host.is_empty() || config.server.database.is_empty() {
        return bad("server.host and server.database must not be empty".into());
    }
    if config.admin.database.is_empty() || config.admin.database == config.server.database {
        return bad(format!(
            "admin.database ({:?}) must be a name of its own, not server.database",
            config.admin.database
        ));
    }
    if config.workers == 0 || config.workers > 64 {
        return bad(format!(
            "workers: {} is out of range 1..=64",
            config.workers
        ));
    }
    if config.event_coalesce_us > 10_000 {
        return bad(format!(
            "event_coalesce_us: {} is above 10000 (10 ms): every busy wake-up would wait that long",
            config.event_coalesce_us
        ));
    }
    if p.max_client_conn == 0 {
        return bad("pool.max_client_conn must be at least 1".into());
    }
    if p.default_pool_size == 0 {
        return bad("pool.default_pool_size must be at least 1".into());
    }
    if p.max_connecting == 0 {
        return bad("pool.max_connecting must be at least 1".into());
    }
    if p.max_active > 0 && p.active_stall_ms == 0 {
        return bad("pool.active_stall_ms must be at least 1 when pool.max_active is set".into());
    }
    if p.min_pool_size > p.default_pool_size {
        return bad(format!(
            "pool.min_pool_size ({}) cannot exceed pool.default_pool_size ({})",
            p.min_pool_size, p.default_pool_size
        ));
    }
    for (key, v) in [
        ("acquire_timeout_ms", p.acquire_timeout_ms),
        ("connect_timeout_ms", p.connect_timeout_ms),
        ("connect_retry_interval_ms", p.connect_retry_interval_ms),
    ] {
        if v == 0 {
            return bad(format!("pool.{key} must be greater than 0"));
        }
    }
    // Sent in every server StartupMessage: PostgreSQL refuses a larger value, and with it
    // every login of the role's pools (clients would only ever see 57P03).
    for role in [super::Role::Read, super::Role::Write] {
        let r = config.roles.get(role);
        for (key, v) in [
            ("statement_timeout_ms", r.statement_timeout_ms),
            (
                "idle_in_transaction_timeout_ms",
                r.idle_in_transaction_timeout_ms,
            ),
        ] {
            if v > PG_MAX_TIMEOUT_MS {
                return bad(format!(
                    "roles.{}.{key}: {v} is above {PG_MAX_TIMEOUT_MS}, the most PostgreSQL accepts \
                     (0 disables the timeout)",
                    role.as_str()
                ));
            }
        }
    }
    // Linux's limits for TCP_KEEPIDLE / TCP_KEEPINTVL (seconds), TCP_KEEPCNT, and
    // TCP_USER_TIMEOUT (milliseconds, an int): setsockopt refuses more, and so every login.
    let k = &config.server.keepalive;
    if k.idle_s > 32_767 || k.interval_s > 32_767 || k.count > 127 {
        return bad(format!(
            "server.keepalive: idle_s and interval_s must be at most 32767 and count at most 127 (got {}, {}, {})",
            k.idle_s, k.interval_s, k.count
        ));
    }
    if config.server.tcp_user_timeout_ms > PG_MAX_TIMEOUT_MS {
        return bad(format!(
            "server.tcp_user_timeout_ms: {} is above {PG_MAX_TIMEOUT_MS}",
            config.server.tcp_user_timeout_ms
        ));
    }
    if config.client_login_timeout_ms == 0 || config.shutdown_timeout_ms == 0 {
        return bad(
            "client_login_timeout_ms and shutdown_timeout_ms must be greater than 0".into(),
        );
    }
    if config.max_client_message_bytes < 8192 {
        return bad("max_client_message_bytes must be at least 8192".into());
    }
    if config.client_buffer_budget_bytes < config.max_client_message_bytes {
        return bad(
            "client_buffer_budget_bytes must be at least max_client_message_bytes (else a message of that size could never be read)".into(),
        );
    }
    if config.cancel.host_id > 15 || config.cancel.peers.keys().any(|h| *h > 15) {
        return bad("cancel.host_id and the keys of cancel.peers must be 0..=15".into());
    }
    if config.pool.prepared_statement_cache_size == 0 {
        return bad("pool.prepared_statement_cache_size must be at least 1".into());
    }
    if users.is_empty() {
        return bad("the users file lists no users: nobody could connect".into());
    }
    if users.contains_key("") {
        return bad("a user name must not be empty".into());
    }

    for u in users.values() {
        if u.server_user == u.name {
            continue;
        }
        let Some(target) = users.get(&u.server_user) else {
            return bad(format!(
                "user \"{}\": server_user \"{}\" is not in the users file",
                u.name, u.server_user
            ));
        };
        if target.server_user != target.name {
            return bad(format!(
                "user \"{}\": server_user \"{}\" itself has a server_user; name the login directly",
                u.name, u.server_user
            ));
        }
        if target.role != u.role {
            return bad(format!(
                "user \"{}\" has role {} but its server_user \"{}\" has role {}: the pool's timeouts would not match",
                u.name,
                u.role.as_str(),
                target.name,
                target.role.as_str()
            ));
        }
    }
    if let Some(jwt) = &config.jwt {
        for (role, name) in [
            (super::Role::Read, &jwt.server_users.read),
            (super::Role::Write, &jwt.server_users.write),
        ] {
            match users.get(name) {
                Some(u) if u.server_user == u.name && u.role == role => {}
                Some(_) => {
                    return bad(format!(
                        "jwt.server_users.{}: \"{name}\" must be a {} user with its own PostgreSQL login (no server_user)",
                        role.as_str(),
                        role.as_str()
                    ))
                }
                None => {
                    return bad(format!(
                        "jwt.server_users.{}: \"{name}\" is not in the users file",
                        role.as_str()
                    ))
                }
            }
        }
        if let Some(r) = &jwt.default_role {
            if r != "read" && r != "write" {
                return bad(format!(
                    "jwt.default_role: \"{r}\" is neither read nor write"
                ));
            }
        }
        if signing_key.is_none() {
            return bad("jwt needs tenant.signing_key: tokens carry tenants, and the database only trusts a signed tenant".into());
        }
    }
    let cert_users = users.values().any(|u| u.auth == super::ClientAuth::Cert);
    if cert_users
        && config
            .tls
            .as_ref()
            .is_none_or(|t| t.client_ca_file.is_none())
    {
        return bad(
            "users with auth: cert need tls with client_ca_file: the proxy must verify the certificates that name their tenants"
                .into(),
        );
    }
    if signing_key.is_none() && cert_users {
        return bad(
            "users with auth: cert need tenant.signing_key (or signing_key_file / signing_key_env): \
             their certificates name tenants, and the database only trusts a signed tenant"
                .into(),
        );
    }
    if signing_key.is_none() && users.values().any(|u| u.tenant.is_some()) {
        return bad(
            "users with a tenant need tenant.signing_key (or signing_key_file / signing_key_env): \
             the database only trusts a signed tenant"
                .into(),
        );
    }
    let mut warnings = Vec::new();
    let mut warn = |s: String| warnings.push(Warning(s));
    for name in config.admin.users.iter().chain(&config.admin.stats_users) {
        if users.get(name).is_some_and(|u| u.tenant.is_some()) {
            return bad(format!(
                "admin user \"{name}\" has a tenant: the console shows every tenant's clients, \
                 so it is for tenant-less operator logins only"
            ));
        }
        if !users.contains_key(name) {
            warn(format!(
                "admin user \"{name}\" is not in the users file: it cannot log in to the admin console until a reload adds it"
            ));
        }
    }
    for name in &config.admin.tenant_users {
        match users.get(name) {
            Some(u) if !u.has_tenant() => {
                return bad(format!(
                    "admin tenant user \"{name}\" has no tenant: admin.tenant_users get a console \
                     limited to their own tenant's sessions (operators go in admin.users)"
                ))
            }
            Some(_) => {}
            None => warn(format!(
                "admin tenant user \"{name}\" is not in the users file: it cannot log in to the admin console until a reload adds it"
            )),
        }
    }
    if config.so_reuseport && (instance_listen.is_none() || config.cancel.peers.is_empty()) {
        warn(
            "so_reuseport without instance_listen and cancel.peers: a cancel request that reaches \
             another process on the port than the one its client is on is not forwarded. Give each \
             process its own cancel.host_id (--host-id) and instance_listen (--instance-listen), \
             and list every process's instance_listen in cancel.peers"
                .into(),
        );
    }
    let caps = [
        ("max_db_connections", p.max_db_connections),
        ("max_user_connections", p.max_user_connections),
    ];
    for (key, cap) in caps {
        if cap > 0 && p.min_pool_size > cap {
            return bad(format!(
                "pool.min_pool_size ({}) cannot exceed pool.{key} ({cap})",
                p.min_pool_size
            ));
        }
        if cap > 0 && p.reserve_pool_size > 0 && p.default_pool_size + p.reserve_pool_size > cap {
            let usable = cap.saturating_sub(p.default_pool_size);
            warn(format!(
                "reserve pool partly or wholly unusable: default_pool_size ({}) + reserve_pool_size ({}) \
                 exceeds {key} ({cap}). launch-proxy never opens more than {key} server connections, \
                 so a pool can add at most {usable} reserve connection(s) beyond default_pool_size; \
                 clients that find the pool full wait for a released connection up to acquire_timeout_ms \
                 and then get SQLSTATE 53300. Lower default_pool_size or raise {key} to make the reserve usable.",
                p.default_pool_size, p.reserve_pool_size
            ));
        }
    }
    if p.reserve_pool_size > 0 && p.reserve_pool_timeout_ms >= p.acquire_timeout_ms {
        warn(format!(
            "reserve_pool_timeout_ms ({}) is not shorter than acquire_timeout_ms ({}): a waiting client \
             gives up before the reserve pool may open for it, so the reserve only helps clients that \
             arrive later. Make reserve_pool_timeout_ms shorter than acquire_timeout_ms.",
            p.reserve_pool_timeout_ms, p.acquire_timeout_ms
        ));
    }
    let pools = users.values().filter(|u| u.server_user == u.name).count();
    if p.max_db_connections > 0 && pools * p.min_pool_size > p.max_db_connections {
        warn(format!(
            "{pools} pools x min_pool_size {} = {} warm connections exceeds max_db_connections ({}): \
             pools are warmed in user order until the cap is reached",
            p.min_pool_size,
            pools * p.min_pool_size,
            p.max_db_connections
        ));
    }
    for role in [super::Role::Read, super::Role::Write] {
        let r = config.roles.get(role);
        if r.command_timeout_ms > 0
            && r.statement_timeout_ms > 0
            && r.statement_timeout_ms >= r.command_timeout_ms
        {
            warn(format!(
                "roles.{}: statement_timeout_ms ({}) is not shorter than command_timeout_ms ({}): the proxy \
                 cancels a command first, so the server's statement_timeout never fires for it",
                role.as_str(),
                r.statement_timeout_ms,
                r.command_timeout_ms
            ));
        }
    }
    if config.pool.mode == PoolMode::Session && p.max_client_conn > p.default_pool_size * pools {
        warn(format!(
            "pool.mode is session: each client holds a server connection for its whole session, so at \
             most {} of max_client_conn ({}) clients can run at once",
            p.default_pool_size * pools,
            p.max_client_conn
        ));
    }
    if p.max_active > 0 && p.max_active >= p.default_pool_size {
        warn(format!(
            "pool.max_active ({}) is not below default_pool_size ({}): it never holds a statement \
             back; 0 says the same plainly",
            p.max_active, p.default_pool_size
        ));
    }
    let pool_max = p.default_pool_size + p.reserve_pool_size;
    if p.max_tenant_connections > 0 && p.max_tenant_connections >= pool_max {
        warn(format!(
            "pool.max_tenant_connections ({}) is not below default_pool_size + reserve_pool_size ({}): \
             one tenant can still take every server connection; 0 says the same plainly",
            p.max_tenant_connections, pool_max
        ));
    }
    if p.max_tenant_clients > 0 && p.max_tenant_clients >= p.max_client_conn {
        warn(format!(
            "pool.max_tenant_clients ({}) is not below max_client_conn ({}): one tenant can still \
             take every client slot; 0 says the same plainly",
            p.max_tenant_clients, p.max_client_conn
        ));
    }
    if !config.tenant.statement_guard {
        warn(
            "tenant.statement_guard is off: clients may SET, RESET or set_config the tenant settings; \
             only the database's signature check still isolates tenants"
                .to_owned(),
        );
    }
    if let Some(limit) = open_files_limit() {
        let need = (p.max_client_conn + p.max_db_connections.max(p.default_pool_size) + 64) as u64;
        if limit < need {
            warn(format!(
                "the open-files limit ({limit}) is below what max_client_conn needs (~{need}); raise it \
                 (the systemd unit sets LimitNOFILE=65536)"
            ));
        }
    }
    Ok(Settings {
        config,
        listen,
        metrics_listen,
        instance_listen,
        users,
        base_dir: std::path::PathBuf::new(),
        source: std::path::PathBuf::new(),
        overrides: Default::default(),
        signing_key: signing_key.map(Arc::from),
        warnings,
    })
}

/// The soft RLIMIT_NOFILE of this process, read from /proc so that no FFI is needed.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
