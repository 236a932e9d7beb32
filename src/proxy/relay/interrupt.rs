//! What ends a relay's wait from outside its task: the admin console's kills, the idle
//! reaper (`proxy::session_end`) and the command-timeout watchdog giving a server up. Each
//! is a future that registers no waker: the one who asks wakes the session's task, whose
//! waker the relay gives once per session (`CancelTarget::watch_relay`). And the drain,
//! which ends an idle wait unless the session still has something to run.

use super::super::cancel::CancelTarget;
use super::super::session_end::EndRequest;
use super::super::{ClientConn, ProxyContext};
use super::{errors, Stop};
use crate::protocol::framing::{frontend, parse_header};
use std::time::{Duration, Instant};

/// Ready once the admin console ended the session (`CancelTarget::kill`; not while the
/// client is `mid_message`, which the server's next bytes finish), or, while the command's
/// deadline is `watched`, once the watchdog gave the server up
/// (`CancelTarget::server_unresponsive`), or, given `idle_limit_ms` (a session-mode
/// session idle between transactions), once the idle reaper ended it. It registers no
/// waker: each wakes the session's task, given once in `relay::run`.
pub(super) fn interrupted(
    target: &CancelTarget,
    watched: bool,
    mid_message: bool,
    idle_limit_ms: Option<u64>,
) -> impl std::future::Future<Output = Stop> + '_ {
    std::future::poll_fn(move |_| {
        if target.is_killed() && !mid_message {
            return std::task::Poll::Ready(Stop::Client(errors::killed()));
        }
        if watched && target.server_unresponsive() {
            return std::task::Poll::Ready(Stop::ServerUnresponsive);
        }
        if let (Some(limit), Some(EndRequest::Idle)) = (idle_limit_ms, target.end.requested()) {
            if let Some(e) = idle_wait_ends(target, EndRequest::Idle, limit) {
                return std::task::Poll::Ready(Stop::Client(e));
            }
        }
        std::task::Poll::Pending
    })
}

/// Ready once an end of the session is requested (`proxy::session_end`; the request wakes
/// the session's task); like [`interrupted`], it registers no waker.
pub(super) fn end_requested(
    target: &CancelTarget,
) -> impl std::future::Future<Output = EndRequest> + '_ {
    std::future::poll_fn(move |_| match target.end.requested() {
        Some(end) => std::task::Poll::Ready(end),
        None => std::task::Poll::Pending,
    })
}

/// Ready once the admin console ended the session (`CancelTarget::kill`, which wakes the
/// session's task); like [`interrupted`], it registers no waker.
pub(super) fn killed(target: &CancelTarget) -> impl std::future::Future<Output = ()> + '_ {
    std::future::poll_fn(move |_| {
        if target.is_killed() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
}

/// What a session waiting for its client does with an end request: the error that ends
/// it, or `None` for an idle end found stale (withdrawn: the client sent something since
/// the reaper looked).
pub(super) fn idle_wait_ends(
    target: &CancelTarget,
    end: EndRequest,
    limit_ms: u64,
) -> Option<crate::error::ClientError> {
    match end {
        EndRequest::Killed => Some(errors::killed()),
        EndRequest::Idle if target.end.idle_for(crate::clock::now_ms(), limit_ms) => {
            Some(errors::idle_session_timeout(limit_ms))
        }
        EndRequest::Idle => {
            target.end.withdraw_idle_end();
            None
        }
    }
}

/// An idle session's read once the drain has begun (crate::shutdown), or `None` when the
/// drain ends it now. It may read until the login grace ends while it has run no
/// transaction (`fresh`: it logged in as the drain began), and a moment more if its next
/// message has already arrived. Otherwise it waits [`LINGER`] for a client that is closing.
pub(super) async fn drain_read(
    client: &mut ClientConn,
    ctx: &ProxyContext,
    fresh: bool,
) -> Option<std::io::Result<usize>> {
    /// Enough for bytes already in the socket, and for the rest of a TLS record.
    const ARRIVED: Duration = Duration::from_secs(1);
    let now = Instant::now();
    let grace = ctx
        .shutdown
        .login_grace_end()
        .filter(|end| fresh && now < *end);
    let until = grace.or_else(|| client.stream.has_input().then(|| now + ARRIVED));
    if let Some(until) = until {
        return tokio::time::timeout_at(until.into(), client.read_more())
            .await
            .ok();
    }
    let read = tokio::time::timeout(LINGER, client.read_more())
        .await
        .ok()?;
    let closing = match read {
        Ok(0) | Err(_) => true,
        Ok(_) => matches!(parse_header(&client.buf), Ok(Some(h)) if h.tag == frontend::TERMINATE),
    };
    closing.then_some(read)
}

/// How long a session that is idle in the drain waits for a Terminate before it is ended
/// with 57P01: a client that connects per transaction sends one right after its
/// transaction, and then leaves without an error to report. Anything else that comes
/// meanwhile is new work, for the process that takes over.
const LINGER: Duration = Duration::from_millis(100);
