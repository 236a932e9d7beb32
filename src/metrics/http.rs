//! A deliberately tiny HTTP/1.1 listener: `GET /metrics` and `GET /health`, nothing else.
//! Scrapes are rare and small, so one request per connection is enough.

use super::{publish, MetricsContext};
use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub async fn serve(listener: TcpListener, ctx: Arc<MetricsContext>, shutdown: Shutdown) {
    let upkeep = {
        let handle = ctx.handle.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => handle.run_upkeep(),
                    _ = shutdown.triggered() => return,
                }
            }
        })
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(10), respond(stream, &ctx)).await;
                    });
                }
            }
            _ = shutdown.triggered() => break,
        }
    }
    upkeep.abort();
}

async fn respond(mut stream: TcpStream, ctx: &MetricsContext) -> std::io::Result<()> {
    let mut req = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || req.len() > 16 * 1024 {
            return Ok(());
        }
        req.extend_from_slice(&chunk[..n]);
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
            ("200 OK", "text/plain; version=0.0.4", body)
        }
        (b"GET", b"/health") => ("200 OK", "text/plain", "ok\n".to_owned()),
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
