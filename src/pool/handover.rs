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
    form: Form,
}

impl Successor {
    /// The form of its first message that fits the connection (chosen by
    /// [`Pool::take_successor`]), and whether it carries the tenant switch (taken once).
    pub fn take_message(&mut self) -> (bytes::BytesMut, bool, bool) {
        let Some(early) = self.waiter.early.take() else {
            return Default::default();
        };
        let EarlyMessage {
            raw,
            switched,
            unlocks,
            ..
        } = *early;
        match (self.form, switched) {
            (Form::Switched, Some(switched)) => (switched, true, unlocks),
            _ => (raw, false, false),
        }
    }
}

/// A queued client's first message, ready to go down a busy connection whose holder will
/// leave no settings or objects behind.
#[derive(Default)]
pub struct EarlyMessage {
    /// As the client sent it: for a connection that will carry the client's own tenant
    /// (`tenant`; none for a session without one).
    pub raw: bytes::BytesMut,
    pub tenant: Option<crate::tenant::TenantId>,
    /// The session parameters it runs under: the raw form needs a connection that has
    /// exactly these.
    pub params: crate::proxy::session_params::ParamSet,
    /// With the whole tenant switch in front (a session with a tenant): for any connection.
    pub switched: Option<bytes::BytesMut>,
    /// Whether the switch releases session-level advisory locks ([`Pool::session_locks`]
    /// when it was built): it fits only connections that agree.
    pub unlocks: bool,
}

/// Which form of a successor's message goes.
#[derive(Clone, Copy, PartialEq)]
enum Form {
    Raw,
    Switched,
}

/// What the connection will be when the running transaction ends, for choosing a form.
pub struct After<'a> {
    /// The tenant it will carry, if the transaction runs without a switch of its own and
    /// leaves nothing a raw message would need cleared; `None` otherwise.
    pub plain_tenant: Option<Option<crate::tenant::TenantId>>,
    /// The running session's queue key, and whether the login takes advisory locks.
    pub holder: TenantKey,
    pub locks: bool,
    /// Its session parameters then (the switch resets them; the raw form needs its own).
    pub params: &'a crate::proxy::session_params::ParamSet,
}

impl After<'_> {
    fn form(&self, e: &EarlyMessage, tenant: TenantKey) -> Option<Form> {
        if self.plain_tenant == Some(e.tenant) && e.params == *self.params {
            return Some(Form::Raw);
        }
        // The switch releases advisory locks, which a tenant keeps from one of its
        // transactions to the next, as on a connection of its own.
        let fits = e.unlocks == self.locks && !(self.locks && tenant == self.holder);
        (e.switched.is_some() && fits).then_some(Form::Switched)
    }
}

impl Pool {
    /// The next client in turn, if it brought its first message in a form that fits the
    /// connection `after` the running transaction and its tenant may take one more
    /// connection. `None` while the pool is paused: then no transaction starts.
    pub fn take_successor(&self, after: After<'_>) -> Option<Successor> {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        if st.paused {
            return None;
        }
        // At the database cap a pool whose clients waited longer gets the connection at
        // release (Pool::release): no successor may keep it from going back.
        if self.db.at_cap()
            && self
                .db
                .longer_wait_elsewhere(self, st.waiters.oldest_since())
        {
            return None;
        }
        let tenants = &st.tenants;
        let fits = |e: &EarlyMessage, tenant| after.form(e, tenant).is_some();
        let waiter = st.waiters.pop_next_early(fits, |t| tenants.admits(t))?;
        let form = waiter
            .early
            .as_deref()
            .and_then(|e| after.form(e, waiter.tenant))
            .unwrap_or(Form::Raw);
        let tenant_place = st.tenants.take(waiter.tenant);
        PoolStats::add(&self.stats.passed_on, 1);
        Some(Successor {
            waiter,
            tenant_place,
            form,
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
            ..
        } = next;
        let mut st = self.state.lock();
        st.leave_holder(&mut conn);
        conn.slot.ticket = st.gate.enter();
        conn.slot.tenant = tenant_place;
        // Its wait is recorded where it ends, in the successor's `Pool::acquire_as`, as for
        // any queued checkout.
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
