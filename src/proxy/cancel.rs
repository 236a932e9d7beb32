//! Cancel keys: the proxy hands every client its own (pid, secret) and maps it to whatever
//! server connection the client holds at that moment. Server keys never leave the proxy.
//!
//! A cancel in flight pins the server connection: the client's relay does not return it to
//! the pool until PostgreSQL has acknowledged the cancel (closed the cancel connection), so
//! a late cancel cannot land on the next client's query.
//!
//! A client whose statement still waits in its pool's queue has no server to cancel on:
//! the cancel withdraws the wait instead ([`crate::pool::Pool::withdraw`]), and the relay
//! answers 57014 without ever sending the statement.

use super::client_info::{ClientInfo, ClientState};
use super::command_timeout::{DeadlineSlot, DeadlineTable};
use crate::pool::{send_cancel, BackendKey};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

/// Longest a relay waits for a cancel in flight before releasing anyway (then it closes
/// the server connection instead of reusing it).
const CANCEL_SETTLE: Duration = Duration::from_secs(5);

/// How long a server may leave command_timeout's cancel unanswered before the proxy gives
/// the connection up (a backend process stopped or stuck in the kernel: PostgreSQL answers
/// a cancel at its next interrupt check, normally within milliseconds).
pub const UNANSWERED_CANCEL: Duration = Duration::from_secs(5);

/// [`CancelTarget::timed_out`] once the watchdog gave up on the server.
const GAVE_UP: u32 = u32::MAX;

/// One client's cancel key and the server it currently runs on.
pub struct CancelTarget {
    pub pid: u32,
    pub secret: u32,
    /// The key of the server connection the client runs on ([`pack`]); 0 while it holds
    /// none; [`queued`] while its statement waits for one, with bit 0 set once a cancel
    /// withdrew that wait.
    server: AtomicU64,
    /// Number of the client's last queued wait, so that a late cancel of one wait cannot
    /// withdraw the next.
    waits: AtomicU32,
    /// [`HOLD_OFF`], [`HOLD_ON`] while the proxy's own statements run ahead of the
    /// client's, [`HOLD_WAITING`] once a cancel came meanwhile.
    held: AtomicU8,
    /// A late cancel was sent and the reply to the client's statements has not begun: it
    /// is sent again (`cancel_hold`).
    cancel_unanswered: AtomicBool,
    /// An end requested from outside (the console's kills, the idle reaper).
    pub end: super::session_end::SessionEnd,
    /// The pool the client queues in, where a cancel withdraws its wait.
    pool: Option<Arc<crate::pool::Pool>>,
    /// Cancels sent to `server` that PostgreSQL has not acknowledged yet. With `server`, a
    /// pair of sequentially consistent atomics instead of a mutex: the relay clears `server`
    /// and then reads this, a canceller raises this and then reads `server`, so one of the
    /// two sees the other (the relay waits, or the canceller finds no server) at one locked
    /// instruction per transaction instead of two lock/unlock pairs.
    in_flight: AtomicU32,
    /// Cancels aimed at a server so far (`relay::pipeline`: one aimed while a successor's
    /// message waited behind the statement may have reached the successor's instead).
    aimed: AtomicU32,
    settled: Notify,
    /// Deadline of the running command, in the registry's table (`command_timeout`).
    deadline: DeadlineSlot,
    /// The watchdog cancelled the command for its timeout (the relay rewords the 57014):
    /// the number of that timeout (never 0), or [`GAVE_UP`] once the server left the cancel
    /// unanswered for [`UNANSWERED_CANCEL`]; 0 otherwise.
    timed_out: AtomicU32,
    /// The waker of the client's task, given once per session ([`CancelTarget::watch_relay`]):
    /// the watchdog wakes the relay through it when it gives the server up, so the relay's
    /// wait for the server registers nothing per command.
    relay: Mutex<Option<Waker>>,
    /// Who the client is (SHOW CLIENTS).
    pub client: ClientInfo,
}

/// One queued wait of a client ([`CancelTarget::queue`]).
pub struct QueuedWait {
    wait: u32,
    /// The waiter id for [`crate::pool::Pool::acquire_as`].
    pub id: u64,
}

pub struct CancelRegistry {
    targets: Mutex<Targets>,
    next_pid: AtomicU32,
    server_host: String,
    server_port: u16,
    peers: CancelPeers,
}

/// Proxies behind one address (the pool hosts) hand out keys whose pid carries the issuing
/// host's number in its top bits; a CancelRequest that reaches another host is forwarded to
/// the issuer, the only one that knows which server query the key maps to.
#[derive(Clone, Debug, Default)]
pub struct CancelPeers {
    /// This host's number, 0..=15.
    pub host_id: u8,
    /// Address of each host by number (this host's own entry is ignored).
    pub peers: Vec<Option<String>>,
}

/// The registered clients, by pid and by their word of the deadline table.
#[derive(Default)]
struct Targets {
    by_pid: HashMap<u32, Arc<CancelTarget>>,
    /// The pid owning each word of `deadlines` (0: free).
    pid_by_slot: Vec<u32>,
    deadlines: DeadlineTable,
    /// Timeouts found so far, numbering each ([`CancelTarget::timed_out`]).
    timeouts: u32,
    /// Sessions of each tenant (`pool.max_tenant_clients`).
    per_tenant: super::client_info::TenantSessions,
}

const HOST_SHIFT: u32 = 27;
const HOST_MASK: u32 = 0xf << HOST_SHIFT;

/// Registration of a client's key; dropping it unregisters.
pub struct CancelHandle {
    registry: Arc<CancelRegistry>,
    pub target: Arc<CancelTarget>,
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        let mut targets = self.registry.targets.lock();
        targets.per_tenant.leave(&self.target.client.user);
        targets.by_pid.remove(&self.target.pid);
        targets.pid_by_slot[self.target.deadline.index()] = 0;
        targets.deadlines.give_back(&self.target.deadline);
    }
}

fn random_u32() -> u32 {
    u32::from_ne_bytes(crate::entropy::bytes())
}

impl CancelRegistry {
    pub fn new(server_host: String, server_port: u16, peers: CancelPeers) -> Arc<Self> {
        Arc::new(CancelRegistry {
            targets: Mutex::new(Targets::default()),
            next_pid: AtomicU32::new(random_u32()),
            server_host,
            server_port,
            peers,
        })
    }

    /// The host number a pid was issued by.
    pub fn host_of(pid: u32) -> u8 {
        ((pid & HOST_MASK) >> HOST_SHIFT) as u8
    }

    /// Issues a fresh key for a client that just logged in to `pool`.
    pub fn register(
        self: &Arc<Self>,
        pool: Option<Arc<crate::pool::Pool>>,
        client: ClientInfo,
    ) -> CancelHandle {
        self.register_within(pool, client, 0)
            .unwrap_or_else(|_| unreachable!("no cap"))
    }

    /// [`Self::register`], refused with the tenant's session count when the client's
    /// tenant already has `tenant_cap` sessions (`pool.max_tenant_clients`; 0: no cap).
    /// Counted under the registry's lock, so that logins at once cannot overshoot it.
    pub fn register_within(
        self: &Arc<Self>,
        pool: Option<Arc<crate::pool::Pool>>,
        client: ClientInfo,
        tenant_cap: usize,
    ) -> Result<CancelHandle, u32> {
        let secret = random_u32();
        let mut targets = self.targets.lock();
        targets.per_tenant.enter(&client.user, tenant_cap)?;
        let pid = loop {
            // Positive pids (clients print them), host number in bits 27..31.
            let serial = self.next_pid.fetch_add(1, Ordering::Relaxed) & !HOST_MASK & 0x7fff_ffff;
            let pid = serial | ((self.peers.host_id as u32) << HOST_SHIFT);
            if pid != 0 && !targets.by_pid.contains_key(&pid) {
                break pid;
            }
        };
        let target = Arc::new(CancelTarget {
            pid,
            secret,
            server: AtomicU64::new(0),
            pool,
            waits: AtomicU32::new(0),
            held: AtomicU8::new(HOLD_OFF),
            cancel_unanswered: AtomicBool::new(false),
            end: super::session_end::SessionEnd::new(crate::clock::now_ms()),
            in_flight: AtomicU32::new(0),
            aimed: AtomicU32::new(0),
            settled: Notify::new(),
            deadline: targets.deadlines.take(),
            timed_out: AtomicU32::new(0),
            relay: Mutex::new(None),
            client,
        });
        let slot = target.deadline.index();
        if targets.pid_by_slot.len() <= slot {
            targets.pid_by_slot.resize(slot + 1, 0);
        }
        targets.pid_by_slot[slot] = pid;
        targets.by_pid.insert(pid, target.clone());
        Ok(CancelHandle {
            registry: self.clone(),
            target,
        })
    }

    /// The logged-in client with this key's pid (the admin console's KILL_CLIENT).
    pub fn client(&self, pid: u32) -> Option<Arc<CancelTarget>> {
        self.targets.lock().by_pid.get(&pid).cloned()
    }

    /// Every logged-in client, in no order (the admin console's SHOW CLIENTS and SHOW
    /// POOLS): the lock is held only to copy the pointers.
    pub fn clients(&self) -> Vec<Arc<CancelTarget>> {
        self.targets.lock().by_pid.values().cloned().collect()
    }

    /// Handles a client's CancelRequest. Unknown keys and wrong secrets are ignored silently,
    /// as PostgreSQL does, so that keys cannot be probed.
    pub async fn cancel(&self, pid: u32, secret: u32) -> bool {
        let host = Self::host_of(pid);
        if host != self.peers.host_id {
            return self.forward(host, pid, secret).await;
        }
        let target = self.targets.lock().by_pid.get(&pid).cloned();
        let Some(target) = target else { return false };
        if !bool::from(target.secret.to_be_bytes().ct_eq(&secret.to_be_bytes())) {
            return false;
        }
        self.cancel_running(&target).await
    }

    /// Passes a CancelRequest to the host that issued its key. The peer checks the secret;
    /// this host learns nothing about it.
    async fn forward(&self, host: u8, pid: u32, secret: u32) -> bool {
        let Some(Some(addr)) = self.peers.peers.get(host as usize) else {
            return false;
        };
        let send = async {
            let mut stream = tokio::net::TcpStream::connect(addr.as_str()).await?;
            let mut buf = bytes::BytesMut::with_capacity(16);
            crate::protocol::encode::cancel_request(&mut buf, pid, secret);
            tokio::io::AsyncWriteExt::write_all(&mut stream, &buf).await?;
            let mut sink = [0u8; 16];
            while tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        };
        match tokio::time::timeout(CANCEL_SETTLE, send).await {
            Ok(Ok(())) => true,
            _ => {
                tracing::warn!(peer = %addr, "could not forward a cancel request to the host that issued its key");
                false
            }
        }
    }

    /// The targets whose command deadline passed at `now`, each with the key of the server
    /// it runs on, pinned there (see [`CancelTarget::pin`]) before this returns: the cancel
    /// is sent later, from a task of its own, and must reach the server that ran the late
    /// command, not the one the client's next statement runs on. Each deadline is
    /// disarmed, so it is returned once; a client that is between transactions is skipped.
    /// The third field numbers the timeout, for [`CancelRegistry::cancel_timed_out`].
    pub fn expired_commands(&self, now: u64) -> Vec<(Arc<CancelTarget>, BackendKey, u32)> {
        let mut targets = self.targets.lock();
        let targets = &mut *targets;
        let mut expired = Vec::new();
        let timeouts = &mut targets.timeouts;
        targets.deadlines.sweep(now, |slot, claim| {
            let pid = targets.pid_by_slot.get(slot).copied().unwrap_or(0);
            let Some(t) = targets.by_pid.get(&pid) else {
                claim();
                return;
            };
            // Pinned before the deadline is claimed: if the relay finished the command and
            // moved on in between (another worker thread), the claim fails, since the relay
            // disarmed or re-armed, and the pin is undone; otherwise the server read is the
            // one that ran the late command and cannot be given up until the cancel settles.
            let key = t.pin();
            if !claim() {
                if key.is_some() {
                    t.cancel_settled();
                }
                return;
            }
            if let Some(key) = key {
                *timeouts = match timeouts.wrapping_add(1) {
                    0 | GAVE_UP => 1,
                    n => n,
                };
                let n = *timeouts;
                t.timed_out.store(n, Ordering::Release);
                expired.push((t.clone(), key, n));
            }
        });
        expired
    }

    /// Cancels a command whose command_timeout passed (timeout number `n` of
    /// [`CancelRegistry::expired_commands`]) and, if the server has still sent nothing
    /// [`UNANSWERED_CANCEL`] later, has the relay give the connection up: a backend that
    /// is stopped would otherwise keep its client waiting as long as it stays so.
    pub async fn cancel_timed_out(&self, target: &CancelTarget, key: BackendKey, n: u32) {
        self.deliver(target, key).await;
        tokio::time::sleep(UNANSWERED_CANCEL).await;
        if target.give_up_unanswered(n) {
            tracing::warn!(
                pid = target.pid,
                server_pid = key.pid,
                "the server left command_timeout's cancel unanswered for {} s: closing its connection",
                UNANSWERED_CANCEL.as_secs()
            );
        }
    }

    /// Cancels every statement running on a server connection, when a drain ends before
    /// its clients did (its time ran out, or a second SIGTERM): the process exits next, and
    /// PostgreSQL notices a closed connection only when it next reads or writes it, so a
    /// long statement would run on, holding its locks, after the proxy was gone. Returns
    /// how many were cancelled.
    pub async fn cancel_all_running(self: &Arc<Self>) -> usize {
        let running: Vec<Arc<CancelTarget>> = self
            .targets
            .lock()
            .by_pid
            .values()
            .filter(|t| unpack(t.server.load(Ordering::SeqCst)).is_some())
            .cloned()
            .collect();
        let mut sent = tokio::task::JoinSet::new();
        for target in running {
            let registry = self.clone();
            sent.spawn(async move { registry.cancel_running(&target).await });
        }
        let mut cancelled = 0;
        while let Some(r) = sent.join_next().await {
            cancelled += usize::from(r.unwrap_or(false));
        }
        cancelled
    }

    /// Cancels whatever the target's client runs now (a client's CancelRequest): the
    /// statement on its server, or the one waiting in its pool's queue.
    pub async fn cancel_running(&self, target: &CancelTarget) -> bool {
        loop {
            if let Some(key) = target.pin() {
                if target.defer_if_held() {
                    // Sent once the client's own statements are next (cancel_until_reply).
                    target.cancel_settled();
                    return true;
                }
                self.deliver(target, key).await;
                return true;
            }
            let word = target.server.load(Ordering::SeqCst);
            if word & QUEUE_MARK == 0 || word & 1 != 0 {
                // The client got its server between the two reads: cancel there.
                if unpack(word).is_some() {
                    continue;
                }
                return false;
            }
            match target
                .server
                .compare_exchange(word, word | 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    if let Some(pool) = &target.pool {
                        // Not found: the relay got its connection meanwhile and, finding
                        // the mark, gives it back unused.
                        pool.withdraw(CancelTarget::wait_id(target.pid, (word >> 1) as u32));
                    }
                    return true;
                }
                Err(_) => continue,
            }
        }
    }

    /// Sends the cancel pinned to `key` by [`CancelTarget::pin`], then lets the relay give
    /// that server up.
    pub async fn deliver(&self, target: &CancelTarget, key: BackendKey) {
        let result = tokio::time::timeout(
            CANCEL_SETTLE,
            send_cancel(&self.server_host, self.server_port, key),
        )
        .await;
        if !matches!(result, Ok(Ok(()))) {
            tracing::warn!(
                server_pid = key.pid,
                "could not deliver a cancel request to the server"
            );
        }
        target.cancel_settled();
    }
}

impl CancelTarget {
    /// What the client is doing now: the word of the server it runs on says it.
    pub fn state(&self) -> ClientState {
        match self.server.load(Ordering::Relaxed) {
            0 => ClientState::Idle,
            w if unpack(w).is_none() => ClientState::Waiting,
            _ => ClientState::Active,
        }
    }

    /// The backend pid of the server connection the client runs on (SHOW SERVERS).
    pub fn server_pid(&self) -> Option<u32> {
        unpack(self.server.load(Ordering::Relaxed)).map(|k| k.pid)
    }

    /// The pool the client's transactions run on.
    pub fn pool(&self) -> Option<&Arc<crate::pool::Pool>> {
        self.pool.as_ref()
    }

    /// Starts the command timeout: the watchdog cancels the command after `deadline` (on
    /// `command_timeout`'s clock) unless disarmed first.
    #[inline]
    pub fn arm_command(&self, deadline: u64) {
        self.timed_out.store(0, Ordering::Relaxed);
        self.deadline.arm(deadline);
    }

    #[inline]
    pub fn disarm_command(&self) {
        self.deadline.disarm();
    }

    /// Whether the watchdog cancelled the command since the last call.
    #[inline]
    pub fn take_timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed) != 0
            && self.timed_out.swap(0, Ordering::Acquire) != 0
    }

    /// The relay's task is the one woken when the watchdog gives its server up (see
    /// [`CancelTarget::server_unresponsive`]); called once per session.
    pub fn watch_relay(&self, waker: &Waker) {
        let mut relay = self.relay.lock();
        if !relay.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *relay = Some(waker.clone());
        }
    }

    /// Ends the client's session (the admin console's KILL_CLIENT and KILL_TENANT): the
    /// relay sees it at its next wait, for the client, its server or a connection, and
    /// closes the session with 57P01, cancelling a statement still running on the server.
    pub fn kill(&self) {
        self.end.request_kill();
        self.wake_relay();
    }

    /// Asks the relay to end the session if it is still idle (`client_idle_timeout_ms`).
    pub fn end_idle(&self) {
        if self.end.request_idle_end() {
            self.wake_relay();
        }
    }

    fn wake_relay(&self) {
        if let Some(waker) = self.relay.lock().as_ref() {
            waker.wake_by_ref();
        }
    }

    /// Whether [`Self::kill`] ended the session.
    #[inline]
    pub fn is_killed(&self) -> bool {
        self.end.requested() == Some(super::session_end::EndRequest::Killed)
    }

    /// Whether the server left command_timeout's cancel unanswered: the relay closes it.
    #[inline]
    pub fn server_unresponsive(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed) == GAVE_UP
    }

    /// Gives the server up if timeout `n` is still the last thing that happened to the
    /// command (no byte came from the server, no new command started), and wakes the relay.
    ///
    /// The relay's deadline must still be the one the watchdog claimed (cleared): `n` is
    /// stored after the claim, so on another worker thread the relay may have finished the
    /// command and armed its next one (clearing the word) before `n` landed, leaving `n`
    /// on a command that was never cancelled; that command's armed deadline tells it apart.
    fn give_up_unanswered(&self, n: u32) -> bool {
        let gave_up = !self.deadline.is_armed()
            && self
                .timed_out
                .compare_exchange(n, GAVE_UP, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
        if gave_up {
            self.wake_relay();
        }
        gave_up
    }

    /// The client now runs on the server with `key`.
    #[inline]
    pub fn attach(&self, key: BackendKey) {
        self.server.store(pack(key), Ordering::Release);
    }

    /// The pool's waiter id of the client with `pid` in its wait number `wait` (never 0:
    /// pids are not).
    fn wait_id(pid: u32, wait: u32) -> u64 {
        (u64::from(pid) << 32) | u64::from(wait)
    }

    /// The client's statement starts waiting in its pool's queue: a cancel now withdraws
    /// it (see [`CancelRegistry::cancel_running`]). Returns the wait, whose id
    /// ([`QueuedWait::id`]) the pool's queue is to know it by.
    #[inline]
    pub fn queue(&self) -> QueuedWait {
        let wait = self.waits.load(Ordering::Relaxed).wrapping_add(1);
        self.waits.store(wait, Ordering::Relaxed);
        self.server.store(queued(wait), Ordering::SeqCst);
        QueuedWait {
            wait,
            id: Self::wait_id(self.pid, wait),
        }
    }

    /// The queued client got the server with `key`. `false` if a cancel withdrew its
    /// statement first: it then holds no server, and the key was never visible to a
    /// canceller (so no cancel can reach that server on its account).
    #[inline]
    pub fn attach_after_queue(&self, wait: &QueuedWait, key: BackendKey) -> bool {
        let attached = self.server.compare_exchange(
            queued(wait.wait),
            pack(key),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        if attached.is_err() {
            self.server.store(0, Ordering::SeqCst);
        }
        attached.is_ok()
    }

    /// Whether a cancel withdrew `wait` (it is still queued, marked).
    #[inline]
    pub fn withdrawn(&self, wait: &QueuedWait) -> bool {
        self.server.load(Ordering::SeqCst) == queued(wait.wait) | 1
    }

    /// The queued wait ended without a server; whether a cancel ended it.
    #[inline]
    pub fn leave_queue(&self, wait: &QueuedWait) -> bool {
        self.server.swap(0, Ordering::SeqCst) == queued(wait.wait) | 1
    }

    /// Aims a cancel at the server the client runs on now: until [`CancelRegistry::deliver`]
    /// settles it, the relay cannot give that server up (see `in_flight`). `None`, with
    /// nothing pinned, while the client holds no server.
    fn pin(&self) -> Option<BackendKey> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let key = unpack(self.server.load(Ordering::SeqCst));
        match key {
            // Counted before the cancel can settle: a relay that saw it settle sees this.
            Some(_) => {
                self.aimed.fetch_add(1, Ordering::SeqCst);
            }
            None => self.cancel_settled(),
        }
        key
    }

    /// Cancels aimed at the client's servers so far.
    pub fn cancels_aimed(&self) -> u32 {
        self.aimed.load(Ordering::SeqCst)
    }

    /// A cancel sent to this target's server (or given up) is done with it.
    fn cancel_settled(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.settled.notify_waiters();
        }
    }

    /// Whether a cancel aimed at the server the client held may still reach it.
    #[inline]
    pub fn cancel_pending(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) != 0
    }

    /// The client leaves its server if no cancel aimed at it is in flight (`true`); else
    /// the caller waits in [`CancelTarget::detach`]. The relay's common case, without a
    /// future.
    #[inline]
    pub fn try_detach(&self) -> bool {
        // From here on a new cancel finds no server (see `in_flight`).
        self.server.store(0, Ordering::SeqCst);
        !self.cancel_pending()
    }

    /// The client leaves its server. Returns `false` if a cancel aimed at that server did
    /// not settle in time: the caller must then close the server connection, not reuse it.
    pub async fn detach(&self) -> bool {
        // The common case, with no clock read and no waiter registered.
        if self.try_detach() {
            return true;
        }
        self.settle().await
    }

    /// Waits until no cancel aimed at the client's server is in flight; `false` if one did
    /// not settle within [`CANCEL_SETTLE`].
    async fn settle(&self) -> bool {
        if !self.cancel_pending() {
            return true;
        }
        let deadline = tokio::time::Instant::now() + CANCEL_SETTLE;
        loop {
            let settled = self.settled.notified();
            if !self.cancel_pending() {
                return true;
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return false;
            }
        }
    }
}

#[path = "cancel_hold.rs"]
mod hold;
use hold::HOLD_OFF;

#[path = "cancel_word.rs"]
mod word;
use word::{pack, queued, unpack, QUEUE_MARK};

#[cfg(test)]
#[path = "cancel_tests.rs"]
mod tests;
