//! One PostgreSQL server connection and the state the pool keeps about it.
//!
//! The state lives with the connection so that later features (the tenant last applied,
//! prepared statements, tracked session parameters) travel with it between clients.

use super::slot::Slot;
use crate::net::Stream;
use crate::tenant::TenantId;
use bytes::BytesMut;

/// The server's process id and secret, needed to cancel its running query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendKey {
    pub pid: u32,
    pub secret: u32,
}

/// What the proxy last set as this connection's tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppliedTenant {
    /// Never set (a fresh connection): the settings must be written before any client runs.
    Unknown,
    /// `app.tenant_id` holds this tenant (`None`: empty, a tenant-less user).
    Applied(Option<TenantId>),
}

/// Pools and relays hold it boxed: it is a few hundred bytes, and every checkout, release
/// and hand-over to a waiting client would otherwise copy all of it.
pub struct ServerConn {
    pub stream: Stream,
    /// Bytes read from the server and not yet forwarded. Kept with the connection: there are
    /// at most a hundred of them, and they are busy.
    pub buf: BytesMut,
    pub key: BackendKey,
    pub id: u64,
    /// When it logged in and when it was last released, on the coarse clock
    /// ([`crate::clock`]): lifetime and idle limits are seconds, a tick late is fine.
    pub created_ms: u64,
    pub last_used_ms: u64,
    /// Transactions (or sessions) served so far, for `server_max_uses`.
    pub uses: u64,
    /// The pool's generation when its login began ([`super::Pool::reconnect`]): an older
    /// one is closed when it comes back.
    pub(super) generation: u64,
    pub tenant: AppliedTenant,
    /// Whether its login can take session-level advisory locks, which a tenant switch must
    /// then release (`tenant::prelude::SESSION_LOCKS_CHECK`, asked once at login).
    pub session_locks: bool,
    /// Whether a client may have left a cursor or an SQL-level prepared statement on it since
    /// its last tenant switch, which the next switch must then drop
    /// (`tenant::shape::leaves_no_objects`; set by the relay as it forwards).
    pub may_hold_objects: bool,
    /// Whether a client may have changed a setting on it since its last tenant switch in a
    /// way that takes effect when a transaction starts (`SET default_transaction_read_only`,
    /// `SET SESSION CHARACTERISTICS`, set_config, a DO block): the next switch then runs
    /// as a Query of its own rather than carried in the client's, whose transaction would
    /// start under them before the switch's RESET ALL (set by the relay as it forwards).
    pub may_hold_settings: bool,
    /// The client (its proxy pid) whose settings `may_hold_settings` stands for: its own
    /// next transaction keeps them, another client's starts with RESET ALL.
    pub settings_owner: u32,
    /// Session parameters clients changed on this connection, beyond its startup values.
    pub params: crate::proxy::session_params::ParamSet,
    /// Proxy-named prepared statements this server holds.
    pub statements: super::statements::ServerStatements,
    /// Holds this connection's place in the pool and database counts; freed on drop.
    pub(super) slot: Slot,
    /// Set while it goes from a transaction to the client whose first message was sent
    /// behind that transaction's (`proxy::relay::pipeline`): what the new holder must read
    /// past, or send again, before its own reply.
    pub inherited: Option<Box<Inherited>>,
}

/// What a client that got a connection with its first message already on it
/// ([`super::Pool::pass_on`]) must know before it reads its reply.
pub struct Inherited {
    /// Its first message as sent (the tenant switch in front of its SQL), to send again if
    /// a cancel meant for the transaction before it cancelled it instead.
    pub query: bytes::BytesMut,
    /// Whether it carries the tenant switch, and whether that switch released
    /// session-level advisory locks (its replies to skip).
    pub carried: bool,
    pub unlocks: bool,
    /// A cancel was sent for the previous transaction's statement while this message was
    /// queued behind it: it may have cancelled this one instead (see `pipeline::takeover`).
    pub foreign_cancel: bool,
    /// The client itself cancelled its statement while it waited: that cancel is sent
    /// once the connection is its own, and its 57014 is the client's.
    pub cancelled_by_client: bool,
}

impl ServerConn {
    /// Whether the connection can be handed out: nothing unexpected arrived while idle.
    pub fn is_usable(&self) -> bool {
        self.buf.is_empty() && self.inherited.is_none() && !self.stream.has_unexpected_input()
    }

    pub fn pool_name(&self) -> &str {
        self.slot.pool_name()
    }
}

impl std::fmt::Debug for ServerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConn")
            .field("id", &self.id)
            .field("pid", &self.key.pid)
            .field("uses", &self.uses)
            .finish()
    }
}
