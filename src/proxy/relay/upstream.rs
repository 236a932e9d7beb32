//! Client → server: forwards whole runs of client messages in one write, scanning only
//! headers, except for the few messages the proxy must look into: Query and Parse (the
//! statement guard), and named statements in Parse/Bind/Describe/Close (rewritten to the
//! proxy's names, prepared on this server on demand).

use super::duplex::{write_or_keep, write_owned_or_keep};
use super::tracker::{Action, Expect, Tracker};
use super::SessionState;
use super::{oversized, Stop};
use crate::error::{ClientError, ErrorKind};
use crate::pool::statements::server_name;
use crate::pool::ServerConn;
use crate::protocol::codes;
use crate::protocol::encode;
use crate::protocol::fields::read_cstr;
use crate::protocol::framing::{frontend, parse_header, Header};
use crate::proxy::session_params::ParamSet;
use crate::proxy::statements::{
    close_message, rewrite_name, session_statement_inside, ClientStatements,
};
use crate::proxy::{spare_buffers, ClientConn, ProxyContext};
use bytes::{Buf, BytesMut};

/// A client message that is not forwarded as it is.
pub(super) enum Detour {
    /// A Query the statement guard refused: a stand-in that fails on the server goes
    /// instead, so that transaction state and ReadyForQuery stay PostgreSQL's own, and its
    /// error is replaced by the proxy's.
    RefuseQuery { len: usize, error: ClientError },
    /// A message refused by the proxy itself: dropped with the rest of its run up to Sync,
    /// and the error goes to the client in its place.
    Refuse { len: usize, error: ClientError },
    /// A message dropped while discarding.
    Skip { len: usize },
    /// Parse, Bind, Describe or Close naming a client statement.
    Named { len: usize },
    /// `DEALLOCATE name|ALL` in a simple Query: answered for the client's own statements.
    Deallocate { len: usize, name: Option<Vec<u8>> },
}

/// A scan result: bytes to forward as they are, and what to do with the message after them.
pub(super) type Scanned = (usize, Option<Detour>);

/// [`forward_client`]'s common case as plain code: a run of messages the proxy passes as
/// they are, taken by the socket at once. `true`: what is left for [`forward_client`] (the
/// scan it made, with the bytes still to write) is in `left`, which is written only then.
///
/// Why not just the async function: its future lives in the client's task, and setting
/// one up per call writes state to cache lines that 50 other clients' transactions (and
/// the PostgreSQL backends sharing the cores) have evicted since this client last ran.
/// callgrind's cache model (pgbench -S, 50 clients, a 64 KiB last level) counted 75
/// last-level data misses per transaction for the proxy against PgBouncer's ~0. These
/// plain-code paths alone removed one of them; not writing their results into the future
/// (`left` is written only when something is left) removed four write misses more, 2.4
/// misses net (docs/benchmarks.md).
pub(super) fn forward_client_now(
    client: &mut ClientConn,
    server: &mut ServerConn,
    t: &mut Tracker,
    state: &mut SessionState,
    ctx: &ProxyContext,
    left: &mut Option<Scanned>,
) -> Result<bool, Stop> {
    if t.barrier || t.status_wait {
        return Ok(false);
    }
    let (pos, detour) = scan_client(&client.buf, t, ctx, &mut state.params, server, None)?;
    if detour.is_some() {
        *left = Some((pos, detour));
        return Ok(true);
    }
    let n = match pos {
        0 => 0,
        _ => server
            .stream
            .write_now(&client.buf[..pos])
            .map_err(|_| Stop::ServerWriteFailed)?,
    };
    t.bytes_in += n as u64;
    client.buf.advance(n);
    if n < pos {
        *left = Some((pos - n, None));
        return Ok(true);
    }
    if t.terminated {
        client.buf.clear();
    }
    Ok(false)
}

/// Forwards the complete (or streamable) client messages in the buffer, after `prefix`
/// (the tenant prelude) if given; `first` is the scan of the first message if the caller
/// made it already. What the server's socket does not take at once is returned, for
/// `duplex::finish`.
pub(super) fn forward_client(
    client: &mut ClientConn,
    server: &mut ServerConn,
    t: &mut Tracker,
    state: &mut SessionState,
    ctx: &ProxyContext,
    mut prefix: Option<&[u8]>,
    mut first: Option<Scanned>,
) -> Result<Option<BytesMut>, Stop> {
    if first.is_none() && prefix.is_none() && (t.barrier || t.status_wait) {
        // See carry::try_carry: the rest waits for the carried switch's answer; and
        // Tracker::status_wait.
        return Ok(None);
    }
    // Batches the proxy does not touch go out straight from the read buffer; once a
    // message is rewritten, the rest of the batch is gathered so it still leaves in one write,
    // in a borrowed buffer (see carry::try_carry).
    let mut out = BytesMut::new();
    loop {
        let (pos, detour) = match first.take() {
            Some(scanned) => scanned,
            None => scan_client(&client.buf, t, ctx, &mut state.params, server, None)?,
        };
        let head = prefix.take().unwrap_or(&[]);
        if out.is_empty() && detour.is_none() {
            let rest = write_or_keep(&server.stream, head, &client.buf[..pos])?;
            t.bytes_in += pos as u64;
            client.buf.advance(pos);
            if t.terminated {
                client.buf.clear();
            }
            return Ok(rest);
        }
        if out.capacity() == 0 {
            out = spare_buffers::take();
        }
        out.extend_from_slice(head);
        out.extend_from_slice(&client.buf[..pos]);
        t.bytes_in += pos as u64;
        client.buf.advance(pos);
        let Some(detour) = detour else { break };
        match detour {
            Detour::RefuseQuery { len, error } => {
                encode::query(&mut out, REFUSED_QUERY);
                client.buf.advance(len);
                t.queries += 1;
                let error = Action::ReplaceError(Box::new(error));
                t.push(Expect::Ready { simple: true }, error);
            }
            Detour::Refuse { len, error } => {
                client.buf.advance(len);
                refuse(t, error, &mut out);
            }
            Detour::Skip { len } => client.buf.advance(len),
            Detour::Deallocate { len, name } => {
                let msg = client.buf.split_to(len);
                t.bytes_in += len as u64;
                t.queries += 1;
                match name {
                    // In a failed transaction PostgreSQL refuses it (25P02): let it.
                    _ if t.status == b'E' => {
                        out.extend_from_slice(&msg);
                        t.push(Expect::Ready { simple: true }, Action::Pass);
                    }
                    None => {
                        state.statements.clear();
                        t.push(Expect::Count(0), Action::FakeComplete("DEALLOCATE ALL"));
                    }
                    Some(n) if state.statements.contains(&n) => {
                        state.statements.remove(&n);
                        t.push(Expect::Count(0), Action::FakeComplete("DEALLOCATE"));
                    }
                    // Not a protocol-level statement of this client: PostgreSQL answers.
                    Some(_) => {
                        out.extend_from_slice(&msg);
                        t.push(Expect::Ready { simple: true }, Action::Pass);
                    }
                }
            }
            Detour::Named { len } => {
                let msg = client.buf.split_to(len);
                named(&msg, server, t, &mut state.statements, ctx, &mut out);
                t.bytes_in += len as u64;
            }
        }
    }
    if t.terminated {
        // Nothing after Terminate matters.
        client.buf.clear();
    }
    if out.is_empty() {
        if out.capacity() > 0 {
            spare_buffers::give_back(out);
        }
        return Ok(None);
    }
    write_owned_or_keep(&server.stream, out)
}

/// Reports `error` in place of the refused message and drops the rest of its run.
///
/// The server must fail too, as PostgreSQL would have: an open transaction is aborted (a
/// later COMMIT must not commit it) and the server skips up to Sync. So a Bind of a
/// statement that never exists goes in the refused message's place, and its error is
/// replaced by `error`.
fn refuse(t: &mut Tracker, error: ClientError, out: &mut BytesMut) {
    rewrite_name(frontend::BIND, b"\0", &server_name(0), b"\0\0\0\0\0\0", out);
    t.push(Expect::Count(1), Action::ReplaceError(Box::new(error)));
    t.discarding = true;
}

/// The stand-in for a refused Query: a column that does not exist (42703), which fails for
/// every role without a language privilege (the application roles may not run DO blocks,
/// migrations/0006) and reads plainly in the server's log. It parses, so in a failed
/// transaction PostgreSQL answers 25P02 first, as it would have the refused Query.
pub(super) const REFUSED_QUERY: &str = "SELECT refused_by_launch_proxy";

fn guard_error(v: &crate::tenant::guard::GuardViolation) -> ClientError {
    metrics::counter!(crate::metrics::names::GUARD_VIOLATIONS, "what" => v.what).increment(1);
    ClientError::error(ErrorKind::Auth, codes::INSUFFICIENT_PRIVILEGE, v.message())
}

/// Whether a statement's text starts with a transaction-ending command, which PostgreSQL
/// accepts in a failed transaction (its IsTransactionExitStmt: COMMIT, END, ROLLBACK,
/// ABORT, PREPARE TRANSACTION).
fn ends_transaction(sql: &[u8]) -> bool {
    let Some(first) = crate::tenant::lexer::Lexer::new(sql).find(|t| !t.kind.is_trivia()) else {
        return false;
    };
    [&b"commit"[..], b"end", b"rollback", b"abort", b"prepare"]
        .iter()
        .any(|w| first.is_word(w))
}

fn session_statement_refused() -> ClientError {
    ClientError::error(
        ErrorKind::Protocol,
        codes::FEATURE_NOT_SUPPORTED,
        "SQL PREPARE, EXECUTE and DEALLOCATE are not supported in transaction pooling except DEALLOCATE alone in a simple Query: use the driver's protocol-level prepared statements",
    )
}

fn no_such_statement(name: &[u8]) -> ClientError {
    ClientError::error(
        ErrorKind::Protocol,
        codes::INVALID_SQL_STATEMENT_NAME,
        format!(
            "prepared statement \"{}\" does not exist",
            String::from_utf8_lossy(name)
        ),
    )
}

/// Whether the named-statement part of a message can be read from what is buffered, and
/// the name (for Bind: after the portal name; Describe/Close: after the kind byte, only for
/// statements). `None`: not enough bytes yet.
pub(super) fn statement_name(tag: u8, body: &[u8]) -> Option<Option<&[u8]>> {
    match tag {
        frontend::PARSE => Some(read_cstr(body).map(|(n, _)| n)),
        frontend::BIND => {
            let (_, rest) = read_cstr(body)?;
            Some(read_cstr(rest).map(|(n, _)| n))
        }
        frontend::DESCRIBE | frontend::CLOSE => match body.first() {
            None => None,
            Some(b'S') => Some(read_cstr(&body[1..]).map(|(n, _)| n)),
            Some(_) => Some(None),
        },
        _ => Some(None),
    }
}

/// Scans client messages from the front: how many bytes go to the server as they are,
/// and what to do with the message right after them. `first_dml`: `shape::single_dml`'s
/// answer for the first Query, if the caller has it (`carry::try_carry` needed it first).
pub(super) fn scan_client(
    buf: &[u8],
    t: &mut Tracker,
    ctx: &ProxyContext,
    desired: &mut ParamSet,
    server: &mut ServerConn,
    mut first_dml: Option<Option<bool>>,
) -> Result<(usize, Option<Detour>), Stop> {
    let on_server = &mut server.params;
    let objects = &mut server.may_hold_objects;
    let settings = &mut server.may_hold_settings;
    let mut pos = 0;
    let max = ctx.settings.config.max_client_message_bytes;
    while pos < buf.len() {
        if t.client_remaining > 0 {
            let take = t.client_remaining.min(buf.len() - pos);
            t.client_remaining -= take;
            pos += take;
            continue;
        }
        let h = match parse_header(&buf[pos..]) {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(_) => {
                return Err(Stop::Client(ClientError::protocol(
                    "invalid message length",
                )))
            }
        };
        if h.frame_len > max {
            return Err(Stop::Client(oversized(h, ctx)));
        }
        let avail = (buf.len() - pos).min(h.frame_len);
        let complete = avail == h.frame_len;
        let body = &buf[pos + 5..pos + avail];
        if t.discarding {
            if !complete {
                break;
            }
            if h.tag != frontend::SYNC {
                return Ok((pos, Some(Detour::Skip { len: h.frame_len })));
            }
            t.discarding = false;
        }
        // Named statements are rewritten, so their messages must be whole; a large unnamed
        // Bind may stream.
        let name = match statement_name(h.tag, body) {
            None if complete => {
                return Err(Stop::Client(ClientError::protocol(format!(
                    "malformed message of type '{}'",
                    h.tag as char
                ))))
            }
            None => break,
            Some(n) => n.filter(|n| !n.is_empty()),
        };
        if !complete && (name.is_some() || !streamable(h.tag)) {
            break;
        }
        match h.tag {
            frontend::PARSE
            | frontend::BIND
            | frontend::DESCRIBE
            | frontend::CLOSE
            | frontend::EXECUTE => t.awaits_flush = true,
            frontend::FLUSH | frontend::SYNC => t.awaits_flush = false,
            _ => {}
        }
        match h.tag {
            frontend::TERMINATE => {
                t.terminated = true;
                break;
            }
            frontend::QUERY | frontend::PARSE => {
                let sql = sql_of(h.tag, body);
                let dml = first_dml
                    .take()
                    .unwrap_or_else(|| crate::tenant::shape::single_dml(sql));
                let (mentions, single_dml) = crate::tenant::shape::inspect_given(sql, dml);
                if !*objects && !crate::tenant::shape::leaves_no_objects(sql, single_dml) {
                    *objects = true;
                }
                let session_statement =
                    || mentions.prepared && !ctx.session_mode() && session_statement_inside(sql);
                let mut discards = false;
                if mentions.guarded {
                    let verdict = if ctx.settings.config.tenant.statement_guard {
                        crate::tenant::guard::check_allowing_resets(
                            sql,
                            crate::tenant::PROTECTED_SETTINGS,
                        )
                    } else {
                        Ok(crate::tenant::guard::Resets::default())
                    };
                    if let Ok(r) = verdict {
                        // Settings count as reset at once (at worst the tenant is applied
                        // again). Statements are dropped only once a Query's DISCARD ALL
                        // succeeded: inside a transaction block it fails and drops nothing.
                        t.resets.settings |= r.settings;
                        if h.tag == frontend::QUERY {
                            discards = r.everything;
                        } else {
                            t.resets.everything |= r.everything;
                        }
                    }
                    if let Err(v) = verdict {
                        let error = guard_error(&v);
                        let len = h.frame_len;
                        let detour = if h.tag == frontend::QUERY {
                            Detour::RefuseQuery { len, error }
                        } else {
                            Detour::Refuse { len, error }
                        };
                        return Ok((pos, Some(detour)));
                    }
                    // A session-level SET follows the client to its next server connection.
                    desired.observe_sql(sql);
                    if on_server.observe_sql(sql)
                        || crate::tenant::shape::names_setting_function(sql)
                    {
                        // Only the switch's RESET ALL undoes it (set_config, pg_settings).
                        *settings = true;
                    }
                }
                if h.tag == frontend::QUERY {
                    use crate::proxy::statements::{classify_sql, SqlPrepared};
                    let len = h.frame_len;
                    // Only text that mentions one of their words can be one of them.
                    match if mentions.prepared {
                        classify_sql(sql)
                    } else {
                        None
                    } {
                        Some(SqlPrepared::PrepareOrExecute) if !ctx.session_mode() => {
                            let error = ClientError::error(
                                ErrorKind::Protocol,
                                codes::FEATURE_NOT_SUPPORTED,
                                "SQL PREPARE and EXECUTE are not supported in transaction pooling: use the driver's protocol-level prepared statements",
                            );
                            return Ok((pos, Some(Detour::RefuseQuery { len, error })));
                        }
                        Some(SqlPrepared::Deallocate(_)) if !t.status_known() => break,
                        Some(SqlPrepared::Deallocate(name)) => {
                            return Ok((pos, Some(Detour::Deallocate { len, name })));
                        }
                        _ if session_statement() => {
                            let error = session_statement_refused();
                            return Ok((pos, Some(Detour::RefuseQuery { len, error })));
                        }
                        _ => {}
                    }
                    t.queries += 1;
                    let action = if discards {
                        Action::DiscardAll
                    } else {
                        Action::Pass
                    };
                    t.push(Expect::Ready { simple: true }, action);
                } else if session_statement() {
                    let error = session_statement_refused();
                    return Ok((
                        pos,
                        Some(Detour::Refuse {
                            len: h.frame_len,
                            error,
                        }),
                    ));
                } else if name.is_some() {
                    if !t.status_known() {
                        break;
                    }
                    return Ok((pos, Some(Detour::Named { len: h.frame_len })));
                } else {
                    t.unnamed_parsed = true;
                    t.unsynced = true;
                    t.push(Expect::Count(1), Action::Pass);
                }
            }
            frontend::BIND | frontend::DESCRIBE | frontend::CLOSE => {
                if name.is_some() {
                    return Ok((pos, Some(Detour::Named { len: h.frame_len })));
                }
                let unnamed_statement = h.tag == frontend::BIND
                    || (h.tag == frontend::DESCRIBE && body.first() == Some(&b'S'));
                if unnamed_statement && !t.unnamed_parsed {
                    // A refused message is dropped whole, not streamed: wait for all of it
                    // (it is within max_client_message_bytes).
                    if !complete {
                        break;
                    }
                    // PostgreSQL would still hold this client's unnamed statement from an
                    // earlier transaction; the server here may hold another client's.
                    let error = ClientError::error(
                        ErrorKind::Protocol,
                        codes::INVALID_SQL_STATEMENT_NAME,
                        "unnamed prepared statement does not exist",
                    )
                    .with_hint("launch-proxy keeps the unnamed statement only within a transaction: send Parse with the Bind, or use a named statement");
                    let len = h.frame_len;
                    return Ok((pos, Some(Detour::Refuse { len, error })));
                }
                t.unsynced = true;
                let count = if h.tag == frontend::DESCRIBE && body.first() == Some(&b'S') {
                    2
                } else {
                    1
                };
                t.push(Expect::Count(count), Action::Pass);
            }
            frontend::EXECUTE => {
                t.queries += 1;
                t.unsynced = true;
                t.push(Expect::Execute, Action::Pass);
            }
            frontend::FUNCTION_CALL => {
                // Any function by OID, set_config included, out of the statement guard's
                // sight; its one remaining use, large objects, is closed to the
                // application roles (migrations/0006).
                let error = ClientError::error(
                    ErrorKind::Protocol,
                    codes::FEATURE_NOT_SUPPORTED,
                    "the FunctionCall message is not supported through launch-proxy: call the function in a query",
                );
                let len = h.frame_len;
                return Ok((pos, Some(Detour::RefuseQuery { len, error })));
            }
            frontend::SYNC => {
                t.unsynced = false;
                // During COPY IN the server ignores Sync: it produces no ReadyForQuery.
                if !t.copy_in {
                    t.push(Expect::Ready { simple: false }, Action::Pass);
                }
            }
            frontend::COPY_DONE | frontend::COPY_FAIL => t.copy_in = false,
            frontend::COPY_DATA | frontend::FLUSH => {}
            _ => t.unsynced = true,
        }
        if complete {
            pos += h.frame_len;
        } else {
            t.client_remaining = h.frame_len - avail;
            pos = buf.len();
        }
    }
    Ok((pos, None))
}

/// The SQL text of a Query body or of a Parse body (after the statement name).
fn sql_of(tag: u8, body: &[u8]) -> &[u8] {
    let body = if tag == frontend::PARSE {
        match read_cstr(body) {
            Some((_, rest)) => rest,
            None => return body,
        }
    } else {
        body
    };
    read_cstr(body).map_or(body, |(sql, _)| sql)
}

/// Makes sure the server holds `def`, queueing a Parse (and a Close for the statement it
/// evicts) into `out` if not. `on_error` names the client statement to forget if the
/// Parse fails (a client Parse), or `None` for one the proxy sends on its own.
fn ensure_prepared(
    def: &std::sync::Arc<crate::proxy::statements::StatementDef>,
    server: &mut ServerConn,
    t: &mut Tracker,
    out: &mut BytesMut,
    client_parse: Option<&[u8]>,
) -> bool {
    if server.statements.touch(def.id) {
        return false;
    }
    if let Some(evicted) = server.statements.insert(def.id) {
        close_message(evicted, out);
        t.push(Expect::Count(1), Action::Evict);
    }
    out.extend_from_slice(&def.parse);
    let action = match client_parse {
        Some(name) => Action::Prepared {
            def: def.clone(),
            name: name.into(),
        },
        None => Action::ProxyParse { id: def.id },
    };
    t.push(Expect::Count(1), action);
    true
}

/// Handles a Parse, Bind, Describe or Close that names a client statement.
fn named(
    msg: &[u8],
    server: &mut ServerConn,
    t: &mut Tracker,
    statements: &mut ClientStatements,
    ctx: &ProxyContext,
    out: &mut BytesMut,
) {
    let tag = msg[0];
    let body = &msg[5..];
    t.unsynced = true;
    match tag {
        frontend::PARSE => {
            let Some((name, query_and_types)) = read_cstr(body) else {
                return;
            };
            if t.status == b'E' && !ends_transaction(query_and_types) {
                // PostgreSQL refuses every Parse in a failed transaction but those of
                // COMMIT/ROLLBACK and the like, even of a text a server already holds
                // (which the proxy would otherwise answer itself).
                let error = ClientError::error(
                    ErrorKind::Protocol,
                    codes::IN_FAILED_SQL_TRANSACTION,
                    "current transaction is aborted, commands ignored until end of transaction block",
                );
                return refuse(t, error, out);
            }
            if statements.contains(name) {
                let error = ClientError::error(
                    ErrorKind::Protocol,
                    codes::DUPLICATE_PREPARED_STATEMENT,
                    format!(
                        "prepared statement \"{}\" already exists",
                        String::from_utf8_lossy(name)
                    ),
                );
                return refuse(t, error, out);
            }
            let def = ctx.statements.intern(query_and_types);
            if !statements.insert(name, def.clone()) {
                let error = ClientError::error(
                    ErrorKind::Limit,
                    codes::PROGRAM_LIMIT_EXCEEDED,
                    "too many prepared statements in this session",
                );
                return refuse(t, error, out);
            }
            if !ensure_prepared(&def, server, t, out, Some(name)) {
                let name = name.into();
                t.push(Expect::Count(1), Action::FakeParsed { name });
            }
        }
        frontend::BIND => {
            let Some((portal, rest)) = read_cstr(body) else {
                return;
            };
            let Some((name, rest)) = read_cstr(rest) else {
                return;
            };
            let Some(def) = statements.get(name).cloned() else {
                return refuse(t, no_such_statement(name), out);
            };
            if def.changes_settings {
                // Its text was scanned at Parse, maybe in another transaction: running it
                // changes a setting the proxy does not follow, as the text would.
                server.may_hold_settings = true;
            }
            ensure_prepared(&def, server, t, out, None);
            let head = &body[..portal.len() + 1];
            rewrite_name(tag, head, &server_name(def.id), rest, out);
            t.push(Expect::Count(1), Action::Bound { def });
        }
        frontend::DESCRIBE => {
            let Some((name, rest)) = read_cstr(&body[1..]) else {
                return;
            };
            let Some(def) = statements.get(name).cloned() else {
                return refuse(t, no_such_statement(name), out);
            };
            ensure_prepared(&def, server, t, out, None);
            rewrite_name(tag, b"S", &server_name(def.id), rest, out);
            t.push(Expect::Count(2), Action::Pass);
        }
        frontend::CLOSE => {
            // The server keeps the statement for other clients; closing a name that does
            // not exist is not an error in PostgreSQL either.
            if let Some((name, _)) = read_cstr(&body[1..]) {
                statements.remove(name);
            }
            t.push(Expect::Count(1), Action::Fake(b'3'));
        }
        _ => {}
    }
}

/// Messages that may be forwarded before they are complete (they can be large and the
/// proxy never needs their contents).
#[inline]
fn streamable(tag: u8) -> bool {
    matches!(tag, frontend::COPY_DATA | frontend::BIND)
}

/// Whether an incomplete message at the front of `buf` can already go to a server. A Bind
/// of a named statement is rewritten and so must be whole first: starting a transaction
/// for it would end at once with nothing sent, and spin.
pub(super) fn starts_streaming(buf: &[u8], h: Header) -> bool {
    let body = &buf[5.min(buf.len())..];
    h.tag == frontend::COPY_DATA
        || (h.tag == frontend::BIND && statement_name(h.tag, body) == Some(Some(&b""[..])))
}
