//! TLS on both sides of the proxy: what clients get (every sslmode, verification against
//! the proxy's CA, hostile handshakes, certificate files reloaded while sessions stay up)
//! and what the proxy does towards PostgreSQL (`server.tls` require and verify-full, and
//! 57P03 for clients when it cannot verify the server or the server has no TLS). These
//! tests use only the root's certificates, psql and wire client, no tenants.

use super::{
    app, check, config, encrypted, error_text, psql, psql_ok, refused, startup_packet, tagged,
    tls_client, tls_yaml, Dir, Wire, MD5_USER, NO_HANG, SSL_REQUEST,
};
use crate::common::{PgServer, ProxyProcess, USERS_YAML};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

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

// ================================================================== flow through TLS

/// A TLS client that reads its large result only after a pause, when every buffer on the
/// way is full: the last records of the reply (its ReadyForQuery among them) must still
/// reach it. The TLS session takes bytes before the socket takes their records, so the
/// proxy flushes it after each write (before, what the session held at the end of a
/// reply stayed there until the client's next message, which never came).
#[test]
fn a_slow_tls_reader_gets_the_whole_of_a_large_result() {
    let d = Dir::new();
    let (_pg, proxy) = tls_proxy(&d, &format!("{USERS_YAML}{MD5_USER}"));
    let cfg = tls_client(&d.p("ca.pem"), None);
    for round in 0..3 {
        let mut w = Wire::login(proxy.port, Some(&cfg), "md5user", "md5pw").unwrap();
        let sql = "SELECT repeat('x', 1000) FROM generate_series(1, 20000)";
        w.send(&tagged(b'Q', &[sql.as_bytes(), b"\0"].concat()))
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let mut rows = 0;
        loop {
            let (tag, body) = w
                .read_msg()
                .unwrap_or_else(|e| panic!("round {round}: after {rows} rows: {e}"));
            match tag {
                b'D' => {
                    rows += 1;
                    // Slower than the proxy writes: its writes keep finding the socket full.
                    if rows % 100 == 0 {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                b'E' => panic!("{}", error_text(&body)),
                b'Z' => break,
                _ => {}
            }
        }
        assert_eq!(rows, 20_000);
    }
}

/// A pipeline larger than the socket buffers with TLS to PostgreSQL: the writes the server
/// cannot take at once go through the TLS session while its replies are read (see
/// tests/protocol.rs, `pipelines_larger_than_the_socket_buffers_complete`).
#[test]
fn a_large_pipeline_completes_over_tls_to_postgres() {
    use crate::common::raw::{pipeline, q, Raw, MD5_USERS};
    let d = Dir::new();
    let pg = ssl_server(&d);
    let proxy = ProxyProcess::start(&config(&pg, "", "{ mode: require }", ""), MD5_USERS);
    let mut r = Raw::login(proxy.port, "app", "apppw");
    assert_eq!(r.col0(SSL_IN_USE), ["t"]);
    let pad = "-".repeat(4000);
    let one = q(&format!(
        "SELECT repeat('x', 2000) FROM generate_series(1, 2) /* {pad} */"
    ));
    assert_eq!(
        pipeline(&mut r, one.repeat(100), 100, 100),
        (10_000, String::new())
    );
    assert_eq!(r.col0("SELECT 'in step'"), ["in step"]);
}
