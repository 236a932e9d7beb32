//! The transaction relay: the hot path.
//!
//! While the client idles it holds no server and no read buffer. Its first complete
//! message checks out a server; from then on client bytes go to the server and server bytes
//! to the client as whole slices of the read buffers, while only message headers are
//! scanned. The server goes back to the pool when every sync point sent has been answered,
//! the last ReadyForQuery says idle, and no message is half-sent in either direction.

use super::{ClientConn, ProxyContext, Session};
use crate::config::PoolMode;
use crate::error::{ClientError, ErrorKind};
use crate::pool::{AppliedTenant, PoolStats, ServerConn};
use crate::protocol::codes;
use crate::protocol::encode;
use crate::protocol::fields;
use crate::protocol::framing::{backend, frontend, parse_header, Header};
use bytes::{Buf, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Server reads reserve this much room; large result sets stream through it.
const SERVER_READ_CHUNK: usize = 16 * 1024;

/// How the relay ended.
pub(super) struct RelayEnd {
    pub stats: ClientStats,
    /// An error for the client, sent before its connection closes.
    pub error: Option<ClientError>,
}

#[derive(Default, Clone, Copy)]
pub(super) struct ClientStats {
    pub transactions: u64,
}

/// Protocol bookkeeping for one checked-out server connection.
#[derive(Default)]
struct Tracker {
    /// Sync points (Query, Sync, FunctionCall) sent and not yet answered by ReadyForQuery.
    pending: u32,
    /// Bit i set when the i-th pending sync point is a Query/FunctionCall (not a Sync).
    /// Needed for COPY in the extended protocol, where the server ignores Syncs.
    simple_bits: u128,
    /// Extended-protocol messages were sent after the last sync point.
    unsynced: bool,
    /// Transaction status from the last ReadyForQuery.
    status: u8,
    /// The server is in COPY IN and waits for client data.
    copy_in: bool,
    /// Bytes of a client message already partly forwarded.
    client_remaining: usize,
    /// Bytes of a server message already partly forwarded.
    server_remaining: usize,
    /// The client sent Terminate.
    terminated: bool,
    /// The server sent a FATAL error: it is about to close.
    server_fatal: bool,
    /// A cancel for command_timeout was sent; the 57014 it causes gets our wording.
    timeout_cancel: bool,
    /// Replies to the tenant prelude are being dropped until its ReadyForQuery.
    swallowing: bool,
    /// After a refused Parse, extended-protocol messages are dropped until Sync, as
    /// PostgreSQL itself does after an error.
    discarding: bool,
    /// The refusal to report once the discarded run reaches its Sync.
    refused: Option<ClientError>,
    /// A refusal to put before the ReadyForQuery that is this many ReadyForQuery away.
    inject: Option<(u32, ClientError)>,
    queries: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl Tracker {
    fn new() -> Self {
        Tracker {
            status: b'I',
            ..Default::default()
        }
    }

    fn push_sync(&mut self, simple: bool) {
        if self.pending < 128 && simple {
            self.simple_bits |= 1u128 << self.pending;
        }
        self.pending += 1;
        self.unsynced = false;
    }

    fn pop_sync(&mut self) {
        if self.pending > 0 {
            self.pending -= 1;
            self.simple_bits >>= 1;
        }
    }

    /// The server may be handed to another client.
    fn is_clean(&self) -> bool {
        self.pending == 0
            && self.status == b'I'
            && !self.unsynced
            && !self.copy_in
            && self.client_remaining == 0
            && self.server_remaining == 0
    }
}

/// What stopped a transaction early.
enum Stop {
    /// The client closed or broke its connection.
    ClientGone,
    /// The client broke the protocol; tell it and close.
    Client(ClientError),
    /// The server went away (its FATAL already forwarded if `fatal_sent`).
    ServerGone { fatal_sent: bool },
    /// The server refused the tenant prelude.
    Prelude(String),
}

pub(super) async fn run(
    client: &mut ClientConn,
    session: &Session,
    ctx: &ProxyContext,
) -> RelayEnd {
    let mut stats = ClientStats::default();
    let session_mode = ctx.settings.config.pool.mode == PoolMode::Session;
    let mut held: Option<ServerConn> = None;
    let error = loop {
        if held.is_none() {
            match wait_for_work(client, ctx).await {
                Ok(true) => {}
                Ok(false) => break None,
                Err(e) => break e,
            }
            let server = match session.pool.acquire().await {
                Ok(s) => s,
                Err(e) => {
                    break Some(e.to_client_error(
                        &session.pool.name,
                        ctx.settings.config.pool.acquire_timeout_ms,
                    ))
                }
            };
            session.cancel.target.attach(server.key);
            held = Some(server);
        }
        let Some(mut server) = held.take() else {
            break None;
        };
        let _active = crate::pool::GaugeGuard::new(&session.pool.stats.clients_active);
        let mut t = Tracker::new();
        let result = transaction(client, &mut server, &mut t, session, ctx, session_mode).await;
        let stats_pool = &session.pool.stats;
        PoolStats::add(&stats_pool.queries, t.queries);
        PoolStats::add(&stats_pool.bytes_from_clients, t.bytes_in);
        PoolStats::add(&stats_pool.bytes_from_server, t.bytes_out);
        match result {
            Ok(()) => {
                stats.transactions += 1;
                PoolStats::add(&stats_pool.transactions, 1);
                let settled = session.cancel.target.detach().await;
                if settled && t.is_clean() {
                    session.pool.release(server);
                } else {
                    drop(server);
                }
                if t.terminated {
                    break None;
                }
            }
            Err(stop) => {
                let error = abandon(server, &t, session, ctx).await;
                break match stop {
                    Stop::ClientGone => error,
                    Stop::Client(e) => Some(e),
                    Stop::ServerGone { fatal_sent: true } => None,
                    Stop::ServerGone { fatal_sent: false } => Some(server_lost()),
                    Stop::Prelude(e) => {
                        tracing::error!(pool = %session.pool.name, error = %e, "the server refused the tenant settings");
                        Some(ClientError::fatal(
                            ErrorKind::Server,
                            codes::INTERNAL_ERROR,
                            "launch-proxy could not apply the tenant to the server connection",
                        ))
                    }
                };
            }
        }
    };
    if let Some(server) = held.take() {
        // Session mode: the client left while holding its server.
        let t = Tracker::new();
        let _ = abandon(server, &t, session, ctx).await;
    }
    RelayEnd { stats, error }
}

fn server_lost() -> ClientError {
    ClientError::fatal(
        ErrorKind::Server,
        codes::CONNECTION_FAILURE,
        "server closed the connection unexpectedly",
    )
    .with_detail("the PostgreSQL server terminated or the connection to it broke; the transaction was rolled back")
}

/// Gets rid of a server connection whose client is gone or whose state is unknown: a
/// running query is cancelled first so that its locks go with it, then the connection is
/// closed (PostgreSQL rolls back an open transaction on disconnect).
async fn abandon(
    server: ServerConn,
    t: &Tracker,
    session: &Session,
    ctx: &ProxyContext,
) -> Option<ClientError> {
    if t.pending > 0 {
        ctx.cancels.cancel_running(&session.cancel.target).await;
    }
    session.cancel.target.detach().await;
    tracing::debug!(pool = %session.pool.name, conn = server.id, "closing server connection left in an unknown state");
    drop(server);
    None
}

/// Waits, holding no server, until the client has a complete message to run. Returns
/// `Ok(false)` when the client ended the session.
async fn wait_for_work(
    client: &mut ClientConn,
    ctx: &ProxyContext,
) -> Result<bool, Option<ClientError>> {
    loop {
        if !client.buf.is_empty() {
            match parse_header(&client.buf) {
                Err(_) => return Err(Some(ClientError::protocol("invalid message length"))),
                Ok(Some(h)) if h.tag == frontend::TERMINATE => return Ok(false),
                Ok(Some(h)) if h.frame_len > ctx.settings.config.max_client_message_bytes => {
                    return Err(Some(oversized(h, ctx)))
                }
                Ok(Some(h)) if client.buf.len() >= h.frame_len || streamable(h.tag) => {
                    return Ok(true)
                }
                _ => {}
            }
        } else {
            if client.buf.capacity() > 0 {
                // An idle client keeps no buffer: thousands of idle clients cost sockets only.
                client.buf = BytesMut::new();
            }
            if ctx.shutdown.is_triggered() {
                return Err(Some(ClientError::shutting_down()));
            }
            tokio::select! {
                r = client.stream.wait_readable() => if r.is_err() { return Ok(false) },
                _ = ctx.shutdown.triggered() => return Err(Some(ClientError::shutting_down())),
            }
        }
        match client.read_more().await {
            Ok(0) | Err(_) => return Ok(false),
            Ok(_) => {}
        }
    }
}

fn oversized(h: Header, ctx: &ProxyContext) -> ClientError {
    ClientError::fatal(
        ErrorKind::Protocol,
        codes::PROGRAM_LIMIT_EXCEEDED,
        format!(
            "message of {} bytes exceeds max_client_message_bytes ({})",
            h.frame_len, ctx.settings.config.max_client_message_bytes
        ),
    )
}

/// Messages that may be forwarded before they are complete (they can be large and the
/// proxy never needs their contents).
#[inline]
fn streamable(tag: u8) -> bool {
    matches!(tag, frontend::COPY_DATA | frontend::BIND)
}

/// Relays one transaction (or, in session mode, the whole session) on `server`.
async fn transaction(
    client: &mut ClientConn,
    server: &mut ServerConn,
    t: &mut Tracker,
    session: &Session,
    ctx: &ProxyContext,
    session_mode: bool,
) -> Result<(), Stop> {
    let command_timeout = session.pool.limits.command_timeout;
    let timer = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(timer);
    let mut armed = false;
    if let (Some(tenant), true) = (&session.tenant, ctx.settings.config.tenant.check_status) {
        use super::tenant_status::{refused, Status};
        let status = match ctx.tenant_status.fresh(tenant) {
            Some(s) => s,
            None => ctx
                .tenant_status
                .refresh(tenant, server)
                .await
                .map_err(Stop::Client)?,
        };
        if let Status::Refused(s) = status {
            return Err(Stop::Client(refused(tenant, &s)));
        }
    }
    let prelude = if server.tenant != AppliedTenant::Applied(session.tenant) {
        t.swallowing = true;
        t.push_sync(true);
        Some(&session.prelude[..])
    } else {
        None
    };
    forward_client(client, server, t, ctx, prelude).await?;
    loop {
        if t.terminated || (!session_mode && t.is_clean()) {
            return Ok(());
        }
        let want_timer =
            command_timeout.is_some() && t.pending > 0 && !t.copy_in && !t.timeout_cancel;
        if want_timer && !armed {
            if let Some(d) = command_timeout {
                timer.as_mut().reset(tokio::time::Instant::now() + d);
            }
        }
        armed = want_timer;
        if server.buf.capacity() - server.buf.len() < 4096 {
            server.buf.reserve(SERVER_READ_CHUNK);
        }
        if client.buf.capacity() - client.buf.len() < 1024 {
            client.buf.reserve(super::client_io::READ_CHUNK);
        }
        tokio::select! {
            r = server.stream.read_buf(&mut server.buf) => match r {
                Ok(0) | Err(_) => return Err(Stop::ServerGone { fatal_sent: t.server_fatal }),
                Ok(_) => {
                    let before = t.pending;
                    forward_server(client, server, t, session).await?;
                    if t.pending < before && t.pending > 0 {
                        // The next command in the pipeline gets its own time budget.
                        armed = false;
                    }
                }
            },
            r = client.stream.read_buf(&mut client.buf) => match r {
                Ok(0) | Err(_) => return Err(Stop::ClientGone),
                Ok(_) => forward_client(client, server, t, ctx, None).await?,
            },
            _ = &mut timer, if armed => {
                t.timeout_cancel = true;
                armed = false;
                tracing::info!(pool = %session.pool.name, pid = session.cancel.target.pid, "command_timeout reached: cancelling the running query");
                let cancels = ctx.cancels.clone();
                let target = session.cancel.target.clone();
                tokio::spawn(async move { cancels.cancel_running(&target).await; });
            }
        }
    }
}

/// Something the client sent that is not forwarded as it is.
enum Detour {
    /// A Query the statement guard refused: a stand-in that raises 42501 on the server goes
    /// instead, so that transaction state and ReadyForQuery stay PostgreSQL's own.
    RefuseQuery { len: usize, error: ClientError },
    /// A Parse the guard refused: dropped, and the rest of its run up to Sync with it.
    RefuseParse { len: usize, error: ClientError },
    /// A message dropped while discarding after a refused Parse.
    Skip { len: usize },
}

/// Forwards every complete (or streamable) client message in the buffer to the server,
/// after `prefix` (the tenant prelude) if given, in one write.
async fn forward_client(
    client: &mut ClientConn,
    server: &mut ServerConn,
    t: &mut Tracker,
    ctx: &ProxyContext,
    mut prefix: Option<&[u8]>,
) -> Result<(), Stop> {
    loop {
        let (pos, detour) = scan_client(&client.buf, t, ctx)?;
        if pos > 0 || prefix.is_some() {
            let head = prefix.take().unwrap_or(&[]);
            if write_both(&mut server.stream, head, &client.buf[..pos])
                .await
                .is_err()
            {
                return Err(Stop::ServerGone { fatal_sent: false });
            }
            t.bytes_in += pos as u64;
            client.buf.advance(pos);
        }
        match detour {
            None => break,
            Some(Detour::RefuseQuery { len, error }) => {
                let mut stand_in = BytesMut::with_capacity(256);
                encode::query(&mut stand_in, &raise_sql(&error));
                if server.stream.write_all(&stand_in).await.is_err() {
                    return Err(Stop::ServerGone { fatal_sent: false });
                }
                client.buf.advance(len);
                t.queries += 1;
                t.push_sync(true);
            }
            Some(Detour::RefuseParse { len, error }) => {
                client.buf.advance(len);
                t.discarding = true;
                t.refused = Some(error);
            }
            Some(Detour::Skip { len }) => client.buf.advance(len),
        }
    }
    if t.terminated {
        // Nothing after Terminate matters.
        client.buf.clear();
    }
    Ok(())
}

/// Writes two slices as one `writev` where possible: the tenant prelude and the client's
/// messages leave in one segment.
async fn write_both(stream: &mut crate::net::Stream, a: &[u8], b: &[u8]) -> std::io::Result<()> {
    if a.is_empty() {
        return stream.write_all(b).await;
    }
    let (mut a, mut b) = (a, b);
    while !a.is_empty() {
        let n = stream
            .write_vectored(&[std::io::IoSlice::new(a), std::io::IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        if n < a.len() {
            a = &a[n..];
        } else {
            b = &b[n - a.len()..];
            a = &[];
        }
    }
    stream.write_all(b).await
}

/// SQL that makes the server itself raise the guard's refusal.
fn raise_sql(error: &ClientError) -> String {
    let message = error.message.replace('\'', "''");
    format!(
        "DO $launch_proxy$BEGIN RAISE EXCEPTION USING ERRCODE = '{}', MESSAGE = '{message}'; END$launch_proxy$",
        error.code
    )
}

fn guard_error(v: &crate::tenant::guard::GuardViolation) -> ClientError {
    metrics::counter!(crate::metrics::names::GUARD_VIOLATIONS, "what" => v.what).increment(1);
    ClientError::error(ErrorKind::Auth, codes::INSUFFICIENT_PRIVILEGE, v.message())
}

/// The SQL text of a Query body or of a Parse body (after the statement name).
fn sql_of(tag: u8, body: &[u8]) -> &[u8] {
    let body = if tag == frontend::PARSE {
        match fields::read_cstr(body) {
            Some((_, rest)) => rest,
            None => return body,
        }
    } else {
        body
    };
    fields::read_cstr(body).map_or(body, |(sql, _)| sql)
}

/// Scans client messages from the front: returns how many bytes can go to the server as
/// they are, and what to do with the message right after them, if anything.
fn scan_client(
    buf: &[u8],
    t: &mut Tracker,
    ctx: &ProxyContext,
) -> Result<(usize, Option<Detour>), Stop> {
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
        let complete = buf.len() - pos >= h.frame_len;
        if t.discarding {
            if !complete {
                break;
            }
            if h.tag != frontend::SYNC {
                return Ok((pos, Some(Detour::Skip { len: h.frame_len })));
            }
            // The Sync ends the refused run: its ReadyForQuery gets the refusal before it.
            t.discarding = false;
            if let Some(e) = t.refused.take() {
                t.inject = Some((t.pending, e));
            }
        } else if !complete && !streamable(h.tag) {
            break;
        }
        match h.tag {
            frontend::TERMINATE => {
                t.terminated = true;
                break;
            }
            frontend::QUERY | frontend::PARSE => {
                let sql = sql_of(h.tag, &buf[pos + 5..pos + h.frame_len]);
                if crate::tenant::guard::needs_check(sql) {
                    if let Err(v) =
                        crate::tenant::guard::check(sql, crate::tenant::PROTECTED_SETTINGS)
                    {
                        let error = guard_error(&v);
                        let len = h.frame_len;
                        let detour = if h.tag == frontend::QUERY {
                            Detour::RefuseQuery { len, error }
                        } else {
                            Detour::RefuseParse { len, error }
                        };
                        return Ok((pos, Some(detour)));
                    }
                }
                if h.tag == frontend::QUERY {
                    t.queries += 1;
                    t.push_sync(true);
                } else {
                    t.unsynced = true;
                }
            }
            frontend::FUNCTION_CALL => {
                t.queries += 1;
                t.push_sync(true);
            }
            frontend::SYNC => {
                // During COPY IN the server ignores Sync: it produces no ReadyForQuery.
                if t.copy_in {
                    t.unsynced = false;
                } else {
                    t.push_sync(false);
                }
            }
            frontend::COPY_DONE | frontend::COPY_FAIL => t.copy_in = false,
            frontend::EXECUTE => {
                t.queries += 1;
                t.unsynced = true;
            }
            frontend::COPY_DATA => {}
            _ => t.unsynced = true,
        }
        if complete {
            pos += h.frame_len;
        } else {
            t.client_remaining = h.frame_len - (buf.len() - pos);
            pos = buf.len();
        }
    }
    Ok((pos, None))
}

/// Server bytes that are not forwarded as they are.
enum ServerDetour {
    /// Part of the reply to the tenant prelude: dropped.
    Swallow { len: usize },
    /// The 57014 caused by our command_timeout cancel: replaced by one naming the timeout.
    Reword { len: usize },
    /// A guard refusal goes to the client before the ReadyForQuery at this point.
    Inject { error: ClientError },
}

/// Forwards server bytes to the client, tracking ReadyForQuery, errors and COPY state.
async fn forward_server(
    client: &mut ClientConn,
    server: &mut ServerConn,
    t: &mut Tracker,
    session: &Session,
) -> Result<(), Stop> {
    loop {
        let (pos, detour) = scan_server(&server.buf, t)?;
        if pos > 0 {
            if client.stream.write_all(&server.buf[..pos]).await.is_err() {
                return Err(Stop::ClientGone);
            }
            t.bytes_out += pos as u64;
            server.buf.advance(pos);
        }
        let extra = match detour {
            None => return Ok(()),
            Some(ServerDetour::Swallow { len }) => {
                server.buf.advance(len);
                if !t.swallowing {
                    server.tenant = AppliedTenant::Applied(session.tenant);
                }
                continue;
            }
            Some(ServerDetour::Reword { len }) => {
                server.buf.advance(len);
                command_timeout_error(session)
            }
            Some(ServerDetour::Inject { error }) => error,
        };
        let mut out = BytesMut::with_capacity(256);
        extra.encode(&mut out);
        t.bytes_out += out.len() as u64;
        if client.write(&out).await.is_err() {
            return Err(Stop::ClientGone);
        }
    }
}

fn command_timeout_error(session: &Session) -> ClientError {
    let ms = session
        .pool
        .limits
        .command_timeout
        .map_or(0, |d| d.as_millis());
    ClientError::error(
        ErrorKind::Timeout,
        codes::QUERY_CANCELED,
        format!("canceling statement due to command timeout ({ms} ms)"),
    )
    .with_detail(format!(
        "launch-proxy cancelled the command after command_timeout_ms ({ms}) of role \"{}\"",
        session.pool.role.as_str()
    ))
}

/// Scans server messages from the front: how many bytes go to the client as they are, and
/// what happens right after them.
fn scan_server(buf: &[u8], t: &mut Tracker) -> Result<(usize, Option<ServerDetour>), Stop> {
    let mut pos = 0;
    while pos < buf.len() {
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
        if t.swallowing {
            if !complete {
                break;
            }
            if pos > 0 {
                return Ok((pos, None));
            }
            match h.tag {
                backend::READY_FOR_QUERY => {
                    t.swallowing = false;
                    t.pop_sync();
                    // The prelude's ReadyForQuery counts among those a refusal waits for.
                    if let Some((due, _)) = &mut t.inject {
                        *due = due.saturating_sub(1);
                    }
                }
                backend::ERROR_RESPONSE => {
                    return Err(Stop::Prelude(fields::summary(&buf[5..h.frame_len])))
                }
                _ => {}
            }
            return Ok((0, Some(ServerDetour::Swallow { len: h.frame_len })));
        }
        match h.tag {
            backend::READY_FOR_QUERY | backend::ERROR_RESPONSE | backend::COPY_IN_RESPONSE
                if !complete =>
            {
                break
            }
            backend::READY_FOR_QUERY => {
                if let Some((due, _)) = &mut t.inject {
                    if *due == 0 {
                        let (_, error) = t.inject.take().expect("checked above");
                        return Ok((pos, Some(ServerDetour::Inject { error })));
                    }
                    *due -= 1;
                }
                t.status = buf.get(pos + 5).copied().unwrap_or(b'I');
                t.pop_sync();
                t.copy_in = false;
                t.timeout_cancel = false;
            }
            backend::ERROR_RESPONSE => {
                let body = &buf[pos + 5..pos + h.frame_len];
                let code = fields::sqlstate(body).unwrap_or(*b"XX000");
                crate::metrics::count_error(&code);
                if fields::error_fields(body)
                    .any(|(f, v)| f == b'V' && (v == b"FATAL" || v == b"PANIC"))
                {
                    t.server_fatal = true;
                }
                if t.timeout_cancel && &code == b"57014" {
                    t.timeout_cancel = false;
                    return Ok((pos, Some(ServerDetour::Reword { len: h.frame_len })));
                }
            }
            backend::COPY_IN_RESPONSE => {
                t.copy_in = true;
                // A COPY started by Execute: the Syncs already sent after it are read in
                // COPY mode and ignored, so they will never be answered.
                if t.simple_bits & 1 == 0 {
                    t.pending = 0;
                    t.simple_bits = 0;
                }
            }
            _ => {}
        }
        if complete {
            pos += h.frame_len;
        } else {
            t.server_remaining = h.frame_len - (buf.len() - pos);
            pos = buf.len();
        }
    }
    Ok((pos, None))
}
