//! SIGHUP (or the admin console's RELOAD): the users file read again, for new logins, with
//! the config's admin lists (who may open the console).
//!
//! Passwords, tenants, roles and auth methods of client users change, and users come and
//! go, without a restart that would drop every client (`systemctl reload launch-proxy`).
//! Sessions keep the user they logged in as. What a running pool depends on stays as it
//! was: a reload that removes or changes a pool's own server login, or names a
//! `server_user` that has no pool, is refused as a whole (logged), as is a file that does
//! not load; the users loaded before stay. Other settings of the config file are read only
//! at start.

use crate::config::User;
use crate::pool::PoolSet;
use crate::proxy::ProxyContext;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Reloads the users file at every SIGHUP (`hangup`, installed before the proxy said it
/// was ready) until the process ends. The file is read and its passwords' verifiers
/// derived (4096 HMACs per plain password) on a blocking thread: on the runtime's one
/// thread that stalled every client for the whole reload (1.3 s for 2000 users).
pub async fn on_sighup(ctx: Arc<ProxyContext>, mut hangup: tokio::signal::unix::Signal) {
    while hangup.recv().await.is_some() {
        match reload_users(&ctx).await {
            Ok(n) => tracing::info!(users = n, "SIGHUP: users file reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: users file not reloaded; the users loaded before stay")
            }
        }
    }
}

/// Reads the config and users files again and installs the users (SIGHUP, the admin
/// console's RELOAD); the number of users, or why the users loaded before stay.
pub async fn reload_users(ctx: &ProxyContext) -> Result<usize, String> {
    let source = ctx.settings.source.clone();
    let overrides = ctx.settings.overrides.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        crate::config::load(&source, &overrides).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(format!("the reload failed: {e}")));
    let settings = loaded?;
    let n = install_users(ctx, settings.users)?;
    let mut admin = settings.config.admin;
    // The console's database name routes logins; it is the one the proxy started with.
    admin
        .database
        .clone_from(&ctx.settings.config.admin.database);
    *ctx.admin_lists.write() = Arc::new(admin);
    Ok(n)
}

fn install_users(ctx: &ProxyContext, users: BTreeMap<String, Arc<User>>) -> Result<usize, String> {
    fits_the_pools(&ctx.pools, &ctx.users, &users)?;
    let n = users.len();
    ctx.users.replace(users);
    Ok(n)
}

/// Whether `users` can run on the pools the proxy started with (whose logins are in
/// `current`).
fn fits_the_pools(
    pools: &PoolSet,
    current: &crate::config::UsersTable,
    users: &BTreeMap<String, Arc<User>>,
) -> Result<(), String> {
    for pool in pools.iter() {
        let name = &*pool.name;
        let Some(login) = users.get(name) else {
            return Err(format!(
                "user \"{name}\" is the server login of a pool: removing it needs a restart"
            ));
        };
        // A pool that logs in with its clients' SCRAM keys keeps the keys it took from the
        // first client: a new verifier would let clients in whose keys PostgreSQL takes and
        // the pool does not have.
        let keys_change = matches!(
            login.server_login,
            crate::config::ServerLogin::ScramPassthrough
        ) && current
            .get(name)
            .is_none_or(|old| old.scram_verifier != login.scram_verifier);
        if login.server_user != name
            || login.role != pool.role
            || !pool.logs_in_with(&login.server_login)
            || keys_change
        {
            return Err(format!(
                "user \"{name}\" is the server login of a pool: changing its role, server_user, server password or (when the pool logs in with its clients' SCRAM keys) its verifier needs a restart"
            ));
        }
    }
    for user in users.values() {
        let Some(pool) = pools.get(&user.server_user) else {
            return Err(format!(
                "user \"{}\" runs on server user \"{}\", which has no pool: a new pool needs a restart",
                user.name, user.server_user
            ));
        };
        if user.has_tenant() && !pool.serves_tenants {
            return Err(format!(
                "user \"{}\" brings tenants to the pool of \"{}\", whose logins were not checked for row-level security: that needs a restart",
                user.name, user.server_user
            ));
        }
    }
    Ok(())
}
