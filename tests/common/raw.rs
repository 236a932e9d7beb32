//! A hand-driven protocol-3 client and message builders, for tests that need exact control
//! of the bytes on the wire (pipelines, partial messages, cancel keys).

use super::error_field as field;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Users that log in with md5, so that a raw client needs no SCRAM implementation.
pub const MD5_USERS: &str = "\
users:
  app:    { password: \"apppw\", role: write, auth: md5 }
  app_ro: { password: \"approp\", role: read, auth: md5 }
";

/// How long a raw client waits for any one read or write.
const LONG: Duration = Duration::from_secs(60);

pub type Msg = (u8, Vec<u8>);

pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    [&[tag][..], &((body.len() + 4) as i32).to_be_bytes(), body].concat()
}
pub fn z(s: &str) -> Vec<u8> {
    [s.as_bytes(), &[0]].concat()
}
pub fn q(sql: &str) -> Vec<u8> {
    frame(b'Q', &z(sql))
}
/// Parse (unnamed) + Bind (text parameters) + Execute, without Sync.
pub fn pbe(sql: &str, params: &[&str]) -> Vec<u8> {
    // Unnamed portal and statement, no parameter format codes, then the parameters.
    let mut b = vec![0u8; 4];
    b.extend((params.len() as i16).to_be_bytes());
    for p in params {
        b.extend([&(p.len() as i32).to_be_bytes()[..], p.as_bytes()].concat());
    }
    b.extend([0, 0]);
    let parse = frame(b'P', &[z(""), z(sql), vec![0, 0]].concat());
    [parse, frame(b'B', &b), frame(b'E', &[0, 0, 0, 0, 0])].concat()
}
pub fn sync() -> Vec<u8> {
    frame(b'S', &[])
}
pub fn copy_data(d: &[u8]) -> Vec<u8> {
    frame(b'd', d)
}
pub fn copy_done() -> Vec<u8> {
    frame(b'c', &[])
}
pub fn hex_md5(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    let digest = Md5::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
/// The message tags in order, with the command tag after 'C' ("C[COPY 3]"), the SQLSTATE
/// after 'E' ("E[57014]") and the transaction status after 'Z' ("Zi", "Zt", "Ze").
pub fn sum(msgs: &[Msg]) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b.strip_suffix(&[0]).unwrap_or(b)).into_owned();
    let one = |(t, b): &Msg| match t {
        b'C' => format!("C[{}]", text(b)),
        b'E' => format!("E[{}]", field(b, b'C').unwrap_or_default()),
        b'Z' => format!("Z{}", (b[0] as char).to_ascii_lowercase()),
        _ => (*t as char).to_string(),
    };
    msgs.iter().map(one).collect()
}
/// The SQLSTATE of the first ErrorResponse in `msgs`.
pub fn first_error(msgs: &[Msg]) -> Option<String> {
    let (_, body) = msgs.iter().find(|(t, _)| *t == b'E')?;
    field(body, b'C')
}
/// First column of every DataRow, as text.
pub fn col0(msgs: &[Msg]) -> Vec<String> {
    let rows = msgs.iter().filter(|(t, _)| *t == b'D');
    rows.map(|(_, b)| {
        let len = i32::from_be_bytes(b[2..6].try_into().unwrap()) as usize;
        String::from_utf8_lossy(&b[6..6 + len]).into_owned()
    })
    .collect()
}
pub fn copy_bytes(msgs: &[Msg]) -> Vec<u8> {
    let data = msgs.iter().filter(|(t, _)| *t == b'd');
    data.flat_map(|(_, b)| b.iter().copied()).collect()
}

/// A hand-driven protocol-3 client on a blocking socket, with the key the proxy gave it.
pub struct Raw {
    pub s: TcpStream,
    /// (pid, secret) from BackendKeyData.
    pub key: (u32, u32),
}

impl Raw {
    pub fn login(port: u16, user: &str, password: &str) -> Raw {
        Raw::try_login(port, user, password)
            .unwrap_or_else(|code| panic!("login failed: SQLSTATE {code}"))
    }

    /// An md5 login that returns the SQLSTATE of a refusal (`EOF` when the proxy closed
    /// the connection, `connect: ...` when it could not be reached) instead of panicking.
    pub fn try_login(port: u16, user: &str, password: &str) -> Result<Raw, String> {
        Raw::try_login_to(port, user, password, "launch")
    }

    /// [`Raw::try_login`] to another database (the admin console's).
    pub fn try_login_to(
        port: u16,
        user: &str,
        password: &str,
        database: &str,
    ) -> Result<Raw, String> {
        let mut raw = Raw::start_login(port, user, database)?;
        raw.finish_login(user, password)?;
        Ok(raw)
    }

    /// Connects and sends the startup packet; the login goes on in [`Raw::finish_login`].
    pub fn start_login(port: u16, user: &str, database: &str) -> Result<Raw, String> {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        Ok(Raw::startup(s, user, database))
    }

    /// Sends the startup packet on a connection made earlier.
    pub fn startup(s: TcpStream, user: &str, database: &str) -> Raw {
        s.set_read_timeout(Some(LONG)).unwrap();
        s.set_write_timeout(Some(LONG)).unwrap();
        let mut raw = Raw { s, key: (0, 0) };
        let mut body = vec![0, 3, 0, 0]; // protocol 3.0
        for part in ["user", user, "database", database, ""] {
            body.extend(z(part));
        }
        raw.send(&[&((body.len() + 4) as i32).to_be_bytes()[..], &body].concat());
        raw
    }

    /// The rest of an md5 login, up to ReadyForQuery: the SQLSTATE of a refusal, `EOF`
    /// when the proxy closed the connection.
    pub fn finish_login(&mut self, user: &str, password: &str) -> Result<(), String> {
        loop {
            let Some((tag, b)) = self.recv() else {
                return Err("EOF".into());
            };
            match (tag, b.get(..4)) {
                (b'R', Some([0, 0, 0, 5])) => {
                    let inner = hex_md5(&[password.as_bytes(), user.as_bytes()].concat());
                    let outer = hex_md5(&[inner.as_bytes(), &b[4..8]].concat());
                    self.send(&frame(b'p', &z(&format!("md5{outer}"))));
                }
                (b'K', _) => {
                    let word = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
                    self.key = (word(0), word(4));
                }
                (b'Z', _) => return Ok(()),
                (b'E', _) => return Err(field(&b, b'C').unwrap_or_default()),
                _ => {}
            }
        }
    }
    pub fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write to the proxy");
    }
    pub fn recv(&mut self) -> Option<Msg> {
        let mut h = [0u8; 5];
        self.s.read_exact(&mut h).ok()?;
        let mut b = vec![0; i32::from_be_bytes(h[1..5].try_into().unwrap()) as usize - 4];
        self.s.read_exact(&mut b).ok()?;
        Some((h[0], b))
    }
    /// Messages up to and including the next one tagged `tag`.
    pub fn until(&mut self, tag: u8) -> Vec<Msg> {
        let mut out = Vec::new();
        while out.last().is_none_or(|(t, _)| *t != tag) {
            let msg = self.recv().expect("connection closed while waiting");
            out.push(msg);
        }
        out
    }
    /// Messages up to and including the next ReadyForQuery, or up to the proxy closing
    /// the connection.
    pub fn until_ready_or_eof(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.recv() {
            let ready = m.0 == b'Z';
            out.push(m);
            if ready {
                break;
            }
        }
        out
    }
    /// Sends `bytes`, returns everything up to the next ReadyForQuery.
    pub fn run(&mut self, bytes: &[u8]) -> Vec<Msg> {
        self.send(bytes);
        self.until(b'Z')
    }
    /// [`Raw::run`] summarised by [`sum`].
    pub fn sum(&mut self, bytes: &[u8]) -> String {
        sum(&self.run(bytes))
    }
    /// First column of the rows of a simple query.
    pub fn col0(&mut self, sql: &str) -> Vec<String> {
        col0(&self.run(&q(sql)))
    }
    /// One extended-protocol statement (Parse/Bind/Execute/Sync).
    pub fn ext(&mut self, sql: &str) -> Vec<Msg> {
        self.run(&[pbe(sql, &[]), sync()].concat())
    }
    /// Sends a COPY ... FROM STDIN start (simple or extended) and waits for CopyInResponse.
    pub fn start_copy(&mut self, start: &[u8]) -> String {
        self.send(start);
        sum(&self.until(b'G'))
    }
    /// Expects a FATAL ErrorResponse and then the proxy closing the socket; returns the
    /// SQLSTATE.
    pub fn expect_fatal(&mut self) -> String {
        let (tag, body) = self.recv().expect("expected an ErrorResponse, got EOF");
        assert_eq!((tag, field(&body, b'S').as_deref()), (b'E', Some("FATAL")));
        let ten = Some(Duration::from_secs(10));
        self.s.set_read_timeout(ten).unwrap();
        match self.s.read(&mut [0u8; 64]) {
            Ok(0) => {}
            Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("connection not closed after FATAL: {other:?}"),
        }
        field(&body, b'C').unwrap()
    }
}

/// Sends a CancelRequest to the proxy and waits until the proxy closes that connection.
pub fn send_cancel(port: u16, pid: u32, secret: u32) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let words = [16, 80_877_102, pid, secret];
    s.write_all(&words.map(u32::to_be_bytes).concat()).unwrap();
    let _ = s.read_to_end(&mut Vec::new());
}

/// Sends `batch` `times` times from another thread while this one reads: a client that
/// pipelines faster than PostgreSQL answers and reads its replies as they come (libpq's
/// pipeline mode, JDBC batches). Returns how many ReadyForQuery came and the first error.
pub fn pipeline(r: &mut Raw, batch: Vec<u8>, times: usize, per_batch: usize) -> (usize, String) {
    let mut writer = r.s.try_clone().unwrap();
    let sender = std::thread::spawn(move || (0..times).all(|_| writer.write_all(&batch).is_ok()));
    let (mut ready, mut error) = (0, String::new());
    while ready < times * per_batch {
        match r.recv() {
            Some((b'Z', _)) => ready += 1,
            Some((b'E', b)) if error.is_empty() => error = field(&b, b'C').unwrap_or_default(),
            Some(_) => {}
            None => break,
        }
    }
    assert!(
        sender.join().unwrap(),
        "the proxy stopped reading the client"
    );
    (ready, error)
}
