//! Writes to the client that its socket does not take at once: the rare path of
//! `downstream::forward_server`, where a client reading slowly, or not at all, holds the
//! session.

use super::Stop;
use crate::proxy::{ClientConn, Session};

/// Writes to the client, which counts as gone once it has taken nothing for the role's
/// idle-in-transaction time: a write would otherwise wait for ever, holding the server
/// connection (red team: a client that stops reading, or floods messages the proxy answers
/// itself without reading the answers), long after the server's query ended. A kill ends
/// the wait at once: a client that stopped reading is the one an operator kills.
pub(super) async fn write_client(
    client: &mut ClientConn,
    bytes: &[u8],
    session: &Session,
) -> Result<(), Stop> {
    if client.said_goodbye {
        return Ok(());
    }
    // Boxed, as a rare path (the client's socket is full): its timers and select would
    // otherwise grow every client's task, idle ones included, by about 500 bytes.
    Box::pin(write_client_waiting(client, bytes, session)).await
}

async fn write_client_waiting(
    client: &mut ClientConn,
    bytes: &[u8],
    session: &Session,
) -> Result<(), Stop> {
    let write = client.stream.write_all_bytes(bytes);
    let mut limited = std::pin::pin!(async {
        match session.pool.limits.idle_in_transaction {
            Some(limit) => matches!(tokio::time::timeout(limit, write).await, Ok(Ok(_))),
            None => write.await.is_ok(),
        }
    });
    tokio::select! {
        biased;
        written = &mut limited => written.then_some(()).ok_or(Stop::ClientGone),
        () = super::interrupt::killed(&session.cancel.target) => {
            // A client reading slowly takes the rest within the grace, and the relay ends
            // the session at the next message boundary, with the kill's error; one that
            // takes nothing is closed without it (written after half a message, it would
            // be read as the message's rest).
            match tokio::time::timeout(KILLED_WRITE_GRACE, limited).await {
                Ok(true) => Ok(()),
                _ => Err(Stop::ClientGone),
            }
        }
    }
}

/// How long a killed session's write to its client may still take.
const KILLED_WRITE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
