//! Identity features end to end: client-facing TLS (sslmodes, verification, certificate
//! reload, hostile handshakes), TLS from the proxy to PostgreSQL, client certificates that
//! name the tenant (`auth: cert`), JWTs as passwords (`jwt:`) and `--check-config` of
//! these settings.
//!
//! Certificates are made at test time with the `openssl` CLI in a per-test directory.
//! Successful logins use psql (libpq, a real TLS client); refusals whose SQLSTATE matters
//! use a small blocking wire client over rustls (the crate's own TLS library), since psql
//! does not print a connection failure's SQLSTATE.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{proxy_config, psql_bin, test_run_dir, PgServer, ProxyProcess, USERS_YAML};
use hmac::{KeyInit, Mac};
use launch_proxy::auth::md5::{md5_client_response, md5_stored_hash};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};

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

/// Migrations, the signing key, tenants A and B (two rows each in base_entity) and a
/// suspended tenant.
fn tenant_db() -> PgServer {
    let pg = PgServer::start();
    pg.apply_migrations("launch");
    pg.psql(
        "launch",
        &format!(
            "SELECT launch.set_signing_key('{KEY}');
             INSERT INTO tenants (id, name, domain, status, created_by, updated_by) VALUES
                 ('{TENANT_A}', 'A', 'a.example', 'active', '{ACTOR}', '{ACTOR}'),
                 ('{TENANT_B}', 'B', 'b.example', 'active', '{ACTOR}', '{ACTOR}'),
                 ('{SUSPENDED}', 'S', 's.example', 'suspended', '{ACTOR}', '{ACTOR}');
             INSERT INTO base_entity (tenant_id, created_by, updated_by)
                 SELECT id, '{ACTOR}', '{ACTOR}' FROM tenants, generate_series(1, 2)
                 WHERE status = 'active';"
        ),
    );
    pg
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

/// Polls `done` every 250 ms for up to 20 s.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    done()
}

// ------------------------------------------------------------------ tokens

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims that pass the test's `jwt:` settings.
fn claims(tenant: &str, role: &str) -> Value {
    json!({"iss": "https://idp.test", "aud": "launch-proxy", "sub": "user-1",
           "tenant_id": tenant, "role": role, "iat": now() - 5, "exp": now() + 600})
}

fn hs256(secret: &str, claims: &Value) -> String {
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let signed = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    format!("{signed}.{}", b64(&mac.finalize().into_bytes()))
}

// ================================================================== client TLS

fn tls_proxy(d: &Dir, users: &str) -> (PgServer, ProxyProcess) {
    d.ca("ca");
    d.server("srv", "ca");
    let pg = PgServer::start();
    let proxy = ProxyProcess::start(&config(&pg, "", "", &tls_yaml(d, "srv", "")), users);
    (pg, proxy)
}

#[test]
fn client_tls_serves_every_sslmode_and_verifies_against_its_ca() {
    let d = Dir::new();
    let (_pg, proxy) = tls_proxy(&d, USERS_YAML);
    d.ca("other");
    let verify = format!("user=app {}", d.verify("ca"));
    assert!(encrypted(&proxy, "user=app sslmode=require"));
    assert!(encrypted(&proxy, &verify), "verify-full, host=localhost");
    let by_ip = format!("{verify} host=127.0.0.1");
    assert!(encrypted(&proxy, &by_ip), "IP SAN must verify");
    let wrong = format!("user=app {}", d.verify("other"));
    let err = psql(&proxy, &wrong, "apppw", &["SELECT 1"]).expect_err("unknown CA must fail");
    assert!(err.contains("certificate verify failed"), "{err}");
    assert!(!encrypted(&proxy, "user=app sslmode=disable"), "plain");
    // After the failed handshake the proxy still serves TLS.
    assert!(encrypted(&proxy, &verify));
}

#[test]
fn hostile_tls_negotiation_is_refused_and_the_proxy_keeps_serving() {
    let d = Dir::new();
    let (_pg, proxy) = tls_proxy(&d, USERS_YAML);
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        s.set_read_timeout(Some(NO_HANG)).unwrap();
        s
    };
    // Garbage instead of a ClientHello: the connection is closed, not left hanging.
    let mut s = connect();
    s.write_all(&SSL_REQUEST).unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    assert_eq!(b[0], b'S');
    s.write_all(b"GET / HTTP/1.1\r\n\r\n\0\0\0\0").unwrap();
    let started = Instant::now();
    let r = s.read_to_end(&mut Vec::new());
    let open = started.elapsed() >= NO_HANG - Duration::from_secs(1);
    assert!(!open, "proxy kept a failed handshake open: {r:?}");

    // Plaintext pipelined behind SSLRequest would be read as if it came over TLS
    // (CVE-2021-23222): it must be refused instead of answered with 'S'.
    let mut s = connect();
    let pipelined = [&SSL_REQUEST[..], &startup_packet("app")].concat();
    s.write_all(&pipelined).unwrap();
    let (tag, body) = Wire(Box::new(s)).read_msg().expect("an ErrorResponse");
    assert_eq!(tag, b'E', "expected a refusal, got {:?}", tag as char);
    let err = error_text(&body);
    check(&err, "08P01", "unencrypted data after SSL request");

    assert!(encrypted(&proxy, &format!("user=app {}", d.verify("ca"))));
}

#[test]
fn changed_certificate_files_are_reloaded_without_dropping_sessions() {
    let d = Dir::new();
    let (_pg, proxy) = tls_proxy(&d, &format!("{USERS_YAML}{MD5_USER}"));
    d.ca("ca2");
    d.server("next", "ca2");
    let works = |ca: &str| app(&proxy, &d.verify(ca));
    let replace = |name: &str, contents: &[u8]| {
        std::fs::write(d.p("tmp"), contents).unwrap();
        std::fs::rename(d.p("tmp"), d.p(name)).unwrap();
    };
    let tls = tls_client(&d.p("ca.pem"), None);
    let mut old = Wire::login(proxy.port, Some(&tls), "md5user", "md5pw").expect("TLS login");
    assert_eq!(old.query("SELECT 41 + 1").unwrap(), ["42"]);

    // A broken certificate file is logged and the loaded certificate kept.
    replace("srv.pem", b"not a certificate\n");
    let broken = "TLS files changed but cannot be loaded";
    let logged = eventually(|| proxy.log().contains(broken));
    assert!(logged, "broken certificate not noticed:\n{}", proxy.log());
    works("ca").expect("the previous certificate is still served");

    // The pair from another CA, each file replaced atomically.
    replace("srv.key", &std::fs::read(d.p("next.key")).unwrap());
    replace("srv.pem", &std::fs::read(d.p("next.pem")).unwrap());
    let reloaded = eventually(|| works("ca2").is_ok());
    assert!(reloaded, "new certificate not served: {:?}", works("ca2"));
    let err = works("ca").expect_err("the old CA no longer verifies");
    assert!(err.contains("certificate verify failed"), "{err}");
    assert_eq!(old.query("SELECT 43 - 1").unwrap(), ["42"], "old session");
    assert!(proxy.log().contains("TLS certificate reloaded"));
}

// ================================================================== TLS to PostgreSQL

fn ssl_server(d: &Dir) -> PgServer {
    d.ca("pgca");
    d.ca("other");
    d.server("pg", "pgca");
    d.give_key_to_postgres("pg");
    let (cert, key) = (d.s("pg.pem"), d.s("pg.key"));
    let conf = format!("ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'");
    PgServer::start_with(&conf)
}

const SSL_IN_USE: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

#[test]
fn proxy_encrypts_its_postgres_connections_with_require_and_verify_full() {
    let d = Dir::new();
    let pg = ssl_server(&d);
    let ca = d.s("pgca.pem");
    let full = format!("{{ mode: verify-full, ca_file: \"{ca}\" }}");
    let named = format!("{{ mode: verify-full, ca_file: \"{ca}\", server_name: localhost }}");
    let cases = [
        (full.as_str(), "t"),
        (&named, "t"),
        ("{ mode: require }", "t"),
        ("", "f"),
    ];
    for (tls, want) in cases {
        let proxy = ProxyProcess::start(&config(&pg, "", tls, ""), USERS_YAML);
        let got = psql_ok(&proxy, "user=app sslmode=disable", "apppw", SSL_IN_USE);
        assert_eq!(got, want, "server.tls {tls:?}");
    }
}

#[test]
fn unverifiable_or_plain_postgres_gives_clients_57p03_naming_tls() {
    let d = Dir::new();
    let pg = ssl_server(&d);
    let plain = PgServer::start();
    let pool = "min_pool_size: 0\nacquire_timeout_ms: 1500\nreserve_pool_timeout_ms: 500";
    let users = format!("{USERS_YAML}{MD5_USER}");
    let (ca, other) = (d.s("pgca.pem"), d.s("other.pem"));
    let wrong_ca = format!("{{ mode: verify-full, ca_file: \"{other}\" }}");
    let wrong_name = format!("{{ mode: verify-full, ca_file: \"{ca}\", server_name: db.example }}");
    let cases = [
        (&pg, wrong_ca.as_str()),
        (&pg, &wrong_name),
        (&plain, "{ mode: require }"),
    ];
    for (server, tls) in cases {
        let proxy = ProxyProcess::start(&config(server, pool, tls, ""), &users);
        let err = refused(Wire::login(proxy.port, None, "md5user", "md5pw"));
        check(&err, "57P03", "TLS");
    }
}

// ================================================================== client certificates

/// CAs `ca` and `rogue`, the proxy certificate and client certificates: `a`, `b`, `s`
/// (SAN URI of tenant A, B, the suspended one), `bad` (URI not a ULID), `cn` (CN
/// `tenant-<A>`, no SAN), `rogue_a` (tenant A signed by the rogue CA).
fn cert_fixtures() -> Dir {
    let d = Dir::new();
    d.ca("ca");
    d.ca("rogue");
    d.server("srv", "ca");
    let uri = |t: &str| format!("URI:{SPIFFE}{t}");
    d.leaf("a", "ca", "client-a", &uri(TENANT_A), true);
    d.leaf("b", "ca", "client-b", &uri(TENANT_B), true);
    d.leaf("s", "ca", "client-s", &uri(SUSPENDED), true);
    d.leaf("bad", "ca", "client-bad", &uri("not-a-ulid"), true);
    d.leaf("cn", "ca", &format!("tenant-{TENANT_A}"), "", true);
    d.leaf("rogue_a", "rogue", "client-a", &uri(TENANT_A), true);
    d
}

const SAN_RULE: &str = "{ from: san_uri, prefix: \"spiffe://launch/tenant/\" }";

fn cert_proxy(pg: &PgServer, d: &Dir, rule: &str) -> ProxyProcess {
    let ca = d.s("ca.pem");
    let more = format!("  client_ca_file: \"{ca}\"\n  client_cert_tenant: {rule}\n");
    let extra = format!("{}{}", tls_yaml(d, "srv", &more), tenant_yaml());
    let pinned =
        format!("  pinned: {{ auth: cert, role: write, server_user: app, tenant: {TENANT_A} }}");
    let users = format!("{USERS_YAML}{CERT_USER}{pinned}\n");
    ProxyProcess::start(&config(pg, "", "", &extra), &users)
}

/// psql conninfo for `user` with client certificate `name`.
fn with_cert(d: &Dir, name: &str, user: &str) -> String {
    let (cert, key) = (d.s(&format!("{name}.pem")), d.s(&format!("{name}.key")));
    format!("user={user} {} sslcert={cert} sslkey={key}", d.verify("ca"))
}

/// `app.tenant_id|launch.current_tenant()|visible base_entity rows|their tenants`.
const WHO: &str = "SELECT concat_ws('|', current_setting('app.tenant_id'), \
     coalesce(launch.current_tenant()::text, 'NULL'), (SELECT count(*) FROM base_entity), \
     (SELECT string_agg(DISTINCT tenant_id::text, ',') FROM base_entity))";

fn who(tenant: &str) -> String {
    format!("{tenant}|{tenant}|2|{tenant}")
}

#[test]
fn client_certificate_names_the_tenant_by_san_uri_or_cn() {
    let (d, pg) = (cert_fixtures(), tenant_db());
    let proxy = cert_proxy(&pg, &d, SAN_RULE);
    for (cert, tenant) in [("a", TENANT_A), ("b", TENANT_B)] {
        let got = psql_ok(&proxy, &with_cert(&d, cert, "certuser"), "", WHO);
        assert_eq!(got, who(tenant), "cert {cert} sees only its tenant's rows");
    }
    assert_eq!(pg.psql("launch", "SELECT count(*) FROM base_entity"), "4");
    let got = psql_ok(&proxy, &with_cert(&d, "a", "pinned"), "", WHO);
    assert_eq!(got, who(TENANT_A), "pinned user");

    let by_cn = cert_proxy(&pg, &d, "{ from: cn, prefix: \"tenant-\" }");
    let got = psql_ok(&by_cn, &with_cert(&d, "cn", "certuser"), "", WHO);
    assert_eq!(got, who(TENANT_A), "CN tenant-<ULID>");
    let tls = tls_client(&d.p("ca.pem"), Some((&d.p("a.pem"), &d.p("a.key"))));
    let err = refused(Wire::login(by_cn.port, Some(&tls), "certuser", ""));
    check(&err, "28000", "names no tenant");
}

#[test]
fn client_certificate_logins_are_refused_without_a_valid_tenant_certificate() {
    let (d, pg) = (cert_fixtures(), tenant_db());
    let proxy = cert_proxy(&pg, &d, SAN_RULE);
    let ca = d.p("ca.pem");
    let client = |name: &str| {
        let (pem, key) = (d.p(&format!("{name}.pem")), d.p(&format!("{name}.key")));
        Some(tls_client(&ca, Some((&pem, &key))))
    };
    #[rustfmt::skip]
    let cases = [
        ("TLS, no certificate", Some(tls_client(&ca, None)), "certuser", "authentication failed"),
        ("no TLS", None, "certuser", "sslcert"),
        ("URI not a ULID", client("bad"), "certuser", "not a ULID"),
        ("CN under a san_uri rule", client("cn"), "certuser", "names no tenant"),
        ("pinned to another tenant", client("b"), "pinned", "another tenant"),
        ("suspended tenant", client("s"), "certuser", "not active"),
    ];
    for (what, tls, user, needle) in cases {
        let err = refused(Wire::login(proxy.port, tls.as_ref(), user, ""));
        let ok = err.starts_with("28000: ") && err.contains(needle);
        assert!(ok, "{what}: {err}");
    }
    // A certificate from another CA fails the TLS handshake itself.
    let rogue = client("rogue_a");
    let err = refused(Wire::login(proxy.port, rogue.as_ref(), "certuser", ""));
    assert!(err.starts_with("io: "), "rogue CA: {err}");
    let conn = with_cert(&d, "rogue_a", "certuser");
    let err = psql(&proxy, &conn, "", &["SELECT 1"]).expect_err("rogue CA");
    assert!(err.contains("SSL") || err.contains("alert"), "{err}");
    // Password users are unaffected, and the proxy still serves certificate logins.
    assert_eq!(app(&proxy, "sslmode=require").unwrap(), "1");
    let got = psql_ok(&proxy, &with_cert(&d, "a", "certuser"), "", WHO);
    assert_eq!(got, who(TENANT_A));
}

// ================================================================== JWT

fn jwt_dir() -> Dir {
    let d = Dir::new();
    d.ca("ca");
    d.server("srv", "ca");
    d
}

fn jwt_proxy(pg: &PgServer, d: &Dir, allow_loopback: bool) -> ProxyProcess {
    let extra = format!("{}{}", tls_yaml(d, "srv", ""), jwt_yaml(allow_loopback));
    ProxyProcess::start(&config(pg, "", "", &extra), USERS_YAML)
}

#[test]
fn jwt_over_tls_logs_in_with_the_claimed_tenant_and_role() {
    let (d, pg) = (jwt_dir(), tenant_db());
    let proxy = jwt_proxy(&pg, &d, false);
    let conn = format!("user=alice {}", d.verify("ca"));
    let insert = format!(
        "INSERT INTO base_entity (created_by, updated_by) VALUES ('{ACTOR}', '{ACTOR}') \
         RETURNING tenant_id"
    );
    let read = hs256(JWT_SECRET, &claims(TENANT_A, "read"));
    assert_eq!(psql_ok(&proxy, &conn, &read, WHO), who(TENANT_A));
    let user = psql_ok(&proxy, &conn, &read, "SELECT current_user");
    assert_eq!(user, "app_ro");
    let err = psql(&proxy, &conn, &read, &[&insert]).expect_err("read role must not write");
    assert!(err.contains("permission denied"), "{err}");

    let write = hs256(JWT_SECRET, &claims(TENANT_B, "write"));
    assert_eq!(psql_ok(&proxy, &conn, &write, "SELECT current_user"), "app");
    let inserted = psql_ok(&proxy, &conn, &write, &insert);
    assert_eq!(inserted, format!("{TENANT_B}\nINSERT 0 1"));
    let rows = format!("SELECT count(*) FROM base_entity WHERE tenant_id = '{TENANT_B}'");
    assert_eq!(pg.psql("launch", &rows), "3");
}

#[test]
fn jwt_refusals_name_the_reason() {
    let (d, pg) = (jwt_dir(), tenant_db());
    let proxy = jwt_proxy(&pg, &d, false);
    let tls = tls_client(&d.p("ca.pem"), None);
    let login = |token: &str| Wire::login(proxy.port, Some(&tls), "alice", token);
    let bad = |name: &str, v: Value| {
        let mut c = claims(TENANT_A, "write");
        c[name] = v;
        hs256(JWT_SECRET, &c)
    };
    let other_key = hs256(&JWT_SECRET.replace('i', "j"), &claims(TENANT_A, "read"));
    #[rustfmt::skip]
    let cases = [
        ("expired", bad("exp", json!(now() - 3600)), "28P01", "JWT has expired"),
        ("bad signature", other_key, "28P01", "signature does not verify"),
        ("tenant not a ULID", bad("tenant_id", json!("acme")), "28P01", "not a ULID"),
        ("wrong audience", bad("aud", json!("billing")), "28P01", "audience"),
        ("unknown role", bad("role", json!("admin")), "28P01", "\"role\""),
        ("not a token", "apppw".to_owned(), "28P01", "malformed JWT"),
        ("suspended tenant", hs256(JWT_SECRET, &claims(SUSPENDED, "read")), "28000", "not active"),
    ];
    for (what, token, code, needle) in cases {
        let err = refused(login(&token));
        check(&err, code, needle);
        let detail = code == "28000" || err.contains("token rejected");
        assert!(detail, "{what}: the detail must name the token: {err}");
    }
    // psql shows the reason too, and good tokens still work.
    let conn = format!("user=alice {}", d.verify("ca"));
    let expired = bad("exp", json!(now() - 3600));
    let err = psql(&proxy, &conn, &expired, &["SELECT 1"]).expect_err("expired");
    assert!(err.contains("token rejected: JWT has expired"), "{err}");
    let mut w = login(&hs256(JWT_SECRET, &claims(TENANT_A, "write"))).expect("good token");
    let tenant = w.query("SELECT current_setting('app.tenant_id')").unwrap();
    assert_eq!(tenant, [TENANT_A]);
}

#[test]
fn jwt_in_cleartext_needs_tls_unless_loopback_is_allowed() {
    let (d, pg) = (jwt_dir(), tenant_db());
    let token = hs256(JWT_SECRET, &claims(TENANT_A, "write"));
    let strict = jwt_proxy(&pg, &d, false);
    let err = refused(Wire::login(strict.port, None, "alice", &token));
    check(&err, "28000", "\"alice\" must log in with a token over TLS");
    let err = psql(&strict, "user=alice sslmode=disable", &token, &["SELECT 1"]);
    let err = err.expect_err("plain token login");
    assert!(err.contains("must log in with a token over TLS"), "{err}");

    let lenient = jwt_proxy(&pg, &d, true);
    let mut w = Wire::login(lenient.port, None, "alice", &token).expect("plain on loopback");
    let tenant = w.query("SELECT current_setting('app.tenant_id')").unwrap();
    assert_eq!(tenant, [TENANT_A]);
    let sql = "SELECT launch.current_tenant()";
    let got = psql_ok(&lenient, "user=alice sslmode=disable", &token, sql);
    assert_eq!(got, TENANT_A);
}

// ================================================================== --check-config

/// Runs `--check-config` on `config` (with `users` beside it): (ok, stdout + stderr).
fn check_config(d: &Dir, config: &str, users: &str) -> (bool, String) {
    std::fs::write(d.p("launch-proxy.yaml"), config).unwrap();
    std::fs::write(d.p("users.yaml"), users).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_launch-proxy"))
        .arg("--check-config")
        .arg(d.p("launch-proxy.yaml"))
        .output()
        .expect("run launch-proxy --check-config");
    let text = [out.stdout, out.stderr].concat();
    (
        out.status.success(),
        String::from_utf8_lossy(&text).into_owned(),
    )
}

const BASE: &str = "listen: \"127.0.0.1:6432\"\nmetrics_listen: \"\"\n\
     server: { host: 127.0.0.1, port: 5432, database: launch }\nusers_file: users.yaml\n";

fn assert_rejected(d: &Dir, config: &str, users: &str, needles: &[&str]) {
    let (ok, text) = check_config(d, config, users);
    assert!(!ok, "accepted:\n{config}\n{text}");
    for n in needles {
        assert!(text.contains(n), "want {n:?} in:\n{text}\nfor:\n{config}");
    }
}

/// `tls:` with a client CA, for the --check-config tests.
fn check_dir() -> (Dir, String) {
    let d = jwt_dir();
    let ca = format!("  client_ca_file: \"{}\"\n", d.s("ca.pem"));
    let tls = tls_yaml(&d, "srv", &ca);
    (d, tls)
}

#[test]
fn check_config_rejects_missing_tls_files_unknown_jwt_users_and_unsigned_tenants() {
    let (d, tls) = check_dir();
    let good = format!("{BASE}{tls}{}", jwt_yaml(false));
    let users = format!("{USERS_YAML}{CERT_USER}");
    let (ok, text) = check_config(&d, &good, &users);
    assert!(ok && text.contains("configuration OK"), "{text}");

    for file in ["srv.pem", "srv.key", "ca.pem"] {
        let missing = d.s(&format!("missing-{file}"));
        let config = good.replace(&d.s(file), &missing);
        assert_rejected(&d, &config, &users, &["tls", &missing, "No such file"]);
    }
    let server_tls =
        |tls: &str| good.replace(" }\nusers_file", &format!(", tls: {tls} }}\nusers_file"));
    let no_ca = server_tls("{ mode: verify-full }");
    assert_rejected(&d, &no_ca, &users, &["server.tls", "needs ca_file"]);
    let missing = d.s("missing.pem");
    let gone_ca = server_tls(&format!("{{ mode: verify-full, ca_file: \"{missing}\" }}"));
    assert_rejected(&d, &gone_ca, &users, &["server.tls", &missing]);

    let ghost = good.replace("read: app_ro", "read: ghost");
    let msg = "jwt.server_users.read: \"ghost\" is not in the users file";
    assert_rejected(&d, &ghost, &users, &[msg]);
    let wrong_role = good.replace("write: app }", "write: app_ro }");
    let msg = ["jwt.server_users.write", "must be a write user"];
    assert_rejected(&d, &wrong_role, &users, &msg);
    let unsigned_jwt = good.replace(&tenant_yaml(), "");
    assert_rejected(&d, &unsigned_jwt, &users, &["jwt needs tenant.signing_key"]);

    let t1 = format!("  t1: {{ password: pw, role: write, server_user: app, tenant: {TENANT_A} }}");
    let tenant_user = format!("{USERS_YAML}{t1}\n");
    let plain = format!("{BASE}{tls}");
    let (ok, text) = check_config(&d, &format!("{plain}{}", tenant_yaml()), &tenant_user);
    assert!(ok, "a tenant user with a signing key is fine: {text}");
    let msg = "users with a tenant need tenant.signing_key";
    assert_rejected(&d, &plain, &tenant_user, &[msg]);
    let short = format!("{plain}tenant: {{ signing_key: \"abcd\" }}\n");
    assert_rejected(&d, &short, &tenant_user, &["tenant.signing_key is 2 bytes"]);
}

/// `auth: cert` users always run as a tenant (named by their certificate): --check-config
/// refuses them without `tenant.signing_key` (every certificate login would run unsigned
/// and see no rows) and without `tls.client_ca_file` or `tls:` (every certificate login
/// would be refused).
#[test]
fn check_config_rejects_cert_users_without_signing_key_or_client_ca() {
    let (d, tls) = check_dir();
    let users = format!("{USERS_YAML}{CERT_USER}");
    let (ok, text) = check_config(&d, &format!("{BASE}{tls}{}", tenant_yaml()), &users);
    assert!(ok, "{text}");
    let no_ca = tls_yaml(&d, "srv", "");
    let tenant = tenant_yaml();
    let cases = [
        ("no tenant.signing_key", format!("{BASE}{tls}")),
        ("no tls.client_ca_file", format!("{BASE}{no_ca}{tenant}")),
        ("no tls", format!("{BASE}{tenant}")),
    ];
    let accepted: Vec<&str> = cases
        .iter()
        .filter(|(_, config)| check_config(&d, config, &users).0)
        .map(|(what, _)| *what)
        .collect();
    let what = "--check-config accepts an auth: cert user with";
    assert!(accepted.is_empty(), "{what} {accepted:?}");
}
