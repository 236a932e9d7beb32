//! A transaction's first messages when the connection needs something first: the tenant
//! switch (carried in the client's own Query where it can be, `relay::carry`) and the
//! session parameters the client set that the connection lacks.

use super::tracker::{Action, Expect, Tracker};
use super::upstream::forward_client;
use super::{carry, pipeline, SessionState, Stop};
use crate::pool::ServerConn;
use crate::proxy::session_params::ParamSet;
use crate::proxy::{ClientConn, ProxyContext, Session};
use bytes::BytesMut;

/// Sends the client's first messages behind what the connection must get first: the tenant
/// switch (carried in the client's Query where it can be) and the session parameters that
/// differ (`params_sql`; when the tenant is needed, computed here, after the switch's
/// timeout resets). Returns what the server's socket did not take at once.
#[allow(clippy::too_many_arguments)]
pub(super) async fn send_with_settings(
    client: &mut ClientConn,
    server: &mut ServerConn,
    t: &mut Tracker,
    state: &mut SessionState,
    session: &Session,
    ctx: &ProxyContext,
    session_mode: bool,
    tenant_needed: bool,
    same_tenant: bool,
    mut params_sql: String,
) -> Result<Option<BytesMut>, Stop> {
    // Another client of the same tenant (a switch for the settings it left) keeps the
    // tenant's advisory locks and objects, as on a connection of the tenant's own.
    let leftovers = crate::tenant::prelude::Leftovers {
        advisory_locks: server.session_locks && !same_tenant,
        objects: server.may_hold_objects && !same_tenant,
    };
    if tenant_needed {
        // The tenant switch puts every parameter back to its startup value (RESET ALL) and,
        // if a client may have made cursors or SQL-level statements, deallocates every
        // prepared statement, the proxy's own included. Otherwise the proxy's statements
        // stay: a statement's SQL is the same for every tenant, and the tenant is read when
        // it runs.
        server.params = ParamSet::default();
        if leftovers.objects {
            server.statements.clear();
            server.may_hold_objects = false;
        }
        state.params.apply_to(&mut server.params, &mut params_sql);
    }
    // A plain DML Query carries the switch in its own message (tenant::prelude::Prelude::carried):
    // no second statement list, reply and flush.
    let mut first = None;
    let may_carry =
        tenant_needed && params_sql.is_empty() && !session_mode && !server.may_hold_settings;
    if may_carry {
        let carried = carry::try_carry(client, server, t, state, ctx, &session.prelude, leftovers)?;
        match carried {
            carry::Carry::Sent(None) => {
                if let Some(rest) = pipeline::send_successor(server, t, session, ctx, false)? {
                    Box::pin(pipeline::write_rest(server, rest)).await?;
                }
                return Ok(None);
            }
            carry::Carry::Sent(rest) => return Ok(rest),
            carry::Carry::Not(scanned) => first = scanned,
        }
    }
    // The switch fails whole on a cancel (and ends the session): the client's cancels
    // wait for its reply, and that of the parameters' Query after it.
    session.cancel.target.hold_cancels().await;
    t.cancels_held = true;
    if tenant_needed {
        t.push(Expect::Ready { simple: true }, Action::Prelude);
        // Its RESET ALL commits before the client's transaction starts.
        server.may_hold_settings = false;
    }
    let built;
    // Pipelined with the client's messages: if the prelude fails, the server exits
    // before reading them (see tenant::prelude), and the relay ends with Stop::Prelude.
    let query = session.prelude.standalone(leftovers);
    let prefix = match (tenant_needed, params_sql.is_empty()) {
        (false, true) => None,
        (true, true) => Some(&query[..]),
        (tenant, false) => {
            let mut q = BytesMut::with_capacity(query.len() + params_sql.len() + 40);
            if tenant {
                q.extend_from_slice(query);
            }
            // Under exit_on_error, as the switch: a value the server refuses ends the
            // backend before the client's statements run, never beside them.
            params_sql.insert_str(0, crate::tenant::prelude::EXIT_ON_ERROR);
            crate::protocol::encode::query(&mut q, &params_sql);
            t.push(Expect::Ready { simple: true }, Action::Drop);
            built = q;
            Some(&built[..])
        }
    };
    forward_client(client, server, t, state, ctx, prefix, first)
}
