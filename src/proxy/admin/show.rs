//! The tables SHOW answers with, read from the proxy's own state (pools, the cancel
//! registry's clients, the users table, the settings): no server connection is used.

use super::command::{Show, HELP};
use crate::config::{ClientAuth, PoolMode};
use crate::proxy::cancel::CancelTarget;
use crate::proxy::client_info::{tenant_load, ClientState};
use crate::proxy::ProxyContext;
use crate::tenant::TenantId;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// How a column's values are typed in the RowDescription (all are sent as text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
}

pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
}

const fn text(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Text,
    }
}

const fn int(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Int,
    }
}

/// A result set: its columns and rows of text values (`None` is NULL).
pub struct Table {
    pub columns: &'static [Column],
    pub rows: Vec<Vec<Option<String>>>,
}

/// PgBouncer's columns where the meaning is the same (exporters read them by name), then
/// the proxy's own.
const POOLS: &[Column] = &[
    text("database"),
    text("user"),
    int("cl_active"),
    int("cl_waiting"),
    int("sv_active"),
    int("sv_idle"),
    int("sv_login"),
    int("maxwait"),
    int("maxwait_us"),
    text("pool_mode"),
    int("statements_running"),
    int("max_active"),
    text("paused"),
];

const STATS: &[Column] = &[
    text("database"),
    text("user"),
    int("total_xact_count"),
    int("total_query_count"),
    int("total_received"),
    int("total_sent"),
    int("total_wait_time"),
    int("total_tenant_switches"),
    int("total_server_logins"),
    int("total_server_login_failures"),
    int("total_acquire_timeouts"),
];

const CLIENTS: &[Column] = &[
    text("user"),
    text("tenant"),
    text("database"),
    text("pool"),
    text("state"),
    text("addr"),
    int("port"),
    text("tls"),
    text("connect_time"),
    text("application_name"),
    int("pid"),
];

const SERVERS: &[Column] = &[
    text("user"),
    text("database"),
    text("state"),
    text("addr"),
    int("port"),
    text("tls"),
    text("connect_time"),
    int("remote_pid"),
    int("link"),
    text("client_user"),
    text("tenant"),
];

const TENANTS: &[Column] = &[
    text("tenant"),
    int("clients"),
    int("active"),
    int("waiting"),
    int("idle"),
];

const DATABASES: &[Column] = &[
    text("name"),
    text("host"),
    int("port"),
    text("database"),
    text("force_user"),
    int("pool_size"),
    int("min_pool_size"),
    int("reserve_pool"),
    text("pool_mode"),
    int("max_connections"),
    int("current_connections"),
    text("paused"),
];

const USERS: &[Column] = &[
    text("name"),
    text("role"),
    text("pool"),
    text("auth"),
    text("tenant"),
];

const CONFIG: &[Column] = &[text("key"), text("value")];
const LISTS: &[Column] = &[text("list"), int("items")];
const VERSION: &[Column] = &[text("version")];
const HELP_COLUMNS: &[Column] = &[text("command"), text("does")];

/// The table for `what`.
/// The table SHOW `what` answers; `scope`: a tenant's console, which sees that tenant's
/// clients only (and is let run SHOW HELP, VERSION, CLIENTS and TENANTS only).
pub fn table(ctx: &ProxyContext, what: Show, scope: Option<&TenantId>) -> Table {
    match what {
        Show::Help => Table {
            columns: HELP_COLUMNS,
            rows: HELP
                .iter()
                .map(|(c, d)| vec![Some(c.to_string()), Some(d.to_string())])
                .collect(),
        },
        Show::Version => Table {
            columns: VERSION,
            rows: vec![vec![Some(version())]],
        },
        Show::Pools => pools(ctx),
        Show::Stats => stats(ctx),
        Show::Clients => clients(ctx, scope),
        Show::Servers => servers(ctx),
        Show::Tenants => tenants(ctx, scope),
        Show::Databases => databases(ctx),
        Show::Users => users(ctx),
        Show::Config => config(ctx),
        Show::Lists => lists(ctx),
    }
}

pub fn version() -> String {
    format!("launch-proxy {}", env!("CARGO_PKG_VERSION"))
}

fn n(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

fn pool_mode(ctx: &ProxyContext) -> &'static str {
    match ctx.settings.config.pool.mode {
        PoolMode::Transaction => "transaction",
        PoolMode::Session => "session",
    }
}

fn yes_no(b: bool) -> Option<String> {
    n(if b { "yes" } else { "no" })
}

/// Logged-in clients of each pool: (waiting for a connection, the others).
fn clients_by_pool(ctx: &ProxyContext) -> HashMap<String, (u64, u64)> {
    let mut by_pool: HashMap<String, (u64, u64)> = HashMap::new();
    for c in ctx.cancels.clients() {
        let Some(pool) = c.pool() else { continue };
        let e = by_pool.entry(pool.name.to_string()).or_default();
        match c.state() {
            ClientState::Waiting => e.0 += 1,
            ClientState::Idle | ClientState::Active => e.1 += 1,
        }
    }
    by_pool
}

fn pools(ctx: &ProxyContext) -> Table {
    let clients = clients_by_pool(ctx);
    let database = &ctx.settings.config.server.database;
    let rows = ctx
        .pools
        .iter()
        .map(|p| {
            let s = p.snapshot();
            let (waiting, active) = clients.get(&*p.name).copied().unwrap_or_default();
            vec![
                n(database),
                n(&p.name),
                n(active),
                n(waiting),
                n(s.in_use()),
                n(s.idle),
                n(s.opening),
                n(s.oldest_wait.as_secs()),
                n(s.oldest_wait.subsec_micros()),
                n(pool_mode(ctx)),
                n(s.running),
                n(p.limits.max_active),
                yes_no(s.paused),
            ]
        })
        .collect();
    Table {
        columns: POOLS,
        rows,
    }
}

fn stats(ctx: &ProxyContext) -> Table {
    use std::sync::atomic::Ordering::Relaxed;
    let database = &ctx.settings.config.server.database;
    let rows = ctx
        .pools
        .iter()
        .map(|p| {
            let s = &p.stats;
            let wait_us = (s.wait.snapshot().sum_s * 1e6) as u64;
            vec![
                n(database),
                n(&p.name),
                n(s.transactions.load(Relaxed)),
                n(s.queries.load(Relaxed)),
                n(s.bytes_from_clients.load(Relaxed)),
                n(s.bytes_from_server.load(Relaxed)),
                n(wait_us),
                n(s.tenant_switches.load(Relaxed)),
                n(s.connects_ok.load(Relaxed)),
                n(s.connects_failed.load(Relaxed)),
                n(s.acquire_timeouts.load(Relaxed)),
            ]
        })
        .collect();
    Table {
        columns: STATS,
        rows,
    }
}

/// The logged-in clients, of the tenant `scope` only if given.
fn clients_in(ctx: &ProxyContext, scope: Option<&TenantId>) -> Vec<Arc<CancelTarget>> {
    let mut clients = ctx.cancels.clients();
    if let Some(t) = scope {
        clients.retain(|c| c.client.user.tenant.as_ref() == Some(t));
    }
    clients
}

fn clients(ctx: &ProxyContext, scope: Option<&TenantId>) -> Table {
    let mut clients = clients_in(ctx, scope);
    clients.sort_by_key(|c| c.pid);
    let database = &ctx.settings.config.server.database;
    let rows = clients
        .iter()
        .map(|c| {
            let info = &c.client;
            vec![
                n(&info.user.name),
                info.user.tenant.as_ref().map(|t| t.to_string()),
                n(database),
                c.pool().map(|p| p.name.to_string()),
                n(c.state().as_str()),
                info.peer.map(|a| a.ip().to_string()),
                info.peer.map(|a| a.port().to_string()),
                yes_no(info.tls),
                n(utc(info.connected_at)),
                info.application_name.as_deref().map(str::to_owned),
                n(c.pid),
            ]
        })
        .collect();
    Table {
        columns: CLIENTS,
        rows,
    }
}

/// Each open server connection: idle in its pool, or lent to a transaction, with the
/// client whose statement runs on it (none while the proxy's own statements run, or between
/// a client's statements in session mode).
fn servers(ctx: &ProxyContext) -> Table {
    let on_server: HashMap<u32, _> = ctx
        .cancels
        .clients()
        .into_iter()
        .filter_map(|c| Some((c.server_pid()?, c)))
        .collect();
    let cfg = &ctx.settings.config;
    let mut rows = Vec::new();
    for p in ctx.pools.iter() {
        let idle = p.idle_ids();
        for s in p.servers.all() {
            let client = on_server.get(&s.backend_pid);
            let state = if idle.contains(&s.id) {
                "idle"
            } else {
                "active"
            };
            rows.push(vec![
                n(&p.name),
                n(&cfg.server.database),
                n(state),
                n(&cfg.server.host),
                n(cfg.server.port),
                yes_no(s.tls),
                n(utc(s.connected_at)),
                n(s.backend_pid),
                client.map(|c| c.pid.to_string()),
                client.map(|c| c.client.user.name.clone()),
                client.and_then(|c| c.client.user.tenant.as_ref().map(|t| t.to_string())),
            ]);
        }
    }
    Table {
        columns: SERVERS,
        rows,
    }
}

/// Each tenant's logged-in clients by state, busiest first: which tenant holds the server
/// connections, and which one's statements queue (tenant-less logins under NULL).
fn tenants(ctx: &ProxyContext, scope: Option<&TenantId>) -> Table {
    let rows = tenant_load(&clients_in(ctx, scope))
        .into_iter()
        .map(|t| {
            vec![
                t.tenant.map(|t| t.to_string()),
                n(t.clients()),
                n(t.active),
                n(t.waiting),
                n(t.idle),
            ]
        })
        .collect();
    Table {
        columns: TENANTS,
        rows,
    }
}

fn databases(ctx: &ProxyContext) -> Table {
    let cfg = &ctx.settings.config;
    let rows = ctx
        .pools
        .iter()
        .map(|p| {
            let s = p.snapshot();
            vec![
                n(&cfg.server.database),
                n(&cfg.server.host),
                n(cfg.server.port),
                n(&cfg.server.database),
                n(&p.name),
                n(p.limits.normal_cap),
                n(p.limits.min),
                n(p.limits.reserve_cap - p.limits.normal_cap),
                n(pool_mode(ctx)),
                n(cfg.pool.max_db_connections),
                n(s.total),
                yes_no(s.paused),
            ]
        })
        .collect();
    Table {
        columns: DATABASES,
        rows,
    }
}

fn users(ctx: &ProxyContext) -> Table {
    let rows = ctx
        .users
        .all()
        .iter()
        .map(|u| {
            let auth = match u.auth {
                ClientAuth::ScramSha256 => "scram-sha-256",
                ClientAuth::Md5 => "md5",
                ClientAuth::Cert => "cert",
            };
            vec![
                n(&u.name),
                n(u.role.as_str()),
                n(&u.server_user),
                n(auth),
                u.tenant.as_ref().map(|t| t.to_string()),
            ]
        })
        .collect();
    Table {
        columns: USERS,
        rows,
    }
}

/// The configuration as `section.key = value` rows. Its serialized form leaves the
/// secrets out (as `--check-config` prints it).
fn config(ctx: &ProxyContext) -> Table {
    let mut rows = Vec::new();
    match serde_json::to_value(&ctx.settings.config) {
        Ok(v) => flatten("", &v, &mut rows),
        Err(e) => rows.push(vec![n("error"), n(e)]),
    }
    Table {
        columns: CONFIG,
        rows,
    }
}

fn flatten(prefix: &str, v: &serde_json::Value, rows: &mut Vec<Vec<Option<String>>>) {
    use serde_json::Value;
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(map) => map.iter().for_each(|(k, v)| flatten(&key(k), v, rows)),
        Value::Null => rows.push(vec![n(prefix), None]),
        Value::String(s) => rows.push(vec![n(prefix), n(s)]),
        other => rows.push(vec![n(prefix), n(other)]),
    }
}

fn lists(ctx: &ProxyContext) -> Table {
    use std::sync::atomic::Ordering::Relaxed;
    let clients = ctx.cancels.clients();
    let count = |state: ClientState| clients.iter().filter(|c| c.state() == state).count();
    let (mut servers, mut used, mut idle, mut login) = (0, 0, 0, 0);
    for p in ctx.pools.iter() {
        let s = p.snapshot();
        servers += s.total;
        used += s.in_use();
        idle += s.idle;
        login += s.opening;
    }
    let items: [(&str, usize); 11] = [
        ("databases", 1),
        ("users", ctx.users.all().len()),
        ("pools", ctx.pools.iter().count()),
        (
            "client_connections",
            ctx.clients.connected.load(Relaxed) as usize,
        ),
        ("logged_in_clients", clients.len()),
        ("active_clients", count(ClientState::Active)),
        ("waiting_clients", count(ClientState::Waiting)),
        ("servers", servers),
        ("used_servers", used),
        ("idle_servers", idle),
        ("login_servers", login),
    ];
    Table {
        columns: LISTS,
        rows: items.iter().map(|(name, v)| vec![n(name), n(v)]).collect(),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC`, as PgBouncer prints times.
pub fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn prints_utc_times() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(utc(t), "2024-02-29 12:34:56 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(utc(t), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn flattens_nested_settings_into_dotted_keys() {
        let v = serde_json::json!({"pool": {"max_active": 8, "mode": "transaction"}, "tls": null});
        let mut rows = Vec::new();
        flatten("", &v, &mut rows);
        let rows: Vec<(String, Option<String>)> = rows
            .into_iter()
            .map(|r| (r[0].clone().unwrap(), r[1].clone()))
            .collect();
        assert!(rows.contains(&("pool.max_active".into(), Some("8".into()))));
        assert!(rows.contains(&("pool.mode".into(), Some("transaction".into()))));
        assert!(rows.contains(&("tls".into(), None)));
    }
}
