//! Server-connection pools, one per (database, server user), with the caps that span them.
//!
//! Checkout pops the most recently used idle connection or queues the client; every
//! connection opening happens in the pool's manager task ([`manager`]), which also keeps the
//! warm minimum, opens the reserve for clients that waited long enough, and retires idle,
//! old and overused connections.

mod acquire_error;
mod connect;
mod gate;
mod generation;
mod handover;
mod manager;
pub mod query;
mod server_conn;
mod slot;
mod snapshot;
pub mod statements;
mod stats;
mod tenant_cap;
mod waiters;

pub use acquire_error::AcquireError;
pub use connect::{send_cancel, ConnectError, ConnectTarget};
pub use handover::{After, EarlyMessage, Successor};
pub use server_conn::{AppliedTenant, BackendKey, Inherited, ServerConn};
pub use snapshot::{PoolSnapshot, ServerInfo, ServerList};
pub use stats::{GaugeGuard, PoolStats, WAIT_BOUNDS_S};
pub use waiters::{tenant_key, TenantKey};

use crate::auth::scram::ScramKeys;
use crate::config::{ms_opt, Role, ServerLogin, Settings, User};
use crate::shutdown::Shutdown;
use parking_lot::Mutex;
use slot::DbCount;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

/// Numbers a pool runs by, resolved from the config once.
#[derive(Clone, Debug)]
pub struct PoolLimits {
    pub normal_cap: usize,
    pub reserve_cap: usize,
    pub min: usize,
    pub reserve_after: Duration,
    pub acquire_timeout: Duration,
    pub connect_timeout: Duration,
    pub retry_interval: Duration,
    /// Logins in progress at most (`pool.max_connecting`).
    pub max_connecting: usize,
    pub idle_timeout: Option<Duration>,
    pub max_uses: Option<u64>,
    pub lifetime: Option<Duration>,
    pub command_timeout: Option<Duration>,
    /// The role's `idle_in_transaction_timeout_ms`, which the proxy enforces itself on a
    /// client that holds its connection between a message and its Sync (PostgreSQL arms
    /// its own only at ReadyForQuery).
    pub idle_in_transaction: Option<Duration>,
    /// Prepared statements kept per server connection (least recently used evicted).
    pub statement_cache_size: usize,
    /// Statements running at once at most (`pool.max_active`; 0: no limit).
    pub max_active: usize,
    /// Connections one tenant's clients hold at once at most
    /// (`pool.max_tenant_connections`; 0: no limit).
    pub max_tenant_connections: usize,
}

/// The server's ParameterStatus values, reported to every client at login.
pub type ServerParams = Arc<Vec<(String, String)>>;

struct PoolState {
    /// Back = most recently used (handed out first); front = idle longest (closed first).
    idle: VecDeque<Box<ServerConn>>,
    /// Queued checkouts, tenants served in turn ([`waiters`]).
    waiters: waiters::Waiters,
    /// Open plus opening connections: what counts against the caps.
    total: usize,
    opening: usize,
    last_error: Option<String>,
    /// Statements running on this pool's connections (`pool.max_active`).
    gate: gate::Gate,
    /// Connections each tenant holds (`pool.max_tenant_connections`).
    tenants: tenant_cap::TenantCap,
    /// No transaction starts, and connections close as they come back (SIGUSR1, as
    /// PgBouncer's PAUSE), until resumed: PostgreSQL can restart under the waiting clients.
    paused: bool,
}

impl PoolState {
    fn new(gate: gate::Gate, tenants: tenant_cap::TenantCap) -> PoolState {
        PoolState {
            tenants,
            idle: VecDeque::new(),
            waiters: waiters::Waiters::default(),
            total: 0,
            opening: 0,
            last_error: None,
            gate,
            paused: false,
        }
    }

    /// Takes `conn`'s statement out of the gate's count, if it is counted there.
    fn leave_gate(&mut self, conn: &mut ServerConn) {
        if let Some(ticket) = conn.slot.ticket.take() {
            self.gate.leave(ticket);
        }
    }

    /// `conn` no longer counts against its holder's tenant, nor its statement against the
    /// gate: it came back, or its client gave it up.
    fn leave_holder(&mut self, conn: &mut ServerConn) {
        self.leave_gate(conn);
        self.tenants
            .give_back(std::mem::take(&mut conn.slot.tenant));
    }

    /// Counts `conn` against the gate and against `tenant`'s cap: a client of it takes it.
    #[inline]
    fn enter_holder(&mut self, conn: &mut ServerConn, tenant: TenantKey) {
        conn.slot.ticket = self.gate.enter();
        conn.slot.tenant = self.tenants.take(tenant);
    }

    /// Hands idle connections to queued clients while the gate has room (after a statement
    /// stopped counting: a pause, or a stall). One the server closed or wrote to while idle
    /// goes to the idle-longest end instead, where the manager closes it (it cannot be
    /// dropped here: freeing its slot takes this lock); a queued client then waits for a
    /// live one rather than fail on it.
    fn admit(&mut self) {
        let mut unseen = self.idle.len();
        while !self.paused && self.gate.has_room() && !self.waiters.is_empty() && unseen > 0 {
            unseen -= 1;
            let Some(conn) = self.idle.pop_back() else {
                return;
            };
            if !conn.is_usable() {
                self.idle.push_front(conn);
                continue;
            }
            if !Pool::hand_over(self, conn) {
                // Every client queued belongs to a tenant at its cap.
                return;
            }
        }
    }
}

pub struct Pool {
    pub name: Arc<str>,
    pub role: Role,
    /// Tenants' sessions may run on it: every login is checked for row-level security.
    pub serves_tenants: bool,
    pub limits: PoolLimits,
    pub target: ConnectTarget,
    pub stats: PoolStats,
    login: ServerLogin,
    passthrough_keys: Mutex<Option<ScramKeys>>,
    state: Mutex<PoolState>,
    /// Since when this pool's oldest client waits while `max_db_connections` stops it from
    /// opening a connection (set by the manager); other pools yield to it.
    starved_since: Mutex<Option<Instant>>,
    params: Mutex<Option<ServerParams>>,
    db: Arc<DbCount>,
    wake: Notify,
    /// Set by `/health` while the latest login failed: the manager tries one more.
    probe: std::sync::atomic::AtomicBool,
    /// Whether the latest login could take session-level advisory locks
    /// ([`ServerConn::session_locks`]; one role, so all of the pool's can or none can): a
    /// message prepared to go ahead of its turn releases them (`relay::pipeline`).
    pub(crate) session_locks: std::sync::atomic::AtomicBool,
    next_conn_id: AtomicU64,
    /// Raised by [`Pool::reconnect`]; connections of an older one close as they come back.
    generation: AtomicU64,
    /// Open server connections (SHOW SERVERS).
    pub servers: ServerList,
    shutdown: Shutdown,
}

impl Pool {
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// An idle connection, if the pool has a usable one now: the relay's checkout, which
    /// then sets up no future (the async [`Pool::acquire`] is for when this finds none).
    /// A stale connection it meets is left for `acquire`, which closes it.
    /// `tenant` is the client's ([`tenant_key`]).
    #[inline]
    pub fn try_acquire(&self, tenant: TenantKey) -> Option<Box<ServerConn>> {
        let mut st = self.state.lock();
        if !st.paused
            && st.gate.has_room()
            && st.tenants.admits(tenant)
            && st.idle.back().is_some_and(|c| c.is_usable())
        {
            let mut c = st.idle.pop_back()?;
            st.enter_holder(&mut c, tenant);
            drop(st);
            self.stats.wait.record_immediate();
            return Some(c);
        }
        None
    }

    /// Gets a server connection, waiting up to the acquire timeout.
    pub async fn acquire(self: &Arc<Self>) -> Result<Box<ServerConn>, AcquireError> {
        self.acquire_as(0, 0, || false, None).await
    }

    /// [`Pool::acquire`] for the waiter `id` (non-zero), whose wait [`Pool::withdraw`] can
    /// end early, queued with the other waiters of `tenant` ([`tenant_key`]; tenants are
    /// served in turn). `withdrawn` tells, under the pool's lock, whether a withdrawal came
    /// before the wait was queued (and so found nothing to end). `early`: the client's first
    /// message, ready to be sent behind a running statement ([`Pool::take_successor`]); a
    /// connection got that way comes with [`ServerConn::inherited`] set.
    pub async fn acquire_as(
        self: &Arc<Self>,
        id: u64,
        tenant: TenantKey,
        withdrawn: impl Fn() -> bool,
        early: Option<Box<EarlyMessage>>,
    ) -> Result<Box<ServerConn>, AcquireError> {
        let mut stale: Vec<Box<ServerConn>> = Vec::new();
        let rx = {
            let mut st = self.state.lock();
            // At the gate's limit, or paused, a client queues even if connections are idle;
            // so does one whose tenant holds its `max_tenant_connections`.
            let capped = !st.tenants.admits(tenant);
            let room = st.gate.has_room() && !st.paused && !capped;
            while let Some(mut c) = room.then(|| st.idle.pop_back()).flatten() {
                if !c.is_usable() {
                    stale.push(c);
                    continue;
                }
                st.enter_holder(&mut c, tenant);
                drop(st);
                drop(stale);
                self.stats.wait.record_immediate();
                return Ok(c);
            }
            if withdrawn() {
                drop(st);
                drop(stale);
                return Err(AcquireError::Withdrawn);
            }
            // The clock is read only by a checkout that has to wait.
            let start = Instant::now();
            let (tx, rx) = oneshot::channel();
            st.waiters.push(
                tenant,
                waiters::Waiter {
                    tx,
                    since: start,
                    id,
                    tenant,
                    early,
                },
            );
            if capped {
                PoolStats::add(&self.stats.tenant_cap_waits, 1);
            }
            // The manager is woken only if it can open a connection now, or to watch the
            // gate for stalled statements once a client queues there; at the pool's cap
            // (the busy steady state, where every checkout may queue) its tick handles the
            // reserve and fair sharing, and a wake per checkout would be pure overhead.
            let wake = if room {
                st.total < self.limits.normal_cap || !stale.is_empty()
            } else {
                st.waiters.len() == 1 && !capped
            };
            (rx, start, wake)
        };
        let (rx, start, wake) = rx;
        if !stale.is_empty() {
            tracing::info!(pool = %self.name, count = stale.len(), "closing idle server connections the server has closed or written to");
            drop(stale);
        }
        if wake {
            self.wake();
        }
        let _waiting = GaugeGuard::new(&self.stats.clients_waiting);
        // No timer per checkout: the manager drops waiters whose acquire timeout is over
        // (it wakes for the oldest one's deadline), which ends this wait with an error.
        let result = rx.await.ok();
        match result {
            Some(Some(c)) => {
                self.stats.wait.record(start.elapsed());
                Ok(c)
            }
            Some(None) => Err(AcquireError::Withdrawn),
            None => {
                PoolStats::add(&self.stats.acquire_timeouts, 1);
                let st = self.state.lock();
                if st.paused {
                    let waited_ms = start.elapsed().as_millis() as u64;
                    return Err(AcquireError::Paused { waited_ms });
                }
                // A full gate is what held the client: more connections would not start it.
                let gated = (!st.gate.has_room()).then(|| st.gate.max());
                // So is its tenant's cap, if its clients hold that many.
                let tenant_capped = st.tenants.max().filter(|_| !st.tenants.admits(tenant));
                Err(AcquireError::Timeout {
                    waited_ms: start.elapsed().as_millis() as u64,
                    last_error: st.last_error.clone(),
                    busy: st.total - st.idle.len(),
                    gated,
                    tenant_capped,
                })
            }
        }
    }

    /// Returns a connection whose transaction is over and whose protocol state is idle.
    /// Connections past `server_max_uses` or `server_lifetime` are closed instead.
    pub fn release(&self, mut conn: Box<ServerConn>) {
        conn.uses += 1;
        let now = crate::clock::now_ms();
        let retire = self.limits.max_uses.is_some_and(|m| conn.uses >= m)
            || self
                .limits
                .lifetime
                .is_some_and(|l| crate::clock::lasted(conn.created_ms, now, l));
        let mut st = self.state.lock();
        st.leave_holder(&mut conn);
        // Read under the lock, which RECONNECT raises it under: no connection of an older
        // generation goes back idle after its drain.
        let retire = retire || self.is_stale(&conn);
        if retire {
            // Its place at the gate goes to a queued client, on an idle connection if any.
            st.admit();
            drop(st);
            PoolStats::add(&self.stats.closed_retired, 1);
            conn.slot.counted = true;
            tracing::debug!(pool = %self.name, conn = conn.id, uses = conn.uses, "retiring server connection");
            drop(conn);
            return;
        }
        conn.last_used_ms = now;
        // At the database cap, a pool whose clients waited longer than ours gets the slot:
        // the connection closes and that pool's manager opens one (fair share across pools).
        if self.db.at_cap() && {
            let ours = st.waiters.oldest_since();
            self.db.longer_wait_elsewhere(self, ours)
        } {
            st.admit();
            drop(st);
            tracing::debug!(pool = %self.name, "yielding a server connection to a pool waiting at max_db_connections");
            drop(conn);
            return;
        }
        let paused = st.paused;
        // Its tenant may start another: a client of it that queued at the cap goes first
        // if it is that tenant's turn.
        Self::hand_over(&mut st, conn);
        drop(st);
        if paused {
            // The manager closes it.
            self.wake();
        }
    }

    /// Ends the queued wait of `id` (see [`Pool::acquire_as`]) with
    /// [`AcquireError::Withdrawn`]: its client cancelled the statement it waits to run.
    /// `false` if it is not queued (it got its connection, or has not queued yet).
    pub fn withdraw(&self, id: u64) -> bool {
        let mut st = self.state.lock();
        if id == 0 {
            return false;
        }
        st.waiters
            .remove_where(|w| w.id == id)
            .into_iter()
            .any(|w| w.tx.send(None).is_ok())
    }

    /// Stops new transactions; connections close as their transactions end (the manager
    /// closes idle ones). Clients wait, within `acquire_timeout_ms`, for [`Pool::resume_pool`].
    pub fn pause_pool(&self) {
        self.state.lock().paused = true;
        self.wake();
    }

    /// Ends a pause: waiting clients start as connections open again.
    pub fn resume_pool(&self) {
        self.state.lock().paused = false;
        self.wake();
    }

    /// The transaction on `conn` waits for its client (idle in transaction, or between a
    /// session's transactions): its statement no longer counts against `max_active`, and a
    /// queued client may start in its place.
    pub fn pause(&self, conn: &mut ServerConn) {
        if conn.slot.ticket.is_some() {
            let mut st = self.state.lock();
            st.leave_gate(conn);
            st.admit();
        }
    }

    /// The transaction on `conn` sent its next statement: it counts again, without waiting
    /// at the gate (it may hold locks that the statements queued there wait for).
    pub fn resume(&self, conn: &mut ServerConn) {
        if conn.slot.ticket.is_none() {
            let mut st = self.state.lock();
            conn.slot.ticket = st.gate.enter();
        }
    }

    /// Whether this pool limits running statements (`pool.max_active`), so that the relay
    /// must report pauses and resumptions.
    pub fn is_gated(&self) -> bool {
        self.limits.max_active > 0
    }

    /// Gives `conn` to the next client in turn while the gate has room (`true`), or parks
    /// it as idle (`false`). Tenants at their `max_tenant_connections` are passed over.
    fn hand_over(st: &mut PoolState, mut conn: Box<ServerConn>) -> bool {
        while !st.paused && st.gate.has_room() {
            let tenants = &st.tenants;
            let Some(w) = st.waiters.pop_next(|t| tenants.admits(t)) else {
                break;
            };
            st.enter_holder(&mut conn, w.tenant);
            match w.tx.send(Some(conn)) {
                Ok(()) => return true,
                // A waiter gone meanwhile: the connection comes back as it was sent.
                Err(back) => {
                    let Some(mut back) = back else { return true };
                    st.leave_holder(&mut back);
                    conn = back;
                }
            }
        }
        st.idle.push_back(conn);
        false
    }

    /// The server's ParameterStatus values, opening a connection first if none was ever open.
    pub async fn server_params(self: &Arc<Self>) -> Result<ServerParams, AcquireError> {
        if let Some(p) = self.params.lock().clone() {
            return Ok(p);
        }
        let conn = self.acquire().await?;
        self.release_unused(conn);
        Ok(self.params.lock().clone().unwrap_or_default())
    }

    /// Returns a connection that served no transaction (does not count as a use).
    pub fn release_unused(&self, mut conn: Box<ServerConn>) {
        let mut st = self.state.lock();
        st.leave_holder(&mut conn);
        if self.is_stale(&conn) {
            st.admit();
            drop(st);
            conn.slot.counted = true;
            PoolStats::add(&self.stats.closed_retired, 1);
            return;
        }
        Self::hand_over(&mut st, conn);
    }

    /// Remembers the SCRAM keys of a client that just proved itself, for pools that log in
    /// to PostgreSQL with the client's keys.
    pub fn offer_client_keys(&self, keys: &ScramKeys) {
        if matches!(self.login, ServerLogin::ScramPassthrough) {
            let mut k = self.passthrough_keys.lock();
            if k.is_none() {
                *k = Some(keys.clone());
                drop(k);
                self.wake();
            }
        }
    }

    fn free_slot(&self, ticket: Option<gate::Ticket>, tenant: TenantKey, counted: bool) {
        if !counted {
            PoolStats::add(&self.stats.closed_other, 1);
        }
        {
            let mut st = self.state.lock();
            st.total -= 1;
            if st.paused && st.total == 0 {
                tracing::info!(pool = %self.name, "paused: no server connections left");
            }
            let mut room = st.tenants.give_back(tenant);
            if let Some(ticket) = ticket {
                st.gate.leave(ticket);
                room = true;
            }
            if room {
                st.admit();
            }
        }
        self.db.release();
        self.wake();
    }

    fn starved_since(&self) -> Option<Instant> {
        *self.starved_since.lock()
    }

    fn take_oldest_idle(&self) -> Option<Box<ServerConn>> {
        self.state.lock().idle.pop_front()
    }

    /// Whether this pool logs in to PostgreSQL with `login`.
    pub fn logs_in_with(&self, login: &ServerLogin) -> bool {
        self.login == *login
    }

    /// Why the pool's most recent server login failed, while no later one succeeded; `None`
    /// also for a pool that waits for its first client's SCRAM keys (not a server fault).
    pub fn server_error(&self) -> Option<String> {
        let e = self.state.lock().last_error.clone()?;
        (e != ConnectError::NoCredentials.to_string()).then_some(e)
    }

    /// Has the manager try one login if the last one failed, so that a pool nobody uses
    /// (no waiters, its minimum met or 0) learns that the server is back: without it
    /// `/health` reported a recovered server as down until a client came, which one held
    /// out by that very report never would. `/health` calls it on every failing check.
    pub fn probe_server(&self) {
        self.probe.store(true, std::sync::atomic::Ordering::Relaxed);
        self.wake();
    }
}

/// All pools, by server login (the users-file entry whose credentials they use).
pub struct PoolSet {
    pools: BTreeMap<String, Arc<Pool>>,
    db: Arc<DbCount>,
}

impl PoolSet {
    pub fn new(
        settings: &Settings,
        shutdown: &Shutdown,
        tls: Option<crate::net::tls::ServerTls>,
    ) -> Arc<PoolSet> {
        let cfg = &settings.config;
        let p = &cfg.pool;
        let db = Arc::new(DbCount::new(p.max_db_connections));
        let user_cap = |n: usize| {
            if p.max_user_connections > 0 {
                n.min(p.max_user_connections)
            } else {
                n
            }
        };
        // One pool per server login: users with a `server_user` share that login's pool.
        let pools: BTreeMap<String, Arc<Pool>> = settings
            .users
            .values()
            .filter(|u| u.server_user == u.name)
            .map(|u| {
                (
                    u.name.clone(),
                    Self::make_pool(settings, u, &db, shutdown, user_cap, tls.clone()),
                )
            })
            .collect();
        db.set_pools(pools.values().map(Arc::downgrade).collect());
        Arc::new(PoolSet { pools, db })
    }

    fn make_pool(
        settings: &Settings,
        user: &User,
        db: &Arc<DbCount>,
        shutdown: &Shutdown,
        user_cap: impl Fn(usize) -> usize,
        tls: Option<crate::net::tls::ServerTls>,
    ) -> Arc<Pool> {
        let cfg = &settings.config;
        let p = &cfg.pool;
        let role = cfg.roles.get(user.role);
        let mut params = vec![
            ("application_name".to_owned(), "launch-proxy".to_owned()),
            ("client_encoding".to_owned(), "UTF8".to_owned()),
        ];
        params.push((
            "statement_timeout".to_owned(),
            role.statement_timeout_ms.to_string(),
        ));
        params.push((
            "idle_in_transaction_session_timeout".to_owned(),
            role.idle_in_transaction_timeout_ms.to_string(),
        ));
        let name: Arc<str> = Arc::from(user.name.as_str());
        Arc::new(Pool {
            limits: PoolLimits {
                normal_cap: user_cap(p.default_pool_size),
                reserve_cap: user_cap(p.default_pool_size + p.reserve_pool_size),
                min: user_cap(p.min_pool_size),
                reserve_after: Duration::from_millis(p.reserve_pool_timeout_ms),
                acquire_timeout: Duration::from_millis(p.acquire_timeout_ms),
                connect_timeout: Duration::from_millis(p.connect_timeout_ms),
                retry_interval: Duration::from_millis(p.connect_retry_interval_ms),
                max_connecting: p.max_connecting,
                idle_timeout: ms_opt(p.idle_timeout_ms),
                max_uses: (p.server_max_uses > 0).then_some(p.server_max_uses),
                lifetime: ms_opt(p.server_lifetime_ms),
                command_timeout: ms_opt(role.command_timeout_ms),
                idle_in_transaction: ms_opt(role.idle_in_transaction_timeout_ms),
                statement_cache_size: p.prepared_statement_cache_size,
                max_active: p.max_active,
                max_tenant_connections: p.max_tenant_connections,
            },
            target: ConnectTarget {
                host: cfg.server.host.clone(),
                port: cfg.server.port,
                database: cfg.server.database.clone(),
                user: user.name.clone(),
                params,
                tls,
                keepalive: cfg.server.keepalive.clone(),
                tcp_user_timeout: Duration::from_millis(cfg.server.tcp_user_timeout_ms),
            },
            role: user.role,
            serves_tenants: settings.pool_serves_tenants(&user.name),
            stats: PoolStats::default(),
            login: user.server_login.clone(),
            passthrough_keys: Mutex::new(None),
            state: Mutex::new(PoolState::new(
                gate::Gate::new(p.max_active, Duration::from_millis(p.active_stall_ms)),
                tenant_cap::TenantCap::new(p.max_tenant_connections),
            )),
            starved_since: Mutex::new(None),
            params: Mutex::new(None),
            db: db.clone(),
            wake: Notify::new(),
            probe: Default::default(),
            session_locks: Default::default(),
            next_conn_id: AtomicU64::new(1),
            generation: AtomicU64::new(0),
            servers: ServerList::default(),
            name,
            shutdown: shutdown.clone(),
        })
    }

    /// Starts every pool's manager task (warm-up, reserve, retirement).
    pub fn start(&self) {
        for pool in self.pools.values() {
            let pool = pool.clone();
            tokio::spawn(manager::run(pool));
        }
    }

    /// The pool of a server login (`User::server_user`).
    pub fn get(&self, server_user: &str) -> Option<&Arc<Pool>> {
        self.pools.get(server_user)
    }

    /// Pauses every pool ([`Pool::pause_pool`]).
    pub fn pause_all(&self) {
        self.pools.values().for_each(|p| p.pause_pool());
    }

    /// Resumes every pool ([`Pool::resume_pool`]).
    pub fn resume_all(&self) {
        self.pools.values().for_each(|p| p.resume_pool());
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.values()
    }

    /// Server connections open or opening to the database, across pools.
    pub fn db_connections(&self) -> usize {
        self.db.open()
    }
}
