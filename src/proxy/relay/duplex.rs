//! Writes to the server that it cannot take at once.
//!
//! PostgreSQL reads no input while a reply it writes waits for room. A relay that, with a
//! write to the server blocked, only waited for the server to take it would wait for ever
//! once a client pipelines more than the sockets hold (libpq's pipeline mode, JDBC batches,
//! large results): the server waits for the relay to read, the relay for the server to
//! read. So what the socket does not take at once is kept in a buffer of its own, and while
//! it goes out the server's replies go on to the client. The client is not read meanwhile:
//! its socket pushes back, as PostgreSQL's would.
//!
//! The common case costs nothing here: a write the socket takes whole keeps nothing.

use super::deadline::CommandDeadline;
use super::downstream::{forward_server, forward_server_now};
use super::tracker::Tracker;
use super::{room_for_server_read, SessionState, Stop};
use crate::net::{past, Stream};
use crate::pool::ServerConn;
use crate::proxy::{spare_buffers, ClientConn, Session};
use bytes::{Buf, BytesMut};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use tokio::io::AsyncWrite;

/// Writes `a` then `b` as far as the socket takes them now (on TLS: none, the session
/// writes them in [`finish`]); what is left, copied into a spare buffer, is returned.
pub(super) fn write_or_keep(stream: &Stream, a: &[u8], b: &[u8]) -> Result<Option<BytesMut>, Stop> {
    let n = match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ok(None),
        (true, false) => stream.write_now(b),
        (false, true) => stream.write_now(a),
        (false, false) => stream.write_pair_now(a, b),
    }
    .map_err(|_| Stop::ServerWriteFailed)?;
    if n == a.len() + b.len() {
        return Ok(None);
    }
    let (a, b) = past(a, b, n);
    let mut rest = spare_buffers::take();
    rest.extend_from_slice(a);
    rest.extend_from_slice(b);
    Ok(Some(rest))
}

/// [`write_or_keep`] for bytes in a spare buffer of their own, which holds what is left
/// (or goes back to the spare buffers when nothing is).
pub(super) fn write_owned_or_keep(
    stream: &Stream,
    mut out: BytesMut,
) -> Result<Option<BytesMut>, Stop> {
    let n = stream
        .write_now(&out)
        .map_err(|_| Stop::ServerWriteFailed)?;
    if n == out.len() {
        spare_buffers::give_back(out);
        return Ok(None);
    }
    out.advance(n);
    Ok(Some(out))
}

/// What one wait of [`finish`] came back with.
enum Event {
    /// The socket took this many bytes of the rest.
    Wrote(usize),
    /// Everything is written (and, on TLS, flushed).
    Done,
    /// The server sent bytes.
    Read,
    /// The write failed: the server closed the connection or reset it.
    WriteFailed,
    /// The server closed the connection (after a FATAL, if `Tracker::server_fatal`), or
    /// the read failed.
    ReadEnded,
    /// The watchdog gave the server up (command_timeout's cancel went unanswered).
    GaveUp,
    /// The admin console ended the session.
    Killed,
}

/// Sends `rest` to the server while passing its replies on to the client; done once the
/// server has taken all of it. Boxed, as a rare path: a client's task is as large as its
/// largest await point, and thousands of idle clients each keep one (1712 bytes with the
/// box, 2040 without).
pub(super) fn finish<'a>(
    client: &'a mut ClientConn,
    server: &'a mut ServerConn,
    t: &'a mut Tracker,
    state: &'a mut SessionState,
    session: &'a Session,
    deadline: &'a mut CommandDeadline,
    rest: BytesMut,
) -> Pin<Box<impl Future<Output = Result<(), Stop>> + 'a>> {
    Box::pin(send_rest(client, server, t, state, session, deadline, rest))
}

async fn send_rest(
    client: &mut ClientConn,
    server: &mut ServerConn,
    t: &mut Tracker,
    state: &mut SessionState,
    session: &Session,
    deadline: &mut CommandDeadline,
    mut rest: BytesMut,
) -> Result<(), Stop> {
    crate::pool::PoolStats::add(&session.pool.stats.server_write_waits, 1);
    let target = &*session.cancel.target;
    if let Some(limit) = session.pool.limits.command_timeout {
        deadline.on_blocked_copy_write(target, t, limit);
    }
    let mut left = None;
    let result = loop {
        room_for_server_read(&mut server.buf);
        let watched = deadline.watched(t);
        let event = std::future::poll_fn(|cx| {
            let stream = &mut server.stream;
            let wrote = if rest.is_empty() {
                Pin::new(&mut *stream).poll_flush(cx).map_ok(|()| 0)
            } else {
                Pin::new(&mut *stream).poll_write(cx, &rest)
            };
            match wrote {
                Poll::Ready(Ok(0)) if rest.is_empty() => return Poll::Ready(Event::Done),
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Event::WriteFailed),
                Poll::Ready(Ok(n)) => return Poll::Ready(Event::Wrote(n)),
                Poll::Pending => {}
            }
            if watched && target.server_unresponsive() {
                return Poll::Ready(Event::GaveUp);
            }
            if target.is_killed() && !t.mid_message_to_client() {
                return Poll::Ready(Event::Killed);
            }
            match stream.poll_read_some(cx, &mut server.buf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(Event::ReadEnded),
                Poll::Ready(Ok(_)) => Poll::Ready(Event::Read),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match event {
            Event::Wrote(n) => rest.advance(n),
            Event::Done => break Ok(()),
            Event::WriteFailed => break Err(Stop::ServerWriteFailed),
            Event::ReadEnded => {
                break Err(Stop::ServerGone {
                    fatal_sent: t.server_fatal,
                })
            }
            Event::GaveUp => break Err(Stop::ServerUnresponsive),
            Event::Killed => break Err(Stop::Client(super::errors::killed())),
            Event::Read => {
                deadline.on_server_bytes(target, t);
                if forward_server_now(client, server, t, state, session, &mut left)? {
                    forward_server(client, server, t, state, session, left.take()).await?;
                }
                deadline.after_forward(target, t);
            }
        }
    };
    spare_buffers::give_back(rest);
    result
}
