//! Reading the fields of ErrorResponse and NoticeResponse bodies.
//!
//! Only done off the hot path: for errors (metrics by SQLSTATE class, logs) and during the
//! proxy's own login to PostgreSQL.

/// Iterates `(field type, value)` pairs of an ErrorResponse/NoticeResponse body.
pub fn error_fields(body: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut rest = body;
    std::iter::from_fn(move || {
        let (&ty, tail) = rest.split_first()?;
        if ty == 0 {
            return None;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        let value = &tail[..end];
        rest = &tail[end + 1..];
        Some((ty, value))
    })
}

/// The SQLSTATE (`C` field) of an error body, if present and well-formed.
pub fn sqlstate(body: &[u8]) -> Option<[u8; 5]> {
    error_fields(body)
        .find(|(t, _)| *t == b'C')
        .and_then(|(_, v)| v.try_into().ok())
}

/// The cursor position (`P` field: 1-based, in characters of the Query) of an error body.
pub fn position(body: &[u8]) -> Option<u64> {
    error_fields(body)
        .find(|(t, _)| *t == b'P')
        .and_then(|(_, v)| position_value(v))
}

/// A `P` field's value as a number.
pub fn position_value(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A human-readable `SEVERITY: message (SQLSTATE)` summary for logs and wrapped errors.
pub fn summary(body: &[u8]) -> String {
    let mut severity = "";
    let mut message = "";
    let mut code = "";
    for (t, v) in error_fields(body) {
        let v = std::str::from_utf8(v).unwrap_or("?");
        match t {
            b'V' => severity = v,
            b'S' if severity.is_empty() => severity = v,
            b'M' => message = v,
            b'C' => code = v,
            _ => {}
        }
    }
    format!("{severity}: {message} ({code})")
}

/// Reads one NUL-terminated string from the front of `buf`, returning it and the rest.
pub fn read_cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = memchr::memchr(0, buf)?;
    Some((&buf[..end], &buf[end + 1..]))
}
