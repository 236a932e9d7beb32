//! SIGHUP: the users file read again, for new logins.
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

/// Reloads the users file at every SIGHUP until the process ends.
pub async fn on_sighup(ctx: Arc<ProxyContext>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler: the users file will not be reloaded");
        return;
    };
    while hangup.recv().await.is_some() {
        match reload_users(&ctx) {
            Ok(n) => tracing::info!(users = n, "SIGHUP: users file reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: users file not reloaded; the users loaded before stay")
            }
        }
    }
}

fn reload_users(ctx: &ProxyContext) -> Result<usize, String> {
    let source = &ctx.settings.source;
    let settings = crate::config::load(source, &Default::default()).map_err(|e| e.to_string())?;
    fits_the_pools(&ctx.pools, &settings.users)?;
    let n = settings.users.len();
    ctx.users.replace(settings.users);
    Ok(n)
}

/// Whether `users` can run on the pools the proxy started with.
fn fits_the_pools(pools: &PoolSet, users: &BTreeMap<String, Arc<User>>) -> Result<(), String> {
    for pool in pools.iter() {
        let name = &*pool.name;
        let Some(login) = users.get(name) else {
            return Err(format!(
                "user \"{name}\" is the server login of a pool: removing it needs a restart"
            ));
        };
        if login.server_user != name
            || login.role != pool.role
            || !pool.logs_in_with(&login.server_login)
        {
            return Err(format!(
                "user \"{name}\" is the server login of a pool: changing its role, server_user or server password needs a restart"
            ));
        }
    }
    for user in users.values() {
        if pools.get(&user.server_user).is_none() {
            return Err(format!(
                "user \"{}\" runs on server user \"{}\", which has no pool: a new pool needs a restart",
                user.name, user.server_user
            ));
        }
    }
    Ok(())
}
