//! The client's socket and read buffer, with the few reads the handshake needs.

use super::buffer_budget::{BufferBudget, BufferCharge};
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
    /// What `buf` takes of the clients' shared budget (`super::buffer_budget`).
    charge: BufferCharge,
}

/// Read size for client sockets: one read takes a typical batch of messages.
pub(crate) const READ_CHUNK: usize = 8 * 1024;

impl ClientConn {
    pub fn new(stream: Stream, budget: Arc<BufferBudget>) -> Self {
        ClientConn {
            stream,
            buf: BytesMut::new(),
            charge: BufferCharge::new(budget),
        }
    }

    /// Reads more bytes; `Ok(0)` means the client closed. An error of kind `OutOfMemory`
    /// is the buffer budget's refusal ([`ClientConn::budget_error`]).
    pub async fn read_more(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() == 0 {
            self.buf = super::spare_buffers::take();
        }
        self.make_room()?;
        self.stream.read_into(&mut self.buf).await
    }

    /// Room for one more read in `buf`, charged to the budget where it grows past the
    /// free allowance.
    #[inline]
    pub fn make_room(&mut self) -> std::io::Result<()> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            return self.grow();
        }
        Ok(())
    }

    fn grow(&mut self) -> std::io::Result<()> {
        self.buf.reserve(READ_CHUNK);
        if !self.charge.fit(self.buf.capacity()) {
            // Freed at once: the connection ends with the budget's error.
            self.buf = BytesMut::new();
            self.charge.release();
            return Err(std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                "client buffer budget exhausted",
            ));
        }
        Ok(())
    }

    /// The idle client's buffer goes back to the spare ones (or is freed), and with it its
    /// share of the budget.
    pub fn give_back_buffer(&mut self) {
        super::spare_buffers::give_back(std::mem::take(&mut self.buf));
        self.charge.release();
    }

    /// The error for a read the budget refused.
    pub fn budget_error(&self) -> ClientError {
        self.charge.budget().exhausted(self.buf.len() + READ_CHUNK)
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
        loop {
            match parse_header(&self.buf) {
                Err(_) => return Err(ClientError::protocol("invalid message length")),
                Ok(Some(h)) if h.frame_len > max => {
                    return Err(ClientError::protocol(format!(
                        "message of {} bytes is larger than the {max} allowed during login",
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
                    return Err(ClientError::protocol(
                        "client closed the connection during login",
                    ))
                }
                Ok(_) => {}
            }
        }
    }
}
