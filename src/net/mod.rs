//! Byte streams to clients and servers, plain or TLS, behind one enum so that the relay
//! stays the same whatever the transport. TLS setup lives in [`tls`].

pub mod tls;

use bytes::BytesMut;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
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

    /// Whether bytes from the peer wait in the socket, told by a peek: unlike readiness,
    /// also those the reactor has not reported yet. For TLS, whether a record's bytes do.
    pub fn has_input(&self) -> bool {
        let tcp = match self {
            Stream::Tcp(s) => s,
            Stream::ClientTls(s) => s.get_ref().0,
            Stream::ServerTls(s) => s.get_ref().0,
            Stream::Closed => return false,
        };
        let mut byte = [std::mem::MaybeUninit::uninit(); 1];
        // The socket is non-blocking: an empty one answers WouldBlock.
        matches!(socket2::SockRef::from(tcp).peek(&mut byte), Ok(n) if n > 0)
    }

    /// Reads into the spare capacity of `buf` (which must have some); `Ok(0)` is end of
    /// stream. The relay's read: on plain TCP it skips tokio's `AsyncRead` layers (a
    /// `ReadBuf` over the spare capacity, the cooperative budget, a readiness poll before
    /// every read); what it keeps is theirs: a read that does not fill the buffer drained
    /// the socket, so its readiness is cleared and the next poll waits for the reactor
    /// instead of making a read that would fail with EAGAIN.
    pub fn poll_read_into(
        &self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        let Stream::Tcp(s) = self else {
            return Poll::Ready(Err(io::ErrorKind::Unsupported.into()));
        };
        loop {
            // The read first: a task woken for this socket finds it ready, and a readiness
            // poll (the cooperative budget, the waiter lock) is left for when it is not.
            let room = buf.capacity() - buf.len();
            let mut drained = None;
            let read = s.try_io(Interest::READABLE, || {
                let n = s.try_read_buf(buf)?;
                if n > 0 && n < room {
                    // Reported as WouldBlock so that try_io clears the readiness it saw.
                    drained = Some(n);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            match read {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(_) if drained.is_some() => return Poll::Ready(Ok(drained.unwrap_or(0))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(s.poll_read_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// [`Stream::poll_read_into`] on plain TCP, a read through the session on TLS.
    pub fn poll_read_some(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        if matches!(self, Stream::Tcp(_)) {
            return self.poll_read_into(cx, buf);
        }
        tokio_util::io::poll_read_buf(Pin::new(self), cx, buf)
    }

    /// Reads more bytes into `buf` (see [`Stream::poll_read_some`]). Cancel-safe.
    pub async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read_some(cx, buf)).await
    }

    /// Writes what the socket takes now, without waiting: how many bytes of `bytes` went
    /// (0 when it would block, and always on TLS, whose writes go through its session).
    /// The relay's synchronous fast path: a write that completes here needs no future.
    pub fn write_now(&self, bytes: &[u8]) -> io::Result<usize> {
        let Stream::Tcp(s) = self else { return Ok(0) };
        match s.try_write(bytes) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            r => r,
        }
    }

    /// Writes `a` then `b` (one `writev`) as far as the socket takes them now: how many
    /// bytes went, as [`Stream::write_now`].
    pub fn write_pair_now(&self, a: &[u8], b: &[u8]) -> io::Result<usize> {
        let Stream::Tcp(s) = self else { return Ok(0) };
        match s.try_write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)]) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            r => r,
        }
    }

    /// Writes all of `bytes`. On plain TCP the first attempt is a direct write, which takes
    /// everything unless the socket buffer is full; only the rest waits through tokio's
    /// `AsyncWrite`. On TLS the records the session still holds are flushed: its
    /// `poll_write` takes the bytes once they are encrypted, whether or not the socket
    /// took the records, and a reply left there would never reach a peer that waits for it.
    pub async fn write_all_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut rest = bytes;
        if let Stream::Tcp(s) = self {
            match s.try_write(rest) {
                Ok(n) if n == rest.len() => return Ok(()),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        self.write_all(rest).await?;
        if !matches!(self, Stream::Tcp(_)) {
            self.flush().await?;
        }
        Ok(())
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

    /// Waits until the peer either hangs up (`true`: end of stream or a reset) or sends
    /// more (`false`), without taking any byte from the socket (a peek, so TLS is left
    /// intact). It waits in the socket's reader slot, as [`Stream::wait_readable`], and
    /// makes no system call while the socket has nothing new.
    pub async fn hung_up(&self) -> bool {
        let Some(tcp) = self.tcp() else { return true };
        let mut probe = [0u8; 1];
        std::future::poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut probe);
            tcp.poll_peek(cx, &mut buf)
                .map(|r| matches!(r, Ok(0) | Err(_)))
        })
        .await
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

/// What is left of `a` then `b` once `n` bytes of the two were written.
pub fn past<'a>(a: &'a [u8], b: &'a [u8], n: usize) -> (&'a [u8], &'a [u8]) {
    if n < a.len() {
        (&a[n..], b)
    } else {
        (&[], &b[n - a.len()..])
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

#[cfg(test)]
mod tests {
    use super::Stream;
    use tokio::io::AsyncWriteExt;

    /// The peek sees bytes as soon as the kernel has them, before any readiness poll of
    /// the socket: the drain's test of whether an idle client's next message has come.
    #[tokio::test]
    async fn has_input_sees_bytes_the_reactor_has_not_reported() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let stream = Stream::Tcp(accepted);
        assert!(!stream.has_input(), "nothing sent yet");
        peer.write_all(b"Q").await.unwrap();
        // Loopback delivers within the write; the peek needs no wait, but allow a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !stream.has_input() {
            assert!(
                std::time::Instant::now() < deadline,
                "the byte never showed"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // Peeked, not read: it is still there.
        assert!(stream.has_input());
        drop(peer);
        let mut buf = bytes::BytesMut::with_capacity(16);
        let mut stream = stream;
        assert_eq!(stream.read_into(&mut buf).await.unwrap(), 1);
        // At the end of the stream there is nothing to read: a closed client is idle.
        assert_eq!(stream.read_into(&mut buf).await.unwrap(), 0);
        assert!(!stream.has_input());
        assert!(!Stream::Closed.has_input());
    }
}
