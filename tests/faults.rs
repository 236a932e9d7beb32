//! Faults around the proxy (PostgreSQL stopped or killed, clients vanishing mid-query)
//! and what operators see of them (/metrics and the log), checked against a real
//! PostgreSQL through the proxy binary.

use crate::common;

use common::client::{app, blocking, connect, eventually, one, try_col, LIMIT};
use common::{app_clients_reach, metric, proxy_config, PgServer, ProxyProcess, USERS_YAML};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Error;

const NOT_IDLE: &str =
    "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state <> 'idle'";

/// Idle clients (holding no server connection) outlive a PostgreSQL outage: after the
/// restart their next transactions get fresh server connections, new clients succeed,
/// and the proxy process is the same one throughout.
async fn idle_clients_survive_outage(kill: bool) {
    let mut pg = PgServer::start();
    // CHECKPOINT: the harness runs with synchronous_commit off, and a kill loses recent WAL.
    pg.psql(
        "launch",
        "CREATE TABLE t (id int); GRANT ALL ON t TO app; CHECKPOINT;",
    );
    let cfg = proxy_config(&pg, "min_pool_size: 3\nacquire_timeout_ms: 20000");
    let mut proxy = ProxyProcess::start(&cfg, USERS_YAML);
    let pid = proxy.pid();
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(app(&proxy).await);
    }
    let mut before = Vec::new();
    for c in &clients {
        before.push(one(&c.client, "SELECT pg_backend_pid()").await);
    }
    blocking(|| if kill { pg.kill() } else { pg.stop() });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(proxy.is_running(), "the proxy died with PostgreSQL");
    blocking(|| pg.restart());
    // All at once, right after the restart: none may be handed a dead server connection.
    let mut tasks = Vec::new();
    for (i, (c, before)) in clients.into_iter().zip(before).enumerate() {
        tasks.push(tokio::spawn(async move {
            one(&c.client, &format!("INSERT INTO t VALUES ({i})")).await;
            let after = one(&c.client, "SELECT pg_backend_pid()").await;
            assert_ne!(after, before, "a dead server connection was reused");
        }));
    }
    for t in tasks {
        t.await.expect("an idle client did not survive the outage");
    }
    for _ in 0..3 {
        assert_eq!(one(&app(&proxy).await.client, "SELECT 1").await, "1");
    }
    assert_eq!(pg.psql("launch", "SELECT count(*) FROM t"), "5");
    assert!(
        proxy.is_running() && proxy.pid() == pid,
        "the proxy restarted"
    );
}

/// Fast shutdown of PostgreSQL while clients idle; see [`idle_clients_survive_outage`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_survive_postgres_fast_stop() {
    idle_clients_survive_outage(false).await;
}

/// PostgreSQL killed (immediate shutdown) while clients idle; see
/// [`idle_clients_survive_outage`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_survive_postgres_kill() {
    idle_clients_survive_outage(true).await;
}

/// A client in the middle of a query when PostgreSQL goes away gets an error (the proxy's
/// 08006 or PostgreSQL's own FATAL 57P01) instead of hanging; the proxy keeps running and
/// serves again once PostgreSQL is back.
async fn running_query_gets_error_when_postgres_dies(kill: bool) {
    let mut pg = PgServer::start();
    let mut proxy = ProxyProcess::start(&proxy_config(&pg, ""), USERS_YAML);
    let c = app(&proxy).await;
    let client = c.client;
    let q = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60)").await });
    let sql = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND query LIKE '%SELECT pg_sleep(60)'";
    assert!(eventually(LIMIT, || pg.psql("postgres", sql) == "1").await);
    blocking(|| if kill { pg.kill() } else { pg.stop() });
    let r = tokio::time::timeout(LIMIT, q)
        .await
        .expect("the running query hangs after PostgreSQL died")
        .unwrap();
    let err = r.expect_err("the query cannot have succeeded");
    let code = err.as_db_error().map(|d| d.code().code().to_owned());
    assert!(
        matches!(code.as_deref(), Some("08006" | "57P01")),
        "expected 08006 or 57P01, got {err:?}"
    );
    assert!(proxy.is_running());
    blocking(|| pg.restart());
    assert_eq!(one(&app(&proxy).await.client, "SELECT 1").await, "1");
}

/// See [`running_query_gets_error_when_postgres_dies`] (fast shutdown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_query_gets_error_on_postgres_fast_stop() {
    running_query_gets_error_when_postgres_dies(false).await;
}

/// See [`running_query_gets_error_when_postgres_dies`] (immediate shutdown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_query_gets_error_on_postgres_kill() {
    running_query_gets_error_when_postgres_dies(true).await;
}

/// Sends `signal` to the postmaster of `pg`.
fn signal_postmaster(pg: &PgServer, signal: &str) {
    let pid_file = std::fs::read_to_string(pg.data_dir.join("postmaster.pid")).unwrap();
    let pid = pid_file.lines().next().unwrap().trim().to_owned();
    let ok = std::process::Command::new("kill")
        .args(["-s", signal, &pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -s {signal} {pid} failed");
}

/// A frozen PostgreSQL (postmaster stopped: connects hang in its listen backlog) makes
/// each connect attempt give up after connect_timeout_ms: a client needing a new server
/// connection gets 57P03 after acquire_timeout_ms with the timeout named in the detail,
/// while an open server connection keeps working; once PostgreSQL thaws, all recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_postgres_hits_connect_timeout() {
    let pg = PgServer::start();
    let pool = "default_pool_size: 2\nmin_pool_size: 0\nreserve_pool_size: 0\n\
                acquire_timeout_ms: 3000\nconnect_timeout_ms: 500\nconnect_retry_interval_ms: 100";
    let proxy = ProxyProcess::start(&proxy_config(&pg, pool), USERS_YAML);
    let holder = app(&proxy).await;
    one(&holder.client, "BEGIN").await;
    let waiter = app(&proxy).await;
    signal_postmaster(&pg, "STOP");
    let during = try_col(&holder.client, "SELECT 2").await;
    let t0 = Instant::now();
    let result = try_col(&waiter.client, "SELECT 1").await;
    let waited = t0.elapsed();
    signal_postmaster(&pg, "CONT");
    assert_eq!(
        during.expect("an open server connection still works"),
        ["2"]
    );
    let err = result.expect_err("no server connection can be opened");
    let db = err.as_db_error().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(db.code().code(), "57P03", "{db:?}");
    let detail = db.detail().unwrap_or("");
    assert!(detail.contains("timed out after 500 ms"), "{detail:?}");
    assert!(
        waited >= Duration::from_millis(2950),
        "failed early: {waited:?}"
    );
    one(&holder.client, "COMMIT").await;
    assert_eq!(one(&app(&proxy).await.client, "SELECT 3").await, "3");
}

/// A client that disappears inside a transaction (idle in it, in the middle of a query,
/// or with a polite Terminate) leaves no lock and no uncommitted row behind: another
/// client can LOCK the table within its lock_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_transaction_leaves_no_lock() {
    let pg = PgServer::start();
    pg.psql(
        "launch",
        "CREATE TABLE locked (id int); GRANT ALL ON locked TO app;",
    );
    let proxy = ProxyProcess::start(&proxy_config(&pg, ""), USERS_YAML);
    let other = app(&proxy).await;
    let lock = "BEGIN; SET LOCAL lock_timeout = '10s'; \
                LOCK TABLE locked IN ACCESS EXCLUSIVE MODE; COMMIT";
    for how in ["abort while idle", "abort mid-query", "terminate"] {
        let c = app(&proxy).await;
        one(&c.client, "BEGIN").await;
        one(&c.client, "INSERT INTO locked VALUES (1)").await;
        one(&c.client, "LOCK TABLE locked IN ACCESS EXCLUSIVE MODE").await;
        match how {
            "abort while idle" => c.task.abort(),
            "abort mid-query" => {
                let client = c.client;
                let q =
                    tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60)").await });
                let sql =
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%SELECT pg_sleep(60)'";
                assert!(eventually(LIMIT, || pg.psql("postgres", sql) == "1").await);
                c.task.abort();
                let _ = q.await;
            }
            _ => drop(c.client),
        }
        try_col(&other.client, lock)
            .await
            .unwrap_or_else(|e| panic!("{how}: the table stays locked: {e:?}"));
        assert_eq!(
            one(&other.client, "SELECT count(*) FROM locked").await,
            "0",
            "{how}"
        );
    }
    let clean = eventually(Duration::from_secs(10), || {
        pg.psql("launch", NOT_IDLE) == "0"
    })
    .await;
    assert!(clean, "a backend of a vanished client is still busy");
}

/// 50 clients connect and vanish abruptly mid-query or mid-transaction (twice each) while
/// 5 well-behaved clients run transactions: the well-behaved ones see zero errors, all
/// their committed rows are there, nothing of the vanished clients is committed, no
/// backend stays busy and the proxy's client count returns to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_clients_do_not_disturb_steady_clients() {
    let pg = PgServer::start();
    pg.psql(
        "launch",
        "CREATE TABLE steady (worker int, seq int, PRIMARY KEY (worker, seq)); \
         CREATE TABLE junk (id int); GRANT ALL ON steady, junk TO app;",
    );
    let cfg = proxy_config(&pg, "default_pool_size: 20\nacquire_timeout_ms: 30000");
    let proxy = Arc::new(ProxyProcess::start(&cfg, USERS_YAML));
    // The steady clients run until the abrupt ones are done (at least MIN_ROUNDS each).
    const MIN_ROUNDS: i64 = 60;
    let abrupt_done = Arc::new(AtomicBool::new(false));
    let mut steady = Vec::new();
    for w in 0..5i64 {
        let (proxy, abrupt_done) = (proxy.clone(), abrupt_done.clone());
        steady.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            let c = app(&proxy).await;
            let mut seq = 0;
            while seq < MIN_ROUNDS || !abrupt_done.load(Ordering::Relaxed) {
                let steps = [
                    "BEGIN".to_owned(),
                    format!("INSERT INTO steady VALUES ({w}, {seq})"),
                    "COMMIT".to_owned(),
                    format!("SELECT count(*) FROM steady WHERE worker = {w}"),
                ];
                for sql in &steps {
                    match try_col(&c.client, sql).await {
                        Ok(rows)
                            if sql.starts_with("SELECT") && rows != [(seq + 1).to_string()] =>
                        {
                            errors.push(format!("{sql}: {rows:?} after {} commits", seq + 1))
                        }
                        Ok(_) => {}
                        Err(e) => errors.push(format!("{sql}: {e:?}")),
                    }
                }
                seq += 1;
            }
            (errors, seq)
        }));
    }
    let mut abrupt = Vec::new();
    for i in 0..50u64 {
        let proxy = proxy.clone();
        abrupt.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 20)).await;
            for round in 0..2u64 {
                let c = connect(&proxy, "app", "apppw").await?;
                let client = Arc::new(c.client);
                if (i + round) % 3 != 0 {
                    client
                        .simple_query("BEGIN; INSERT INTO junk VALUES (1)")
                        .await?;
                }
                let q = (i + round) % 3 != 1;
                let running = client.clone();
                let q = q.then(|| {
                    tokio::spawn(async move { running.simple_query("SELECT pg_sleep(10)").await })
                });
                tokio::time::sleep(Duration::from_millis(20 + (i * 37 + round * 53) % 250)).await;
                c.task.abort();
                if let Some(q) = q {
                    let _ = q.await;
                }
            }
            Ok::<(), Error>(())
        }));
    }
    for a in abrupt {
        a.await
            .unwrap()
            .expect("an abrupt client could not even connect or begin");
    }
    abrupt_done.store(true, Ordering::Relaxed);
    let (mut errors, mut total) = (Vec::new(), 0);
    for s in steady {
        let (e, committed) = s.await.unwrap();
        errors.extend(e);
        total += committed;
    }
    assert!(
        errors.is_empty(),
        "well-behaved clients saw errors: {errors:#?}"
    );
    assert_eq!(
        pg.psql("launch", "SELECT count(*) FROM steady"),
        total.to_string()
    );
    assert_eq!(pg.psql("launch", "SELECT count(*) FROM junk"), "0");
    let clean = eventually(Duration::from_secs(15), || {
        pg.psql("launch", NOT_IDLE) == "0"
    })
    .await;
    assert!(clean, "backends of vanished clients are still busy");
    let gone = eventually(Duration::from_secs(15), || {
        metric(&proxy.metrics(), "launch_proxy_clients_connected", &[]) == 0.0
    })
    .await;
    assert!(gone, "the proxy still counts connected clients");
}

/// /metrics moves as a workload runs: client and server connection gauges by state
/// (active/waiting, active/idle), the pool wait histogram, transaction, query, byte,
/// error-class and server-connect counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_workload() {
    let pg = PgServer::start();
    let pool =
        "default_pool_size: 1\nmin_pool_size: 1\nreserve_pool_size: 0\nacquire_timeout_ms: 20000";
    let proxy = ProxyProcess::start(&proxy_config(&pg, pool), USERS_YAML);
    let m = || blocking(|| proxy.metrics());
    let app_l = [("pool", "app")];
    let before = m();
    let holder = app(&proxy).await;
    for i in 0..10 {
        one(&holder.client, &format!("SELECT {i}")).await;
    }
    let after = m();
    for name in [
        "launch_proxy_transactions_total",
        "launch_proxy_queries_total",
    ] {
        let delta = metric(&after, name, &app_l) - metric(&before, name, &app_l);
        assert_eq!(delta, 10.0, "{name} after 10 single-query transactions");
    }
    for dir in ["from_clients", "from_server"] {
        let l = [("pool", "app"), ("direction", dir)];
        let delta = metric(&after, "launch_proxy_bytes_total", &l)
            - metric(&before, "launch_proxy_bytes_total", &l);
        assert!(delta > 0.0, "bytes {dir} moved by {delta}");
    }
    let ok = [("pool", "app"), ("result", "ok")];
    assert!(metric(&after, "launch_proxy_server_connects_total", &ok) >= 1.0);
    assert_eq!(
        metric(&after, "launch_proxy_clients_connected", &[]),
        1.0,
        "{after}"
    );

    one(&holder.client, "BEGIN").await;
    let waiter = app(&proxy).await;
    let client = waiter.client;
    let q = tokio::spawn(async move {
        let r = client.simple_query("SELECT 1").await;
        (client, r)
    });
    assert!(
        app_clients_reach(&proxy, "waiting", 1.0).await,
        "the waiting client is not shown"
    );
    let body = m();
    let gauge = |name: &str, state: &str| metric(&body, name, &[("pool", "app"), ("state", state)]);
    assert_eq!(
        gauge("launch_proxy_client_connections", "active"),
        1.0,
        "{body}"
    );
    assert_eq!(
        gauge("launch_proxy_server_connections", "active"),
        1.0,
        "{body}"
    );
    assert_eq!(
        gauge("launch_proxy_server_connections", "idle"),
        0.0,
        "{body}"
    );
    assert_eq!(
        gauge("launch_proxy_server_connections", "opening"),
        0.0,
        "{body}"
    );
    assert_eq!(
        metric(&body, "launch_proxy_clients_connected", &[]),
        2.0,
        "{body}"
    );
    let waits_before = metric(&body, "launch_proxy_pool_wait_seconds_count", &app_l);
    tokio::time::sleep(Duration::from_millis(200)).await;
    one(&holder.client, "COMMIT").await;
    let (client, r) = tokio::time::timeout(LIMIT, q)
        .await
        .expect("waiter hangs")
        .unwrap();
    r.expect("the waiter gets the connection once it is released");
    let _ = try_col(&client, "SELEC 1").await.expect_err("syntax error");
    // PostgreSQL flushes an ErrorResponse before its ReadyForQuery: finish with a query
    // whose answer ends with ReadyForQuery so that the transaction is over in the proxy.
    assert_eq!(one(&client, "SELECT 1").await, "1");
    let body = m();
    let gauge = |name: &str, state: &str| metric(&body, name, &[("pool", "app"), ("state", state)]);
    assert_eq!(
        gauge("launch_proxy_client_connections", "waiting"),
        0.0,
        "{body}"
    );
    assert_eq!(
        gauge("launch_proxy_client_connections", "active"),
        0.0,
        "{body}"
    );
    assert_eq!(
        gauge("launch_proxy_server_connections", "active"),
        0.0,
        "{body}"
    );
    assert_eq!(
        gauge("launch_proxy_server_connections", "idle"),
        1.0,
        "{body}"
    );
    let waits = metric(&body, "launch_proxy_pool_wait_seconds_count", &app_l);
    assert!(
        waits > waits_before,
        "pool wait not recorded: {waits_before} -> {waits}"
    );
    assert!(
        metric(&body, "launch_proxy_pool_wait_seconds_sum", &app_l) >= 0.2,
        "{body}"
    );
    let class42 = metric(&body, "launch_proxy_errors_total", &[("class", "42")]);
    assert_eq!(class42, 1.0, "one syntax error: {body}");
    drop((client, holder));
    let zero = eventually(LIMIT, || {
        metric(&proxy.metrics(), "launch_proxy_clients_connected", &[]) == 0.0
    })
    .await;
    assert!(zero, "clients_connected does not return to 0");
}

/// At the default log level the log has exactly one line per client login and one per
/// disconnect, and nothing per query (assumes LP_PROXY_RUST_LOG is unset or `info`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_has_a_line_per_login_and_disconnect_only() {
    let pg = PgServer::start();
    let proxy = ProxyProcess::start(&proxy_config(&pg, ""), USERS_YAML);
    let clients = [
        app(&proxy).await,
        app(&proxy).await,
        connect(&proxy, "app_ro", "approp").await.unwrap(),
    ];
    for c in &clients {
        one(&c.client, "SELECT 1").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines_before = proxy.log().lines().count();
    for i in 0..30 {
        for c in &clients {
            one(&c.client, &format!("SELECT 'lp_marker_{i}'")).await;
            one(&c.client, "BEGIN; SELECT 1; COMMIT").await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = proxy.log();
    let new: Vec<&str> = log
        .lines()
        .skip(lines_before)
        .filter(|l| !l.contains("server connection opened"))
        .collect();
    assert!(new.is_empty(), "per-query log lines: {new:#?}");
    assert!(!log.contains("lp_marker"), "query text in the log");
    drop(clients);
    let count = |what: &str| proxy.log().lines().filter(|l| l.contains(what)).count();
    assert!(eventually(LIMIT, || count("client disconnected") >= 3).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count("client logged in"), 3, "{}", proxy.log());
    assert_eq!(count("client disconnected"), 3, "{}", proxy.log());
}

/// With `workers: 2` (the multi-threaded runtime) clients served on both threads at once
/// update the same pool counters, which must then be atomic: every transaction counts and
/// the active-client gauge returns to zero. (With `workers: 1` an add is a plain load and
/// store: launch_proxy::counter; `metrics_follow_a_workload` covers that mode.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_stay_exact_on_the_multi_threaded_runtime() {
    const CLIENTS: usize = 8;
    const EACH: usize = 500;
    let pg = PgServer::start();
    let mut config = proxy_config(&pg, "default_pool_size: 4\nmin_pool_size: 4");
    config.push_str("\nworkers: 2\n");
    let proxy = ProxyProcess::start(&config, USERS_YAML);
    let app_l = [("pool", "app")];
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(app(&proxy).await);
    }
    let before = blocking(|| proxy.metrics());
    let runs: Vec<_> = clients
        .into_iter()
        .map(|c| {
            tokio::spawn(async move {
                for i in 0..EACH {
                    one(&c.client, &format!("SELECT {i}")).await;
                }
                c
            })
        })
        .collect();
    let mut clients = Vec::new();
    for r in runs {
        clients.push(r.await.expect("a client's transactions failed"));
    }
    let after = blocking(|| proxy.metrics());
    for name in [
        "launch_proxy_transactions_total",
        "launch_proxy_queries_total",
    ] {
        let delta = metric(&after, name, &app_l) - metric(&before, name, &app_l);
        assert_eq!(delta, (CLIENTS * EACH) as f64, "{name}");
    }
    assert!(
        app_clients_reach(&proxy, "active", 0.0).await,
        "clients still counted active: {}",
        proxy.metrics()
    );
    drop(clients);
}

/// The proxy's sockets to PostgreSQL, as `ss` shows them (with their timers).
fn sockets_to(pg: &PgServer) -> Vec<String> {
    let filter = format!("( dport = :{} )", pg.port);
    let out = std::process::Command::new("ss")
        .args(["-tonH", "state", "established", &filter])
        .output()
        .expect("ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Seconds in an `ss` timer: `2min`, `12sec`, `6.956ms` (6 s 956 ms), `200ms`.
fn ss_timer_secs(t: &str) -> f64 {
    let (mut secs, mut digits) = (0.0, String::new());
    let mut rest = t;
    while let Some(c) = rest.chars().next() {
        if c.is_ascii_digit() {
            digits.push(c);
            rest = &rest[1..];
            continue;
        }
        let n: f64 = digits.parse().unwrap_or(0.0);
        digits.clear();
        let (scale, len) = match rest {
            r if r.starts_with("min") => (60.0, 3),
            r if r.starts_with("sec") => (1.0, 3),
            r if r.starts_with("ms") => (0.001, 2),
            _ => (1.0, 1), // '.' after seconds, milliseconds follow
        };
        secs += n * scale;
        rest = &rest[len..];
    }
    secs
}

/// Server connections carry keepalive probes, so that a server host that hangs or a
/// partition (no reply, no reset: a cancel cannot get through either) ends a relay's wait
/// for a reply instead of leaving the client waiting for ever: the kernel holds a
/// keepalive timer of at most `server.keepalive.idle_s` on every socket the proxy opened
/// to PostgreSQL, and none with `idle_s: 0`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connections_carry_keepalive_probes() {
    for (idle_s, armed) in [(7, true), (0, false)] {
        let pg = PgServer::start();
        let keepalive = format!(
            "database: launch, keepalive: {{ idle_s: {idle_s}, interval_s: 2, count: 2 }} }}"
        );
        let cfg = proxy_config(&pg, "min_pool_size: 2").replace("database: launch }", &keepalive);
        let proxy = ProxyProcess::start(&cfg, USERS_YAML);
        assert_eq!(one(&app(&proxy).await.client, "SELECT 1").await, "1");
        // A socket whose login is still in flight shows its retransmission timer instead of
        // the keepalive one, so the check waits for every socket to be past that.
        let settled = |s: &String| !s.contains("timer:(on,");
        let seen = eventually(LIMIT, || {
            let sockets = sockets_to(&pg);
            sockets.len() >= 2 && sockets.iter().all(settled)
        })
        .await;
        let sockets = sockets_to(&pg);
        assert!(
            seen,
            "the warm minimum never opened (or never settled): {sockets:?}"
        );
        for s in &sockets {
            let timer = s.split("timer:(").nth(1).unwrap_or("");
            if armed {
                let secs = timer
                    .strip_prefix("keepalive,")
                    .and_then(|t| t.split(',').next())
                    .map(ss_timer_secs)
                    .unwrap_or_else(|| panic!("no keepalive timer: {s}"));
                assert!(secs <= 7.0, "keepalive in {secs} s, above idle_s: {s}");
            } else {
                assert!(!timer.starts_with("keepalive"), "keepalive is off: {s}");
            }
        }
    }
}
