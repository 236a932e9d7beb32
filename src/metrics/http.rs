//! A deliberately tiny HTTP/1.1 listener: `GET /metrics` and `GET /health`, nothing else.
//! `/health` is 200 `ok`, or 503 naming the pools whose latest server login failed, or
//! saying that the proxy drains. Scrapes are rare and small, so one request per connection
//! is enough.
//!
//! At most [`MAX_OPEN`] connections are served at once, each for up to [`ANSWER_WITHIN`]
//! (and [`REQUEST_WITHIN`] to send its request); more are closed as they come: the port
//! shares the process's file descriptors with the clients, and idle connections to it must
//! not use them up.
//!
//! The listener serves until the process exits, through the drain after SIGTERM (up to
//! `shutdown_timeout_ms`): it used to close at SIGTERM, so the drain, the very moment an
//! operator watches clients and transactions go down, was a gap in every graph.

use super::{publish, MetricsContext};
use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Connections served at once (Prometheus, a health checker and an operator need a few).
pub const MAX_OPEN: usize = 32;

/// Longest a connection may take to send its request and read the answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Longest a connection may take to send its request: a scraper sends it at once, and a
/// connection that sends nothing holds one of the [`MAX_OPEN`] places only this long.
const REQUEST_WITHIN: Duration = Duration::from_secs(2);

/// `shared`: the address is bound with `so_reuseport`, and the drain leaves it to the other
/// processes on it (a load balancer's `/health` then asks one that serves); otherwise it
/// answers until the process exits.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<MetricsContext>,
    shutdown: Shutdown,
    shared: bool,
) {
    let handle = ctx.handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            handle.run_upkeep();
        }
    });
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_OPEN));
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.triggered(), if shared => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            // Out of file descriptors, typically: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(place) = open.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let answer = respond(stream, &ctx, &shutdown);
            let _ = tokio::time::timeout(ANSWER_WITHIN, answer).await;
            drop(place);
        });
    }
}

async fn respond(
    mut stream: TcpStream,
    ctx: &MetricsContext,
    shutdown: &Shutdown,
) -> std::io::Result<()> {
    let mut req = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let read_request = async {
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await?;
            if n == 0 || req.len() > 16 * 1024 {
                return Ok(false);
            }
            req.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(true)
    };
    if !matches!(
        tokio::time::timeout(REQUEST_WITHIN, read_request).await,
        Ok(Ok(true))
    ) {
        return Ok(());
    }
    let line = req.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let (status, ctype, body) = match (method, path) {
        (b"GET", b"/metrics") => {
            publish(&ctx.pools, &ctx.clients);
            let mut body = ctx.handle.render();
            super::render_wait_histograms(&ctx.pools, &mut body);
            super::tenants::render_tenant_clients(&(ctx.tenant_clients)(), &mut body);
            ("200 OK", "text/plain; version=0.0.4", body)
        }
        (b"GET", b"/health") if shutdown.is_triggered() => (
            "503 Service Unavailable",
            "text/plain",
            "shutting down: draining running transactions\n".to_owned(),
        ),
        (b"GET", b"/health") => match server_error(&ctx.pools) {
            None => ("200 OK", "text/plain", "ok\n".to_owned()),
            Some(e) => ("503 Service Unavailable", "text/plain", e),
        },
        (b"GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".to_owned(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// What `/health` reports besides "ok": the pools whose latest server login failed. It
/// said "ok" whatever PostgreSQL did, so a load balancer or an operator checking it kept
/// sending clients to a proxy that answered every one with 57P03. A pool learns of an
/// outage when it next needs a connection (a client's transaction, `min_pool_size`), and
/// recovers with its next successful login, which each failing check asks its manager
/// to try (`Pool::probe_server`).
fn server_error(pools: &crate::pool::PoolSet) -> Option<String> {
    let failing: String = pools
        .iter()
        .filter_map(|p| {
            let e = p.server_error()?;
            p.probe_server();
            Some(format!("pool \"{}\": {e}\n", p.name))
        })
        .collect();
    (!failing.is_empty()).then(|| format!("PostgreSQL unavailable\n{failing}"))
}
