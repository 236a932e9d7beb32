//! The queued checkout: a client whose statement waits for a server connection (the pool
//! is busy, or `max_active` statements run). While it waits, its socket is watched (one
//! that hangs up leaves the queue) and its cancel key withdraws the statement: PostgreSQL
//! never sees it, and the client gets the 57014 a running statement would have got.

use super::super::cancel::QueuedWait;
use super::super::{ClientConn, ProxyContext, Session};
use crate::error::{ClientError, ErrorKind};
use crate::pool::{AcquireError, PoolStats, ServerConn};
use crate::protocol::codes;
use crate::protocol::framing::{frontend, parse_header};

/// How a queued checkout ended.
pub(super) enum Checkout {
    Server(Box<ServerConn>),
    /// The client hung up while queued: its messages are never sent.
    Gone,
    /// The admin console ended the session while it queued: its messages are never sent.
    Killed,
    /// A CancelRequest withdrew the statement (answer with [`answer_cancelled`]).
    Cancelled,
    /// A CancelRequest came for a statement already sent ahead of its turn
    /// (`relay::pipeline`): the connection is the client's, and the cancel goes to it.
    CancelledAhead(Box<ServerConn>),
    Failed(AcquireError),
}

/// Queues the client for a server connection ([`crate::pool::Pool::acquire_as`]); the
/// server it gets is attached to its cancel key. `early`: its first message, ready to be
/// sent ahead of its turn (`relay::pipeline`).
pub(super) async fn checkout(
    client: &ClientConn,
    session: &Session,
    early: Option<Box<crate::pool::EarlyMessage>>,
) -> Checkout {
    let target = &*session.cancel.target;
    let wait = target.queue();
    let cancelled = || {
        PoolStats::add(&session.pool.stats.waits_withdrawn, 1);
        Checkout::Cancelled
    };
    match acquire_watching(client, session, &wait, early).await {
        // Killed as it was handed over: nothing is sent on it, unless its message went
        // ahead, unanswered: then the connection is closed.
        Ok(Some(server)) if target.is_killed() => {
            target.leave_queue(&wait);
            if server.inherited.is_none() {
                session.pool.release_unused(server);
            }
            Checkout::Killed
        }
        Ok(Some(server)) if target.attach_after_queue(&wait, server.key) => {
            Checkout::Server(server)
        }
        Ok(Some(mut server)) if server.inherited.is_some() => {
            target.leave_queue(&wait);
            target.attach(server.key);
            if let Some(inherited) = server.inherited.as_mut() {
                inherited.cancelled_by_client = true;
            }
            Checkout::CancelledAhead(server)
        }
        Ok(Some(server)) => {
            // Cancelled as it was handed over: nothing was sent on it.
            session.pool.release_unused(server);
            cancelled()
        }
        Ok(None) => {
            target.leave_queue(&wait);
            if target.is_killed() {
                Checkout::Killed
            } else {
                Checkout::Gone
            }
        }
        // Withdrawn, or timed out as the cancel came.
        Err(e) => {
            if target.leave_queue(&wait) {
                cancelled()
            } else {
                Checkout::Failed(e)
            }
        }
    }
}

/// The queued checkout, watching the client meanwhile: one that hangs up leaves the queue
/// (`Ok(None)`), so its statement is never sent and no server connection is spent on it.
/// Once it sends more, the watch ends (its bytes stay in the socket for the transaction).
/// A client whose buffered messages end in Terminate closed cleanly after sending them, as
/// `PQsendQuery` then `PQfinish` does: they run.
async fn acquire_watching(
    client: &ClientConn,
    session: &Session,
    wait: &QueuedWait,
    early: Option<Box<crate::pool::EarlyMessage>>,
) -> Result<Option<Box<ServerConn>>, AcquireError> {
    let target = &*session.cancel.target;
    let withdrawn = || target.withdrawn(wait);
    let acquire = session
        .pool
        .acquire_as(wait.id, session.queue_key, withdrawn, early);
    tokio::pin!(acquire);
    let mut watching = !client.goodbye_buffered();
    loop {
        tokio::select! {
            biased;
            conn = &mut acquire => return conn.map(Some),
            gone = client.stream.hung_up(), if watching => {
                if gone {
                    return Ok(None);
                }
                watching = false;
            }
            () = super::killed(target) => return Ok(None),
        }
    }
}

/// Answers a statement withdrawn by a cancel as PostgreSQL answers one cancelled while it
/// runs: the 57014 at once; for the extended protocol, the rest of the batch up to its Sync
/// skipped, then ReadyForQuery (a queued client is between transactions: idle). A simple
/// Query or FunctionCall is answered alone; the messages after it run as usual. A lone
/// Sync or Flush had nothing to cancel and gets its usual answer. Returns `Err(None)` when
/// the client ended the session meanwhile.
pub(super) async fn answer_cancelled(
    client: &mut ClientConn,
    ctx: &ProxyContext,
    shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> Result<(), Option<ClientError>> {
    let error = ClientError::error(
        ErrorKind::Cancel,
        codes::QUERY_CANCELED,
        "canceling statement due to user request",
    )
    .with_detail("the statement was waiting for a server connection and was never sent");
    let first = parse_header(&client.buf).ok().flatten();
    if let Some(h) = first.filter(|h| client.buf.len() >= h.frame_len) {
        if matches!(h.tag, frontend::SYNC | frontend::FLUSH) {
            // Nothing would have run: PostgreSQL ignores a cancel then, and answers a lone
            // Sync with ReadyForQuery, a lone Flush with nothing.
            bytes::Buf::advance(&mut client.buf, h.frame_len);
            if h.tag == frontend::SYNC {
                let mut out = bytes::BytesMut::with_capacity(6);
                crate::protocol::encode::ready_for_query(&mut out, b'I');
                client.write(&out).await.map_err(|_| None)?;
            }
            return Ok(());
        }
    }
    crate::metrics::count_error(error.code.as_bytes());
    let mut out = super::super::encode_error(&error);
    let simple = first.is_some_and(|h| matches!(h.tag, frontend::QUERY | frontend::FUNCTION_CALL));
    if !simple {
        // The error goes out before the Sync is in: a client that flushed and waits for
        // its results must not wait for it.
        client.write(&out).await.map_err(|_| None)?;
        out.clear();
    }
    loop {
        let h = loop {
            match parse_header(&client.buf) {
                Err(_) => return Err(Some(ClientError::protocol("invalid message length"))),
                Ok(Some(h)) if h.frame_len > ctx.settings.config.max_client_message_bytes => {
                    return Err(Some(super::errors::oversized(h, ctx)));
                }
                Ok(Some(h)) => break h,
                Ok(None) => {}
            }
            read_more(client, shutdown).await?;
        };
        // Dropped as it arrives: a large one is never held whole.
        let mut left = h.frame_len;
        loop {
            let n = left.min(client.buf.len());
            bytes::Buf::advance(&mut client.buf, n);
            left -= n;
            if left == 0 {
                break;
            }
            read_more(client, shutdown).await?;
        }
        match h.tag {
            frontend::TERMINATE => return Err(None),
            frontend::SYNC => break,
            _ if simple => break,
            _ => {}
        }
    }
    crate::protocol::encode::ready_for_query(&mut out, b'I');
    client.write(&out).await.map_err(|_| None)
}

/// After the tenant status lookup lost its server connection, before anything of the
/// client's was sent: its messages, still in its buffer, run on another connection (`Ok`),
/// as if this one had been found closed in the pool; once (`retried`), then the client
/// gets `lost`. A cancel that waited for the lookup (`cancelled`) withdraws them, as it
/// does a queued statement.
pub(super) async fn after_lost_lookup(
    client: &mut ClientConn,
    ctx: &ProxyContext,
    shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
    (cancelled, retried, lost): (bool, &mut bool, ClientError),
) -> Result<(), Option<ClientError>> {
    if cancelled {
        *retried = false;
        return answer_cancelled(client, ctx, shutdown).await;
    }
    if std::mem::replace(retried, true) {
        return Err(Some(lost));
    }
    Ok(())
}

/// Reads more of the client's messages; `Err(None)` when it left, and the shutdown error
/// when the proxy stops meanwhile.
async fn read_more(
    client: &mut ClientConn,
    shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> Result<(), Option<ClientError>> {
    tokio::select! {
        biased;
        r = client.read_more() => match r {
            Err(e) if e.kind() == std::io::ErrorKind::OutOfMemory => Err(Some(ClientConn::refusal(e))),
            Ok(0) | Err(_) => Err(None),
            Ok(_) => Ok(()),
        },
        _ = &mut *shutdown => Err(Some(ClientError::shutting_down())),
    }
}
