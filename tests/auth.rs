//! Client login through launch-proxy against a real PostgreSQL: SCRAM-SHA-256 (psql,
//! tokio-postgres and a raw wire client), SCRAM passthrough with a stored verifier,
//! md5, secrets from files and the environment, and every way a login is refused
//! (wrong password, unknown user or database, missing user, replication, bad startup
//! or auth messages, SSL/GSS requests, silent clients), the proxy serving others
//! throughout.
//!
//! The raw client drives SCRAM with the crate's own `ScramClient` (the code the proxy
//! uses to log in to PostgreSQL, so PostgreSQL itself vouches for it); psql and
//! tokio-postgres check the proxy's SCRAM server independently.

use crate::common;

#[path = "auth_cases/wire.rs"]
mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::client::psql;
use common::{proxy_config, PgServer, ProxyProcess, USERS_YAML};
use launch_proxy::auth::scram::{ScramClient, ScramCredentials};
use tokio_postgres::NoTls;
use wire::*;

/// Generous bound for anything that must merely not hang.
const NO_HANG: Duration = Duration::from_secs(20);
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const FAILURES: &str = "launch_proxy_login_failures_total";

/// The shipped config pointed at `pg`, with a small warm pool so tests stay light.
fn config(pg: &PgServer, pool_overrides: &str) -> String {
    proxy_config(pg, &format!("min_pool_size: 1\n{pool_overrides}"))
}

fn start(pg: &PgServer, pool_overrides: &str, users: &str) -> ProxyProcess {
    ProxyProcess::start(&config(pg, pool_overrides), users)
}

// ---------- other helpers ----------

fn psql_ok(port: u16, conninfo: &str, password: &str, sql: &str) -> String {
    let out = psql(port, conninfo, password, sql);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "psql {conninfo} failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Value of an unlabelled metric in the /metrics text (0 when absent).
fn metric(proxy: &ProxyProcess, name: &str) -> f64 {
    let text = proxy.metrics();
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '));
    value.map_or(0.0, |v| v.trim().parse().expect("metric value"))
}

/// (SQLSTATE, severity, message) of a server error.
fn db_err(err: &tokio_postgres::Error) -> (String, String, String) {
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {err:?}"));
    let code = db.code().code().to_owned();
    (code, db.severity().to_owned(), db.message().to_owned())
}

/// Logs in through the proxy; panics with `what` on failure.
async fn ok(proxy: &ProxyProcess, user: &str, pw: &str, what: &str) -> tokio_postgres::Client {
    let r = proxy.connect(user, pw).await;
    r.unwrap_or_else(|e| panic!("{what}: {user} could not log in: {e}"))
}

async fn whoami(client: &tokio_postgres::Client) -> (String, String) {
    let sql = "SELECT current_user::text, session_user::text";
    let row = client
        .query_one(sql, &[])
        .await
        .expect("query through proxy");
    (row.get(0), row.get(1))
}

// ---------- successful logins ----------

/// tokio-postgres, psql and the raw client log in with SCRAM-SHA-256 (the proxy asks
/// for SASL, not md5, and needs no protocol negotiation for 3.0) and run queries on the
/// server as the configured user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_login_with_psql_and_tokio_postgres() {
    let pg = PgServer::start();
    let proxy = start(&pg, "", USERS_YAML);
    for (user, pw) in [("app", "apppw"), ("app_ro", "approp")] {
        let client = proxy.connect(user, pw).await.expect("login");
        assert_eq!(whoami(&client).await, (user.into(), user.into()));
        let n: i32 = client.query_one("SELECT 40 + 2", &[]).await.unwrap().get(0);
        assert_eq!(n, 42);
        let out = psql_ok(proxy.port, &format!("user={user}"), pw, "SELECT 1");
        assert_eq!(out, "1");
    }
    let mut raw = Raw::connect(proxy.port);
    raw.send(&startup("app_ro", &[]));
    let l = login(&mut raw, "app_ro", "approp").expect("raw SCRAM login");
    assert_eq!(l.auth_codes, [10, 11, 12, 0]);
    assert!(
        l.negotiate.is_none(),
        "3.0 without options needs no negotiation"
    );
    assert_eq!(query(&mut raw, "SELECT session_user"), ["app_ro"]);
}

/// A user configured with only the SCRAM verifier PostgreSQL stores (passthrough) logs
/// in and queries, twice, and again after every server connection of its pool was
/// closed: the proxy reopens them with the SCRAM keys recovered from a client's proof.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_passthrough_user_survives_pool_drain() {
    let pg = PgServer::start();
    let verifier = pg.verifier("app");
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    let users = format!("users:\n  app: {{ password: \"{verifier}\", role: write }}\n");
    let proxy = start(&pg, "min_pool_size: 0\nidle_timeout_ms: 200", &users);

    for round in 0..2 {
        let client = ok(&proxy, "app", "apppw", "passthrough login").await;
        assert_eq!(whoami(&client).await, ("app".into(), "app".into()));
        let sql = format!("CREATE TEMP TABLE t{round} (x int); SELECT 1");
        client.batch_execute(&sql).await.expect("statements");
    }
    let err = proxy.connect("app", "not-apppw").await.unwrap_err();
    assert_eq!(db_err(&err).0, "28P01");

    let deadline = Instant::now() + NO_HANG;
    while pg.server_backend_count("app") > 0 {
        assert!(
            Instant::now() < deadline,
            "pool never drained (idle_timeout_ms)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = psql_ok(proxy.port, "user=app", "apppw", "SELECT session_user");
    assert_eq!(out, "app");
    let client = ok(&proxy, "app", "apppw", "login after drain").await;
    assert_eq!(whoami(&client).await.1, "app");
}

/// Secrets come from `password_file` (trailing newline trimmed) and `password_env`, and
/// serve both to check the client and to log in to PostgreSQL; with
/// `server_password_file` the client's password and PostgreSQL's differ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_from_files_and_env() {
    let pg = PgServer::start();
    pg.psql(
        "postgres",
        "CREATE ROLE svc LOGIN PASSWORD 'svc-server-pw'; \
         GRANT CONNECT ON DATABASE launch TO svc",
    );
    let dir = common::test_run_dir().join(format!("auth-secrets-{}", common::free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.pw"), "apppw\n").unwrap();
    std::fs::write(dir.join("svc.pw"), "svc-server-pw").unwrap();
    let d = dir.display();
    let users = format!(
        "users:\n  app: {{ password_file: \"{d}/app.pw\", role: write }}\n  \
         app_ro: {{ password_env: LP_AUTH_TEST_APP_RO_PW, role: read }}\n  \
         svc: {{ password: svc-client-pw, role: read, server_password_file: \"{d}/svc.pw\" }}\n"
    );
    let config = config(&pg, "min_pool_size: 0");
    let proxy =
        ProxyProcess::start_with_env(&config, &users, &[("LP_AUTH_TEST_APP_RO_PW", "approp")]);
    let _ = std::fs::remove_dir_all(&dir);
    let cases = [
        ("app", "apppw", "apppw\n"),
        ("app_ro", "approp", "LP_AUTH_TEST_APP_RO_PW"),
        ("svc", "svc-client-pw", "svc-server-pw"),
    ];
    for (user, good, bad) in cases {
        let client = proxy.connect(user, good).await.expect("login");
        assert_eq!(whoami(&client).await, (user.into(), user.into()));
        let err = proxy.connect(user, bad).await.unwrap_err();
        assert_eq!(db_err(&err).0, "28P01", "{user} accepted {bad:?}");
    }
}

/// `auth: md5` users (an md5 hash with server_password, or a plain password) log in
/// with psql, libpq answering the proxy's md5 challenge; wrong passwords get 28P01.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_users_log_in_with_psql() {
    let pg = PgServer::start();
    let hash = pg.psql("postgres", "SELECT 'md5' || md5('apppw' || 'app')");
    let users = format!(
        "users:\n  app: {{ password: \"{hash}\", auth: md5, role: write, server_password: apppw }}\n  \
         app_ro: {{ password: approp, auth: md5, role: read }}\n"
    );
    let proxy = start(&pg, "", &users);
    assert_eq!(
        psql_ok(proxy.port, "user=app", "apppw", "SELECT current_user"),
        "app"
    );
    let out = psql_ok(proxy.port, "user=app_ro", "approp", "SELECT session_user");
    assert_eq!(out, "app_ro");
    let bad = psql(proxy.port, "user=app", "wrong", "SELECT 1");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "wrong md5 password accepted");
    assert!(
        stderr.contains("password authentication failed for user \"app\""),
        "{stderr}"
    );
    // The proxy really asks for md5 (code 5); tokio-postgres answers it too.
    let mut raw = Raw::connect(proxy.port);
    raw.send(&startup("app", &[]));
    assert_eq!(
        login(&mut raw, "app", "apppw").expect("raw md5").auth_codes,
        [5, 0]
    );
    let client = ok(&proxy, "app", "apppw", "tokio-postgres md5").await;
    assert_eq!(whoami(&client).await.0, "app");
}

/// A password that SASLprep changes (here with a soft hyphen, which SASLprep maps to
/// nothing) logs in through the proxy as it does directly to PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_changed_by_saslprep() {
    let pg = PgServer::start();
    let pw = "soft\u{AD}hyphen";
    pg.psql("postgres", &format!("ALTER ROLE app PASSWORD '{pw}'"));
    let direct = format!("host=127.0.0.1 port={} user=app password={pw}", pg.port);
    let direct = tokio_postgres::connect(&(direct + " dbname=launch"), NoTls).await;
    assert!(
        direct.is_ok(),
        "PostgreSQL itself refused: {:?}",
        direct.err()
    );
    let users = format!("users:\n  app: {{ password: \"{pw}\", role: write }}\n");
    let proxy = start(&pg, "", &users);
    let client = proxy.connect("app", pw).await.expect("login through proxy");
    assert_eq!(whoami(&client).await.0, "app");
}

// ---------- refused logins ----------

/// Wrong password and unknown user both get FATAL 28P01 with PostgreSQL's wording, a
/// wrong database gets 3D000, and each bad login counts in
/// launch_proxy_login_failures_total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_have_postgres_errors_and_are_counted() {
    let pg = PgServer::start();
    let proxy = start(&pg, "", USERS_YAML);
    assert_eq!(metric(&proxy, FAILURES), 0.0);
    for (i, (user, pw)) in [("app", "wrong"), ("nobody", "apppw")]
        .into_iter()
        .enumerate()
    {
        let err = proxy.connect(user, pw).await.unwrap_err();
        let message = format!("password authentication failed for user \"{user}\"");
        assert_eq!(db_err(&err), ("28P01".into(), "FATAL".into(), message));
        assert_eq!(metric(&proxy, FAILURES), (i + 1) as f64);
    }
    let conn = format!(
        "host=127.0.0.1 port={} user=app password=apppw dbname=nope",
        proxy.port
    );
    let err = tokio_postgres::connect(&conn, NoTls).await.err();
    let err = db_err(&err.expect("wrong database must fail"));
    let want = (
        "3D000".into(),
        "FATAL".into(),
        "database \"nope\" does not exist".into(),
    );
    assert_eq!(err, want);
    assert!(metric(&proxy, FAILURES) >= 3.0);
    let client = ok(&proxy, "app", "apppw", "good login").await;
    assert_eq!(whoami(&client).await.0, "app");
}

/// An unknown user gets the same SCRAM challenge as a real one (same iteration count
/// and salt length, a salt that stays the same across attempts), so user names cannot
/// be probed.
#[test]
fn unknown_user_gets_a_stable_mock_challenge() {
    let pg = PgServer::start();
    let proxy = start(&pg, "", USERS_YAML);
    let challenge = |user: &str| {
        let mut raw = Raw::connect(proxy.port);
        raw.send(&startup(user, &[]));
        assert_eq!(raw.read_auth().0, 10);
        raw.send(&sasl_initial("SCRAM-SHA-256", b"n,,n=,r=abcdefghijkl"));
        let (code, data) = raw.read_auth();
        assert_eq!(code, 11);
        let text = String::from_utf8(data).unwrap();
        let mut attrs = text.split(',').skip(1).map(|a| a[2..].to_owned());
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = b64.decode(attrs.next().unwrap()).expect("salt");
        (salt, attrs.next().unwrap())
    };
    let (real, ghost) = (challenge("app"), challenge("ghost"));
    assert_eq!(ghost.1, real.1, "iteration count tells unknown users apart");
    assert_eq!(ghost.0.len(), real.0.len(), "salt length differs");
    let again = challenge("ghost").0;
    assert_eq!(again, ghost.0, "mock salt changes between attempts");
    assert_eq!(challenge("app").0, real.0);
    assert_ne!(challenge("ghost2").0, ghost.0);
}

/// Refused at startup or during authentication, each with a FATAL ErrorResponse of
/// the right SQLSTATE and a closed connection, the proxy serving others after each:
/// no user (28000), replication (0A000; replication=false is an ordinary login), protocol
/// 2.0 (0A000, as from PostgreSQL), and protocol violations (08P01): garbage, oversized, short or malformed
/// startup packets; an oversized auth message, a message of the wrong type, an unknown
/// SASL mechanism, a channel-binding request.
#[test]
fn refused_raw_clients_get_fatal_errors() {
    let pg = PgServer::start();
    let proxy = start(&pg, "", USERS_YAML);
    let be = |ints: &[i32]| {
        ints.iter()
            .flat_map(|i| i.to_be_bytes())
            .collect::<Vec<_>>()
    };
    let no_user = startup_packet(V3_0, &[("database", "launch")]);
    let v2 = startup_packet(0x0002_0000, &[("user", "app"), ("database", "launch")]);
    let unterminated = [be(&[12, V3_0]), b"user".to_vec()].concat();
    let huge = [be(&[1_000_000, V3_0]), vec![b'x'; 100]].concat();
    let mut oversized = tagged(b'p', &[b'x'; 16]);
    oversized[1..5].copy_from_slice(&100_000i32.to_be_bytes());
    let scram1 = sasl_initial("SCRAM-SHA-1", b"n,,n=,r=abcd");
    let binding = sasl_initial("SCRAM-SHA-256", b"p=tls-unique,,n=,r=abcd");
    // (case, sent after the SASL request?, bytes, SQLSTATE, part of the message)
    #[rustfmt::skip]
    let cases: Vec<(&str, bool, Vec<u8>, &str, &str)> = vec![
        ("no user", false, no_user, "28000", "no PostgreSQL user name"),
        ("repl", false, startup("app", &[("replication", "true")]), "0A000", "replication"),
        ("repl db", false, startup("app", &[("replication", "database")]), "0A000", ""),
        ("protocol 2.0", false, v2, "0A000", "unsupported frontend protocol 2.0"),
        ("http", false, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "08P01", "length"),
        ("huge", false, huge, "08P01", "length"),
        ("too short", false, be(&[4, V3_0]), "08P01", "length"),
        ("unterminated", false, unterminated, "08P01", "startup packet"),
        ("long ssl", false, be(&[12, SSL_REQUEST, 0]), "08P01", "length"),
        ("oversized auth", true, oversized, "08P01", "larger than"),
        ("query in auth", true, tagged(b'Q', b"SELECT 1\0"), "08P01", "SASL"),
        ("mechanism", true, scram1, "08P01", "mechanism"),
        ("binding", true, binding, "08P01", "SCRAM"),
    ];
    for (name, in_auth, bytes, code, message) in cases {
        let mut raw = Raw::connect(proxy.port);
        if in_auth {
            raw.send(&startup("app", &[]));
            assert_eq!(raw.read_auth().0, 10, "{name}");
        }
        raw.send(&bytes);
        let f = raw.expect_fatal(code);
        assert!(f[&'M'].contains(message), "{name}: {f:?}");
        raw_session_works(proxy.port, "app_ro", "approp");
    }
    let mut raw = Raw::connect(proxy.port);
    raw.send(&startup("app", &[("replication", "false")]));
    login(&mut raw, "app", "apppw").expect("replication=false logs in");
    assert_eq!(query(&mut raw, "SELECT 7"), ["7"]);
}

/// A SASLInitialResponse without its initial response (length -1) is asked for it with
/// an empty AuthenticationSASLContinue, and the client-first-message then comes as a
/// SASLResponse: PostgreSQL's exchange, run here against it and against the proxy.
#[test]
fn scram_without_an_initial_response_is_asked_for_it() {
    let pg = PgServer::start();
    let proxy = start(&pg, "", USERS_YAML);
    for (target, port, database) in [
        ("postgres", pg.port, "postgres"),
        ("proxy", proxy.port, "launch"),
    ] {
        let mut raw = Raw::connect(port);
        raw.send(&startup_packet(
            V3_0,
            &[("user", "app"), ("database", database)],
        ));
        assert_eq!(raw.read_auth().0, 10, "{target}");
        let left_out = [&b"SCRAM-SHA-256\0"[..], &(-1i32).to_be_bytes()].concat();
        raw.send(&tagged(b'p', &left_out));
        assert_eq!(
            raw.read_auth(),
            (11, Vec::new()),
            "{target}: an empty challenge"
        );
        let mut scram = ScramClient::new(ScramCredentials::Password("apppw".into()));
        raw.send(&tagged(b'p', &scram.client_first()));
        let (code, server_first) = raw.read_auth();
        assert_eq!(code, 11, "{target}");
        let fin = scram
            .handle_server_first(&server_first)
            .expect("server-first");
        raw.send(&tagged(b'p', &fin));
        let (code, server_final) = raw.read_auth();
        assert_eq!(code, 12, "{target}");
        scram
            .handle_server_final(&server_final)
            .expect("server signature");
        login(&mut raw, "app", "apppw").expect("the rest of the login");
        assert_eq!(query(&mut raw, "SELECT current_user"), ["app"], "{target}");
    }
}

// ---------- protocol negotiation ----------

/// SSLRequest and GSSENCRequest are answered 'N' and the same connection then logs in
/// in plain text; psql with sslmode=prefer works, sslmode=require fails on the client
/// side and the proxy keeps serving.
#[test]
fn ssl_and_gss_requests_are_declined() {
    let pg = PgServer::start();
    let proxy = start(&pg, "", USERS_YAML);
    for code in [SSL_REQUEST, GSSENC_REQUEST] {
        let mut raw = Raw::connect(proxy.port);
        raw.send(&[8i32.to_be_bytes(), code.to_be_bytes()].concat());
        assert_eq!(raw.read_byte(), b'N', "request code {code}");
        raw.send(&startup("app", &[]));
        login(&mut raw, "app", "apppw").expect("login after 'N'");
        assert_eq!(query(&mut raw, "SELECT 1"), ["1"]);
    }
    let (port, sql) = (proxy.port, "SELECT current_user");
    let out = psql_ok(port, "user=app sslmode=prefer", "apppw", sql);
    assert_eq!(out, "app");
    let out = psql(port, "user=app sslmode=require", "apppw", sql);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "sslmode=require worked without TLS");
    assert!(stderr.contains("does not support SSL"), "{stderr}");
    assert_eq!(psql_ok(port, "user=app_ro", "approp", sql), "app_ro");
}

/// A client asking for protocol 3.2 and/or `_pq_.` options gets NegotiateProtocolVersion
/// (3.0, listing the options) before authentication, and the session then works.
#[test]
fn newer_protocol_is_negotiated_down() {
    let pg = PgServer::start();
    let proxy = start(&pg, "", USERS_YAML);
    let v3_2 = V3_0 + 2;
    let two = [("_pq_.a", "1"), ("_pq_.b", "2")];
    type Params<'a> = &'a [(&'a str, &'a str)];
    let cases: [(i32, Params, &[&str]); 3] = [
        (v3_2, &[], &[]),
        (V3_0, &[("_pq_.test_opt", "on")], &["_pq_.test_opt"]),
        (v3_2, &two, &["_pq_.a", "_pq_.b"]),
    ];
    for (version, extra, unknown) in cases {
        let mut raw = Raw::connect(proxy.port);
        let mut params = vec![("user", "app"), ("database", "launch")];
        params.extend_from_slice(extra);
        raw.send(&startup_packet(version, &params));
        let l = login(&mut raw, "app", "apppw").expect("negotiated login");
        let want = unknown.iter().map(|s| s.to_string()).collect();
        assert_eq!(l.negotiate, Some((0, want)), "version {version:#x}");
        assert!(l.params.contains_key("server_version"), "{:?}", l.params);
        assert_eq!(query(&mut raw, "SELECT current_user"), ["app"]);
    }
}

/// A client that sends nothing, half a startup packet, or stops mid-SCRAM is told
/// 08P01 and closed after client_login_timeout_ms (not before); a logged-in client idle
/// for longer than that keeps its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_closed_after_login_timeout() {
    let pg = PgServer::start();
    let cfg = config(&pg, "") + "client_login_timeout_ms: 1000\n";
    let proxy = ProxyProcess::start(&cfg, USERS_YAML);
    let good = ok(&proxy, "app", "apppw", "login").await;
    let port = proxy.port;
    let probes = tokio::task::spawn_blocking(move || {
        let packet = startup("app", &[]);
        let mut results = Vec::new();
        for stage in ["nothing", "half packet", "mid-SCRAM"] {
            let mut raw = Raw::connect(port);
            let t0 = Instant::now();
            match stage {
                "nothing" => {}
                "half packet" => raw.send(&packet[..packet.len() / 2]),
                _ => {
                    raw.send(&packet);
                    assert_eq!(raw.read_auth().0, 10);
                }
            }
            let f = raw.expect_fatal("08P01");
            assert!(f[&'M'].contains("client_login_timeout_ms"), "{f:?}");
            results.push((stage, t0.elapsed()));
        }
        results
    });
    for (stage, elapsed) in probes.await.unwrap() {
        assert!(
            elapsed >= Duration::from_millis(900),
            "{stage}: closed after {elapsed:?}"
        );
        assert!(elapsed < NO_HANG, "{stage}: {elapsed:?}");
    }
    // `good` has now been idle for three login timeouts.
    assert_eq!(whoami(&good).await.0, "app");
}

/// 20 concurrent wrong-password logins all fail with 28P01 while an established client
/// keeps running queries and new good logins still work; all 20 are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_password_storm_does_not_disturb_good_clients() {
    let pg = PgServer::start();
    let proxy = Arc::new(start(&pg, "", USERS_YAML));
    let good = ok(&proxy, "app", "apppw", "login").await;
    let mut bad = tokio::task::JoinSet::new();
    for i in 0..20 {
        let proxy = proxy.clone();
        bad.spawn(async move {
            let password = format!("bad{i}");
            let attempt = proxy.connect("app", &password);
            match tokio::time::timeout(NO_HANG, attempt)
                .await
                .expect("bad login hung")
            {
                Ok(_) => panic!("wrong password {i} was accepted"),
                Err(e) => db_err(&e),
            }
        });
    }
    let mut queries = 0i32;
    while !bad.is_empty() || queries < 5 {
        let row = good.query_one("SELECT $1::int + 1", &[&queries]).await;
        assert_eq!(
            row.expect("good client during storm").get::<_, i32>(0),
            queries + 1
        );
        queries += 1;
        while let Some(r) = bad.try_join_next() {
            let message = "password authentication failed for user \"app\"";
            assert_eq!(
                r.expect("bad login task"),
                ("28P01".into(), "FATAL".into(), message.into())
            );
        }
        tokio::task::yield_now().await;
    }
    let p = proxy.clone();
    let failures = tokio::task::spawn_blocking(move || metric(&p, FAILURES));
    assert_eq!(failures.await.unwrap(), 20.0);
    let fresh = proxy
        .connect("app_ro", "approp")
        .await
        .expect("login after storm");
    assert_eq!(whoami(&fresh).await.0, "app_ro");
}
