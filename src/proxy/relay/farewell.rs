//! A client that ends its session (Terminate) with statements still unanswered: libpq's
//! PQsendQuery and then PQfinish, which closes the socket at once. On a direct connection
//! PostgreSQL reads the Terminate only after running what came before it. The server gets
//! the same Terminate, and the proxy keeps the connection open until the server closes it:
//! closing first would make the server's next reply draw a reset from the proxy's host, and
//! PostgreSQL would end the session before running what is queued behind (a pipelined
//! INSERT lost; tests/abuse.rs). The replies go nowhere: the client has said goodbye.

use super::SERVER_READ_CHUNK;
use crate::pool::ServerConn;
use crate::proxy::Session;
use std::time::Duration;

/// How long the statements may take when the role has no `command_timeout_ms`.
const RUN_OUT_LIMIT: Duration = Duration::from_secs(60);

/// Lets the server run what it was sent, then closes the connection (at the latest after
/// the role's command timeout).
pub(super) async fn run_out(mut server: Box<ServerConn>, session: &Session) {
    let limit = session.pool.limits.command_timeout.unwrap_or(RUN_OUT_LIMIT);
    let mut terminate = bytes::BytesMut::with_capacity(5);
    crate::protocol::encode::terminate(&mut terminate);
    let until_closed = async {
        if server.stream.write_all_bytes(&terminate).await.is_err() {
            return;
        }
        loop {
            server.buf.clear();
            if server.buf.capacity() < SERVER_READ_CHUNK {
                server.buf.reserve(SERVER_READ_CHUNK);
            }
            if !matches!(server.stream.read_into(&mut server.buf).await, Ok(n) if n > 0) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(limit, until_closed).await;
}
