//! Identity features end to end: client-facing TLS (sslmodes, verification, certificate
//! reload, hostile handshakes), TLS from the proxy to PostgreSQL, client certificates that
//! name the tenant (`auth: cert`), JWTs as passwords (`jwt:`) and `--check-config` of
//! these settings.
//!
//! Certificates are made at test time with the `openssl` CLI in a per-test directory.
//! Successful logins use psql (libpq, a real TLS client); refusals whose SQLSTATE matters
//! use a small blocking wire client over rustls (the crate's own TLS library), since psql
//! does not print a connection failure's SQLSTATE.
//!
//! This file holds what the tests share: the fixture identities, certificates, the proxy
//! configuration, psql and the wire client. The tests are grouped in modules under
//! tests/identity_cases/, compiled into this one test binary:
//! - `tls` (tls.rs): client-facing TLS and TLS from the proxy to PostgreSQL;
//! - `tenant_logins` (tenant_logins.rs): client certificates and JWTs naming the tenant;
//! - `check_config` (check_config.rs): `--check-config` of these settings.

#[path = "identity_cases/check_config.rs"]
mod check_config;
use crate::common;
#[path = "identity_cases/tenant_logins.rs"]
mod tenant_logins;
#[path = "identity_cases/tls.rs"]
mod tls;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{proxy_config, psql_bin, test_run_dir, PgServer, ProxyProcess};
use launch_proxy::auth::md5::{md5_client_response, md5_stored_hash};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// `tenant.signing_key` and the key provisioned in the database.
const KEY: &str = "5f3c9a0e7b1d24c6a8e0f2b4d6c8e1a3957b3d1f0c2e4a6b8d0f1e3c5a7b9d2e";
const TENANT_A: &str = "01JBXTENANTA0000000000000A";
const TENANT_B: &str = "01JBXTENANTB0000000000000B";
const SUSPENDED: &str = "01JBXTENANTS0000000000000S";
const ACTOR: &str = "01JBXACT0R00000000000000C1";
const JWT_SECRET: &str = "identity-test-hs256-secret-0123456789";
const SPIFFE: &str = "spiffe://launch/tenant/";
/// A write user that logs in with md5, which the wire client below can answer.
const MD5_USER: &str =
    "  md5user: { password: \"md5pw\", auth: md5, role: write, server_user: app }\n";
const CERT_USER: &str = "  certuser: { auth: cert, role: write, server_user: app }\n";
const NO_HANG: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------ certificates

/// A directory for one test's keys and certificates, readable by the PostgreSQL OS user.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = test_run_dir().join(format!("identity-{n}"));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create cert dir");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Dir(path)
    }

    fn p(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// `p(name)` as a YAML/conninfo value.
    fn s(&self, name: &str) -> String {
        self.p(name).display().to_string()
    }

    /// Runs openssl in the directory; `args` are split at spaces.
    fn openssl(&self, args: &str) {
        let out = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(&self.0)
            .output()
            .expect("run openssl");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "openssl {args:?}: {err}");
    }

    /// A self-signed CA: `<name>.pem`, `<name>.key`.
    fn ca(&self, name: &str) {
        self.openssl(&format!(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -keyout {name}.key -out {name}.pem -days 3 -subj /CN={name} \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
        ));
    }

    /// `<name>.pem`/`<name>.key` signed by CA `ca`, with subject CN `cn` and the given
    /// subjectAltName; a server certificate unless `client`.
    fn leaf(&self, name: &str, ca: &str, cn: &str, san: &str, client: bool) {
        let eku = if client { "clientAuth" } else { "serverAuth" };
        let mut text = format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage={eku}\n"
        );
        if !san.is_empty() {
            text.push_str(&format!("subjectAltName={san}\n"));
        }
        std::fs::write(self.p(&format!("{name}.ext")), text).unwrap();
        self.openssl(&format!(
            "req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -keyout {name}.key -out {name}.csr -subj /CN={cn}"
        ));
        let serial = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let serial = serial.as_nanos();
        self.openssl(&format!(
            "x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -set_serial 0x{serial:x} \
             -days 3 -out {name}.pem -extfile {name}.ext"
        ));
        // libpq refuses keys that others can read; PostgreSQL wants its key owned by itself.
        let key = self.p(&format!("{name}.key"));
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// libpq conninfo that verifies the proxy against CA `ca`.
    fn verify(&self, ca: &str) -> String {
        let root = self.s(&format!("{ca}.pem"));
        format!("sslmode=verify-full sslrootcert={root}")
    }

    /// A server certificate for localhost and 127.0.0.1.
    fn server(&self, name: &str, ca: &str) {
        self.leaf(name, ca, "localhost", "DNS:localhost,IP:127.0.0.1", false);
    }

    /// Gives `<name>.key` to the OS user that runs PostgreSQL (the owner of the run dir).
    fn give_key_to_postgres(&self, name: &str) {
        let owner = std::fs::metadata(test_run_dir()).unwrap();
        let key = self.p(&format!("{name}.key"));
        std::os::unix::fs::chown(&key, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if !std::env::var("LP_KEEP_TEST_DIRS").is_ok_and(|v| !v.is_empty() && v != "0") {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

// ------------------------------------------------------------------ configuration

/// The shipped config pointed at `pg`, `server.tls` set to `server_tls` (a flow mapping)
/// when not empty, and `extra` top-level YAML appended.
fn config(pg: &PgServer, pool: &str, server_tls: &str, extra: &str) -> String {
    let mut yaml = proxy_config(pg, &format!("min_pool_size: 1\n{pool}"));
    if !server_tls.is_empty() {
        let line = ", database: launch }";
        yaml = yaml.replace(line, &format!(", database: launch, tls: {server_tls} }}"));
    }
    yaml + extra
}

/// `tls:` with the proxy certificate `srv` from `d`, plus indented `more` lines.
fn tls_yaml(d: &Dir, srv: &str, more: &str) -> String {
    format!(
        "tls:\n  cert_file: \"{}\"\n  key_file: \"{}\"\n{more}",
        d.s(&format!("{srv}.pem")),
        d.s(&format!("{srv}.key"))
    )
}

fn tenant_yaml() -> String {
    format!("tenant: {{ signing_key: \"{KEY}\", check_status: true, status_cache_ms: 0 }}\n")
}

fn jwt_yaml(allow_loopback: bool) -> String {
    format!(
        "jwt:\n  issuer: https://idp.test\n  audience: launch-proxy\n  \
         keys: [ {{ alg: HS256, secret: \"{JWT_SECRET}\" }} ]\n  \
         server_users: {{ read: app_ro, write: app }}\n\
         allow_cleartext_on_loopback: {allow_loopback}\n{}",
        tenant_yaml()
    )
}

fn jwt_dir() -> Dir {
    let d = Dir::new();
    d.ca("ca");
    d.server("srv", "ca");
    d
}

// ------------------------------------------------------------------ psql

/// Runs psql against the proxy with `conn` (extra conninfo), the commands in `cmds` and
/// PGPASSWORD `password`; Ok(stdout) or Err(stderr).
fn psql(proxy: &ProxyProcess, conn: &str, password: &str, cmds: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(psql_bin());
    cmd.args(["-XAtw", "-v", "ON_ERROR_STOP=1"]);
    for c in cmds {
        cmd.args(["-c", c]);
    }
    cmd.arg(format!(
        "host=localhost hostaddr=127.0.0.1 port={} dbname=launch connect_timeout=10 {conn}",
        proxy.port
    ));
    for var in ["PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY"] {
        cmd.env_remove(var);
    }
    let out = cmd.env("PGPASSWORD", password).output().expect("run psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn psql_ok(proxy: &ProxyProcess, conn: &str, password: &str, sql: &str) -> String {
    psql(proxy, conn, password, &[sql]).unwrap_or_else(|e| panic!("psql {conn:?} {sql:?}: {e}"))
}

/// Whether libpq reports the session as encrypted (`\conninfo`); panics if it cannot log in.
fn encrypted(proxy: &ProxyProcess, conn: &str) -> bool {
    let out = psql(proxy, conn, "apppw", &["\\conninfo", "SELECT 1"])
        .unwrap_or_else(|e| panic!("psql {conn:?}: {e}"));
    assert!(out.ends_with('1'), "{out}");
    out.contains("SSL connection")
}

/// `SELECT 1` as user `app` with extra conninfo `conn`.
fn app(proxy: &ProxyProcess, conn: &str) -> Result<String, String> {
    psql(proxy, &format!("user=app {conn}"), "apppw", &["SELECT 1"])
}

// ------------------------------------------------------------------ wire client

trait Io: Read + Write {}
impl<T: Read + Write> Io for T {}

/// A blocking frontend that logs in (cleartext or md5 password, or none) and runs simple
/// queries. Errors are `"<SQLSTATE>: <message> | <detail>"`, or `"io: ..."` for I/O and
/// TLS failures.
struct Wire(Box<dyn Io>);

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

fn tls_client(ca: &Path, cert: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match cert {
        Some((pem, key)) => {
            let chain = CertificateDer::pem_file_iter(pem)
                .unwrap()
                .map(Result::unwrap);
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(chain.collect(), key).unwrap()
        }
        None => builder.with_no_client_auth(),
    })
}

fn io_err(e: impl std::fmt::Display) -> String {
    format!("io: {e}")
}

fn startup_packet(user: &str) -> Vec<u8> {
    let mut body = 196_608i32.to_be_bytes().to_vec();
    for s in ["user", user, "database", "launch", ""] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    [&((body.len() + 4) as i32).to_be_bytes()[..], &body].concat()
}

fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
    [&[tag][..], &((body.len() + 4) as i32).to_be_bytes(), body].concat()
}

fn error_text(body: &[u8]) -> String {
    let f: HashMap<u8, String> = body
        .split(|&b| b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| (f[0], String::from_utf8_lossy(&f[1..]).into_owned()))
        .collect();
    let get = |k: u8| f.get(&k).cloned().unwrap_or_default();
    format!("{}: {} | {}", get(b'C'), get(b'M'), get(b'D'))
}

impl Wire {
    fn login(
        port: u16,
        tls: Option<&Arc<rustls::ClientConfig>>,
        user: &str,
        password: &str,
    ) -> Result<Wire, String> {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).map_err(io_err)?;
        tcp.set_read_timeout(Some(NO_HANG)).unwrap();
        let stream: Box<dyn Io> = match tls {
            None => Box::new(tcp),
            Some(cfg) => {
                tcp.write_all(&SSL_REQUEST).map_err(io_err)?;
                let mut answer = [0u8; 1];
                tcp.read_exact(&mut answer).map_err(io_err)?;
                assert_eq!(answer[0], b'S', "proxy refused SSLRequest");
                let name = ServerName::try_from("localhost").unwrap();
                let conn = rustls::ClientConnection::new(cfg.clone(), name).unwrap();
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
        };
        let mut w = Wire(stream);
        w.send(&startup_packet(user))?;
        loop {
            let (tag, body) = w.read_msg()?;
            let code = body
                .get(..4)
                .map(|c| i32::from_be_bytes(c.try_into().unwrap()));
            match (tag, code) {
                (b'R', Some(0)) => {}
                (b'R', Some(3)) => w.send(&tagged(b'p', &[password.as_bytes(), b"\0"].concat()))?,
                (b'R', Some(5)) => {
                    let salt = body[4..8].try_into().unwrap();
                    let resp = md5_client_response(&md5_stored_hash(user, password), salt);
                    w.send(&tagged(b'p', &[resp.as_bytes(), b"\0"].concat()))?;
                }
                (b'R', code) => return Err(format!("unexpected auth request {code:?}")),
                (b'E', _) => return Err(error_text(&body)),
                (b'Z', _) => return Ok(w),
                _ => {}
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.0
            .write_all(bytes)
            .and_then(|_| self.0.flush())
            .map_err(io_err)
    }

    fn read_msg(&mut self) -> Result<(u8, Vec<u8>), String> {
        let mut head = [0u8; 5];
        self.0.read_exact(&mut head).map_err(io_err)?;
        let len = i32::from_be_bytes(head[1..].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        self.0.read_exact(&mut body).map_err(io_err)?;
        Ok((head[0], body))
    }

    /// The first column of every row, or the error.
    fn query(&mut self, sql: &str) -> Result<Vec<String>, String> {
        self.send(&tagged(b'Q', &[sql.as_bytes(), b"\0"].concat()))?;
        let (mut rows, mut err) = (Vec::new(), None);
        loop {
            let (tag, body) = self.read_msg()?;
            match tag {
                b'D' => {
                    let len = i32::from_be_bytes(body[2..6].try_into().unwrap());
                    let v = (len >= 0).then(|| String::from_utf8_lossy(&body[6..6 + len as usize]));
                    rows.push(v.map_or("NULL".into(), |v| v.into_owned()));
                }
                b'E' => err = Some(error_text(&body)),
                b'Z' => return err.map_or(Ok(rows), Err),
                _ => {}
            }
        }
    }
}

fn refused(result: Result<Wire, String>) -> String {
    match result {
        Ok(_) => panic!("login succeeded but must be refused"),
        Err(e) => e,
    }
}

/// Asserts that a wire-client error has SQLSTATE `code` and mentions `needle`.
fn check(err: &str, code: &str, needle: &str) {
    assert!(
        err.starts_with(&format!("{code}: ")) && err.contains(needle),
        "want {code} {needle:?}: {err}"
    );
}
