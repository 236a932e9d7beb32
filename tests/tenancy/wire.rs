//! A raw protocol client for md5 users, and CancelRequests with chosen keys.

use super::*;

pub struct Wire {
    pub s: TcpStream,
    pub pid: u32,
    pub secret: u32,
}

pub fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

pub fn cstr(s: &str) -> Vec<u8> {
    [s.as_bytes(), &[0]].concat()
}

/// `SQLSTATE message` of an ErrorResponse body.
pub fn error_fields(body: &[u8]) -> String {
    let field = |t: u8| {
        let f = body.split(|&b| b == 0).find(|f| f.first() == Some(&t));
        let text = |f: &[u8]| String::from_utf8_lossy(&f[1..]).into_owned();
        f.map_or(String::new(), text)
    };
    format!("{} {}", field(b'C'), field(b'M'))
}

impl Wire {
    pub fn login(port: u16, user: &str) -> Wire {
        Wire::login_with(port, user, &[]).unwrap_or_else(|e| panic!("{user} login: {e}"))
    }

    /// A login with `extra` startup parameters: the session, or the login's error.
    pub fn login_with(port: u16, user: &str, extra: &[(&str, &str)]) -> Result<Wire, String> {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let (pid, secret) = (0, 0);
        let mut w = Wire { s, pid, secret };
        let mut parts = ["user", user, "database", "launch"].map(cstr).concat();
        for (k, v) in extra {
            parts.extend([cstr(k), cstr(v)].concat());
        }
        parts.push(0);
        let body = [&196608u32.to_be_bytes()[..], &parts].concat();
        let len = (body.len() as u32 + 4).to_be_bytes();
        w.s.write_all(&[&len[..], &body].concat()).unwrap();
        loop {
            match w.read() {
                (b'R', b) if be32(&b) == 5 => {
                    let stored = md5_stored_hash(user, &pw(user));
                    let answer = md5_client_response(&stored, b[4..8].try_into().unwrap());
                    w.send(b'p', &cstr(&answer));
                }
                (b'K', b) => (w.pid, w.secret) = (be32(&b), be32(&b[4..])),
                (b'Z', _) => return Ok(w),
                (b'E', b) => return Err(error_fields(&b)),
                _ => {}
            }
        }
    }

    pub fn send(&mut self, tag: u8, body: &[u8]) {
        let len = (body.len() as u32 + 4).to_be_bytes();
        let msg = [&[tag][..], &len, body].concat();
        self.s.write_all(&msg).unwrap();
    }

    pub fn read(&mut self) -> (u8, Vec<u8>) {
        let mut h = [0u8; 5];
        self.s.read_exact(&mut h).expect("read a message");
        let mut b = vec![0u8; be32(&h[1..]) as usize - 4];
        self.s.read_exact(&mut b).unwrap();
        (h[0], b)
    }

    /// Reads up to ReadyForQuery: the first column of every row, or the first error.
    pub fn results(&mut self) -> Result<Vec<String>, String> {
        let (mut rows, mut err) = (Vec::new(), None);
        loop {
            match self.read() {
                (b'D', b) => {
                    let n = be32(&b[2..]) as usize;
                    rows.push(String::from_utf8_lossy(&b[6..6 + n]).into_owned());
                }
                (b'E', b) => err = err.or(Some(error_fields(&b))),
                (b'Z', _) => return err.map_or(Ok(rows), Err),
                _ => {}
            }
        }
    }

    pub fn query(&mut self, sql: &str) -> Result<Vec<String>, String> {
        self.send(b'Q', &cstr(sql));
        self.results()
    }
}

/// A CancelRequest for (pid, secret), sent on its own connection.
pub fn cancel(port: u16, pid: u32, secret: u32) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let msg = [16, 80877102, pid, secret].map(u32::to_be_bytes);
    s.write_all(&msg.concat()).unwrap();
    let _ = s.read_to_end(&mut Vec::new());
}
