//! Client startup: SSL/GSS negotiation, cancel requests, the StartupMessage, then
//! authentication (SCRAM-SHA-256, or md5 when configured), ending with the server's
//! parameters, our own backend key and ReadyForQuery.

use super::{ClientConn, Login, ProxyContext, Session};
use crate::auth::md5;
use crate::auth::scram::{ScramKeys, ScramServer, ScramVerifier, SCRAM_SHA_256};
use crate::config::{ClientAuth, ClientSecret, User};
use crate::error::{ClientError, ErrorKind};
use crate::protocol::codes;
use crate::protocol::encode;
use crate::protocol::framing::frontend;
use crate::protocol::startup::{self, StartupPacket, StartupParams};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// SASL and password messages are small; anything bigger during login is hostile.
const MAX_AUTH_MESSAGE: usize = 8 * 1024;

/// Runs the startup exchange. `Ok(None)` means the connection was a cancel request or the
/// client left before logging in.
pub(super) async fn run(
    client: &mut ClientConn,
    ctx: &Arc<ProxyContext>,
    over_limit: bool,
    peer: SocketAddr,
) -> Result<Option<Login>, ClientError> {
    // PostgreSQL takes one SSLRequest and one GSSENCRequest before the startup packet; more
    // would only make the proxy write answers nobody may read.
    let (mut ssl_asked, mut gss_asked) = (false, false);
    let params = loop {
        let packet = match read_startup_packet(client).await? {
            Some(p) => p,
            None => return Ok(None),
        };
        let packet = startup::parse(&packet).map_err(|e| match e {
            // PostgreSQL's code for a version it does not speak.
            startup::StartupError::UnsupportedProtocol { .. } => ClientError::fatal(
                ErrorKind::Protocol,
                codes::FEATURE_NOT_SUPPORTED,
                e.to_string(),
            ),
            _ => ClientError::protocol(e.to_string()),
        })?;
        let repeated = match packet {
            StartupPacket::Ssl => std::mem::replace(&mut ssl_asked, true),
            StartupPacket::GssEnc => std::mem::replace(&mut gss_asked, true),
            _ => false,
        };
        if repeated {
            // What PostgreSQL answers too: the request code read as a protocol version.
            return Err(ClientError::fatal(
                ErrorKind::Protocol,
                codes::FEATURE_NOT_SUPPORTED,
                "encryption negotiation requested twice",
            ));
        }
        match packet {
            StartupPacket::Ssl if ctx.client_tls.is_some() && !client.stream.is_tls() => {
                // Bytes sent after SSLRequest but before the handshake would be read as if
                // they came over TLS: refuse them (the CVE-2021-23222 class of injection).
                if !client.buf.is_empty() {
                    return Err(ClientError::protocol(
                        "received unencrypted data after SSL request",
                    ));
                }
                client
                    .write(b"S")
                    .await
                    .map_err(|_| ClientError::protocol("client went away"))?;
                let acceptor = ctx
                    .client_tls
                    .as_ref()
                    .map(|t| t.acceptor())
                    .expect("checked");
                if let Err(e) = client.stream.accept_tls(acceptor).await {
                    tracing::info!(error = %e, "TLS handshake with a client failed");
                    return Ok(None);
                }
            }
            // Without TLS configured say no; the client decides whether to continue in
            // plain text (sslmode=prefer) or give up (sslmode=require).
            StartupPacket::Ssl | StartupPacket::GssEnc => {
                client
                    .write(b"N")
                    .await
                    .map_err(|_| ClientError::protocol("client went away"))?;
            }
            StartupPacket::Cancel { pid, secret } => {
                ctx.clients.cancel_requests.fetch_add(1, Relaxed);
                ctx.cancels.cancel(pid, secret).await;
                return Ok(None);
            }
            StartupPacket::Startup(p) => break p,
        }
    };
    // The admin console stays reachable at max_client_conn, where an operator needs it
    // most; its logins are still authenticated and checked against the admin lists.
    let admin = ctx.admin_lists.read().clone();
    // PostgreSQL's default: the database named like the user.
    let database = params.get("database").or(params.get("user")).unwrap_or("");
    let to_console = database == admin.database;
    if over_limit && !to_console {
        ctx.clients.rejected_max_clients.fetch_add(1, Relaxed);
        return Err(super::too_many_clients());
    }
    // Within the drain's login grace a login completes (crate::shutdown).
    if ctx.shutdown.login_grace_over() {
        return Err(ClientError::fatal(
            ErrorKind::Shutdown,
            codes::CANNOT_CONNECT_NOW,
            "the proxy is shutting down",
        ));
    }
    let mut out = BytesMut::with_capacity(512);
    negotiate_version(&params, &mut out);
    if let Some(refused) = super::startup_refusal::refusal(&params.params) {
        return Err(refused);
    }

    let user_name = params.get("user").unwrap_or("").to_owned();
    if user_name.is_empty() {
        return Err(ClientError::fatal(
            ErrorKind::Protocol,
            codes::INVALID_AUTHORIZATION,
            "no PostgreSQL user name specified in startup packet",
        ));
    }
    if params
        .get("replication")
        .is_some_and(|v| !matches!(v, "false" | "off" | "no" | "0"))
    {
        return Err(ClientError::fatal(
            ErrorKind::Protocol,
            codes::FEATURE_NOT_SUPPORTED,
            "replication connections are not supported by launch-proxy",
        ));
    }

    let (user, keys, from_users_file) = match (ctx.users.get(&user_name), &ctx.jwt) {
        (None, Some(jwt)) => (
            token_login(client, ctx, jwt, &user_name, &mut out).await?,
            None,
            false,
        ),
        (user, _) => {
            let keys = authenticate(client, ctx, &user_name, user.as_deref(), &mut out).await?;
            let user = user.ok_or_else(|| ClientError::password_failed(&user_name))?;
            (user, keys, true)
        }
    };
    let user = match user.auth {
        ClientAuth::Cert => with_cert_tenant(client, ctx, user)?,
        _ => user,
    };
    // As in PostgreSQL, the database is checked only after the client proved who it is, so
    // that nothing about the server is told to an unauthenticated client.
    if to_console {
        let access = super::admin::access(&admin, &user, from_users_file)?;
        super::admin::greet(&mut out);
        flush(client, &mut out).await?;
        return Ok(Some(Login::Admin(super::admin::AdminLogin {
            user,
            access,
        })));
    }
    let configured = &ctx.settings.config.server.database;
    if database != configured {
        return Err(ClientError::fatal(
            ErrorKind::Auth,
            codes::INVALID_CATALOG_NAME,
            format!("database \"{database}\" does not exist"),
        )
        .with_hint(format!("launch-proxy serves the database \"{configured}\"")));
    }
    let pool = ctx.pools.get(&user.server_user).cloned().ok_or_else(|| {
        ClientError::fatal(
            ErrorKind::Internal,
            codes::INTERNAL_ERROR,
            "no pool for user",
        )
    })?;
    if let (Some(k), true) = (&keys, user.server_user == user.name) {
        pool.offer_client_keys(k);
    }
    // Counted before the login's remaining work (its server parameters, the tenant's
    // status): a tenant over its cap costs the database nothing.
    let client_info = super::client_info::ClientInfo {
        user: user.clone(),
        peer: Some(peer),
        tls: client.stream.is_tls(),
        application_name: params.get("application_name").map(Box::from),
        connected_at: std::time::SystemTime::now(),
    };
    let tenant_cap = ctx.settings.config.pool.max_tenant_clients;
    let cancel = ctx
        .cancels
        .register_within(Some(pool.clone()), client_info, tenant_cap)
        .map_err(|n| too_many_for_tenant(&user, n))?;
    let server_params = pool
        .server_params()
        .await
        .map_err(|e| e.to_client_error(&pool.name, ctx.settings.config.pool.acquire_timeout_ms))?;
    let server_major = server_params
        .iter()
        .find(|(k, _)| k == "server_version")
        .map_or(0, |(_, v)| crate::tenant::prelude::server_major(v));
    if let (Some(tenant), true) = (&user.tenant, ctx.settings.config.tenant.check_status) {
        check_tenant(ctx, &pool, tenant, server_major).await?;
    }
    encode::authentication_ok(&mut out);
    for (k, v) in server_params.iter() {
        // The client sees what it asked for (its own application_name, DateStyle, ...): the
        // proxy applies those values on every server its transactions run on.
        let asked = params
            .params
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str());
        let encoding;
        let asked = match (k.as_str(), asked) {
            ("client_encoding", Some(e)) if super::session_params::is_utf8(e) => None,
            ("client_encoding", Some(e)) => {
                encoding = e.to_ascii_uppercase().replace('-', "_");
                Some(encoding.as_str())
            }
            (_, a) => a,
        };
        let v = match (k.as_str(), asked) {
            // Only a value the proxy applies: not is_superuser, session_authorization, ...
            (_, Some(a)) if super::session_params::follows(k) || k == "client_encoding" => a,
            ("application_name", None) => "",
            _ => v.as_str(),
        };
        encode::parameter_status(&mut out, k.as_bytes(), v.as_bytes());
    }
    let startup_params = super::session_params::ParamSet::from_startup(
        params.params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &server_params,
    );
    encode::backend_key_data(&mut out, cancel.target.pid, cancel.target.secret);
    encode::ready_for_query(&mut out, b'I');
    client
        .write(&out)
        .await
        .map_err(|_| ClientError::protocol("client went away"))?;
    let tenant = user.tenant;
    let prelude = ctx.preludes.get(
        tenant.as_ref(),
        ctx.settings.signing_key.as_deref(),
        server_major,
    );
    Ok(Some(Login::Session(Session {
        user,
        pool,
        cancel,
        tenant,
        queue_key: crate::pool::tenant_key(tenant.as_ref()),
        prelude,
        server_major,
        startup_params,
    })))
}

/// A login refused at `pool.max_tenant_clients` (PostgreSQL's code and wording for a role's
/// connection limit).
fn too_many_for_tenant(user: &User, sessions: u32) -> ClientError {
    let tenant = user.tenant.map(|t| t.to_string()).unwrap_or_default();
    ClientError::fatal(
        ErrorKind::Limit,
        codes::TOO_MANY_CONNECTIONS,
        format!("too many connections for tenant \"{tenant}\""),
    )
    .with_detail(format!(
        "the tenant has {sessions} sessions, the proxy's pool.max_tenant_clients"
    ))
    .with_hint("close the tenant's idle sessions, or raise pool.max_tenant_clients")
}

/// Reads one untagged startup-phase packet; `None` if the client closed first.
async fn read_startup_packet(client: &mut ClientConn) -> Result<Option<BytesMut>, ClientError> {
    loop {
        let len =
            startup::packet_len(&client.buf).map_err(|e| ClientError::protocol(e.to_string()))?;
        if let Some(len) = len {
            if client.buf.len() >= len {
                return Ok(Some(client.buf.split_to(len)));
            }
        }
        match client.read_more().await {
            Ok(0) | Err(_) if client.buf.is_empty() => return Ok(None),
            Ok(0) | Err(_) => return Err(ClientError::protocol("incomplete startup packet")),
            Ok(_) => {}
        }
    }
}

/// Newer clients may ask for protocol 3.x or `_pq_` options; we speak 3.0 and say so.
fn negotiate_version(params: &StartupParams, out: &mut BytesMut) {
    let options: Vec<&str> = params.protocol_options().collect();
    if params.minor_version > 0 || !options.is_empty() {
        encode::negotiate_protocol_version(out, 0, &options);
    }
}

/// Checks the client's password proof. Unknown users go through the same exchange against
/// a mock verifier and fail the same way, so that user names cannot be probed.
async fn authenticate(
    client: &mut ClientConn,
    ctx: &ProxyContext,
    user_name: &str,
    user: Option<&User>,
    out: &mut BytesMut,
) -> Result<Option<ScramKeys>, ClientError> {
    let method = user.map(|u| u.auth).unwrap_or_default();
    match method {
        ClientAuth::ScramSha256 => {
            let verifier = match user.map(|u| &u.secret) {
                Some(ClientSecret::Scram(v)) => v.clone(),
                Some(ClientSecret::Plain(p)) => plain_verifier(user, p),
                _ => ScramVerifier::mock(user_name, &ctx.mock_secret),
            };
            let keys = scram_exchange(client, verifier, user_name, out).await?;
            if user.is_none() {
                return Err(ClientError::password_failed(user_name));
            }
            Ok(Some(keys))
        }
        ClientAuth::Cert => Ok(None),
        ClientAuth::Md5 => {
            let stored = match user.map(|u| &u.secret) {
                Some(ClientSecret::Plain(p)) => md5::md5_stored_hash(user_name, p),
                Some(ClientSecret::Md5(h)) => h.clone(),
                _ => return Err(ClientError::password_failed(user_name)),
            };
            let salt = crate::entropy::bytes::<4>();
            encode::authentication_md5(out, salt);
            flush(client, out).await?;
            let (tag, body) = client.read_message(MAX_AUTH_MESSAGE).await?;
            if tag != frontend::PASSWORD {
                return Err(ClientError::protocol(format!(
                    "expected password response, got message type {}",
                    tag as char
                )));
            }
            let response = body.strip_suffix(&[0]).unwrap_or(&body);
            if md5::md5_verify(&stored, salt, response) {
                Ok(None)
            } else {
                Err(ClientError::password_failed(user_name))
            }
        }
    }
}

/// A SCRAM verifier for a user configured with a plain password, derived once per user and
/// cached: deriving costs thousands of HMAC rounds, far too much for every login.
/// `user` is the entry the session gets: a second lookup could find another one, reloaded
/// meanwhile (SIGHUP), and check the password against it.
fn plain_verifier(user: Option<&User>, password: &str) -> ScramVerifier {
    user.and_then(|u| u.scram_verifier.clone())
        .unwrap_or_else(|| ScramVerifier::from_password(password, None, 4096))
}

async fn flush(client: &mut ClientConn, out: &mut BytesMut) -> Result<(), ClientError> {
    client
        .write(out)
        .await
        .map_err(|_| ClientError::protocol("client went away during login"))?;
    out.clear();
    Ok(())
}

async fn scram_exchange(
    client: &mut ClientConn,
    verifier: ScramVerifier,
    user_name: &str,
    out: &mut BytesMut,
) -> Result<ScramKeys, ClientError> {
    encode::authentication_sasl(out, &[SCRAM_SHA_256]);
    flush(client, out).await?;
    let (tag, body) = client.read_message(MAX_AUTH_MESSAGE).await?;
    if tag != frontend::PASSWORD {
        return Err(ClientError::protocol(format!(
            "expected SASL response, got message type {}",
            tag as char
        )));
    }
    let (mechanism, data) = startup::parse_sasl_initial_response(&body)
        .ok_or_else(|| ClientError::protocol("malformed SASLInitialResponse message"))?;
    if mechanism != SCRAM_SHA_256.as_bytes() {
        return Err(ClientError::protocol(
            "client selected an invalid SASL authentication mechanism",
        ));
    }
    // A client that left the initial response out is asked for it with an empty
    // challenge; its client-first-message comes as a SASLResponse (as PostgreSQL does).
    let asked;
    let data = match data {
        Some(data) => data,
        None => {
            encode::authentication_sasl_continue(out, b"");
            flush(client, out).await?;
            asked = read_sasl_response(client).await?;
            &asked[..]
        }
    };
    let mut server = ScramServer::new(verifier);
    let first = server
        .handle_client_first(data)
        .map_err(|e| ClientError::protocol(format!("malformed SCRAM message: {e}")))?;
    encode::authentication_sasl_continue(out, &first);
    flush(client, out).await?;
    let body = read_sasl_response(client).await?;
    match server.handle_client_final(&body) {
        Ok((final_msg, keys)) => {
            encode::authentication_sasl_final(out, &final_msg);
            Ok(keys)
        }
        Err(crate::auth::scram::ScramError::InvalidProof) => {
            Err(ClientError::password_failed(user_name))
        }
        Err(e) => Err(ClientError::protocol(format!(
            "malformed SCRAM message: {e}"
        ))),
    }
}

/// The body of the client's next SASLResponse.
async fn read_sasl_response(client: &mut ClientConn) -> Result<BytesMut, ClientError> {
    let (tag, body) = client.read_message(MAX_AUTH_MESSAGE).await?;
    if tag != frontend::PASSWORD {
        return Err(ClientError::protocol("expected SASL response"));
    }
    Ok(body)
}

/// Refuses a tenant that is not active, looking its status up through the pool when the
/// cached one is stale.
async fn check_tenant(
    ctx: &ProxyContext,
    pool: &Arc<crate::pool::Pool>,
    tenant: &crate::tenant::TenantId,
    server_major: u32,
) -> Result<(), ClientError> {
    use super::tenant_status::{refused, LookupError, Status};
    let (status, _) = match ctx.tenant_status.fresh(tenant) {
        Some(s) => s,
        None => {
            // A connection lost under the lookup (its backend terminated, PostgreSQL
            // stopping) says nothing about the tenant: the lookup runs once more on another.
            let mut lost_before = false;
            loop {
                let mut conn = pool.acquire().await.map_err(|e| {
                    e.to_client_error(&pool.name, ctx.settings.config.pool.acquire_timeout_ms)
                })?;
                let mut unanswered = CancelIfDropped {
                    server: &ctx.settings.config.server,
                    key: Some(conn.key),
                };
                let result = ctx
                    .tenant_status
                    .refresh(tenant, &mut conn, server_major)
                    .await;
                unanswered.key = None;
                match result {
                    Ok(s) => {
                        pool.release_unused(conn);
                        break s;
                    }
                    Err(LookupError::Lost(_)) if !lost_before => lost_before = true,
                    Err(e) => return Err(e.to_client_error()),
                }
            }
        }
    };
    match status {
        Status::Active => Ok(()),
        Status::Refused(s) => Err(refused(tenant, &s)),
    }
}

/// Cancels the login's status lookup on the server if the login is dropped before the
/// lookup is answered (login timeout, displacement, shutdown). Closing the connection does
/// not stop a backend that waits on a lock (a migration holding the tenants table), and
/// its pool slot is free at once: abandoned logins would leave backends waiting beyond
/// `max_db_connections`.
struct CancelIfDropped<'a> {
    server: &'a crate::config::ServerConfig,
    key: Option<crate::pool::BackendKey>,
}

impl Drop for CancelIfDropped<'_> {
    fn drop(&mut self) {
        let (Some(key), Ok(runtime)) = (self.key, tokio::runtime::Handle::try_current()) else {
            return;
        };
        let (host, port) = (self.server.host.clone(), self.server.port);
        runtime.spawn(async move {
            let send = crate::pool::send_cancel(&host, port, key);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), send).await;
        });
    }
}

/// For `auth: cert` users: the verified client certificate names the tenant. A user with a
/// fixed tenant must present a certificate for that same tenant.
fn with_cert_tenant(
    client: &ClientConn,
    ctx: &ProxyContext,
    user: Arc<User>,
) -> Result<Arc<User>, ClientError> {
    let refuse = |why: &str| {
        ClientError::fatal(
            ErrorKind::Auth,
            codes::INVALID_AUTHORIZATION,
            format!(
                "certificate authentication failed for user \"{}\"",
                user.name
            ),
        )
        .with_detail(why.to_owned())
    };
    let (Some(tls), Some(certs)) = (
        &ctx.settings.config.tls,
        client.stream.client_certificates(),
    ) else {
        return Err(refuse(
            "connect with TLS and a client certificate (sslcert/sslkey)",
        ));
    };
    let leaf = certs
        .first()
        .ok_or_else(|| refuse("no client certificate"))?;
    let named = crate::net::tls::cert_tenant(leaf, &tls.client_cert_tenant)
        .ok_or_else(|| refuse("the certificate names no tenant under the configured rule"))?;
    let tenant = crate::tenant::TenantId::parse(&named)
        .map_err(|_| refuse("the tenant in the certificate is not a ULID"))?;
    if user.tenant.is_some_and(|t| t != tenant) {
        return Err(refuse(
            "the certificate is for another tenant than this user's",
        ));
    }
    Ok(Arc::new(User {
        name: user.name.clone(),
        role: user.role,
        auth: user.auth,
        secret: user.secret.clone(),
        scram_verifier: None,
        server_login: user.server_login.clone(),
        tenant: Some(tenant),
        server_user: user.server_user.clone(),
    }))
}

/// A client not in the users file, with `jwt:` configured: its password is a token that
/// names its tenant and role. Cleartext passwords travel only over TLS (or loopback when
/// explicitly allowed).
async fn token_login(
    client: &mut ClientConn,
    ctx: &ProxyContext,
    jwt: &crate::auth::jwt::JwtVerifier,
    user_name: &str,
    out: &mut BytesMut,
) -> Result<Arc<User>, ClientError> {
    let loopback = client
        .stream
        .peer_addr()
        .is_ok_and(|a| a.ip().is_loopback());
    let cleartext_ok =
        client.stream.is_tls() || (loopback && ctx.settings.config.allow_cleartext_on_loopback);
    if !cleartext_ok {
        return Err(ClientError::fatal(
            ErrorKind::Auth,
            codes::INVALID_AUTHORIZATION,
            format!("user \"{user_name}\" must log in with a token over TLS"),
        )
        .with_hint(
            "connect with sslmode=require (or verify-full) and send the token as the password",
        ));
    }
    encode::authentication_cleartext(out);
    flush(client, out).await?;
    let (tag, body) = client
        .read_message(crate::auth::jwt::MAX_TOKEN_LEN + 64)
        .await?;
    if tag != frontend::PASSWORD {
        return Err(ClientError::protocol("expected password message"));
    }
    let token = std::str::from_utf8(body.strip_suffix(&[0]).unwrap_or(&body))
        .map_err(|_| ClientError::password_failed(user_name))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let identity = jwt.verify(token, now).map_err(|e| {
        ClientError::password_failed(user_name).with_detail(format!("token rejected: {e}"))
    })?;
    let tenant = crate::tenant::TenantId::parse(&identity.tenant).map_err(|_| {
        ClientError::password_failed(user_name)
            .with_detail("token rejected: the tenant claim is not a ULID")
    })?;
    let settings = ctx.settings.config.jwt.as_ref().expect("jwt configured");
    let role = identity
        .role
        .as_deref()
        .or(settings.default_role.as_deref())
        .ok_or_else(|| {
            ClientError::password_failed(user_name).with_detail("token rejected: it names no role")
        })?;
    let (role, server_user) = match role {
        "read" => (crate::config::Role::Read, &settings.server_users.read),
        _ => (crate::config::Role::Write, &settings.server_users.write),
    };
    let login = ctx.users.get(server_user).ok_or_else(|| {
        ClientError::fatal(
            ErrorKind::Internal,
            codes::INTERNAL_ERROR,
            "token server user missing",
        )
    })?;
    Ok(Arc::new(User {
        name: user_name.to_owned(),
        role,
        auth: ClientAuth::ScramSha256,
        secret: ClientSecret::Plain(String::new()),
        scram_verifier: None,
        server_login: login.server_login.clone(),
        tenant: Some(tenant),
        server_user: server_user.clone(),
    }))
}
