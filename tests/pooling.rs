//! Pooling behaviour of launch-proxy against a real PostgreSQL: transaction and session
//! mode, the pool limits (max_client_conn, default_pool_size, max_db_connections,
//! max_user_connections, min_pool_size, the reserve pool), pgbench and psql through the
//! proxy, errors and clients leaving inside transactions, and LISTEN/NOTIFY.

use crate::common;

use common::{proxy_config, psql_bin, PgServer, ProxyProcess, USERS_YAML};
use std::future::IntoFuture;
use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, NoTls, SimpleQueryMessage};

const LONG: Duration = Duration::from_secs(60);

fn start(pool: &str) -> (PgServer, ProxyProcess) {
    let pg = PgServer::start();
    let proxy = ProxyProcess::start(&proxy_config(&pg, pool), USERS_YAML);
    (pg, proxy)
}

fn password(user: &str) -> &'static str {
    match user {
        "app" => "apppw",
        _ => "approp",
    }
}

async fn connect(proxy: &ProxyProcess, user: &str) -> Client {
    let client = bounded(proxy.connect(user, password(user))).await;
    client.expect("connect through the proxy")
}

/// The first column of every row of a simple-query result.
fn values(msgs: &[SimpleQueryMessage]) -> Vec<String> {
    let rows = msgs.iter().filter_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_owned()),
        _ => None,
    });
    rows.collect()
}

/// Awaits `f` for at most 60 s: a proxy that loses a reply fails the test, never hangs it.
async fn bounded<F: IntoFuture>(f: F) -> F::Output {
    timeout(LONG, f).await.expect("no answer within 60 s")
}

async fn exec(c: &Client, sql: &str) {
    bounded(c.batch_execute(sql)).await.unwrap()
}

/// First column of the first row of a simple query.
async fn text(c: &Client, sql: &str) -> String {
    values(&bounded(c.simple_query(sql)).await.unwrap()).remove(0)
}

/// Waits (bounded) for a spawned task and returns its output.
async fn join<T>(task: JoinHandle<T>) -> T {
    timeout(LONG, task).await.expect("task hangs").unwrap()
}

/// True if the task is still running after a second (it waits for a server connection).
async fn still_waiting<T>(task: &mut JoinHandle<T>) -> bool {
    timeout(Duration::from_secs(1), task).await.is_err()
}

async fn pid(c: &Client) -> String {
    text(c, "SELECT pg_backend_pid()").await
}

/// Polls pg_stat_activity (as superuser) until stopped; yields the highest backend
/// counts seen: (app + app_ro, app, app_ro).
struct Monitor {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(i64, i64, i64)>,
}

impl Monitor {
    async fn start(pg: &PgServer) -> Monitor {
        let su = pg.superuser("postgres").await;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut max = (0, 0, 0);
            while !flag.load(Ordering::Relaxed) {
                let sql = "SELECT count(*) FILTER (WHERE usename = 'app'), \
                           count(*) FILTER (WHERE usename = 'app_ro') FROM pg_stat_activity";
                let row = su.query_one(sql, &[]).await.unwrap();
                let (a, r): (i64, i64) = (row.get(0), row.get(1));
                max = (max.0.max(a + r), max.1.max(a), max.2.max(r));
                sleep(Duration::from_millis(20)).await;
            }
            max
        });
        Monitor { stop, task }
    }
    async fn finish(self) -> (i64, i64, i64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// `n` clients of `user`, each logging in and then running `sql` `reps` times, all at once.
async fn run_clients(proxy: &ProxyProcess, user: &str, n: usize, sql: &'static str, reps: usize) {
    let conn = proxy.conn_string(user, password(user));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let conn = conn.clone();
            tokio::spawn(async move {
                let (c, connection) = tokio_postgres::connect(&conn, NoTls).await?;
                tokio::spawn(connection);
                for _ in 0..reps {
                    c.simple_query(sql).await?;
                }
                Ok::<_, tokio_postgres::Error>(())
            })
        })
        .collect();
    for t in tasks {
        join(t).await.expect("client failed");
    }
}

fn conninfo(proxy: &ProxyProcess) -> String {
    let port = proxy.port;
    format!("host=127.0.0.1 port={port} user=app dbname=launch sslmode=disable")
}

fn psql(proxy: &ProxyProcess, commands: &[String]) -> Output {
    let mut cmd = Command::new(psql_bin());
    cmd.args(["-XqAt", "-v", "ON_ERROR_STOP=1"])
        .arg(conninfo(proxy));
    for c in commands {
        cmd.arg("-c").arg(c);
    }
    cmd.env("PGPASSWORD", "apppw").output().expect("run psql")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Transaction pooling with default_pool_size 1: two clients alternate on one backend
/// (same pg_backend_pid); a client inside BEGIN keeps it while the other client waits,
/// and the waiting client gets it right after COMMIT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_clients_share_one_backend() {
    let (pg, proxy) = start("default_pool_size: 1\nmin_pool_size: 1\nreserve_pool_size: 0");
    let a = connect(&proxy, "app").await;
    let b = Arc::new(connect(&proxy, "app").await);
    let first = pid(&a).await;
    for _ in 0..3 {
        assert_eq!(pid(&b).await, first);
        assert_eq!(pid(&a).await, first);
    }
    assert_eq!(pg.server_backend_count("app"), 1);
    exec(&a, "BEGIN").await;
    let b2 = b.clone();
    let mut waiting = tokio::spawn(async move { pid(&b2).await });
    assert!(still_waiting(&mut waiting).await, "B did not wait");
    assert_eq!(pid(&a).await, first);
    exec(&a, "COMMIT").await;
    assert_eq!(join(waiting).await, first);
}

/// Session mode keeps one backend per client for its whole session (same pid and session
/// state across transactions); a third client waits until a session ends, then runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_a_backend_per_client() {
    let (_pg, proxy) = start(
        "mode: session\nmax_client_conn: 10\ndefault_pool_size: 2\nmin_pool_size: 0\n\
         reserve_pool_size: 0\nacquire_timeout_ms: 20000",
    );
    let a = connect(&proxy, "app").await;
    let b = connect(&proxy, "app").await;
    let (pa, pb) = (pid(&a).await, pid(&b).await);
    assert_ne!(pa, pb, "two sessions share a backend");
    let setup = "CREATE TEMP TABLE mine (x int); INSERT INTO mine VALUES (1)";
    exec(&a, setup).await;
    for _ in 0..3 {
        assert_eq!((pid(&a).await, pid(&b).await), (pa.clone(), pb.clone()));
        assert_eq!(text(&a, "SELECT count(*) FROM mine").await, "1");
    }
    let c = connect(&proxy, "app").await;
    let mut waiting = tokio::spawn(async move { pid(&c).await });
    assert!(still_waiting(&mut waiting).await, "C did not wait");
    drop(a);
    assert_ne!(join(waiting).await, pb);
}

/// max_client_conn 3: the 4th client gets FATAL 53300 "sorry, too many clients already"
/// (psql's stderr, the raw ErrorResponse, tokio-postgres) while the first three keep
/// working; once one of them leaves, a new client gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_refuses_the_next_client() {
    let (_pg, proxy) =
        start("max_client_conn: 3\ndefault_pool_size: 2\nmin_pool_size: 0\nreserve_pool_size: 0");
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect(&proxy, "app").await);
    }
    let o = psql(&proxy, &["SELECT 1".into()]);
    assert!(!o.status.success(), "psql got in as client 4");
    let err = stderr(&o);
    assert!(err.contains("sorry, too many clients already"), "{err}");

    let mut s = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = b"\0\x03\0\0user\0app\0database\0launch\0\0";
    let packet = [&((body.len() + 4) as i32).to_be_bytes()[..], body].concat();
    s.write_all(&packet).unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let has = |needle: &[u8]| reply.windows(needle.len()).any(|w| w == needle);
    let fatal = reply.first() == Some(&b'E') && has(b"SFATAL\0") && has(b"C53300\0");
    assert!(fatal, "{reply:?}");

    let err = proxy.connect("app", "apppw").await;
    let err = err.expect_err("client 4 got in");
    assert_eq!(err.code(), Some(&SqlState::TOO_MANY_CONNECTIONS), "{err}");
    for c in &clients {
        assert_eq!(text(c, "SELECT 'still here'").await, "still here");
    }
    drop(clients.pop());
    let mut attempt = 0;
    let c = loop {
        match proxy.connect("app", "apppw").await {
            Ok(c) => break c,
            Err(e) if attempt == 100 => panic!("no room after a client left: {e}"),
            Err(_) => attempt += 1,
        }
        sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(text(&c, "SELECT 1").await, "1");
}

/// max_client_conn 3 held by connections that never log in: each new client takes the
/// place of the oldest of them, which gets FATAL 53300 saying why; logged-in clients are
/// never displaced (with three of them, the next client is refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_make_room_for_new_clients() {
    let (_pg, proxy) =
        start("max_client_conn: 3\ndefault_pool_size: 2\nmin_pool_size: 0\nreserve_pool_size: 0");
    let mut silent = Vec::new();
    for _ in 0..3 {
        let s = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        silent.push(s);
        // Arrival order decides who goes first; let the proxy take each one in.
        sleep(Duration::from_millis(100)).await;
    }
    let mut clients = Vec::new();
    for (i, s) in silent.iter_mut().enumerate() {
        clients.push(connect(&proxy, "app").await);
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        let has = |needle: &[u8]| reply.windows(needle.len()).any(|w| w == needle);
        assert!(
            has(b"C53300\0") && has(b"took its place"),
            "silent {i}: {reply:?}"
        );
    }
    for c in &clients {
        assert_eq!(text(c, "SELECT 'in'").await, "in");
    }
    let err = proxy
        .connect("app", "apppw")
        .await
        .expect_err("client 4 got in");
    assert_eq!(err.code(), Some(&SqlState::TOO_MANY_CONNECTIONS), "{err}");
    assert!(!format!("{err:?}").contains("took its place"), "{err:?}");
    for c in &clients {
        assert_eq!(text(c, "SELECT 'still in'").await, "still in");
    }
    let body = proxy.metrics();
    let line = "launch_proxy_clients_displaced_before_login_total 3";
    assert!(body.lines().any(|l| l == line), "{body}");
}

/// Starts a proxy with `pool` (and no warm or reserve connections), then runs `app` and
/// `app_ro` clients that each run pg_sleep(0.2) twice, all at once; every query must
/// succeed. Returns the peak backend counts seen: (total, app, app_ro).
async fn peak_backends(pool: &str, app: usize, ro: usize) -> (i64, i64, i64) {
    let base = "min_pool_size: 0\nreserve_pool_size: 0\nacquire_timeout_ms: 60000\n";
    let (pg, proxy) = start(&format!("{base}{pool}"));
    let mon = Monitor::start(&pg).await;
    let sql = "SELECT pg_sleep(0.2)";
    let app = run_clients(&proxy, "app", app, sql, 2);
    tokio::join!(app, run_clients(&proxy, "app_ro", ro, sql, 2));
    mon.finish().await
}

/// default_pool_size caps a user's server connections: 20 clients running pg_sleep at
/// once never make more than 3 app backends, and all their queries succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_pool_size_caps_backends_per_user() {
    let peak = peak_backends("default_pool_size: 3", 20, 0).await;
    assert_eq!(peak, (3, 3, 0), "peak backends (total, app, app_ro)");
}

/// max_db_connections caps server connections across the app and app_ro pools (each of
/// which could open 3): never more than 4 together, and every client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_db_connections_caps_across_pools() {
    let peak = peak_backends("default_pool_size: 3\nmax_db_connections: 4", 10, 10).await;
    let (total, app, ro) = peak;
    assert!(total <= 4, "peak backends (total, app, app_ro): {peak:?}");
    assert_eq!(total, 4, "the database cap was never reached");
    assert!(app <= 3 && ro <= 3 && app > 0 && ro > 0, "{peak:?}");
}

/// max_user_connections caps each user's server connections below default_pool_size.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_user_connections_caps_each_user() {
    let peak = peak_backends("default_pool_size: 6\nmax_user_connections: 2", 8, 8).await;
    assert_eq!(peak, (4, 2, 2), "peak backends (total, app, app_ro)");
}

/// max_connecting 2: a cold pool asked for six connections at once logs in two at a time.
/// PostgreSQL's pre_auth_delay holds every new backend one second before authentication,
/// so with the cap no three backends start within a second of each other (without it all
/// six start together), two do (the logins overlap, not one after another), and all six
/// clients are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_connecting_caps_logins_in_progress() {
    let pg = PgServer::start();
    pg.psql("postgres", "ALTER SYSTEM SET pre_auth_delay = 1");
    pg.psql("postgres", "SELECT pg_reload_conf()");
    let pool = "default_pool_size: 6\nmin_pool_size: 0\nreserve_pool_size: 0\n\
                max_connecting: 2\nacquire_timeout_ms: 30000";
    let proxy = ProxyProcess::start(&proxy_config(&pg, pool), USERS_YAML);
    run_clients(&proxy, "app", 6, "SELECT pg_sleep(3)", 1).await;
    let su = pg.superuser("postgres").await;
    let sql = "SELECT extract(epoch FROM backend_start)::float8 FROM pg_stat_activity \
               WHERE usename = 'app' ORDER BY 1";
    let rows = bounded(su.query(sql, &[])).await.unwrap();
    let starts: Vec<f64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(starts.len(), 6, "app backends at the end: {starts:?}");
    let third_later = starts.windows(3).all(|w| w[2] - w[0] >= 0.9);
    assert!(third_later, "three logins within a second: {starts:?}");
    let pair = starts.windows(2).any(|w| w[1] - w[0] < 0.5);
    assert!(pair, "no two logins ran at once: {starts:?}");
}

/// min_pool_size keeps warm server connections for every user without any client
/// (within ~10 s of start), and reopens them after pg_terminate_backend kills them.
/// (Failed on e211618: killed idle connections stayed counted until a client checked one
/// out; fixed by 73c3dc9, the manager now drops idle connections the server closed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_warms_and_reopens_connections() {
    let (pg, _proxy) = start("default_pool_size: 4\nmin_pool_size: 2\nreserve_pool_size: 0");
    let su = pg.superuser("postgres").await;
    // 10 x (app backends) + (app_ro backends) that started after `since`.
    let warm = |since: &str| {
        format!(
            "SELECT 10 * count(*) FILTER (WHERE usename = 'app') \
             + count(*) FILTER (WHERE usename = 'app_ro') FROM pg_stat_activity \
             WHERE backend_start > '{since}'"
        )
    };
    wait_for(&su, &warm("-infinity"), 22, "2 warm connections per user").await;
    let since = text(&su, "SELECT clock_timestamp()::text").await;
    let kill = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                WHERE usename IN ('app', 'app_ro')";
    exec(&su, kill).await;
    let what = "warm connections reopened after pg_terminate_backend";
    wait_for(&su, &warm(&since), 22, what).await;
}

/// Four clients each hold a transaction with pg_sleep(2) at once; returns the highest
/// app backend count and each transaction's (start, end) in server time.
async fn four_sleeping_transactions(reserve: usize) -> (i64, Vec<(f64, f64)>) {
    let (pg, proxy) = start(&format!(
        "default_pool_size: 2\nmin_pool_size: 0\nreserve_pool_size: {reserve}\n\
         reserve_pool_timeout_ms: 300\nacquire_timeout_ms: 5000\nmax_db_connections: 10"
    ));
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(connect(&proxy, "app").await);
    }
    let mon = Monitor::start(&pg).await;
    let sql = "BEGIN; SELECT extract(epoch FROM clock_timestamp())::text; SELECT pg_sleep(2); \
               SELECT extract(epoch FROM clock_timestamp())::text; COMMIT";
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(async move { c.simple_query(sql).await.map(|m| (c, m)) }))
        .collect();
    let mut spans = Vec::new();
    for t in tasks {
        let (_c, msgs) = join(t).await.expect("transaction failed");
        let v: Vec<f64> = values(&msgs).iter().flat_map(|s| s.parse()).collect();
        spans.push((v[0], v[1]));
    }
    spans.sort_by(|x, y| x.0.total_cmp(&y.0));
    (mon.finish().await.1, spans)
}

/// Reserve pool (default_pool_size 2, reserve_pool_size 2, reserve_pool_timeout_ms 300):
/// four clients holding pg_sleep(2) transactions all run at once on 4 backends, never more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reserve_pool_serves_waiting_clients() {
    let (max, spans) = four_sleeping_transactions(2).await;
    assert_eq!(max, 4, "highest app backend count");
    let last_start = spans.iter().map(|s| s.0).fold(f64::MIN, f64::max);
    let first_end = spans.iter().map(|s| s.1).fold(f64::MAX, f64::min);
    assert!(last_start < first_end, "no overlap: {spans:?}");
}

/// Without a reserve pool the same load runs on 2 backends: the third transaction starts
/// only after one of the first two ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_reserve_the_third_client_waits() {
    let (max, spans) = four_sleeping_transactions(0).await;
    assert_eq!(max, 2, "highest app backend count");
    let third_waited = spans[2].0 >= spans[0].1.min(spans[1].1);
    assert!(third_waited, "{spans:?}");
}

fn pgbench(proxy: &ProxyProcess, args: &[&str]) -> Output {
    let beside = Some(psql_bin().with_file_name("pgbench")).filter(|b| b.is_file());
    let bin = beside.unwrap_or_else(|| "pgbench".into());
    let port = proxy.port.to_string();
    let o = Command::new(bin)
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "app"])
        .args(args)
        .arg("launch")
        .env("PGPASSWORD", "apppw")
        .env("PGSSLMODE", "disable")
        .output()
        .expect("run pgbench");
    let err = stderr(&o);
    assert!(o.status.success(), "pgbench {args:?} failed:\n{err}");
    o
}

/// pgbench (-i, then TPC-B-like runs with 6 clients over 3 server connections) through
/// the proxy: zero failed transactions, every transaction recorded once, balances agree.
fn pgbench_through_proxy(mode: &str) {
    let (pg, proxy) = start(
        "default_pool_size: 3\nmin_pool_size: 0\nreserve_pool_size: 0\nacquire_timeout_ms: 30000",
    );
    pgbench(&proxy, &["-i", "-s", "1", "-q"]);
    let args = ["-n", "-M", mode, "-c", "6", "-j", "2", "-t", "50"];
    let out = String::from_utf8_lossy(&pgbench(&proxy, &args).stdout).into_owned();
    assert!(out.contains("actually processed: 300/300"), "{out}");
    let failed = out.contains("failed transactions") && !out.contains("failed transactions: 0 ");
    assert!(!failed, "{out}");
    let history = pg.psql("launch", "SELECT count(*) FROM pgbench_history");
    assert_eq!(history, "300");
    let balanced = "SELECT (SELECT sum(abalance) FROM pgbench_accounts) = h.d \
        AND (SELECT sum(bbalance) FROM pgbench_branches) = h.d \
        AND (SELECT sum(tbalance) FROM pgbench_tellers) = h.d \
        FROM (SELECT sum(delta) AS d FROM pgbench_history) h";
    assert_eq!(pg.psql("launch", balanced), "t");
    assert!(pg.server_backend_count("app") <= 3);
}

/// pgbench -M simple through the proxy (see pgbench_through_proxy).
#[test]
fn pgbench_simple_protocol() {
    pgbench_through_proxy("simple");
}

/// pgbench -M extended (unnamed statements) through the proxy (see pgbench_through_proxy).
#[test]
fn pgbench_extended_protocol() {
    pgbench_through_proxy("extended");
}

/// Polls (as superuser) until `sql` returns the count `want`; panics after ~10 s.
async fn wait_for(su: &Client, sql: &str, want: i64, what: &str) {
    let mut got = -1;
    for _ in 0..500 {
        got = su.query_one(sql, &[]).await.unwrap().get(0);
        if got == want {
            return;
        }
        sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: count {got}, expected {want} ({sql})");
}

const LOCKED: &str = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                      WHERE c.relname = 'lk' AND l.mode = 'AccessExclusiveLock' AND l.granted";
const SLEEPING: &str = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' \
                        AND state = 'active' AND query LIKE '%pg_sleep%'";
const LEFT_OVER: &str = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' \
                         AND (state LIKE 'idle in transaction%' OR query LIKE '%pg_sleep%')";

/// A client that leaves inside BEGIN + LOCK TABLE - by Terminate (tokio-postgres drop),
/// by a killed psql idle in the transaction, and by a killed psql while a query runs -
/// leaves no lock and no open transaction: another client locks the table right after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leaving_mid_transaction_leaves_no_lock() {
    let (pg, proxy) = start("default_pool_size: 3\nmin_pool_size: 0\nreserve_pool_size: 0");
    let su = pg.superuser("launch").await;
    let b = connect(&proxy, "app").await;
    exec(&b, "CREATE TABLE lk (id int)").await;
    let lock = "BEGIN; LOCK TABLE lk IN ACCESS EXCLUSIVE MODE;\n";
    for how in [
        "terminate",
        "kill while idle in transaction",
        "kill while a query runs",
    ] {
        let mut psql_child = None;
        if how == "terminate" {
            let a = connect(&proxy, "app").await;
            exec(&a, lock).await;
            wait_for(&su, LOCKED, 1, how).await;
            drop(a);
        } else {
            let running = how.ends_with("runs");
            let sql = if running {
                "SELECT pg_sleep(600);\n"
            } else {
                ""
            };
            let mut child = Command::new(psql_bin())
                .args(["-X", "-q", &conninfo(&proxy)])
                .env("PGPASSWORD", "apppw")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(format!("{lock}{sql}").as_bytes()).unwrap();
            wait_for(&su, LOCKED, 1, how).await;
            wait_for(&su, SLEEPING, running as i64, how).await;
            child.kill().unwrap(); // SIGKILL: the socket closes without Terminate
            child.wait().unwrap();
            psql_child = Some(stdin);
        }
        let relock = "BEGIN; SET LOCAL lock_timeout = '10s'; \
                      LOCK TABLE lk IN ACCESS EXCLUSIVE MODE; COMMIT";
        let r = timeout(LONG, b.batch_execute(relock)).await.expect("hangs");
        r.unwrap_or_else(|e| panic!("{how}: the lock is still held: {e}"));
        wait_for(&su, LEFT_OVER, 0, how).await;
        drop(psql_child);
    }
}

/// An error inside a transaction aborts it (25P02 for later statements), ROLLBACK works,
/// and the same backend then serves another client, idle and not in a transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_in_transaction_then_rollback_reuses_the_backend() {
    let (pg, proxy) = start("default_pool_size: 1\nmin_pool_size: 0\nreserve_pool_size: 0");
    let a = connect(&proxy, "app").await;
    let b = connect(&proxy, "app").await;
    let insert = "INSERT INTO e VALUES (1)";
    exec(&a, "CREATE TABLE e (id int PRIMARY KEY)").await;
    let pid_a = pid(&a).await;
    exec(&a, &format!("BEGIN; {insert}")).await;
    let err = bounded(a.batch_execute(insert)).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::UNIQUE_VIOLATION));
    let err = bounded(a.simple_query("SELECT 1")).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    exec(&a, "ROLLBACK").await;
    let sql = "SELECT pg_backend_pid() || '/' || (SELECT count(*) FROM e)";
    assert_eq!(text(&b, sql).await, format!("{pid_a}/0"));
    exec(&a, "BEGIN").await;
    let err = bounded(a.query_one("SELECT 1 / $1::int", &[&0i32])).await;
    let err = err.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO));
    exec(&a, "ROLLBACK").await;
    assert_eq!(text(&b, "SELECT 41 + 1").await, "42");
    let su = pg.superuser("launch").await;
    wait_for(&su, LEFT_OVER, 0, "after ROLLBACK").await;
}

type Notes = tokio::sync::mpsc::UnboundedReceiver<(String, String)>;

/// An app client whose notifications arrive as (channel, payload) on the receiver.
async fn connect_listening(proxy: &ProxyProcess) -> (Client, Notes) {
    let conn_str = proxy.conn_string("app", "apppw");
    let (client, mut conn) = bounded(tokio_postgres::connect(&conn_str, NoTls))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    (client, rx)
}

/// LISTEN/NOTIFY in a session-mode pool: an idle listening client receives the
/// notifications sent by another proxied client and by a direct server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_in_session_mode() {
    let (pg, proxy) = start(
        "mode: session\nmax_client_conn: 10\ndefault_pool_size: 3\nmin_pool_size: 0\n\
         reserve_pool_size: 0",
    );
    let (a, mut rx) = connect_listening(&proxy).await;
    exec(&a, "LISTEN lp_chan").await;
    let b = connect(&proxy, "app").await;
    exec(&b, "NOTIFY lp_chan, 'from b'").await;
    let su = pg.superuser("launch").await;
    exec(&su, "NOTIFY lp_chan, 'direct'").await;
    for want in ["from b", "direct"] {
        let got = timeout(Duration::from_secs(10), rx.recv()).await;
        assert_eq!(
            got.expect("no notification"),
            Some(("lp_chan".into(), want.into()))
        );
    }
}

/// psql's \copy (libpq COPY FROM STDIN / TO STDOUT) round-trips a file byte for byte; a
/// \copy of bad data fails cleanly and leaves the table and the proxy usable.
#[test]
fn psql_copy_round_trip_and_bad_data() {
    let (_pg, proxy) = start("default_pool_size: 2\nmin_pool_size: 0\nreserve_pool_size: 0");
    let line = |i: i32| format!("{i}\tvalue {i} \\\\ tab\\there\n");
    let input: String = (0..5000).map(line).collect();
    let file = |name: &str| proxy.dir.join(name).display().to_string();
    std::fs::write(file("in.tsv"), &input).unwrap();
    std::fs::write(file("bad.tsv"), "1\tok\nzwei\tbad\n").unwrap();
    let copy_in = format!("\\copy p FROM '{}'", file("in.tsv"));
    let copy_out = format!(
        "\\copy (SELECT * FROM p ORDER BY id) TO '{}'",
        file("out.tsv")
    );
    let o = psql(
        &proxy,
        &["CREATE TABLE p (id int, v text)".into(), copy_in, copy_out],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = std::fs::read_to_string(file("out.tsv")).unwrap();
    assert!(out == input, "\\copy output differs");
    let o = psql(&proxy, &[format!("\\copy p FROM '{}'", file("bad.tsv"))]);
    assert!(!o.status.success(), "bad data was accepted");
    let err = stderr(&o);
    assert!(
        err.contains("invalid input syntax for type integer"),
        "{err}"
    );
    let o = psql(&proxy, &["SELECT count(*) FROM p".into()]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "5000",
        "{}",
        stderr(&o)
    );
}

/// Session mode: a client that gets the server connection of an earlier session receives
/// no notifications for channels only that earlier session LISTENed to.
///
/// The proxy resets a session's connection with DISCARD ALL before the next session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_next_client_inherits_no_listen() {
    let (pg, proxy) = start(
        "mode: session\nmax_client_conn: 10\ndefault_pool_size: 1\nmin_pool_size: 0\n\
         reserve_pool_size: 0",
    );
    let a = connect(&proxy, "app").await;
    exec(&a, "LISTEN leak_chan").await;
    drop(a);
    let (b, mut notes) = connect_listening(&proxy).await;
    assert_eq!(text(&b, "SELECT 'b is in'").await, "b is in");
    exec(&pg.superuser("launch").await, "NOTIFY leak_chan, 'for a'").await;
    let note = timeout(Duration::from_secs(2), notes.recv())
        .await
        .ok()
        .flatten();
    assert_eq!(note, None, "B got a notification for A's channel");
}
