//! The admin console. Users named in `admin.users` or `admin.stats_users` log in to
//! `admin.database` (PgBouncer's `pgbouncer` by default) and run PgBouncer's commands as
//! simple queries: SHOW POOLS, STATS, CLIENTS, DATABASES, USERS, CONFIG, LISTS, VERSION
//! and HELP, and (`admin.users` only) PAUSE, RESUME, RELOAD, RECONNECT, SHUTDOWN and the
//! kills. The answers come from the proxy's own state: the console holds no server
//! connection. `admin.tenant_users` get a console scoped to their own tenant: its clients,
//! and the kills of its own sessions, nothing of other tenants nor of the pools.

mod command;
mod show;

use super::{ClientConn, ProxyContext};
use crate::config::{AdminConfig, User};
use crate::error::{ClientError, ErrorKind};
use crate::protocol::{codes, encode};
use crate::tenant::TenantId;
use bytes::BytesMut;
use command::Command;
use std::sync::Arc;
use std::time::Duration;

/// Commands are short; anything longer is not one.
const MAX_ADMIN_MESSAGE: usize = 64 * 1024;

/// How often PAUSE looks whether the pools' server connections have closed.
const PAUSE_POLL: Duration = Duration::from_millis(20);

/// What an admin login may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Every command.
    Admin,
    /// SHOW only.
    Stats,
    /// Its own tenant's sessions only: SHOW HELP, VERSION, CLIENTS and TENANTS of that
    /// tenant, KILL_CLIENT of its sessions, KILL_TENANT of itself.
    Tenant(TenantId),
}

/// A client logged in to the admin console.
pub struct AdminLogin {
    pub user: Arc<User>,
    pub access: Access,
}

impl AdminLogin {
    /// The tenant a tenant's console is limited to.
    fn scope(&self) -> Option<&TenantId> {
        match &self.access {
            Access::Tenant(t) => Some(t),
            _ => None,
        }
    }
}

/// What `user` may do on the console. Only users of the users file are considered (a
/// token login cannot name itself an operator); of them, operators must be tenant-less (a
/// tenant's login must not see the other tenants, also after a reload gave a listed user a
/// tenant) and `admin.tenant_users` must have a tenant, which scopes their console. A user
/// in no list is refused as PostgreSQL refuses a database without CONNECT privilege.
pub fn access(
    cfg: &AdminConfig,
    user: &User,
    from_users_file: bool,
) -> Result<Access, ClientError> {
    let operator = from_users_file && user.tenant.is_none();
    let listed = |names: &[String]| operator && names.contains(&user.name);
    let tenant = user.tenant.filter(|_| from_users_file);
    if listed(&cfg.users) {
        Ok(Access::Admin)
    } else if listed(&cfg.stats_users) {
        Ok(Access::Stats)
    } else if let Some(t) = tenant.filter(|_| cfg.tenant_users.contains(&user.name)) {
        Ok(Access::Tenant(t))
    } else {
        Err(ClientError::fatal(
            ErrorKind::Auth,
            codes::INSUFFICIENT_PRIVILEGE,
            format!("permission denied for database \"{}\"", cfg.database),
        )
        .with_detail(format!(
            "user \"{}\" is neither a tenant-less user in admin.users or admin.stats_users nor a tenant's user in admin.tenant_users",
            user.name
        )))
    }
}

/// The end of a console login: AuthenticationOk, the parameters clients read, and
/// ReadyForQuery. The server version says what answers (as PgBouncer's console does).
pub fn greet(out: &mut BytesMut) {
    encode::authentication_ok(out);
    let version = format!("{}/launch-proxy", env!("CARGO_PKG_VERSION"));
    for (k, v) in [
        ("server_version", version.as_str()),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("is_superuser", "off"),
    ] {
        encode::parameter_status(out, k.as_bytes(), v.as_bytes());
    }
    encode::ready_for_query(out, b'I');
}

/// Serves the console until the client leaves, the proxy shuts down, or the client breaks
/// the protocol (the error that ends the session is returned).
pub async fn serve(
    client: &mut ClientConn,
    ctx: &Arc<ProxyContext>,
    login: &AdminLogin,
) -> Option<ClientError> {
    // After an error in an extended-protocol batch, messages are skipped until its Sync.
    let mut skipping = false;
    let mut out = BytesMut::with_capacity(1024);
    loop {
        let read = next_message(client);
        let (tag, body) = tokio::select! {
            m = read => match m {
                Ok(Some(m)) => m,
                Ok(None) => return None,
                Err(e) => return Some(e),
            },
            () = ctx.shutdown.triggered() => return Some(ClientError::shutting_down()),
        };
        out.clear();
        match tag {
            b'Q' => {
                run_query(ctx, login, &body, &mut out).await;
                encode::ready_for_query(&mut out, b'I');
            }
            b'F' => {
                simple_only().encode(&mut out);
                encode::ready_for_query(&mut out, b'I');
            }
            b'P' | b'B' | b'D' | b'E' | b'C' | b'H' => {
                if !std::mem::replace(&mut skipping, true) {
                    simple_only().encode(&mut out);
                }
            }
            b'S' => {
                skipping = false;
                encode::ready_for_query(&mut out, b'I');
            }
            // CopyData, CopyDone and CopyFail outside a COPY: PostgreSQL ignores them too.
            b'd' | b'c' | b'f' => {}
            b'X' => return None,
            other => {
                return Some(ClientError::protocol(format!(
                    "invalid frontend message type {}",
                    other as char
                )))
            }
        }
        if !out.is_empty() && client.write(&out).await.is_err() {
            return None;
        }
    }
}

/// The next message, or `None` when the client closed between messages.
async fn next_message(client: &mut ClientConn) -> Result<Option<(u8, BytesMut)>, ClientError> {
    if client.buf.is_empty() && matches!(client.read_more().await, Ok(0) | Err(_)) {
        return Ok(None);
    }
    client
        .read_message_while(MAX_ADMIN_MESSAGE, "on the admin console")
        .await
        .map(Some)
}

fn simple_only() -> ClientError {
    ClientError::error(
        ErrorKind::Protocol,
        codes::FEATURE_NOT_SUPPORTED,
        "the admin console takes simple queries only",
    )
    .with_hint("psql, or a driver's simple-query call (tokio-postgres simple_query, psycopg with prepare_threshold=None)")
}

/// Runs each `;`-separated statement of a Query in turn, stopping at the first error.
async fn run_query(ctx: &Arc<ProxyContext>, login: &AdminLogin, body: &[u8], out: &mut BytesMut) {
    let sql = body.strip_suffix(&[0]).unwrap_or(body);
    let Ok(sql) = std::str::from_utf8(sql) else {
        ClientError::error(
            ErrorKind::Protocol,
            codes::PROTOCOL_VIOLATION,
            "the command is not valid UTF-8",
        )
        .encode(out);
        return;
    };
    let statements: Vec<&str> = sql
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if statements.is_empty() {
        encode::empty_query_response(out);
    }
    for statement in statements {
        let denied = |c: &Command, why: &str| {
            Err(ClientError::error(
                ErrorKind::Auth,
                codes::INSUFFICIENT_PRIVILEGE,
                format!("permission denied: {} {why}", c.tag()),
            ))
        };
        let done = match command::parse(statement) {
            Ok(c) if login.access == Access::Stats && !c.only_reads() => {
                denied(&c, "needs admin.users")
            }
            Ok(c) if matches!(login.access, Access::Tenant(t) if !c.open_to_tenant(&t)) => denied(
                &c,
                "is for operators: a tenant's console sees and ends its own tenant's sessions only",
            ),
            Ok(c) => run(ctx, login, &c, out).await.map(|()| c.tag()),
            Err(e) => Err(e),
        };
        match done {
            Ok(tag) => encode::command_complete(out, tag),
            Err(e) => {
                e.encode(out);
                return;
            }
        }
    }
}

async fn run(
    ctx: &Arc<ProxyContext>,
    login: &AdminLogin,
    command: &Command,
    out: &mut BytesMut,
) -> Result<(), ClientError> {
    let who = &login.user.name;
    match command {
        Command::Show(what) => {
            write_table(&show::table(ctx, *what, login.scope()), out);
            Ok(())
        }
        Command::Pause(name) => {
            let pools = pools_named(ctx, name.as_deref())?;
            tracing::info!(user = %who, pools = pools.len(), "admin console: PAUSE");
            pools.iter().for_each(|p| p.pause_pool());
            let still_open = wait_until_closed(ctx, &pools).await;
            if still_open > 0 {
                notice(
                    out,
                    &format!(
                        "{still_open} server connection(s) still in use after shutdown_timeout_ms; the pool stays paused"
                    ),
                );
            }
            Ok(())
        }
        Command::Resume(name) => {
            let pools = pools_named(ctx, name.as_deref())?;
            tracing::info!(user = %who, pools = pools.len(), "admin console: RESUME");
            pools.iter().for_each(|p| p.resume_pool());
            Ok(())
        }
        Command::Reload => {
            tracing::info!(user = %who, "admin console: RELOAD");
            crate::reload::reload_users(ctx)
                .await
                .map(|_| ())
                .map_err(|e| {
                    ClientError::error(ErrorKind::Internal, codes::CONFIG_FILE_ERROR, e)
                        .with_detail("the users loaded before stay")
                })
        }
        Command::Shutdown => {
            tracing::info!(user = %who, "admin console: SHUTDOWN");
            ctx.shutdown.trigger();
            Ok(())
        }
        Command::Reconnect(name) => {
            let pools = pools_named(ctx, name.as_deref())?;
            let (closed, in_use) = pools
                .iter()
                .map(|p| p.reconnect())
                .fold((0, 0), |(c, u), (c2, u2)| (c + c2, u + u2));
            tracing::info!(user = %who, pools = pools.len(), closed, in_use, "admin console: RECONNECT");
            let text = format!(
                "{closed} idle server connection(s) closed; {in_use} in use close when their transaction ends"
            );
            encode::error_response(out, encode::Severity::Notice, "00000", &text, None, None);
            Ok(())
        }
        Command::KillClient(pid) => {
            // A tenant's console finds its own tenant's sessions only: another tenant's pid
            // is answered as one that does not exist.
            let visible = |c: &Arc<super::cancel::CancelTarget>| {
                login
                    .scope()
                    .is_none_or(|t| c.client.user.tenant.as_ref() == Some(t))
            };
            let target = ctx.cancels.client(*pid).filter(visible).ok_or_else(|| {
                ClientError::error(
                    ErrorKind::Protocol,
                    codes::UNDEFINED_OBJECT,
                    format!("no client with pid {pid}"),
                )
                .with_hint("SHOW CLIENTS lists the clients and their pids")
            })?;
            let user = &target.client.user;
            tracing::info!(user = %who, pid, client = %user.name, tenant = ?user.tenant, "admin console: KILL_CLIENT");
            target.kill();
            Ok(())
        }
        Command::KillTenant(tenant) => {
            let ended = ctx
                .cancels
                .clients()
                .into_iter()
                .filter(|c| c.client.user.tenant.as_ref() == Some(tenant))
                .inspect(|c| c.kill())
                .count();
            tracing::info!(user = %who, %tenant, sessions = ended, "admin console: KILL_TENANT");
            let text = format!("{ended} session(s) of tenant {tenant} ended");
            encode::error_response(out, encode::Severity::Notice, "00000", &text, None, None);
            Ok(())
        }
    }
}

/// The pools a PAUSE, RESUME or RECONNECT names: all of them without a name or with the database's,
/// else the one whose server login it is.
fn pools_named(
    ctx: &ProxyContext,
    name: Option<&str>,
) -> Result<Vec<Arc<crate::pool::Pool>>, ClientError> {
    match name {
        None => Ok(ctx.pools.iter().cloned().collect()),
        Some(n) if n == ctx.settings.config.server.database => {
            Ok(ctx.pools.iter().cloned().collect())
        }
        Some(n) => ctx.pools.get(n).map(|p| vec![p.clone()]).ok_or_else(|| {
            ClientError::error(
                ErrorKind::Protocol,
                codes::INVALID_CATALOG_NAME,
                format!("no database or pool named \"{n}\""),
            )
        }),
    }
}

/// PAUSE answers once the paused pools hold no server connection, as PgBouncer's does
/// (PostgreSQL can then restart), or after `shutdown_timeout_ms`, the time a drain gives
/// running transactions; returns how many were still open.
async fn wait_until_closed(ctx: &ProxyContext, pools: &[Arc<crate::pool::Pool>]) -> usize {
    let limit = Duration::from_millis(ctx.settings.config.shutdown_timeout_ms);
    let open = || pools.iter().map(|p| p.snapshot().total).sum::<usize>();
    let waited = tokio::time::timeout(limit, async {
        while open() > 0 {
            tokio::time::sleep(PAUSE_POLL).await;
        }
    })
    .await;
    if waited.is_ok() {
        0
    } else {
        open()
    }
}

fn notice(out: &mut BytesMut, text: &str) {
    encode::error_response(out, encode::Severity::Warning, "01000", text, None, None);
}

fn write_table(table: &show::Table, out: &mut BytesMut) {
    let columns: Vec<(&str, u32, i16)> = table
        .columns
        .iter()
        .map(|c| match c.kind {
            show::Kind::Text => (c.name, 25, -1),
            show::Kind::Int => (c.name, 20, 8),
        })
        .collect();
    encode::row_description(out, &columns);
    for row in &table.rows {
        encode::data_row(out, row);
    }
    // CommandComplete follows (the caller's); PgBouncer's tag for every SHOW is "SHOW".
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tenant_less_users_file_entries_in_the_lists_get_the_console() {
        use crate::proxy::client_info::test_user;
        let cfg = AdminConfig {
            users: vec!["ops".into(), "acme".into()],
            stats_users: vec!["watcher".into()],
            ..AdminConfig::default()
        };
        let (ops, watcher) = (test_user("ops", None), test_user("watcher", None));
        assert_eq!(access(&cfg, &ops, true), Ok(Access::Admin));
        assert_eq!(access(&cfg, &watcher, true), Ok(Access::Stats));
        let refused = access(&cfg, &test_user("app", None), true).unwrap_err();
        assert_eq!(refused.code, codes::INSUFFICIENT_PRIVILEGE);
        assert!(refused.message.contains("\"pgbouncer\""), "{refused}");
        // A token whose subject is named like an operator is still a tenant's login.
        assert!(access(&cfg, &ops, false).is_err());
        assert!(access(&cfg, &watcher, false).is_err());
        // So is a listed users-file entry that has a tenant.
        let acme = test_user("acme", Some("01HZY3M8Q5V6W7X8Y9Z0ABCDEF"));
        assert!(access(&cfg, &acme, true).is_err());
    }

    #[test]
    fn tenant_users_get_a_console_scoped_to_their_tenant() {
        use crate::proxy::client_info::test_user;
        let cfg = AdminConfig {
            tenant_users: vec!["acme".into(), "ops".into()],
            ..AdminConfig::default()
        };
        let acme = test_user("acme", Some("01HZY3M8Q5V6W7X8Y9Z0ABCDEF"));
        let tenant = acme.tenant.unwrap();
        assert_eq!(access(&cfg, &acme, true), Ok(Access::Tenant(tenant)));
        assert!(access(&cfg, &acme, false).is_err(), "a token login never");
        assert!(
            access(&cfg, &test_user("ops", None), true).is_err(),
            "a tenant-less user listed there has nothing to be scoped to"
        );
        let other = "01HZY3M8Q5V6W7X8Y9Z0ABCDEG".parse().unwrap();
        for (statement, open) in [
            ("SHOW CLIENTS", true),
            ("SHOW TENANTS", true),
            ("SHOW HELP", true),
            ("KILL_CLIENT 7", true),
            ("KILL_TENANT 01HZY3M8Q5V6W7X8Y9Z0ABCDEF", true),
            ("KILL_TENANT 01HZY3M8Q5V6W7X8Y9Z0ABCDEG", false),
            ("SHOW POOLS", false),
            ("SHOW SERVERS", false),
            ("SHOW CONFIG", false),
            ("SHOW USERS", false),
            ("PAUSE", false),
            ("RECONNECT", false),
            ("RELOAD", false),
            ("SHUTDOWN", false),
        ] {
            let c = command::parse(statement).unwrap();
            assert_eq!(c.open_to_tenant(&tenant), open, "{statement}");
        }
        assert!(!command::parse("KILL_TENANT 01HZY3M8Q5V6W7X8Y9Z0ABCDEF")
            .unwrap()
            .open_to_tenant(&other));
    }
}
