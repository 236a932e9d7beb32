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
use crate::pool::{PoolStats, ServerConn};
use crate::protocol::codes;
use crate::protocol::encode::{self, Severity};
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
    forward_client(client, server, t, ctx).await?;
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
                    forward_server(client, server, t, session, ctx).await?;
                    if t.pending < before && t.pending > 0 {
                        // The next command in the pipeline gets its own time budget.
                        armed = false;
                    }
                }
            },
            r = client.stream.read_buf(&mut client.buf) => match r {
                Ok(0) | Err(_) => return Err(Stop::ClientGone),
                Ok(_) => forward_client(client, server, t, ctx).await?,
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

/// Forwards every complete (or streamable) client message in the buffer to the server.
async fn forward_client(
    client: &mut ClientConn,
    server: &mut ServerConn,
    t: &mut Tracker,
    ctx: &ProxyContext,
) -> Result<(), Stop> {
    let buf = &client.buf;
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
        if !complete && !streamable(h.tag) {
            break;
        }
        match h.tag {
            frontend::TERMINATE => {
                t.terminated = true;
                break;
            }
            frontend::QUERY | frontend::FUNCTION_CALL => {
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
    if pos > 0 {
        if server.stream.write_all(&client.buf[..pos]).await.is_err() {
            return Err(Stop::ServerGone { fatal_sent: false });
        }
        t.bytes_in += pos as u64;
        client.buf.advance(pos);
    }
    if t.terminated {
        // Nothing after Terminate matters.
        client.buf.clear();
    }
    Ok(())
}

/// Forwards server bytes to the client, tracking ReadyForQuery, errors and COPY state.
async fn forward_server(
    client: &mut ClientConn,
    server: &mut ServerConn,
    t: &mut Tracker,
    session: &Session,
    ctx: &ProxyContext,
) -> Result<(), Stop> {
    let _ = ctx;
    let mut pos = 0;
    let mut rewrite: Option<(usize, usize)> = None;
    {
        let buf = &server.buf;
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
            match h.tag {
                backend::READY_FOR_QUERY | backend::ERROR_RESPONSE | backend::COPY_IN_RESPONSE
                    if !complete =>
                {
                    break
                }
                backend::READY_FOR_QUERY => {
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
                        rewrite = Some((pos, h.frame_len));
                        pos += h.frame_len;
                        break;
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
    }
    if let Some((at, len)) = rewrite {
        let mut out = BytesMut::with_capacity(at + 256);
        out.extend_from_slice(&server.buf[..at]);
        let ms = session
            .pool
            .limits
            .command_timeout
            .map_or(0, |d| d.as_millis());
        encode::error_response(
            &mut out,
            Severity::Error,
            codes::QUERY_CANCELED,
            &format!("canceling statement due to command timeout ({ms} ms)"),
            Some(&format!(
                "launch-proxy cancelled the command after command_timeout_ms ({ms}) of role \"{}\"",
                session.pool.role.as_str()
            )),
            None,
        );
        server.buf.advance(at + len);
        t.bytes_out += out.len() as u64;
        if client.write(&out).await.is_err() {
            return Err(Stop::ClientGone);
        }
        // The rest of the buffer (ReadyForQuery, usually) goes out on the next pass.
        return Box::pin(forward_server(client, server, t, session, ctx)).await;
    }
    if pos > 0 {
        if client.stream.write_all(&server.buf[..pos]).await.is_err() {
            return Err(Stop::ClientGone);
        }
        t.bytes_out += pos as u64;
        server.buf.advance(pos);
    }
    Ok(())
}
