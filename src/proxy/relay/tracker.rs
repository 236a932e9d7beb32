//! What the relay knows about a transaction in flight: the replies it still expects from
//! the server, in order, and what to do with each group of them.
//!
//! Every message sent to the server gets a [`Reply`] entry. Replies the client must not
//! see (the tenant prelude, statements the proxy prepares on its own) are dropped; replies
//! the server will not send but the client expects (a statement the server already had, a
//! guard refusal) are made up in place. Ordering is what makes this exact: the server
//! answers messages in the order it got them.

use crate::error::ClientError;
use std::collections::VecDeque;

/// How a group of server replies ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expect {
    /// This many messages (ParseComplete, BindComplete, CloseComplete: 1; Describe of a
    /// statement: ParameterDescription then RowDescription/NoData: 2; of a portal: 1).
    Count(u8),
    /// Execute: up to CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// Query, FunctionCall (`simple`) or Sync: up to ReadyForQuery.
    Ready { simple: bool },
}

#[derive(Debug)]
pub(super) enum Action {
    /// The client sees the replies.
    Pass,
    /// A Query with DISCARD ALL: the client sees the replies, and if none is an error the
    /// client's statements are gone (`Tracker::resets.everything`).
    DiscardAll,
    /// The replies answer the proxy's own message; dropped.
    Drop,
    /// The tenant prelude: dropped, and the connection then carries the session's tenant.
    Prelude,
    /// A client Query carrying the tenant switch in front of its own statements: the first
    /// `skip` replies (the switch's, `of` in all) are dropped, the rest are the client's;
    /// error positions are `shift` characters too far. At ReadyForQuery the connection
    /// carries the session's tenant, unless the transaction failed (which rolled the
    /// settings back, or never ran them).
    Carried {
        skip: u8,
        of: u8,
        shift: u32,
        failed: bool,
    },
    /// A Parse the proxy sent for a client's Parse: if it fails or the server skips it,
    /// the statement exists neither on the server nor for the client.
    Prepared {
        def: std::sync::Arc<crate::proxy::statements::StatementDef>,
        name: Box<[u8]>,
    },
    /// A Bind of a client's named statement: the client sees the replies; a 0A000 (plan
    /// outdated by a schema change) marks the definition stale.
    Bound {
        def: std::sync::Arc<crate::proxy::statements::StatementDef>,
    },
    /// A Parse the proxy sent on its own (a statement's first use on this server): if it
    /// fails or is skipped, the server lacks the statement.
    ProxyParse { id: u64 },
    /// A Close evicting a statement from the server: if skipped, the server still has it.
    Evict,
    /// No server reply: send the client this message (CloseComplete '3').
    Fake(u8),
    /// No server reply: ParseComplete for a client Parse of a statement the server already
    /// holds. Where PostgreSQL would have skipped the Parse, the client's name is dropped.
    FakeParsed { name: Box<[u8]> },
    /// No server reply: send the client CommandComplete with this tag and ReadyForQuery
    /// (a simple Query the proxy answered itself).
    FakeComplete(&'static str),
    /// A message that fails on the server in place of one the proxy refused (so that the
    /// server's transaction fails as PostgreSQL's would): its error is replaced by this one.
    ReplaceError(Box<ClientError>),
}

impl Action {
    /// Replies to the proxy's own messages: the client never sees them.
    pub fn is_dropped(&self) -> bool {
        matches!(
            self,
            Action::Drop | Action::Prelude | Action::ProxyParse { .. } | Action::Evict
        )
    }
}

/// Bookkeeping to undo for a reply group the server skipped or failed.
#[derive(Debug)]
pub(super) enum Undo {
    /// The server does not hold this statement.
    ServerLacks(u64),
    /// The client's statement of this name does not exist.
    ClientLacks(Box<[u8]>),
    /// The server holds a statement the proxy believes evicted: the connection's statement
    /// cache is unreliable, so the connection is not reused.
    ServerUnknown,
}

#[derive(Debug)]
pub(super) struct Reply {
    pub expect: Expect,
    pub action: Action,
}

impl Reply {
    pub fn is_fake(&self) -> bool {
        matches!(
            self.action,
            Action::Fake(_) | Action::FakeParsed { .. } | Action::FakeComplete(_)
        )
    }
}

/// Per-session relay state; the queue's storage is reused across transactions.
#[derive(Default)]
pub(super) struct Tracker {
    /// A successor whose first message went behind this transaction's
    /// (`relay::pipeline`): the scan stops at this transaction's last ReadyForQuery, and
    /// nothing more of this client's goes to the server.
    pub pipelined: Option<Box<super::pipeline::Pipelined>>,
    /// The client was told of its kill (`pipeline::kill_ahead`).
    pub killed_told: bool,
    pub replies: VecDeque<Reply>,
    /// Transaction status from the last ReadyForQuery.
    pub status: u8,
    /// Extended-protocol messages were sent after the last Sync.
    pub unsynced: bool,
    /// Extended-protocol messages were sent after the last Flush or Sync: PostgreSQL
    /// answers none of them until one comes.
    pub awaits_flush: bool,
    /// The server is in COPY IN and waits for client data.
    pub copy_in: bool,
    /// Bytes of a client message already partly forwarded.
    pub client_remaining: usize,
    /// Bytes of a server message already partly forwarded.
    pub server_remaining: usize,
    /// The client sent Terminate.
    pub terminated: bool,
    /// The server sent a FATAL error: it is about to close.
    pub server_fatal: bool,
    /// A cancel for command_timeout was sent; the 57014 it causes gets our wording.
    pub timeout_cancel: bool,
    /// Client messages are dropped up to the next Sync (after a refused message), as
    /// PostgreSQL itself does after an error.
    pub discarding: bool,
    /// After a server error in the extended protocol, reply groups up to the next Sync
    /// produce nothing.
    pub skipping: bool,
    /// Messages seen of the reply group at the front (for `Expect::Count`).
    pub seen: u8,
    /// ReadyForQuery messages received, to tell the command timer about progress.
    pub ready_seen: u64,
    /// The client sent RESET ALL or DISCARD ALL: the connection's tenant and settings (and
    /// for DISCARD ALL its prepared statements) are gone.
    pub resets: crate::tenant::guard::Resets,
    /// ParameterStatus values forwarded to the client, for its session parameters.
    pub param_updates: Vec<(String, String)>,
    /// Statement bookkeeping to undo (replies skipped or failed), applied by the relay.
    pub undo: Vec<Undo>,
    /// Client messages wait until the carried switch is answered: if the client's
    /// transaction fails, its settings are rolled back, and nothing more may run before the
    /// tenant is applied again.
    pub barrier: bool,
    /// Client messages wait for the ReadyForQuery of every Sync or Query sent: the next
    /// one's answer depends on the transaction status that will report (a Parse of a text
    /// the server holds, which the proxy answers itself, or a DEALLOCATE it answers: in a
    /// failed transaction PostgreSQL refuses both with 25P02). See [`Tracker::status_known`].
    pub status_wait: bool,
    /// The status held messages waited for is known: the relay forwards them.
    pub resume_client: bool,
    /// How the carried switch ended, for the relay to note on the connection: `Some(true)`
    /// applied, `Some(false)` rolled back.
    pub carried_outcome: Option<bool>,
    /// The client parsed the unnamed statement during this checkout: a Bind of it may go to
    /// this server (otherwise it would run another client's unnamed statement).
    pub unnamed_parsed: bool,
    /// The server's statement cache can no longer be trusted (see [`Undo::ServerUnknown`]).
    pub server_unknown: bool,
    /// The client's cancels wait while the proxy's own statements run ahead of its
    /// (`CancelTarget::hold_cancels`).
    pub cancels_held: bool,
    /// A late cancel was sent (held, or a pipelined statement's own); it goes again until
    /// the reply to the client's statements begins (`CancelTarget::reply_began`).
    pub cancel_resent: bool,
    pub queries: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Tracker {
    /// Whether a scan of an empty server buffer would change nothing: no answer the proxy
    /// makes up is due, and no outcome of earlier server messages waits to be applied.
    pub fn nothing_to_settle(&self) -> bool {
        self.undo.is_empty()
            && self.param_updates.is_empty()
            && self.carried_outcome.is_none()
            && !self.fake_reply_due()
    }

    /// Whether the next reply is one the proxy makes up and no server message is half read:
    /// it goes to the client before anything the server says next.
    pub fn fake_reply_due(&self) -> bool {
        self.server_remaining == 0 && self.replies.front().is_some_and(Reply::is_fake)
    }

    /// Resets everything but the storage of the queue and lists for a new transaction, one
    /// field at a time (rebuilding the struct would drop and re-create each of them); the
    /// destructuring names every field, so a new one cannot be forgotten here.
    pub fn start(&mut self) {
        let Tracker {
            pipelined,
            killed_told,
            replies,
            status,
            unsynced,
            awaits_flush,
            copy_in,
            client_remaining,
            server_remaining,
            terminated,
            server_fatal,
            timeout_cancel,
            discarding,
            skipping,
            seen,
            ready_seen,
            resets,
            param_updates,
            undo,
            barrier,
            status_wait,
            resume_client,
            carried_outcome,
            unnamed_parsed,
            server_unknown,
            cancels_held,
            cancel_resent,
            queries,
            bytes_in,
            bytes_out,
        } = self;
        *pipelined = None;
        replies.clear();
        param_updates.clear();
        undo.clear();
        *status = b'I';
        *resets = Default::default();
        *carried_outcome = None;
        *seen = 0;
        (*client_remaining, *server_remaining) = (0, 0);
        (*ready_seen, *queries, *bytes_in, *bytes_out) = (0, 0, 0, 0);
        for flag in [
            killed_told,
            unsynced,
            awaits_flush,
            copy_in,
            terminated,
            server_fatal,
            timeout_cancel,
            discarding,
            skipping,
            barrier,
            status_wait,
            resume_client,
            unnamed_parsed,
            server_unknown,
            cancels_held,
            cancel_resent,
        ] {
            *flag = false;
        }
    }

    /// Whether [`Tracker::status`] is the transaction status at the end of what was sent
    /// so far: no ReadyForQuery of a client's Sync or Query is outstanding (the proxy's own
    /// queries, sent first on an idle connection, leave it idle). If one is, client
    /// messages wait for it ([`Tracker::status_wait`]). A walk of the reply queue, made
    /// only for the messages that need the status.
    pub fn status_known(&mut self) -> bool {
        let known = !self
            .replies
            .iter()
            .any(|r| matches!(r.expect, Expect::Ready { .. }) && !r.action.is_dropped());
        self.status_wait = !known;
        known
    }

    /// A ReadyForQuery arrived or was dropped from the queue: if client messages were held
    /// for the status ([`Tracker::status_wait`]) and it is known now, the relay forwards
    /// them ([`Tracker::resume_client`]).
    pub fn recheck_held(&mut self) {
        if self.status_wait && self.status_known() {
            self.resume_client = true;
        }
    }

    pub fn push(&mut self, expect: Expect, action: Action) {
        self.replies.push_back(Reply { expect, action });
    }

    /// The client has part of a server message: nothing of the proxy's own (an error that
    /// ends the session) may go to it before the rest, which it would read as that rest.
    #[inline]
    pub fn mid_message_to_client(&self) -> bool {
        self.server_remaining > 0
    }

    /// A successor's message went behind this transaction's, whose replies are all in:
    /// the server's next bytes are the successor's (`relay::pipeline`).
    #[inline]
    pub fn pipelined_reply_over(&self) -> bool {
        self.pipelined.is_some() && self.replies.is_empty() && self.server_remaining == 0
    }

    /// The server may be handed to another client.
    pub fn is_clean(&self) -> bool {
        self.replies.is_empty()
            && self.status == b'I'
            && !self.unsynced
            && !self.copy_in
            && !self.discarding
            && self.client_remaining == 0
            && self.server_remaining == 0
    }

    /// Notes what a reply group the server skipped or answered with an error leaves undone.
    pub fn abandon_reply(&mut self, reply: Reply) {
        match reply.action {
            Action::Prepared { def, name } => {
                self.undo.push(Undo::ServerLacks(def.id));
                self.undo.push(Undo::ClientLacks(name));
            }
            Action::ProxyParse { id } => self.undo.push(Undo::ServerLacks(id)),
            Action::Evict => self.undo.push(Undo::ServerUnknown),
            Action::FakeParsed { name } => self.undo.push(Undo::ClientLacks(name)),
            _ => {}
        }
    }
}
