//! The pool's manager task: the only place that decides to open server connections.
//!
//! It wakes when a client queues, when a slot frees or a login ends, on a short tick and at
//! the oldest queued client's acquire deadline; it opens enough connections for the queued
//! clients and the warm minimum within the caps, `max_connecting` logins at a time, uses the
//! reserve once the oldest client has waited `reserve_pool_timeout`, ends the checkouts that
//! waited `acquire_timeout`, and closes connections that sat idle too long or outlived
//! `server_lifetime`.

use super::connect::{connect, Credentials};
use super::server_conn::ServerConn;
use super::slot::Slot;
use super::{Pool, PoolStats};
use crate::clock;
use crate::config::ServerLogin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(500);

/// Runs until the process exits: through the drain too, where the clients queued for a
/// connection still get one (their statements were accepted), and nothing else opens.
pub(super) async fn run(pool: Arc<Pool>) {
    loop {
        let next = maintain(&pool, Instant::now());
        let sleep_for = next.min(TICK);
        tokio::select! {
            _ = pool.wake.notified() => {}
            _ = tokio::time::sleep(sleep_for) => {}
            // The drain's start is one more pass; after it, the branch is off.
            _ = pool.shutdown.triggered(), if !pool.shutdown.is_triggered() => {}
        }
    }
}

/// One pass over the pool; returns how long until something becomes due.
fn maintain(pool: &Arc<Pool>, now: Instant) -> Duration {
    let now_ms = clock::advance();
    let mut expired: Vec<Box<ServerConn>> = Vec::new();
    let mut to_open = 0usize;
    let mut blocked_by_db = false;
    let paused;
    let oldest_waiter;
    let mut next = TICK;
    let has_credentials = match &pool.login {
        ServerLogin::Password(_) => true,
        ServerLogin::ScramPassthrough => pool.passthrough_keys.lock().is_some(),
    };
    {
        let mut st = pool.state.lock();
        paused = st.paused;
        // Waiters whose client left go, and so do those past their acquire timeout:
        // dropping one ends its checkout with AcquireError::Timeout.
        let draining = pool.shutdown.is_triggered();
        let timeout = pool.limits.acquire_timeout;
        let oldest_left = st.waiters.sweep(now.checked_sub(timeout));
        st.waiters.shrink();
        if let Some(since) = oldest_left {
            next = next.min((since + timeout).saturating_duration_since(now));
        }
        let queued = st.waiters.len();
        if !st.waiters.is_empty() && pool.is_gated() {
            // Statements that ran for the stall time make room, and the next one that will
            // is when to look again.
            if let Some(due) = st.gate.uncount_stalled(now) {
                next = next.min(due.saturating_duration_since(now));
            }
            st.admit();
        }
        // The sweep found the oldest waiter; only a hand-over since can have taken it.
        oldest_waiter = if st.waiters.len() == queued {
            oldest_left
        } else {
            st.waiters.oldest_since()
        };
        let reserve_due =
            oldest_waiter.map(|since| now.duration_since(since) >= pool.limits.reserve_after);
        if let (Some(false), Some(since)) = (reserve_due, oldest_waiter) {
            next = next.min((since + pool.limits.reserve_after).saturating_duration_since(now));
        }
        let cap = if reserve_due == Some(true) {
            pool.limits.reserve_cap
        } else {
            pool.limits.normal_cap
        };
        // Clients held back by the gate need no new connection (idle ones are there), nor
        // do those whose tenant holds its `max_tenant_connections`.
        let startable = match pool.limits.max_tenant_connections {
            0 => st.waiters.len(),
            max => {
                let tenants = &st.tenants;
                let room = |t| match t {
                    0 => usize::MAX,
                    t => max.saturating_sub(tenants.held(t) as usize),
                };
                st.waiters.startable(room)
            }
        };
        let for_waiters = startable.min(st.gate.room()).saturating_sub(st.opening);
        // A draining process keeps no warm minimum: the one that takes over opens its own.
        let for_minimum = if draining {
            0
        } else {
            pool.limits.min.saturating_sub(st.total)
        };
        let mut want = for_waiters.max(for_minimum);
        if pool.probe.swap(false, std::sync::atomic::Ordering::Relaxed)
            && st.last_error.is_some()
            && st.opening == 0
            && !draining
        {
            // `/health` asks whether the server is back (`Pool::probe_server`).
            want = want.max(1);
        }
        if !has_credentials {
            if want > 0 && st.last_error.is_none() {
                st.last_error = Some(super::ConnectError::NoCredentials.to_string());
            }
            want = 0;
        }
        if paused {
            want = 0;
        }
        // A pool whose client waited longer for a slot of `max_db_connections` opens first:
        // a busy pool that just yielded it a connection would otherwise take the freed slot
        // back at once (its manager is woken first), starving the other and reconnecting on
        // every transaction.
        if want > 0 && pool.db.longer_wait_elsewhere(pool, oldest_waiter) {
            want = 0;
        }
        // At most `max_connecting` logins at once, as PgBouncer (one): each finished login
        // wakes this task for the next.
        while want > 0 && st.total < cap && st.opening < pool.limits.max_connecting {
            if !pool.db.try_acquire() {
                blocked_by_db = !st.waiters.is_empty();
                break;
            }
            st.total += 1;
            st.opening += 1;
            to_open += 1;
            want -= 1;
        }
        {
            // Retire idle connections: broken or past their lifetime always, past
            // idle_timeout while above the warm minimum and nobody waits, every one while
            // the pool is paused. Oldest-idle first, from the front.
            let nobody_waits = st.waiters.is_empty();
            let mut keep = st.total;
            let mut i = 0;
            while i < st.idle.len() {
                let c = &st.idle[i];
                let too_old = nobody_waits
                    && pool
                        .limits
                        .lifetime
                        .is_some_and(|l| clock::lasted(c.created_ms, now_ms, l));
                let idle_too_long = nobody_waits
                    && keep > pool.limits.min
                    && pool
                        .limits
                        .idle_timeout
                        .is_some_and(|t| clock::lasted(c.last_used_ms, now_ms, t));
                // The server closed it (restart, pg_terminate_backend) or wrote to it while
                // idle: it would fail its next client, and it still counts against the caps.
                let broken = !c.is_usable();
                if too_old || idle_too_long || broken || paused || pool.is_stale(c) {
                    if let Some(c) = st.idle.remove(i) {
                        expired.push(c);
                    }
                    keep -= 1;
                } else {
                    i += 1;
                }
            }
        }
    }
    if !expired.is_empty() {
        PoolStats::add(&pool.stats.closed_idle, expired.len() as u64);
        for c in &mut expired {
            c.slot.counted = true;
        }
        if paused {
            tracing::info!(pool = %pool.name, count = expired.len(), "closing idle server connections: the pool is paused");
        } else {
            tracing::info!(pool = %pool.name, count = expired.len(), "closing idle server connections (idle_timeout or server_lifetime)");
        }
        drop(expired);
    }
    for _ in 0..to_open {
        tokio::spawn(open_one(pool.clone()));
    }
    *pool.starved_since.lock() = if blocked_by_db { oldest_waiter } else { None };
    if blocked_by_db && pool.db.evict_idle_for(pool) {
        next = Duration::ZERO;
    }
    next
}

/// Whether the new login can take session-level advisory locks: one round trip, under the
/// connect timeout. A server error keeps the switch's release of them (the conservative
/// answer); a broken connection is a failed connect.
async fn ask_session_locks(
    pool: &Pool,
    mut login: super::connect::Login,
) -> Result<(super::connect::Login, bool), super::ConnectError> {
    let mut buf = bytes::BytesMut::new();
    let sql = crate::tenant::prelude::SESSION_LOCKS_CHECK;
    let asked = super::query::query_scalar_on(&mut login.stream, &mut buf, sql);
    match tokio::time::timeout(pool.limits.connect_timeout, asked).await {
        Ok(Ok(answer)) if buf.is_empty() => Ok((login, answer.as_deref() != Some("f"))),
        Ok(Err(super::query::QueryError::Server(e))) => {
            tracing::warn!(pool = %pool.name, error = %e, "could not ask whether the login takes session advisory locks; the tenant switch releases them");
            Ok((login, true))
        }
        Ok(Ok(_)) | Ok(Err(_)) => Err(super::ConnectError::Protocol(
            "unexpected reply to the session lock check",
        )),
        Err(_) => Err(super::ConnectError::Timeout(
            pool.limits.connect_timeout.as_millis() as u64,
        )),
    }
}

/// Refuses a login that row-level security does not bind, on a pool tenants run on: it
/// closes, and the pool reports why like a server it cannot reach (57P03 to the waiting
/// clients, the warning in the log), retrying until the grant is fixed.
async fn check_rls(
    pool: &Pool,
    mut login: super::connect::Login,
) -> Result<super::connect::Login, super::ConnectError> {
    let mut buf = bytes::BytesMut::new();
    let sql = crate::tenant::rls_login::RLS_BYPASS_CHECK;
    let asked = super::query::query_scalar_on(&mut login.stream, &mut buf, sql);
    let user = &pool.target.user;
    match tokio::time::timeout(pool.limits.connect_timeout, asked).await {
        Ok(Ok(None)) if buf.is_empty() => Ok(login),
        Ok(Ok(Some(why))) => Err(super::ConnectError::BypassesRls(format!(
            "\"{user}\" {why}"
        ))),
        Ok(Err(super::query::QueryError::Server(e))) => Err(super::ConnectError::BypassesRls(
            format!("\"{user}\" could not be checked ({e})"),
        )),
        Ok(Ok(None)) | Ok(Err(_)) => Err(super::ConnectError::Protocol(
            "unexpected reply to the row-level security check",
        )),
        Err(_) => Err(super::ConnectError::Timeout(
            pool.limits.connect_timeout.as_millis() as u64,
        )),
    }
}

/// Opens one connection for a slot already reserved, retrying every
/// `connect_retry_interval` while clients still wait for it.
async fn open_one(pool: Arc<Pool>) {
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        // Read before the login: one that began before a RECONNECT is closed at its first
        // release, as the connections open then were.
        let generation = pool.generation.load(Ordering::Relaxed);
        let credentials = match &pool.login {
            ServerLogin::Password(p) => Some(Credentials::Password(p.clone())),
            ServerLogin::ScramPassthrough => pool
                .passthrough_keys
                .lock()
                .clone()
                .map(Credentials::ScramKeys),
        };
        let result = match credentials {
            Some(c) => connect(&pool.target, c, pool.limits.connect_timeout).await,
            None => Err(super::ConnectError::NoCredentials),
        };
        let result = match result {
            Ok(login) => ask_session_locks(&pool, login).await,
            Err(e) => Err(e),
        };
        let result = match result {
            Ok((login, locks)) if pool.serves_tenants => {
                check_rls(&pool, login).await.map(|login| (login, locks))
            }
            other => other,
        };
        match result {
            Ok((login, session_locks)) => {
                PoolStats::add(&pool.stats.connects_ok, 1);
                pool.session_locks.store(session_locks, Ordering::Relaxed);
                let now = clock::advance();
                let id = pool.next_conn_id.fetch_add(1, Ordering::Relaxed);
                let info = super::ServerInfo {
                    id,
                    backend_pid: login.key.pid,
                    connected_at: std::time::SystemTime::now(),
                    tls: login.stream.is_tls(),
                };
                let conn = Box::new(ServerConn {
                    stream: login.stream,
                    buf: bytes::BytesMut::new(),
                    key: login.key,
                    id,
                    created_ms: now,
                    last_used_ms: now,
                    uses: 0,
                    generation,
                    tenant: super::AppliedTenant::Unknown,
                    session_locks,
                    may_hold_objects: false,
                    may_hold_settings: false,
                    settings_owner: 0,
                    params: Default::default(),
                    statements: super::statements::ServerStatements::new(
                        pool.limits.statement_cache_size,
                    ),
                    slot: Slot::adopt(&pool, info),
                    inherited: None,
                });
                tracing::info!(pool = %pool.name, conn = conn.id, server_pid = conn.key.pid, attempts, "server connection opened");
                let mut st = pool.state.lock();
                st.opening -= 1;
                if st.last_error.take().is_some() {
                    tracing::info!(pool = %pool.name, "server reachable again");
                }
                if pool.is_stale(&conn) {
                    // Its login began before a RECONNECT: closed (its slot frees itself,
                    // which wakes this task to open another if clients still need one).
                    drop(st);
                    drop(conn);
                    return;
                }
                // The newest session's parameters are what new clients are told: after a
                // RECONNECT (a role's new TimeZone), those of the sessions opened since.
                *pool.params.lock() = Some(Arc::new(login.params));
                Pool::hand_over(&mut st, conn);
                drop(st);
                // The next login, if clients still wait or the warm minimum is not met.
                pool.wake();
                return;
            }
            Err(e) => {
                PoolStats::add(&pool.stats.connects_failed, 1);
                let message = e.to_string();
                let give_up = {
                    let mut st = pool.state.lock();
                    if st.last_error.as_deref() != Some(message.as_str()) {
                        tracing::warn!(pool = %pool.name, error = %message, "server connection failed");
                    }
                    st.last_error = Some(message);
                    let stop = st.waiters.all_gone();
                    if stop {
                        st.opening -= 1;
                        st.total -= 1;
                    }
                    stop
                };
                if give_up {
                    pool.db.release();
                    pool.wake();
                    return;
                }
                tokio::time::sleep(pool.limits.retry_interval).await;
            }
        }
    }
}
