//! Decoding of PostgreSQL's escaped literal forms: backslash escapes in `E'…'` strings and
//! Unicode escapes in `U&'…'` strings and `U&"…"` identifiers.
//!
//! The guard compares decoded values with setting and function names, so decoding must agree
//! with the server: `U&"\0073et_config"` *is* `set_config`. Every function returns `None` where
//! PostgreSQL raises an error; the whole query string is then rejected by the server before any
//! statement in it runs, and the lexer marks the token `Invalid`.

/// Appends the value of one `E'…'` segment body (quotes already stripped, `''` still doubled)
/// to `out`, or returns `None` for an escape PostgreSQL rejects (`\u` with too few hex digits,
/// a code point out of range, a broken surrogate pair).
///
/// Octal and hex escapes produce raw bytes, as in PostgreSQL; validating the resulting
/// encoding is irrelevant here because the result is only compared with ASCII names.
pub(crate) fn decode_backslash(body: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut i = 0;
    let mut high: Option<u32> = None;
    while let Some(&c) = body.get(i) {
        if c != b'\\' {
            // A surrogate escape must be followed immediately by its partner.
            if high.is_some() {
                return None;
            }
            out.push(c);
            // Inside a segment body a quote only ever appears doubled.
            i += if c == b'\'' { 2 } else { 1 };
            continue;
        }
        let next = *body.get(i + 1)?;
        i += 2;
        let unicode_len = match next {
            b'u' => 4,
            b'U' => 8,
            _ => 0,
        };
        if unicode_len > 0 {
            let value = hex_value(body.get(i..i + unicode_len)?)?;
            i += unicode_len;
            push_code_point(value, &mut high, out)?;
            continue;
        }
        if high.is_some() {
            return None;
        }
        match next {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'0'..=b'7' => {
                let mut value = u32::from(next - b'0');
                for _ in 0..2 {
                    match body.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                // PostgreSQL stores the value in a char: `\777` wraps like this.
                out.push((value & 0xff) as u8);
            }
            b'x' => {
                let digits = body
                    .get(i..)
                    .unwrap_or_default()
                    .iter()
                    .take(2)
                    .take_while(|d| d.is_ascii_hexdigit())
                    .count();
                match body.get(i..i + digits).and_then(hex_value) {
                    Some(value) if digits > 0 => {
                        out.push((value & 0xff) as u8);
                        i += digits;
                    }
                    // `\x` without hex digits is just an escaped `x`.
                    _ => out.push(b'x'),
                }
            }
            other => out.push(other),
        }
    }
    if high.is_some() {
        return None;
    }
    Some(())
}

/// Decodes a Unicode-escape body (quotes stripped and already undoubled) with escape
/// character `esc`: `esc` + 4 hex digits, `esc` + `+` + 6 hex digits, or `esc esc` for a
/// literal `esc`. Anything else after `esc` is an error, as in PostgreSQL.
pub(crate) fn decode_unicode(body: &[u8], esc: u8) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    let mut high: Option<u32> = None;
    let mut i = 0;
    while let Some(&c) = body.get(i) {
        if c != esc {
            if high.is_some() {
                return None;
            }
            out.push(c);
            i += 1;
            continue;
        }
        if body.get(i + 1) == Some(&esc) {
            if high.is_some() {
                return None;
            }
            out.push(esc);
            i += 2;
        } else if let Some(value) = body.get(i + 1..i + 5).and_then(hex_value) {
            push_code_point(value, &mut high, &mut out)?;
            i += 5;
        } else if body.get(i + 1) == Some(&b'+') {
            let value = body.get(i + 2..i + 8).and_then(hex_value)?;
            push_code_point(value, &mut high, &mut out)?;
            i += 8;
        } else {
            return None;
        }
    }
    if high.is_some() {
        return None;
    }
    Some(out)
}

/// Whether `c` may follow `UESCAPE`: PostgreSQL refuses hex digits, `+`, quotes and
/// whitespace because they would make escapes ambiguous. Only a single ASCII byte is a
/// one-character string in every server encoding, so non-ASCII bytes are refused too.
pub(crate) fn valid_uescape(c: u8) -> bool {
    c.is_ascii()
        && c != 0
        && !c.is_ascii_hexdigit()
        && !matches!(
            c,
            b'+' | b'\'' | b'"' | b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c
        )
}

/// Parses a run of hex digits (all of `digits` must be hex) into a value.
fn hex_value(digits: &[u8]) -> Option<u32> {
    let mut value: u32 = 0;
    for &d in digits {
        let v = char::from(d).to_digit(16)?;
        value = value.checked_mul(16)?.checked_add(v)?;
    }
    Some(value)
}

/// Appends code point `value` as UTF-8, pairing UTF-16 surrogates the way PostgreSQL does:
/// a high surrogate waits in `high` for the low one that must come next.
fn push_code_point(value: u32, high: &mut Option<u32>, out: &mut Vec<u8>) -> Option<()> {
    if value == 0 || value > 0x10_ffff {
        return None;
    }
    let is_high = (0xd800..=0xdbff).contains(&value);
    let is_low = (0xdc00..=0xdfff).contains(&value);
    let code = match high.take() {
        Some(first) if is_low => 0x10000 + ((first - 0xd800) << 10) + (value - 0xdc00),
        Some(_) => return None,
        None if is_low => return None,
        None if is_high => {
            *high = Some(value);
            return Some(());
        }
        None => value,
    };
    let ch = char::from_u32(code)?;
    let mut buf = [0u8; 4];
    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(body: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        decode_backslash(body, &mut out).map(|()| out)
    }

    #[test]
    fn backslash_escapes() {
        assert_eq!(e(br"a\x5fb").unwrap(), b"a_b");
        assert_eq!(e(br"\n\t\b\f\r").unwrap(), b"\n\t\x08\x0c\r");
        assert_eq!(e(br"\141\1\0611").unwrap(), b"a\x0111");
        assert_eq!(e(br"\777").unwrap(), b"\xff");
        assert_eq!(e(br"\xg\q\\\'").unwrap(), b"xgq\\'");
        assert_eq!(e(b"it''s").unwrap(), b"it's");
        assert_eq!(e(br"\u0073et").unwrap(), b"set");
        assert_eq!(e(br"\U0001F600").unwrap(), "\u{1F600}".as_bytes());
        assert_eq!(e(br"\uD83D\uDE00").unwrap(), "\u{1F600}".as_bytes());
        for bad in [
            &br"\u12"[..],
            br"\uD83D",
            br"\uD83Dx",
            br"\uDE00",
            br"\u0000",
            br"\U00110000",
        ] {
            assert_eq!(e(bad), None, "{bad:?}");
        }
        assert_eq!(e(b"\\"), None);
    }

    #[test]
    fn unicode_escapes() {
        assert_eq!(
            decode_unicode(br"app.tenant\005fid", b'\\').unwrap(),
            b"app.tenant_id"
        );
        assert_eq!(
            decode_unicode(br"d!0061t!+000061!!", b'!').unwrap(),
            b"data!"
        );
        assert_eq!(
            decode_unicode(br"\D83D\DE00", b'\\').unwrap(),
            "\u{1F600}".as_bytes()
        );
        for bad in [
            &br"\12"[..],
            br"\+12345",
            br"\D83D",
            br"\D83Dx",
            br"\DE00",
            br"\0000",
            br"\+110000",
        ] {
            assert_eq!(decode_unicode(bad, b'\\'), None, "{bad:?}");
        }
        assert!(valid_uescape(b'!') && valid_uescape(b'\\'));
        for c in [b'a', b'F', b'0', b'+', b'\'', b'"', b' ', b'\n', 0, 0xc3] {
            assert!(!valid_uescape(c));
        }
    }
}
