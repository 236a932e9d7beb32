//! Framing: find whole messages in a buffer by their 5-byte headers without decoding them.
//!
//! Both directions use the same layout: one tag byte, then a big-endian `i32` length that
//! counts itself but not the tag. The relay scans headers to find boundaries and the few tags
//! that matter, and forwards the bytes untouched.

use super::MAX_MESSAGE_LEN;

/// Frontend (client → server) tags the proxy cares about.
pub mod frontend {
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const EXECUTE: u8 = b'E';
    pub const DESCRIBE: u8 = b'D';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const TERMINATE: u8 = b'X';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const PASSWORD: u8 = b'p';
}

/// Backend (server → client) tags the proxy cares about.
pub mod backend {
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
}

/// A message header: the tag and the full on-wire size (tag + length field + body).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Bytes the whole message occupies on the wire, header included.
    pub frame_len: usize,
}

impl Header {
    /// Body length, i.e. the bytes after the 5-byte header.
    pub fn body_len(&self) -> usize {
        self.frame_len - 5
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("invalid message length {0}")]
    BadLength(i64),
}

/// Reads the header at the start of `buf`, if five bytes are there.
///
/// A length below 4 can never be valid and one above [`MAX_MESSAGE_LEN`] is treated as a
/// desynchronised stream: both are errors, because guessing would forward garbage.
#[inline]
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, FrameError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 || len as usize > MAX_MESSAGE_LEN {
        return Err(FrameError::BadLength(len as i64));
    }
    Ok(Some(Header {
        tag: buf[0],
        frame_len: len as usize + 1,
    }))
}

/// Iterates over the complete messages at the front of a buffer, yielding each header with its
/// offset; stops at the first incomplete message. `consumed()` tells where that is.
pub struct Frames<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Frames<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Frames { buf, pos: 0 }
    }

    /// Bytes covered by the complete messages yielded so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// Header of the incomplete message at the current position, if its header is readable.
    pub fn pending_header(&self) -> Result<Option<Header>, FrameError> {
        parse_header(&self.buf[self.pos..])
    }
}

impl<'a> Iterator for Frames<'a> {
    /// `(offset, header)`; an `Err` ends the iteration for good.
    type Item = Result<(usize, Header), FrameError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match parse_header(&self.buf[self.pos..]) {
            Ok(Some(h)) if self.buf.len() - self.pos >= h.frame_len => {
                let at = self.pos;
                self.pos += h.frame_len;
                Some(Ok((at, h)))
            }
            Ok(_) => None,
            Err(e) => {
                // Make the iterator fused after an error.
                self.pos = self.buf.len();
                Some(Err(e))
            }
        }
    }
}

/// Body of a complete message starting at `at`.
#[inline]
pub fn body(buf: &[u8], at: usize, h: Header) -> &[u8] {
    &buf[at + 5..at + h.frame_len]
}
