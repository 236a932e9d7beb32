//! What becomes of a server connection when its session ends other than at a transaction's
//! clean end: in session mode it goes back to the pool reset; in an unknown state it is
//! closed, its running statement cancelled first.

use super::tracker::Tracker;
use crate::error::ClientError;
use crate::pool::{AppliedTenant, ServerConn};
use crate::proxy::session_params::ParamSet;
use crate::proxy::{ProxyContext, Session};

/// Session mode: a connection a client held for its whole session goes back clean, as
/// PgBouncer's server_reset_query does: no LISTEN, cursors, statements or settings of the
/// previous client survive. The next client's tenant and parameters are applied afresh.
pub(super) async fn reset_session(server: &mut ServerConn) -> bool {
    let ok = crate::pool::query::query_scalar(server, "DISCARD ALL")
        .await
        .is_ok();
    server.tenant = AppliedTenant::Unknown;
    server.statements.clear();
    server.may_hold_objects = !ok;
    server.may_hold_settings = !ok;
    server.params = ParamSet::default();
    ok
}

/// Session mode: returns the connection of a session ended between transactions, reset as
/// at the end of any session.
pub(super) async fn give_back_idle(mut server: Box<ServerConn>, session: &Session) {
    let target = &session.cancel.target;
    if (target.try_detach() || target.detach().await) && reset_session(&mut server).await {
        session.pool.release(server);
    }
}

/// Gets rid of a server connection whose client is gone or whose state is unknown: a
/// running query is cancelled first so that its locks go with it, then the connection is
/// closed (PostgreSQL rolls back an open transaction on disconnect).
pub(super) async fn abandon(
    server: Box<ServerConn>,
    t: &Tracker,
    session: &Session,
    ctx: &ProxyContext,
) -> Option<ClientError> {
    if !t.replies.is_empty() {
        ctx.cancels.cancel_running(&session.cancel.target).await;
    }
    session.cancel.target.detach().await;
    tracing::debug!(pool = %session.pool.name, conn = server.id, "closing server connection left in an unknown state");
    drop(server);
    None
}
