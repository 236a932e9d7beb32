//! Pipelining a queued client's first message behind the statement running on a busy
//! connection (`pool.pipeline_queued`).
//!
//! Under a full gate most transactions wait in the pool's queue, and each hand-over costs a
//! round trip through the proxy: PostgreSQL answers, sleeps until the proxy has read the
//! answer and sent the next client's statement, and the proxy sleeps until PostgreSQL has
//! answered that. Here the relay that has just sent its client's carried Query (or the
//! plain Query of a transaction that needed no switch) also sends the next waiter's,
//! prepared before it queued, so that PostgreSQL starts it straight from its socket; the
//! connection goes to that waiter when the running transaction ends (docs/benchmarks.md,
//! session (7): a fifth less CPU per transaction on the seed workload).
//!
//! What keeps one client's reply from reaching another:
//! - the running relay's scan stops at its own last ReadyForQuery (`Tracker::pipelined`);
//!   what follows is the successor's, and stays in the buffer that goes with the
//!   connection;
//! - the successor is committed: it left the queue, so no timeout, cancel or pause ends
//!   its wait, and a connection with its message on it is never released to the pool or
//!   to anyone else; if it leaves, the connection is closed ([`hand_over`]);
//! - the running transaction always ends at its ReadyForQuery: its client leaving or being
//!   killed meanwhile lets the reply run out unread instead of ending it early, and its
//!   client's further messages wait for a connection of their own. A transaction that
//!   ends any other way (a lost or stuck server) closes the connection: the successor gets
//!   08006, its statement's fate unknown, as with any connection lost under a statement;
//! - a cancel sent for the running statement may land on the successor's instead, another
//!   tenant's: the successor then reads its whole reply before it forwards any of it, and
//!   if it was cancelled (57014) sends its message again. A simple Query runs as one
//!   transaction, so nothing of the cancelled one stayed.

use super::carry::{self, FirstQuery};
use super::tracker::{Action, Expect, Tracker};
use super::{SessionState, Stop};
use crate::pool::{After, AppliedTenant, EarlyMessage, Inherited, ServerConn, Successor};
use crate::protocol::framing::{backend, frontend, parse_header};
use crate::protocol::{encode, fields};
use crate::proxy::{ClientConn, ProxyContext, Session};
use crate::tenant::prelude::Leftovers;
use bytes::{Buf, BytesMut};

/// A successor whose message went behind the running transaction's.
pub(super) struct Pipelined {
    next: Successor,
    /// Its message as sent, kept to send again (see [`check_foreign_cancel`]).
    query: BytesMut,
    /// Whether that message carries the tenant switch, and whether the switch releases
    /// advisory locks.
    carried: bool,
    unlocks: bool,
    /// Cancels aimed at the running statement when the message went
    /// (`CancelTarget::cancels_aimed`): more at the end may have hit the successor.
    aimed: u32,
}

/// What a connection's previous holder may have left that a successor's message clears:
/// session-level advisory locks, when the pool's login can take them. Objects and
/// settings it never clears: a connection that may hold them gets no successor.
fn leftovers(unlocks: bool) -> Leftovers {
    Leftovers {
        advisory_locks: unlocks,
        objects: false,
    }
}

/// How much of a reply is held back to see whether a foreign cancel hit it. A cancel that
/// reached the server before the hand-over is acted on at the statement's next interrupt
/// check, long before this much of a result is out; past it the reply goes on as usual.
const HELD_REPLY_LIMIT: usize = 256 * 1024;

/// How long the held-back reply may take when the role has no `command_timeout_ms`.
const HELD_REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The client's first message, built before it queues, if it can go down a busy
/// connection ahead of its turn: a complete simple Query of one plain DML statement that
/// the statement guard has nothing to check in, from a transaction-mode session whose
/// tenant status is fresh and with no session parameters to apply. Two forms: as sent
/// (for a connection that will carry the session's tenant, or none) and, for a session
/// with a tenant, with the whole switch in front, which the relay's carried switch would
/// send on a connection holding no other client's settings or objects ([`leftovers`]).
pub(super) fn early_message(
    client: &ClientConn,
    state: &SessionState,
    session: &Session,
    ctx: &ProxyContext,
) -> Option<Box<EarlyMessage>> {
    let config = &ctx.settings.config;
    if !config.pool.pipeline_queued || ctx.session_mode() {
        return None;
    }
    // A tenant's status must be fresh (the successor looks nothing up); a session without
    // a tenant has none.
    let stale = state.tenant_active_until <= crate::clock::now_ms();
    if config.tenant.check_status && session.tenant.is_some() && stale {
        return None;
    }
    let limit = config.max_client_message_bytes;
    let FirstQuery { len, sql, dml } = FirstQuery::of(&client.buf, limit)?;
    let (mentions, single) = crate::tenant::shape::inspect_given(sql, dml);
    if single != Some(true) || mentions.guarded || mentions.prepared {
        return None;
    }
    let mut early = Box::new(EarlyMessage {
        raw: BytesMut::from(&client.buf[..len]),
        tenant: session.tenant,
        params: state.params.clone(),
        switched: None,
        unlocks: false,
    });
    // The switch resets every parameter; a session with some of its own cannot carry it.
    if session.tenant.is_some() && state.params.is_empty() {
        let unlocks = session
            .pool
            .session_locks
            .load(std::sync::atomic::Ordering::Relaxed);
        let ([unlock, objects, rest], _) = session.prelude.carried(leftovers(unlocks));
        let mut switched = BytesMut::new();
        encode::query_of_parts(&mut switched, &[unlock, objects, rest, b"; ", sql]);
        early.switched = Some(switched);
        early.unlocks = unlocks;
    }
    Some(early)
}

/// Whether a transaction that needs no tenant switch sends one plain DML Query and nothing
/// else, after which its connection will be idle, carrying its tenant (or none): a
/// successor's message may then go behind it ([`send_successor`] with `plain`). Looked at
/// only while clients wait.
pub(super) fn plain_query_ahead(
    client: &ClientConn,
    session: &Session,
    ctx: &ProxyContext,
) -> bool {
    let waiting = &session.pool.stats.clients_waiting;
    if !ctx.settings.config.pool.pipeline_queued
        || waiting.load(std::sync::atomic::Ordering::Relaxed) == 0
        || ctx.session_mode()
    {
        return false;
    }
    let limit = ctx.settings.config.max_client_message_bytes;
    FirstQuery::of(&client.buf, limit)
        .is_some_and(|q| q.len == client.buf.len() && q.dml == Some(true))
}

/// After the client's own carried Query went out whole (or, `plain`, the Query of a
/// session without a tenant, [`plain_query_ahead`]): sends the next waiter's message behind
/// it, if that waiter brought one and the connection holds nothing the message does not
/// clear. The successor goes into `t` ([`hand_over`] at the transaction's end); the
/// client's further messages wait for a connection of their own. Returns what the socket
/// did not take at once, for [`write_rest`] (plain code: the common case sets up no
/// future in the client's task, whose size every idle client pays).
pub(super) fn send_successor(
    server: &mut ServerConn,
    t: &mut Tracker,
    session: &Session,
    ctx: &ProxyContext,
    plain: bool,
) -> Result<Option<BytesMut>, Stop> {
    let target = &session.cancel.target;
    let waiting = &session.pool.stats.clients_waiting;
    if !ctx.settings.config.pool.pipeline_queued
        || waiting.load(std::sync::atomic::Ordering::Relaxed) == 0
        || t.pipelined.is_some()
        || server.may_hold_objects
        || server.may_hold_settings
        || target.cancel_pending()
    {
        return Ok(None);
    }
    if plain && t.replies.len() != 1 {
        return Ok(None);
    }
    let plain_tenant = match server.tenant {
        AppliedTenant::Applied(tenant) if plain => Some(tenant),
        _ => None,
    };
    let after = After {
        plain_tenant,
        holder: session.queue_key,
        locks: server.session_locks,
        params: &server.params,
    };
    let Some(mut next) = session.pool.take_successor(after) else {
        return Ok(None);
    };
    let aimed = target.cancels_aimed();
    let (query, carried, unlocks) = next.take_message();
    // Committed from here: the relay's loop stops at its own ReadyForQuery, and holds
    // whatever more the client sends.
    t.barrier = true;
    t.pipelined = Some(Box::new(Pipelined {
        next,
        query,
        carried,
        unlocks,
        aimed,
    }));
    let query = t
        .pipelined
        .as_ref()
        .map(|p| &p.query[..])
        .unwrap_or_default();
    let n = server
        .stream
        .write_now(query)
        .map_err(|_| Stop::ServerWriteFailed)?;
    // The socket is full (rare: the running Query just went into it): the rest goes
    // before anything is read, or the message would be left half-sent.
    Ok((n < query.len()).then(|| BytesMut::from(&query[n..])))
}

/// Writes what [`send_successor`] or [`takeover`] left.
pub(super) async fn write_rest(server: &mut ServerConn, rest: BytesMut) -> Result<(), Stop> {
    server
        .stream
        .write_all_bytes(&rest)
        .await
        .map_err(|_| Stop::ServerWriteFailed)
}

/// A kill of a session whose transaction has a successor behind it, at a message boundary
/// (the caller waits for one): the client gets the kill's error at once, the statement is
/// cancelled, and the rest of its reply runs out unread so that the connection reaches the
/// successor. The session then ends.
pub(super) fn kill_ahead(
    client: &mut ClientConn,
    t: &mut Tracker,
    session: &Session,
    ctx: &ProxyContext,
) {
    let error = super::errors::killed();
    let bytes = crate::proxy::encode_error(&error);
    // Best effort: a client that reads nothing gets it at the session's end instead.
    if matches!(client.stream.write_now(&bytes), Ok(n) if n == bytes.len()) {
        crate::metrics::count_error(error.code.as_bytes());
        t.killed_told = true;
    }
    client.said_goodbye = true;
    if t.replies.is_empty() {
        return;
    }
    // PostgreSQL ignores a cancel that reaches it before it started the statement, so it
    // goes again until the session leaves the connection (then it reaches nothing: a
    // cancel aimed while the successor's message waited is the successor's to check).
    let (registry, target) = (ctx.cancels.clone(), session.cancel.target.clone());
    tokio::spawn(async move {
        for _ in 0..KILL_CANCELS {
            if !registry.cancel_running(&target).await {
                return;
            }
            tokio::time::sleep(KILL_CANCEL_INTERVAL).await;
        }
    });
}

/// How often, and how far apart, a killed session's statement is cancelled (see
/// [`kill_ahead`]).
const KILL_CANCELS: u32 = 50;
const KILL_CANCEL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Gives the connection to the successor whose message went behind this transaction's.
/// `clean`: the transaction ended at its ReadyForQuery with nothing left on the connection
/// and no cancel in flight; otherwise the connection is closed under the successor, whose
/// read then fails (08006).
pub(super) fn hand_over(mut server: Box<ServerConn>, p: Pipelined, clean: bool, session: &Session) {
    let Pipelined {
        next,
        query,
        carried,
        unlocks,
        aimed,
    } = p;
    let foreign_cancel = clean && session.cancel.target.cancels_aimed() != aimed;
    if !clean {
        tracing::debug!(pool = %session.pool.name, conn = server.id, "closing server connection under a pipelined successor");
        server.stream = crate::net::Stream::Closed;
        server.buf.clear();
    }
    let inherited = Inherited {
        query,
        carried,
        unlocks,
        foreign_cancel,
        cancelled_by_client: false,
    };
    if let Err(back) = session.pool.pass_on(server, next, inherited) {
        // The successor left: its message is on the connection, unanswered.
        drop(back);
    }
}

/// Whether a client that got its connection with its first message on it must first see
/// whether a cancel meant for the statement ahead reached its own ([`check_foreign_cancel`]).
pub(super) fn must_check_foreign_cancel(server: &ServerConn) -> bool {
    server
        .inherited
        .as_ref()
        .is_some_and(|i| i.foreign_cancel && !i.cancelled_by_client)
}

/// Whether a client's cancel came while its first message waited on the connection: it
/// goes there as the transaction starts (`CancelHandle::cancel_until_reply`).
pub(super) fn cancelled_by_client(server: &ServerConn) -> bool {
    server
        .inherited
        .as_ref()
        .is_some_and(|i| i.cancelled_by_client)
}

/// Starts the transaction of a client that got its connection with its first message
/// already on it (after [`check_foreign_cancel`] where it must): takes its Query out of
/// its buffer as sent and notes the reply to come. Returns what a successor's message of
/// its own left unwritten ([`send_successor`]).
pub(super) fn takeover(
    client: &mut ClientConn,
    server: &mut ServerConn,
    t: &mut Tracker,
    session: &Session,
    ctx: &ProxyContext,
) -> Result<Option<BytesMut>, Stop> {
    let Some(inherited) = server.inherited.take() else {
        return Ok(None);
    };
    server.settings_owner = session.cancel.target.pid;
    let action = if inherited.carried {
        crate::pool::PoolStats::add(&session.pool.stats.tenant_switches, 1);
        // Its RESET ALL puts every parameter back to the connection's startup value.
        server.params = crate::proxy::session_params::ParamSet::default();
        let (parts, skip) = session.prelude.carried(leftovers(inherited.unlocks));
        carry::carried_action(parts, skip)
    } else {
        Action::Pass
    };
    if !account_sent(client, t, &inherited, action) {
        // The client's buffer no longer holds what went: the message ran unaccounted for.
        tracing::error!(pool = %session.pool.name, "a pipelined message is not the client's; closing the connection");
        return Err(Stop::ServerGone { fatal_sent: false });
    }
    if inherited.foreign_cancel || inherited.cancelled_by_client {
        return Ok(None);
    }
    send_successor(server, t, session, ctx, !inherited.carried)
}

/// The bookkeeping of a Query sent ahead of its turn, as if it were forwarded now: its
/// reply expected, read by `action`, and its bytes taken out of the client's buffer.
/// [`early_message`] looked at its SQL before it queued (one plain DML statement, nothing
/// for the statement guard, no SQL-level statements), so nothing else of
/// `upstream::scan_client` applies and the SQL is not scanned again: only checked to be the
/// very message that went. `false` if it is not.
fn account_sent(
    client: &mut ClientConn,
    t: &mut Tracker,
    sent: &Inherited,
    action: Action,
) -> bool {
    let Ok(Some(h)) = parse_header(&client.buf) else {
        return false;
    };
    let len = h.frame_len;
    if h.tag != frontend::QUERY || client.buf.len() < len {
        return false;
    }
    // The carried form ends with the client's SQL and its terminator, after the switch.
    let same = if sent.carried {
        sent.query.ends_with(&client.buf[5..len])
    } else {
        sent.query[..] == client.buf[..len]
    };
    if !same {
        return false;
    }
    t.queries += 1;
    t.push(Expect::Ready { simple: true }, action);
    t.bytes_in += len as u64;
    client.buf.advance(len);
    // As `carry::try_carry`: the client's next messages wait for the carried one's answer.
    t.barrier |= sent.carried;
    true
}

/// Reads the successor's reply up to its ReadyForQuery before any of it is forwarded: if a
/// cancel meant for the statement before cancelled it (57014), the reply is dropped and
/// the message sent again.
pub(super) async fn check_foreign_cancel(
    server: &mut ServerConn,
    session: &Session,
) -> Result<(), Stop> {
    let limit = session
        .pool
        .limits
        .command_timeout
        .unwrap_or(HELD_REPLY_TIMEOUT);
    let read = async {
        loop {
            match reply_end(&server.buf) {
                Some(end) => return Ok(Some(end)),
                None if server.buf.len() >= HELD_REPLY_LIMIT => return Ok(None),
                None => {}
            }
            super::room_for_server_read(&mut server.buf);
            match server.stream.read_into(&mut server.buf).await {
                Ok(n) if n > 0 => {}
                _ => return Err(Stop::ServerGone { fatal_sent: false }),
            }
        }
    };
    let Some((end, cancelled)) = tokio::time::timeout(limit, read)
        .await
        .map_err(|_| Stop::ServerUnresponsive)??
    else {
        return Ok(());
    };
    if cancelled {
        server.buf.advance(end);
        let query = server.inherited.as_ref().map(|i| i.query.clone());
        server
            .stream
            .write_all_bytes(&query.unwrap_or_default())
            .await
            .map_err(|_| Stop::ServerWriteFailed)?;
        crate::pool::PoolStats::add(&session.pool.stats.resent, 1);
    }
    Ok(())
}

/// Where the first reply in `buf` ends (after its ReadyForQuery) and whether it holds a
/// 57014; `None` while it is incomplete.
fn reply_end(buf: &[u8]) -> Option<(usize, bool)> {
    let (mut pos, mut cancelled) = (0, false);
    loop {
        let h = parse_header(&buf[pos..]).ok()??;
        let body = buf.get(pos + 5..pos + h.frame_len)?;
        if h.tag == backend::ERROR_RESPONSE {
            cancelled |= fields::sqlstate(body) == Some(*b"57014");
        }
        pos += h.frame_len;
        if h.tag == backend::READY_FOR_QUERY {
            return Some((pos, cancelled));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::reply_end;
    use crate::protocol::encode;
    use bytes::BytesMut;

    fn error(code: &str) -> BytesMut {
        let mut b = BytesMut::new();
        let body = format!("SERROR\0C{code}\0Mx\0\0");
        b.extend_from_slice(b"E");
        b.extend_from_slice(&(4 + body.len() as i32).to_be_bytes());
        b.extend_from_slice(body.as_bytes());
        b
    }

    #[test]
    fn a_reply_ends_at_its_ready_for_query_and_tells_a_cancel() {
        let mut ok = BytesMut::new();
        ok.extend_from_slice(b"C\0\0\0\x0dUPDATE 1\0");
        encode::ready_for_query(&mut ok, b'I');
        assert_eq!(reply_end(&ok), Some((ok.len(), false)));
        assert_eq!(reply_end(&ok[..ok.len() - 1]), None, "incomplete");

        let mut cancelled = error("57014");
        let end = cancelled.len() + 6;
        encode::ready_for_query(&mut cancelled, b'I');
        cancelled.extend_from_slice(b"C\0\0\0\x0dUPDATE 1\0");
        assert_eq!(
            reply_end(&cancelled),
            Some((end, true)),
            "stops at the first"
        );

        let mut other = error("23505");
        encode::ready_for_query(&mut other, b'I');
        assert_eq!(reply_end(&other), Some((other.len(), false)));
    }
}
