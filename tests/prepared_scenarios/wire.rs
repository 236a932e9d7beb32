//! Raw protocol messages: what a scenario sends, how an answer is summarized for the
//! transcript, and the blocking client connection that carries them.

use super::common::error_field as field;
use super::WAIT;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(body.len() + 5);
    m.push(tag);
    m.extend(((body.len() + 4) as i32).to_be_bytes());
    m.extend(body);
    m
}
pub fn cstr(s: &str) -> Vec<u8> {
    [s.as_bytes(), &[0]].concat()
}
pub fn parse(name: &str, sql: &str, types: &[u32]) -> Vec<u8> {
    let mut b = [cstr(name), cstr(sql)].concat();
    b.extend((types.len() as i16).to_be_bytes());
    types.iter().for_each(|t| b.extend(t.to_be_bytes()));
    frame(b'P', &b)
}
/// Bind with explicit parameter format codes, values (None = NULL) and result formats.
pub fn bind_with(
    portal: &str,
    stmt: &str,
    formats: &[i16],
    values: &[Option<&[u8]>],
    results: &[i16],
) -> Vec<u8> {
    let mut b = [cstr(portal), cstr(stmt)].concat();
    b.extend((formats.len() as i16).to_be_bytes());
    formats.iter().for_each(|f| b.extend(f.to_be_bytes()));
    b.extend((values.len() as i16).to_be_bytes());
    for v in values {
        match v {
            None => b.extend((-1i32).to_be_bytes()),
            Some(v) => {
                b.extend((v.len() as i32).to_be_bytes());
                b.extend(*v);
            }
        }
    }
    b.extend((results.len() as i16).to_be_bytes());
    results.iter().for_each(|f| b.extend(f.to_be_bytes()));
    frame(b'B', &b)
}
/// Bind with text parameters and text results.
pub fn bind(portal: &str, stmt: &str, params: &[&str]) -> Vec<u8> {
    let values: Vec<Option<&[u8]>> = params.iter().map(|p| Some(p.as_bytes())).collect();
    bind_with(portal, stmt, &[], &values, &[])
}
pub fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    frame(
        b'E',
        &[cstr(portal), max_rows.to_be_bytes().to_vec()].concat(),
    )
}
pub fn describe(kind: u8, name: &str) -> Vec<u8> {
    frame(b'D', &[vec![kind], cstr(name)].concat())
}
pub fn close(kind: u8, name: &str) -> Vec<u8> {
    frame(b'C', &[vec![kind], cstr(name)].concat())
}
pub fn sync() -> Vec<u8> {
    frame(b'S', &[])
}
pub fn flush() -> Vec<u8> {
    frame(b'H', &[])
}
pub fn query(sql: &str) -> Vec<u8> {
    frame(b'Q', &cstr(sql))
}
/// Bind (unnamed portal, text parameters) and Execute of statement `stmt`.
pub fn run(stmt: &str, params: &[&str]) -> Vec<u8> {
    [bind("", stmt, params), execute("", 0)].concat()
}
/// Parse, Bind and Execute of `sql` as statement `name` (no declared types).
pub fn pbe(name: &str, sql: &str, params: &[&str]) -> Vec<u8> {
    [parse(name, sql, &[]), run(name, params)].concat()
}
/// The messages in order, each Sync group written as one batch.
pub fn msgs(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}
/// Sync and Query messages in `bytes`: how many ReadyForQuery answer them.
pub fn readies(bytes: &[u8]) -> usize {
    let (mut pos, mut n) = (0, 0);
    while pos + 5 <= bytes.len() {
        n += usize::from(matches!(bytes[pos], b'S' | b'Q'));
        pos += 1 + i32::from_be_bytes(bytes[pos + 1..pos + 5].try_into().unwrap()) as usize;
    }
    n
}

// ---------------------------------------------------------------- backend messages

pub type Msg = (u8, Vec<u8>);

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// A column value: text as it is, NULL, non-printable bytes in hex, long values as their
/// length and md5.
pub fn value(v: Option<&[u8]>) -> String {
    use md5::{Digest, Md5};
    match v {
        None => "NULL".into(),
        Some(v) if v.len() > 64 => format!("<{} bytes md5 {}>", v.len(), hex(&Md5::digest(v))),
        Some(v) => match std::str::from_utf8(v) {
            Ok(s) if !s.chars().any(|c| c.is_control() || c == ',') => s.to_owned(),
            _ => format!("0x{}", hex(v)),
        },
    }
}

/// One backend message as a short token; `None` for ParameterStatus (the proxy's and
/// PostgreSQL's differ by design and no scenario is about them).
///
/// `1` ParseComplete, `2` BindComplete, `3` CloseComplete, `n` NoData, `s` PortalSuspended,
/// `I` EmptyQueryResponse, `C[tag]`, `E[sqlstate]`, `N[sqlstate]`, `Z[status]`,
/// `D[v1,v2]`, `t[param type oids]`, `T[name:type oid,...]`. With `messages`, errors and
/// notices carry their message text too: `E[sqlstate: message]`.
pub fn summary(tag: u8, b: &[u8], messages: bool) -> Option<String> {
    let i16_at = |i: usize| i16::from_be_bytes(b[i..i + 2].try_into().unwrap());
    let i32_at = |i: usize| i32::from_be_bytes(b[i..i + 4].try_into().unwrap());
    Some(match tag {
        b'S' => return None,
        b'C' => format!(
            "C[{}]",
            String::from_utf8_lossy(b.strip_suffix(&[0]).unwrap_or(b))
        ),
        b'E' | b'N' if messages => format!(
            "{}[{}: {}]",
            tag as char,
            field(b, b'C').unwrap_or_default(),
            field(b, b'M').unwrap_or_default()
        ),
        b'E' | b'N' => format!("{}[{}]", tag as char, field(b, b'C').unwrap_or_default()),
        b'Z' => format!("Z[{}]", b[0] as char),
        b'D' => {
            let mut pos = 2;
            let cols: Vec<String> = (0..i16_at(0))
                .map(|_| {
                    let len = i32_at(pos);
                    pos += 4;
                    if len < 0 {
                        return value(None);
                    }
                    pos += len as usize;
                    value(Some(&b[pos - len as usize..pos]))
                })
                .collect();
            format!("D[{}]", cols.join(","))
        }
        b't' => {
            let oids: Vec<String> = (0..i16_at(0) as usize)
                .map(|i| (i32_at(2 + 4 * i) as u32).to_string())
                .collect();
            format!("t[{}]", oids.join(","))
        }
        b'T' => {
            let mut pos = 2;
            let cols: Vec<String> = (0..i16_at(0))
                .map(|_| {
                    let end = pos + b[pos..].iter().position(|&c| c == 0).unwrap();
                    let name = String::from_utf8_lossy(&b[pos..end]).into_owned();
                    let oid = i32_at(end + 7) as u32; // after table oid (4) and attnum (2)
                    pos = end + 19;
                    format!("{name}:{oid}")
                })
                .collect();
            format!("T[{}]", cols.join(","))
        }
        other => (other as char).to_string(),
    })
}

// ---------------------------------------------------------------- connections

/// A protocol-3 client on a blocking socket. After a read error or timeout it is dead:
/// later reads report the same error at once, so a broken scenario ends quickly.
pub struct Conn {
    s: TcpStream,
    dead: Option<String>,
}

impl Conn {
    /// Logs in with trust (PostgreSQL's superuser) or md5 (the proxy's users).
    pub fn open(port: u16, user: &str, password: &str, db: &str) -> Conn {
        use md5::{Digest, Md5};
        let s = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
        let _ = s.set_nodelay(true);
        let mut c = Conn { s, dead: None };
        let mut body = vec![0, 3, 0, 0];
        for part in ["user", user, "database", db, ""] {
            body.extend(cstr(part));
        }
        c.send(&[&((body.len() + 4) as i32).to_be_bytes()[..], &body].concat());
        loop {
            let (tag, b) = c
                .recv()
                .unwrap_or_else(|e| panic!("login as {user} on port {port}: {e}"));
            match (tag, b.get(..4)) {
                (b'R', Some([0, 0, 0, 0])) => {}
                (b'R', Some([0, 0, 0, 5])) => {
                    let md5 = |d: &[u8]| hex(&Md5::digest(d));
                    let inner = md5(&[password.as_bytes(), user.as_bytes()].concat());
                    let outer = md5(&[inner.as_bytes(), &b[4..8]].concat());
                    c.send(&frame(b'p', &cstr(&format!("md5{outer}"))));
                }
                (b'R', _) => panic!("login as {user}: unexpected authentication request {b:?}"),
                (b'E', _) => panic!("login as {user} refused: {:?}", field(&b, b'M')),
                (b'Z', _) => return c,
                _ => {}
            }
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        if self.dead.is_none() {
            if let Err(e) = self.s.write_all(bytes) {
                self.dead = Some(format!("write failed: {e}"));
            }
        }
    }

    pub fn recv(&mut self) -> Result<Msg, String> {
        if let Some(why) = &self.dead {
            return Err(why.clone());
        }
        let mut read = |buf: &mut [u8]| {
            self.s.read_exact(buf).map_err(|e| match e.kind() {
                ErrorKind::WouldBlock | ErrorKind::TimedOut => "no reply within 30 s".to_owned(),
                ErrorKind::UnexpectedEof => "connection closed".to_owned(),
                _ => format!("read failed: {e}"),
            })
        };
        let result: Result<Msg, String> = (|| {
            let mut h = [0u8; 5];
            read(&mut h)?;
            let len = i32::from_be_bytes(h[1..5].try_into().unwrap());
            let mut body = vec![0; (len as usize).saturating_sub(4)];
            read(&mut body)?;
            Ok((h[0], body))
        })();
        if let Err(e) = &result {
            self.dead = Some(e.clone());
        }
        result
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.s.write_all(&frame(b'X', &[]));
    }
}
