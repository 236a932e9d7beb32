//! Startup-phase packets: the untagged first message a client sends (StartupMessage,
//! SSLRequest, GSSENCRequest, CancelRequest) and the tagged auth replies during login.

use super::fields::read_cstr;
use super::MAX_STARTUP_PACKET;

pub const SSL_REQUEST_CODE: i32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
const PROTOCOL_MAJOR_3: i32 = 3;

/// The first packet of a connection, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    Ssl,
    GssEnc,
    Cancel { pid: u32, secret: u32 },
    Startup(StartupParams),
}

/// A StartupMessage: the requested protocol minor version and its parameters in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StartupParams {
    pub minor_version: u16,
    pub params: Vec<(String, String)>,
}

impl StartupParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Protocol options (`_pq_.*`) the client asked for; we recognise none of them.
    pub fn protocol_options(&self) -> impl Iterator<Item = &str> {
        self.params
            .iter()
            .filter(|(k, _)| k.starts_with("_pq_."))
            .map(|(k, _)| k.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StartupError {
    #[error("invalid length of startup packet")]
    BadLength,
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("invalid startup packet layout: {0}")]
    Malformed(&'static str),
}

/// How many bytes the startup packet at the front of `buf` occupies, once its length is known.
pub fn packet_len(buf: &[u8]) -> Result<Option<usize>, StartupError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 8 || len as usize > MAX_STARTUP_PACKET {
        return Err(StartupError::BadLength);
    }
    Ok(Some(len as usize))
}

/// Decodes one whole startup packet (length prefix included).
pub fn parse(packet: &[u8]) -> Result<StartupPacket, StartupError> {
    if packet.len() < 8 {
        return Err(StartupError::BadLength);
    }
    let code = i32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let body = &packet[8..];
    match code {
        SSL_REQUEST_CODE if body.is_empty() => Ok(StartupPacket::Ssl),
        GSSENC_REQUEST_CODE if body.is_empty() => Ok(StartupPacket::GssEnc),
        CANCEL_REQUEST_CODE if body.len() == 8 => Ok(StartupPacket::Cancel {
            pid: u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
            secret: u32::from_be_bytes([body[4], body[5], body[6], body[7]]),
        }),
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE | CANCEL_REQUEST_CODE => {
            Err(StartupError::BadLength)
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major as i32 != PROTOCOL_MAJOR_3 {
                return Err(StartupError::UnsupportedProtocol { major, minor });
            }
            Ok(StartupPacket::Startup(StartupParams {
                minor_version: minor,
                params: parse_params(body)?,
            }))
        }
    }
}

fn parse_params(mut body: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    let mut params = Vec::new();
    loop {
        match body.first() {
            None => return Err(StartupError::Malformed("missing terminator")),
            Some(0) if body.len() == 1 => return Ok(params),
            Some(0) => return Err(StartupError::Malformed("data after terminator")),
            Some(_) => {}
        }
        let (k, rest) = read_cstr(body).ok_or(StartupError::Malformed("unterminated name"))?;
        let (v, rest) = read_cstr(rest).ok_or(StartupError::Malformed("missing value"))?;
        let k = std::str::from_utf8(k).map_err(|_| StartupError::Malformed("name not UTF-8"))?;
        let v = std::str::from_utf8(v).map_err(|_| StartupError::Malformed("value not UTF-8"))?;
        params.push((k.to_owned(), v.to_owned()));
        body = rest;
    }
}

/// SASLInitialResponse body: the mechanism name and the initial client response, `None`
/// when the client left it out (length -1: the server then asks for it with an empty
/// challenge, as PostgreSQL does).
pub fn parse_sasl_initial_response(body: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (mechanism, rest) = read_cstr(body)?;
    if rest.len() < 4 {
        return None;
    }
    let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let data = &rest[4..];
    match len {
        -1 if data.is_empty() => Some((mechanism, None)),
        0.. if len as usize == data.len() => Some((mechanism, Some(data))),
        _ => None,
    }
}
