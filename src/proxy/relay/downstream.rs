//! Server → client: forwards server bytes as whole slices of the read buffer, scanning
//! headers to match replies with the messages that asked for them (see [`super::tracker`]),
//! dropping the replies to the proxy's own messages and making up the ones the server will
//! not send.

use super::client_write::write_client;
use super::tracker::{Action, Expect, Reply, Tracker, Undo};
use super::SessionState;
use super::Stop;
use crate::error::ClientError;
use crate::pool::{AppliedTenant, ServerConn};
use crate::protocol::fields;
use crate::protocol::framing::{backend, parse_header};
use crate::proxy::{ClientConn, Session};
use bytes::{Buf, BytesMut};

/// Server bytes (or their absence) that are not forwarded as they are.
pub(super) enum Detour {
    /// A reply to the proxy's own message: dropped. `prelude` when it ends the prelude.
    Swallow { len: usize, prelude: bool },
    /// The 57014 caused by our command_timeout cancel: replaced by one naming the timeout.
    Reword { len: usize },
    /// The reply group at the front is made up by the proxy: send it now.
    Emit,
    /// The server's error for a message standing in for one the proxy refused: replaced
    /// by the proxy's error.
    Replace { len: usize, error: Box<ClientError> },
    /// An error that quotes the proxy's statement names: sent with the client's names.
    Rename { len: usize },
    /// An error of a Query that carried the tenant switch: its position counts the
    /// switch's SQL, which the client never sent.
    Shift { len: usize, by: u32 },
}

/// What a scan left to do: bytes at the front of the server's buffer that go to the client
/// as they are, then what happens after them.
pub(super) type Pending = (usize, Option<Detour>);

/// Scans the server's bytes and settles the bookkeeping the scan found (see [`scan_server`]):
/// what is left is to send the bytes and take the detour.
fn scan_and_settle(
    server: &mut ServerConn,
    t: &mut Tracker,
    state: &mut SessionState,
    session: &Session,
) -> Result<Pending, Stop> {
    let Scan {
        dropped,
        forward,
        detour,
        prelude_done,
    } = scan_server(&server.buf, t)?;
    if dropped > 0 {
        server.buf.advance(dropped);
    }
    if prelude_done {
        server.tenant = AppliedTenant::Applied(session.tenant);
    }
    super::release_held_cancels(t, session);
    if t.cancel_resent && !server.buf.is_empty() {
        // Bytes past the proxy's own replies: the client's reply began.
        t.cancel_resent = false;
        session.cancel.target.reply_began();
    }
    for undo in t.undo.drain(..) {
        match undo {
            Undo::ServerLacks(id) => server.statements.remove(id),
            Undo::ClientLacks(name) => state.statements.remove(&name),
            Undo::ServerUnknown => t.server_unknown = true,
        }
    }
    for (name, value) in t.param_updates.drain(..) {
        // A reported parameter the client changed: it now wants this value, and this
        // server has it.
        let value = crate::proxy::session_params::literal(&value);
        state.params.set(&name, value.clone());
        server.params.set(&name, value);
    }
    if let Some(applied) = t.carried_outcome.take() {
        // A failed transaction rolled the carried settings back: the connection holds
        // whatever it held before, so it counts as carrying no known tenant.
        server.tenant = if applied {
            AppliedTenant::Applied(session.tenant)
        } else {
            // What the rolled-back switch dropped is not known either.
            server.may_hold_objects = true;
            server.may_hold_settings = true;
            AppliedTenant::Unknown
        };
    }
    Ok((forward, detour))
}

/// A write to the client failed. With a pipelined successor's message behind the
/// transaction (`relay::pipeline`) the client counts as gone and the reply runs out unread
/// (`n`, as if written), so that the connection reaches the successor; otherwise the
/// transaction ends.
#[cold]
fn client_gone(client: &mut ClientConn, t: &Tracker, n: usize) -> Result<usize, Stop> {
    if t.pipelined.is_none() {
        return Err(Stop::ClientGone);
    }
    client.said_goodbye = true;
    Ok(n)
}

/// [`write_client`], with [`client_gone`]'s reading of a client that is gone.
async fn write_or_gone(
    client: &mut ClientConn,
    t: &Tracker,
    bytes: &[u8],
    session: &Session,
) -> Result<(), Stop> {
    match write_client(client, bytes, session).await {
        Err(Stop::ClientGone) => client_gone(client, t, 0).map(drop),
        other => other,
    }
}

/// [`forward_server`]'s common case as plain code (why: `upstream::forward_client_now`):
/// replies the client sees as they are, taken by its socket at once. `true`: what is left
/// for [`forward_server`] is in `left` (written only then: the caller's slot for it is
/// in its future, and the common case leaves that line alone).
pub(super) fn forward_server_now(
    client: &mut ClientConn,
    server: &mut ServerConn,
    t: &mut Tracker,
    state: &mut SessionState,
    session: &Session,
    left: &mut Option<Pending>,
) -> Result<bool, Stop> {
    // Right after the client's messages went out the server has said nothing yet; a scan
    // would find nothing and settle nothing (callgrind: about 200 instructions per
    // transaction, a thirtieth of the proxy's user time at pgbench -S).
    if server.buf.is_empty() && t.nothing_to_settle() {
        return Ok(false);
    }
    let (pos, detour) = scan_and_settle(server, t, state, session)?;
    let n = match pos {
        0 => 0,
        // Replies to a client that said goodbye go nowhere (ClientConn::said_goodbye).
        _ if client.said_goodbye => pos,
        _ => match client.stream.write_now(&server.buf[..pos]) {
            Ok(n) => n,
            Err(_) => client_gone(client, t, pos)?,
        },
    };
    t.bytes_out += n as u64;
    server.buf.advance(n);
    if n == pos && detour.is_none() {
        return Ok(false);
    }
    *left = Some((pos - n, detour));
    Ok(true)
}

/// Finishes what [`forward_server_now`] left (`pending`), then forwards whatever else the
/// buffer holds.
pub(super) async fn forward_server(
    client: &mut ClientConn,
    server: &mut ServerConn,
    t: &mut Tracker,
    state: &mut SessionState,
    session: &Session,
    mut pending: Option<Pending>,
) -> Result<(), Stop> {
    loop {
        let (pos, detour) = match pending.take() {
            Some(p) => p,
            None => scan_and_settle(server, t, state, session)?,
        };
        if pos > 0 {
            write_or_gone(client, t, &server.buf[..pos], session).await?;
            t.bytes_out += pos as u64;
            server.buf.advance(pos);
        }
        let made_up: ClientError = match detour {
            None => return Ok(()),
            Some(Detour::Swallow { len, prelude }) => {
                server.buf.advance(len);
                if prelude {
                    server.tenant = AppliedTenant::Applied(session.tenant);
                }
                // The next pass's scan_and_settle lets held cancels through.
                continue;
            }
            Some(Detour::Replace { len, error }) => {
                server.buf.advance(len);
                *error
            }
            Some(Detour::Rename { len }) => {
                let msg = server.buf.split_to(len);
                let renamed = crate::proxy::statements::rename_in_error(&msg, &state.statements);
                t.bytes_out += renamed.len() as u64;
                write_or_gone(client, t, &renamed, session).await?;
                continue;
            }
            Some(Detour::Shift { len, by }) => {
                let msg = server.buf.split_to(len);
                let shifted = shift_position(&msg, by);
                t.bytes_out += shifted.len() as u64;
                write_or_gone(client, t, &shifted, session).await?;
                continue;
            }
            Some(Detour::Reword { len }) => {
                server.buf.advance(len);
                super::errors::command_timeout_error(session)
            }
            Some(Detour::Emit) => match t.replies.pop_front().map(|r| r.action) {
                Some(Action::Fake(tag)) => {
                    let msg = [tag, 0, 0, 0, 4];
                    t.bytes_out += msg.len() as u64;
                    write_or_gone(client, t, &msg, session).await?;
                    continue;
                }
                Some(Action::FakeParsed { .. }) => {
                    t.bytes_out += 5;
                    write_or_gone(client, t, &[b'1', 0, 0, 0, 4], session).await?;
                    continue;
                }
                Some(Action::FakeComplete(tag)) => {
                    let mut out = BytesMut::with_capacity(32);
                    crate::protocol::encode::command_complete(&mut out, tag);
                    crate::protocol::encode::ready_for_query(&mut out, t.status);
                    t.bytes_out += out.len() as u64;
                    write_or_gone(client, t, &out, session).await?;
                    continue;
                }
                _ => continue,
            },
        };
        let mut out = BytesMut::with_capacity(256);
        made_up.encode(&mut out);
        t.bytes_out += out.len() as u64;
        write_or_gone(client, t, &out, session).await?;
    }
}

/// Messages that end a reply group or that the proxy reads; they are forwarded only whole.
fn must_be_whole(tag: u8) -> bool {
    !matches!(tag, b'D' | b'd' | b'N' | b'A' | b'V' | b'H' | b'W')
}

/// Whether a message is a row, description or completion of a client's own simple Query
/// (after the replies to a tenant switch it carried, if any), which goes to the client as
/// it is and changes no bookkeeping: the common case, decided
/// without the general matching below (what it would conclude for these).
#[inline]
fn passes_untouched(tag: u8, t: &Tracker) -> bool {
    !t.skipping
        && !matches!(
            tag,
            backend::READY_FOR_QUERY
                | backend::ERROR_RESPONSE
                | backend::NOTICE_RESPONSE
                | backend::NOTIFICATION_RESPONSE
                | backend::PARAMETER_STATUS
                | backend::COPY_IN_RESPONSE
        )
        && t.replies.front().is_some_and(|r| {
            r.expect == (Expect::Ready { simple: true })
                && matches!(r.action, Action::Pass | Action::Carried { skip: 0, .. })
        })
}

/// What [`scan_server`] found at the front of the server's bytes.
struct Scan {
    /// Bytes of replies the client must not see, at the very front: dropped at once.
    dropped: usize,
    /// Bytes after them that go to the client as they are.
    forward: usize,
    /// What happens right after them.
    detour: Option<Detour>,
    /// The dropped bytes ended the tenant prelude.
    prelude_done: bool,
}

/// Scans server messages from the front: which go nowhere, how many bytes go to the client
/// as they are, and what happens right after them. Replies to the proxy's own statements
/// (the tenant switch answers with one CommandComplete per statement) are dropped in the
/// same pass while nothing precedes them.
fn scan_server(buf: &[u8], t: &mut Tracker) -> Result<Scan, Stop> {
    let mut pos = 0;
    let mut dropped = 0;
    let mut prelude_done = false;
    let done = |dropped, end: usize, detour, prelude_done| {
        Ok(Scan {
            dropped,
            forward: end - dropped,
            detour,
            prelude_done,
        })
    };
    loop {
        // What the proxy makes up goes out in order, before anything the server says next;
        // after a server error PostgreSQL would have skipped it, and so do we.
        while t.fake_reply_due() {
            if t.skipping {
                if let Some(r) = t.replies.pop_front() {
                    t.abandon_reply(r);
                }
            } else {
                return done(dropped, pos, Some(Detour::Emit), prelude_done);
            }
        }
        if pos >= buf.len() || t.pipelined_reply_over() {
            // What follows this transaction's last reply is a pipelined successor's.
            break;
        }
        if t.server_remaining > 0 {
            let take = t.server_remaining.min(buf.len() - pos);
            t.server_remaining -= take;
            pos += take;
            continue;
        }
        let h = match parse_header(&buf[pos..]) {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(_) => return Err(Stop::ServerGone { fatal_sent: false }),
        };
        let complete = buf.len() - pos >= h.frame_len;
        let tag = h.tag;
        if complete && tag == backend::COMMAND_COMPLETE && pos == dropped && !t.skipping {
            // A statement of a carried tenant switch: what `account` would conclude, in short.
            if let Some(Reply {
                action: Action::Carried { skip, .. },
                ..
            }) = t.replies.front_mut()
            {
                if *skip > 0 {
                    *skip -= 1;
                    dropped += h.frame_len;
                    pos += h.frame_len;
                    continue;
                }
            }
        }
        if (complete || !must_be_whole(tag)) && passes_untouched(tag, t) {
            if complete {
                pos += h.frame_len;
            } else {
                t.server_remaining = h.frame_len - (buf.len() - pos);
                pos = buf.len();
            }
            continue;
        }
        if t.skipping {
            while t
                .replies
                .front()
                .is_some_and(|r| !matches!(r.expect, Expect::Ready { .. }))
            {
                if let Some(r) = t.replies.pop_front() {
                    t.abandon_reply(r);
                }
            }
        }
        let dropping = t.replies.front().is_some_and(|r| {
            r.action.is_dropped() || matches!(r.action, Action::Carried { skip, .. } if skip > 0)
        });
        // Until a carried switch has committed, the previous tenant's LISTENs are still
        // registered: a notification now would be meant for it.
        let carrying = t
            .replies
            .front()
            .is_some_and(|r| matches!(r.action, Action::Carried { .. }));
        if !complete && (dropping || must_be_whole(tag)) {
            break;
        }
        let is_async = matches!(
            tag,
            backend::NOTICE_RESPONSE | backend::NOTIFICATION_RESPONSE | backend::PARAMETER_STATUS
        );
        let mut after: Option<Detour> = None;
        if !is_async {
            if let Some(d) = account(buf, pos, h.frame_len, tag, t)? {
                match d {
                    Detour::Swallow { len, prelude } if pos == dropped => {
                        dropped += len;
                        pos += len;
                        prelude_done |= prelude;
                        continue;
                    }
                    Detour::Reword { .. }
                    | Detour::Swallow { .. }
                    | Detour::Replace { .. }
                    | Detour::Shift { .. }
                    | Detour::Rename { .. } => return done(dropped, pos, Some(d), prelude_done),
                    other => after = Some(other),
                }
            }
        } else if tag == backend::PARAMETER_STATUS && !dropping && complete {
            let body = &buf[pos + 5..pos + h.frame_len];
            if let Some((k, rest)) = fields::read_cstr(body) {
                if let Some((v, _)) = fields::read_cstr(rest) {
                    t.param_updates.push((
                        String::from_utf8_lossy(k).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    ));
                }
            }
        } else if dropping || (carrying && tag == backend::NOTIFICATION_RESPONSE) {
            if !complete {
                break;
            }
            if pos == dropped {
                dropped += h.frame_len;
                pos += h.frame_len;
                continue;
            }
            let len = h.frame_len;
            let swallow = Detour::Swallow {
                len,
                prelude: false,
            };
            return done(dropped, pos, Some(swallow), prelude_done);
        }
        if complete {
            pos += h.frame_len;
        } else {
            t.server_remaining = h.frame_len - (buf.len() - pos);
            pos = buf.len();
        }
        if after.is_some() {
            return done(dropped, pos, after, prelude_done);
        }
    }
    done(dropped, pos, None, prelude_done)
}

/// Matches one (whole, for the tags that matter) server message against the reply group
/// at the front. Returns a detour for the message itself (Swallow, Reword) or one to take
/// after it is forwarded (ParseFailed).
fn account(
    buf: &[u8],
    pos: usize,
    len: usize,
    tag: u8,
    t: &mut Tracker,
) -> Result<Option<Detour>, Stop> {
    let Some(front) = t.replies.front_mut() else {
        // Unsolicited (a FATAL before the server closes): the client sees it.
        if tag == backend::ERROR_RESPONSE {
            note_error(&buf[pos + 5..pos + len], t);
        }
        return Ok(None);
    };
    let expect = front.expect;
    let drop_it = front.action.is_dropped();
    let is_prelude = matches!(front.action, Action::Prelude);
    let swallow = |prelude| Detour::Swallow { len, prelude };
    match tag {
        backend::READY_FOR_QUERY => {
            let done = t.replies.pop_front();
            if let Some(Reply {
                action: Action::Carried { failed, .. },
                ..
            }) = &done
            {
                t.carried_outcome = Some(!failed);
                t.barrier = false;
            }
            t.seen = 0;
            t.skipping = false;
            t.copy_in = false;
            t.timeout_cancel = false;
            t.ready_seen += 1;
            t.recheck_held();
            if drop_it {
                return Ok(Some(swallow(is_prelude)));
            }
            t.status = buf.get(pos + 5).copied().unwrap_or(b'I');
            if let Some(Reply {
                action: Action::DiscardAll,
                ..
            }) = done
            {
                t.resets.everything = true;
            }
            Ok(None)
        }
        backend::ERROR_RESPONSE => {
            let body = &buf[pos + 5..pos + len];
            if let Action::Bound { def } = &front.action {
                if fields::sqlstate(body) == Some(*b"0A000") {
                    // "cached plan must not change result type": the client's retry
                    // (Close, Parse) must reach a fresh server statement.
                    def.mark_stale();
                }
            }
            if let Action::DiscardAll = front.action {
                // DISCARD ALL failed (or a later statement undid it): statements stay.
                front.action = Action::Pass;
            }
            if is_prelude {
                return Err(switch_failed(body));
            }
            let mut shift = None;
            if let Action::Carried {
                skip,
                of,
                shift: by,
                failed,
            } = &mut front.action
            {
                if *skip > 0 {
                    // Before any reply to the switch, an error placed in the client's own
                    // text is PostgreSQL's parser refusing the Query as a whole (a syntax
                    // error): nothing of it ran, the switch included, and the error is the
                    // client's. Otherwise the switch itself failed: PostgreSQL skips the
                    // rest of the Query, the client's statements included, and the
                    // connection is not trusted again.
                    let refused_whole =
                        *skip == *of && fields::position(body).is_some_and(|p| p > u64::from(*by));
                    // A cancel (the client's, a timeout) that lands on the switch cancels the
                    // client's own Query: it rolls the switch back as any failure after it
                    // does; the client gets its 57014 and the switch goes on again next time.
                    let cancelled = fields::sqlstate(body) == Some(*b"57014");
                    if !refused_whole && !cancelled {
                        return Err(switch_failed(body));
                    }
                    *skip = 0;
                }
                *failed = true;
                shift = Some(*by);
            }
            let mut replaced = None;
            if matches!(expect, Expect::Ready { .. })
                && matches!(front.action, Action::ReplaceError(_))
            {
                // The stand-in of a refused Query failed as it does (upstream::REFUSED_QUERY):
                // the client gets the proxy's error. Any other error (25P02 in a failed
                // transaction) is the one PostgreSQL would have given the refused Query too.
                if let Action::ReplaceError(e) = std::mem::replace(&mut front.action, Action::Pass)
                {
                    if fields::sqlstate(body) == Some(*b"42703") {
                        replaced = Some(e);
                    }
                }
            }
            let reword = note_error(body, t);
            // An error answering a Sync is its implicit transaction failing to commit (a
            // deferred constraint, a serialization failure): PostgreSQL starts no skip, its
            // ReadyForQuery answers that Sync, and what the client pipelined after it runs.
            if !matches!(expect, Expect::Ready { .. }) {
                // Extended protocol: the server now skips everything up to Sync.
                if let Some(r) = t.replies.pop_front() {
                    match r.action {
                        Action::ReplaceError(e) => replaced = Some(e),
                        _ => t.abandon_reply(r),
                    }
                }
                t.seen = 0;
                t.skipping = true;
            }
            if let Some(error) = replaced {
                return Ok(Some(Detour::Replace { len, error }));
            }
            if reword {
                return Ok(Some(Detour::Reword { len }));
            }
            if let Some(by) = shift {
                return Ok(Some(Detour::Shift { len, by }));
            }
            // An error answering the proxy's own Parse still reaches the client: it is the
            // error its own statement would have had, under the client's name.
            let prefix = crate::pool::statements::server_name_prefix().as_bytes();
            if body.windows(prefix.len()).any(|w| w == prefix) {
                return Ok(Some(Detour::Rename { len }));
            }
            Ok(None)
        }
        _ => {
            if let Action::Carried { skip, .. } = &mut front.action {
                if *skip > 0 {
                    *skip -= 1;
                    return Ok(Some(swallow(false)));
                }
            }
            match expect {
                Expect::Count(n) => {
                    t.seen += 1;
                    if t.seen >= n {
                        t.seen = 0;
                        if let Some(Reply {
                            action: Action::Prepared { def, .. },
                            ..
                        }) = t.replies.pop_front()
                        {
                            def.mark_validated();
                        }
                        if is_prelude {
                            return Ok(Some(swallow(true)));
                        }
                    }
                }
                Expect::Execute => match tag {
                    b'C' | b'I' | b's' => {
                        t.replies.pop_front();
                    }
                    backend::COPY_IN_RESPONSE => {
                        t.copy_in = true;
                        // The Syncs already sent after this Execute reach the server in
                        // COPY mode, which ignores them: no ReadyForQuery will answer them.
                        let mut first = true;
                        t.replies.retain(|r| {
                            let keep = first
                                || r.is_fake()
                                || !matches!(r.expect, Expect::Ready { simple: false });
                            first = false;
                            keep
                        });
                        t.recheck_held();
                    }
                    _ => {}
                },
                Expect::Ready { .. } => {
                    if tag == backend::COPY_IN_RESPONSE {
                        t.copy_in = true;
                    }
                }
            }
            Ok(drop_it.then(|| swallow(false)))
        }
    }
}

/// What the tenant switch's error means. Under `exit_on_error` every error of the switch
/// is FATAL; one of class 57P (a terminated backend, PostgreSQL shutting down or
/// crashing) or 08 is the server going away under it, as it could under any statement: the
/// client gets 08006, not the XX000 and alarm of a switch the server refused.
fn switch_failed(body: &[u8]) -> Stop {
    match fields::sqlstate(body) {
        Some([b'5', b'7', b'P', ..] | [b'0', b'8', ..]) => Stop::ServerGone { fatal_sent: false },
        _ => Stop::Prelude(fields::summary(body)),
    }
}

/// Counts an error and notes a FATAL; returns whether it is the 57014 of our own
/// command_timeout cancel (to be reworded).
fn note_error(body: &[u8], t: &mut Tracker) -> bool {
    let code = fields::sqlstate(body).unwrap_or(*b"XX000");
    crate::metrics::count_error(&code);
    if fields::error_fields(body).any(|(f, v)| f == b'V' && (v == b"FATAL" || v == b"PANIC")) {
        t.server_fatal = true;
    }
    if t.timeout_cancel && &code == b"57014" {
        t.timeout_cancel = false;
        return true;
    }
    false
}

/// An ErrorResponse or NoticeResponse with its position field (`P`, in characters) moved
/// back by `by`: the carried switch in front of the client's SQL is ASCII, so its bytes
/// are its characters.
fn shift_position(msg: &[u8], by: u32) -> BytesMut {
    use bytes::BufMut;
    crate::protocol::encode::rewritten_error(msg, |field, text, out| {
        let moved = (field == b'P')
            .then(|| fields::position_value(text))
            .flatten()
            .map(|p| p.saturating_sub(u64::from(by)).max(1));
        match moved {
            Some(p) => out.put_slice(p.to_string().as_bytes()),
            None => out.put_slice(text),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_positions_move_back_over_the_carried_switch() {
        let mut msg = vec![b'E', 0, 0, 0, 0];
        for (f, v) in [
            (b'S', &b"ERROR"[..]),
            (b'C', b"42601"),
            (b'M', b"syntax"),
            (b'P', b"312"),
        ] {
            msg.push(f);
            msg.extend_from_slice(v);
            msg.push(0);
        }
        msg.push(0);
        let len = (msg.len() - 1) as u32;
        msg[1..5].copy_from_slice(&len.to_be_bytes());
        let out = shift_position(&msg, 300);
        let got: Vec<_> = fields::error_fields(&out[5..]).collect();
        assert!(got.contains(&(b'P', &b"12"[..])), "{got:?}");
        assert!(got.contains(&(b'M', &b"syntax"[..])));
        assert_eq!(
            u32::from_be_bytes(out[1..5].try_into().unwrap()) as usize,
            out.len() - 1
        );
    }
}
