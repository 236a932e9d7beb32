//! The transaction relay: the hot path.
//!
//! While the client idles it holds no server and no read buffer. Its first complete
//! message checks out a server; from then on client bytes go to the server and server bytes
//! to the client as whole slices of the read buffers, while only message headers are
//! scanned. The server goes back to the pool when every sync point sent has been answered,
//! the last ReadyForQuery says idle, and no message is half-sent in either direction.

mod carry;
mod client_write;
mod deadline;
mod downstream;
mod duplex;
mod errors;
mod farewell;
mod first_send;
mod interrupt;
mod last_words;
mod local;
mod pipeline;
mod queued;
mod server_end;
mod tracker;
mod upstream;

use super::session_params::ParamSet;
use super::statements::ClientStatements;
use super::{ClientConn, ProxyContext, Session};
use crate::config::PoolMode;
use crate::error::{ClientError, ErrorKind};
use crate::pool::{AppliedTenant, PoolStats, ServerConn};
use crate::protocol::codes;
use deadline::CommandDeadline;
use downstream::{forward_server, forward_server_now};
use errors::{idle_without_sync, oversized, server_lost};
use first_send::send_with_settings;
use interrupt::{end_requested, interrupted, killed};
use server_end::{abandon, give_back_idle, reset_session};
use tracker::Tracker;
use upstream::{forward_client, forward_client_now};

use crate::protocol::framing::{frontend, parse_header};
use bytes::BytesMut;

/// Server reads reserve this much room; large result sets stream through it.
const SERVER_READ_CHUNK: usize = 16 * 1024;

/// Makes room in a server read buffer before a read: a chunk more once less than 4 KiB is
/// left, so that a read is never a sliver.
#[inline]
fn room_for_server_read(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(SERVER_READ_CHUNK);
    }
}

/// What a client carries from one transaction to the next.
pub(super) struct SessionState {
    /// Its named prepared statements.
    pub statements: ClientStatements,
    /// Its session parameters.
    pub params: ParamSet,
    /// Until when (coarse clock) its tenant is known to be active: no lookup before then.
    pub tenant_active_until: u64,
}

/// How the relay ended.
pub(super) struct RelayEnd {
    pub stats: ClientStats,
    /// An error for the client, sent before its connection closes.
    pub error: Option<ClientError>,
}

#[derive(Default, Clone, Copy)]
pub(super) struct ClientStats {
    pub transactions: u64,
}

/// What stopped a transaction early.
enum Stop {
    /// The client closed or broke its connection.
    ClientGone,
    /// The client broke the protocol; tell it and close.
    Client(ClientError),
    /// The server went away (its FATAL already forwarded if `fatal_sent`).
    ServerGone { fatal_sent: bool },
    /// A write to the server failed: it closed or reset the connection, maybe after a
    /// FATAL still unread (`last_words::hear` reads it before the session ends).
    ServerWriteFailed,
    /// The server left command_timeout's cancel unanswered (`CancelTarget::server_unresponsive`).
    ServerUnresponsive,
    /// The server refused the tenant prelude.
    Prelude(String),
    /// The tenant status lookup lost its server before the client's messages went;
    /// `cancelled`: a client's cancel waited for the lookup.
    LookupLost { cancelled: bool, error: ClientError },
}

pub(super) async fn run(
    client: &mut ClientConn,
    session: &Session,
    ctx: &ProxyContext,
) -> RelayEnd {
    let mut stats = ClientStats::default();
    let session_mode = ctx.settings.config.pool.mode == PoolMode::Session;
    let mut held: Option<Box<ServerConn>> = None;
    let mut t = Tracker::default();
    let mut state = SessionState {
        statements: ClientStatements::default(),
        params: session.startup_params.clone(),
        tenant_active_until: 0,
    };
    // One shutdown waiter for the whole session, registered once, instead of one per idle
    // wait (each a locked insert into and removal from the token's waiter list).
    let waiter = std::pin::pin!(ctx.shutdown.triggered());
    let mut shutdown = ctx.shutdown.watch(waiter);
    // The watchdog wakes this task when a server leaves command_timeout's cancel unanswered.
    std::future::poll_fn(|cx| {
        session.cancel.target.watch_relay(cx.waker());
        std::task::Poll::Ready(())
    })
    .await;
    // The waiting statement lost a connection under its tenant lookup (it gets one more).
    let mut lookup_retried = false;
    let error = loop {
        if held.is_none() {
            let target = &*session.cancel.target;
            let fresh = stats.transactions == 0;
            match wait_for_work(client, &mut state, ctx, target, &mut shutdown, fresh).await {
                Ok(true) => {}
                Ok(false) => break None,
                Err(e) => break e,
            }
            // A kill that came with the client's message: the message is never sent.
            if target.is_killed() {
                break Some(errors::killed());
            }
            // An idle connection is taken without setting up acquire's future.
            if let Some(server) = session.pool.try_acquire(session.queue_key) {
                session.cancel.target.attach(server.key);
                held = Some(server);
            } else {
                let early = pipeline::early_message(client, &state, session, ctx);
                match queued::checkout(client, session, early).await {
                    queued::Checkout::Server(server) => held = Some(server),
                    // Its message is on the connection: the cancel goes there, as
                    // the transaction starts.
                    queued::Checkout::CancelledAhead(server) => held = Some(server),
                    queued::Checkout::Gone => break None,
                    queued::Checkout::Killed => break Some(errors::killed()),
                    queued::Checkout::Cancelled => {
                        match queued::answer_cancelled(client, ctx, &mut shutdown).await {
                            Ok(()) => continue,
                            Err(e) => break e,
                        }
                    }
                    queued::Checkout::Failed(e) => {
                        break Some(e.to_client_error(
                            &session.pool.name,
                            ctx.settings.config.pool.acquire_timeout_ms,
                        ))
                    }
                }
            }
        }
        let Some(mut server) = held.take() else {
            break None;
        };
        let _active = crate::pool::GaugeGuard::new(&session.pool.stats.clients_active);
        let _in_flight = crate::runtime::InFlight::start();
        t.start();
        let result = match transaction(
            client,
            &mut server,
            &mut t,
            &mut state,
            session,
            ctx,
            session_mode,
        )
        .await
        {
            Err(Stop::ServerWriteFailed) => {
                let hear = last_words::hear(client, &mut server, &mut t, &mut state, session);
                Err(Box::pin(hear).await)
            }
            other => other,
        };
        if t.resets.settings {
            // The tenant is cleared (fail-closed) and goes on again before the next
            // transaction; the session's parameters are back to their startup values.
            server.tenant = AppliedTenant::Unknown;
            server.params = ParamSet::default();
            state.params = session.startup_params.clone();
        }
        if t.resets.everything {
            server.statements.clear();
            state.statements.clear();
        }
        let stats_pool = &session.pool.stats;
        PoolStats::add(&stats_pool.queries, t.queries);
        PoolStats::add(&stats_pool.bytes_from_clients, t.bytes_in);
        PoolStats::add(&stats_pool.bytes_from_server, t.bytes_out);
        if let Some(next) = t.pipelined.take() {
            // A successor's message waits on the connection: it goes to that successor,
            // whatever became of this transaction (relay::pipeline).
            let target = &session.cancel.target;
            let ended = result.is_ok() && t.is_clean() && !t.server_unknown;
            let settled = if ended {
                target.try_detach() || Box::pin(target.detach()).await
            } else {
                if !t.replies.is_empty() {
                    // Its locks go with it; the connection closes under the successor.
                    Box::pin(ctx.cancels.cancel_running(target)).await;
                }
                // No cancel of this client's reaches the connection from here on.
                Box::pin(target.detach()).await;
                false
            };
            pipeline::hand_over(server, *next, settled, session);
            match result {
                Ok(()) => {
                    lookup_retried = false;
                    count_transaction(&mut stats, stats_pool);
                    if target.is_killed() {
                        break (!t.killed_told).then(errors::killed);
                    }
                    // Its client left while the reply ran out (not a Terminate it sent).
                    if t.terminated || (client.said_goodbye && !client.goodbye_buffered()) {
                        break None;
                    }
                    continue;
                }
                Err(stop) => break stop_error(stop, None, session),
            }
        }
        match result {
            Ok(()) => {
                lookup_retried = false;
                count_transaction(&mut stats, stats_pool);
                let settled =
                    session.cancel.target.try_detach() || session.cancel.target.detach().await;
                if settled
                    && t.is_clean()
                    && !t.server_unknown
                    && (!session_mode || Box::pin(reset_session(&mut server)).await)
                {
                    if server.buf.is_empty() {
                        // The next reply lands at the buffer's start, in the lines this one
                        // used, rather than marching through all of its 16 KiB (a cold line
                        // for the kernel to fill and the scan to read, per reply).
                        let _ = server.buf.try_reclaim(server.buf.capacity() + 1);
                    }
                    session.pool.release(server);
                } else if t.terminated && !t.replies.is_empty() {
                    Box::pin(farewell::run_out(server, session)).await;
                } else {
                    drop(server);
                }
                if t.terminated {
                    break None;
                }
            }
            Err(Stop::LookupLost { cancelled, error }) => {
                let _ = Box::pin(abandon(server, &t, session, ctx)).await;
                let retry = (cancelled, &mut lookup_retried, error);
                if let Err(e) = queued::after_lost_lookup(client, ctx, &mut shutdown, retry).await {
                    break e;
                }
            }
            Err(Stop::Client(e)) if session_mode && t.is_clean() => {
                // Ended between transactions (a kill, the idle reaper): the connection is
                // in a known state, and goes back to the pool reset.
                Box::pin(give_back_idle(server, session)).await;
                break Some(e);
            }
            Err(stop) => {
                // Rare paths are boxed: a client's task is as large as its largest await
                // point, and thousands of idle clients each keep one.
                let error = Box::pin(abandon(server, &t, session, ctx)).await;
                break stop_error(stop, error, session);
            }
        }
    };
    if let Some(server) = held.take() {
        // Session mode: the client left while holding its server.
        t.start();
        let _ = Box::pin(abandon(server, &t, session, ctx)).await;
    }
    RelayEnd { stats, error }
}

/// A transaction that ended at its ReadyForQuery, counted for the client, its pool and
/// the runtime's event coalescing.
fn count_transaction(stats: &mut ClientStats, pool: &PoolStats) {
    stats.transactions += 1;
    crate::runtime::note_transaction();
    PoolStats::add(&pool.transactions, 1);
}

/// The error a transaction's early stop gives its client (`gone`: what the abandoned
/// server's end said, for a client that left).
fn stop_error(stop: Stop, gone: Option<ClientError>, session: &Session) -> Option<ClientError> {
    match stop {
        Stop::ClientGone => gone,
        Stop::Client(e) => Some(e),
        Stop::ServerGone { fatal_sent: true } => None,
        Stop::ServerGone { fatal_sent: false } | Stop::ServerWriteFailed => Some(server_lost()),
        Stop::ServerUnresponsive => Some(errors::server_unresponsive(session)),
        Stop::LookupLost { error, .. } => Some(error),
        Stop::Prelude(e) => {
            tracing::error!(pool = %session.pool.name, error = %e, "the server refused the tenant settings");
            Some(
                ClientError::fatal(
                    ErrorKind::Server,
                    codes::INTERNAL_ERROR,
                    "launch-proxy could not apply the tenant to the server connection",
                )
                .with_detail(format!(
                    "the server answered: {e}; none of the transaction's statements ran"
                )),
            )
        }
    }
}

/// Bytes of a client's messages read while they are held (see the transaction loop).
const HELD_READ_LIMIT: usize = 256 * 1024;

/// Waits, holding no server, until the client has a complete message to run. Returns
/// `Ok(false)` when the client ended the session. `fresh`: the session has run no
/// transaction yet.
async fn wait_for_work(
    client: &mut ClientConn,
    state: &mut SessionState,
    ctx: &ProxyContext,
    target: &super::cancel::CancelTarget,
    shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
    fresh: bool,
) -> Result<bool, Option<ClientError>> {
    loop {
        if !client.buf.is_empty() {
            match parse_header(&client.buf) {
                Err(_) => return Err(Some(ClientError::protocol("invalid message length"))),
                Ok(Some(h)) if h.tag == frontend::TERMINATE => return Ok(false),
                Ok(Some(h)) if h.frame_len > ctx.settings.config.max_client_message_bytes => {
                    return Err(Some(oversized(h, ctx)))
                }
                Ok(Some(h)) if h.tag == frontend::PARSE && !ctx.session_mode() => {
                    let mut reply = BytesMut::new();
                    let answered = local::answer_prepare(
                        &client.buf,
                        &mut state.statements,
                        &ctx.statements,
                        &mut reply,
                    );
                    match answered {
                        Some(len) => {
                            bytes::Buf::advance(&mut client.buf, len);
                            if client.write(&reply).await.is_err() {
                                return Ok(false);
                            }
                            continue;
                        }
                        None if client.buf.len() >= h.frame_len => return Ok(true),
                        None => {}
                    }
                }
                Ok(Some(h))
                    if client.buf.len() >= h.frame_len
                        || upstream::starts_streaming(&client.buf, h) =>
                {
                    return Ok(true)
                }
                _ => {}
            }
        } else if client.holds_buffer() {
            // An idle client keeps no buffer: thousands of idle clients cost sockets only.
            client.give_back_buffer();
        }
        let read = if ctx.shutdown.is_triggered() {
            // Boxed: its timer would otherwise grow every client's task.
            match Box::pin(interrupt::drain_read(client, ctx, fresh)).await {
                Some(read) => read,
                None => return Err(Some(ClientError::shutting_down())),
            }
        } else {
            // Idle since the client last sent something, also halfway through a message:
            // one that stops there is as idle as one between messages, and as killable.
            target.end.mark_idle(crate::clock::now_ms());
            // Biased: a fixed order costs no random draw per wait.
            tokio::select! {
                biased;
                r = client.stream.wait_readable() => if r.is_err() { return Ok(false) },
                _ = &mut *shutdown => continue,
                end = end_requested(target) => {
                    let limit = ctx.settings.config.client_idle_timeout_ms;
                    match interrupt::idle_wait_ends(target, end, limit) {
                        Some(e) => return Err(Some(e)),
                        None => continue,
                    }
                }
            }
            client.read_more().await
        };
        match read {
            Err(e) if e.kind() == std::io::ErrorKind::OutOfMemory => {
                return Err(Some(ClientConn::refusal(e)))
            }
            Ok(0) | Err(_) => return Ok(false),
            Ok(_) => {}
        }
    }
}

/// Relays one transaction (or, in session mode, the whole session) on `server`.
async fn transaction(
    client: &mut ClientConn,
    server: &mut ServerConn,
    t: &mut Tracker,
    state: &mut SessionState,
    session: &Session,
    ctx: &ProxyContext,
    session_mode: bool,
) -> Result<(), Stop> {
    let command_timeout = session.pool.limits.command_timeout;
    let target = &*session.cancel.target;
    // Whatever way this function returns, no deadline stays armed.
    let _disarm = DisarmOnReturn(target);
    let mut deadline = CommandDeadline::new(t);
    // What a synchronous forward left for its async counterpart; one slot each, reused.
    let mut client_left = None;
    let mut server_left = None;
    if server.inherited.is_some() {
        // Its first message went ahead of its turn (relay::pipeline).
        if pipeline::must_check_foreign_cancel(server) {
            Box::pin(pipeline::check_foreign_cancel(server, session)).await?;
        } else if pipeline::cancelled_by_client(server) {
            t.cancel_resent = session.cancel.cancel_until_reply();
        }
        if let Some(rest) = pipeline::takeover(client, server, t, session, ctx)? {
            Box::pin(pipeline::write_rest(server, rest)).await?;
        }
    } else {
        let checked = state.tenant_active_until > crate::clock::now_ms();
        if let (Some(tenant), true, false) = (
            &session.tenant,
            ctx.settings.config.tenant.check_status,
            checked,
        ) {
            use super::tenant_status::{refused, LookupError, Status};
            let (status, until) = match ctx.tenant_status.fresh(tenant) {
                Some(s) => s,
                None => {
                    target.hold_cancels().await;
                    t.cancels_held = true;
                    ctx.tenant_status
                        .refresh(tenant, server, session.server_major)
                        .await
                        .map_err(|e| match e {
                            LookupError::Lost(_) => Stop::LookupLost {
                                cancelled: target.release_cancels(),
                                error: e.to_client_error(),
                            },
                            LookupError::Failed(_) => Stop::Client(e.to_client_error()),
                        })?
                }
            };
            if let Status::Refused(s) = status {
                return Err(Stop::Client(refused(tenant, &s)));
            }
            state.tenant_active_until = until;
        }
        // A client may have left settings the proxy does not follow (SET SESSION
        // CHARACTERISTICS, set_config, a value it cannot write again): the switch's RESET ALL
        // runs before another client's next transaction, the same tenant's included. The
        // client's own next transaction keeps them, as on a connection of its own.
        let me = session.cancel.target.pid;
        let tenant_changes = server.tenant != AppliedTenant::Applied(session.tenant);
        let foreign_settings = server.may_hold_settings && server.settings_owner != me;
        let tenant_needed = tenant_changes || (foreign_settings && !session_mode);
        server.settings_owner = me;
        if tenant_needed {
            crate::pool::PoolStats::add(&session.pool.stats.tenant_switches, 1);
        }
        let mut params_sql = String::new();
        if !tenant_needed {
            state.params.apply_to(&mut server.params, &mut params_sql);
        }
        if !tenant_needed && params_sql.is_empty() {
            // The common case, with nothing to put in front of the client's messages: its
            // locals stay out of this future (see upstream::forward_client_now).
            let plain = pipeline::plain_query_ahead(client, session, ctx);
            if forward_client_now(client, server, t, state, ctx, &mut client_left)? {
                if let Some(rest) =
                    forward_client(client, server, t, state, ctx, None, client_left.take())?
                {
                    duplex::finish(client, server, t, state, session, &mut deadline, rest).await?;
                }
            } else if plain {
                if let Some(rest) = pipeline::send_successor(server, t, session, ctx, true)? {
                    Box::pin(pipeline::write_rest(server, rest)).await?;
                }
            }
        } else {
            let rest = send_with_settings(
                client,
                server,
                t,
                state,
                session,
                ctx,
                session_mode,
                tenant_needed,
                !tenant_changes,
                params_sql,
            )
            .await?;
            if let Some(rest) = rest {
                duplex::finish(client, server, t, state, session, &mut deadline, rest).await?;
            }
        }
    }
    release_held_cancels(t, session);
    if forward_server_now(client, server, t, state, session, &mut server_left)? {
        forward_server(client, server, t, state, session, server_left.take()).await?;
    }
    deadline.after_forward(target, t);
    let gated = session.pool.is_gated();
    let mut paused = false;
    // Session mode: idle between transactions, which the idle reaper ends as it ends an
    // idle session of transaction mode (`client_idle_timeout_ms`; 0 = never).
    let reap_after_ms = ctx.settings.config.client_idle_timeout_ms;
    let mut idle_holding = false;
    loop {
        // Also here, not only in the select's last branch: while the server or the client
        // streams (a large result, COPY), the reads ahead of it are always ready. Never
        // halfway through a message to the client.
        // With a successor's message behind this transaction's, a kill cancels the
        // statement and lets its reply run out unread (relay::pipeline), once.
        let mid_message =
            t.mid_message_to_client() || (t.pipelined.is_some() && client.said_goodbye);
        if target.is_killed() && !mid_message {
            if t.pipelined.is_none() {
                return Err(Stop::Client(errors::killed()));
            }
            pipeline::kill_ahead(client, t, session, ctx);
            continue;
        }
        if t.pipelined_reply_over() {
            // Nothing more of this client's goes down a connection holding the successor's.
            return if t.is_clean() {
                Ok(())
            } else {
                Err(Stop::ServerGone { fatal_sent: false })
            };
        }
        if t.resume_client {
            // The transaction status held messages waited for is known (Tracker::status_wait).
            t.resume_client = false;
            if forward_client_now(client, server, t, state, ctx, &mut client_left)? {
                if let Some(rest) =
                    forward_client(client, server, t, state, ctx, None, client_left.take())?
                {
                    duplex::finish(client, server, t, state, session, &mut deadline, rest).await?;
                }
            }
            if forward_server_now(client, server, t, state, session, &mut server_left)? {
                forward_server(client, server, t, state, session, server_left.take()).await?;
            }
            continue;
        }
        if t.terminated || (!session_mode && t.is_clean()) {
            return Ok(());
        }
        if gated && t.replies.is_empty() != paused {
            // Waiting for its client, the transaction runs no statement: it leaves the
            // pool's count of running ones and rejoins it, without waiting, when the client
            // sends more (pool::gate).
            paused = !paused;
            if paused {
                session.pool.pause(server);
            } else {
                session.pool.resume(server);
            }
        }
        if let Some(limit) = command_timeout {
            deadline.before_wait(target, t, limit);
        }
        if session_mode && t.is_clean() != idle_holding {
            idle_holding = !idle_holding;
            target
                .end
                .mark_idle_holding(idle_holding, crate::clock::now_ms());
        }
        let idle_end = (idle_holding && reap_after_ms > 0).then_some(reap_after_ms);
        room_for_server_read(&mut server.buf);
        if let Err(e) = client.make_room() {
            return Err(Stop::Client(ClientConn::refusal(e)));
        }
        // Between a message and its Sync PostgreSQL has not said ReadyForQuery, so its own
        // idle-in-transaction timeout is not armed, and a client that goes quiet there would
        // hold the connection for ever: the proxy applies the role's limit itself. (Lazy:
        // no clock read unless the branch runs.)
        let idle_limit = session.pool.limits.idle_in_transaction;
        // Only where nothing is left for the server to answer, or it was never asked to
        // answer (no Flush): a client waiting for a long statement is not quiet.
        let stuck = t.replies.is_empty() || t.awaits_flush;
        let quiet_unsynced = !session_mode && t.unsynced && stuck && idle_limit.is_some();
        // While its messages are held (the carried switch's answer, or a transaction
        // status, is awaited) the client is read only up to a bound: reading on would
        // buffer whatever it sends meanwhile (red team: 1 GiB of CopyData behind a sleeping
        // query took 2.5 GiB). Its socket then pushes back; the server's answer ends the hold.
        let read_client = !((t.barrier || t.status_wait) && client.buf.len() >= HELD_READ_LIMIT)
            && !client.said_goodbye;
        let quiet_for = async {
            match idle_limit {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        // Biased, server first: no random draw per wakeup, and replies (which end the
        // transaction) go before more of the client's input. Both reads are cancel-safe.
        tokio::select! {
            biased;
            r = server.stream.read_into(&mut server.buf) => match r {
                Ok(0) | Err(_) => return Err(Stop::ServerGone { fatal_sent: t.server_fatal }),
                Ok(_) => {
                    deadline.on_server_bytes(target, t);
                    if forward_server_now(client, server, t, state, session, &mut server_left)? {
                        forward_server(client, server, t, state, session, server_left.take()).await?;
                    }
                    deadline.after_forward(target, t);
                }
            },
            r = client.stream.read_into(&mut client.buf), if read_client => match r {
                Ok(0) | Err(_) if client.goodbye_buffered() => client.said_goodbye = true,
                // The reply runs out unread, and the successor gets the connection.
                Ok(0) | Err(_) if t.pipelined.is_some() => client.said_goodbye = true,
                Ok(0) | Err(_) => return Err(Stop::ClientGone),
                Ok(_) => {
                    if forward_client_now(client, server, t, state, ctx, &mut client_left)? {
                        if let Some(rest) = forward_client(client, server, t, state, ctx, None, client_left.take())? {
                            duplex::finish(client, server, t, state, session, &mut deadline, rest).await?;
                        }
                    }
                    if forward_server_now(client, server, t, state, session, &mut server_left)? {
                        forward_server(client, server, t, state, session, server_left.take()).await?;
                    }
                }
            },
            () = quiet_for, if quiet_unsynced => {
                return Err(Stop::Client(idle_without_sync(idle_limit.unwrap_or_default())));
            }
            stop = interrupted(target, deadline.watched(t), mid_message, idle_end) => {
                if t.pipelined.is_some() && matches!(stop, Stop::Client(_)) && target.is_killed() {
                    continue; // the loop's top handles it
                }
                return Err(stop);
            }
        }
    }
}

/// Clears the client's command deadline when a transaction's relay ends, and a cancel
/// that waited for the proxy's own statements (the transaction ended before the client's)
/// or is still sent again (`cancel_hold`).
struct DisarmOnReturn<'a>(&'a super::cancel::CancelTarget);

impl Drop for DisarmOnReturn<'_> {
    fn drop(&mut self) {
        self.0.disarm_command();
        self.0.release_cancels();
        self.0.reply_began();
    }
}

/// Lets the client's cancels through once the proxy's own statements ahead of its are
/// answered (see `CancelTarget::hold_cancels`), sending one that waited.
#[inline]
fn release_held_cancels(t: &mut Tracker, session: &Session) {
    if t.cancels_held && !t.replies.front().is_some_and(|r| r.action.is_dropped()) {
        t.cancels_held = false;
        if session.cancel.target.release_cancels() {
            t.cancel_resent = session.cancel.cancel_until_reply();
        }
    }
}
