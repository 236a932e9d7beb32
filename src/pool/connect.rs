//! Opening a server connection: TCP connect, StartupMessage, SCRAM (or md5/cleartext if the
//! server asks for it), then the ParameterStatus/BackendKeyData burst up to ReadyForQuery.

use super::server_conn::BackendKey;
use crate::auth::md5::{md5_client_response, md5_stored_hash};
use crate::auth::scram::{ScramClient, ScramCredentials, ScramKeys, SCRAM_SHA_256};
use crate::net::Stream;
use crate::protocol::encode;
use crate::protocol::fields::{self, read_cstr};
use crate::protocol::framing::{backend, parse_header};
use bytes::{Buf, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where and as whom to log in; one per pool.
#[derive(Clone)]
pub struct ConnectTarget {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    /// Extra startup parameters (timeouts per role, application_name).
    pub params: Vec<(String, String)>,
    pub tls: Option<crate::net::tls::ServerTls>,
    pub keepalive: crate::config::KeepaliveConfig,
    pub tcp_user_timeout: Duration,
}

/// Arms keepalive probes and the user timeout on a server connection's socket (see
/// `config::ServerConfig::keepalive`): without them a hung server host or a partition
/// leaves a relay waiting for a reply that never comes.
fn arm_dead_peer_checks(tcp: &TcpStream, target: &ConnectTarget) -> std::io::Result<()> {
    let sock = socket2::SockRef::from(tcp);
    let k = &target.keepalive;
    if k.idle_s > 0 {
        let probes = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(k.idle_s))
            .with_interval(Duration::from_secs(k.interval_s.max(1)))
            .with_retries(k.count.max(1));
        sock.set_tcp_keepalive(&probes)?;
    }
    if !target.tcp_user_timeout.is_zero() {
        sock.set_tcp_user_timeout(Some(target.tcp_user_timeout))?;
    }
    Ok(())
}

/// The proxy's credentials for one login attempt.
pub enum Credentials {
    Password(String),
    ScramKeys(ScramKeys),
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("could not connect to server: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {0} ms connecting to the server")]
    Timeout(u64),
    #[error("server refused the login: {0}")]
    Refused(String),
    #[error("server sent an unexpected message during login: {0}")]
    Protocol(&'static str),
    #[error("SCRAM with the server failed: {0}")]
    Scram(#[from] crate::auth::scram::ScramError),
    #[error("TLS with the server failed: {0}")]
    Tls(String),
    #[error("no credentials for the server yet: a client of this user must log in first (SCRAM passthrough)")]
    NoCredentials,
    /// The login is one row-level security does not bind (`tenant::rls_login`), on a pool
    /// tenants run on.
    #[error("the PostgreSQL login {0}: row-level security would not isolate the tenants, so launch-proxy does not use it")]
    BypassesRls(String),
}

/// What a successful login yields.
pub struct Login {
    pub stream: Stream,
    pub key: BackendKey,
    pub params: Vec<(String, String)>,
}

/// Largest message accepted from the server during login; all of them are small.
const MAX_LOGIN_MESSAGE: usize = 64 * 1024;

pub async fn connect(
    target: &ConnectTarget,
    credentials: Credentials,
    timeout: Duration,
) -> Result<Login, ConnectError> {
    match tokio::time::timeout(timeout, connect_inner(target, credentials)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout(timeout.as_millis() as u64)),
    }
}

async fn connect_inner(target: &ConnectTarget, creds: Credentials) -> Result<Login, ConnectError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
    tcp.set_nodelay(true)?;
    arm_dead_peer_checks(&tcp, target)?;
    let mut stream = match &target.tls {
        None => Stream::Tcp(tcp),
        Some(tls) => start_tls(tcp, tls).await?,
    };
    let mut out = BytesMut::with_capacity(256);
    let params = [
        ("user", target.user.as_str()),
        ("database", target.database.as_str()),
    ];
    encode::startup_message(
        &mut out,
        params
            .into_iter()
            .chain(target.params.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    );
    stream.write_all(&out).await?;
    out.clear();

    let mut inbuf = BytesMut::with_capacity(4096);
    let mut scram: Option<ScramClient> = None;
    let mut key = None;
    let mut server_params = Vec::new();
    let mut creds = Some(creds);
    loop {
        let (tag, body) = read_message(&mut stream, &mut inbuf).await?;
        match tag {
            backend::AUTHENTICATION => {
                if body.len() < 4 {
                    return Err(ConnectError::Protocol("short authentication message"));
                }
                let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                let data = &body[4..];
                match code {
                    0 => {}
                    3 => {
                        let Some(Credentials::Password(p)) = creds.take() else {
                            return Err(ConnectError::Protocol(
                                "server asked for a cleartext password but we only hold SCRAM keys",
                            ));
                        };
                        encode::password_message(&mut out, p.as_bytes());
                    }
                    5 => {
                        let Some(Credentials::Password(p)) = creds.take() else {
                            return Err(ConnectError::Protocol(
                                "server asked for md5 but we only hold SCRAM keys",
                            ));
                        };
                        let salt: [u8; 4] = data
                            .get(..4)
                            .and_then(|s| s.try_into().ok())
                            .ok_or(ConnectError::Protocol("short md5 salt"))?;
                        let stored = md5_stored_hash(&target.user, &p);
                        let resp = md5_client_response(&stored, salt);
                        encode::password_message(&mut out, resp.as_bytes());
                    }
                    10 => {
                        let offers_scram = data
                            .split(|&b| b == 0)
                            .any(|m| m == SCRAM_SHA_256.as_bytes());
                        if !offers_scram {
                            return Err(ConnectError::Protocol("server offers no SCRAM-SHA-256"));
                        }
                        let c = match creds.take() {
                            Some(Credentials::Password(p)) => ScramCredentials::Password(p),
                            Some(Credentials::ScramKeys(k)) => ScramCredentials::Keys(k),
                            None => return Err(ConnectError::Protocol("second SASL request")),
                        };
                        let client = ScramClient::new(c);
                        encode::sasl_initial_response(
                            &mut out,
                            SCRAM_SHA_256,
                            &client.client_first(),
                        );
                        scram = Some(client);
                    }
                    11 => {
                        let client = scram
                            .as_mut()
                            .ok_or(ConnectError::Protocol("SASL continue before SASL start"))?;
                        let reply = client.handle_server_first(data)?;
                        encode::sasl_response(&mut out, &reply);
                    }
                    12 => {
                        let client = scram
                            .as_mut()
                            .ok_or(ConnectError::Protocol("SASL final before SASL start"))?;
                        client.handle_server_final(data)?;
                    }
                    _ => return Err(ConnectError::Protocol("unsupported authentication request")),
                }
                if !out.is_empty() {
                    stream.write_all(&out).await?;
                    out.clear();
                }
            }
            backend::PARAMETER_STATUS => {
                let (k, rest) =
                    read_cstr(&body).ok_or(ConnectError::Protocol("bad ParameterStatus"))?;
                let (v, _) =
                    read_cstr(rest).ok_or(ConnectError::Protocol("bad ParameterStatus"))?;
                server_params.push((
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                ));
            }
            backend::BACKEND_KEY_DATA => {
                if body.len() < 8 {
                    return Err(ConnectError::Protocol("short BackendKeyData"));
                }
                key = Some(BackendKey {
                    pid: u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
                    secret: u32::from_be_bytes([body[4], body[5], body[6], body[7]]),
                });
            }
            backend::ERROR_RESPONSE => return Err(ConnectError::Refused(fields::summary(&body))),
            backend::NOTICE_RESPONSE | backend::NEGOTIATE_PROTOCOL_VERSION => {}
            backend::READY_FOR_QUERY => {
                let key = key.ok_or(ConnectError::Protocol("no BackendKeyData"))?;
                if !inbuf.is_empty() {
                    return Err(ConnectError::Protocol("data after ReadyForQuery"));
                }
                return Ok(Login {
                    stream,
                    key,
                    params: server_params,
                });
            }
            _ => return Err(ConnectError::Protocol("unexpected message")),
        }
    }
}

/// Reads one whole message (login phase only; allocation here is fine).
/// SSLRequest, then the TLS handshake if the server agrees; a server that says no is an
/// error, since TLS was asked for.
async fn start_tls(
    mut tcp: TcpStream,
    tls: &crate::net::tls::ServerTls,
) -> Result<Stream, ConnectError> {
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    if answer[0] != b'S' {
        return Err(ConnectError::Protocol("the server does not accept TLS"));
    }
    let session = tls
        .connector
        .connect(tls.name.clone(), tcp)
        .await
        .map_err(|e| ConnectError::Tls(e.to_string()))?;
    Ok(Stream::ServerTls(Box::new(session)))
}

async fn read_message(
    stream: &mut Stream,
    buf: &mut BytesMut,
) -> Result<(u8, BytesMut), ConnectError> {
    loop {
        match parse_header(buf) {
            Ok(Some(h)) if h.frame_len > MAX_LOGIN_MESSAGE => {
                return Err(ConnectError::Protocol("oversized message during login"))
            }
            Ok(Some(h)) if buf.len() >= h.frame_len => {
                let mut msg = buf.split_to(h.frame_len);
                msg.advance(5);
                return Ok((h.tag, msg));
            }
            Ok(_) => {}
            Err(_) => return Err(ConnectError::Protocol("invalid message length")),
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(ConnectError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "server closed the connection during login",
            )));
        }
    }
}

/// Sends a CancelRequest for `key` and waits until the server closes that connection,
/// which PostgreSQL does after it has signalled the backend.
pub async fn send_cancel(host: &str, port: u16, key: BackendKey) -> std::io::Result<()> {
    let mut stream = TcpStream::connect((host, port)).await?;
    let mut buf = BytesMut::with_capacity(16);
    encode::cancel_request(&mut buf, key.pid, key.secret);
    stream.write_all(&buf).await?;
    let mut sink = [0u8; 64];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}
