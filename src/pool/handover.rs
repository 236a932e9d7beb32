//! A busy connection's next holder chosen before its transaction ends, so that the next
//! client's first message can wait on the connection itself (`proxy::relay::pipeline`):
//! PostgreSQL starts it as soon as it has answered the running statement, without a round
//! trip through the proxy.
//!
//! A client taken this way is committed to the connection: it has left the queue, so no
//! acquire timeout, cancel or pause ends its wait; only [`Pool::pass_on`] does (or its
//! client leaving, which the running transaction's relay learns from a failed pass).

use super::waiters::Waiter;
use super::{Pool, ServerConn, TenantKey};
use crate::pool::PoolStats;

/// The client chosen to have the connection next ([`Pool::take_successor`]).
pub struct Successor {
    waiter: Waiter,
    /// Its place under `max_tenant_connections`, taken when it was chosen.
    tenant_place: TenantKey,
}

impl Successor {
    /// Its first message, to send behind the running statement (taken once).
    pub fn take_message(&mut self) -> EarlyMessage {
        self.waiter.early.take().unwrap_or_default()
    }
}

/// A queued client's first message, ready to go down a connection whose previous holder
/// left no settings or objects behind: with the tenant switch in front of it (`carried`),
/// or as the client sent it, for a session without a tenant on a connection that carries
/// none.
#[derive(Default)]
pub struct EarlyMessage {
    pub query: bytes::BytesMut,
    pub carried: bool,
    /// Whether the switch releases session-level advisory locks ([`Pool::session_locks`]
    /// when it was built): it fits only connections that agree.
    pub unlocks: bool,
}

impl Pool {
    /// The next client in turn, if it brought its first message ready for `conn` and its
    /// tenant may take one more connection. A client of `holder`'s own tenant is not taken
    /// on a connection whose advisory locks its message would release: the tenant keeps
    /// them from one of its transactions to the next, as on a connection of its own. A
    /// message without the switch fits only where `plain_fits`: the connection will carry
    /// no tenant and nothing of its holder's when the running transaction ends.
    /// `None` while the pool is paused: then no transaction starts.
    pub fn take_successor(
        &self,
        conn: &ServerConn,
        holder: TenantKey,
        plain_fits: bool,
    ) -> Option<Successor> {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        if st.paused {
            return None;
        }
        let locks = conn.session_locks;
        let fits = |e: &EarlyMessage, tenant| match e.carried {
            true => e.unlocks == locks && !(locks && tenant == holder),
            false => plain_fits,
        };
        let tenants = &st.tenants;
        let waiter = st.waiters.pop_next_early(fits, |t| tenants.admits(t))?;
        let tenant_place = st.tenants.take(waiter.tenant);
        PoolStats::add(&self.stats.passed_on, 1);
        Some(Successor {
            waiter,
            tenant_place,
        })
    }

    /// Gives `conn`, whose transaction is over (or given up), to `next`, with what it must
    /// read past or send again (`inherited`). `Err` gives the connection back when the
    /// client left meanwhile: its message is on the connection, unanswered, so the
    /// connection must be closed, never reused.
    pub fn pass_on(
        &self,
        mut conn: Box<ServerConn>,
        next: Successor,
        inherited: super::Inherited,
    ) -> Result<(), Box<ServerConn>> {
        conn.uses += 1;
        conn.last_used_ms = crate::clock::now_ms();
        conn.inherited = Some(Box::new(inherited));
        let Successor {
            waiter,
            tenant_place,
        } = next;
        let mut st = self.state.lock();
        st.leave_holder(&mut conn);
        conn.slot.ticket = st.gate.enter();
        conn.slot.tenant = tenant_place;
        self.stats.wait.record(waiter.since.elapsed());
        match waiter.tx.send(Some(conn)) {
            Ok(()) => Ok(()),
            Err(back) => {
                let mut back = back.expect("sent Some");
                st.leave_holder(&mut back);
                // Its place at the gate goes to a queued client, on an idle connection.
                st.admit();
                back.inherited = None;
                Err(back)
            }
        }
    }
}
