//! Byte streams to clients and servers, plain or TLS, behind one enum so that the relay
//! stays the same whatever the transport. TLS setup lives in [`tls`].

pub mod tls;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub enum Stream {
    Tcp(TcpStream),
    /// A client connection after SSLRequest and the TLS handshake.
    ClientTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// A server connection with TLS toward PostgreSQL.
    ServerTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Left behind while the socket moves into a TLS session, and if that handshake
    /// fails; every operation on it fails.
    Closed,
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

/// Applies one expression to whichever stream is inside.
macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Stream::Tcp($s) => $e,
            Stream::ClientTls($s) => $e,
            Stream::ServerTls($s) => $e,
            Stream::Closed => Err(closed()).into(),
        }
    };
}

impl Stream {
    /// Waits until the stream has something to read, without needing a buffer: an idle
    /// client then holds no read buffer at all.
    pub async fn wait_readable(&self) -> io::Result<()> {
        match self {
            // The socket's reader waker slot, not `readable()`: that one links a waiter into
            // the socket's list and unlinks it again, two locked list operations per wait.
            Stream::Tcp(s) => std::future::poll_fn(|cx| s.poll_read_ready(cx)).await,
            // TLS may hold decrypted bytes already: let the read itself wait.
            Stream::ClientTls(_) | Stream::ServerTls(_) => Ok(()),
            Stream::Closed => Err(closed()),
        }
    }

    /// Non-blocking check of an idle pooled connection: `true` if the peer closed it or sent
    /// something unsolicited (a FATAL error before closing, typically), either of which makes
    /// it unfit to hand out. Costs no syscall when the reactor has seen nothing.
    pub fn has_unexpected_input(&self) -> bool {
        let Some(tcp) = self.tcp() else { return true };
        let mut probe = [0u8; 1];
        // Reading raw bytes under TLS would corrupt the session, but a connection that has
        // anything to read while idle is discarded anyway.
        !matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp().ok_or_else(closed)?.peer_addr()
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            Stream::ClientTls(s) => Some(s.get_ref().0),
            Stream::ServerTls(s) => Some(s.get_ref().0),
            Stream::Closed => None,
        }
    }

    /// Wraps a plain client connection in TLS (after we answered SSLRequest with 'S').
    pub async fn accept_tls(&mut self, acceptor: tokio_rustls::TlsAcceptor) -> io::Result<()> {
        let Stream::Tcp(tcp) = std::mem::replace(self, Stream::Closed) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TLS requested twice",
            ));
        };
        *self = Stream::ClientTls(Box::new(acceptor.accept(tcp).await?));
        Ok(())
    }

    /// The client's certificate chain, if it presented one over TLS.
    pub fn client_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        match self {
            Stream::ClientTls(s) => s.get_ref().1.peer_certificates(),
            _ => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Tcp(_))
    }
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::ClientTls(s) => s.is_write_vectored(),
            Stream::ServerTls(s) => s.is_write_vectored(),
            Stream::Closed => false,
        }
    }
}
