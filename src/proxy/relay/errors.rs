//! The errors the relay itself answers a client with, each with PostgreSQL's SQLSTATE for
//! the same situation.

use super::super::{ProxyContext, Session};
use crate::error::{ClientError, ErrorKind};
use crate::protocol::codes;
use crate::protocol::framing::Header;

/// The error for a client that went quiet between a message and its Sync for the role's
/// idle-in-transaction time (PostgreSQL's code and wording for its own timeout).
pub(super) fn idle_without_sync(limit: std::time::Duration) -> ClientError {
    ClientError::fatal(
        ErrorKind::Timeout,
        codes::IDLE_IN_TRANSACTION_TIMEOUT,
        "terminating connection due to idle-in-transaction timeout",
    )
    .with_detail(format!(
        "the client sent no Sync for idle_in_transaction_timeout_ms ({} ms) while it held a server connection",
        limit.as_millis()
    ))
}

/// The admin console ended the session (PostgreSQL's code and wording for
/// `pg_terminate_backend`).
pub(super) fn killed() -> ClientError {
    ClientError::fatal(
        ErrorKind::Admin,
        codes::ADMIN_SHUTDOWN,
        "terminating connection due to administrator command",
    )
    .with_detail("an operator ended this session from launch-proxy's admin console; an open transaction was rolled back")
}

/// The session waited for its client `client_idle_timeout_ms` (PostgreSQL's code and
/// wording for its own `idle_session_timeout`).
pub(super) fn idle_session_timeout(limit_ms: u64) -> ClientError {
    ClientError::fatal(
        ErrorKind::Timeout,
        codes::IDLE_SESSION_TIMEOUT,
        "terminating connection due to idle-session timeout",
    )
    .with_detail(format!(
        "the session sent nothing for client_idle_timeout_ms ({limit_ms} ms)"
    ))
}

pub(super) fn server_lost() -> ClientError {
    ClientError::fatal(
        ErrorKind::Server,
        codes::CONNECTION_FAILURE,
        "server closed the connection unexpectedly",
    )
    .with_detail("the PostgreSQL server terminated or the connection to it broke; the transaction was rolled back")
}

/// The server left command_timeout's cancel unanswered and the proxy closed its
/// connection. Unlike [`server_lost`], nothing says the command did not take effect (a
/// COMMIT may yet complete), so the code is a connection failure, not 57014, which would
/// tell the application that its statement was rolled back and may be retried.
pub(super) fn server_unresponsive(session: &Session) -> ClientError {
    ClientError::fatal(
        ErrorKind::Timeout,
        codes::CONNECTION_FAILURE,
        format!(
            "terminating connection: the server did not answer within command_timeout_ms ({} ms)",
            command_timeout_ms(session)
        ),
    )
    .with_detail(format!(
        "the server also left the cancel unanswered for {} s; launch-proxy closed the server connection, and whether the command took effect is unknown",
        super::super::cancel::UNANSWERED_CANCEL.as_secs()
    ))
}

pub(super) fn oversized(h: Header, ctx: &ProxyContext) -> ClientError {
    ClientError::fatal(
        ErrorKind::Protocol,
        codes::PROGRAM_LIMIT_EXCEEDED,
        format!(
            "message of {} bytes exceeds max_client_message_bytes ({})",
            h.frame_len, ctx.settings.config.max_client_message_bytes
        ),
    )
}

fn command_timeout_ms(session: &Session) -> u128 {
    session
        .pool
        .limits
        .command_timeout
        .map_or(0, |d| d.as_millis())
}

pub(super) fn command_timeout_error(session: &Session) -> ClientError {
    let ms = command_timeout_ms(session);
    ClientError::error(
        ErrorKind::Timeout,
        codes::QUERY_CANCELED,
        format!("canceling statement due to command timeout ({ms} ms)"),
    )
    .with_detail(format!(
        "launch-proxy cancelled the command after command_timeout_ms ({ms}) of role \"{}\"",
        session.pool.role.as_str()
    ))
}
