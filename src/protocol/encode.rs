//! Encoders for the messages the proxy writes or rewrites itself (never for traffic it relays
//! untouched).
//!
//! Each function appends one whole message to a `BytesMut` so that a reply made of several
//! messages leaves in one write.

use bytes::{BufMut, BytesMut};

/// Appends a message whose body is produced by `body`, then patches in the length.
#[inline]
fn message(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let len_at = buf.len();
    buf.put_i32(0);
    body(buf);
    let len = (buf.len() - len_at) as i32;
    buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    put_without_nul(buf, s);
    buf.put_u8(0);
}

/// Appends `s` without its NULs: one inside a field would end it early and desynchronise
/// the peer. Text almost never has one, so the common case is a memchr and a memcpy.
fn put_without_nul(buf: &mut BytesMut, s: &[u8]) {
    if memchr::memchr(0, s).is_some() {
        buf.extend(s.iter().copied().filter(|&b| b != 0));
    } else {
        buf.extend_from_slice(s);
    }
}

/// Severity of an ErrorResponse/NoticeResponse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Notice,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Notice => "NOTICE",
            Severity::Warning => "WARNING",
        }
    }
}

/// ErrorResponse (or NoticeResponse for Notice/Warning severities) with the fields clients
/// display: severity (both the localized `S` and the fixed `V`), SQLSTATE, message and an
/// optional detail and hint.
pub fn error_response(
    buf: &mut BytesMut,
    severity: Severity,
    code: &str,
    message_text: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    let tag = match severity {
        Severity::Error | Severity::Fatal => b'E',
        Severity::Notice | Severity::Warning => b'N',
    };
    message(buf, tag, |b| {
        b.put_u8(b'S');
        put_cstr(b, severity.as_str().as_bytes());
        b.put_u8(b'V');
        put_cstr(b, severity.as_str().as_bytes());
        b.put_u8(b'C');
        put_cstr(b, code.as_bytes());
        b.put_u8(b'M');
        put_cstr(b, message_text.as_bytes());
        if let Some(d) = detail {
            b.put_u8(b'D');
            put_cstr(b, d.as_bytes());
        }
        if let Some(h) = hint {
            b.put_u8(b'H');
            put_cstr(b, h.as_bytes());
        }
        b.put_u8(0);
    });
}

pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    message(buf, b'C', |b| put_cstr(b, tag.as_bytes()));
}

/// RowDescription of text-format columns, each `(name, type oid, type length)`.
pub fn row_description(buf: &mut BytesMut, columns: &[(&str, u32, i16)]) {
    message(buf, b'T', |b| {
        b.put_i16(columns.len() as i16);
        for &(name, oid, len) in columns {
            put_cstr(b, name.as_bytes());
            b.put_i32(0); // no table
            b.put_i16(0); // no column number
            b.put_u32(oid);
            b.put_i16(len);
            b.put_i32(-1); // no type modifier
            b.put_i16(0); // text
        }
    });
}

/// DataRow of text values; `None` is NULL.
pub fn data_row<S: AsRef<str>>(buf: &mut BytesMut, values: &[Option<S>]) {
    message(buf, b'D', |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(v.as_ref().len() as i32);
                    b.extend_from_slice(v.as_ref().as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    });
}

pub fn empty_query_response(buf: &mut BytesMut) {
    message(buf, b'I', |_| {});
}

pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    message(buf, b'Z', |b| b.put_u8(status));
}

pub fn parameter_status(buf: &mut BytesMut, name: &[u8], value: &[u8]) {
    message(buf, b'S', |b| {
        put_cstr(b, name);
        put_cstr(b, value);
    });
}

pub fn backend_key_data(buf: &mut BytesMut, pid: u32, secret: u32) {
    message(buf, b'K', |b| {
        b.put_u32(pid);
        b.put_u32(secret);
    });
}

pub fn authentication_ok(buf: &mut BytesMut) {
    message(buf, b'R', |b| b.put_i32(0));
}

pub fn authentication_cleartext(buf: &mut BytesMut) {
    message(buf, b'R', |b| b.put_i32(3));
}

pub fn authentication_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    message(buf, b'R', |b| {
        b.put_i32(5);
        b.put_slice(&salt);
    });
}

pub fn authentication_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    message(buf, b'R', |b| {
        b.put_i32(10);
        for m in mechanisms {
            put_cstr(b, m.as_bytes());
        }
        b.put_u8(0);
    });
}

pub fn authentication_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    message(buf, b'R', |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

pub fn authentication_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    message(buf, b'R', |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

/// NegotiateProtocolVersion: the newest minor version we speak and the `_pq_.` options we
/// did not recognise.
pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: i32, unrecognized: &[&str]) {
    message(buf, b'v', |b| {
        b.put_i32(minor);
        b.put_i32(unrecognized.len() as i32);
        for o in unrecognized {
            put_cstr(b, o.as_bytes());
        }
    });
}

/// StartupMessage for protocol 3.0 with the given parameters.
pub fn startup_message<'a>(
    buf: &mut BytesMut,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    let len_at = buf.len();
    buf.put_i32(0);
    buf.put_i32(196_608);
    for (k, v) in params {
        put_cstr(buf, k.as_bytes());
        put_cstr(buf, v.as_bytes());
    }
    buf.put_u8(0);
    let len = (buf.len() - len_at) as i32;
    buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    message(buf, b'p', |b| {
        put_cstr(b, mechanism.as_bytes());
        b.put_i32(data.len() as i32);
        b.put_slice(data);
    });
}

pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    message(buf, b'p', |b| b.put_slice(data));
}

pub fn password_message(buf: &mut BytesMut, password: &[u8]) {
    message(buf, b'p', |b| put_cstr(b, password));
}

pub fn query(buf: &mut BytesMut, sql: &str) {
    message(buf, b'Q', |b| put_cstr(b, sql.as_bytes()));
}

/// A simple Query whose SQL text is `parts` one after the other. The parts hold no NUL (the
/// callers pass the proxy's own text and SQL read up to its NUL), so they are copied as
/// they are: the tenant switch carried in front of a client's SQL is built per transaction.
pub fn query_of_parts(buf: &mut BytesMut, parts: &[&[u8]]) {
    buf.reserve(6 + parts.iter().map(|p| p.len()).sum::<usize>());
    message(buf, b'Q', |b| {
        for part in parts {
            debug_assert!(!part.contains(&0), "a NUL would end the SQL early");
            b.extend_from_slice(part);
        }
        b.put_u8(0);
    });
}

/// A copy of the ErrorResponse or NoticeResponse `msg` (whole, header included) in which
/// `value` writes each field's value, given the field type and the value received.
pub fn rewritten_error(msg: &[u8], mut value: impl FnMut(u8, &[u8], &mut BytesMut)) -> BytesMut {
    let mut out = BytesMut::with_capacity(msg.len() + 64);
    message(&mut out, msg[0], |b| {
        for (field, text) in super::fields::error_fields(&msg[5..]) {
            b.put_u8(field);
            value(field, text, b);
            b.put_u8(0);
        }
        b.put_u8(0);
    });
    out
}

pub fn terminate(buf: &mut BytesMut) {
    message(buf, b'X', |_| {});
}

pub fn sync(buf: &mut BytesMut) {
    message(buf, b'S', |_| {});
}

/// CancelRequest: a 16-byte startup-style packet sent on a fresh connection.
pub fn cancel_request(buf: &mut BytesMut, pid: u32, secret: u32) {
    buf.put_i32(16);
    buf.put_i32(80_877_102);
    buf.put_u32(pid);
    buf.put_u32(secret);
}
