//! The accept loop, the `max_client_conn` count, signals and the orderly stop.

use crate::config::Settings;
use crate::metrics::{ClientCounts, MetricsContext};
use crate::pool::PoolSet;
use crate::proxy::cancel::CancelRegistry;
use crate::proxy::{handle_client, ProxyContext};
use crate::shutdown::Shutdown;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::Signal;

/// Binds everything, serves until SIGTERM/SIGINT, drains, and returns.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let shutdown = Shutdown::new();
    let handle = crate::metrics::install();
    let server_tls = crate::net::tls::server_tls(
        &settings.config.server.tls,
        &settings.config.server.host,
        &settings.base_dir,
    )?;
    let client_tls = match &settings.config.tls {
        Some(t) => Some(crate::net::tls::ClientTls::load(t, &settings.base_dir)?),
        None => None,
    };
    if let Some(t) = &client_tls {
        tokio::spawn(t.clone().watch(shutdown.clone()));
    }
    let pools = PoolSet::new(&settings, &shutdown, server_tls);
    let jwt = match &settings.config.jwt {
        Some(j) => Some(crate::auth::jwt::JwtVerifier::new(j, &settings.base_dir)?),
        None => None,
    };
    let clients = Arc::new(ClientCounts::default());
    let reuseport = settings.config.so_reuseport;
    let listener = bind(settings.listen, reuseport)?;
    let instance_listener = match settings.instance_listen {
        Some(addr) => Some(bind(addr, false)?),
        None => None,
    };
    if reuseport {
        warn_unless_queues_migrate();
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    let ctx = Arc::new(ProxyContext {
        cancels: CancelRegistry::new(
            settings.config.server.host.clone(),
            settings.config.server.port,
            cancel_peers(&settings.config.cancel),
        ),
        settings: settings.clone(),
        pools: pools.clone(),
        clients: clients.clone(),
        shutdown: shutdown.clone(),
        mock_secret: secret,
        pending_logins: Default::default(),
        buffer_budget: crate::proxy::buffer_budget::BufferBudget::new(
            settings.config.client_buffer_budget_bytes,
            settings.config.max_client_message_bytes,
            clients.clone(),
        ),
        users: crate::config::UsersTable::new(settings.users.clone()),
        admin_lists: parking_lot::RwLock::new(Arc::new(settings.config.admin.clone())),
        client_tls,
        jwt,
        statements: Default::default(),
        preludes: Default::default(),
        tenant_status: crate::proxy::tenant_status::TenantStatusCache::new(Duration::from_millis(
            settings.config.tenant.status_cache_ms,
        )),
    });
    let roles = &settings.config.roles;
    let sweep = [&roles.read, &roles.write]
        .iter()
        .any(|r| r.command_timeout_ms > 0);
    tokio::spawn(crate::proxy::command_timeout::watchdog(
        ctx.cancels.clone(),
        sweep,
    ));
    if settings.config.client_idle_timeout_ms > 0 {
        tokio::spawn(crate::proxy::session_end::reap_idle(
            ctx.cancels.clone(),
            Duration::from_millis(settings.config.client_idle_timeout_ms),
            ctx.shutdown.clone(),
        ));
    }
    if let (Some(addr), Some(handle)) = (settings.metrics_listen, handle) {
        let metrics_listener =
            bind(addr, reuseport).map_err(|e| anyhow::anyhow!("metrics_listen: {e}"))?;
        let cancels = ctx.cancels.clone();
        let mctx = Arc::new(MetricsContext {
            handle,
            pools: pools.clone(),
            clients: clients.clone(),
            tenant_clients: Box::new(move || {
                crate::proxy::client_info::tenant_load(&cancels.clients())
                    .into_iter()
                    .map(|t| {
                        (
                            t.tenant.map(|t| t.to_string()),
                            [t.active, t.waiting, t.idle],
                        )
                    })
                    .collect()
            }),
        });
        tokio::spawn(crate::metrics::serve(
            metrics_listener,
            mctx,
            shutdown.clone(),
            reuseport,
        ));
        tracing::info!(%addr, "serving /metrics");
    }
    pools.start();
    tracing::info!(listen = %settings.listen, server = %format!("{}:{}", settings.config.server.host, settings.config.server.port), "launch-proxy ready");
    // Every handler is in place before systemd hears the proxy is ready: a signal sent
    // the moment it is (a SIGHUP's default action ends the process) finds it.
    use tokio::signal::unix::{signal, SignalKind};
    let term = (
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    );
    let pause = (
        signal(SignalKind::user_defined1())?,
        signal(SignalKind::user_defined2())?,
    );
    let hangup = signal(SignalKind::hangup())?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    tokio::spawn(signals(shutdown.clone(), term));
    tokio::spawn(pause_signals(pools.clone(), pause));
    tokio::spawn(crate::reload::on_sighup(ctx.clone(), hangup));
    // The process's own address stays open through the drain: cancel requests for its
    // draining transactions come there from the other processes on the port.
    if let Some(l) = instance_listener {
        let ctx = ctx.clone();
        tokio::spawn(async move { accept_loop(l, &ctx, Until::Exit).await });
    }
    accept_loop(listener, &ctx, Until::Shutdown).await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let grace = Duration::from_millis(settings.config.shutdown_timeout_ms);
    tracing::info!(
        clients = clients.connected.load(Relaxed),
        grace_ms = grace.as_millis() as u64,
        "shutting down: no new clients; waiting for running transactions"
    );
    if shutdown.drain(grace).await {
        tracing::info!("all clients finished; exiting");
    } else {
        tracing::warn!(
            clients = clients.connected.load(Relaxed),
            "drain ended (shutdown_timeout_ms elapsed, or a second signal) with clients still connected; exiting"
        );
        // Bounded: each cancel waits at most CANCEL_SETTLE, and they go out together.
        let cancelled = tokio::time::timeout(CANCELS_AT_EXIT, ctx.cancels.cancel_all_running())
            .await
            .unwrap_or(0);
        if cancelled > 0 {
            tracing::warn!(cancelled, "cancelled the statements still running");
        }
    }
    Ok(())
}

/// `reuseport`: other processes may listen on the same address (`so_reuseport`).
fn bind(addr: std::net::SocketAddr, reuseport: bool) -> anyhow::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(reuseport)?;
    socket
        .bind(addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    // A deep backlog absorbs connection storms (thousands of clients reconnecting at once).
    Ok(socket.listen(4096)?)
}

/// When a process of a reuseport group closes its listener, the connections the kernel
/// had queued on it and it had not accepted yet are reset, unless the kernel hands them
/// to another process of the group (`net.ipv4.tcp_migrate_req`, Linux 5.14). A rolling
/// restart needs it.
fn warn_unless_queues_migrate() {
    const SYSCTL: &str = "/proc/sys/net/ipv4/tcp_migrate_req";
    match std::fs::read_to_string(SYSCTL) {
        Ok(v) if v.trim() == "1" => {}
        Ok(_) => tracing::warn!(
            "so_reuseport: net.ipv4.tcp_migrate_req is 0, so connections queued on this process \
             when it stops are reset instead of handed to the other process on the port; \
             set it to 1 (deploy/99-launch-proxy.conf)"
        ),
        // Under the shipped unit's ProcSubset=pid /proc/sys is hidden: say what to check,
        // without a warning at every start.
        Err(e) => tracing::info!(
            error = %e,
            "so_reuseport: {SYSCTL} cannot be read here; unless net.ipv4.tcp_migrate_req is 1 \
             (Linux 5.14 or later, deploy/99-launch-proxy.conf), connections queued on this \
             process when it stops are reset"
        ),
    }
}

/// How long an accept loop runs.
#[derive(Clone, Copy, PartialEq)]
enum Until {
    /// Until the drain begins: the shared port closes, so that new clients go elsewhere.
    Shutdown,
    /// Until the process exits.
    Exit,
}

async fn accept_loop(listener: TcpListener, ctx: &Arc<ProxyContext>, until: Until) {
    let max = ctx.settings.config.pool.max_client_conn as u64;
    loop {
        tokio::select! {
            // The drain first: a connection accepted after it began would be served as if
            // it had come before (crate::shutdown's login grace).
            biased;
            _ = ctx.shutdown.triggered(), if until == Until::Shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    ctx.clients.accepted.fetch_add(1, Relaxed);
                    // At the limit the oldest connection still in its login makes room
                    // (proxy::pending_logins); a client is refused only when every
                    // connection has logged in. A refused one holds no place (silent
                    // refused sockets would otherwise keep the count up for the login
                    // timeout after clients leave); at most `max` of them are answered at
                    // once, and further ones are closed unread.
                    let over_limit = ctx.clients.connected.fetch_add(1, Relaxed) >= max
                        && !ctx.pending_logins.evict_oldest();
                    if over_limit {
                        ctx.clients.connected.fetch_sub(1, Relaxed);
                        if ctx.clients.refusing.fetch_add(1, Relaxed) >= max {
                            ctx.clients.refusing.fetch_sub(1, Relaxed);
                            ctx.clients.rejected_max_clients.fetch_add(1, Relaxed);
                            drop(stream);
                            continue;
                        }
                    }
                    let ctx = ctx.clone();
                    ctx.shutdown.tracker().spawn(handle_client(stream, peer, ctx.clone(), over_limit));
                }
                Err(e) => {
                    // Out of file descriptors, typically: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// The first SIGTERM or SIGINT starts the drain; a second one ends it at once (the
/// transactions still running are rolled back by PostgreSQL as their connections close),
/// since an operator who asks twice, or presses Ctrl-C twice, does not mean to wait for
/// `shutdown_timeout_ms`.
/// How long the cancels of the statements still running at exit may take.
const CANCELS_AT_EXIT: Duration = Duration::from_secs(3);

async fn signals(shutdown: Shutdown, (mut term, mut int): (Signal, Signal)) {
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.trigger();
    let second = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::warn!("second signal ({second}): not waiting for running transactions; exiting");
    shutdown.abandon();
}

/// SIGUSR1 pauses every pool and SIGUSR2 resumes them, as PgBouncer's signals do: while
/// paused no transaction starts (clients wait, within `acquire_timeout_ms`), running ones
/// finish, and server connections close as they come back, so that PostgreSQL can restart
/// or fail over under connected clients.
async fn pause_signals(pools: Arc<PoolSet>, (mut pause, mut resume): (Signal, Signal)) {
    loop {
        tokio::select! {
            Some(()) = pause.recv() => {
                tracing::info!("SIGUSR1: pausing every pool; running transactions finish, server connections close");
                pools.pause_all();
            }
            Some(()) = resume.recv() => {
                tracing::info!("SIGUSR2: resuming every pool");
                pools.resume_all();
            }
            else => return,
        }
    }
}

fn cancel_peers(c: &crate::config::CancelConfig) -> crate::proxy::cancel::CancelPeers {
    let mut peers = vec![None; 16];
    for (id, addr) in &c.peers {
        if *id != c.host_id {
            peers[*id as usize] = Some(addr.clone());
        }
    }
    crate::proxy::cancel::CancelPeers {
        host_id: c.host_id,
        peers,
    }
}
