//! A minimal blocking wire-protocol client for the login tests: startup packets, the
//! SCRAM-SHA-256 and md5 exchanges (with the crate's own `ScramClient`), ErrorResponse
//! fields and a simple query.

use super::NO_HANG;
use launch_proxy::auth::md5::{md5_client_response, md5_stored_hash};
use launch_proxy::auth::scram::{ScramClient, ScramCredentials};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

pub(super) const V3_0: i32 = 196_608;

pub(super) fn startup_packet(version: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(&[k.as_bytes(), b"\0", v.as_bytes(), b"\0"].concat());
    }
    body.push(0);
    [&((body.len() + 4) as i32).to_be_bytes()[..], &body].concat()
}

/// StartupMessage for `user` in database `launch`, plus `extra` parameters.
pub(super) fn startup(user: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut params = vec![("user", user), ("database", "launch")];
    params.extend_from_slice(extra);
    startup_packet(V3_0, &params)
}

pub(super) fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
    [&[tag][..], &((body.len() + 4) as i32).to_be_bytes(), body].concat()
}

/// SASLInitialResponse with `mechanism` and client-first `data`.
pub(super) fn sasl_initial(mechanism: &str, data: &[u8]) -> Vec<u8> {
    let len = (data.len() as i32).to_be_bytes();
    tagged(b'p', &[mechanism.as_bytes(), b"\0", &len, data].concat())
}

/// ErrorResponse fields by type byte ('S', 'C', 'M', ...).
pub(super) fn fields(body: &[u8]) -> HashMap<char, String> {
    body.split(|&b| b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| (f[0] as char, String::from_utf8_lossy(&f[1..]).into_owned()))
        .collect()
}

pub(super) struct Raw(pub(super) TcpStream);

impl Raw {
    pub(super) fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to proxy");
        s.set_read_timeout(Some(NO_HANG)).unwrap();
        Raw(s)
    }

    pub(super) fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).expect("send to proxy");
    }

    pub(super) fn read_byte(&mut self) -> u8 {
        let mut b = [0u8; 1];
        self.0.read_exact(&mut b).expect("read one byte");
        b[0]
    }

    pub(super) fn read_msg(&mut self) -> (u8, Vec<u8>) {
        let mut head = [0u8; 5];
        if let Err(e) = self.0.read_exact(&mut head) {
            // The ends name the connection in the proxy's and the kernel's views.
            let ends = (self.0.local_addr(), self.0.peer_addr());
            panic!("read message header ({ends:?}): {e:?}");
        }
        let len = i32::from_be_bytes(head[1..].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        self.0.read_exact(&mut body).expect("read message body");
        (head[0], body)
    }

    /// Reads an authentication request; returns its code and data.
    pub(super) fn read_auth(&mut self) -> (i32, Vec<u8>) {
        let (tag, body) = self.read_msg();
        assert_eq!(tag, b'R', "expected Authentication, got {:?}", tag as char);
        (
            i32::from_be_bytes(body[..4].try_into().unwrap()),
            body[4..].to_vec(),
        )
    }

    /// The next message must be a FATAL ErrorResponse with `code`, after which the proxy
    /// closes the connection (EOF or reset), rather than leaving it hanging.
    pub(super) fn expect_fatal(&mut self, code: &str) -> HashMap<char, String> {
        let (tag, body) = self.read_msg();
        let f = fields(&body);
        assert_eq!(tag, b'E', "expected ErrorResponse, got {:?}", tag as char);
        assert_eq!(
            (f[&'S'].as_str(), f[&'C'].as_str()),
            ("FATAL", code),
            "{f:?}"
        );
        let mut buf = [0u8; 64];
        match self.0.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("expected the proxy to close after {f:?}, got {other:?}"),
        }
        f
    }
}

/// What a successful login showed the client.
#[derive(Debug, Default)]
pub(super) struct Login {
    pub(super) negotiate: Option<(i32, Vec<String>)>,
    pub(super) auth_codes: Vec<i32>,
    pub(super) params: HashMap<String, String>,
}

/// After a StartupMessage was sent: answers whatever the proxy asks (SCRAM-SHA-256 or
/// md5) up to ReadyForQuery. Err holds the ErrorResponse fields.
pub(super) fn login(
    raw: &mut Raw,
    user: &str,
    password: &str,
) -> Result<Login, HashMap<char, String>> {
    let mut out = Login::default();
    let mut scram = ScramClient::new(ScramCredentials::Password(password.to_owned()));
    loop {
        let (tag, body) = raw.read_msg();
        match tag {
            b'v' => {
                let minor = i32::from_be_bytes(body[..4].try_into().unwrap());
                let opts = body[8..].split(|&b| b == 0).filter(|s| !s.is_empty());
                let opts = opts.map(|s| String::from_utf8_lossy(s).into_owned());
                out.negotiate = Some((minor, opts.collect()));
            }
            b'R' => {
                let code = i32::from_be_bytes(body[..4].try_into().unwrap());
                out.auth_codes.push(code);
                let data = &body[4..];
                match code {
                    0 => {}
                    5 => {
                        let salt = data.try_into().expect("4-byte md5 salt");
                        let resp = md5_client_response(&md5_stored_hash(user, password), salt);
                        raw.send(&tagged(b'p', &[resp.as_bytes(), b"\0"].concat()));
                    }
                    10 => {
                        let mechs: Vec<&[u8]> = data.split(|&b| b == 0).collect();
                        assert!(mechs.contains(&&b"SCRAM-SHA-256"[..]), "{data:?}");
                        raw.send(&sasl_initial("SCRAM-SHA-256", &scram.client_first()));
                    }
                    11 => {
                        let fin = scram.handle_server_first(data).expect("server-first");
                        raw.send(&tagged(b'p', &fin));
                    }
                    12 => scram.handle_server_final(data).expect("server signature"),
                    c => panic!("unexpected authentication request {c}"),
                }
            }
            b'S' => {
                let mut kv = body.split(|&b| b == 0).map(String::from_utf8_lossy);
                let (k, v) = (kv.next().unwrap(), kv.next().unwrap());
                out.params.insert(k.into_owned(), v.into_owned());
            }
            b'K' => {}
            b'Z' => return Ok(out),
            b'E' => return Err(fields(&body)),
            t => panic!("unexpected message {:?} during login", t as char),
        }
    }
}

/// Simple query; returns the first column of every row.
pub(super) fn query(raw: &mut Raw, sql: &str) -> Vec<String> {
    raw.send(&tagged(b'Q', &[sql.as_bytes(), b"\0"].concat()));
    let mut rows = Vec::new();
    loop {
        match raw.read_msg() {
            (b'D', body) => {
                let len = i32::from_be_bytes(body[2..6].try_into().unwrap()) as usize;
                rows.push(String::from_utf8_lossy(&body[6..6 + len]).into_owned());
            }
            (b'E', body) => panic!("query {sql:?} failed: {:?}", fields(&body)),
            (b'Z', _) => return rows,
            _ => {}
        }
    }
}

/// Logs in over a fresh raw connection and checks that a query works.
pub(super) fn raw_session_works(port: u16, user: &str, password: &str) {
    let mut raw = Raw::connect(port);
    raw.send(&startup(user, &[]));
    login(&mut raw, user, password).expect("login");
    assert_eq!(query(&mut raw, "SELECT current_user"), [user]);
}
