//! The paths before and around a session's first statement, against a real PostgreSQL
//! (found by a red team): a login given up during its tenant lookup, SIGTERM with a login
//! in progress, SIGHUP while clients run and right after the proxy said it was ready, and
//! a reload that would rotate a pass-through pool's keys.

use crate::common;

use common::client::{blocking, eventually, one, LIMIT};
use common::raw::{frame, hex_md5, z, MD5_USERS};
use common::{error_field, proxy_config, PgServer, ProxyProcess, USERS_YAML};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const KEY: &str = "5f3c9a0e7b1d24c6a8e0f2b4d6c8e1a3957b3d1f0c2e4a6b8d0f1e3c5a7b9d2e";
const T1: &str = "01JBXTENANT1000000000000T1";

fn recv(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 5];
    s.read_exact(&mut h).ok()?;
    let mut b = vec![0; i32::from_be_bytes(h[1..5].try_into().unwrap()) as usize - 4];
    s.read_exact(&mut b).ok()?;
    Some((h[0], b))
}

/// md5 login; the socket at ReadyForQuery, or the SQLSTATE of an ErrorResponse ("EOF").
fn md5_login(port: u16, user: &str, password: &str) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let mut body = vec![0, 3, 0, 0];
    for part in ["user", user, "database", "launch", ""] {
        body.extend(z(part));
    }
    s.write_all(&[&((body.len() + 4) as i32).to_be_bytes()[..], &body].concat())
        .unwrap();
    loop {
        match recv(&mut s) {
            None => return Err("EOF".into()),
            Some((b'R', b)) if b[..4] == [0, 0, 0, 5] => {
                let inner = hex_md5(&[password.as_bytes(), user.as_bytes()].concat());
                let outer = hex_md5(&[inner.as_bytes(), &b[4..8]].concat());
                s.write_all(&frame(b'p', &z(&format!("md5{outer}"))))
                    .unwrap();
            }
            Some((b'Z', _)) => return Ok(s),
            Some((b'E', b)) => return Err(error_field(&b, b'C').unwrap_or_default()),
            Some(_) => {}
        }
    }
}

/// Logins whose tenant lookup waits on a lock (a migration holding the tenants table) and
/// that are given up at `client_login_timeout_ms` cancel the lookup: the backends they
/// leave do not pile up beyond `max_db_connections` (five logins left five before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_given_up_during_the_tenant_lookup_leave_no_backends() {
    let pg = PgServer::with_tenant(KEY, T1);
    let pool = "default_pool_size: 2\nmin_pool_size: 0\nreserve_pool_size: 0\n\
                max_db_connections: 2\nmax_user_connections: 2";
    let config = proxy_config(&pg, pool)
        + &format!(
            "tenant: {{ signing_key: \"{KEY}\", check_status: true, status_cache_ms: 0 }}\n\
             client_login_timeout_ms: 1500\n"
        );
    let users = format!(
        "{MD5_USERS}  t1m: {{ password: \"t1mpw\", role: write, tenant: \"{T1}\", server_user: app, auth: md5 }}\n"
    );
    let proxy = ProxyProcess::start(&config, &users);
    let su = pg.superuser("launch").await;
    su.batch_execute("BEGIN; LOCK TABLE public.tenants IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    for _ in 0..5 {
        let r = blocking(|| md5_login(proxy.port, "t1m", "t1mpw"));
        assert_eq!(r.err().as_deref(), Some("08P01"), "the login timed out");
    }
    let within_cap = eventually(LIMIT, || pg.server_backend_count("app") <= 2).await;
    let left = pg.server_backend_count("app");
    su.batch_execute("ROLLBACK").await.unwrap();
    assert!(
        within_cap,
        "{left} backends of app with max_db_connections 2"
    );
}

/// SIGTERM with a connection still in its login (connected, silent): once the drain's
/// login grace (2 s) is over the login gets 57P01 and the proxy exits, without waiting for
/// the login timeout (ten minutes here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_logins_in_progress() {
    let pg = PgServer::start();
    let config = proxy_config(&pg, "min_pool_size: 1") + "client_login_timeout_ms: 600000\n";
    let mut proxy = ProxyProcess::start(&config, USERS_YAML);
    let mut silent = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    silent.set_read_timeout(Some(LIMIT)).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.sigterm();
    let (tag, body) = recv(&mut silent).expect("an answer to the silent login");
    assert_eq!(
        (tag, error_field(&body, b'C').as_deref()),
        (b'E', Some("57P01"))
    );
    assert!(
        blocking(|| proxy.wait_exit(LIMIT)).is_some(),
        "the proxy waited for the login"
    );
}

/// SIGHUP reloads the users file (300 plain passwords: a SCRAM verifier each) off the
/// runtime thread: a client's statements go on meanwhile (before, every client stalled for
/// the whole reload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_run_while_the_users_file_reloads() {
    let pg = PgServer::start();
    let mut users = USERS_YAML.to_string();
    for i in 0..300 {
        users.push_str(&format!(
            "  u{i}: {{ password: \"pw{i}\", role: write, server_user: app }}\n"
        ));
    }
    let proxy = ProxyProcess::start(&proxy_config(&pg, "min_pool_size: 1"), &users);
    let c = proxy.connect("app", "apppw").await.expect("app logs in");
    c.simple_query("SELECT 1").await.unwrap();
    let reloaded = || proxy.log().contains("SIGHUP: users file reloaded");
    proxy.signal("HUP");
    let mut during = 0;
    while !blocking(reloaded) {
        c.simple_query("SELECT 1").await.unwrap();
        during += 1;
    }
    assert!(
        during >= 5,
        "{during} statements ran while the users file reloaded"
    );
}

/// A reload that changes the SCRAM verifier of a pool that logs in with its clients' keys
/// is refused: the pool holds the keys of its first client, and would go on logging in with
/// them (every new server connection refused by PostgreSQL after the rotation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rotating_a_pass_through_pools_verifier_is_refused() {
    let pg = PgServer::start();
    let users = |v: &str| {
        format!("users:\n  app: {{ password: \"apppw\", role: write }}\n  app_ro: {{ password: \"{v}\", role: read }}\n")
    };
    let proxy = ProxyProcess::start(
        &proxy_config(&pg, "min_pool_size: 0"),
        &users(&pg.verifier("app_ro")),
    );
    let c = proxy
        .connect("app_ro", "approp")
        .await
        .expect("app_ro logs in");
    c.simple_query("SELECT 1")
        .await
        .expect("pass-through works");
    pg.psql("postgres", "ALTER ROLE app_ro PASSWORD 'rotated'");
    std::fs::write(proxy.dir.join("users.yaml"), users(&pg.verifier("app_ro"))).unwrap();
    proxy.signal("HUP");
    let answered = eventually(LIMIT, || {
        proxy.log().contains("SIGHUP: users file not reloaded")
    })
    .await;
    assert!(answered, "the reload was not refused:\n{}", proxy.log());
    assert!(proxy.log().contains("its verifier needs a restart"));
    c.simple_query("SELECT 1")
        .await
        .expect("the session goes on");
}

/// Every signal handler is in place when the proxy tells systemd it is ready: a SIGHUP
/// sent at once (`systemctl kill -s HUP`, a supervisor) does not end the process (before:
/// 71 of 100 debug starts).
#[test]
fn a_sighup_right_after_ready_does_not_kill_the_proxy() {
    use std::os::unix::net::UnixDatagram;
    use std::os::unix::process::ExitStatusExt;
    let dir = common::test_run_dir().join("ready-race");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("users.yaml"), USERS_YAML).unwrap();
    std::fs::write(
        dir.join("lp.yaml"),
        "listen: \"127.0.0.1:0\"\nmetrics_listen: \"\"\n\
         server: { host: 127.0.0.1, port: 1, database: launch }\n\
         users_file: users.yaml\npool: { min_pool_size: 0 }\n",
    )
    .unwrap();
    let mut killed = 0;
    for _ in 0..20 {
        let sock = dir.join("notify.sock");
        let _ = std::fs::remove_file(&sock);
        let notify = UnixDatagram::bind(&sock).unwrap();
        notify.set_read_timeout(Some(LIMIT)).unwrap();
        let mut child = std::process::Command::new(common::proxy_binary())
            .arg("--config")
            .arg(dir.join("lp.yaml"))
            .env("NOTIFY_SOCKET", &sock)
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut buf = [0u8; 512];
        loop {
            let n = notify.recv(&mut buf).expect("READY=1 from the proxy");
            if buf[..n].windows(7).any(|w| w == b"READY=1") {
                break;
            }
        }
        // kill(2) at once, as `systemctl kill -s HUP` or a supervisor sends it.
        // SAFETY: a signal to our own child process, whose pid `child` holds.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
        std::thread::sleep(Duration::from_millis(200));
        if let Some(status) = child.try_wait().unwrap() {
            if status.signal() == Some(1) {
                killed += 1;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(
        killed, 0,
        "a SIGHUP after READY=1 killed the proxy in {killed} of 20 starts"
    );
}

/// A client that asks for a read-only session in its startup packet never gets a session
/// that writes (the option was dropped, and its writes went through): PostgreSQL makes the
/// session read-only; the proxy, which cannot carry that setting from connection to
/// connection, refuses the login (0A000). One that asks to run as another role, or to set a
/// tenant setting, is refused at login (42501) instead of having the parameter dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_options_are_honoured_or_refused_never_dropped() {
    use tokio_postgres::error::SqlState;
    let pg = PgServer::start();
    let proxy = ProxyProcess::start(&proxy_config(&pg, "min_pool_size: 1"), USERS_YAML);
    let connect = |port: u16, options: &str| {
        let conn = format!(
            "host=127.0.0.1 port={port} user=app password=apppw dbname=launch options='{options}'"
        );
        async move {
            let (c, task) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
            tokio::spawn(task);
            Ok::<_, tokio_postgres::Error>(c)
        }
    };
    let read_only = "-c default_transaction_read_only=on";
    let direct = connect(pg.port, read_only).await.expect("login");
    let r = direct.simple_query("CREATE TABLE ro_probe (x int)").await;
    assert_eq!(
        r.err().and_then(|e| e.code().cloned()),
        Some(SqlState::READ_ONLY_SQL_TRANSACTION),
        "PostgreSQL: a write in a session that asked to be read-only"
    );
    let code = |r: Result<tokio_postgres::Client, tokio_postgres::Error>| {
        r.err().and_then(|e| e.code().cloned())
    };
    assert_eq!(
        code(connect(proxy.port, read_only).await),
        Some(SqlState::FEATURE_NOT_SUPPORTED)
    );
    for options in [
        "-c role=postgres",
        "-c app.tenant_id=01JBXTENANT1000000000000T1",
    ] {
        let refused = code(connect(proxy.port, options).await);
        assert_eq!(refused, Some(SqlState::INSUFFICIENT_PRIVILEGE), "{options}");
    }
    let c = connect(
        proxy.port,
        "-c default_transaction_read_only=off -c search_path=public",
    )
    .await
    .expect("ordinary options");
    c.simple_query("CREATE TABLE rw_probe (x int)")
        .await
        .unwrap();
}

/// A reload applies the command line's `--listen` / `--metrics-listen` again: a config
/// file that validates only with them (here its `metrics_listen` is its `listen`, which
/// the flags set apart) still reloads its users (before, every SIGHUP was refused with
/// "metrics_listen must differ from listen").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_command_lines_listen_overrides() {
    let pg = PgServer::start();
    let cfg = proxy_config(&pg, "min_pool_size: 0").replace(
        "metrics_listen: \"127.0.0.1:9127\"",
        "metrics_listen: \"0.0.0.0:6432\"",
    );
    assert!(cfg.contains("metrics_listen: \"0.0.0.0:6432\""), "{cfg}");
    let proxy = ProxyProcess::start(&cfg, USERS_YAML);
    let users =
        format!("{USERS_YAML}  late: {{ password: \"latepw\", role: write, server_user: app }}\n");
    std::fs::write(proxy.dir.join("users.yaml"), users).unwrap();
    proxy.signal("HUP");
    let reloaded = eventually(LIMIT, || {
        let log = proxy.log();
        log.contains("SIGHUP: users file reloaded") || log.contains("not reloaded")
    })
    .await;
    assert!(reloaded, "no reload logged:\n{}", proxy.log());
    assert!(
        proxy.log().contains("SIGHUP: users file reloaded"),
        "{}",
        proxy.log()
    );
    let c = proxy
        .connect("late", "latepw")
        .await
        .expect("the new user logs in");
    assert_eq!(one(&c, "SELECT 1").await, "1");
}
