//! The per-client task: handshake and authentication ([`handshake`]), then the transaction
//! relay ([`relay`]); cancel keys live in [`cancel`].

mod admin;
pub mod buffer_budget;
pub mod cancel;
pub mod client_info;
mod client_io;
pub mod command_timeout;
mod handshake;
pub mod pending_logins;
mod relay;
pub mod session_end;
pub mod session_params;
mod spare_buffers;
mod startup_refusal;
pub mod statements;
pub mod tenant_status;

use crate::config::Settings;
use crate::error::ClientError;
use crate::metrics::ClientCounts;
use crate::pool::PoolSet;
use crate::shutdown::Shutdown;
use bytes::BytesMut;
use cancel::CancelRegistry;
pub use client_io::ClientConn;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Everything a client task needs, shared by all of them.
pub struct ProxyContext {
    pub settings: Arc<Settings>,
    pub pools: Arc<PoolSet>,
    pub cancels: Arc<CancelRegistry>,
    /// Tenant preludes, one per tenant.
    pub preludes: crate::tenant::prelude::Preludes,
    pub clients: Arc<ClientCounts>,
    pub shutdown: Shutdown,
    /// Token verification, if `jwt:` is configured.
    pub jwt: Option<crate::auth::jwt::JwtVerifier>,
    /// Prepared statement definitions shared by all clients.
    pub statements: statements::StatementRegistry,
    /// Client-facing TLS, if configured.
    pub client_tls: Option<Arc<crate::net::tls::ClientTls>>,
    /// Recently looked-up tenant statuses (`tenant.check_status`).
    pub tenant_status: tenant_status::TenantStatusCache,
    /// Keys the fake SCRAM salts of unknown users, so the same name always gets the same salt.
    pub mock_secret: [u8; 32],
    /// Who may log in: the users file as last loaded.
    pub users: crate::config::UsersTable,
    /// Who may open the admin console: `admin` as last loaded (a reload installs it with
    /// the users; `admin.database` stays the one the proxy started with).
    pub admin_lists: parking_lot::RwLock<Arc<crate::config::AdminConfig>>,
    /// Connections in their login, which a new one at `max_client_conn` may displace.
    pub pending_logins: pending_logins::PendingLogins,
    /// What clients' read buffers may take beyond their allowance.
    pub buffer_budget: Arc<buffer_budget::BufferBudget>,
}

impl ProxyContext {
    pub fn session_mode(&self) -> bool {
        self.settings.config.pool.mode == crate::config::PoolMode::Session
    }
}

/// Releases a client's place in the `max_client_conn` count (taken by the accept loop), or
/// in the count of refused connections being answered.
struct ConnectedGuard<'a>(&'a std::sync::atomic::AtomicU64);

impl Drop for ConnectedGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Serves one client connection from its first byte to its last.
///
/// `over_limit` is set when the client arrived beyond `max_client_conn`: it still gets a
/// proper startup exchange so that it can read the 53300 error.
pub async fn handle_client(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ProxyContext>,
    over_limit: bool,
) {
    // Both counts were taken by the accept loop.
    let _counted = if over_limit {
        ConnectedGuard(&ctx.clients.refusing)
    } else {
        ConnectedGuard(&ctx.clients.connected)
    };
    let _ = stream.set_nodelay(true);
    let mut client = ClientConn::new(crate::net::Stream::Tcp(stream), ctx.buffer_budget.clone());
    let started = Instant::now();
    let login_timeout = Duration::from_millis(ctx.settings.config.client_login_timeout_ms);
    // A client refused for the limit does not take a place it could be displaced from.
    let pending = (!over_limit).then(|| ctx.pending_logins.register());
    // Boxed: the login's state is large and only needed once; the task an idle client
    // keeps holds just a pointer to it while it runs.
    let login = Box::pin(handshake::run(&mut client, &ctx, over_limit, peer));
    let evicted = async {
        match &pending {
            Some(p) => p.evicted.notified().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        biased;
        outcome = tokio::time::timeout(login_timeout, login) => Some(outcome),
        () = evicted => None,
        // A login goes on into the drain for its grace (crate::shutdown::LOGIN_GRACE): a
        // cancel request is forwarded, a login completes and runs its first transaction.
        // The drain does not wait longer for it (nor for a silent socket's login timeout).
        () = async {
            ctx.shutdown.triggered().await;
            if let Some(end) = ctx.shutdown.login_grace_end() {
                tokio::time::sleep_until(end.into()).await;
            }
        } => {
            if let Some(p) = pending {
                p.finish();
            }
            refuse_login(&mut client, &ClientError::shutting_down()).await;
            return;
        }
    };
    let outcome = match (outcome, pending.map(|p| p.finish())) {
        (Some(outcome), None | Some(true)) => outcome,
        _ => {
            let err = displaced_by_a_newer_client();
            tracing::info!(%peer, error = %err, "client displaced before its login");
            ctx.clients.displaced_logins.fetch_add(1, Relaxed);
            refuse_login(&mut client, &err).await;
            return;
        }
    };
    let session = match outcome {
        Err(_) => {
            let err = ClientError::protocol(format!(
                "client did not complete the login within client_login_timeout_ms ({} ms)",
                login_timeout.as_millis()
            ));
            tracing::info!(%peer, error = %err, "client login timed out");
            refuse_login(&mut client, &err).await;
            return;
        }
        Ok(Err(err)) => {
            if err.kind == crate::error::ErrorKind::Auth {
                ctx.clients.login_failures.fetch_add(1, Relaxed);
            }
            tracing::info!(%peer, error = %err, "client refused");
            refuse_login(&mut client, &err).await;
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Ok(Some(Login::Session(session)))) => session,
        Ok(Ok(Some(Login::Admin(login)))) => {
            tracing::info!(%peer, user = %login.user.name, access = ?login.access, "admin console login");
            if let Some(err) = admin::serve(&mut client, &ctx, &login).await {
                tracing::info!(%peer, user = %login.user.name, error = %err, "admin console session ended with error");
                client.send_error(&err).await;
            }
            return;
        }
    };
    let config = &ctx.settings.config;
    if config.log_connections {
        tracing::info!(%peer, user = %session.user.name, pid = session.cancel.target.pid, "client logged in");
    }
    let end = relay::run(&mut client, &session, &ctx).await;
    let stats = end.stats;
    match &end.error {
        Some(err) => {
            tracing::info!(%peer, user = %session.user.name, transactions = stats.transactions, secs = started.elapsed().as_secs_f64(), error = %err, "client disconnected with error");
            crate::metrics::count_error(err.code.as_bytes());
            client.send_error(err).await;
        }
        None if config.log_disconnections => {
            tracing::info!(%peer, user = %session.user.name, transactions = stats.transactions, secs = started.elapsed().as_secs_f64(), "client disconnected");
        }
        None => {}
    }
}

/// Sends the error that ends a login, counted in `launch_proxy_errors_total` like the
/// errors of logged-in sessions: refusals (28P01, 53300, 57P03) are what an operator
/// alerts on during an outage or a password-guessing run.
async fn refuse_login(client: &mut ClientConn, err: &ClientError) {
    crate::metrics::count_error(err.code.as_bytes());
    client.send_error(err).await;
}

/// Answers a client that arrived beyond `max_client_conn` (after reading its startup
/// packet, so that the error reaches it) and closes.
pub fn too_many_clients() -> ClientError {
    ClientError::fatal(
        crate::error::ErrorKind::Limit,
        crate::protocol::codes::TOO_MANY_CONNECTIONS,
        "sorry, too many clients already",
    )
    .with_detail("launch-proxy is serving max_client_conn clients")
}

/// Answers a connection still in its login whose place a newer one took at
/// `max_client_conn` (see [`pending_logins`]).
fn displaced_by_a_newer_client() -> ClientError {
    too_many_clients().with_detail(
        "this connection had not logged in, and a newer one took its place at max_client_conn",
    )
}

pub(crate) fn encode_error(err: &ClientError) -> BytesMut {
    let mut b = BytesMut::with_capacity(128);
    err.encode(&mut b);
    b
}

/// What a completed login leads to.
pub(crate) enum Login {
    /// A PostgreSQL session through the pools.
    Session(Session),
    /// The admin console.
    Admin(admin::AdminLogin),
}

pub(crate) struct Session {
    pub user: Arc<crate::config::User>,
    pub pool: Arc<crate::pool::Pool>,
    pub cancel: cancel::CancelHandle,
    /// The tenant this session is bound to from its authenticated identity.
    pub tenant: Option<crate::tenant::TenantId>,
    /// `tenant`'s key in its pool's queue and caps ([`crate::pool::tenant_key`]), derived
    /// once at login rather than at every checkout.
    pub queue_key: crate::pool::TenantKey,
    /// The messages that apply `tenant` to a server connection (see `tenant::prelude`),
    /// shared with the tenant's other sessions.
    pub prelude: Arc<crate::tenant::prelude::Prelude>,
    /// The server's major version (e.g. 17): which settings it has.
    pub server_major: u32,
    /// Session parameters from the startup packet, to re-apply on every server connection.
    pub startup_params: session_params::ParamSet,
}
