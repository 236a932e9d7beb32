//! The tenant switch carried in front of a client's own simple Query of plain DML (one
//! statement list, one reply, the cost of a client that sets the tenant itself): see
//! `tenant::prelude::Prelude::carried`.

use super::duplex::write_owned_or_keep;
use super::tracker::{Action, Expect, Tracker};
use super::upstream::{scan_client, Scanned};
use super::{SessionState, Stop};
use crate::pool::ServerConn;
use crate::protocol::encode;
use crate::protocol::fields::read_cstr;
use crate::protocol::framing::{frontend, parse_header};
use crate::proxy::{spare_buffers, ClientConn, ProxyContext};
use bytes::{Buf, BytesMut};

/// What [`try_carry`] did.
pub(super) enum Carry {
    /// The client's Query went out with the tenant switch in front of its SQL; `Some`:
    /// what the server's socket did not take at once, for `duplex::finish`.
    Sent(Option<BytesMut>),
    /// Nothing was sent. `Some` is the scan of the first message if it was scanned (a
    /// refusal), for `upstream::forward_client` to act on without scanning it again.
    Not(Option<Scanned>),
}

/// The client's first message when it is a complete simple Query within the size limit,
/// with what carrying or pipelining it looks at first.
pub(super) struct FirstQuery<'a> {
    /// Its length, header included.
    pub len: usize,
    pub sql: &'a [u8],
    /// `tenant::shape::single_dml`'s answer.
    pub dml: Option<bool>,
}

impl<'a> FirstQuery<'a> {
    pub(super) fn of(buf: &'a [u8], limit: usize) -> Option<FirstQuery<'a>> {
        let h = parse_header(buf).ok()??;
        if h.tag != frontend::QUERY || buf.len() < h.frame_len || h.frame_len > limit {
            return None;
        }
        let (sql, _) = read_cstr(&buf[5..h.frame_len])?;
        Some(FirstQuery {
            len: h.frame_len,
            sql,
            dml: crate::tenant::shape::single_dml(sql),
        })
    }
}

/// How the reply to a Query carried behind a switch is read (`Prelude::carried`'s parts
/// and reply count): the switch's own replies skipped, error positions shifted back by the
/// switch's length and its `; `.
pub(super) fn carried_action([unlock, objects, rest]: [&[u8]; 3], skip: u8) -> Action {
    Action::Carried {
        skip,
        of: skip,
        shift: (unlock.len() + objects.len() + rest.len()) as u32 + 2,
        failed: false,
    }
}

/// Sends the client's first message, a complete simple Query of plain DML, with the tenant
/// switch in front of its SQL (see `tenant::prelude::Prelude::carried`), and holds back whatever
/// the client sends next until the server has answered it.
pub(super) fn try_carry(
    client: &mut ClientConn,
    server: &mut ServerConn,
    t: &mut Tracker,
    state: &mut SessionState,
    ctx: &ProxyContext,
    prelude: &crate::tenant::prelude::Prelude,
    leftovers: crate::tenant::prelude::Leftovers,
) -> Result<Carry, Stop> {
    let limit = ctx.settings.config.max_client_message_bytes;
    let Some(FirstQuery { len, sql, dml }) = FirstQuery::of(&client.buf, limit) else {
        return Ok(Carry::Not(None));
    };
    if !crate::tenant::prelude::can_carry_given(sql, dml) {
        return Ok(Carry::Not(None));
    }
    let pushed = t.replies.len();
    let scanned = scan_client(
        &client.buf[..len],
        t,
        ctx,
        &mut state.params,
        server,
        Some(dml),
    )?;
    let plain = matches!(scanned, (at, None) if at == len)
        && t.replies.len() == pushed + 1
        && t.replies.back().is_some_and(|r| {
            r.expect == (Expect::Ready { simple: true }) && matches!(r.action, Action::Pass)
        });
    if !plain {
        // Refused by the guard: it fails on the server after the ordinary prelude.
        return Ok(Carry::Not(Some(scanned)));
    }
    let (parts, skip) = prelude.carried(leftovers);
    if let Some(r) = t.replies.back_mut() {
        r.action = carried_action(parts, skip);
    }
    let [unlock, objects, rest] = parts;
    // Built in a borrowed buffer, one this thread used moments ago, rather than in one kept
    // per client, whose lines went cold while the client waited in the pool's queue.
    let mut out = spare_buffers::take();
    encode::query_of_parts(&mut out, &[unlock, objects, rest, b"; ", sql]);
    t.bytes_in += len as u64;
    client.buf.advance(len);
    t.barrier = true;
    Ok(Carry::Sent(write_owned_or_keep(&server.stream, out)?))
}
