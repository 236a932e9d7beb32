//! The proxy's own small queries on a server connection (tenant status lookups): one
//! simple Query, one round trip, the first column of the first row.

use super::ServerConn;
use crate::net::Stream;
use crate::protocol::encode;
use crate::protocol::fields;
use crate::protocol::framing::{backend, parse_header};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("server connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("server error: {0}")]
    Server(String),
    /// The server closed the connection before answering, after the error it sent if any
    /// (a terminated backend's `FATAL ... (57P01)`).
    #[error("server closed the connection{}", .0.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
    Closed(Option<String>),
    #[error("unexpected reply from the server")]
    Protocol,
}

impl QueryError {
    /// Whether the connection went away rather than the server answering with an error
    /// (terminated, PostgreSQL stopping, a broken socket): the query's answer is unknown,
    /// and another connection may give it.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, QueryError::Io(_) | QueryError::Closed(_))
    }
}

/// Runs `sql` (no parameters: callers embed only validated values) and returns the first
/// column of the first row, `None` for no row or NULL. On any error the connection must be
/// dropped by the caller unless it came back idle (`Ok` means it is idle).
pub async fn query_scalar(conn: &mut ServerConn, sql: &str) -> Result<Option<String>, QueryError> {
    query_scalar_on(&mut conn.stream, &mut conn.buf, sql).await
}

/// [`query_scalar`] on a stream and its read buffer, before they become a [`ServerConn`].
pub async fn query_scalar_on(
    stream: &mut Stream,
    buf: &mut BytesMut,
    sql: &str,
) -> Result<Option<String>, QueryError> {
    let mut out = BytesMut::with_capacity(sql.len() + 8);
    encode::query(&mut out, sql);
    stream.write_all(&out).await?;
    let mut value: Option<String> = None;
    let mut seen_row = false;
    let mut error: Option<String> = None;
    loop {
        let h = loop {
            match parse_header(buf) {
                Ok(Some(h)) if buf.len() >= h.frame_len => break h,
                Ok(_) => {}
                Err(_) => return Err(QueryError::Protocol),
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(4096);
            }
            if stream.read_buf(buf).await? == 0 {
                return Err(QueryError::Closed(error));
            }
        };
        let msg = buf.split_to(h.frame_len);
        let body = &msg[5..];
        match h.tag {
            b'D' if !seen_row => {
                seen_row = true;
                if body.len() >= 6 {
                    let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
                    if len >= 0 {
                        let v = body.get(6..6 + len as usize).ok_or(QueryError::Protocol)?;
                        value = Some(String::from_utf8_lossy(v).into_owned());
                    }
                }
            }
            backend::ERROR_RESPONSE => error = Some(fields::summary(body)),
            backend::READY_FOR_QUERY => {
                if body.first() != Some(&b'I') {
                    return Err(QueryError::Protocol);
                }
                return match error {
                    Some(e) => Err(QueryError::Server(e)),
                    None => Ok(value),
                };
            }
            _ => {}
        }
    }
}
