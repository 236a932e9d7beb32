//! The client's socket and read buffer, with the few reads the handshake needs.

use super::buffer_budget::{BufferBudget, BufferCharge, FREE_CAPACITY};
use crate::error::ClientError;
use crate::net::Stream;
use crate::protocol::framing::parse_header;
use bytes::{Buf, BytesMut};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// How long a connection that ends with an error waits for its client to take the error.
pub const ERROR_SEND_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

pub struct ClientConn {
    pub stream: Stream,
    /// Bytes read from the client and not yet forwarded. Released while the client idles.
    pub buf: BytesMut,
    /// Size of `buf`'s allocation, which `capacity()` understates once the front of the
    /// buffer was consumed (0: no buffer).
    alloc: usize,
    /// What `buf` takes of the clients' shared budget (`super::buffer_budget`).
    charge: BufferCharge,
    /// The client closed its connection after a Terminate still in `buf`: what it sent
    /// before that runs (see [`ClientConn::goodbye_buffered`]), and what is written to it
    /// goes nowhere.
    pub said_goodbye: bool,
}

/// Read size for client sockets: one read takes a typical batch of messages.
pub(crate) const READ_CHUNK: usize = 8 * 1024;

impl ClientConn {
    pub fn new(stream: Stream, budget: Arc<BufferBudget>) -> Self {
        ClientConn {
            stream,
            buf: BytesMut::new(),
            alloc: 0,
            charge: BufferCharge::new(budget),
            said_goodbye: false,
        }
    }

    /// Whether `buf` holds whole messages up to a Terminate. A client that closes its
    /// connection right after one (libpq's PQfinish after PQsendQuery) ended its session
    /// cleanly: on a direct connection PostgreSQL runs what came before the Terminate.
    pub fn goodbye_buffered(&self) -> bool {
        use crate::protocol::framing::{frontend, Frames};
        Frames::new(&self.buf)
            .map_while(Result::ok)
            .any(|(_, h)| h.tag == frontend::TERMINATE)
    }

    /// Reads more bytes; `Ok(0)` means the client closed. An error of kind `OutOfMemory`
    /// is the buffer budget's refusal ([`ClientConn::refusal`]).
    pub async fn read_more(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() == 0 {
            // Never read into, or read and consumed to the end of its allocation.
            self.drop_buffer();
            self.buf = super::spare_buffers::take();
            self.alloc = self.buf.capacity();
        }
        self.make_room()?;
        self.stream.read_into(&mut self.buf).await
    }

    /// Room for one more read in `buf`; an allocation past the free allowance is charged
    /// to the budget before it is made.
    #[inline]
    pub fn make_room(&mut self) -> std::io::Result<()> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            return self.grow();
        }
        Ok(())
    }

    fn grow(&mut self) -> std::io::Result<()> {
        // Room before the read position, without allocating, if the bytes left fit there.
        if self.buf.try_reclaim(READ_CHUNK) {
            return Ok(());
        }
        let len = self.buf.len();
        // Doubling keeps a large message to a few copies, but never past the largest
        // message a client may send: one of that size fits a budget of that size.
        let want = (self.alloc.max(READ_CHUNK) * 2)
            .min(self.charge.budget().max_message() + READ_CHUNK)
            .max(len + READ_CHUNK);
        if !self.charge.fit(want) {
            let refusal = self.charge.budget().exhausted(want);
            // Freed at once: the connection ends with the budget's error.
            self.drop_buffer();
            return Err(std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                refusal,
            ));
        }
        let mut bigger = BytesMut::with_capacity(want);
        bigger.extend_from_slice(&self.buf);
        self.buf = bigger;
        self.alloc = want;
        Ok(())
    }

    /// Whether the client holds a buffer (an idle one gives it back).
    pub fn holds_buffer(&self) -> bool {
        self.alloc > 0
    }

    /// The idle client's buffer goes back to the spare ones (a large one is freed), and
    /// with it its share of the budget.
    pub fn give_back_buffer(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if self.alloc <= FREE_CAPACITY {
            super::spare_buffers::give_back(buf);
        }
        self.alloc = 0;
        self.charge.release();
    }

    fn drop_buffer(&mut self) {
        self.buf = BytesMut::new();
        self.alloc = 0;
        self.charge.release();
    }

    /// The client error inside a read error of kind `OutOfMemory` (the budget's refusal).
    pub fn refusal(e: std::io::Error) -> ClientError {
        match e.into_inner().map(|inner| inner.downcast::<ClientError>()) {
            Some(Ok(refusal)) => *refusal,
            _ => ClientError::protocol("client read failed"),
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Sends an error; failures are ignored because the connection is ending anyway, and a
    /// client that does not read it within [`ERROR_SEND_LIMIT`] is not waited for longer
    /// (its task would otherwise keep its place under `max_client_conn`).
    pub async fn send_error(&mut self, err: &ClientError) {
        let b = super::encode_error(err);
        let send = async {
            let _ = self.stream.write_all(&b).await;
            let _ = self.stream.flush().await;
        };
        let _ = tokio::time::timeout(ERROR_SEND_LIMIT, send).await;
    }

    /// Reads exactly one tagged message of at most `max` bytes (handshake only).
    pub async fn read_message(&mut self, max: usize) -> Result<(u8, BytesMut), ClientError> {
        self.read_message_while(max, "during login").await
    }

    /// Reads exactly one tagged message of at most `max` bytes outside the relay (the login,
    /// the admin console); `phase` ends the errors' words ("during login").
    pub async fn read_message_while(
        &mut self,
        max: usize,
        phase: &str,
    ) -> Result<(u8, BytesMut), ClientError> {
        loop {
            match parse_header(&self.buf) {
                Err(_) => return Err(ClientError::protocol("invalid message length")),
                Ok(Some(h)) if h.frame_len > max => {
                    return Err(ClientError::protocol(format!(
                        "message of {} bytes is larger than the {max} allowed {phase}",
                        h.frame_len
                    )))
                }
                Ok(Some(h)) if self.buf.len() >= h.frame_len => {
                    let mut m = self.buf.split_to(h.frame_len);
                    m.advance(5);
                    return Ok((h.tag, m));
                }
                _ => {}
            }
            match self.read_more().await {
                Ok(0) | Err(_) => {
                    return Err(ClientError::protocol(format!(
                        "client closed the connection {phase}"
                    )))
                }
                Ok(_) => {}
            }
        }
    }
}
