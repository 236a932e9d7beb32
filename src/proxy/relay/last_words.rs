//! What a server said before a write to it failed. PostgreSQL ends a backend with a FATAL
//! (terminated by an administrator, its idle-in-transaction timeout, a shutdown) and closes;
//! when the proxy still had a client's messages to write, the close comes back as a reset
//! and the write fails before the FATAL, already in the socket's receive queue, is read.
//! Reading it first tells the client why (57P01, 25P03, ...) instead of a bare 08006.

use super::downstream::{forward_server, forward_server_now};
use super::{room_for_server_read, SessionState, Stop, Tracker};
use crate::pool::ServerConn;
use crate::proxy::{ClientConn, Session};
use std::time::Duration;

/// How long the reads wait for the rest. What the server sent before its reset arrived
/// before it, so the wait is the reactor's next turn; the bound is for a broken socket
/// that neither has more nor reports its end.
const WAIT: Duration = Duration::from_millis(500);

/// Passes on what the server sent before the connection broke (replies to the client's
/// earlier messages, then its FATAL), by the tracker's rules; the stop the transaction ends
/// with: `ServerGone`, with `fatal_sent` if a FATAL went to the client.
pub(super) async fn hear(
    client: &mut ClientConn,
    server: &mut ServerConn,
    t: &mut Tracker,
    state: &mut SessionState,
    session: &Session,
) -> Stop {
    let mut left = None;
    loop {
        if !server.buf.is_empty() {
            let more = match forward_server_now(client, server, t, state, session, &mut left) {
                Ok(more) => more,
                Err(stop) => return stop,
            };
            if more {
                if let Err(stop) =
                    forward_server(client, server, t, state, session, left.take()).await
                {
                    return stop;
                }
            }
        }
        room_for_server_read(&mut server.buf);
        // Only the reads are bounded: a reply half written to the client is finished.
        match tokio::time::timeout(WAIT, server.stream.read_into(&mut server.buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
    Stop::ServerGone {
        fatal_sent: t.server_fatal,
    }
}
